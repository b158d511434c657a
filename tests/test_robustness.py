"""Hostile and clumsy inputs around finished runs: odd files in a results folder never fail a run."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_command, run_eval

from glm_eval.analysis.grid import rebuild_grid
from glm_eval.core.errors import UserError
from glm_eval.core.files import temporary_folder, write_json
from glm_eval.engine.rescore import main as rescore_main
from glm_eval.engine.serve import main as serve_main


def write_metrics(folder, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_odd_files_in_results_dir_are_named_and_skipped(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    write_metrics(results / "good" / "gsm8k", model="good", task="gsm8k", score=0.5, finished_at="2026-01-01")
    write_metrics(results / "a" / "gsm8k", model="a", task="gsm8k", score="high")
    write_metrics(results / "b" / "gsm8k", model="b", task="gsm8k", score=0.1, finished_at=5)
    write_metrics(results / "c" / "longbench", model="c", task="longbench", score=0.1, longbench="x")
    write_metrics(results / "d" / "longbench", model="d", task="longbench", score=0.1,
                  longbench={"table": "longbench", "published": {"X": {"Avg": "fifty"}}})
    (results / "e" / "gsm8k").mkdir(parents=True)
    (results / "e" / "gsm8k" / "metrics.json").write_bytes(b"\xff\xfe{garbage")
    (results / "published.json").write_text(json.dumps({"rows": {"X": {"gsm8k": "72.3"}}, "reference": "X"}))
    (results / "runs_elsewhere.txt").write_text("/nonexistent/run\n\x00bad\n")
    capsys.readouterr()
    grid = rebuild_grid(results)
    assert list(grid.index) == ["good"] and grid.loc["good", "GSM8K"] == 50.0
    err = capsys.readouterr().err
    for bad in ("a/gsm8k/metrics.json", "b/gsm8k/metrics.json", "c/longbench/metrics.json",
                "d/longbench/metrics.json", "e/gsm8k/metrics.json", "published.json"):
        assert bad in err, (bad, err)
    assert all(line.startswith("warning: ") for line in err.splitlines())
    # a real run into that folder succeeds and lands in the grid
    metrics = run_eval("task=gsm8k", "limit=1", "gen.max_new_tokens=8", f"data_dir={data_dir}",
                       f"results_dir={results}", "progress=false")
    assert metrics["n"] == 1 and "smollm2-135m-instruct" in (results / "grid.md").read_text()


@pytest.mark.parametrize("content", [b"", b"\x00\x01\xff\xfe garbage\n\x89PNG\r\n", b'{"question": "q"}\n[1, 2]\n{"x"\n'],
                         ids=["empty", "binary", "all-malformed"])
def test_a_data_file_without_usable_documents_is_one_line(tmp_path, content):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_bytes(content)
    with pytest.raises(UserError, match=r"GSM8K: no usable documents in .*gsm8k/test.jsonl") as error:
        run_eval("task=gsm8k", f"data_dir={tmp_path}")
    assert "\n" not in str(error.value)


def test_metrics_never_hold_nan(tmp_path):
    """A mean of nothing or a stderr of one document is NaN in Python, which JSON cannot hold: it is written null."""
    write_json(tmp_path / "m.json", {"score": float("nan"), "stderr": float("inf"), "x": [1.5, float("-inf")]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"score": None, "stderr": None, "x": [1.5, None]}


@pytest.mark.parametrize("case", ["cache_dir is a file", "corrupt cache", "output_dir under a file",
                                  "results_dir under a file"])
def test_unusable_folders_and_caches_are_one_line_before_generating(case, tmp_path, data_dir, monkeypatch):
    from glm_eval.backends import hf
    monkeypatch.setattr(hf.HFBackend, "__init__", lambda *a: pytest.fail("the weights were loaded"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = tmp_path / "cache"
    overrides = {"cache_dir is a file": [f"cache_dir={blocker}"],
                 "corrupt cache": [f"cache_dir={cache}"],
                 "output_dir under a file": [f"cache_dir={cache}", f"output_dir={blocker}/run"],
                 "results_dir under a file": [f"cache_dir={cache}", f"results_dir={blocker}/results"]}[case]
    if case == "corrupt cache":
        cache.mkdir()
        (cache / "responses.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    with pytest.raises(UserError) as error:
        run_eval("task=gsm8k", "limit=1", f"data_dir={data_dir}", *overrides)
    message = str(error.value)
    assert "\n" not in message
    assert ("responses.sqlite" in message and "cache_dir=" in message) if "cache" in case else "not a writable" in message


def test_an_interrupted_conversion_is_cleaned_up_on_the_next_start(tmp_path):
    models = tmp_path / "models"
    dead = models / ".tmp-999999999-abcd"  # no such process: a conversion killed halfway
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"\0" * 1024)
    running = models / f".tmp-{os.getpid()}-efgh"  # a live conversion in another run sharing the cache
    running.mkdir()
    new = temporary_folder(models, ".tmp-")
    assert not dead.exists() and running.exists() and new.is_dir() and new.name.startswith(f".tmp-{os.getpid()}-")


@pytest.mark.parametrize("damage", ["no config.yaml", "YAML error", "unknown key", "truncated metrics.json",
                                    "truncated last line"])
def test_rescore_of_a_damaged_run_folder_is_one_line(damage, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task:\n  name: gsm8k\n")
    (run / "metrics.json").write_text("{}")
    (run / "samples.jsonl").write_text('{"doc_id": 0, "output": "4", "gold": "4"}\n')
    if damage == "no config.yaml":
        (run / "config.yaml").unlink()
    elif damage == "YAML error":
        (run / "config.yaml").write_text("task: [unclosed\n")
    elif damage == "unknown key":
        (run / "config.yaml").write_text("tsak: {}\n")
    elif damage == "truncated metrics.json":
        (run / "metrics.json").write_text('{"score": 0.')
    else:
        (run / "samples.jsonl").write_text('{"doc_id": 0, "output": "4", "gold": "4"}\n{"doc_id": 1, "out')
    result = run_command(rescore_main, run)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_serve_refuses_a_port_out_of_range():
    result = run_command(serve_main, "model=smollm2-135m-instruct", "port=70000")
    assert result.returncode == 2 and "port=70000" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("damage", ["empty folder", "malformed config.json", "truncated safetensors"])
def test_a_damaged_model_folder_is_one_line(damage, smol, tmp_path, data_dir):
    from transformers import LlamaConfig, LlamaForCausalLM
    _, tokenizer = smol
    folder = tmp_path / "model"
    folder.mkdir()
    if damage != "empty folder":
        tokenizer.save_pretrained(folder)
        LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=1, num_attention_heads=2)).save_pretrained(folder)
    if damage == "malformed config.json":
        (folder / "config.json").write_text('{"model_type": "llama",')
    if damage == "truncated safetensors":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(UserError) as error:
        run_eval("task=gsm8k", "model=hf", f"model.path={folder}", "limit=1", f"data_dir={data_dir}",
                 f"results_dir={tmp_path / 'results'}", "progress=false")
    message = str(error.value)
    assert "\n" not in message and str(folder) in message, message


@pytest.mark.parametrize("name", ["nosuch", "../gsm8k", "gsm8k.x", "base", "choice", "needs_missing"])
def test_a_task_config_naming_no_task_is_one_line(name, tmp_path, data_dir, monkeypatch):
    import glm_eval.tasks
    from glm_eval.backends import hf
    monkeypatch.setattr(hf.HFBackend, "__init__", lambda *a: pytest.fail("the weights were loaded"))
    (tmp_path / "needs_missing.py").write_text("import a_package_nobody_installed\nTASK = None\n")
    monkeypatch.setattr(glm_eval.tasks, "__path__", [*glm_eval.tasks.__path__, str(tmp_path)])
    with pytest.raises(UserError) as error:
        run_eval("task=gsm8k", f"task.name={name}", "limit=1", f"data_dir={data_dir}", f"cache_dir={tmp_path}/c")
    message = str(error.value)
    assert "\n" not in message and (f"task.name={name}" in message or "a_package_nobody_installed" in message)


def in_mount_namespace(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`script` (sh) in a private mount namespace, where it may mount a tiny tmpfs (a disk that fills up) or a
    read-only bind: the real conditions, which file permissions cannot fake for root."""
    return subprocess.run(["unshare", "-m", "--", "sh", "-c", f"set -e\n{script}"], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def mount_namespaces() -> bool:
    return shutil.which("unshare") is not None and in_mount_namespace(
        "mount -t tmpfs -o size=64k tmpfs /mnt", timeout=30).returncode == 0


needs_mounts = pytest.mark.skipif(not (os.geteuid() == 0 and mount_namespaces()),
                                  reason="needs root and mount namespaces to make a full or read-only disk")


@needs_mounts
def test_a_full_disk_never_loses_finished_work(tmp_path, data_dir):
    """The cache's disk fills up mid-run: a warning, and the run finishes. The output's disk is full: one line, the
    folder is left without metrics.json (never a mix), and once there is room the rerun generates nothing."""
    disk = tmp_path / "disk"
    disk.mkdir()
    run = (f"{sys.executable} -m glm_eval task=gsm8k limit=6 gen.max_new_tokens=48 data_dir={data_dir} "
           f"progress=false results_dir={tmp_path}/results")
    full_cache = in_mount_namespace(
        f"mount -t tmpfs -o size=200k tmpfs {disk}\nhead -c 150000 /dev/zero > {disk}/filler\n"
        f"{run} cache_dir={disk}/cache output_dir={tmp_path}/a")
    assert full_cache.returncode == 0, full_cache.stderr[-2000:]
    assert "response cache" in full_cache.stderr and "can no longer be written" in full_cache.stderr
    assert len((tmp_path / "a" / "samples.jsonl").read_text().splitlines()) == 6
    full_output = in_mount_namespace(
        f"mount -t tmpfs -o size=200k tmpfs {disk}\nhead -c 195000 /dev/zero > {disk}/filler\n"
        f"if {run} cache_dir={tmp_path}/cache output_dir={disk}/out; then exit 9; else echo first=$?; fi\n"
        f"echo left: $(ls -A {disk}/out)\nrm {disk}/filler\n"
        f"{run} cache_dir={tmp_path}/cache output_dir={disk}/out")
    assert full_output.returncode == 0, full_output.stderr[-2000:]
    first, left, rerun = full_output.stdout.split("\n", 2)
    assert first == "first=2" and left.startswith("left: ") and "metrics.json" not in left
    error_lines = [line for line in full_output.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "No space left" in error_lines[0] and "rerun" in error_lines[0]
    assert "generated=0, from cache=6" in rerun, full_output.stdout


@needs_mounts
def test_a_read_only_cache_is_one_line_before_the_model_loads(tmp_path, data_dir):
    (tmp_path / "cache").mkdir()
    (tmp_path / "ro").mkdir()
    out = in_mount_namespace(
        f"mount --bind -o ro {tmp_path}/cache {tmp_path}/ro\n"
        f"{sys.executable} -m glm_eval task=gsm8k limit=2 data_dir={data_dir} cache_dir={tmp_path}/ro "
        f"output_dir={tmp_path}/out results_dir={tmp_path}/results", timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-2000:]
    assert "responses.sqlite" in out.stderr and "cache_dir=" in out.stderr


KILLED_REWRITE = """
import os, signal, sys
from pathlib import Path
from glm_eval.engine.records import write_run
folder, stage = Path(sys.argv[1]), sys.argv[2]
write_run(folder, "old: true\\n", [{"id": i} for i in range(3)], {"n": 3})
replace = os.replace
def replace_then_die(src, dst):
    if Path(dst).name == stage:
        if sys.argv[3] == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
os.replace = replace_then_die
write_run(folder, "new: true\\n", [{"id": i} for i in range(500)], {"n": 500})
"""


@pytest.mark.parametrize("stage", ["config.yaml", "samples.jsonl", "metrics.json"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_run_killed_while_rewriting_its_folder_never_leaves_a_mix(stage, when, tmp_path):
    """SIGKILL at every step of rewriting an existing run folder: a reader finds either the whole new run or a
    folder without metrics.json (incomplete, rerun), never old metrics beside new samples."""
    folder = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_REWRITE, str(folder), stage, when], cwd=REPO)
    assert killed.returncode == -9
    samples = (folder / "samples.jsonl").read_text().splitlines()
    assert all(json.loads(line)["id"] >= 0 for line in samples)  # whole lines only
    if (folder / "metrics.json").exists():
        assert json.loads((folder / "metrics.json").read_text())["n"] == len(samples) == 500
        assert (folder / "config.yaml").read_text() == "new: true\n"
    else:
        assert stage != "metrics.json" or when == "before"


def test_vllm_missing_is_one_line_naming_the_install(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(UserError) as error:
        run_eval("task=gsm8k", "limit=1", "model.backend=vllm", f"data_dir={data_dir}", f"cache_dir={tmp_path}/c",
                 f"results_dir={tmp_path}/r")
    message = str(error.value)
    assert "\n" not in message and "pip install -e '.[vllm]'" in message and "pip install vllm" in message


OPEN_CACHE = """
import sys, time
from pathlib import Path
from glm_eval.engine.cache import ResponseCache
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start at once
ResponseCache(Path(sys.argv[1])).close()
"""


def test_processes_creating_one_cache_together_all_succeed(tmp_path):
    """torchrun ranks (or parallel runs) that open a fresh cache at the same moment: SQLite answers "database is
    locked" at once on the switch to WAL; none may fail for it."""
    start = f"{time.time() + 2:.3f}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_CACHE, str(tmp_path / "responses.sqlite"), start],
                              cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-300:] for e in errors if e]


CONVERT = """
import sys
from glm_eval.engine.overrides import compose_config
from glm_eval.backends.source import ModelSource
print(ModelSource(compose_config(["model=smollm2-135m-instruct"]).model, sys.argv[1])._convert_gguf())
"""


def test_processes_converting_one_model_together_take_turns(tmp_path):
    """Two processes needing the dequantised GGUF at once (torchrun ranks): one converts, the other waits and
    finds a complete folder (before, each could rename over the other's half and both failed to load)."""
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in outputs]
    assert sum(err.count("converting ") for _, err in outputs) == 1
    folder = Path(outputs[0][0].strip())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in folder.iterdir()}
