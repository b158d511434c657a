"""THUDM ChatGLM2/3 and GLM-4 checkpoints as transformers' native `GlmForCausalLM`, without remote code.

The original `chatglm` layout (config.json with model_type "chatglm", safetensors or pytorch_model-*.bin shards)
maps onto GlmForCausalLM by renames and a row split of the fused QKV projection (../shared/docs/chatglm.md §3).
Shards are read and converted one at a time, so loading peaks at about one copy of the weights. Checkpoints
already in the HF Glm layout (model_type "glm") go through `from_pretrained` unchanged.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from glm_eval.core.errors import UserError

# The files a chatglm checkpoint needs: weights, config, SentencePiece/tiktoken vocabulary, and the modeling file,
# whose RoPE formula tells chatglm2-6b-32k (position interpolation) from ChatGLM3/GLM-4 (scaled base).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.bin", "tokenizer.model", "modeling_chatglm.py"]


def read_config(path: str, revision: str | None = None) -> dict:
    """config.json of a local folder or a hub repo ({} when there is none)."""
    local = Path(path).expanduser()
    if local.is_dir():
        file = local / "config.json"
        if not file.exists():
            return {}
        try:
            config = json.loads(file.read_text(encoding="utf-8", errors="replace"))
        except ValueError as e:
            raise UserError(f"{file} is not valid JSON ({e}); the checkpoint folder is damaged") from None
        if not isinstance(config, dict):
            raise UserError(f"{file} is not a JSON object; the checkpoint folder is damaged")
        return config
    if path.startswith(("/", ".", "~")):
        raise UserError(f"{path} is not a folder (give a local checkpoint folder or a hub id)")
    from huggingface_hub import hf_hub_download
    try:
        return json.loads(Path(hf_hub_download(path, "config.json", revision=revision)).read_text())
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        raise UserError(f"cannot read config.json of {path!r} from the hub ({type(e).__name__}); "
                        f"set model.path to a local checkpoint folder when offline") from e


def local_folder(path: str, revision: str | None = None) -> Path:
    """A local folder holding the checkpoint: `path` itself, or a hub snapshot of the files we read."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(path, revision=revision, allow_patterns=CHECKPOINT_FILES))
    except Exception as e:
        raise UserError(f"cannot download {path!r} ({type(e).__name__}); set model.path to a local folder") from e


def is_chatglm_layout(config: dict) -> bool:
    return config.get("model_type") == "chatglm"


def rope_mode(folder: Path, config: dict, override: str | None) -> str:
    """'base' (ChatGLM3, GLM-4: theta = 10000·rope_ratio) or 'interpolation' (chatglm2-6b-32k: positions /
    rope_ratio). The config does not say which; the checkpoint's own modeling file does."""
    if override:
        if override not in ("base", "interpolation"):
            raise UserError(f"model.rope_scaling={override!r}; valid: base, interpolation")
        return override
    modeling = folder / "modeling_chatglm.py"
    if config.get("rope_ratio", 1) != 1 and modeling.exists():
        source = modeling.read_text(errors="replace")
        if re.search(r"arange\([^)]*\)\s*/\s*self\.rope_ratio", source) and "base * self.rope_ratio" not in source:
            return "interpolation"
    return "base"


def glm_config(config: dict, rope: str = "base"):
    """GlmConfig equivalent to a chatglm config.json (chatglm.md §3.3); refuses what GlmForCausalLM cannot express."""
    from transformers import GlmConfig
    if config.get("position_encoding_2d") or "inner_hidden_size" in config:
        raise UserError("this is a ChatGLM-6B (v1) checkpoint: a different architecture (2-D RoPE, GELU MLP, "
                        "scaled post-LN residuals, tied embeddings) that glm-eval does not support; "
                        "use chatglm2-6b, chatglm3-6b or glm-4-9b")
    unsupported = {"add_bias_linear": True, "rmsnorm": False, "post_layer_norm": False, "original_rope": False,
                   "apply_residual_connection_post_layernorm": True, "fp32_residual_connection": True}
    found = [k for k, bad in unsupported.items() if config.get(k) == bad]
    if config.get("pre_seq_len"):
        found.append("pre_seq_len (P-tuning v2 prefix)")
    if config.get("quantization_bit"):
        found.append("quantization_bit (cpm_kernels int4/int8)")
    if found:
        raise UserError(f"chatglm checkpoint with settings the native GLM block cannot express: {', '.join(found)}")
    ratio = float(config.get("rope_ratio", 1))
    if rope == "interpolation":
        rope_parameters = {"rope_type": "linear", "factor": ratio, "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    else:
        rope_parameters = {"rope_type": "default", "rope_theta": 10000.0 * ratio, "partial_rotary_factor": 0.5}
    heads = config["num_attention_heads"]
    return GlmConfig(
        vocab_size=config["padded_vocab_size"], hidden_size=config["hidden_size"],
        intermediate_size=config["ffn_hidden_size"], num_hidden_layers=config["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=config["multi_query_group_num"] if config.get("multi_query_attention") else heads,
        head_dim=config.get("kv_channels", config["hidden_size"] // heads),
        max_position_embeddings=config.get("seq_length", 8192), rms_norm_eps=config.get("layernorm_epsilon", 1e-5),
        attention_bias=config.get("add_qkv_bias", True), tie_word_embeddings=False,
        pad_token_id=config.get("pad_token_id", 0), eos_token_id=config.get("eos_token_id", 2), bos_token_id=None,
        rope_parameters=rope_parameters)


RENAMES = [  # (chatglm name pattern, GlmForCausalLM name)
    (r"transformer\.embedding\.word_embeddings\.weight", "model.embed_tokens.weight"),
    (r"transformer\.encoder\.layers\.(\d+)\.input_layernorm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"transformer\.encoder\.layers\.(\d+)\.self_attention\.dense\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"transformer\.encoder\.layers\.(\d+)\.post_attention_layernorm\.weight",
     r"model.layers.\1.post_attention_layernorm.weight"),
    (r"transformer\.encoder\.layers\.(\d+)\.mlp\.dense_h_to_4h\.weight", r"model.layers.\1.mlp.gate_up_proj.weight"),
    (r"transformer\.encoder\.layers\.(\d+)\.mlp\.dense_4h_to_h\.weight", r"model.layers.\1.mlp.down_proj.weight"),
    (r"transformer\.encoder\.final_layernorm\.weight", "model.norm.weight"),
    (r"transformer\.output_layer\.weight", "lm_head.weight"),
]
QKV = re.compile(r"transformer\.encoder\.layers\.(\d+)\.self_attention\.query_key_value\.(weight|bias)")


def convert_tensors(tensors: dict, config) -> dict:
    """chatglm tensor names → GlmForCausalLM names; the fused QKV rows are q ‖ k ‖ v, contiguous."""
    out = {}
    for name, tensor in tensors.items():
        if name.endswith("rotary_pos_emb.inv_freq"):
            continue  # recomputed from the config
        if match := QKV.fullmatch(name):
            q_rows = config.num_attention_heads * config.head_dim
            kv_rows = config.num_key_value_heads * config.head_dim
            q, k, v = tensor.split([q_rows, kv_rows, kv_rows], dim=0)
            prefix = f"model.layers.{match[1]}.self_attn"
            out.update({f"{prefix}.q_proj.{match[2]}": q, f"{prefix}.k_proj.{match[2]}": k,
                        f"{prefix}.v_proj.{match[2]}": v})
            continue
        for pattern, target in RENAMES:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = tensor
                break
        else:
            raise UserError(f"unexpected tensor {name!r} in a chatglm checkpoint")
    return out


def weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            names = json.loads(index.read_text())["weight_map"].values()
            return [folder / n for n in dict.fromkeys(names)]  # unique, in index order
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).exists():
            return [folder / single]
    raise UserError(f"no weights in {folder} (expected *.safetensors or pytorch_model*.bin, with an index if sharded)")


def read_weights(file: Path) -> dict:
    import torch
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(file)
    return torch.load(file, map_location="cpu", mmap=True, weights_only=True)  # no pickled code runs


def converted_shards(folder: Path, config) -> Iterator[dict]:
    """The checkpoint's tensors under GlmForCausalLM names, one shard at a time."""
    for file in weight_files(folder):
        yield convert_tensors(read_weights(file), config)


def load_chatglm(folder: Path, config: dict, dtype, device: str, rope_override: str | None = None):
    """Build GlmForCausalLM on the meta device and fill it shard by shard (peak ≈ one copy of the weights)."""
    import torch
    from transformers import GlmForCausalLM
    from transformers.models.glm.modeling_glm import GlmRotaryEmbedding
    glm = glm_config(config, rope_mode(folder, config, rope_override))
    glm._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = GlmForCausalLM(glm)
    expected, loaded = set(model.state_dict()), set()
    for shard in converted_shards(folder, glm):
        shard = {name: t.to(device=device, dtype=dtype) for name, t in shard.items()}
        if unknown := set(shard) - expected:
            raise UserError(f"checkpoint tensors with no place in GlmForCausalLM: {sorted(unknown)[:3]}")
        model.load_state_dict(shard, strict=False, assign=True)
        loaded |= set(shard)
    if missing := expected - loaded:
        raise UserError(f"checkpoint {folder} lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    model.model.rotary_emb = GlmRotaryEmbedding(glm).to(device)  # its buffers were created on meta
    model.generation_config.eos_token_id = glm.eos_token_id
    model.generation_config.pad_token_id = glm.pad_token_id
    return model.eval()
