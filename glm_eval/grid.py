"""`python -m glm_eval.grid [results_dir]`: rebuild the grid from every finished run (glm_eval/analysis/grid.py)."""
import sys

from glm_eval.core.cli import run
from glm_eval.analysis.grid import main

if __name__ == "__main__":
    sys.exit(run(main))
