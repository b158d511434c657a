"""MATH-500 (Lightman et al. 2023, PRM800K test subset): the MATH task on 500 problems; see tasks/math.py."""
from glm_eval.tasks.math import TASK  # noqa: F401  (same protocol; the config points at the subset)
