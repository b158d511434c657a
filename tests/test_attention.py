"""SDPA with grouped-query attention inside torch's kernel on CPU (backends/attention.py): the numbers of
transformers' "sdpa", without copying the KV heads."""
import json
from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from glm_eval.backends.attention import NAME, sdpa_gqa_attention


@pytest.mark.parametrize("queries,keys", [(1, 300), (17, 17), (12, 80)])  # decode, prefill, rows over a prefix
def test_equals_transformers_sdpa_on_padded_gqa_batches(queries, keys):
    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    query, key, value = torch.randn(4, 9, queries, 64), torch.randn(4, 3, keys, 64), torch.randn(4, 3, keys, 64)
    mask = torch.ones(4, 1, queries, keys, dtype=torch.bool).tril(keys - queries)
    mask[1, ..., :5] = False  # left padding
    mask[3, ..., :keys // 2] = False
    ours, _ = sdpa_gqa_attention(module, query, key, value, mask, scaling=0.125)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.125)
    assert ours.shape == theirs.shape == (4, queries, 9, 64)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_cpu_model_uses_it_and_scores_a_padded_batch_as_transformers_sdpa(smol, data_dir):
    model, tokenizer = smol
    assert model.config._attn_implementation == NAME  # set by the engine's loader on CPU
    problems = [json.loads(line)["question"] for line in open(data_dir / "gsm8k" / "test.jsonl")][:4]
    batch = tokenizer(problems, return_tensors="pt", padding=True, padding_side="left")
    assert not bool(batch.attention_mask.all())  # really padded, so the masked path runs

    def last_logits():
        with torch.inference_mode():
            return model(**batch, logits_to_keep=1).logits[:, -1]
    ours = last_logits()
    try:
        model.set_attn_implementation("sdpa")
        theirs = last_logits()
    finally:
        model.set_attn_implementation(NAME)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
