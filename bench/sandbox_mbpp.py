"""Wall time of the sandbox on the 500 MBPP test-split reference programs (task_id 11..510).

    python bench/sandbox_mbpp.py [--workers N ...] [--data ../shared/data]

Prints, per worker count, seconds for all 500, programs per second, and the non-passing task ids
(367 is a known upstream defect: its test_setup_code uses class Node before the code defines it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from glm_eval.scoring.sandbox import isolation, run_programs

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="*", default=[0], help="0: the default (usable CPUs)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.data / "mbpp" / "mbpp.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if 11 <= r["task_id"] <= 510]
    programs = [r["test_setup_code"] + "\n" + r["code"] + "\n" + "\n".join(r["test_list"]) for r in rows]
    print("isolation:", isolation())
    for workers in args.workers:
        start = time.monotonic()
        outcomes = run_programs(programs, workers=workers or None)
        seconds = time.monotonic() - start
        failing = [r["task_id"] for r, o in zip(rows, outcomes) if o.status != "passed"]
        print(f"workers={workers or 'default'}: {len(programs)} programs in {seconds:.1f} s "
              f"({len(programs) / seconds:.1f}/s); not passed: {failing}")


if __name__ == "__main__":
    main()
