"""`python -m glm_eval task=<name> model=<name> [key=value ...] [--multirun]`

Overrides are checked (glm_eval/engine/overrides.py) before Hydra runs anything, so a wrong task, model or option
costs one line naming the valid choices (exit code 2), not a stack trace.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from glm_eval.core import log
from glm_eval.core.errors import UserError
from glm_eval.core.files import config_dir
from glm_eval.engine.overrides import validate


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    from glm_eval.engine.run import evaluate
    log.setup(cfg.verbose)
    try:
        evaluate(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        validate(overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    _run()


if __name__ == "__main__":
    main()
