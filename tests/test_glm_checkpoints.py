"""THUDM-layout checkpoints through the real loader: logits against an independent reference forward (left-padded
batch; RoPE base scaling at rope_ratio 1 and 50, position interpolation for chatglm2-6b-32k), greedy generation
through the batched generator, the HF-native conversion, clear errors, and the CLI end to end."""
import json
import shutil

import pytest
import torch

from conftest import run_eval
from glm_reference import (CHATGLM_TOKENIZER, SHARED, random_weights, reference_greedy, reference_logits,
                           tiny_config, write_checkpoint)
from glm_eval.core import cli
from glm_eval.core.config import ModelConfig
from glm_eval.glm import convert
from glm_eval.core.errors import UserError
from glm_eval.backends.source import ModelSource
from glm_eval.core.protocol import GenerationRequest, Prompt

PI_SOURCE = "seq_idx = torch.arange(seq_len, dtype=dtype, device=device) / self.rope_ratio\n"  # chatglm2-6b-32k's
GLM4_TOKENIZER = SHARED / "models" / "glm4-tokenizer" / "tokenizer.model"
CASES = {  # name: (config, weight format, modeling file, interpolation)
    "ratio1-safetensors": (tiny_config(1), "safetensors", None, False),
    "ratio50-bin": (tiny_config(50), "bin", None, False),
    "chatglm2-32k-interpolation": (tiny_config(16), "safetensors", PI_SOURCE, True),
    "glm4-ratio500": (tiny_config(500, vocab=151552, eos=[151329, 151336, 151338], pad=151329, eps=1.5625e-07),
                      "bin", None, False),
}


@pytest.fixture(scope="module", params=list(CASES))
def checkpoint(request, tmp_path_factory):
    config, fmt, modeling, interpolation = CASES[request.param]
    weights = random_weights(config, seed=len(request.param))
    tokenizer = GLM4_TOKENIZER if config["padded_vocab_size"] > 65024 else CHATGLM_TOKENIZER
    folder = write_checkpoint(tmp_path_factory.mktemp(request.param), config, weights, fmt, shards=3,
                              tokenizer=tokenizer, modeling_source=modeling)
    model = ModelSource(ModelConfig(name="tiny", path=str(folder))).load_model("float32", "cpu")
    return config, weights, folder, model, interpolation


def left_padded_batch(vocab: int):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, min(vocab, 64000), (3, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    mask[2, :23] = 0
    return ids.masked_fill(mask == 0, 0), mask


def test_logits_match_reference_forward(checkpoint):
    config, weights, _, model, interpolation = checkpoint
    ids, mask = left_padded_batch(config["padded_vocab_size"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # ChatGLM's left-padding positions
    with torch.inference_mode():
        got = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    want = reference_logits(config, weights, ids, mask, interpolation)
    real = mask.bool()
    assert (got[real] - want[real]).abs().max().item() <= 1e-4
    assert got[real].abs().max().item() > 1.0  # not a degenerate all-zero comparison


def test_greedy_generation_matches_reference_argmax(checkpoint):
    from glm_eval.backends.generator import SlotGenerator
    config, weights, folder, model, interpolation = checkpoint
    tokenizer = ModelSource(ModelConfig(name="tiny", path=str(folder))).load_tokenizer()
    texts = ["你好", "Natalia sold clips to 48 of her friends in April.", "def f(x):\n\treturn x  + 1", "1+1="]
    prompts = [tokenizer.encode(t) for t in texts]
    eos = {2} if config["padded_vocab_size"] == 65024 else {151329}
    generator = SlotGenerator(model, tokenizer, eos, max_rows=3, pad_id=tokenizer.pad_token_id)
    got = {}
    generator.generate([GenerationRequest(Prompt(t, tuple(p)), max_new_tokens=6) for t, p in zip(texts, prompts)],
                       lambda i, r: got.__setitem__(i, r))
    for i, prompt in enumerate(prompts):
        want = reference_greedy(config, weights, prompt, 6, eos, interpolation)
        assert got[i].num_tokens == len(want)
        assert got[i].text == tokenizer.decode([t for t in want if t not in eos], skip_special_tokens=True)


def test_converted_checkpoint_loads_with_plain_transformers(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    config, _, folder, model, _ = checkpoint
    out = tmp_path / "hf"
    assert cli.run(convert.main, [str(folder), str(out), "dtype=float32"]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "glm"
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids, mask = left_padded_batch(config["padded_vocab_size"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        a = plain(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        b = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert torch.equal(a[mask.bool()], b[mask.bool()])
    # The converted folder also runs through glm-eval's loader (HF Glm layout → from_pretrained).
    again = ModelSource(ModelConfig(name="hf", path=str(out))).load_model("float32", "cpu")
    with torch.inference_mode():
        assert torch.equal(again(input_ids=ids, attention_mask=mask).logits, plain(input_ids=ids,
                                                                                   attention_mask=mask).logits)
    fast = AutoTokenizer.from_pretrained(out)
    original = ModelSource(ModelConfig(name="tiny", path=str(folder))).load_tokenizer()
    messages = [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好👋！"}, {"role": "user", "content": "1 + 1 = ?"}]
    assert list(fast.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)) == original.chat_ids(messages)
    assert fast("Janet’s ducks lay 16 eggs").input_ids == original.encode("Janet’s ducks lay 16 eggs")


def test_unsupported_checkpoints_fail_with_one_clear_line(tmp_path, capsys):
    v1 = tiny_config(1, position_encoding_2d=True, inner_hidden_size=16384)
    folder = write_checkpoint(tmp_path / "v1", v1, random_weights(tiny_config(1)), shards=1)
    with pytest.raises(UserError, match="ChatGLM-6B \\(v1\\)"):
        ModelSource(ModelConfig(name="v1", path=str(folder))).load_model("float32", "cpu")
    ptuning = tiny_config(1, pre_seq_len=128)
    folder = write_checkpoint(tmp_path / "pt", ptuning, random_weights(ptuning), shards=1)
    with pytest.raises(UserError, match="pre_seq_len"):
        ModelSource(ModelConfig(name="pt", path=str(folder))).load_model("float32", "cpu")
    capsys.readouterr()
    assert cli.run(convert.main, [str(tmp_path / "v1"), str(tmp_path / "o")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "ChatGLM-6B (v1)" in line
    assert cli.run(convert.main, [str(tmp_path / "v1"), str(tmp_path / "o"), "--dtype", "float32"]) == 2
    assert "usage: python -m glm_eval.convert" in capsys.readouterr().err  # one convention: key=value, no flags


def test_a_damaged_checkpoint_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    config = tiny_config(1)
    folder = write_checkpoint(tmp_path / "damaged", config, random_weights(config), fmt="safetensors", shards=2)
    shard = sorted(folder.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:2048])  # a download cut short
    capsys.readouterr()
    assert cli.run(convert.main, [str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: cannot convert") and "Traceback" not in err  # after the bar
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))  # no half-written folder left either
    with pytest.raises(UserError, match="undamaged checkpoint"):
        ModelSource(ModelConfig(name="damaged", path=str(folder))).load_model("float32", "cpu")


def test_hub_model_offline_names_the_fix(data_dir):
    with pytest.raises(UserError) as error:  # tests run with HF_HUB_OFFLINE=1
        run_eval("task=gsm8k", "model=chatglm3-6b", "show_prompts=1", f"data_dir={data_dir}")
    assert "THUDM/chatglm3-6b" in str(error.value) and "model.path" in str(error.value)


@pytest.fixture(scope="module")
def chatglm3_tiny(tmp_path_factory):
    config = tiny_config(1)
    return write_checkpoint(tmp_path_factory.mktemp("cli"), config, random_weights(config), shards=2)


def test_show_prompts_is_token_exact_chatglm3(chatglm3_tiny, data_dir, capsys):
    import sentencepiece
    run_eval("task=gsm8k", "model=chatglm3-6b", f"model.path={chatglm3_tiny}", f"data_dir={data_dir}", "show_prompts=2")
    lines = capsys.readouterr().out.splitlines()
    shown = [json.loads(lines[i + 1]) for i, line in enumerate(lines) if line == "----- token ids -----"]
    first = json.loads((data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[0])["question"]
    sp = sentencepiece.SentencePieceProcessor(model_file=str(CHATGLM_TOKENIZER))
    # build_chat_input by hand: [gMASK] sop <|user|> "\n" question <|assistant|>, then the reply's "\n" and prefix
    want = ([64790, 64792, 64795] + sp.encode("\n") + sp.encode(f"Q: {first}\nA:") + [64796]
            + sp.encode("\n") + sp.encode("Let's think step by step."))
    assert len(shown) == 2 and shown[0] == want


def test_chatglm3_base_runs_end_to_end(chatglm3_tiny, data_dir, tmp_path):
    run_eval("task=gsm8k", "model=chatglm3-6b-base", f"model.path={chatglm3_tiny}", "limit=5", f"data_dir={data_dir}",
             f"results_dir={tmp_path}", "gen.max_new_tokens=24", "progress=false")
    metrics = json.loads((tmp_path / "chatglm3-6b-base" / "gsm8k" / "metrics.json").read_text())
    assert metrics["n"] == 5 and metrics["failed"] == 0 and metrics["prompt_format"] == "raw"
    assert metrics["generated_tokens"] > 5
    samples = [json.loads(line) for line in (tmp_path / "chatglm3-6b-base" / "gsm8k" / "samples.jsonl").open()]
    assert samples[0]["prompt"].startswith("Q: Janet’s ducks")
    assert "chatglm3-6b-base" in (tmp_path / "grid.md").read_text()


def test_a_checkpoint_without_its_tokenizer_or_weights_fails_in_one_line(tmp_path, capsys):
    config = tiny_config(1)
    no_tokenizer = write_checkpoint(tmp_path / "no-tokenizer", config, random_weights(config), shards=1, tokenizer=None)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(config))
    shutil.copy(CHATGLM_TOKENIZER, no_weights / "tokenizer.model")
    for folder, missing in ((no_tokenizer, "no tokenizer.model in"), (no_weights, "no weights in")):
        capsys.readouterr()
        assert cli.run(convert.main, [str(folder), str(tmp_path / "out" / "converted")]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("error: ") and missing in line and str(folder) in line
        assert not (tmp_path / "out").exists()  # nothing written, not even the output's parent
