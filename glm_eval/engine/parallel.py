"""Data parallel over the processes torchrun starts: `torchrun --nproc-per-node N -m glm_eval task=… model=…`.

Every rank reads the same documents and builds the same requests; rank 0 looks the requests up in the response
cache and tells every rank which are still unanswered (so all ranks agree even while another job writes the cache).
Those are split into deterministic, length-balanced shares of whole batches (the backend says which requests it
computes together, `Backend.groups`): each rank computes exactly the batches one process would, so the numbers it
writes are the same bytes. Each rank answers its share, writing through to the shared cache, so a job killed on N
ranks resumes on any number of ranks. Rank 0 gathers the answers (torch.distributed: gloo on CPU, NCCL on GPU) and
alone scores and writes the run, as a single process would.

A rank that dies ends the job: torchrun stops the others, and the first surviving rank says which rank died, in
one line, before exiting non-zero (`_on_stop`). With vLLM under torchrun, tensor-parallel peers form one replica
and answer the same share (vLLM's external launcher: every rank of a replica must see the same requests).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass
class Ranks:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1
    ranks_per_share: int = 1  # vLLM's tensor-parallel peers answer one share together
    peers: list[tuple[str, int]] = field(default_factory=list)  # (host, pid) of every rank

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def shares(self) -> int:
        return self.world // self.ranks_per_share

    def share(self, groups: list[list[int]], weights: list[int]) -> list[int]:
        """The positions this rank answers: whole groups (batches computed together), heaviest first, each to
        the share with the least weight so far; ties go to the lower share, so every rank computes the same split."""
        loads = [0] * self.shares
        mine, index = [], self.rank // self.ranks_per_share
        weighed = sorted(((sum(weights[p] for p in g), g) for g in groups), key=lambda wg: (-wg[0], wg[1][0]))
        for weight, group in weighed:
            share = min(range(self.shares), key=lambda s: (loads[s], s))
            loads[share] += weight
            if share == index:
                mine += group
        return sorted(mine)

    def agree(self, value):
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, part):
        """Every rank's `part`, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [part]
        import torch.distributed as dist
        parts = [None] * self.world if self.leader else None
        dist.gather_object(part, parts, dst=0)
        return parts


_RANKS: Ranks | None = None


def ranks() -> Ranks:
    """This process's place in a torchrun job (one rank when not under torchrun). `join` connects it."""
    global _RANKS
    if _RANKS is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        _RANKS = Ranks(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                       int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    return _RANKS


def join(gpu: bool, ranks_per_share: int = 1) -> Ranks:
    """Join the job's process group once (gloo; NCCL when each rank computes on its own GPU), learn where every
    rank runs, and make a rank that dies end the job with one line."""
    job = ranks()
    if job.world == 1:
        return job
    import torch
    import torch.distributed as dist
    if job.world % ranks_per_share:
        from glm_eval.core.errors import UserError
        raise UserError(f"torchrun started {job.world} processes, not a multiple of "
                        f"model.vllm.tensor_parallel_size={ranks_per_share}: use --nproc-per-node "
                        f"{ranks_per_share}×<replicas>")
    job.ranks_per_share = ranks_per_share
    if not dist.is_initialized():
        if gpu:
            torch.cuda.set_device(job.local_rank)
        # a dead rank ends the job through torchrun; the timeout only bounds a wait on a rank that hangs
        dist.init_process_group("nccl" if gpu else "gloo", timeout=timedelta(hours=2))
        peers = [None] * job.world
        dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
        job.peers = peers
        signal.signal(signal.SIGTERM, _on_stop)
    return job


def dead_ranks(job: Ranks) -> list[int]:
    """Ranks on this host whose process is gone (torchrun has reaped it by the time it stops the others)."""
    host, dead = socket.gethostname(), []
    for rank, (peer_host, pid) in enumerate(job.peers):
        if peer_host == host and rank != job.rank:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead.append(rank)
    return dead


def _on_stop(signum, frame) -> None:
    """torchrun stops the surviving ranks (SIGTERM) when one fails: the lowest surviving rank on the host of
    rank 0 names the dead ones, the rest leave quietly."""
    job = ranks()
    dead = dead_ranks(job)
    alive_here = [r for r, (h, _) in enumerate(job.peers) if h == socket.gethostname() and r not in dead]
    if job.rank == min(alive_here, default=job.rank) and (job.peers[0][0] == socket.gethostname() or 0 in dead):
        multi_host = len({h for h, _ in job.peers}) > 1
        who = (f"rank {', '.join(map(str, dead))} of {job.world} exited before the job was done, and torchrun "
               "stopped the others" if dead
               else "stopped: a rank on another host died, or the job was stopped" if multi_host
               else f"all {job.world} ranks were stopped (SIGTERM)")
        print(f"error: {who}. Answers finished so far are in the response cache: rerun the same command, on any "
              "number of ranks, to resume", file=sys.stderr, flush=True)
    os._exit(1)  # no teardown that could wait on the dead rank
