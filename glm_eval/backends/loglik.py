"""Log-likelihood of continuations after a context, batched, with the context computed once per request.

Multiple-choice scoring in `logits` mode asks for one-token continuations (the choice letters): one forward over
the context, keeping only the last position's logits. In `loglik` mode continuations may be longer: the context is
run once with a KV cache, the cache rows are repeated per continuation, and only the continuation tokens are run
on top. Contexts are sorted by length and packed into forwards of at most `token_budget` (rows × width) tokens.
"""
from __future__ import annotations

import time

import torch
from transformers.cache_utils import DynamicCache

from glm_eval.backends.replies import unfit_loglikelihood
from glm_eval.core.protocol import LoglikelihoodRequest, OnResponse, Response


class LoglikelihoodScorer:
    def __init__(self, model, pad_id: int, max_length: int, token_budget: int = 4096):
        self.model, self.pad_id, self.max_length, self.token_budget = model, pad_id, max_length, token_budget
        self.device = next(model.parameters()).device
        self.tokens_scored = 0
        self.seconds = 0.0

    def batches(self, requests: list[LoglikelihoodRequest]) -> list[list[int]]:
        """The forwards `score` makes (positions into `requests`; one group per request that does not fit).
        Longest first (memory peaks at once), at most `token_budget` padded tokens per forward, and a new batch
        once a context is shorter than 85% of the batch's widest: padding stays under 15% of the work (MMLU's
        long tail of lengths otherwise pads a third of it). A batch ends for its own size or for the next
        context's length, which only shrinks down the order: so the batches of any union of whole batches are
        those batches (data parallel relies on it)."""
        fits, unfit = [], []
        for i, r in enumerate(requests):
            (unfit if unfit_loglikelihood(r, self.max_length) else fits).append(i)
        order = sorted(fits, key=lambda i: -len(requests[i].context.token_ids))  # stable: ties keep their order
        batches, current, width = [[i] for i in unfit], [], 0
        for i in order:
            length = len(requests[i].context.token_ids)
            if current and ((len(current) + 1) * width > self.token_budget or length < 0.85 * width):
                batches.append(current)
                current = []
            if not current:
                width = length
            current.append(i)
        return batches + ([current] if current else [])

    @torch.inference_mode()
    def score(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        for batch in self.batches(requests):
            if failed := unfit_loglikelihood(requests[batch[0]], self.max_length):  # alone in its group
                on_response(batch[0], failed)
                continue
            started = time.perf_counter()
            results = self._score_batch([requests[i] for i in batch])
            self.seconds += time.perf_counter() - started
            for i, response in zip(batch, results):
                self.tokens_scored += response.num_tokens
                on_response(i, response)

    def _score_batch(self, batch: list[LoglikelihoodRequest]) -> list[Response]:
        width = max(len(r.context.token_ids) for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):  # left padding: every context ends at the last column
            ids[row, width - len(r.context.token_ids):] = torch.tensor(r.context.token_ids)
            mask[row, width - len(r.context.token_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        longer = any(len(c) > 1 for r in batch for c in r.continuations)
        cache = DynamicCache() if longer else None
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=longer,
                         logits_to_keep=1)
        first = out.logits[:, -1, :].float().log_softmax(-1)  # [rows, vocab]: the first continuation token
        pairs = [(row, c) for row, r in enumerate(batch) for c in r.continuations]
        rest = self._continuation_rest(pairs, cache, mask, positions) if longer else None
        results, k = [], 0
        for row, r in enumerate(batch):
            logprobs, greedy = [], []
            for c in r.continuations:
                lp = float(first[row, c[0]])
                is_greedy = bool(first[row].argmax() == c[0])
                if len(c) > 1:
                    step = rest[k, :len(c) - 1]  # log-probs after each continuation prefix
                    target = torch.tensor(c[1:], device=step.device)
                    lp += float(step.gather(-1, target[:, None]).sum())
                    is_greedy = is_greedy and bool((step.argmax(-1) == target).all())
                logprobs.append(lp)
                greedy.append(is_greedy)
                k += 1
            results.append(Response(logprobs=logprobs, is_greedy=greedy, finish_reason="loglik",
                                    num_tokens=len(r.context.token_ids) + sum(len(c) for c in r.continuations)))
        return results

    def _continuation_rest(self, pairs, cache: DynamicCache, mask, positions) -> torch.Tensor:
        """Log-probs [pairs, longest-1, vocab] for continuation tokens after the first: the context cache rows
        repeated once per continuation, continuation tokens right-padded on top (padding comes after every real
        token, so causality keeps it out of the scores that are read)."""
        rows = torch.tensor([row for row, _ in pairs], device=self.device)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        steps = max(len(c) for _, c in pairs) - 1
        ids = torch.full((len(pairs), max(steps, 1)), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros_like(ids)
        for k, (_, c) in enumerate(pairs):
            if len(c) > 1:
                ids[k, :len(c) - 1] = torch.tensor(c[:-1])
                cont_mask[k, :len(c) - 1] = 1
        start = positions[:, -1:].to(self.device)[rows] + 1
        cont_positions = start + torch.arange(ids.shape[1], device=self.device)
        full_mask = torch.cat([mask.to(self.device)[rows], cont_mask.to(self.device)], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=full_mask, position_ids=cont_positions,
                         past_key_values=cache, use_cache=True)
        return out.logits.float().log_softmax(-1)
