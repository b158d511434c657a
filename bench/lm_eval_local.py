"""Run one lm-eval task defined by a config dict (a local YAML), offline, through lm-eval's HF backend."""
from __future__ import annotations

import os
import tempfile
import time


def evaluate_local_task(task_config: dict | list[dict], model_dir: str | None, model=None,
                        **simple_evaluate_kwargs) -> tuple[dict, float]:
    """lm_eval.simple_evaluate on the task (or several tasks in one call, as lm-eval runs a group such as mmlu's
    57 subjects: their requests are batched together); returns (results, wall seconds of simple_evaluate only, not imports).
    By default lm-eval's HF backend loads `model_dir` (fp32 CPU; the wall includes the load); `model` passes an
    lm-eval model object built beforehand instead (e.g. its vLLM backend, whose engine start is timed apart)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # must precede the datasets import
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import yaml
    import lm_eval
    from lm_eval.tasks import TaskManager

    configs = task_config if isinstance(task_config, list) else [task_config]
    names = [c["task"] for c in configs]
    with tempfile.TemporaryDirectory(prefix=f"{names[0]}_") as task_dir:
        for config in configs:
            with open(os.path.join(task_dir, f"{config['task']}.yaml"), "w") as f:
                yaml.safe_dump(config, f, sort_keys=False)
        # Built-in tasks aren't needed; skipping them avoids indexing hundreds of YAMLs.
        tm = TaskManager(include_path=task_dir, include_defaults=False)
        start = time.perf_counter()
        loading = {"model": model} if model is not None else {
            "model": "hf", "model_args": f"pretrained={model_dir},dtype=float32,device=cpu"}
        results = lm_eval.simple_evaluate(
            **loading, tasks=names,
            task_manager=tm, log_samples=True, cache_requests=False, bootstrap_iters=0, **simple_evaluate_kwargs)
        return results, time.perf_counter() - start
