"""`python -m glm_eval.compare`: compare runs of checkpoints with paired statistics (glm_eval/analysis/compare.py)."""
import sys

from glm_eval.core.cli import run
from glm_eval.analysis.compare import main

if __name__ == "__main__":
    sys.exit(run(main))
