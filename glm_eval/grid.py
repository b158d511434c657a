"""The results grid: rows are models, columns tasks, in the order of the ChatGLM3 README table."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = {"gsm8k": "GSM8K", "math": "MATH", "bbh": "BBH", "mmlu": "MMLU", "ceval": "C-Eval", "cmmlu": "CMMLU",
           "mbpp": "MBPP", "agieval": "AGIEval", "humaneval": "HumanEval", "longbench": "LongBench"}


RUNS_ELSEWHERE = "runs_elsewhere.txt"  # run folders outside results_dir (output_dir=...) that the grid includes


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


def rebuild_grid(results_dir: Path) -> pd.DataFrame:
    """Rewrite grid.md and grid.csv in `results_dir` from every metrics.json below it and every registered
    run elsewhere (latest run of a model/task pair wins)."""
    runs = collect(results_dir).sort_values("finished_at").drop_duplicates(["model", "task"], keep="last")
    grid = runs.pivot(index="model", columns="task", values="score") if len(runs) else pd.DataFrame()
    known = [t for t in COLUMNS if t in grid.columns]
    grid = grid[known + sorted(set(grid.columns) - set(known))].rename(columns=COLUMNS).round(1)
    grid.columns.name = None
    results_dir.mkdir(parents=True, exist_ok=True)
    grid.to_csv(results_dir / "grid.csv")
    table = grid.reset_index().rename(columns={"model": "Model"}) if len(grid) else pd.DataFrame({"Model": []})
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join("-" if pd.isna(v) else (f"{v:.1f}" if isinstance(v, float) else str(v))
                                     for v in row) + " |\n" for row in table.itertuples(index=False))
    (results_dir / "grid.md").write_text(header + body)
    return grid
