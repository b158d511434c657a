"""The README grid tasks end to end on slices of the real data with the real small model: the suite (one model
load, eight tasks, the grid with published and Δ rows), each task's documented prompt, the choice-scoring modes,
and the batched log-likelihood scorer against plain one-sequence forwards."""
import contextlib
import io
import json

import pytest
import torch

from conftest import run_command, run_eval
from glm_eval.engine.overrides import compose_config
from glm_eval.engine.rescore import main as rescore_main
from glm_eval.scoring.answers import extract_choice
from glm_eval.scoring.sampling import majority, pass_at_k
from glm_eval.tasks import load_task
from glm_eval.backends.loglik import LoglikelihoodScorer
from glm_eval.core.protocol import LoglikelihoodRequest, Prompt

PROMPT_MARKS = {  # what each task's documented prompt must contain (see the task modules' docstrings)
    "gsm8k": "A:<|im_end|>\n<|im_start|>assistant\nLet's think step by step.",
    "math": "\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "bbh": "A: Let's think step by step.\n",  # the official exemplars precede the question
    "mmlu": "The following are multiple choice questions (with answers) about ",
    "ceval": "考试的单项选择题，请选出其中的正确答案。\n\n",
    "cmmlu": "的单项选择题，请直接给出正确答案的选项。\n\n题目：",
    "mbpp": "Your code should pass these tests:\n\nassert ",
    "agieval": "\nA: Among A through ",
}


def read_jsonl(path):
    return [json.loads(line) for line in path.open(encoding="utf-8")]


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, data_dir):
    results, printed = tmp_path_factory.mktemp("suite"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_eval("suite=chatglm3-readme", "limit=3", "gen.max_new_tokens=24", f"data_dir={data_dir}",
                 f"results_dir={results}", "progress=false")
    return results, printed.getvalue()


def test_suite_runs_all_eight_tasks_and_writes_the_grid(suite_run):
    results, stdout = suite_run
    for task, mark in PROMPT_MARKS.items():
        run = results / "smollm2-135m-instruct" / task
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["n"] == 3 and metrics["failed"] == 0, task
        samples = read_jsonl(run / "samples.jsonl")
        assert all(mark in s["prompt"] for s in samples), (task, samples[0]["prompt"][-300:])
        assert all("correct" in s and "extracted" in s for s in samples), task
    grid = (results / "grid.md").read_text()
    for row in ("| smollm2-135m-instruct |", "| ChatGLM3-6B-Base (published) | 72.3 | 25.7 | 66.1 | 61.4 | 69.0 |",
                "| Best Baseline (published) |", "| ChatGLM2-6B-Base (published) |",
                "| Δ smollm2-135m-instruct − ChatGLM3-6B-Base |"):
        assert row in grid
    assert "chatglm3-readme · smollm2-135m-instruct" in stdout


def test_choice_tasks_report_subjects_and_categories(suite_run):
    results, _ = suite_run
    mmlu = json.loads((results / "smollm2-135m-instruct" / "mmlu" / "metrics.json").read_text())
    assert mmlu["average"] == "micro" and {"micro", "macro", "subjects", "categories"} <= set(mmlu)
    # statistics are the task's own, though the suite's model generated for three tasks before MMLU
    assert mmlu["backend_stats"]["decode_steps"] == 0
    assert mmlu["backend_stats"]["loglik_tokens"] == mmlu["generated_tokens"]
    gsm8k = json.loads((results / "smollm2-135m-instruct" / "gsm8k" / "metrics.json").read_text())
    assert gsm8k["backend_stats"]["useful_row_steps"] == gsm8k["generated_tokens"]
    assert mmlu["choice_scoring"] == "logits"
    agieval = json.loads((results / "smollm2-135m-instruct" / "agieval" / "metrics.json").read_text())
    assert agieval["average"] == "macro" and agieval["score"] == agieval["macro"]
    sample = read_jsonl(results / "smollm2-135m-instruct" / "ceval" / "samples.jsonl")[0]
    assert len(sample["logprobs"]) == 4 and sample["category"]
    assert sample["extracted"] == "ABCD"[max(range(4), key=sample["logprobs"].__getitem__)]  # the likeliest letter
    assert sample["correct"] == (sample["extracted"] == sample["gold"])


def test_mbpp_and_humaneval_execute_generated_code(suite_run, data_dir, tmp_path):
    results, _ = suite_run
    for sample in read_jsonl(results / "smollm2-135m-instruct" / "mbpp" / "samples.jsonl"):
        assert sample["execution"] in {"passed", "failed", "timeout"}
    run_eval("task=humaneval", "limit=2", "gen.max_new_tokens=48", f"data_dir={data_dir}", f"results_dir={tmp_path}",
             "progress=false")
    samples = read_jsonl(tmp_path / "smollm2-135m-instruct" / "humaneval" / "samples.jsonl")
    assert [s["execution"] in {"passed", "failed", "timeout"} for s in samples] == [True, True]


def test_logits_and_loglik_choose_the_same_letters(data_dir, tmp_path):
    """SmolLM2 writes " A" as one token, so both modes score the same quantity; the loglik run recomputes it in a
    different batch layout (smaller forwards), so equal letters also show batch invariance."""
    chosen = {}
    for mode, budget in (("logits", 4096), ("loglik", 700)):
        out = tmp_path / mode
        run_eval("task=mmlu", "limit=24", f"task.choice_scoring={mode}", f"batch.prefill_tokens={budget}",
                 "overwrite=true", f"data_dir={data_dir}", f"output_dir={out}", f"results_dir={tmp_path}",
                 "progress=false")
        chosen[mode] = [s["extracted"] for s in read_jsonl(out / "samples.jsonl")]
    assert chosen["logits"] == chosen["loglik"] and set(chosen["logits"]) <= {"A", "B", "C", "D"}


def test_generate_mode_extracts_letters(data_dir, tmp_path):
    run_eval("task=ceval", "limit=3", "task.choice_scoring=generate", "gen.max_new_tokens=16", f"data_dir={data_dir}",
             f"results_dir={tmp_path}", "progress=false")
    for s in read_jsonl(tmp_path / "smollm2-135m-instruct" / "ceval" / "samples.jsonl"):
        assert "output" in s and "logprobs" not in s
        assert s["extracted"] == extract_choice(s["output"], "ABCD") and s["extracted"] in (None, "A", "B", "C", "D")
        assert s["correct"] == (s["extracted"] == s["gold"])


def test_loglik_scorer_matches_one_sequence_forwards(smol):
    """Batched, shared-context scoring (left padding, cache rows repeated per continuation, right-padded
    continuations) equals summing log-softmax over a plain forward of each context + continuation alone."""
    model, tokenizer = smol
    contexts = ["The capital of France is", "Question: 2 + 2 =", "In 1969, the first people to walk on the Moon were"]
    options = [" Paris", " the city of Lyon", " 4", " four", " Neil Armstrong and Buzz Aldrin", " A"]
    requests = [LoglikelihoodRequest(Prompt(c, tuple(tokenizer(c).input_ids)),
                                     tuple(tuple(tokenizer(o, add_special_tokens=False).input_ids) for o in options))
                for c in contexts]
    assert any(len(c) > 1 for c in requests[0].continuations) and any(len(c) == 1 for c in requests[0].continuations)
    got = {}
    LoglikelihoodScorer(model, pad_id=0, max_length=8192, token_budget=64).score(
        requests, lambda i, r: got.__setitem__(i, r))
    for i, request in enumerate(requests):
        for k, continuation in enumerate(request.continuations):
            ids = torch.tensor([list(request.context.token_ids) + list(continuation)])
            with torch.inference_mode():
                logprobs = model(input_ids=ids).logits[0].float().log_softmax(-1)
            n = len(request.context.token_ids)
            want = sum(float(logprobs[n - 1 + j, t]) for j, t in enumerate(continuation))
            assert abs(got[i].logprobs[k] - want) < 1e-3, (contexts[i], options[k])
            greedy = all(int(logprobs[n - 1 + j].argmax()) == t for j, t in enumerate(continuation))
            assert got[i].is_greedy[k] == greedy


def test_rescore_reproduces_choice_code_and_cloze_verdicts(suite_run):
    results, _ = suite_run
    for task in ("mmlu", "agieval", "mbpp", "math"):
        run = results / "smollm2-135m-instruct" / task
        before = json.loads((run / "metrics.json").read_text())
        verdicts = [(s.get("extracted"), s.get("correct")) for s in read_jsonl(run / "samples.jsonl")]
        done = run_command(rescore_main, run)
        assert done.returncode == 0, done.stderr[-2000:]
        after = json.loads((run / "metrics.json").read_text())
        assert after["score"] == before["score"] and after["n"] == before["n"], task
        assert [(s.get("extracted"), s.get("correct")) for s in read_jsonl(run / "samples.jsonl")] == verdicts


def test_math500_shows_its_documented_prompt(data_dir, capsys):
    run_eval("task=math500", "show_prompts=1", f"data_dir={data_dir}")
    out = capsys.readouterr().out
    assert PROMPT_MARKS["math"] in out and "===== prompt 0" in out


def test_several_samples_are_scored_by_majority_vote_and_pass_at_k(data_dir, tmp_path):
    metrics = run_eval("task=gsm8k", "limit=4", "gen.samples=3", "gen.temperature=0.8", "gen.max_new_tokens=48",
                       f"data_dir={data_dir}", f"results_dir={tmp_path}", "progress=false")
    records = read_jsonl(tmp_path / "smollm2-135m-instruct" / "gsm8k" / "samples.jsonl")
    task = load_task(compose_config(["task=gsm8k"]).task)
    for r in records:
        assert len(r["outputs"]) == len(r["samples"]) == 3 and r["output"] == r["outputs"][0]
        assert [s["extracted"] for s in r["samples"]] == [task.extract(o) for o in r["outputs"]]
        assert r["passed"] == sum(s["correct"] for s in r["samples"])
        assert r["extracted"] == majority([s["extracted"] for s in r["samples"]])
        assert r["correct"] == task.is_correct(r["extracted"], r["gold"])
    assert metrics["metric"] == "maj@3 accuracy" and metrics["samples"] == 3
    assert metrics["score"] == sum(r["correct"] for r in records) / 4
    assert metrics["pass@k"]["pass@1"] == pytest.approx(sum(r["passed"] for r in records) / 12)
    assert metrics["pass@k"]["pass@2"] == pytest.approx(sum(pass_at_k(3, r["passed"], 2) for r in records) / 4)


def test_several_code_samples_give_pass_at_1_per_problem(data_dir, tmp_path):
    metrics = run_eval("task=humaneval", "limit=2", "gen.samples=2", "gen.temperature=0.8", "gen.max_new_tokens=48",
                       f"data_dir={data_dir}", f"results_dir={tmp_path}", "progress=false")
    records = read_jsonl(tmp_path / "smollm2-135m-instruct" / "humaneval" / "samples.jsonl")
    for r in records:
        assert [s["execution"] in {"passed", "failed", "timeout"} for s in r["samples"]] == [True, True]
        assert r["score"] == sum(s["execution"] == "passed" for s in r["samples"]) / 2 and "correct" not in r
    assert metrics["metric"] == "pass@1" and metrics["score"] == pytest.approx(sum(r["score"] for r in records) / 2)
