"""`--multirun` sweeps: one run per (model, task), in this process or as cluster jobs through Hydra's submitit
launcher (configs/hydra/launcher/). A job that fails is named and the others go on; when the last job ends, the
grid is rebuilt from every finished run (jobs finishing together each rebuild it, the last rebuild may miss a
neighbour) and the sweep exits non-zero if any job failed."""
from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from glm_eval.analysis.grid import find_run_dirs, rebuild_grid
from glm_eval.core.files import write_atomic

FAILED = "failed.txt"  # in the job's folder of the sweep (hydra.sweep.dir/<job number>)


def in_sweep() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not run by Hydra
        return False


def record_failure(message: str, details: str = "") -> None:
    """Note a failed job for the end of the sweep, in its folder of the sweep (on shared storage for SLURM)."""
    runtime = HydraConfig.get()
    write_atomic(Path(runtime.runtime.output_dir) / FAILED, f"{' '.join(runtime.overrides.task)}: {message}\n{details}")


class SweepEnd(Callback):
    """Registered in config.yaml (hydra.callbacks): runs in the process that launched the sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        results_dir = Path(config.results_dir)
        if results_dir.is_dir() and find_run_dirs(results_dir):
            rebuild_grid(results_dir)
            print(f"\n{results_dir}/grid.md\n{(results_dir / 'grid.md').read_text()}")
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED}"), key=lambda p: int(p.parent.name)
                        if p.parent.name.isdigit() else 0)
        for path in failed:
            print(f"failed: #{path.parent.name} {path.read_text().splitlines()[0]}", file=sys.stderr)
        if failed:
            print(f"error: {len(failed)} run(s) of the sweep failed (details: {config.hydra.sweep.dir}/<job>/{FAILED});"
                  " rerun the same sweep to resume: finished answers come from the response cache", file=sys.stderr)
            raise SystemExit(1)


def fan_out_suite(overrides: list[str]) -> list[str]:
    """`--multirun suite=<name> …`: one job per task of the suite (per model), instead of one job running them all
    in turn. The suite's published rows are written to results_dir now, so the rebuilt grid has its published and
    Δ rows."""
    from glm_eval.analysis.grid import write_published
    from glm_eval.engine.overrides import compose_config, first_values
    suites = [o for o in overrides if o.startswith("suite=")]
    if not suites:
        return overrides
    rest = [o for o in overrides if not o.startswith(("suite=", "task="))]
    tasks: list[str] = []
    for name in suites[0].partition("=")[2].split(","):
        cfg = compose_config([*first_values(rest), f"suite={name}"])  # results_dir as the sweep's first run has it
        tasks += [t for t in cfg.suite.tasks if t not in tasks]
        write_published(Path(cfg.results_dir), OmegaConf.to_container(cfg.suite, resolve=True))
    return [*rest, f"task={','.join(tasks)}"]
