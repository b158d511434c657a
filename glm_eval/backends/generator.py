"""Batched generation on a transformers causal LM with slot refill.

A fixed number of slots share one preallocated, left-padded KV cache. Every decode step advances all live
slots by one token. A row that hits EOS, a stop string or its token limit leaves its slot at once (it stops
costing compute at the next refill or compaction), and waiting prompts are prefilled and written into free
slots, right-aligned to the current cache length. So the batch stays full until the queue runs dry, instead
of decoding every row until the slowest one stops (lm-eval's static batches on GSM8K: 38% useful tokens).

Prompts that share a long prefix (few-shot exemplars) are queued together and their prefix is run once
(backends/prefix.py): a prefill runs only the rows' own tokens on top of it, and its KV is kept while rows that
extend it wait, within a token budget.

Per-row positions come from each row's own token count, padding is masked, and greedy picks the argmax of
the row's own logits, so a row's output does not depend on which rows share its batch beyond kernel
rounding (measured in tests/test_generator.py).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from glm_eval.backends.prefix import PrefixedCache, PrefixGroup, compute_prefix, own_tokens, prefix_groups
from glm_eval.backends.replies import StopScan, reply, unfit_generation
from glm_eval.core.protocol import Arrivals, GenerationRequest, OnResponse, OnText


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_bytes_per_token(config: dict, dtype: str) -> int:
    """Bytes of KV cache one token of one row takes in the slot cache, from a checkpoint's config.json: keys and values
    per KV head (GQA), the compressed latent and rotary key (MLA: GLM-4.7-Flash, GLM-5) plus the sparse-attention
    indexer's key (GLM-5), or ChatGLM's multi-query groups; 0 where the config says too little."""
    size = DTYPE_BYTES.get(dtype, 4)
    layers = config.get("num_hidden_layers") or config.get("num_layers") or 0
    if config.get("kv_lora_rank"):
        width = config["kv_lora_rank"] + config.get("qk_rope_head_dim", 0) + \
            (config.get("index_head_dim", 0) if config.get("index_topk") else 0)
    elif config.get("model_type") == "chatglm":
        groups = config.get("multi_query_group_num") if config.get("multi_query_attention") else \
            config.get("num_attention_heads")
        width = 2 * (groups or 0) * config.get("kv_channels", 128)
    else:
        heads = config.get("num_attention_heads") or 0
        head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else 0)
        width = 2 * (config.get("num_key_value_heads") or heads) * head_dim
    return layers * width * size


class SlotLayer(CacheLayerMixin):
    """One layer's KV cache: [slots, heads, capacity, width] buffers filled up to a length shared by all slots: keys and
    values (their widths may differ: MLA's latent and rotary key), and the sparse-attention indexer's keys of a DSA
    layer (GLM-5), kept as [slots, 1, capacity, width]. `update` writes in place and returns a view, so no step
    re-allocates the cache (HF's DynamicLayer concatenates, copying the whole cache every step)."""

    is_compileable = False
    is_sliding = False

    def __init__(self):
        super().__init__()
        self.length = 0
        self.index_keys: torch.Tensor | None = None

    def buffers(self) -> list[str]:
        return ["keys", "values"] + (["index_keys"] if self.index_keys is not None else [])

    def lazy_initialization(self, key_states, value_states):  # buffers are set by SlotCache.place
        raise RuntimeError("SlotLayer is filled by SlotCache.place before the first decode step")

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        self.keys[:, :, self.length:self.length + n] = key_states
        self.values[:, :, self.length:self.length + n] = value_states
        self.length += n
        return self.keys[:, :, :self.length], self.values[:, :, :self.length]

    def update_indexer(self, index_key_states: torch.Tensor) -> torch.Tensor:
        """The DSA indexer's keys [rows, n, width] of the tokens `update` just wrote (transformers calls it after)."""
        n = index_key_states.shape[1]
        self.index_keys[:, 0, self.length - n:self.length] = index_key_states
        return self.index_keys[:, 0, :self.length]

    def get_mask_sizes(self, query_length):
        return self.length + query_length, 0

    def get_seq_length(self):
        return self.length

    def get_max_length(self):
        return -1


def _slot_shape(prefilled: torch.Tensor, name: str) -> torch.Tensor:
    """A prefilled layer's buffer as the slot cache holds it: [rows, heads, tokens, width]."""
    return prefilled.unsqueeze(1) if name == "index_keys" else prefilled


class SlotCache(Cache):
    """The shared KV cache of all slots, plus the padding mask (1 where a slot holds a real token)."""

    def __init__(self, num_layers: int, slots: int):
        super().__init__(layers=[SlotLayer() for _ in range(num_layers)])
        self.slots = slots
        self.mask: torch.Tensor | None = None  # [slots, capacity] long

    @property
    def length(self) -> int:
        return self.layers[0].length

    def _allocate(self, shapes: list[dict[str, torch.Tensor]], capacity: int) -> None:
        """(Re)allocate every buffer with `capacity` columns, shaped like `shapes` (per layer, a tensor per buffer),
        keeping the current contents at the left."""
        for layer, like in zip(self.layers, shapes):
            for name, template in like.items():
                new = template.new_zeros((self.slots, template.shape[1], capacity, template.shape[3]))
                old = getattr(layer, name)
                if old is not None:
                    new[:, :, :layer.length] = old[:, :, :layer.length]
                setattr(layer, name, new)
            layer.is_initialized = True
        device = next(iter(shapes[0].values())).device
        new_mask = torch.zeros(self.slots, capacity, dtype=torch.long, device=device)
        if self.mask is not None:
            new_mask[:, :self.length] = self.mask[:, :self.length]
        self.mask = new_mask

    def reserve(self, columns: int) -> None:
        """Make room for `columns` more tokens (growing by half again, to amortise copies)."""
        need = self.length + columns
        capacity = 0 if self.mask is None else self.mask.shape[1]
        if need > capacity:
            shapes = [{name: getattr(layer, name) for name in layer.buffers()} for layer in self.layers]
            self._allocate(shapes, max(need, capacity + capacity // 2))

    def _each_buffer(self):
        for layer in self.layers:
            for name in layer.buffers():
                yield layer, getattr(layer, name)

    def shift_right(self, columns: int) -> None:
        """Insert `columns` empty columns at the left (a new prompt is longer than the current length)."""
        for layer, buf in self._each_buffer():
            buf[:, :, columns:columns + layer.length] = buf[:, :, :layer.length].clone()
            buf[:, :, :columns] = 0
        for layer in self.layers:
            layer.length += columns
        self.mask[:, columns:self.length] = self.mask[:, :self.length - columns].clone()
        self.mask[:, :columns] = 0

    def trim_left(self, columns: int) -> None:
        """Drop `columns` leading columns that no slot uses any more (keeps attention cost bounded)."""
        for layer, buf in self._each_buffer():
            buf[:, :, :layer.length - columns] = buf[:, :, columns:layer.length].clone()
        for layer in self.layers:
            layer.length -= columns
        self.mask[:, :self.length] = self.mask[:, columns:self.length + columns].clone()
        self.mask[:, self.length:] = 0

    def place(self, slots: list[int], prefill: PrefixedCache, prefill_mask: torch.Tensor) -> None:
        """Write prefilled prompts (left-padded to a common length L) into `slots`, right-aligned to the
        current length; columns before them are cleared."""
        width = prefill_mask.shape[1]
        filled = [{name: _slot_shape(getattr(new, name), name) for name in ("keys", "values", "index_keys")
                   if getattr(new, name) is not None} for new in prefill.layers]
        if self.mask is None:
            self._allocate(filled, width)
        if width > self.length:
            self.reserve(width - self.length)
            self.shift_right(width - self.length)
        index = torch.tensor(slots, device=self.mask.device)
        start = self.length - width
        for layer, new in zip(self.layers, filled):
            for name, values in new.items():
                buf = getattr(layer, name)
                buf[index] = 0
                buf[index, :, start:self.length] = values
        self.mask[index] = 0
        self.mask[index, start:self.length] = prefill_mask

    def add_slots(self, count: int) -> None:
        """`count` more slots, empty (a server's request arrived while every slot was busy)."""
        self.slots += count
        if self.mask is None:
            return
        for layer in self.layers:
            for name in layer.buffers():
                buf = getattr(layer, name)
                setattr(layer, name, torch.cat([buf, buf.new_zeros((count, *buf.shape[1:]))]))
        self.mask = torch.cat([self.mask, self.mask.new_zeros((count, self.mask.shape[1]))])

    def select(self, keep: list[int]) -> None:
        """Keep only these slots (compaction once no prompts are waiting)."""
        index = torch.tensor(keep, device=self.mask.device)
        for layer in self.layers:
            for name in layer.buffers():
                setattr(layer, name, getattr(layer, name).index_select(0, index))
        self.mask = self.mask.index_select(0, index)
        self.slots = len(keep)


@dataclass
class Counters:
    """Work done, for throughput reporting (taken per task by the backend's take_stats)."""
    generated_tokens: int = 0
    computed_slots: int = 0  # row-steps computed (useful or not)
    peak_rows: int = 0
    prefill_tokens: int = 0  # prompt tokens computed (a shared prefix once)
    reused_prefix_tokens: int = 0  # prompt tokens not computed: a shared prefix's, for each row but the one it ran for
    decode_steps: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


@dataclass
class _Row:
    index: int  # position of the request in the caller's list
    request: GenerationRequest
    position: int  # position id of the next token
    tokens: list[int] = field(default_factory=list)
    rng: torch.Generator | None = None
    stops: StopScan | None = None


class SlotGenerator:
    """Generates for a list of requests with at most `max_rows` rows in flight, bounded by `max_tokens`
    KV-cache tokens (rows × context) and `prefill_tokens` tokens per prefill forward."""

    def __init__(self, model, tokenizer, eos_ids: set[int], max_rows: int = 64, max_tokens: int = 65536,
                 prefill_tokens: int = 4096, pad_id: int = 0, max_length: int | None = None, share_prefix: bool = True,
                 prefix_budget: int = 32768):
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = set(eos_ids)
        self.max_rows, self.max_tokens, self.prefill_tokens = max_rows, max_tokens, prefill_tokens
        self.pad_id = pad_id
        self.share_prefix, self.prefix_budget = share_prefix, prefix_budget
        self._ending_ids_memo: dict[tuple[str, ...], list[int]] = {}
        self.device = next(model.parameters()).device
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 1 << 30
        self.counters = Counters()

    def take_counters(self) -> Counters:
        """The counters since the last take, then zero."""
        taken, self.counters = self.counters, Counters()
        return taken

    # ---- prompt admission -------------------------------------------------------------------------------
    def _prefix(self, ids) -> PrefixedCache:
        started = time.perf_counter()
        cache = compute_prefix(self.model, ids)
        self.counters.prefill_tokens += len(ids)
        self.counters.prefill_seconds += time.perf_counter() - started
        return cache

    def _prefill(self, rows: list[_Row], prefix: PrefixedCache | None) -> tuple[PrefixedCache, torch.Tensor,
                                                                                 torch.Tensor]:
        """The rows' prompts after the shared prefix (if any), left-padded; returns each row's whole KV (prefix
        included), its padding mask and the logits of the next token."""
        shared = 0 if prefix is None else prefix.get_seq_length()
        ids, mask, positions = own_tokens([r.request.prompt.token_ids for r in rows], shared, self.pad_id)
        cache = PrefixedCache(self.model.config.num_hidden_layers, prefix)
        started = time.perf_counter()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        cache.materialize()
        self.counters.prefill_tokens += int(mask[:, shared:].sum())
        self.counters.prefill_seconds += time.perf_counter() - started
        return cache, mask.to(self.device), out.logits[:, -1, :]

    # ---- token choice and stopping ----------------------------------------------------------------------
    def _ending_ids(self, stop: tuple[str, ...]) -> list[int]:
        """Token ids that would end a reply: EOS, and the last token of each stop string (as HF's min_length
        masks `eos_token_id`, to which LongBench adds the id of "\n")."""
        if stop not in self._ending_ids_memo:
            ids = {self.tokenizer.encode(s, add_special_tokens=False)[-1] for s in stop if s}
            self._ending_ids_memo[stop] = sorted(self.eos_ids | ids)
        return self._ending_ids_memo[stop]

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        early = [i for i, r in enumerate(rows) if len(r.tokens) < r.request.min_new_tokens]
        if early:
            logits = logits.clone()
            for i in early:
                logits[i, self._ending_ids(rows[i].request.stop)] = float("-inf")
        chosen = logits.argmax(-1).tolist()
        for i, r in enumerate(rows):
            if r.request.temperature > 0:
                request = r.request
                chosen[i] = _sample(logits[i].float(), request.temperature, request.top_p, request.top_k, r.rng)
        return chosen

    def _finish_reason(self, row: _Row) -> str | None:
        token = row.tokens[-1]
        if len(row.tokens) < row.request.min_new_tokens:
            return "length" if row.position >= self.max_length else None
        if token in self.eos_ids:
            return "eos"
        if row.stops.reached(row.tokens):
            return "stop"
        if len(row.tokens) >= row.request.max_new_tokens or row.position >= self.max_length:
            return "length"
        return None

    def _cancelled(self, row: _Row, on_text: OnText | None) -> str | None:
        """Report the unfinished row's text; "cancelled" if the listener wants no more of it."""
        if on_text and on_text(row.index, self.tokenizer.decode(row.tokens, skip_special_tokens=True)) is False:
            return "cancelled"
        return None

    # ---- main loop --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest], on_response: OnResponse,
                 on_text: OnText | None = None, arrivals: Arrivals | None = None) -> None:
        """`on_text(index, reply so far)` after every new token of a row that is still going (streaming); when it
        returns False the row leaves its slot at once, answered as "cancelled". `arrivals()`, asked before every
        step, hands over requests that came meanwhile (a server's): they queue behind the waiting ones, numbered on
        from the last, and take a free slot, or a slot added while the token budget allows, at the next step."""
        requests = list(requests)
        fits = []
        for i, request in enumerate(requests):
            if failed := unfit_generation(request, self.max_length):
                on_response(i, failed)
            else:
                fits.append(i)
        if not fits and arrivals is None:
            return
        # Prompts of a prefix group together (its prefix is kept while they wait), longest groups and prompts first:
        # the cache length mostly grows at the start, and memory peaks early.
        groups = prefix_groups([requests[i].prompt.token_ids for i in fits], self.prefix_budget) \
            if self.share_prefix else []
        prefixes = _Prefixes(self, requests, [PrefixGroup(g.length, [fits[m] for m in g.members])
                                              for g in groups if g.length])

        def length(i: int) -> int:
            return len(requests[i].prompt.token_ids)
        head = {n: max(map(length, g.members)) for n, g in enumerate(prefixes.groups)}

        def order(i: int) -> tuple[int, int, int]:
            return (-head[prefixes.of[i]], prefixes.of[i], -length(i)) if i in prefixes.of else (-length(i), -1, 0)
        queue = deque(sorted(fits, key=order))
        # the longest row any request may grow to bounds the rows the KV-cache budget allows
        longest = max((length(i) for i in fits), default=0) + max((requests[i].max_new_tokens for i in fits), default=0)

        def rows_allowed() -> int:
            return max(1, min(self.max_rows, self.max_tokens // max(longest, 1)))
        slots = min(rows_allowed(), max(len(fits), 1))
        self.counters.peak_rows = max(self.counters.peak_rows, slots)
        cache = SlotCache(self.model.config.num_hidden_layers, slots)
        live: list[_Row | None] = [None] * slots

        def finish(slot: int, reason: str) -> None:
            row = live[slot]
            live[slot] = None
            on_response(row.index, reply(self.tokenizer, row.tokens, reason, row.request))

        while True:
            arrived = []
            for request in arrivals() if arrivals else ():
                requests.append(request)
                if failed := unfit_generation(request, self.max_length):
                    on_response(len(requests) - 1, failed)
                    continue
                arrived.append(len(requests) - 1)
                longest = max(longest, len(request.prompt.token_ids) + request.max_new_tokens)
            # A burst, longest first as above: in arrival order, prompts of unlike length prefill together, and the
            # padding made 200 concurrent GSM8K requests take 1.4× the in-process time. Behind those already waiting,
            # so a stream of long prompts never starves a short one.
            queue.extend(sorted(arrived, key=order))
            if not queue and not any(live):
                break
            free = [s for s, r in enumerate(live) if r is None]
            if queue and len(free) < len(queue) and len(live) < rows_allowed():  # only with arrivals
                added = min(rows_allowed() - len(live), len(queue) - len(free))
                cache.add_slots(added)
                free += range(len(live), len(live) + added)
                live += [None] * added
                self.counters.peak_rows = max(self.counters.peak_rows, len(live))
            refill_at = max(1, len(live) // 8)  # refill once this many slots are free: fewer, larger prefills
            if queue and (len(free) >= refill_at or len(free) == len(live)):
                self._admit(requests, queue, free, live, cache, finish, on_text, prefixes)
            elif not queue and free:
                keep = [s for s, r in enumerate(live) if r is not None]
                if keep and len(free) >= max(1, len(live) // 8):  # compaction copies the cache: do it in batches
                    cache.select(keep)
                    live = [live[s] for s in keep]
            if any(live):
                self._step(live, cache, finish, on_text)

    def _admit(self, requests, queue, free, live, cache, finish, on_text, prefixes: _Prefixes) -> None:
        while free and queue:
            group: list[_Row] = []
            number = prefixes.of.get(queue[0], -1)  # a prefill extends one prefix (or none)
            shared = prefixes.groups[number].length if number >= 0 else 0
            width = len(requests[queue[0]].prompt.token_ids) - shared
            while (queue and len(group) < len(free) and prefixes.of.get(queue[0], -1) == number
                   and (len(group) + 1) * width <= max(self.prefill_tokens, width)):
                i = queue.popleft()
                req = requests[i]
                rng = torch.Generator().manual_seed(req.seed % 2**63) if req.temperature > 0 else None
                group.append(_Row(i, req, position=len(req.prompt.token_ids), rng=rng,
                                  stops=StopScan(self.tokenizer, req)))
            prefix = prefixes.take(number, len(group)) if number >= 0 else None
            prefill, mask, logits = self._prefill(group, prefix)
            used = free[:len(group)]
            del free[:len(group)]
            cache.place(used, prefill, mask)
            for slot, row, token in zip(used, group, self._choose(group, logits)):
                row.tokens.append(token)
                live[slot] = row
                self.counters.generated_tokens += 1
                reason = self._finish_reason(row) or self._cancelled(row, on_text)
                if reason:
                    finish(slot, reason)
                    free.append(slot)

    def _step(self, live: list[_Row | None], cache: SlotCache, finish, on_text) -> None:
        # Columns no live row uses any more (all rows started later) are dropped once they are a quarter.
        starts = cache.mask[:, :cache.length].argmax(-1)
        alive = torch.tensor([r is not None for r in live], device=starts.device)
        unused = int(starts[alive].min()) if bool(alive.any()) else 0
        if unused > cache.length // 4:
            cache.trim_left(unused)
        cache.reserve(1)
        t = cache.length
        ids = torch.tensor([[r.tokens[-1] if r else self.pad_id] for r in live], device=self.device)
        positions = torch.tensor([[r.position if r else 0] for r in live], device=self.device)
        cache.mask[:, t] = 1  # free slots attend to their own pad token only, so no row is fully masked
        started = time.perf_counter()
        out = self.model(input_ids=ids, attention_mask=cache.mask[:, :t + 1], position_ids=positions,
                         past_key_values=cache, use_cache=True,
                         cache_position=torch.tensor([t], device=self.device))
        rows = [r for r in live if r is not None]
        slots_of_rows = [s for s, r in enumerate(live) if r is not None]
        chosen = self._choose(rows, out.logits[slots_of_rows, -1, :])
        self.counters.decode_seconds += time.perf_counter() - started
        self.counters.decode_steps += 1
        self.counters.computed_slots += len(live)
        for slot, row, token in zip(slots_of_rows, rows, chosen):
            row.tokens.append(token)
            row.position += 1
            self.counters.generated_tokens += 1
            reason = self._finish_reason(row) or self._cancelled(row, on_text)
            if reason:
                finish(slot, reason)
        for slot, r in enumerate(live):
            if r is None:
                cache.mask[slot, t] = 0


class _Prefixes:
    """The KV of shared prefixes while rows that extend them wait: computed on first use, dropped once the group's
    last row is prefilled, and the least recently used dropped first when they pass the token budget (it is
    computed again if its rows come back)."""

    def __init__(self, generator: SlotGenerator, requests: list[GenerationRequest], groups: list[PrefixGroup]):
        self.generator, self.requests, self.groups = generator, requests, groups
        self.of = {i: n for n, g in enumerate(groups) for i in g.members}  # request → its group
        self.waiting = [len(g.members) for g in groups]
        self.kept: dict[int, PrefixedCache] = {}

    def take(self, number: int, rows: int) -> PrefixedCache:
        group = self.groups[number]
        computed = number not in self.kept
        if computed:
            prompt = self.requests[group.members[0]].prompt.token_ids
            self.kept[number] = self.generator._prefix(prompt[:group.length])
            while sum(self.groups[n].length for n in self.kept) > self.generator.prefix_budget:
                self.kept.pop(next(iter(self.kept)))
        prefix = self.kept.pop(number)
        self.generator.counters.reused_prefix_tokens += group.length * (rows - computed)
        self.waiting[number] -= rows
        if self.waiting[number] > 0:
            self.kept[number] = prefix  # most recently used last
        return prefix


def _sample(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, rng: torch.Generator) -> int:
    if 0 < top_k < logits.shape[-1]:  # as vLLM and HF: the k most likely tokens stay, then top-p among them
        logits = logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
    probs = torch.softmax(logits / temperature, -1).cpu()
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=rng))
