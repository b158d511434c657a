"""Convert a THUDM chatglm checkpoint into an HF-native Glm checkpoint, loadable without remote code.

    python -m glm_eval.convert <chatglm checkpoint dir or hub id> <out dir> [dtype=bfloat16] [rope=base|interpolation]
                               [force=true]

Writes GlmForCausalLM safetensors shards (one per source shard, so memory peaks at one shard), config.json,
generation_config.json (chat stop ids), a fast tokenizer.json with a chat template that tokenizes exactly like
THUDM's build_chat_input, and the original tokenizer.model. Plain `AutoModelForCausalLM` / `AutoTokenizer` and
vLLM load the result.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tqdm import tqdm

from glm_eval.glm.checkpoints import (converted_shards, glm_config, is_chatglm_layout, local_folder, read_config,
                                  rope_mode, weight_files)
from glm_eval.core.cli import boolean, one_of, parse_args
from glm_eval.core.errors import UserError, describe
from glm_eval.core.files import temporary_folder

DTYPES = ("bfloat16", "float16", "float32")


def convert(source: str, out: Path, dtype: str | None = None, rope: str | None = None, force: bool = False) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig
    from glm_eval.glm.tokenizers import load_glm_tokenizer, to_fast_tokenizer

    config = read_config(source)
    if not is_chatglm_layout(config):
        kind = config.get("model_type", "no config.json")
        raise UserError(f"{source} is not a chatglm checkpoint (model_type: {kind}); "
                        f"HF Glm checkpoints load directly with model.path=")
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass force=true to replace it")
    folder = local_folder(source)
    glm = glm_config(config, rope_mode(folder, config, rope))
    dtype = dtype or config.get("torch_dtype", "float32")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    # before writing anything: a checkpoint without its tokenizer.model or its weights fails in one line
    try:
        tokenizer = load_glm_tokenizer(folder)
    except Exception as e:  # missing, or not a tokenizer (a cut download, an HTML error page)
        raise UserError(f"cannot read the tokenizer of {source}: {describe(e)}; the checkpoint's tokenizer.model "
                        "belongs beside its config.json") from None
    count = len(weight_files(folder))

    tmp = temporary_folder(out.parent, f".{out.name}.tmp-")
    try:
        weight_map, total = {}, 0
        shards = tqdm(converted_shards(folder, glm), total=count, unit="shard", desc=f"converting {folder.name}")
        for number, shard in enumerate(shards, 1):
            name = f"model-{number:05d}-of-{count:05d}.safetensors"
            shard = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in shard.items()}
            save_file(shard, tmp / name, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
            total += sum(t.numel() * t.element_size() for t in shard.values())
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        glm.architectures = ["GlmForCausalLM"]
        glm.dtype = dtype
        glm.save_pretrained(tmp)
        GenerationConfig(eos_token_id=tokenizer.stop_ids, pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
        to_fast_tokenizer(tokenizer).save_pretrained(tmp)
        shutil.copy(folder / "tokenizer.model", tmp / "tokenizer.model")  # glm-eval reads the original exactly
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except UserError:
        raise
    except Exception as e:  # a truncated or corrupt shard: nothing is written to `out`
        raise UserError(f"cannot convert {source}: {describe(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


USAGE = ("usage: python -m glm_eval.convert <chatglm checkpoint dir or hub id> <out dir> [dtype=bfloat16|float16|"
         "float32] [rope=base|interpolation] [force=true]")
OPTIONS = {"dtype": one_of(*DTYPES),  # default: the checkpoint's torch_dtype
           "rope": one_of("base", "interpolation"),  # rope_ratio semantics; default: read from the modeling file
           "force": boolean}  # replace an existing output folder


def main(argv: list[str]) -> int:
    (source, out), options, _ = parse_args(argv, USAGE, OPTIONS, paths=(2, 2))
    out = convert(source, Path(out), options.get("dtype"), options.get("rope"), options.get("force", False))
    print(f"wrote {out}")
    return 0
