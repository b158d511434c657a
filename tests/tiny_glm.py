"""Tiny random-weight checkpoints of today's GLM architectures, for shape and logic checks (never for scores).

Each is the real config shrunk (two layers, a few experts, head_dim >= 32 as vLLM's CPU attention needs; GLM-4.7-Flash
keeps kv_lora_rank 512 + qk_rope_head_dim 64, the only latent size vLLM's CPU MLA kernel takes) in transformers' own
class, saved as an HF folder with a tokenizer and the family's real chat template (tests/fixtures/templates).

The tokenizer is a stand-in: GLM-4-9B's real tiktoken vocabulary (../shared/models/glm4-tokenizer, the 151,329
ordinary tokens that GLM-4-0414 shares, and GLM-4.5 most probably) with the special and added tokens of the GLM-4.5
family at their published ids (<think> 151350 … /nothink 151360; fixtures/templates/SOURCES.md). GLM-4.7-Flash and
GLM-5 have a different 154,880-token vocabulary that is not available here: their stand-ins use this one.
"""
from __future__ import annotations

import functools
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "templates"
GLM4_TOKENIZER = REPO.parent / "shared" / "models" / "glm4-tokenizer"

# ids 151343.. in the GLM-4.5 tokenizer's order; (token, special)
ADDED_AFTER_GLM4 = [("<|begin_of_audio|>", True), ("<|end_of_audio|>", True), ("<|begin_of_transcription|>", True),
                    ("<|end_of_transcription|>", True), ("<|code_prefix|>", False), ("<|code_middle|>", False),
                    ("<|code_suffix|>", False), ("<think>", False), ("</think>", False), ("<tool_call>", False),
                    ("</tool_call>", False), ("<tool_response>", False), ("</tool_response>", False),
                    ("<arg_key>", False), ("</arg_key>", False), ("<arg_value>", False), ("</arg_value>", False),
                    ("/nothink", True), ("<|begin_of_box|>", False), ("<|end_of_box|>", False), ("<|image|>", False),
                    ("<|video|>", False)]
EOS = [151329, 151336, 151338]  # <|endoftext|>, <|user|>, <|observation|>
VOCAB = 151552

# family → (template file, transformers config class name, shrunk config)
_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
               max_position_embeddings=4096, eos_token_id=EOS, pad_token_id=151329, tie_word_embeddings=False,
               initializer_range=0.2)  # wide logits: greedy choices far from ties, so engines agree on them
_MOE = dict(moe_intermediate_size=64, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
            first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5)
FAMILIES = {
    "glm4-0414": ("GLM-4-0414.RECONSTRUCTED.jinja", "Glm4Config",
                  dict(_COMMON, num_key_value_heads=1, head_dim=32, partial_rotary_factor=0.5, attention_bias=True)),
    "glm-z1": ("GLM-Z1-0414.UNVERIFIED.jinja", "Glm4Config",
               dict(_COMMON, num_key_value_heads=1, head_dim=32, partial_rotary_factor=0.5, attention_bias=True)),
    "glm4.5": ("GLM-4.6.jinja", "Glm4MoeConfig",
               dict(_COMMON, **_MOE, num_key_value_heads=1, head_dim=32, partial_rotary_factor=0.5,
                    use_qk_norm=True, attention_bias=True, num_nextn_predict_layers=0)),
    "glm4.7-flash": ("GLM-4.7-Flash.jinja", "Glm4MoeLiteConfig",
                     dict(_COMMON, **_MOE, num_key_value_heads=2, q_lora_rank=32, kv_lora_rank=512,
                          qk_nope_head_dim=32, qk_rope_head_dim=64, v_head_dim=32, num_nextn_predict_layers=0)),
    # GLM-5's template was not found: 4.7's, as ms-swift renders GLM-5
    "glm5": ("GLM-4.7-Flash.jinja", "GlmMoeDsaConfig",
             dict(_COMMON, **_MOE, num_key_value_heads=2, q_lora_rank=32, kv_lora_rank=64, qk_nope_head_dim=32,
                  qk_rope_head_dim=32, v_head_dim=32, head_dim=32, index_n_heads=2, index_head_dim=64,
                  index_topk=4, num_nextn_predict_layers=0)),
}


@functools.cache
def glm45_tokenizer():
    """GLM-4's vocabulary with the GLM-4.5 family's special and added tokens at their ids (built once: ~10 s)."""
    from tokenizers import AddedToken

    from glm_eval.glm.tokenizers import GLM4Tokenizer, to_fast_tokenizer
    fast = to_fast_tokenizer(GLM4Tokenizer(GLM4_TOKENIZER / "tokenizer.model"))
    backend = fast.backend_tokenizer
    for token, special in ADDED_AFTER_GLM4:
        added = AddedToken(token, special=special, normalized=False)
        (backend.add_special_tokens if special else backend.add_tokens)([added])
    assert backend.token_to_id("<think>") == 151350 and backend.token_to_id("/nothink") == 151360
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   padding_side="left", clean_up_tokenization_spaces=False, model_max_length=4096)


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random checkpoint of `family` in `folder` (written once; reused if complete)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig
    if (folder / "model.safetensors").exists():
        return folder
    template_file, config_class, settings = FAMILIES[family]
    config = getattr(transformers, config_class)(**settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    GenerationConfig(eos_token_id=EOS, pad_token_id=151329).save_pretrained(folder)
    tokenizer = glm45_tokenizer()
    tokenizer.chat_template = (TEMPLATES / template_file).read_text()
    tokenizer.save_pretrained(folder)
    return folder
