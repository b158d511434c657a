"""`python -m glm_eval.report <results root> [out=report/] [reference=<model>] [resamples=N]`

A static HTML report of every run under a results root, one folder that opens from disk (no server, no network):
`index.html` holds the grid (with the ChatGLM3 README's published rows and Δ rows), the runs, the plots and the
comparison tables of `glm_eval.analysis.compare`; `runs/<run>.html` lists every sample of one run (prompt, output,
extracted answer, gold, verdict) with filters by verdict and subject and a text search. Each run's samples are a
separate script file read only by its page, shown 50 at a time, so a 14,042-question MMLU run stays responsive.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from glm_eval.analysis.compare import (Comparison, Run, category_members, compare, find_runs, flip_names, fmt, fmt_p,
                                       strata, weighted_score, weighted_stderr)
from glm_eval.analysis.grid import build_grid, cut_off_share, scale
from glm_eval.core.averaging import Averaging, is_scored, record_value
from glm_eval.core.cli import parse_args, whole_number
from glm_eval.core.errors import UserError
from glm_eval.core.files import config_dir

USAGE = "usage: python -m glm_eval.report <results root> [out=report/] [reference=<model>] [resamples=N]"
OPTIONS = {"out": str,  # output folder (default report/)
           "reference": str,  # the run compared against: a run name, a model or a folder
           "resamples": whole_number}  # bootstrap and permutation resamples
ASSETS = Path(__file__).resolve().parent / "report_assets"
MARKER = ".glm-eval-report"  # in a folder the report wrote: only such a folder has its subfolders replaced
STATUSES = {True: [("correct", "correct"), ("wrong", "wrong"), ("failed", "failed")],
            False: [("full", "score 1"), ("partial", "0 < score < 1"), ("zero", "score 0"), ("failed", "failed")]}
SHARED_PREFIX = 64  # a subject's prompts store their common prefix once when it is at least this long


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, depth: int = 0, scripts: tuple[str, ...] = ()) -> str:
    up = "../" * depth
    tags = "".join(f'<script src="{esc(s)}"></script>' for s in scripts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{up}assets/report.css"></head>'
            f"<body>{body}{tags}</body></html>\n")


def table(header: list[str], rows: list[list[str]], classes: list[str] | None = None, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw` (cells built here from escaped parts)."""
    cell = (lambda c: c) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(f'<tr class="{esc(cls)}">' + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>"
                   for row, cls in zip(rows, classes or [""] * len(rows)))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def slug(run: Run) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{run.label}--{run.task}")


# ---- per-run sample pages -------------------------------------------------------------------------------------
def status_of(record: dict, binary: bool) -> str:
    if not is_scored(record):
        return "failed"
    if binary:
        return "correct" if record["correct"] else "wrong"
    value = record_value(record)
    return "full" if value >= 1 else "zero" if value <= 0 else "partial"


def as_text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def output_text(record: dict) -> str:
    """The generated text, or for a scored choice the log-probability of each option."""
    if "output" in record or "logprobs" not in record:
        return as_text(record.get("output"))
    letters = record.get("letters") or [f"option {k}" for k in range(len(record["logprobs"]))]
    return "log-probabilities: " + " · ".join(f"{letter} {value:.3f}" if isinstance(value, (int, float)) else
                                              f"{letter} {value}" for letter, value in zip(letters, record["logprobs"]))


NO_ANSWER = {"cut_off": "no answer: cut off by the token limit inside its reasoning",
             "unclosed": "no answer: the reply ended inside its reasoning"}


def no_answer_note(record: dict) -> str:
    """Why replies of a document gave no answer (reasoning never closed), for the sample viewer."""
    states = [reply.get("reasoning_state") for reply in record.get("replies") or []]
    notes = [f"{NO_ANSWER[s]}" + (f" (sample {j})" if len(states) > 1 else "") for j, s in enumerate(states)
             if s in NO_ANSWER]
    return "; ".join(notes)


def run_data(run: Run) -> dict:
    records = run.rows
    prefixes: list[str] = []
    prefix_of: dict[str, int] = {}
    by_subject: dict[str, list[str]] = {}
    for r in records:
        by_subject.setdefault(r.get("subject") or "", []).append(r.get("prompt") or "")
    for subject, prompts in by_subject.items():
        shared = os.path.commonprefix(prompts) if len(prompts) > 1 else ""
        if len(shared) >= SHARED_PREFIX:
            prefix_of[subject] = len(prefixes)
            prefixes.append(shared)
    samples = []
    for r in records:
        index = prefix_of.get(r.get("subject") or "", -1)
        prompt = r.get("prompt") or ""
        sample = {"i": r.get("doc_id"), "s": r.get("subject") or "", "c": status_of(r, run.binary),
                  "p": index, "q": prompt[len(prefixes[index]):] if index >= 0 else prompt,
                  "o": output_text(r), "x": as_text(r.get("extracted")),
                  "g": as_text(r.get("gold", r.get("answers"))),
                  "e": as_text(r.get("error") or r.get("scoring_error") or no_answer_note(r))}
        if not run.binary and "score" in r:
            sample["v"] = round(float(r["score"]), 3)
        samples.append(sample)
    statuses = STATUSES[run.binary]
    return {"label": run.label, "task": run.task, "prefixes": prefixes, "samples": samples,
            "statuses": statuses, "labels": dict(statuses), "unreadable": run.unreadable}


def write_run_page(run: Run, out: Path) -> None:
    data = run_data(run)
    name = slug(run)
    (out / "runs" / f"{name}.js").write_text("window.RUN = " + json.dumps(data, ensure_ascii=False) + ";\n",
                                            encoding="utf-8")
    m = run.metrics
    summary = (f"{esc(m.get('metric', 'score'))} ({esc(m.get('average', 'micro'))}) "
               f"<b>{fmt(scale(m) * m['score']) if isinstance(m.get('score'), (int, float)) else '-'}</b>, "
               f"n = {esc(m.get('n', '-'))}, failed = {esc(m.get('failed', 0))} · {esc(run.path)}")
    unreadable = (f'<p class="muted">{data["unreadable"]} unreadable lines in samples.jsonl are not shown.</p>'
                  if data["unreadable"] else "")
    body = (f'<nav><a href="../index.html">← report</a></nav><h1>{esc(run.label)} · {esc(run.task)}</h1>'
            f'<p class="muted">{summary}</p>{unreadable}{judge_html(run, name)}'
            '<div class="controls"><select id="status" aria-label="verdict"></select>'
            '<select id="subject" aria-label="subject"></select>'
            '<input id="search" type="search" placeholder="search prompt, output, answers; #12 for document 12">'
            '<button id="prev">‹ prev</button><span id="page"></span><button id="next">next ›</button>'
            '<span id="count" class="muted"></span></div><main id="samples"></main>')
    (out / "runs" / f"{name}.html").write_text(
        page(f"{run.label} · {run.task}", body, depth=1, scripts=(f"{name}.js", "../assets/viewer.js")),
        encoding="utf-8")


JUDGED_SHOWN = 200  # verdicts the judge changed, listed on a run's page


def judge_html(run: Run, name: str) -> str:
    """What the judge did (metrics' `judge` block) and, side by side, each verdict it changed: the rules' answer and
    verdict, the judge's reply, the verdict that counts."""
    block = run.metrics.get("judge")
    if not isinstance(block, dict):
        return ""
    changed = block.get("changed") or {}
    audit = block.get("audit") or {}
    facts = (f"judge <b>{esc(block.get('model'))}</b> ({esc(block.get('step'))}, prompt "
             f"{esc(block.get('prompt_version'))}): asked {esc(block.get('asked'))}, "
             f"failed {esc(block.get('failed'))}, "
             f"unreadable {esc(block.get('unreadable'))}")
    if "rule_score" in block:
        facts += (f"; rules alone {fmt(scale(run.metrics) * block['rule_score'])}, with the judge "
                  f"{fmt(scale(run.metrics) * block['cascade_score'])} (wrong → right "
                  f"{esc(changed.get('wrong_to_right'))}, right → wrong {esc(changed.get('right_to_wrong'))})")
    if audit:
        facts += f"; audit: agreed with the rules on {esc(audit.get('agreed'))} of {esc(audit.get('answered'))}"
    rows = []
    for record in run.rows:
        for j, unit in enumerate(record.get("samples") or [record]):
            rule, judged = unit.get("rule"), unit.get("judge")
            if isinstance(rule, dict) and isinstance(judged, dict) and rule.get("correct") != unit.get("correct"):
                doc = f'<a href="{esc(name)}.html#id={esc(record.get("doc_id"))}">{esc(record.get("doc_id"))}</a>'
                rows.append([doc + (f" · {j}" if "samples" in record else ""), esc(as_text(rule.get("extracted"))),
                             esc(rule.get("correct")), esc(as_text(record.get("gold"))),
                             esc(str(judged.get("reply", ""))[:300]), esc(unit.get("correct"))])
    listed = table(["document", "rules' answer", "rules' verdict", "gold", "judge's reply", "verdict"],
                   rows[:JUDGED_SHOWN], raw=True) if rows else "<p class='muted'>The judge changed no verdict.</p>"
    more = f"<p class='muted'>{len(rows) - JUDGED_SHOWN} more not listed.</p>" if len(rows) > JUDGED_SHOWN else ""
    return f"<h2>Judge</h2><p class='muted'>{facts}</p>{listed}{more}"


# ---- index: grid, runs, plots, comparisons ----------------------------------------------------------------------
def grid_html(root: Path, runs: list[Run]) -> str:
    """The grid with a row per run name (two settings of one model are two rows)."""
    readme_suite = config_dir() / "suite" / "chatglm3-readme.yaml"
    fallback = OmegaConf.to_container(OmegaConf.load(readme_suite)) if readme_suite.exists() else None
    grid = build_grid(root, [{**r.metrics, "model": r.label} for r in runs], fallback)
    if not len(grid):
        return "<p>No finished run.</p>"
    rows, classes = [], []
    for name, values in grid.iterrows():
        delta = str(name).startswith("Δ ")
        cells = []
        for v in values:
            text = "-" if pd.isna(v) else esc(v) if isinstance(v, str) else (f"{v:+.1f}" if delta else f"{v:.1f}")
            direction = "" if not delta or pd.isna(v) or v == 0 else (' class="up"' if v > 0 else ' class="down"')
            cells.append(f"<span{direction}>{text}</span>" if direction else text)
        rows.append([esc(name), *cells])
        classes.append("delta" if delta else "published" if str(name).endswith("(published)") else "")
    return table(["Model", *map(str, grid.columns)], rows, classes, raw=True)


def runs_html(runs: list[Run]) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: (r.task, r.label)):
        m = run.metrics
        score = m.get("score") if isinstance(m.get("score"), (int, float)) else float("nan")
        stderr = m.get("stderr") if isinstance(m.get("stderr"), (int, float)) else float("nan")
        cut = cut_off_share(m)
        rows.append([f'<a href="runs/{esc(slug(run))}.html">{esc(run.label)}</a>', esc(run.task),
                     esc(m.get("metric", "")), f"{fmt(scale(m) * score)} ± {fmt(1.96 * scale(m) * stderr)}",
                     "-" if cut is None else f"{cut:.1f}%", esc(m.get("n", "-")), esc(m.get("failed", 0)),
                     esc(m.get("finished_at", ""))])
    return table(["run", "task", "metric", "score ± 95%", "cut off in reasoning", "n", "failed", "finished"], rows,
                 raw=True)


def flip_links(run: Run | None, ids: list[int]) -> str:
    if run is None:
        return ", ".join(map(str, ids))
    return ", ".join(f'<a href="runs/{esc(slug(run))}.html#id={i}">{i}</a>' for i in ids)


def comparison_rows(part: pd.DataFrame, labels: list[str]) -> list[list[str]]:
    rows = []
    for label, (_, r) in zip(labels, part.iterrows()):
        significant = r.ci_low > 0 or r.ci_high < 0
        direction = "up" if r.delta > 0 else "down" if r.delta < 0 else ""
        rows.append([esc(label), str(r.n), fmt(r.reference_score), fmt(r.score),
                     f'<span class="{direction}{" sig" if significant else ""}">{fmt(r.delta, True)}</span>',
                     f"[{fmt(r.ci_low, True)}, {fmt(r.ci_high, True)}]", fmt_p(r.p), str(r.worse), str(r.better)])
    return rows


def comparison_html(c: Comparison) -> str:
    if not len(c.rows):
        return "<p>No task was run by two or more runs.</p>"
    parts, named = [], {(r.task, r.label): r for r in c.runs}
    for task in dict.fromkeys(c.rows.task):
        rows = c.rows[c.rows.task == task]
        overall = rows[rows.scope == "overall"]
        binary = all(r.binary for r in c.runs if r.task == task)
        worse, better = flip_names(binary)
        header = ["run", "n", "reference", "score", "Δ", "95% CI", "p", worse, better]
        parts.append(f"<h3>{esc(task)}</h3><p class='muted'>reference <b>{esc(overall.reference.iloc[0])}</b>; "
                     f"{esc(overall.test.iloc[0])} test; Δ in bold when its 95% CI excludes 0.</p>")
        notes = c.notes.get(task, [])
        if notes:
            parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        parts.append(table(header, comparison_rows(overall, list(overall.model)), raw=True))
        for _, r in overall.iterrows():
            run = named.get((task, r.model))
            for name, ids in zip((worse, better), (r.worse_ids, r.better_ids)):
                if ids:
                    parts.append(f"<p>{esc(r.model)} {esc(name)} ({len(ids)}): {flip_links(run, ids)}</p>")
        for scope in ("category", "subject"):
            part = rows[rows.scope == scope]
            if len(part):
                labels = [f"{m} · {g}" if len(overall) > 1 else g for m, g in zip(part.model, part.group)]
                parts.append(f"<details><summary>per {scope} ({len(part)})</summary>"
                             + table([scope, *header[1:]], comparison_rows(part, labels), raw=True) + "</details>")
    return "".join(parts)


def category_scores(run: Run) -> dict[str, tuple[float, float]]:
    """Per category: (score, 95% half-width) ×100 (a rating as it is) from the records, averaged as the task averages
    a category."""
    records = list(run.records.values())
    values = np.array([record_value(r) for r in records], dtype=float)
    within = Averaging.from_metrics(run.metrics).within_category
    out = {}
    for name, select in category_members([r.get("category") for r in records]).items():
        groups = strata([records[i].get("subject") for i in select], within, [])
        shown = scale(run.metrics)  # ×100, or a rating as it is
        out[name] = (shown * weighted_score(values[select], groups, within),
                     1.96 * shown * weighted_stderr(values[select], groups))
    return out


def bar_chart(path: Path, title: str, groups: list[str], series: dict[str, dict[str, tuple[float, float]]],
              colors: dict[str, str]) -> None:
    """Grouped bars: one group per x label, one bar per series (a run keeps its colour in every plot), error bars
    = 95% half-widths clipped to the 0-100 scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 + len(groups) * (0.35 + 0.25 * len(series))), 4.2))
    for k, (name, values) in enumerate(series.items()):
        present = [g for g in groups if g in values]
        xs = [groups.index(g) + (k - (len(series) - 1) / 2) * width for g in present]
        ys = [values[g][0] for g in present]
        half = [0.0 if math.isnan(values[g][1]) else values[g][1] for g in present]
        errors = [[min(h, y) for h, y in zip(half, ys)], [min(h, 100 - y) for h, y in zip(half, ys)]]
        ax.bar(xs, ys, width, yerr=errors, capsize=3, label=name, color=colors[name])
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_ylabel("score (×100)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def budget_chart(path: Path, title: str, curves: dict[str, dict], colors: dict[str, str]) -> None:
    """The score each run would have had at smaller reply budgets (metrics.json's budget_curve), one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        ax.plot(curve["max_new_tokens"], [100 * s for s in curve["score"]], marker="o", label=name, color=colors[name])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max_new_tokens (the thinking budget)")
    ax.set_ylabel("score (×100)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def budget_curve_of(metrics: dict) -> dict | None:
    curve = metrics.get("budget_curve")
    try:
        points, scores = list(curve["max_new_tokens"]), list(curve["score"])
    except (TypeError, KeyError):
        return None
    usable = len(points) == len(scores) >= 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                      for x in points + scores)
    return {"max_new_tokens": points, "score": scores} if usable else None


def plots(runs: list[Run], out: Path) -> list[tuple[str, str]]:
    """(title, relative path) of each plot written: all tasks, then each task's categories and its score against
    the thinking budget."""
    made = []
    tasks = list(dict.fromkeys(r.task for r in sorted(runs, key=lambda r: r.task)))
    palette = [f"C{k % 10}" for k in range(len(runs))]
    colors = dict(zip(sorted({r.label for r in runs}), palette))
    series: dict[str, dict[str, tuple[float, float]]] = {}
    for run in runs:
        m = run.metrics
        if isinstance(m.get("score"), (int, float)):
            stderr = m.get("stderr") if isinstance(m.get("stderr"), (int, float)) else float("nan")
            series.setdefault(run.label, {})[run.task] = (scale(m) * m["score"], 1.96 * scale(m) * stderr)
    if series:
        bar_chart(out / "plots" / "tasks.png", "Score per task (error bars: 95%)", tasks, dict(sorted(series.items())),
                  colors)
        made.append(("Score per task", "plots/tasks.png"))
    for task in tasks:
        per_run = {r.label: category_scores(r) for r in runs if r.task == task}
        per_run = {label: scores for label, scores in per_run.items() if scores}
        if per_run:
            groups = sorted({c for scores in per_run.values() for c in scores})
            name = f"plots/{re.sub(r'[^A-Za-z0-9._-]+', '_', task)}-categories.png"
            bar_chart(out / name, f"{task}: score per category (error bars: 95%)", groups, dict(sorted(per_run.items())),
                      colors)
            made.append((f"{task} per category", name))
        curves = {r.label: c for r in runs if r.task == task and (c := budget_curve_of(r.metrics)) is not None}
        if curves:
            name = f"plots/{re.sub(r'[^A-Za-z0-9._-]+', '_', task)}-budget.png"
            budget_chart(out / name, f"{task}: score against the reply budget", dict(sorted(curves.items())), colors)
            made.append((f"{task} against the thinking budget", name))
    return made


def build_report(root: Path, out: Path, reference: str | None = None, resamples: int = 10_000) -> Path:
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (give a results root)")
    runs = find_runs([str(root)])
    if not runs:
        raise UserError(f"no runs (metrics.json + samples.jsonl) found under {root}")
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"out={out} is not empty and holds no earlier report ({MARKER}); give a new or empty folder "
                        f"(the report replaces its own runs/, plots/ and assets/ and would delete what is there)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by python -m glm_eval.report; its runs/, plots/ and assets/ are replaced on "
                              "the next report into this folder\n")
    for folder in ("assets", "runs", "plots"):
        shutil.rmtree(out / folder, ignore_errors=True)
        (out / folder).mkdir(parents=True, exist_ok=True)
    for asset in ASSETS.iterdir():
        shutil.copy(asset, out / "assets" / asset.name)
    for run in runs:
        write_run_page(run, out)
    comparison = compare(runs, reference, resamples)
    figures = "".join(f'<figure><img class="plot" src="{esc(p)}" alt="{esc(t)}"><figcaption>{esc(t)}</figcaption>'
                      f"</figure>" for t, p in plots(runs, out))
    details = "".join(f"<h3>{esc(p.stem)}</h3>" + table(["", *map(str, df.columns[1:])], df.fillna("-").astype(str).values.tolist())
                      for p in sorted(root.glob("longbench*.csv")) for df in [pd.read_csv(p)])
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = (f"<h1>glm-eval report</h1><p class='muted'>{esc(root.resolve())} · {len(runs)} runs · generated "
            f"{esc(generated)}</p><nav><a href='#grid'>grid</a> · <a href='#runs'>runs</a> · <a href='#plots'>plots</a>"
            f" · <a href='#comparison'>comparison</a></nav>"
            f"<h2 id='grid'>Grid</h2><p class='muted'>Scores ×100, a row per run name (latest run of a name and task); published rows "
            f"from the ChatGLM3 README (or the last suite run) and Δ rows against its reference.</p>"
            f"<div id='grid-table'>{grid_html(root, runs)}</div>{details}"
            f"<h2 id='runs'>Runs</h2>{runs_html(runs)}<h2 id='plots'>Plots</h2>{figures}"
            f"<h2 id='comparison'>Comparison</h2><p class='muted'>Each run against the reference on the documents "
            f"both scored: 95% paired bootstrap CI, McNemar exact (0/1 scores) or paired permutation (graded) "
            f"p, and the documents that flipped (linked to their samples).</p>{comparison_html(comparison)}")
    (out / "index.html").write_text(page("glm-eval report", body), encoding="utf-8")
    return out / "index.html"


def main(argv: list[str]) -> int:
    paths, options, _ = parse_args(argv, USAGE, OPTIONS, paths=(1, 1))
    index = build_report(Path(paths[0]), Path(options.get("out", "report")), options.get("reference"),
                         options.get("resamples", 10_000))
    print(f"report: {index} (open it in a browser; no server needed)")
    return 0
