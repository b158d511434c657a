"""Log-likelihood of continuations after a context, batched, with the context computed once per request and a
prefix shared by many contexts computed once for all of them.

Multiple-choice scoring in `logits` mode asks for one-token continuations (the choice letters): one forward over
the context, keeping only the last position's logits. In `loglik` mode continuations may be longer: the context is
run once with a KV cache, the cache rows are repeated per continuation, and only the continuation tokens are run
on top. Contexts that share a long prefix (few-shot exemplars) are grouped (backends/prefix.py): each prefix runs
once, alone, and the contexts' own tokens run on top of its cache. Within a group, contexts are sorted by length
and packed into forwards of at most `token_budget` (rows × width) tokens of their own. Forwards never mix groups:
rows attending to prefixes of other lengths would pad their attention to the longest (measured on 300 MMLU 5-shot
questions: 10-35% slower than forwards of a few rows each).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from glm_eval.backends.prefix import PrefixedCache, PrefixGroup, compute_prefix, own_tokens, prefix_groups
from glm_eval.backends.replies import unfit_loglikelihood
from glm_eval.core.protocol import LoglikelihoodRequest, OnResponse, Response


@dataclass(frozen=True)
class Row:
    request: int  # position in the caller's list
    prefix: int  # its prefix group (-1: none)
    shared: int  # tokens of its context in that prefix


Forward = list[Row]


class LoglikelihoodScorer:
    def __init__(self, model, pad_id: int, max_length: int, token_budget: int = 4096, share_prefix: bool = True,
                 prefix_budget: int = 32768):
        self.model, self.pad_id, self.max_length, self.token_budget = model, pad_id, max_length, token_budget
        self.share_prefix, self.prefix_budget = share_prefix, prefix_budget
        self.device = next(model.parameters()).device
        self.tokens_scored = 0  # context + continuation tokens of the requests answered
        self.tokens_computed = 0  # context tokens run through the model (a shared prefix once; padding not counted)
        self.seconds = 0.0
        # data parallel: the job's plan, made by every rank from the same list in `groups`: each request's forward
        # and row in it, so that a rank runs its forwards exactly as one process would
        self._agreed: dict[LoglikelihoodRequest, tuple[int, int, Row]] = {}

    def plan(self, requests: list[LoglikelihoodRequest]) -> list[Forward]:
        """The forwards `score` makes, in order: a request that does not fit alone in its own, then each prefix
        group's forwards (its prefix computed before the first, dropped after the last), then the contexts that
        share nothing. A rank's share of a data parallel job runs its part of the job's plan."""
        if self._agreed and all(r in self._agreed for r in requests):
            return self._part_of_agreed(requests)
        fits, unfit = [], []
        for i, r in enumerate(requests):
            (unfit if unfit_loglikelihood(r, self.max_length) else fits).append(i)
        plan = [[Row(i, -1, 0)] for i in unfit]
        contexts = [requests[i].context.token_ids for i in fits]
        groups = (prefix_groups(contexts, self.prefix_budget) if self.share_prefix
                  else [PrefixGroup(0, list(range(len(fits))))])
        for number, group in enumerate(groups):
            plan += self._pack([Row(fits[m], number if group.length else -1, group.length) for m in group.members],
                               requests)
        return plan

    def _pack(self, rows: list[Row], requests: list[LoglikelihoodRequest]) -> list[Forward]:
        """Forwards over the contexts' own tokens (after their prefix), longest first (memory peaks at once): at
        most `token_budget` padded tokens each, and a new forward once a context is shorter than 85% of the
        forward's widest, so padding stays under 15% of the work (MMLU's long tail of lengths otherwise pads a
        third of it). Rows also attend to their prefix: rows × (prefix + width) stays under 8 × token_budget."""
        def own(row: Row) -> int:
            return len(requests[row.request].context.token_ids) - row.shared
        forwards, current, width = [], [], 0
        for row in sorted(rows, key=lambda r: -own(r)):  # stable: ties keep their order
            n = len(current) + 1
            if current and (n * width > self.token_budget or own(row) < 0.85 * width
                            or n * (row.shared + width) > 8 * self.token_budget):
                forwards.append(current)
                current = []
            if not current:
                width = own(row)
            current.append(row)
        return forwards + ([current] if current else [])

    def groups(self, requests: list[LoglikelihoodRequest]) -> list[list[int]]:
        """What data parallel keeps on one rank: a forward. The plan is remembered, so the rank's share (any union
        of whole forwards) runs those very forwards on the same prefixes; a prefix used on several ranks is
        computed on each."""
        self._agreed, units = {}, []
        for number, forward in enumerate(self.plan(requests)):
            self._agreed.update({requests[row.request]: (number, k, row) for k, row in enumerate(forward)})
            units.append([row.request for row in forward])
        return units

    def _part_of_agreed(self, requests: list[LoglikelihoodRequest]) -> list[Forward]:
        forwards: dict[int, list[tuple[int, Row]]] = {}
        for i, r in enumerate(requests):
            number, k, row = self._agreed[r]
            forwards.setdefault(number, []).append((k, Row(i, row.prefix, row.shared)))
        # rows in the plan's order (a duplicated request takes its copy's place, next to it)
        return [[row for _, row in sorted(forwards[n], key=lambda e: e[0])] for n in sorted(forwards)]

    @torch.inference_mode()
    def score(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        plan, self._agreed = self.plan(requests), {}
        prefix, number = None, -1  # the KV of the prefix group being scored (its forwards come one after another)
        for forward in plan:
            head = forward[0]  # a forward's rows share one prefix
            if failed := unfit_loglikelihood(requests[head.request], self.max_length):  # alone (or with its copies)
                for row in forward:
                    on_response(row.request, failed)
                continue
            started = time.perf_counter()
            if head.prefix != number:
                prefix, number = None, head.prefix
                if head.prefix >= 0:
                    prefix = self._prefix(requests[head.request].context.token_ids[:head.shared])
            results = self._score_batch([requests[row.request] for row in forward], prefix, head.shared)
            self.seconds += time.perf_counter() - started
            for row, response in zip(forward, results):
                self.tokens_scored += response.num_tokens
                on_response(row.request, response)

    def _prefix(self, ids) -> PrefixedCache:
        self.tokens_computed += len(ids)
        return compute_prefix(self.model, ids)

    def _score_batch(self, batch: list[LoglikelihoodRequest], prefix: PrefixedCache | None,
                     shared: int) -> list[Response]:
        ids, mask, positions = own_tokens([r.context.token_ids for r in batch], shared, self.pad_id)
        self.tokens_computed += int(mask[:, shared:].sum())
        cache = PrefixedCache(self.model.config.num_hidden_layers, prefix)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        first = out.logits[:, -1, :].float().log_softmax(-1)  # [rows, vocab]: the first continuation token
        pairs = [(row, c) for row, r in enumerate(batch) for c in r.continuations]
        longer = any(len(c) > 1 for _, c in pairs)
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

    def _continuation_rest(self, pairs, cache: PrefixedCache, mask, positions) -> torch.Tensor:
        """Log-probs [pairs, longest-1, vocab] for continuation tokens after the first: the context cache rows
        repeated once per continuation, continuation tokens right-padded on top (padding comes after every real
        token, so causality keeps it out of the scores that are read)."""
        rows = torch.tensor([row for row, _ in pairs], device=self.device)
        cache.select_rows(rows)
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
