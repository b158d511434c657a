"""`python -m glm_eval.rescore <run dir>`: re-apply the current extraction and metric code to a run's stored
outputs (no model), rewriting samples.jsonl, metrics.json and the grid."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from glm_eval.config import EvalConfig
from glm_eval.grid import rebuild_grid
from glm_eval.runner import answers_from_record, score_records, summarize, write_records
from tasks import load_task


def rescore(run_dir: Path) -> dict:
    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.load(run_dir / "config.yaml"))
    task = load_task(cfg.task)
    records = [json.loads(line) for line in open(run_dir / "samples.jsonl", encoding="utf-8") if line.strip()]
    score_records(task, records, [answers_from_record(r) if "error" not in r else [] for r in records])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    before = metrics.get("score")
    metrics.update(summarize(records, task))
    write_records(run_dir, records)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    rebuild_grid(Path(cfg.results_dir))
    print(f"{run_dir}: {metrics['metric']} {before} → {metrics['score']} (n={metrics['n']})")
    return metrics


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "samples.jsonl").exists():
        print("usage: python -m glm_eval.rescore <run dir holding config.yaml, samples.jsonl, metrics.json>",
              file=sys.stderr)
        return 2
    rescore(Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
