"""AIME 2025 (I and II, 30 problems, from matharena's original .tex layout): the AIME task; see tasks/aime24.py."""
from glm_eval.tasks.aime24 import TASK  # noqa: F401  (same protocol; the config points at the 2025 files)
