"""`python -m glm_eval.rescore`: re-score stored outputs with the current extraction and metrics (glm_eval/engine/rescore.py)."""
import sys

from glm_eval.core.cli import run
from glm_eval.engine.rescore import main

if __name__ == "__main__":
    sys.exit(run(main))
