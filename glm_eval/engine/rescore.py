"""`python -m glm_eval.rescore <run dir> [...]`: re-apply the current extraction and metric code to runs' stored
outputs (no model), rewriting samples.jsonl, metrics.json and the grid."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from glm_eval.analysis.grid import rebuild_grid
from glm_eval.core.cli import parse_args
from glm_eval.core.config import EvalConfig
from glm_eval.core.errors import UserError, describe
from glm_eval.core.files import read_jsonl, write_json, write_jsonl
from glm_eval.engine.records import answers_from_record, score_records, summarize
from glm_eval.tasks import load_task

USAGE = "usage: python -m glm_eval.rescore <run dir holding config.yaml, samples.jsonl, metrics.json> [...]"


def rescore(run_dir: Path) -> dict:
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.load(run_dir / "config.yaml"))
        rows, bad = read_jsonl(run_dir / "samples.jsonl")
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError, YAMLError, OmegaConfBaseException) as e:  # no config.yaml, bad YAML or JSON
        raise UserError(f"{run_dir}: not a readable run ({describe(e)})") from None
    if bad or any(r is None for r in rows):
        raise UserError(f"{run_dir}/samples.jsonl has {len(bad) or rows.count(None)} unreadable lines, e.g. "
                        f"{(bad or ['a line that is not an object'])[0]}; rerun the evaluation instead")
    task = load_task(cfg.task)
    records = rows
    for number, r in enumerate(records, 1):
        outputs = r.get("outputs") or [r.get("output")]
        if "error" not in r and not isinstance(r.get("logprobs"), list) and not all(isinstance(o, str) for o in outputs):
            raise UserError(f"{run_dir}/samples.jsonl line {number} holds no output to rescore; rerun the evaluation")
    try:
        score_records(task, records, [answers_from_record(r) if "error" not in r else [] for r in records])
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a record edited by hand, or another task's
        raise UserError(f"{run_dir}/samples.jsonl does not hold {cfg.task.name} records ({describe(e, 100)}); "
                        f"rerun the evaluation") from None
    before = metrics.get("score")
    for stale in ("reasoning", "budget_curve", "avg@n", "spread", "seed_scores", "maj@k"):  # recomputed if they apply
        metrics.pop(stale, None)
    metrics.update(summarize(records, task, cfg.gen.max_new_tokens or cfg.task.max_new_tokens))
    write_jsonl(run_dir / "samples.jsonl", records)
    write_json(run_dir / "metrics.json", metrics)
    rebuild_grid(Path(cfg.results_dir))
    print(f"{run_dir}: {metrics['metric']} {before} → {metrics['score']} (n={metrics['n']})")
    return metrics


def main(argv: list[str]) -> int:
    paths, _, _ = parse_args(argv, USAGE, {})
    for path in paths:
        if not (Path(path) / "samples.jsonl").exists():
            raise UserError(f"{path}: no samples.jsonl there; {USAGE}")
    for path in paths:
        rescore(Path(path))
    return 0
