"""`python -m glm_eval task=<name> model=<name> [key=value ...] [--multirun]`

Overrides are checked (glm_eval/engine/overrides.py) before Hydra runs anything, so a wrong task, model or option
costs one line naming the valid choices (exit code 2), not a stack trace.
"""
from __future__ import annotations

import os
import sys
import traceback
import warnings

import hydra
from omegaconf import DictConfig

from glm_eval.core import log
from glm_eval.core.errors import UserError, describe
from glm_eval.core.files import config_dir
from glm_eval.engine.overrides import spelled_for_hydra, validate


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    from glm_eval.engine.parallel import ranks
    from glm_eval.engine.run import evaluate
    from glm_eval.engine.sweep import in_sweep, record_failure
    log.setup(cfg.verbose)
    try:
        evaluate(cfg)
    except UserError as e:
        job = ranks()
        message = f"{f'rank {job.rank} of {job.world}: ' if job.world > 1 else ''}{e}"
        print(f"error: {message}", file=sys.stderr)
        if not in_sweep():
            raise SystemExit(2)
        record_failure(message)  # the sweep's other runs go on; it exits non-zero when the last one ends
    except Exception as e:
        if not in_sweep():
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        record_failure(describe(e), traceback.format_exc())


def refuse_dashed_options(argv: list[str]) -> None:
    """`--limit=5` (argparse's habit) where glm-eval takes `limit=5`: one line naming the right form, not Hydra's
    usage. Hydra's own flags (--multirun, --cfg job, …) pass."""
    from hydra._internal.utils import get_args_parser  # Hydra's parser of its own flags
    parser = get_args_parser()
    parser.allow_abbrev = False  # why: argparse reads --m as --multirun, which the checks reading sys.argv miss

    def one_line(message: str):   # `--cfg` without its value: argparse's usage block otherwise
        raise UserError(f"{message} (Hydra's flags: python -m glm_eval --help)")
    parser.error = one_line
    known, unknown = parser.parse_known_args(argv)
    for arg in [*unknown, *known.overrides]:   # "-" alone lands among the overrides
        if arg.startswith("-"):
            key, eq, value = arg.lstrip("-").partition("=")
            if not key:
                raise UserError(f"{arg!r} is not an option: options are key=value without dashes, e.g. limit=5")
            after = argv[argv.index(arg) + 1:argv.index(arg) + 2]
            if not eq and after and not after[0].startswith("-") and "=" not in after[0]:
                value, arg = after[0], f"{arg} {after[0]}"  # --limit 5
            raise UserError(f"options are key=value without dashes: write {key}={value or '<value>'}, not {arg}")


def main() -> None:
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    # our launcher configs (configs/hydra/launcher/) are the plugin's schemas filled in: checked against them
    warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
    try:
        refuse_dashed_options(sys.argv[1:])
        validate(overrides)
        if "--multirun" in sys.argv or "-m" in sys.argv:
            from glm_eval.engine.sweep import fan_out_suite
            sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a.startswith("-")], *fan_out_suite(overrides)]
        sys.argv = [sys.argv[0], *spelled_for_hydra(sys.argv[1:])]  # judge=<name> is Hydra's model@judge=<name>
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank checks the same overrides: one line
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    _run()


if __name__ == "__main__":
    main()
