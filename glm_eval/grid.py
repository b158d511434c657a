"""The results grid: rows are models, columns tasks, in the order of the ChatGLM3 README table."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = {"gsm8k": "GSM8K", "math": "MATH", "math500": "MATH-500", "bbh": "BBH", "mmlu": "MMLU", "ceval": "C-Eval", "cmmlu": "CMMLU",
           "mbpp": "MBPP", "agieval": "AGIEval", "humaneval": "HumanEval", "longbench": "LongBench"}


RUNS_ELSEWHERE = "runs_elsewhere.txt"  # run folders outside results_dir (output_dir=...) that the grid includes
PUBLISHED = "published.json"  # published rows (and the reference for Δ rows), written by a suite run


def write_published(results_dir: Path, suite: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"suite": suite["name"], "reference": suite.get("reference"), "rows": suite.get("published", {})}
    (results_dir / PUBLISHED).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


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


def collect(results_dir: Path) -> pd.DataFrame:
    listing = results_dir / RUNS_ELSEWHERE
    elsewhere = [Path(p) / "metrics.json" for p in listing.read_text().splitlines()] if listing.exists() else []
    rows = []
    for path in sorted(results_dir.glob("**/metrics.json")) + [p for p in elsewhere if p.exists()]:
        try:
            m = json.loads(path.read_text())
            rows.append({"model": m["model"], "task": m["task"], "score": 100 * m["score"],
                         "finished_at": m.get("finished_at", "")})
        except (ValueError, KeyError, TypeError):
            continue  # not a glm-eval run (or a broken file): the grid shows what it can read
    return pd.DataFrame(rows, columns=["model", "task", "score", "finished_at"])


def published_rows(results_dir: Path) -> tuple[pd.DataFrame, str | None]:
    path = results_dir / PUBLISHED
    if not path.exists():
        return pd.DataFrame(), None
    found = json.loads(path.read_text())
    rows = pd.DataFrame.from_dict(found.get("rows", {}), orient="index")
    return rows, found.get("reference")


def rebuild_grid(results_dir: Path) -> pd.DataFrame:
    """Rewrite grid.md and grid.csv in `results_dir` from every metrics.json below it and every registered
    run elsewhere (latest run of a model/task pair wins), plus the published rows of the last suite run and,
    per evaluated model, a Δ row against the suite's reference row."""
    runs = collect(results_dir).sort_values("finished_at").drop_duplicates(["model", "task"], keep="last")
    grid = runs.pivot(index="model", columns="task", values="score") if len(runs) else pd.DataFrame()
    published, reference = published_rows(results_dir)
    deltas = pd.DataFrame()
    if reference in published.index and len(grid):
        common = [t for t in grid.columns if t in published.columns]
        deltas = grid[common] - published.loc[reference, common]
        deltas.index = [f"Δ {model} − {reference}" for model in grid.index]
    if len(published):
        published.index = [f"{name} (published)" for name in published.index]
    grid = pd.concat([grid, published, deltas])
    known = [t for t in COLUMNS if t in grid.columns]
    grid = grid[known + sorted(set(grid.columns) - set(known))].rename(columns=COLUMNS).round(1)
    grid.columns.name = None
    grid.index.name = "model"
    results_dir.mkdir(parents=True, exist_ok=True)
    grid.to_csv(results_dir / "grid.csv")
    table = grid.reset_index().rename(columns={"model": "Model"}) if len(grid) else pd.DataFrame({"Model": []})

    def cell(row_name: str, value) -> str:
        if pd.isna(value):
            return "-"
        if isinstance(value, float):
            return f"{value:+.1f}" if row_name.startswith("Δ ") else f"{value:.1f}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join([str(row[0])] + [cell(str(row[0]), v) for v in row[1:]]) + " |\n"
                   for row in table.itertuples(index=False))
    (results_dir / "grid.md").write_text(header + body)
    return grid
