"""Data parallel under torchrun (2 ranks, gloo, CPU) with the real small model on real data: the same samples.jsonl,
byte for byte, as one process, sampled replies included (4 per problem, each seeded by its document and index); a rank
that dies ends the job with one line naming it, and the job resumes as a 1-rank run from what the ranks finished, with
the uninterrupted run's bytes. The splitting rules themselves are checked without a model."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_eval

from glm_eval.core.protocol import LoglikelihoodRequest, Prompt
from glm_eval.engine.parallel import Ranks


def torchrun(*overrides, ranks=2, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc-per-node={ranks}", "-m", "glm_eval", *overrides, "progress=false"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def single(*overrides):
    return subprocess.run([sys.executable, "-m", "glm_eval", *overrides, "progress=false"], cwd=REPO,
                          capture_output=True, text=True)


GSM8K = ["task=gsm8k", "limit=4", "gen.samples=4", "gen.temperature=0.8", "gen.max_new_tokens=32"]  # 16 replies
# threads=1 for MMLU: a CPU matmul splits its sums by thread count, so log-probs match bytewise only between processes
# with as many threads each (here 2 ranks of 1 thread, as torchrun's ranks get on 2 cores, against 1 process of 1)
# 0-shot: a fifth of 5-shot's tokens, and still batches of several lengths to split
MMLU = ["task=mmlu", "limit=40", "task.shots=0", "task.choice_scoring=logits", "threads=1"]


def one_process(args: list[str], folder: Path) -> bytes:
    """samples.jsonl of the same run in this process (the model already loaded), threads restored after."""
    import torch
    threads = torch.get_num_threads()
    try:
        run_eval(*args, f"results_dir={folder}/results", f"cache_dir={folder}/cache", f"output_dir={folder}/run")
    finally:
        torch.set_num_threads(threads)
    return (folder / "run" / "samples.jsonl").read_bytes()


@pytest.fixture(scope="module")
def gsm8k_one_process(tmp_path_factory, data_dir) -> bytes:
    return one_process([*GSM8K, f"data_dir={data_dir}", "progress=false"], tmp_path_factory.mktemp("one"))


@pytest.mark.parametrize("task", ["gsm8k", "mmlu"])
def test_two_ranks_write_the_same_samples_as_one_process(task, tmp_path, data_dir, request):
    args = [*(GSM8K if task == "gsm8k" else MMLU), f"data_dir={data_dir}"]
    job = torchrun(*args, f"results_dir={tmp_path}/results", f"cache_dir={tmp_path}/c2", f"output_dir={tmp_path}/two")
    out = job.communicate(timeout=600)[0]
    assert job.returncode == 0, out[-3000:]
    expected = (request.getfixturevalue("gsm8k_one_process") if task == "gsm8k"
                else one_process([*args, "progress=false"], tmp_path / "one"))
    assert (tmp_path / "two" / "samples.jsonl").read_bytes() == expected
    assert out.count(" → ") == 1  # rank 0 alone writes and reports the run
    per_rank = json.loads((tmp_path / "two" / "metrics.json").read_text())["answered_per_replica"]
    assert len(per_rank) == 2 and min(per_rank) > 0 and sum(per_rank) == (16 if task == "gsm8k" else 40)


def cached(path) -> int:
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return db.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def rank_pid(parent: int, rank: int) -> int | None:
    """The pid of a torchrun worker by its RANK (torchrun's children)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent \
                    and f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    return None


def test_a_dead_rank_ends_the_job_with_one_line_and_it_resumes_on_one_rank(tmp_path, data_dir, gsm8k_one_process):
    args = [*GSM8K, f"data_dir={data_dir}", f"cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/run",
            f"results_dir={tmp_path}/results"]
    job = torchrun(*args, "batch.max_rows=2")  # small batches: answers arrive one pair at a time
    deadline = time.time() + 300
    while cached(tmp_path / "cache" / "responses.sqlite") < 3:
        assert job.poll() is None and time.time() < deadline, job.stdout.read()[-3000:]
        time.sleep(0.2)
    os.kill(rank_pid(job.pid, 1), signal.SIGKILL)  # as the OOM killer would
    out = job.communicate(timeout=120)[0]  # never a hang
    assert job.returncode != 0
    ours = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and ours[0].startswith("error: rank 1 of 2 exited before the job was done"), out[-3000:]
    finished = cached(tmp_path / "cache" / "responses.sqlite")
    assert 3 <= finished < 16 and not (tmp_path / "run" / "metrics.json").exists()
    resumed = single(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"generated={16 - finished}, from cache={finished})" in resumed.stdout, resumed.stdout
    # replies do not depend on their batch-mates (a sample's seed is its own): the resumed run is the uninterrupted
    # one, byte for byte
    assert (tmp_path / "run" / "samples.jsonl").read_bytes() == gsm8k_one_process


def test_shares_are_whole_groups_covering_every_request_once():
    rng = random.Random(0)
    weights = [rng.randint(1, 900) for _ in range(300)]
    positions = list(range(300))
    rng.shuffle(positions)
    groups = [sorted(positions[k:k + rng.randint(1, 9)]) for k in range(0, 300, 9)]
    groups = [g for g in groups if g]
    for world, per_share in ((1, 1), (2, 1), (3, 1), (8, 1), (4, 2)):
        shares = [Ranks(world=world, rank=r, ranks_per_share=per_share).share(groups, weights) for r in range(world)]
        assert shares == [Ranks(world=world, rank=r, ranks_per_share=per_share).share(groups, weights)
                          for r in range(world)]  # deterministic
        distinct = shares[::per_share]
        assert sorted(p for s in distinct for p in s) == sorted(p for g in groups for p in g)
        assert shares[1::per_share] == distinct[:len(shares[1::per_share])] or per_share == 1  # replicas' peers
        for share in distinct:
            assert all(set(g) <= set(share) or not set(g) & set(share) for g in groups)  # whole groups only
        loads = [sum(weights[p] for p in s) for s in distinct]
        assert max(loads) - min(loads) <= max(sum(weights[p] for p in g) for g in groups)  # balanced


def test_a_rank_runs_its_part_of_the_jobs_plan():
    """What makes a rank's log-probs the bytes one process writes: given any union of whole forwards of the job's
    plan (made by every rank from the same list), it runs those very forwards on the same shared prefixes."""
    from glm_eval.backends.loglik import LoglikelihoodScorer
    rng = random.Random(1)
    for _ in range(20):
        scorer = LoglikelihoodScorer.__new__(LoglikelihoodScorer)
        scorer.token_budget, scorer.max_length, scorer._agreed = 4096, 2048, {}
        scorer.share_prefix, scorer.prefix_budget = True, 32768
        exemplars = [tuple(rng.randrange(50) for _ in range(rng.randint(40, 900))) for _ in range(5)]
        own = [rng.choice([rng.randint(1, 3000), 300]) for _ in range(200)]
        # few-shot prompts, others, some too long; all different
        contexts = {rng.choice([*exemplars, ()]) + tuple(rng.randrange(50) for _ in range(n)) for n in own}
        requests = [LoglikelihoodRequest(Prompt("", c), ((1,),)) for c in contexts]
        job = scorer.plan(requests)
        assert any(row.shared for forward in job for row in forward) and any(not row.shared for row in job[-1])
        units = scorer.groups(requests)
        assert sorted(p for u in units for p in u) == list(range(len(requests)))
        chosen = [u for u in units if rng.random() < 0.5]
        subset = sorted(p for u in chosen for p in u)
        part = [[(subset[row.request], row.prefix, row.shared) for row in forward]
                for forward in scorer.plan([requests[p] for p in subset])]
        assert part == [[(row.request, row.prefix, row.shared) for row in forward] for forward in job
                        if [row.request for row in forward] in chosen]
    twice = [requests[0], requests[0]]  # a question asked twice (MMLU has a few): both answered, in one forward
    scorer.groups(twice + requests[1:3])
    assert [[row.request for row in forward] for forward in scorer.plan(twice)] == [[0, 1]]