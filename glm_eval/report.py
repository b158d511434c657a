"""`python -m glm_eval.report`: the static HTML report of a results folder (glm_eval/analysis/report.py)."""
import sys

from glm_eval.core.cli import run
from glm_eval.analysis.report import main

if __name__ == "__main__":
    sys.exit(run(main))
