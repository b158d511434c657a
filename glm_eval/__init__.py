"""glm-eval: evaluate GLM / ChatGLM (and any causal LM) on the ChatGLM3 README benchmarks."""
import os

# torch's CPU kernels run on GNU OpenMP, whose idle threads spin for a while at every barrier before they sleep. Alone
# on a machine that wastes nothing, but two runs on the same cores (a sweep on one node, tests beside a server) spin
# on each other's cores while the thread they wait for is descheduled: a GSM8K run took ~10x its time alone instead
# of ~2x. Passive waiting costs a run alone a few percent (bench/side_by_side.py measures both). Set before torch
# loads libgomp; OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
