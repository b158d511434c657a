"""Weights loaded here with transformers: the slot-refill generator answers generation requests, the
log-likelihood scorer answers multiple-choice ones. Implements core.protocol.Backend."""
from __future__ import annotations

import json

from glm_eval.backends.source import ModelSource
from glm_eval.core.config import BatchConfig, Device, DType
from glm_eval.core.protocol import Arrivals, BackendInfo, GenerationRequest, LoglikelihoodRequest, OnResponse, OnText


def resolve_device_dtype(device: Device, dtype: DType, index: int | None = None) -> tuple[str, str]:
    """auto → cuda when a GPU is visible, else cpu; bf16 on GPU, fp32 on CPU."""
    import torch
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == Device.auto else str(device)
    if dtype == DType.auto:
        dtype = DType.bfloat16 if kind == "cuda" else DType.float32
    return (f"{kind}:{index}" if kind == "cuda" and index is not None else kind), str(dtype)


def free_memory(device: str) -> int | None:
    """Bytes free for a model on `device` now: the GPU's free memory, or the machine's available RAM."""
    if device.startswith("cuda"):
        import torch
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


class HFBackend:
    def __init__(self, source: ModelSource, tokenizer, batch: BatchConfig):
        from glm_eval.backends.generator import SlotGenerator
        from glm_eval.backends.loglik import LoglikelihoodScorer
        cfg = source.cfg
        device, dtype = resolve_device_dtype(cfg.device, cfg.dtype, cfg.device_index)
        self.model = source.load_model(dtype, device)
        self.tokenizer = tokenizer
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | set(cfg.stop_ids)
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
        self.generator = SlotGenerator(self.model, tokenizer, eos_ids, max_rows=batch.max_rows,
                                       max_tokens=batch.max_tokens, prefill_tokens=batch.prefill_tokens, pad_id=pad,
                                       max_length=cfg.max_length, share_prefix=batch.share_prefix,
                                       prefix_budget=batch.shared_prefix_tokens)
        self.scorer = LoglikelihoodScorer(self.model, pad, self.generator.max_length, token_budget=batch.prefill_tokens,
                                          share_prefix=batch.share_prefix, prefix_budget=batch.shared_prefix_tokens)
        self.info = BackendInfo(fingerprint=json.dumps([source.identity, dtype, device.split(":")[0]]), dtype=dtype,
                                device=device, context_length=self.generator.max_length)

    def generate(self, requests: list[GenerationRequest], on_response: OnResponse,
                 on_text: OnText | None = None, arrivals: Arrivals | None = None) -> None:
        self.generator.generate(requests, on_response, on_text, arrivals)

    def loglikelihood(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        self.scorer.score(requests, on_response)

    def groups(self, requests: list[GenerationRequest] | list[LoglikelihoodRequest]) -> list[list[int]]:
        if requests and isinstance(requests[0], LoglikelihoodRequest):
            return self.scorer.groups(requests)
        # the slot generator refills rows as they finish, so its batches form while it runs; each rank finds the
        # shared prefixes of its own share
        return [[i] for i in range(len(requests))]

    def tokens_processed(self) -> int:
        return self.generator.counters.generated_tokens + self.scorer.tokens_scored

    def take_stats(self) -> dict:
        c = self.generator.take_counters()
        scored, self.scorer.tokens_scored = self.scorer.tokens_scored, 0
        computed, self.scorer.tokens_computed = self.scorer.tokens_computed, 0
        return {"rows": self.generator.max_rows, "peak_rows": c.peak_rows, "prefill_tokens": c.prefill_tokens,
                "reused_prefix_tokens": c.reused_prefix_tokens,
                "prefill_s": round(c.prefill_seconds, 2), "decode_steps": c.decode_steps,
                "decode_s": round(c.decode_seconds, 2), "row_steps": c.computed_slots,
                "useful_row_steps": c.generated_tokens, "loglik_tokens": scored,
                "loglik_computed_tokens": computed}  # context tokens run: a shared prefix once
