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


def split_arguments(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """(Hydra's flags with their values, the key=value overrides, whether --multirun), read by Hydra's own parser.

    `--limit=5` (argparse's habit) where glm-eval takes `limit=5` is refused in one line naming the right form, not
    Hydra's usage. A flag's value is not an override: `--cfg job` must not read `job` as one."""
    from hydra._internal.utils import get_args_parser  # Hydra's parser of its own flags
    parser = get_args_parser()
    parser.allow_abbrev = False  # why: `--=5` and `--c` would read as "ambiguous option: could match …" (14 names)

    def one_line(message: str):   # `--cfg` without its value: argparse's usage block otherwise
        raise UserError(f"{message} (Hydra's flags: python -m glm_eval --help)")
    parser.error = one_line
    known, unknown = parser.parse_known_intermixed_args(argv)   # overrides after a flag too
    for arg in [*unknown, *known.overrides]:   # "-" alone lands among the overrides
        if arg.startswith("-"):
            key, eq, value = arg.lstrip("-").partition("=")
            if not key:
                raise UserError(f"{arg!r} is not an option: options are key=value without dashes, e.g. limit=5")
            spelled_out = [name for action in parser._actions for name in action.option_strings
                           if name.startswith(f"--{key}") and not eq]
            if spelled_out:
                raise UserError(f"write Hydra's flag in full ({' or '.join(spelled_out)}), not {arg}")
            after = argv[argv.index(arg) + 1:argv.index(arg) + 2]
            if not eq and after and not after[0].startswith("-") and "=" not in after[0]:
                value, arg = after[0], f"{arg} {after[0]}"  # --limit 5
            raise UserError(f"options are key=value without dashes: write {key}={value or '<value>'}, not {arg}")
    flags = list(argv)
    for override in known.overrides:
        flags.remove(override)
    return flags, list(known.overrides), known.multirun


def main() -> None:
    # our launcher configs (configs/hydra/launcher/) are the plugin's schemas filled in: checked against them
    warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
    try:
        flags, overrides, multirun = split_arguments(sys.argv[1:])
        validate(overrides)
        if multirun:
            from glm_eval.engine.sweep import fan_out_suite
            overrides = fan_out_suite(overrides)
        # flags first: Hydra's own parser refuses an override after a flag; judge=<name> is its model@judge=<name>
        sys.argv = [sys.argv[0], *flags, *spelled_for_hydra(overrides)]
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank checks the same overrides: one line
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    _run()


if __name__ == "__main__":
    main()
