"""`python -m glm_eval.serve`: serve a model over OpenAI-compatible and api.py HTTP APIs (glm_eval/engine/serve.py)."""
import sys

from glm_eval.core.cli import run
from glm_eval.engine.serve import main

if __name__ == "__main__":
    sys.exit(run(main))
