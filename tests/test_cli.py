"""The command line: one-line errors with the valid choices, prompt preview, a full run, resume after
SIGKILL, concurrent runs sharing the cache, rescore and the grid."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, run_command, run_eval

from glm_eval.core.errors import UserError
from glm_eval.engine.rescore import main as rescore_main

FAST = ["task=gsm8k", "model=smollm2-135m-instruct", "gen.max_new_tokens=32", "batch.max_rows=8"]


def one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0]


def refused(*overrides) -> str:
    """The one line `python -m glm_eval <overrides>` prints before loading anything (it prints "error: " + this)."""
    with pytest.raises(UserError) as error:
        run_eval(*overrides)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_the_command_line_refuses_bad_input_in_one_line():  # the one process-boundary check of the main command
    one_line_error(run_cli("task=nope"), "error: unknown task 'nope'", "gsm8k")
    one_line_error(run_cli("model.dtype=float33"), "model.dtype=float33", "float32, bfloat16")
    one_line_error(run_cli("task=gsm8k", "--limit=5"), "write limit=5, not --limit=5")


@pytest.mark.parametrize("argv, needle", [
    (["--=5"], "'--=5' is not an option"), (["-"], "'-' is not an option"),
    (["--lim", "5"], "write lim=5, not --lim 5"), (["--multi"], "write Hydra's flag in full (--multirun)"),
    (["-m", "--cfg"], "--cfg/-c: expected one argument")])
def test_dashed_arguments_are_refused_in_one_line(argv, needle):
    from glm_eval.__main__ import split_arguments
    # Hydra's own flags pass, their values apart from the overrides
    assert split_arguments(["--cfg", "job", "task=gsm8k", "--config-name", "config", "-m", "limit=5"]) == \
        (["--cfg", "job", "--config-name", "config", "-m"], ["task=gsm8k", "limit=5"], True)
    with pytest.raises(UserError) as error:
        split_arguments(argv)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_a_config_file_with_an_unknown_key_is_named_in_one_line(tmp_path, monkeypatch):
    import shutil

    from glm_eval.engine import overrides
    configs = tmp_path / "configs"
    shutil.copytree(overrides.config_dir(), configs)
    with open(configs / "task" / "gsm8k.yaml", "a") as f:
        f.write("max_new_token: 256\n")  # a typo
    monkeypatch.setattr(overrides, "config_dir", lambda: configs)
    with pytest.raises(UserError) as error:
        overrides.validate(["task=gsm8k"])
    message = str(error.value)
    assert message.startswith(f"{configs / 'task' / 'gsm8k.yaml'}: unknown key 'max_new_token' (task.max_new_token); "
                              "the keys there are: name, dataset,") and ", max_new_tokens, " in message
    assert "\n" not in message
    lines = (configs / "task" / "gsm8k.yaml").read_text().splitlines()
    (configs / "task" / "gsm8k.yaml").write_text("\n".join(lines[:-1] + ["max_new_tokens: [256"]) + "\n")
    with pytest.raises(UserError) as error:   # not YAML: the file and the place, in one line
        overrides.validate(["task=gsm8k"])
    assert str(error.value).startswith(f"{configs / 'task' / 'gsm8k.yaml'}:{len(lines) + 1}:1: not valid YAML: "
                                       "expected ',' or ']'") and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides, needles", [
    (["task=nope"], ["unknown task 'nope'", "gsm8k", "longbench/{"]),
    (["model=nope"], ["unknown model 'nope'", "smollm2-135m-instruct", "hf"]),
    (["task=gsm8k,nope"], ["unknown task 'nope'"]),
    (["limt=3"], ["unknown option 'limt'", "limit"]),
    (["limit=abc"], ["limit=abc", "Integer"]),
    (["model=hf"], ["model.path"]),
    (["model.dtype=float33"], ["model.dtype=float33", "auto, float32, bfloat16, float16"]),
    (["model.device=gpu"], ["model.device=gpu", "auto, cpu, cuda"]),
    (["model.prompt_format=chatglm4"], ["chatglm4", "chatglm3", "glm4"]),
    (["task=mmlu", "task.choice_scoring=logit"], ["task.choice_scoring=logit", "logits, loglik, generate"]),
    (["model=openai_api", "model.endpoint.url=http://x/v1", "model.endpoint.api=embeddings"],
     ["model.endpoint.api=embeddings", "chat, completions"]),
    (["limit=-1"], ["limit=-1", "at least 1"]),
    (["limit=0"], ["limit=0", "at least 1"]),
    (["model.vllm.engine_kwargs.max_num_seqs=8"], ["+model.vllm.engine_kwargs.max_num_seqs=<value>"]),
    (["model.backend=vllm", "model.vllm.data_parallel_size=2"], ["data_parallel_size=2", "--nproc-per-node 2"]),
    (["hydra/launcher=submitit_slurm"], ["sbatch", "hydra/launcher=submitit_local"]),
    (["hydra/launcher=slurm"], ["unknown launcher 'slurm'", "basic, submitit_local, submitit_slurm"]),
    (["batch.max_rows=0"], ["batch.max_rows=0", "at least 1"]),
    (["gen.max_new_tokens=0"], ["gen.max_new_tokens=0", "at least 1"]),
    (["gen.samples=0"], ["gen.samples=0", "at least 1"]),
    (["gen.top_p=1.5"], ["gen.top_p=1.5", "between"]),
    (["model=openai_api", "model.endpoint.url=http://x/v1", "model.endpoint.concurrency=0"],
     ["model.endpoint.concurrency=0", "at least 1"]),
    (["task=bbh", "gen.samples=4", "gen.temperature=0.7"], ["gen.samples=4", "BBH", "gsm8k"]),
    (["task=gsm8k", "gen.samples=4"], ["gen.samples=4", "gen.temperature>0"]),
    (["task=bbh", "task.shots=5"], ["task.shots=5", "task.shots=3 or 0"]),
    (["task=mbpp", "task.shots=1"], ["task.shots=1", "0-shot"]),
    (["task=math500", "task.shots=2"], ["task.shots=2", "task.shot_local_file"]),
    (["task=gsm8k", "task.shot_sampling=random"], ["task.shot_sampling=random", "fixed, per_doc"]),
    (["batch.shared_prefix_tokens=0"], ["batch.shared_prefix_tokens=0", "at least 1"]),
    # nothing listens on port 9: a request, or even the model list, would fail otherwise
    (["task=longbench/multi_news", "model=openai_api", "model.endpoint.url=http://127.0.0.1:9/v1"],
     ["LongBench", "model.tokenizer="]),
    (["model.tokenizer=chatglm3-6b"], ["model.tokenizer is for endpoints", "drop it"]),
    (["model=openai_api", "model.endpoint.url=http://x/v1", "model.endpoint.prompt_as=ids"],
     ["model.endpoint.prompt_as=ids", "auto, text, token_ids"]),
])
def test_bad_values_are_refused_before_any_model_loads(overrides, needles, monkeypatch):
    from glm_eval.backends import source
    monkeypatch.setattr(source.ModelSource, "__init__", lambda *a: pytest.fail("a model was loaded"))
    message = refused(*overrides)
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("tokenizer, needles", [
    ("/no/such/folder", ["model.tokenizer=/no/such/folder", "not a folder"]),
    ("openai_api", ["model.tokenizer=openai_api", "endpoint's config"]),
])
def test_a_bad_endpoint_tokenizer_is_one_line_before_any_request(tokenizer, needles):
    message = refused("task=gsm8k", "model=openai_api", "model.endpoint.url=http://127.0.0.1:9/v1",
                      "model.endpoint.api=completions", f"model.tokenizer={tokenizer}")
    for needle in needles:
        assert needle in message, message


def test_missing_local_data_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    from glm_eval.backends import source
    monkeypatch.setattr(source.ModelSource, "__init__", lambda *a: pytest.fail("a model was loaded"))
    message = refused(*FAST, f"data_dir={tmp_path}")
    assert "gsm8k/test.jsonl" in message and "data_dir" in message


def test_show_prompts_prints_exact_prompts_and_ids(data_dir, capsys):
    run_eval(*FAST, f"data_dir={data_dir}", "show_prompts=2")
    out = capsys.readouterr().out
    assert out.count("===== prompt") == 2
    assert "<|im_start|>user\nQ: Janet’s ducks lay 16 eggs" in out
    assert "A:<|im_end|>\n<|im_start|>assistant\nLet's think step by step." in out
    assert "[1, 9690, 198," in out  # token ids of "<|im_start|>system\n"


def read_run(out: Path):
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, (out / "samples.jsonl").read_text()


def cached_rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "responses.sqlite", timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_run_resume_after_sigkill_rescore_and_grid(data_dir, tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    args = [*FAST, "limit=20", f"data_dir={data_dir}", f"results_dir={results}", f"cache_dir={cache}"]
    # 1. a run killed with SIGKILL once some responses are stored
    proc = subprocess.Popen([sys.executable, "-m", "glm_eval", *args, f"output_dir={tmp_path / 'resumed'}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while cached_rows(cache) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = cached_rows(cache)
    assert 5 <= done_before < 20, done_before
    # 2. the same command again finishes without regenerating what was done
    run_eval(*args, f"output_dir={tmp_path / 'resumed'}", "progress=false")
    metrics, samples = read_run(tmp_path / "resumed")
    assert metrics["from_cache"] == done_before and metrics["generated"] == 20 - done_before
    assert len(samples.splitlines()) == 20
    record = json.loads(samples.splitlines()[0])
    assert {"doc_id", "prompt", "output", "extracted", "gold", "correct"} <= set(record) and record["gold"] == "18"
    assert (tmp_path / "resumed" / "config.yaml").exists()
    assert metrics["n"] == 20 and metrics["data"]["sha256"]["gsm8k/test.jsonl"].startswith("3730d312")
    # 3. (that the resumed run writes the uninterrupted run's bytes: test_parallel.py, after a torchrun rank dies)
    # 4. rescore re-applies extraction and metric to stored outputs
    broken = dict(metrics, score=0.77, correct=-1)
    (tmp_path / "resumed" / "metrics.json").write_text(json.dumps(broken))
    rescored = run_command(rescore_main, tmp_path / "resumed")
    assert rescored.returncode == 0, rescored.stderr
    after, after_samples = read_run(tmp_path / "resumed")
    assert after["score"] == metrics["score"] and after["correct"] == metrics["correct"]
    assert after_samples == samples
    # 5. the grid lists the model with a GSM8K column
    grid = (results / "grid.md").read_text()
    assert "| Model | GSM8K |" in grid and "smollm2-135m-instruct" in grid
    assert f"{100 * metrics['score']:.1f}" in grid
    assert (results / "grid.csv").read_text().startswith("model,GSM8K")
    # 6. a run folder edited by hand is refused in one line, and left as it was
    lines = samples.splitlines()
    edited = "\n".join([json.dumps({k: v for k, v in json.loads(lines[0]).items() if k != "output"}), *lines[1:]])
    (tmp_path / "resumed" / "samples.jsonl").write_text(edited + "\n")
    for damage in (None, "{not json"):
        if damage:
            (tmp_path / "resumed" / "samples.jsonl").write_text(edited + "\n" + damage + "\n")
        before = (tmp_path / "resumed" / "samples.jsonl").read_text()
        refused = run_command(rescore_main, tmp_path / "resumed")
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert (tmp_path / "resumed" / "samples.jsonl").read_text() == before


def test_two_runs_sharing_the_cache_at_once(data_dir, tmp_path):
    cache = tmp_path / "cache"
    # threads=1: two processes of 2 threads each on 2 cores would spin on each other's cores
    runs = [subprocess.Popen([sys.executable, "-m", "glm_eval", *FAST, "limit=4", "threads=1", f"data_dir={data_dir}",
                              f"cache_dir={cache}", f"results_dir={tmp_path / 'results'}",
                              f"output_dir={tmp_path / str(i)}", "progress=false"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in runs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
    assert read_run(tmp_path / "0")[1] == read_run(tmp_path / "1")[1]
    assert cached_rows(cache) == 4


def test_ctrl_c_while_endpoint_requests_hang_exits_at_once(serve, data_dir, tmp_path):
    asked, release = threading.Event(), threading.Event()

    def hang(handler, path, payload):  # accepts the request, sends nothing until the test ends
        asked.set()
        release.wait(600)
    server = serve(hang)
    try:
        # Python's own Ctrl-C handler, which a shell's background job (SIGINT ignored) would not install
        interruptible = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " \
                        "runpy.run_module('glm_eval', run_name='__main__', alter_sys=True)"
        proc = subprocess.Popen(
            [sys.executable, "-c", interruptible, "task=gsm8k", "limit=3", f"data_dir={data_dir}", "progress=false",
             f"results_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", "model=openai_api",
             f"model.endpoint.url={server.url}/v1", "model.endpoint.timeout_s=600"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert asked.wait(300), proc.communicate()[1]
        time.sleep(0.5)  # every request is sent and waiting for its headers
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # the server would hold the requests for 600 s
    finally:
        release.set()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: 0/3 responses are cached; rerun the same command to resume"
