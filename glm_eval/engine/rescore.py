"""`python -m glm_eval.rescore <run dir> [...] [judge=<model config> judge.* judging.*]`: re-apply the current
extraction and metric code to runs' stored outputs (no model), rewriting samples.jsonl, metrics.json and the grid.
A task with a judged step is judged again: by the judge named here (a finished run judged later, or by another judge),
else by the run's own, whose replies the records hold (asked again only where a rule verdict changed)."""
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
from glm_eval.core.files import cache_root, read_jsonl, write_atomic, write_json, write_jsonl
from glm_eval.engine.cache import ResponseCache
from glm_eval.engine.records import answers_from_record, score_records, summarize
from glm_eval.tasks import load_task

USAGE = ("usage: python -m glm_eval.rescore <run dir holding config.yaml, samples.jsonl, metrics.json> [...] "
         "[judge=<model config> judge.*=… judging.audit=N]")


def judge_settings(overrides: list[str]):
    """judge=… judge.* judging.* from the command line, checked as `python -m glm_eval` checks them."""
    from glm_eval.engine.overrides import compose_config
    other = [o for o in overrides if not o.lstrip("+").startswith(("judge=", "judge.", "judging."))]
    if other:
        raise UserError(f"rescore takes judge=<model config>, judge.* and judging.* besides run folders, not "
                        f"{other[0]}; {USAGE}")
    if not any(o.lstrip("+").startswith("judge=") for o in overrides):
        raise UserError(f"{overrides[0]}: name the judge with judge=<model config> first; {USAGE}")
    composed = compose_config(overrides)
    return composed.judge, composed.judging


def rescore(run_dir: Path, judge_overrides: list[str] = ()) -> dict:
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
    judge, cache = None, None
    if judge_overrides:
        cfg.judge, cfg.judging = judge_settings(list(judge_overrides))
    if task.judged is not None and cfg.judge is not None:
        from glm_eval.engine.judge import Judge, stored_replies
        known = (metrics.get("judge") or {}).get("fingerprint") if not judge_overrides else None
        judge = Judge(cfg, fingerprint=known if isinstance(known, str) else None)
        if judge_overrides:
            judge.check()
        cache = ResponseCache(cache_root(cfg.cache_dir) / "responses.sqlite")
    try:
        stored = judge and stored_replies(records)
        score_records(task, records, [answers_from_record(r) if "error" not in r else [] for r in records],
                      judge and judge.bind(cfg.judging.audit, cache, stored))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # edited by hand, or another task's
        raise UserError(f"{run_dir}/samples.jsonl does not hold {cfg.task.name} records ({describe(e, 100)}); "
                        f"rerun the evaluation") from None
    finally:
        if cache is not None:
            cache.close()
    before = metrics.get("score")
    for stale in ("reasoning", "budget_curve", "avg@n", "spread", "seed_scores", "maj@k", "judge"):  # recomputed
        metrics.pop(stale, None)
    metrics.update(summarize(records, task, cfg.gen.max_new_tokens or cfg.task.max_new_tokens,
                             judge and judge.describe()))
    if judge_overrides:  # the run is now judged by this judge: a later rescore reads its replies from the records
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_jsonl(run_dir / "samples.jsonl", records)
    write_json(run_dir / "metrics.json", metrics)
    rebuild_grid(Path(cfg.results_dir))
    print(f"{run_dir}: {metrics['metric']} {before} → {metrics['score']} (n={metrics['n']})")
    return metrics


def main(argv: list[str]) -> int:
    paths, _, judge_overrides = parse_args(argv, USAGE, {}, passthrough=True)
    if judge_overrides:
        judge_settings(judge_overrides)  # a wrong judge option is one line before any run is touched
    for path in paths:
        if not (Path(path) / "samples.jsonl").exists():
            raise UserError(f"{path}: no samples.jsonl there; {USAGE}")
    for path in paths:
        rescore(Path(path), judge_overrides)
    return 0
