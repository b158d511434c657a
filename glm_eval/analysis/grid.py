"""The results grid: rows are models, columns tasks, in the order of the ChatGLM3 README table."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from glm_eval.core.files import write_atomic, write_json

COLUMNS = {"gsm8k": "GSM8K", "math": "MATH", "math500": "MATH-500", "bbh": "BBH", "mmlu": "MMLU", "ceval": "C-Eval",
           "cmmlu": "CMMLU", "mbpp": "MBPP", "agieval": "AGIEval", "humaneval": "HumanEval", "longbench": "LongBench",
           "longbench_e": "LongBench-E", "mmlu_pro": "MMLU-Pro", "aime24": "AIME24", "aime25": "AIME25",
           "gpqa_diamond": "GPQA", "ifeval": "IFEval", "bfcl": "BFCL AST", "alignbench": "AlignBench",
           # published BFCL overalls average multi-turn (and v4 agentic) parts glm-eval does not run: their own column,
           # never a Δ against a BFCL AST run
           "bfcl_overall": "BFCL overall (incl. multi-turn)"}


log = logging.getLogger(__name__)
RUNS_ELSEWHERE = "runs_elsewhere.txt"  # run folders outside results_dir (output_dir=...) that the grid includes
PUBLISHED = "published.json"  # published rows (and the reference for Δ rows), written by a suite run


def write_published(results_dir: Path, suite: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"suite": suite["name"], "reference": suite.get("reference"), "rows": suite.get("published", {})}
    write_json(results_dir / PUBLISHED, payload)


def register_run(results_dir: Path, output_dir: Path) -> None:
    output_dir = output_dir.resolve()
    if results_dir.resolve() in output_dir.parents:
        return  # found by the glob anyway
    listing = results_dir / RUNS_ELSEWHERE
    known = listing.read_text().splitlines() if listing.exists() else []
    if str(output_dir) not in known:
        results_dir.mkdir(parents=True, exist_ok=True)
        with open(listing, "a") as f:
            f.write(f"{output_dir}\n")


def find_run_dirs(results_dir: Path) -> list[Path]:
    """Folders holding a metrics.json below results_dir, then the runs registered elsewhere that still exist."""
    listing = results_dir / RUNS_ELSEWHERE
    elsewhere = []
    if listing.exists():
        for line in listing.read_text(errors="replace").splitlines():
            try:
                if line and (Path(line) / "metrics.json").is_file():
                    elsewhere.append(Path(line))
            except (OSError, ValueError):  # an edited listing: a line that is no path
                log.warning(f"{listing}: skipped a line that names no run folder: {line[:80]!r}")
    return [p.parent for p in sorted(results_dir.glob("**/metrics.json"))] + elsewhere


def read_runs(results_dir: Path) -> list[dict]:
    """Every usable metrics.json below results_dir and of the runs registered elsewhere. A file the grid cannot use
    (not a glm-eval run, a field of the wrong type) is skipped and named: one odd file never fails a run."""
    runs = []
    for path in (d / "metrics.json" for d in find_run_dirs(results_dir)):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning(f"{path}: unreadable ({type(e).__name__}), left out of the grid")
            continue
        if not (isinstance(m, dict) and isinstance(m.get("model"), str) and isinstance(m.get("task"), str)):
            continue  # not a glm-eval run
        problem = _unusable(m)
        if problem:
            log.warning(f"{path}: {problem}, left out of the grid")
            continue
        runs.append(m)
    return runs


def _unusable(m: dict) -> str | None:
    if m.get("score") is not None and (not isinstance(m["score"], (int, float)) or isinstance(m["score"], bool)):
        return "`score` is not a number"
    if not isinstance(m.get("finished_at", ""), str):
        return "`finished_at` is not a string"
    if "longbench" in m:
        try:
            longbench_columns(m)
            published = m["longbench"].get("published") or {}
            if not all(isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values())
                       for v in published.values()):
                return "`longbench.published` is not a table of numbers"
        except (AttributeError, KeyError, TypeError, ValueError):
            return "its `longbench` block is not LongBench's"
    return None


CUT_OFF = " cut-off %"  # the column beside a reasoning score: the share of replies cut off inside their reasoning
JUDGE = " judge"  # beside a judged score: the judge model that produced it (another judge's number is not comparable)
SPREAD = " ±"  # beside an avg@n score: its spread across the n seeds (grid.md writes it into the score's cell)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cut_off_share(metrics: dict) -> float | None:
    """The share (0-100) of a run's replies cut off inside their reasoning; None for a run whose replies did not
    reason."""
    block = metrics.get("reasoning")
    share = block.get("cut_off_share") if isinstance(block, dict) else None
    return 100 * share if isinstance(share, (int, float)) and not isinstance(share, bool) else None


def scale(metrics: dict) -> float:
    """What a run's score is multiplied by where shown: 100 (a share as %), or its task's own (AlignBench: 1)."""
    return _number(metrics.get("scale")) or 100


def collect(runs: list[dict]) -> pd.DataFrame:
    rows = [{"model": m["model"], "task": m["task"], "score": scale(m) * m["score"], "cut_off": cut_off_share(m),
             "spread": 100 * spread if (spread := _number(m.get("spread"))) is not None else None,
             "judge": judge_of(m), "finished_at": m.get("finished_at", "")}
            for m in runs if isinstance(m.get("score"), (int, float))]
    return pd.DataFrame(rows, columns=["model", "task", "score", "cut_off", "spread", "judge", "finished_at"])


def judge_of(metrics: dict) -> str | None:
    block = metrics.get("judge")
    return str(block.get("model")) if isinstance(block, dict) and block.get("model") is not None else None


def published_rows(results_dir: Path, fallback: dict | None = None) -> tuple[pd.DataFrame, str | None]:
    """The published rows of the last suite run in results_dir (else of `fallback`, a suite config) and their
    reference row. A malformed published.json is skipped and named."""
    path = results_dir / PUBLISHED
    found = fallback or {}
    if path.exists():
        try:
            found = json.loads(path.read_text())
            rows = found.get("rows", {})
            if not (isinstance(rows, dict) and all(isinstance(r, dict) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in r.values())
                    for r in rows.values()) and isinstance(found.get("reference"), (str, type(None)))):
                raise ValueError("not {rows: {name: {task: score}}, reference}")
        except (OSError, ValueError, AttributeError) as e:
            log.warning(f"{path}: unusable ({e}), its published rows are left out")
            found = fallback or {}
    rows = pd.DataFrame.from_dict(found.get("rows", found.get("published", {})), orient="index")
    return rows, found.get("reference")


def rebuild_grid(results_dir: Path) -> pd.DataFrame:
    """Rewrite grid.md and grid.csv in `results_dir` from every metrics.json below it and every registered
    run elsewhere (latest run of a model/task pair wins), plus the published rows of the last suite run and,
    per evaluated model, a Δ row against the suite's reference row."""
    all_runs = read_runs(results_dir)
    grid = build_grid(results_dir, all_runs)
    write_table(grid, results_dir / "grid", decimals=1)
    rebuild_detail_tables(results_dir, all_runs)
    return grid


def build_grid(results_dir: Path, all_runs: list[dict], fallback_published: dict | None = None) -> pd.DataFrame:
    """Rows: models (scores ×100), published rows, Δ rows (each model against the published row of its own name,
    else the suite's reference); columns: tasks in the README's order, an avg@n score followed by its spread across
    seeds and a reasoning score by its cut-off share."""
    runs = collect(all_runs).sort_values("finished_at").drop_duplicates(["model", "task"], keep="last")
    grid = runs.pivot(index="model", columns="task", values="score") if len(runs) else pd.DataFrame()
    beside = {}  # suffix → (model × task) values shown beside a task's score
    for suffix, column in ((SPREAD, "spread"), (CUT_OFF, "cut_off"), (JUDGE, "judge")):
        found = runs.dropna(subset=[column])
        beside[suffix] = found.pivot(index="model", columns="task", values=column) if len(found) else pd.DataFrame()
    published, reference = published_rows(results_dir, fallback_published)
    deltas = {}
    for model in grid.index:
        own = [name for name in published.index if str(name).lower() == str(model).lower()]
        against = own[0] if own else reference
        if against in published.index:
            common = [t for t in grid.columns if t in published.columns and pd.notna(published.loc[against, t])]
            deltas[f"Δ {model} − {against}"] = grid.loc[model, common] - published.loc[against, common]
    deltas = pd.DataFrame.from_dict(deltas, orient="index")
    if len(published):
        published.index = [f"{name} (published)" for name in published.index]
    grid = pd.concat([grid, published, deltas])
    known = [t for t in COLUMNS if t in grid.columns]
    order, names = [], dict(COLUMNS)
    for task in known + sorted(set(grid.columns) - set(known)):
        order.append(task)
        for suffix, values in beside.items():  # how much an avg@n moves by seed; how many replies never answered;
            # which judge graded it
            if task in values.columns:
                grid[task + suffix] = values[task]
                order.append(task + suffix)
                names[task + suffix] = COLUMNS.get(task, task) + suffix
    return grid[order].rename(columns=names).round(1)


def write_table(grid: pd.DataFrame, stem: Path, decimals: int, notes: list[str] = ()) -> None:
    """`stem`.csv and a Markdown `stem`.md: one row per model (published and Δ rows included), "-" where empty."""
    grid.columns.name = None
    grid.index.name = "model"
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(stem.with_suffix(".csv"), grid.to_csv())
    table = grid.reset_index().rename(columns={"model": "Model"}) if len(grid) else pd.DataFrame({"Model": []})

    def cell(row_name: str, value) -> str:
        if pd.isna(value):
            return "-"
        if isinstance(value, float):
            return f"{value:+.{decimals}f}" if row_name.startswith("Δ ") else f"{value:.{decimals}f}"
        return str(value)

    # an avg@n score's spread goes into its own cell ("91.0 ± 1.2"); the CSV keeps it as a column of numbers
    spreads = {c: c[:-len(SPREAD)] for c in table.columns if c.endswith(SPREAD) and c[:-len(SPREAD)] in table.columns}
    shown = [c for c in table.columns if c not in spreads]

    def cells(row: pd.Series) -> list[str]:
        name = str(row["Model"])
        out = []
        for column in shown[1:]:
            text = cell(name, row[column])
            spread = next((row[s] for s, base in spreads.items() if base == column), None)
            out.append(f"{text} ± {spread:.{decimals}f}" if text != "-" and spread is not None and pd.notna(spread)
                       else text)
        return [name, *out]

    header = "| " + " | ".join(shown) + " |\n|" + "---|" * len(shown) + "\n"
    body = "".join("| " + " | ".join(cells(row)) + " |\n" for _, row in table.iterrows())
    write_atomic(stem.with_suffix(".md"), header + body + "".join(f"\n{note}" for note in notes))


def longbench_columns(metrics: dict) -> dict[str, float]:
    """THUDM's LongBench table (0-100) from a run's metrics: Avg (the headline), the categories, EN / ZH, the
    datasets, and LongBench-E's length-bucket means."""
    block = metrics["longbench"]
    columns = {"Avg": metrics["score"], **{c: v["score"] for c, v in (metrics.get("categories") or {}).items()}}
    columns = {k: 100 * v for k, v in columns.items()}
    columns.update(block.get("languages") or {})
    columns.update({d: 100 * v["score"] for d, v in (metrics.get("subjects") or {}).items()})
    columns.update(block.get("bucket_means") or {})
    return {k: round(v, 10) for k, v in columns.items() if isinstance(v, (int, float)) and v == v}


def rebuild_detail_tables(results_dir: Path, runs: list[dict]) -> None:
    """The LongBench breakdown a grid cell hides (datasets, categories, EN/ZH), from the `longbench` block of each
    run's metrics, written to `longbench.md/.csv` (`longbench_e.md/.csv`): a row per run (latest per model and
    task), the published rows, and a Δ row per run against the published row of the same model, else the
    configured reference."""
    latest: dict[str, dict[str, dict]] = {}
    for m in sorted(runs, key=lambda m: m.get("finished_at", "")):
        block = m.get("longbench")
        if isinstance(block, dict) and isinstance(block.get("table"), str) and isinstance(m.get("score"), (int, float)):
            label = m["model"] if m["task"] == block["table"] else f"{m['model']} · {m['task']}"
            latest.setdefault(block["table"], {})[label] = m
    for name, rows in latest.items():
        blocks = {label: m["longbench"] for label, m in rows.items()}
        columns = {label: longbench_columns(m) for label, m in rows.items()}
        newest = max(rows.values(), key=lambda m: m.get("finished_at", ""))["longbench"]
        published = newest.get("published") or {}
        grid = pd.DataFrame.from_dict(columns, orient="index")
        deltas = {}
        for label, m in rows.items():
            same_model = [p for p in published if p.lower() == m["model"].lower()]
            reference = same_model[0] if same_model else blocks[label].get("reference")
            if reference in published:
                deltas[f"Δ {label} − {reference}"] = {c: v - published[reference][c]
                                                      for c, v in columns[label].items()
                                                      if c in published[reference]}
        order = list(dict.fromkeys([*next(iter(published.values()), {}), *grid.columns]))
        grid = pd.concat([grid, pd.DataFrame.from_dict({f"{p} (published)": v for p, v in published.items()},
                                                       orient="index"),
                          pd.DataFrame.from_dict(deltas, orient="index")])
        notes = [f"{label}: partial run, {len(b['missing'])} datasets not evaluated ({', '.join(b['missing'])}); "
                 f"its categories average the datasets present." for label, b in blocks.items() if b.get("missing")]
        write_table(grid[[c for c in order if c in grid.columns]], results_dir / name, decimals=2, notes=notes)


USAGE = "usage: python -m glm_eval.grid [results_dir] (default: results)"


def main(argv: list[str]) -> int:
    """`python -m glm_eval.grid results/`: rebuild the grid from every finished run (after a sweep whose jobs
    ran elsewhere, or after deleting a run folder) and print it."""
    from glm_eval.core.cli import parse_args
    from glm_eval.core.errors import UserError
    paths, _, _ = parse_args(argv, USAGE, {}, paths=(0, 1))
    results_dir = Path(paths[0] if paths else "results")
    if not results_dir.is_dir():
        raise UserError(f"{results_dir} is not a folder of runs; {USAGE}")
    if not find_run_dirs(results_dir):
        raise UserError(f"no finished runs (metrics.json) below {results_dir}")
    rebuild_grid(results_dir)
    print((results_dir / "grid.md").read_text(), end="")
    print(f"written: {results_dir}/grid.md, grid.csv")
    return 0
