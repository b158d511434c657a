"""`python -m glm_eval.convert`: convert a THUDM checkpoint into an HF-native one (glm_eval/glm/convert.py)."""
import sys

from glm_eval.core.cli import run
from glm_eval.glm.convert import main

if __name__ == "__main__":
    sys.exit(run(main))
