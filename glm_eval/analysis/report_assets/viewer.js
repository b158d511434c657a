// Sample viewer of one run: window.RUN (from the run's data file) filtered by status, subject and text, 50 per page.
// Everything is written with textContent: model outputs are untrusted text, never HTML.
(function () {
  "use strict";
  const run = window.RUN;
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  const status = $("status"), subject = $("subject"), search = $("search"), list = $("samples");
  let shown = run.samples, page = 0, haystacks = null;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function option(select, value, label) {
    const o = el("option", null, label);
    o.value = value;
    select.appendChild(o);
  }

  option(status, "", "all (" + run.samples.length + ")");
  for (const [value, label] of run.statuses) {
    const n = run.samples.filter((s) => s.c === value).length;
    if (n) option(status, value, label + " (" + n + ")");
  }
  const subjects = {};
  for (const s of run.samples) if (s.s) subjects[s.s] = (subjects[s.s] || 0) + 1;
  const names = Object.keys(subjects).sort();
  option(subject, "", "all subjects (" + names.length + ")");
  for (const name of names) option(subject, name, name + " (" + subjects[name] + ")");
  if (!names.length) subject.hidden = true;

  function haystack(i) {  // lower-cased searchable text, built on the first search
    if (!haystacks) haystacks = run.samples.map((s) =>
      ["#" + s.i, s.s, s.q, s.o, s.x, s.g, s.e].join("\n").toLowerCase());
    return haystacks[i];
  }

  function apply() {
    const wantStatus = status.value, wantSubject = subject.value, text = search.value.trim().toLowerCase();
    const id = /^#\d+$/.test(text) ? Number(text.slice(1)) : null;  // "#12" is document 12, not #120
    shown = [];
    run.samples.forEach((s, i) => {
      if ((!wantStatus || s.c === wantStatus) && (!wantSubject || s.s === wantSubject)
          && (!text || (id !== null ? s.i === id : haystack(i).includes(text)))) shown.push(s);
    });
    page = 0;
    render();
  }

  function field(card, name, value) {
    if (value === undefined || value === null || value === "") return;
    const row = el("div", "field");
    row.appendChild(el("span", "name", name));
    row.appendChild(el("code", null, String(value)));
    card.appendChild(row);
  }

  function card(s) {
    const box = el("article", "sample " + s.c);
    box.id = "doc-" + s.i;
    const head = el("header");
    head.appendChild(el("span", "id", "#" + s.i));
    if (s.s) head.appendChild(el("span", "subject", s.s));
    head.appendChild(el("span", "badge " + s.c, run.labels[s.c] + (s.v !== undefined ? " " + s.v : "")));
    box.appendChild(head);
    field(box, "extracted", s.x);
    field(box, "gold", s.g);
    field(box, "error", s.e);
    const prompt = el("details", "prompt");
    prompt.appendChild(el("summary", null, "prompt"));
    prompt.addEventListener("toggle", () => {  // the shared few-shot prefix is joined only when opened
      if (prompt.open && prompt.childNodes.length === 1)
        prompt.appendChild(el("pre", null, (s.p >= 0 ? run.prefixes[s.p] : "") + s.q));
    });
    box.appendChild(prompt);
    box.appendChild(el("div", "name", "output"));
    box.appendChild(el("pre", "output", s.o));
    return box;
  }

  function render() {
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    list.replaceChildren(...shown.slice(page * PAGE, (page + 1) * PAGE).map(card));
    $("count").textContent = shown.length + " of " + run.samples.length + " samples";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 150); });
  status.addEventListener("change", apply);
  subject.addEventListener("change", apply);
  $("prev").addEventListener("click", () => { page -= 1; render(); window.scrollTo(0, 0); });
  $("next").addEventListener("click", () => { page += 1; render(); window.scrollTo(0, 0); });

  // #id=12 opens one document (links from the comparison's flip lists); #status=wrong&subject=x&q=text filters
  const wanted = new URLSearchParams(location.hash.slice(1));
  if (wanted.get("id")) search.value = "#" + wanted.get("id");
  if (wanted.get("q")) search.value = wanted.get("q");
  if (wanted.get("status")) status.value = wanted.get("status");
  if (wanted.get("subject")) subject.value = wanted.get("subject");
  apply();
})();
