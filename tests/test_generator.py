"""The slot-refill generator on the real model: equal to HF greedy `generate`, independent of the batch
size, per-row stop strings, and finished rows stop costing compute."""
import json

import pytest
import torch
from transformers import GenerationConfig

from glm_eval.backends.generator import SlotGenerator
from glm_eval.core.protocol import GenerationRequest, Prompt


def gsm8k_prompts(tokenizer, data_dir, count, start=0):
    rows = [json.loads(line) for line in open(data_dir / "gsm8k" / "test.jsonl")][start:start + count]
    texts = [f"Question: {r['question']}\nAnswer:" for r in rows]
    return [Prompt(t, tuple(tokenizer(t).input_ids)) for t in texts]


def run(model, tokenizer, requests, eos=True, **batch):
    generator = SlotGenerator(model, tokenizer, {tokenizer.eos_token_id} if eos else set(), **batch)
    out = {}
    generator.generate(requests, lambda i, r: out.__setitem__(i, r))
    return [out[i] for i in range(len(requests))], generator


def reference_greedy(model, tokenizer, prompt: Prompt, max_new_tokens: int) -> str:
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    ids = torch.tensor([prompt.token_ids])
    new = model.generate(ids, generation_config=config)[0, ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in new:
        new = new[:new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True)


def test_matches_hf_greedy_generate_with_refill(smol, data_dir):
    model, tokenizer = smol
    prompts = gsm8k_prompts(tokenizer, data_dir, 6)
    # 3 slots for 6 prompts of different lengths: exercises refill into freed slots and cache trimming
    requests = [GenerationRequest(p, max_new_tokens=24 + 8 * (i % 3)) for i, p in enumerate(prompts)]
    responses, _ = run(model, tokenizer, requests, max_rows=3)
    for request, response in zip(requests, responses):
        assert response.text == reference_greedy(model, tokenizer, request.prompt, request.max_new_tokens)
        assert response.finish_reason in {"eos", "length"}


def test_greedy_outputs_do_not_depend_on_batch_size(smol, data_dir):
    model, tokenizer = smol
    requests = [GenerationRequest(p, max_new_tokens=48, stop=("Question:",))
                for p in gsm8k_prompts(tokenizer, data_dir, 20)]
    alone, _ = run(model, tokenizer, requests, max_rows=1)
    together, _ = run(model, tokenizer, requests, max_rows=32)
    assert [a.text for a in alone] == [b.text for b in together]


def test_stop_strings_end_each_row_on_its_own(smol, data_dir):
    model, tokenizer = smol
    prompts = gsm8k_prompts(tokenizer, data_dir, 4)
    free = [reference_greedy(model, tokenizer, p, 40) for p in prompts]
    # stop each row at a word taken from its own greedy continuation
    words = [text.split()[len(text.split()) // 2] for text in free]
    requests = [GenerationRequest(p, max_new_tokens=40, stop=(w,)) for p, w in zip(prompts, words)]
    responses, _ = run(model, tokenizer, requests, max_rows=4)
    for response, text, word in zip(responses, free, words):
        assert response.finish_reason == "stop"
        assert response.text == text[:text.find(word)]


def test_finished_rows_stop_costing_compute(smol, data_dir):
    model, tokenizer = smol
    prompts = gsm8k_prompts(tokenizer, data_dir, 16)
    # one long row among short ones: a static batch would decode all 16 rows for 64 steps (1024 row-steps)
    requests = [GenerationRequest(p, max_new_tokens=64 if i == 0 else 4) for i, p in enumerate(prompts)]
    responses, generator = run(model, tokenizer, requests, eos=False, max_rows=16)  # no EOS: exact lengths
    assert [r.num_tokens for r in responses] == [64] + [4] * 15
    useful = 63 + 15 * 3  # decode steps that produce a kept token (each row's first comes from its prefill)
    # finished rows leave the batch; compaction is batched, so a few steps may still carry them
    assert generator.counters.computed_slots <= useful + 2 * 16, generator.counters.computed_slots


def test_sampling_is_reproducible_per_request(smol, data_dir):
    model, tokenizer = smol
    prompts = gsm8k_prompts(tokenizer, data_dir, 3)
    requests = [GenerationRequest(p, max_new_tokens=16, temperature=0.8, top_p=0.95, seed=7) for p in prompts]
    first, _ = run(model, tokenizer, requests, max_rows=3)
    second, _ = run(model, tokenizer, requests, max_rows=3)
    assert [r.text for r in first] == [r.text for r in second]
    other_seed = [GenerationRequest(p, max_new_tokens=16, temperature=0.8, top_p=0.95, seed=8) for p in prompts]
    third, _ = run(model, tokenizer, other_seed, max_rows=3)
    assert [r.text for r in third] != [r.text for r in first]


@pytest.mark.parametrize("max_tokens", [400, 100000])
def test_token_budget_bounds_the_rows_in_flight(smol, data_dir, max_tokens):
    model, tokenizer = smol
    requests = [GenerationRequest(p, max_new_tokens=8) for p in gsm8k_prompts(tokenizer, data_dir, 6)]
    responses, generator = run(model, tokenizer, requests, eos=False, max_rows=6, max_tokens=max_tokens)
    assert all(r.num_tokens == 8 for r in responses)
    longest = max(len(r.prompt.token_ids) for r in requests) + 8
    expected_rows = max(1, min(6, max_tokens // longest))
    assert generator.counters.peak_rows == expected_rows


def test_prompt_longer_than_the_context_is_a_failed_request(smol, data_dir):
    model, tokenizer = smol
    prompts = sorted(gsm8k_prompts(tokenizer, data_dir, 2), key=lambda p: -len(p.token_ids))
    assert len(prompts[0].token_ids) > len(prompts[1].token_ids)
    requests = [GenerationRequest(p, max_new_tokens=4) for p in prompts]
    limit = len(prompts[0].token_ids)  # the longer prompt does not fit, the shorter does
    generator = SlotGenerator(model, tokenizer, {tokenizer.eos_token_id}, max_length=limit)
    out = {}
    generator.generate(requests, lambda i, r: out.__setitem__(i, r))
    assert out[0].error and "context" in out[0].error and out[0].finish_reason == "error"
    assert out[1].error is None and out[1].num_tokens >= 1


def test_every_backend_implements_the_whole_protocol(smol):
    """No optional parts: the engine calls each member of core.protocol.Backend on any backend (the coming vLLM
    backend is held to the same list)."""
    import inspect

    from glm_eval.backends.hf import HFBackend
    from glm_eval.backends.http import ChatGLMBackend, OpenAIBackend
    from glm_eval.backends.source import ModelSource
    from glm_eval.core.config import BatchConfig, EndpointConfig
    from glm_eval.core.protocol import Backend
    from glm_eval.engine.overrides import compose_config
    source = ModelSource(compose_config(["model=smollm2-135m-instruct"]).model)
    hf = HFBackend(source, source.load_tokenizer(), BatchConfig())
    assert hf.info.context_length == 8192 and hf.info.dtype == "float32" and hf.info.device == "cpu"
    endpoint = EndpointConfig(url="http://127.0.0.1:1/v1")
    members = [m for m in vars(Backend) if not m.startswith("_")] + list(Backend.__annotations__)
    assert set(members) == {"info", "generate", "loglikelihood", "tokens_processed", "take_stats",
                            "groups"}
    for backend in (hf, OpenAIBackend(endpoint, "m"), ChatGLMBackend(endpoint, "m")):
        for name in members:
            inspect.getattr_static(backend, name)  # raises AttributeError when missing (never calls the member)
            if callable(getattr(Backend, name, None)):
                want = list(inspect.signature(getattr(Backend, name)).parameters)
                assert list(inspect.signature(getattr(backend, name)).parameters) == want[1:], (backend, name)
    assert hf.take_stats()["decode_steps"] == 0 and hf.tokens_processed() == 0


def test_a_cancelled_row_leaves_at_once_and_its_batch_mates_go_on(smol, data_dir):
    """A listener that returns False (the server's client went away) stops that row at its next token; the other
    rows' outputs equal a run without it, and the cancelled row costs no more decode steps."""
    model, tokenizer = smol
    requests = [GenerationRequest(p, max_new_tokens=40) for p in gsm8k_prompts(tokenizer, data_dir, 4)]
    plain, _ = run(model, tokenizer, requests, eos=False, max_rows=4)
    heard = []

    def listen(index, text):
        heard.append(index)
        return not (index == 1 and heard.count(1) >= 3)  # drop row 1 after its third token

    generator = SlotGenerator(model, tokenizer, set(), max_rows=4)
    out = {}
    generator.generate(requests, lambda i, r: out.__setitem__(i, r), listen)
    assert out[1].finish_reason == "cancelled" and out[1].error and out[1].num_tokens == 3
    assert [out[i].text for i in (0, 2, 3)] == [plain[i].text for i in (0, 2, 3)]
    assert heard.count(1) == 3 and generator.counters.computed_slots <= 39 * 3 + 3 + 4  # compaction lags a little


def test_requests_that_arrive_while_a_row_decodes_join_it(smol, data_dir):
    """A server's requests that arrive while one long row decodes take slots added beside it at the next step and
    finish first (no head-of-line blocking), with the replies they get alone."""
    model, tokenizer = smol
    prompts = gsm8k_prompts(tokenizer, data_dir, 4)
    long = GenerationRequest(prompts[0], max_new_tokens=60, min_new_tokens=60)
    later = [GenerationRequest(p, max_new_tokens=10) for p in prompts[1:]]
    [alone], _ = run(model, tokenizer, [long])
    asked, finished = 0, []

    def arrivals():
        nonlocal asked
        asked += 1
        return {3: later[:1], 8: later[1:]}.get(asked, [])
    generator = SlotGenerator(model, tokenizer, {tokenizer.eos_token_id}, max_rows=8)
    out = {}
    generator.generate([long], lambda i, r: (out.__setitem__(i, r), finished.append(i)), None, arrivals)
    assert sorted(out) == [0, 1, 2, 3] and finished[-1] == 0  # the later ones, numbered on, are done first
    assert out[0].text == alone.text and out[0].num_tokens == 60
    for request, i in zip(later, (1, 2, 3)):
        assert out[i].text == reference_greedy(model, tokenizer, request.prompt, request.max_new_tokens)
    assert generator.counters.peak_rows == 4  # a slot added for each (the first is still going at step 8), none more
