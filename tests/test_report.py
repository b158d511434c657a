"""glm_eval.analysis.report: the static report of real runs in two prompt settings (conftest's `prompt_settings`),
opened in headless Chromium from disk: the grid renders, the filters and the search work, no console errors."""
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_command

from glm_eval.analysis.report import main as report_main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("GLM_EVAL_ARTIFACTS") or REPO / "results" / "artifacts")


def report_cli(*args):
    return run_command(report_main, *args)


@pytest.fixture(scope="module")
def report(prompt_settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = report_cli(prompt_settings, f"out={out}", "reference=zero-shot", "resamples=2000")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_report_files_open_from_disk(report):
    index = (report / "index.html").read_text()
    assert "http://" not in index and "https://" not in index  # nothing to fetch: it opens offline
    for name in ("zero-shot--gsm8k", "few-shot--gsm8k", "chat--ceval", "plain--ceval"):
        assert (report / "runs" / f"{name}.html").exists() and (report / "runs" / f"{name}.js").exists()
        assert f'href="runs/{name}.html"' in index
    for plot in ("tasks.png", "ceval-categories.png"):
        assert (report / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    assert "ChatGLM3-6B-Base (published)" in index and "Δ few-shot − ChatGLM3-6B-Base" in index
    assert "McNemar exact test" in index and "per subject (2)" in index


def test_report_refuses_bad_input_in_one_line(tmp_path):
    for args, expected in (([tmp_path], "no runs"), ([tmp_path, "outt=x"], "unknown option 'outt'"), ([], "usage:")):
        result = report_cli(*args)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_report_never_deletes_what_it_did_not_write(prompt_settings, tmp_path):
    mine = tmp_path / "mine"
    (mine / "runs").mkdir(parents=True)
    (mine / "runs" / "notes.txt").write_text("my notes")
    refused = report_cli(prompt_settings, f"out={mine}", "resamples=200")
    assert refused.returncode == 2 and "not empty" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert (mine / "runs" / "notes.txt").read_text() == "my notes" and sorted(mine.iterdir()) == [mine / "runs"]
    again = tmp_path / "again"
    for _ in range(2):  # a folder the report wrote is replaced by the next report
        assert report_cli(prompt_settings, f"out={again}", "resamples=200").returncode == 0
    assert (again / "index.html").exists() and (again / ".glm-eval-report").exists()
    (tmp_path / "file").write_text("x")
    assert report_cli(prompt_settings, f"out={tmp_path / 'file'}").returncode == 2


def chromium() -> str:
    found = os.environ.get("GLM_EVAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("GLM_EVAL_REQUIRE_BROWSER"):  # set by .ci/run, which installs Debian's chromium
            pytest.fail("GLM_EVAL_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium here (CI installs Debian's chromium and runs this test)")
    return found


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def open_page(browser, path: Path):
    """A page with every console error and uncaught exception collected in `page.problems`."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.problems = []
    page.on("console", lambda m: m.type in ("error", "warning") and page.problems.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page


def test_report_in_headless_chromium(browser, report, prompt_settings):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    index = open_page(browser, report / "index.html")
    grid = index.locator("#grid-table table tbody tr")
    assert grid.count() == 11  # four settings, three published rows, four Δ rows
    assert [grid.nth(i).inner_text().split()[0] for i in range(4)] == ["chat", "few-shot", "plain", "zero-shot"]
    # all tasks, C-Eval's subjects, GSM8K's score against the reply budget (its runs generate, so they have a curve)
    assert index.locator("img.plot").evaluate_all("imgs => imgs.map(i => i.alt)") == \
        ["Score per task", "ceval per category", "gsm8k against the thinking budget"]
    assert all(index.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)"))
    index.screenshot(path=str(ARTIFACTS / "report-index.png"), full_page=True)
    assert index.problems == []

    records = [json.loads(line) for line in open(prompt_settings / "plain" / "ceval" / "samples.jsonl")]
    wrong = [r for r in records if not r["correct"]]
    page = open_page(browser, report / "runs" / "plain--ceval.html")
    cards = page.locator("#samples article")
    assert page.inner_text("#count") == "52 of 52 samples" and cards.count() == 50  # first page of 50
    page.select_option("#status", "wrong")
    assert page.inner_text("#count") == f"{len(wrong)} of 52 samples"
    assert all("wrong" in c for c in cards.evaluate_all("cards => cards.map(c => c.className)"))
    subject = "accountant"
    page.select_option("#subject", subject)
    expected = [r["doc_id"] for r in wrong if r["subject"] == subject]
    shown = cards.evaluate_all("cards => cards.map(c => Number(c.id.slice(4)))")
    assert shown == expected and expected  # in document order, on one page
    page.select_option("#status", "")
    page.select_option("#subject", "")
    prompt = records[50]["prompt"]
    needle = prompt[prompt.rindex("\nA. ") + 1:][:20].split("\n")[0]  # option A of document 50's question
    page.fill("#search", needle)
    page.wait_for_function("document.getElementById('count').textContent.indexOf('52 of') < 0")
    ids = cards.evaluate_all("cards => cards.map(c => Number(c.id.slice(4)))")
    assert records[50]["doc_id"] in ids and len(ids) < 52
    found = page.locator(f"#doc-{records[50]['doc_id']} details.prompt")
    found.locator("summary").click()
    assert needle in found.locator("pre").inner_text()  # the prompt is joined when the fold opens
    page.screenshot(path=str(ARTIFACTS / "report-samples.png"))
    assert page.problems == []

    gsm8k = open_page(browser, report / "runs" / "few-shot--gsm8k.html")
    assert gsm8k.inner_text("#count") == "6 of 6 samples" and gsm8k.problems == []

    # a flipped document's id in the comparison opens that document alone in its run's page
    index = open_page(browser, report / "index.html")
    link = index.locator("#comparison ~ p a[href*='#id=']").first
    doc_id = int(link.get_attribute("href").rsplit("=", 1)[1])
    link.click()
    index.wait_for_selector(f"#doc-{doc_id}")
    assert index.inner_text("#count") == "1 of 52 samples" and index.problems == []
