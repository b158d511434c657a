"""Two GSM8K runs side by side on one machine, against each run alone: how much they slow each other.

Each run is `python -m glm_eval task=gsm8k model=smollm2-135m-instruct limit=N` in its own process with its own
empty response cache (so both generate everything), timed from start to exit (model loading included). Two
runs sharing the cores should take about twice their time alone. With GNU OpenMP's default waiting (idle threads
spin at every barrier before sleeping), each spins on the cores the other's threads need, and a 20-problem run
took ~10x its time alone; glm-eval sets OMP_WAIT_POLICY=PASSIVE (glm_eval/__init__.py). The bench runs both:
"passive" as glm-eval runs now, "libgomp default" with GOMP_SPINCOUNT=300000 (libgomp's own default when
OMP_WAIT_POLICY is unset, which glm-eval then leaves alone).

    python bench/side_by_side.py [--limit 20] [--data-dir ../shared/data] [--libgomp-default] [--cap 5]

A pair still running at --cap times the alone time is stopped and shown as ">cap x".

Last line: side_by_side_ratio=<worse of the two passive runs / passive alone>
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICIES = {"passive (glm-eval)": {}, "libgomp default": {"GOMP_SPINCOUNT": "300000"}}


def start(limit: int, data_dir: str, work: Path, env: dict) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.Popen(
        [sys.executable, "-m", "glm_eval", "task=gsm8k", "model=smollm2-135m-instruct", f"limit={limit}",
         f"data_dir={data_dir}", f"cache_dir={work / 'cache'}", f"results_dir={work / 'results'}", "progress=false"],
        cwd=REPO, env={**clean, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(runs: list[subprocess.Popen], cap_s: float = float("inf")) -> list[float | None]:
    """Each run's wall time; None for one stopped at `cap_s`."""
    started, ended = time.perf_counter(), {}
    while len(ended) < len(runs):
        for i, run in enumerate(runs):
            if i not in ended and run.poll() is not None:
                ended[i] = time.perf_counter() - started
                if run.returncode:
                    sys.exit(f"a run failed: {run.stderr.read()[-2000:]}")
        if time.perf_counter() - started > cap_s:
            for i, run in enumerate(runs):
                if i not in ended:
                    run.kill()
                    run.wait()
                    ended[i] = None
        time.sleep(0.05)
    return [ended[i] for i in range(len(runs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--data-dir", default=os.environ.get("GLM_EVAL_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--libgomp-default", action="store_true",
                        help="also the pair as it ran before: OpenMP's default spinning (slow: the cause, shown)")
    parser.add_argument("--cap", type=float, default=5.0, help="stop a pair at this many times the alone time")
    args = parser.parse_args()
    import torch
    print(f"GSM8K limit={args.limit}, smollm2-135m-instruct fp32, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads per run)")
    print(f"{'OpenMP waiting':<20} {'alone':>8}  {'side by side':>16}  {'ratio':>13}")
    worst = None
    for name, env in POLICIES.items():
        if env and not args.libgomp_default:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            [alone] = timed([start(args.limit, args.data_dir, Path(tmp) / "alone", env)])
            pair = timed([start(args.limit, args.data_dir, Path(tmp) / f"pair{i}", env) for i in range(2)],
                         args.cap * alone)
        ratios = [args.cap if t is None else t / alone for t in pair]
        worst = max(ratios) if worst is None else worst
        shown = [(f">{args.cap * alone:.0f}s", f">{args.cap:g}x") if t is None else (f"{t:.1f}s", f"{t / alone:.2f}x")
                 for t in pair]
        print(f"{name:<20} {alone:>7.1f}s  {shown[0][0]:>7} / {shown[1][0]:>6}  {shown[0][1]:>6} / {shown[1][1]}",
              flush=True)
    print(f"side_by_side_ratio={worst:.2f}")


if __name__ == "__main__":
    main()
