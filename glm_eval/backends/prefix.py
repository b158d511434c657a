"""Shared prompt prefixes, found from token ids alone and computed once.

Few-shot prompts repeat the same exemplars before every question (MMLU's 5 dev questions per subject, BBH's
3-shot prompt per subtask), so most of their tokens are a prefix that many prompts share. `prefix_groups` finds
those prefixes without any hint from the task, the way a radix tree over the prompts would (SGLang's
RadixAttention): sorted lexicographically, a prompt's longest common prefix with any other prompt is the one with a
sorted neighbour, and runs of sorted prompts are the nodes of the tree. A group's prefix is run once, its KV cache
kept as one row, and every member runs only its own tokens on top (`PrefixedCache`).

One prefix per prompt (no nesting): few-shot prompts share one long prefix and then differ, which one level
captures. A group's prefix is the longest prefix of all its members, never their whole prompt (each member needs
at least one token of its own, whose logits are read). Grouping is stable under data parallel: the groups of any
union of whole groups are those groups, as long as removing the other groups does not tip a node's choice
between sharing there and sharing below it; where it does, a rank computes a prefix apart that one process would
not (or the reverse), which changes rounding only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

# A shorter common prefix is not worth its own forward: a one-row pass over a few dozen tokens runs far below the
# speed of the batched forwards it would shorten, and the prompts' own tokens then attend to a copied cache.
MIN_SHARED_TOKENS = 32


@dataclass
class PrefixGroup:
    length: int  # tokens shared by every member (0: the members share nothing worth computing apart)
    members: list[int]  # positions of the prompts in the caller's list


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(prompts: Sequence[Sequence[int]], max_length: int,
                  min_length: int = MIN_SHARED_TOKENS) -> list[PrefixGroup]:
    """Groups of prompts sharing a prefix of `min_length`..`max_length` tokens (the KV budget), then one group
    (length 0) of the prompts that share nothing, in the caller's order.

    Sorted, the prompts are the leaves of a radix tree, and a node is a run of them whose neighbours share
    `depth` tokens (the run's smallest neighbour overlap); its children are the runs that share more. For each
    node, sharing there saves (members - 1) × depth computed tokens; sharing inside its children saves what they
    save. The larger wins, from the leaves up: 17 MMLU questions under one 500-token 5-shot prefix share it,
    not the few words some pairs of them also have in common, and a chat template's system prompt shared by
    every subject does not stop each subject from sharing its own exemplars."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    overlap = [_common(prompts[a], prompts[b]) for a, b in zip(order, order[1:])]  # overlap[k]: order[k], order[k+1]
    best: dict[tuple[int, int], tuple[int, list[tuple[int, int, int]]]] = {}  # node → (tokens saved, groups)
    stack = [(0, len(order), False)]
    while stack:  # post-order without recursion: nesting can be as deep as a prompt is long
        lo, hi, children_done = stack.pop()
        if hi - lo < 2:
            best[lo, hi] = (0, [])
            continue
        depth = min(overlap[lo:hi - 1])
        cuts = [lo] + [k + 1 for k in range(lo, hi - 1) if overlap[k] == depth] + [hi]
        children = list(zip(cuts, cuts[1:]))
        if not children_done:
            stack.append((lo, hi, True))
            stack += [(a, b, False) for a, b in children]
            continue
        inside = sum(best[c][0] for c in children), [g for c in children for g in best.pop(c)[1]]
        # a member that is all prefix (a duplicate, or a prompt another extends) keeps a token of its own,
        # whose logits are read
        length = min(depth, min(len(prompts[order[k]]) for k in range(lo, hi)) - 1)
        here = (hi - lo - 1) * length if min_length <= length <= max_length else 0
        best[lo, hi] = (here, [(length, lo, hi)]) if here and here >= inside[0] else inside
    chosen = best.get((0, len(order)), (0, []))[1]
    groups = [PrefixGroup(length, [order[k] for k in range(lo, hi)]) for length, lo, hi in chosen]
    grouped = {i for g in groups for i in g.members}
    alone = [i for i in range(len(prompts)) if i not in grouped]
    return groups + ([PrefixGroup(0, alone)] if alone else [])


class PrefixedLayer(DynamicLayer):
    """One layer's cache: a shared prefix (one row, or none) and each row's own tokens after it. `update` keeps
    only the rows' own tokens and returns them behind the prefix for attention, so the prefix is stored once and
    its copy per row lives for one layer's attention at a time. Keys and values may differ in width (MLA's latent
    and rotary key: GLM-4.7-Flash, GLM-5), and a sparse-attention layer (GLM-5's DSA) keeps its indexer's keys
    ([rows, tokens, dim], as transformers' DynamicIndexedLayer) the same way."""

    def __init__(self, prefix_keys: torch.Tensor | None = None, prefix_values: torch.Tensor | None = None,
                 prefix_index_keys: torch.Tensor | None = None):
        super().__init__()
        self.prefix_keys, self.prefix_values, self.prefix_index_keys = prefix_keys, prefix_values, prefix_index_keys
        self.index_keys: torch.Tensor | None = None

    @staticmethod
    def _behind_prefix(own: torch.Tensor, prefix: torch.Tensor | None, dim: int = -2) -> torch.Tensor:
        if prefix is None:
            return own
        return torch.cat([prefix.expand(own.shape[0], *prefix.shape[1:]), own], dim=dim)

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        return self._behind_prefix(keys, self.prefix_keys), self._behind_prefix(values, self.prefix_values)

    def update_indexer(self, index_key_states: torch.Tensor) -> torch.Tensor:
        self.index_keys = index_key_states if self.index_keys is None else \
            torch.cat([self.index_keys, index_key_states], dim=1)
        return self._behind_prefix(self.index_keys, self.prefix_index_keys, dim=1)

    def get_seq_length(self) -> int:
        return (0 if self.prefix_keys is None else self.prefix_keys.shape[-2]) + super().get_seq_length()

    def materialize(self) -> None:
        """Every row's whole context in `keys`/`values` (the slot generator moves them into its own cache)."""
        self.keys = self._behind_prefix(self.keys, self.prefix_keys)
        self.values = self._behind_prefix(self.values, self.prefix_values)
        if self.index_keys is not None:
            self.index_keys = self._behind_prefix(self.index_keys, self.prefix_index_keys, dim=1)
        self.prefix_keys = self.prefix_values = self.prefix_index_keys = None


class PrefixedCache(Cache):
    """The KV cache of a batch of rows that all continue `prefix` (a cache of one row from an earlier forward, or
    None): transformers attends over prefix + own tokens through `PrefixedLayer.update`."""

    def __init__(self, num_layers: int, prefix: PrefixedCache | None = None):
        if prefix is None:
            layers = [PrefixedLayer() for _ in range(num_layers)]
        else:
            layers = [PrefixedLayer(p.keys, p.values, p.index_keys) for p in prefix.layers]
        super().__init__(layers=layers)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) these rows of the rows' own tokens; the prefix (one row) is shared by any rows."""
        for layer in self.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
            if layer.index_keys is not None:
                layer.index_keys = layer.index_keys.index_select(0, rows)

    def materialize(self) -> None:
        for layer in self.layers:
            layer.materialize()


def compute_prefix(model, ids: Sequence[int]) -> PrefixedCache:
    """The KV cache of a shared prefix, run alone (one row, no padding, so its numbers do not depend on what else
    is being evaluated)."""
    cache = PrefixedCache(model.config.num_hidden_layers)
    model(input_ids=torch.tensor([list(ids)], device=model.device), past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    return cache


def own_tokens(prompts: list[Sequence[int]], shared: int, pad_id: int):
    """The prompts' tokens after their `shared` prefix tokens, left-padded so that every prompt ends at the last
    column: (ids [rows, width], attention mask over prefix + own columns, position ids of the own columns)."""
    width = max(len(p) for p in prompts) - shared
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for row, prompt in enumerate(prompts):
        own = prompt[shared:]
        ids[row, width - len(own):] = torch.tensor(own)
        mask[row, shared + width - len(own):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
