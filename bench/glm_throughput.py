"""Throughput of a full-size ChatGLM3-6B-shaped model (random weights) through glm-eval's batched generator,
side by side with transformers' own `generate` on the same model, prompts and batch sizes.

    python bench/glm_throughput.py                 # GPU: bf16, batches 1, 32, 128, 256-token prompts, 256 new tokens
    python bench/glm_throughput.py --tiny          # CPU smoke run of the same code on a 2-layer, 64-wide model

Every row generates exactly --new tokens (no eos), so tokens/s compare like for like. Prints, per batch size,
glm-eval and HF tokens/s, their ratio, and peak GPU memory.
"""
from __future__ import annotations

import argparse
import time

import torch

from glm_eval.glm.checkpoints import glm_config
from glm_eval.backends.generator import SlotGenerator
from glm_eval.core.protocol import GenerationRequest, Prompt

CHATGLM3_6B = {"model_type": "chatglm", "num_layers": 28, "hidden_size": 4096, "ffn_hidden_size": 13696,
               "num_attention_heads": 32, "kv_channels": 128, "multi_query_attention": True,
               "multi_query_group_num": 2, "padded_vocab_size": 65024, "seq_length": 8192, "layernorm_epsilon": 1e-5,
               "add_qkv_bias": True, "eos_token_id": 2, "pad_token_id": 0}


class NoText:
    """The generator only decodes for stop strings and responses; token counts are what we measure."""

    def decode(self, ids, skip_special_tokens=False):
        return ""


def build(tiny: bool, device: str, dtype: torch.dtype):
    from transformers import GlmForCausalLM
    config = dict(CHATGLM3_6B, **({"num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 96,
                                   "num_attention_heads": 4, "kv_channels": 16} if tiny else {}))
    glm = glm_config(config)
    glm._attn_implementation = "sdpa"
    with torch.device(device):
        model = GlmForCausalLM(glm).to(dtype).eval()
    return model


def run_glm_eval(model, prompts, new_tokens: int, rows: int) -> float:
    generator = SlotGenerator(model, NoText(), eos_ids=set(), max_rows=rows, max_tokens=1 << 30,
                              prefill_tokens=8192, pad_id=0)
    requests = [GenerationRequest(Prompt("", tuple(p)), max_new_tokens=new_tokens) for p in prompts]
    done = []
    start = time.perf_counter()
    generator.generate(requests, lambda i, r: done.append(r.num_tokens))
    sync()
    assert sum(done) == len(prompts) * new_tokens
    return time.perf_counter() - start


def run_hf_generate(model, prompts, new_tokens: int, rows: int) -> float:
    device = next(model.parameters()).device
    start = time.perf_counter()
    for i in range(0, len(prompts), rows):
        ids = torch.tensor(prompts[i:i + rows], device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + new_tokens
    sync()
    return time.perf_counter() - start


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--new", type=int, default=256)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build(args.tiny, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"model: {params / 1e9:.2f} B params, {dtype}, {name}; prompt {args.prompt}, new {args.new} tokens")
    g = torch.Generator().manual_seed(0)
    print(f"{'batch':>5} {'glm-eval tok/s':>15} {'HF generate tok/s':>18} {'ratio':>6} {'peak GiB':>9}")
    for rows in map(int, args.batches.split(",")):
        prompts = torch.randint(3, 64000, (rows, args.prompt), generator=g).tolist()
        run_glm_eval(model, prompts[:1], 4, 1)  # warm-up (kernels, allocator)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ours = run_glm_eval(model, prompts, args.new, rows)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        theirs = run_hf_generate(model, prompts, args.new, rows)
        tokens = rows * args.new
        print(f"{rows:>5} {tokens / ours:>15.1f} {tokens / theirs:>18.1f} {theirs / ours:>6.2f} {peak:>9.1f}")


if __name__ == "__main__":
    main()
