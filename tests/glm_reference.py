"""Tiny random checkpoints in THUDM's original chatglm layout, and an independent, plainly written forward pass
of the ChatGLM2/3 / GLM-4 block to check the native loader against (not a copy of either implementation)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHATGLM_TOKENIZER = SHARED / "models" / "chatglm3-tokenizer" / "tokenizer.model"


def tiny_config(rope_ratio: float = 1.0, vocab: int = 65024, eos=2, pad=0, eps=1e-5, groups=2, **extra) -> dict:
    config = {"model_type": "chatglm", "architectures": ["ChatGLMModel"], "num_layers": 2, "hidden_size": 64,
              "ffn_hidden_size": 96, "num_attention_heads": 4, "kv_channels": 16, "multi_query_attention": True,
              "multi_query_group_num": groups, "padded_vocab_size": vocab, "seq_length": 256,
              "layernorm_epsilon": eps, "add_qkv_bias": True, "add_bias_linear": False, "rmsnorm": True,
              "post_layer_norm": True, "original_rope": True, "apply_query_key_layer_scaling": True,
              "apply_residual_connection_post_layernorm": False, "tie_word_embeddings": False,
              "eos_token_id": eos, "pad_token_id": pad, "torch_dtype": "float32"}
    if rope_ratio != 1:
        config["rope_ratio"] = rope_ratio
    config.update(extra)
    return config


def random_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, f, v = config["hidden_size"], config["ffn_hidden_size"], config["padded_vocab_size"]
    qkv = config["num_attention_heads"] * config["kv_channels"] + 2 * config["multi_query_group_num"] * config["kv_channels"]

    def rand(*shape, scale=0.08):
        return torch.randn(*shape, generator=g) * scale

    weights = {"transformer.embedding.word_embeddings.weight": rand(v, h, scale=1.0),
               "transformer.encoder.final_layernorm.weight": 1 + rand(h),
               "transformer.output_layer.weight": rand(v, h, scale=0.2),
               "transformer.rotary_pos_emb.inv_freq": torch.ones(config["kv_channels"] // 4)}
    for i in range(config["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        weights.update({p + "input_layernorm.weight": 1 + rand(h), p + "post_attention_layernorm.weight": 1 + rand(h),
                        p + "self_attention.query_key_value.weight": rand(qkv, h, scale=0.3),
                        p + "self_attention.query_key_value.bias": rand(qkv, scale=0.3),
                        p + "self_attention.dense.weight": rand(h, config["num_attention_heads"] * config["kv_channels"]),
                        p + "mlp.dense_h_to_4h.weight": rand(2 * f, h, scale=0.2),
                        p + "mlp.dense_4h_to_h.weight": rand(h, f, scale=0.2)})
    return weights


def write_checkpoint(folder: Path, config: dict, weights: dict, fmt: str = "safetensors", shards: int = 2,
                     tokenizer: Path | None = CHATGLM_TOKENIZER, modeling_source: str | None = None) -> Path:
    """The original layout: config.json, sharded weights with their index, tokenizer.model."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = list(weights)
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for s in range(shards):
        part = {n: weights[n].contiguous() for n in names[s * per:(s + 1) * per]}
        if fmt == "safetensors":
            from safetensors.torch import save_file
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file(part, folder / file)
        else:
            file = f"pytorch_model-{s + 1:05d}-of-{shards:05d}.bin"
            torch.save(part, folder / file)
        weight_map.update({n: file for n in part})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if tokenizer is not None:
        shutil.copy(tokenizer, folder / "tokenizer.model")
    if modeling_source is not None:
        (folder / "modeling_chatglm.py").write_text(modeling_source)
    return folder


# ---- the reference forward ----------------------------------------------------------------------------------
def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_first_half(x, positions, base: float, position_scale: float):
    """Interleaved RoPE on the first half of each head: pairs (x[2i], x[2i+1]) turn by position·base^(-2i/rot)."""
    rot = x.shape[-1] // 2
    i = torch.arange(0, rot, 2, dtype=torch.float64)
    theta = base ** (-i / rot)  # [rot/2]
    angle = (positions.double() / position_scale)[..., None] * theta  # [b, s, rot/2]
    cos, sin = angle.cos().float()[:, None], angle.sin().float()[:, None]  # [b, 1, s, rot/2]
    even, odd = x[..., 0:rot:2], x[..., 1:rot:2]
    turned = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(-2)
    return torch.cat([turned, x[..., rot:]], dim=-1)


def reference_logits(config: dict, w: dict, ids: torch.Tensor, mask: torch.Tensor, interpolation: bool = False):
    """Logits [b, s, vocab] for a left-padded batch; positions count real tokens only (0 on pads)."""
    b, s = ids.shape
    heads, groups, hd = config["num_attention_heads"], config["multi_query_group_num"], config["kv_channels"]
    eps, ratio = config["layernorm_epsilon"], float(config.get("rope_ratio", 1))
    base, scale = (10000.0, ratio) if interpolation else (10000.0 * ratio, 1.0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    allowed = torch.tril(torch.ones(s, s, dtype=torch.bool))[None] & mask.bool()[:, None, :]  # [b, q, k]
    allowed |= torch.eye(s, dtype=torch.bool)[None]  # pad queries see themselves, so no row is empty
    x = w["transformer.embedding.word_embeddings.weight"][ids]
    for layer in range(config["num_layers"]):
        p = f"transformer.encoder.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        qkv = h @ w[p + "self_attention.query_key_value.weight"].T + w[p + "self_attention.query_key_value.bias"]
        q, k, v = qkv.split([heads * hd, groups * hd, groups * hd], dim=-1)
        q = q.view(b, s, heads, hd).transpose(1, 2)
        k = k.view(b, s, groups, hd).transpose(1, 2)
        v = v.view(b, s, groups, hd).transpose(1, 2)
        q, k = rotate_first_half(q, positions, base, scale), rotate_first_half(k, positions, base, scale)
        per_group = heads // groups  # query heads g·per_group … use KV group g
        k, v = k.repeat_interleave(per_group, dim=1), v.repeat_interleave(per_group, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, heads * hd)
        x = x + attended @ w[p + "self_attention.dense.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = (h @ w[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.dense_4h_to_h.weight"].T
    x = rms_norm(x, w["transformer.encoder.final_layernorm.weight"], eps)
    return x @ w["transformer.output_layer.weight"].T


def reference_greedy(config, w, prompt: list[int], steps: int, eos: set[int], interpolation=False) -> list[int]:
    ids = list(prompt)
    out = []
    for _ in range(steps):
        t = torch.tensor([ids])
        token = int(reference_logits(config, w, t, torch.ones_like(t), interpolation)[0, -1].argmax())
        out.append(token)
        ids.append(token)
        if token in eos:
            break
    return out
