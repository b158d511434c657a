"""--multirun sweeps through Hydra's submitit launcher (submitit_local: each (model, task) a job in its own process,
as on SLURM): both runs written, the grid rebuilt when the last job ends, a rerun resumed from the cache, a failed
job named without stopping the others; `python -m glm_eval.grid` rebuilds the grid by hand; a suite fans out."""
import json
import subprocess
import sys

from conftest import REPO


def glm_eval(*args, module="glm_eval"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_a_submitit_sweep_writes_every_run_and_rebuilds_the_grid(tmp_path, data_dir):
    data = tmp_path / "data"  # gsm8k and mmlu only: the third task of the rerun cannot find its data
    data.mkdir()
    for task in ("gsm8k", "mmlu"):
        (data / task).symlink_to(data_dir / task)
    results = tmp_path / "results"
    common = ["model=smollm2-135m-instruct", "limit=3", "gen.max_new_tokens=16", f"data_dir={data}",
              f"results_dir={results}", "progress=false", "hydra/launcher=submitit_local", "threads=1",  # jobs at once
              "cache_dir=${results_dir}/.cache/${model.name}-${task.name}"]  # a response cache per job (README)
    sweep = glm_eval("--multirun", "task=gsm8k,mmlu", *common)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    for task in ("gsm8k", "mmlu"):
        metrics = json.loads((results / "smollm2-135m-instruct" / task / "metrics.json").read_text())
        assert metrics["n"] == 3 and metrics["generated"] == 3
    assert sorted(p.parent.name for p in results.glob(".cache/*/responses.sqlite")) == [
        "smollm2-135m-instruct-gsm8k", "smollm2-135m-instruct-mmlu"]
    grid = (results / "grid.md").read_text()
    assert "| Model | GSM8K | MMLU |" in grid and grid in sweep.stdout  # printed by the end-of-sweep callback

    again = glm_eval("--multirun", "task=gsm8k,ceval", *common)
    assert again.returncode == 1
    metrics = json.loads((results / "smollm2-135m-instruct" / "gsm8k" / "metrics.json").read_text())
    assert metrics["generated"] == 0 and metrics["from_cache"] == 3  # resumed: every answer from the cache
    failed = [line for line in again.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "task=ceval" in failed[0] and "ceval" in failed[0].split(":", 2)[2], again.stderr
    assert "error: 1 run(s) of the sweep failed" in again.stderr and "Traceback" not in again.stderr

    (results / "grid.md").unlink()
    rebuilt = glm_eval(str(results), module="glm_eval.grid")
    assert rebuilt.returncode == 0 and (results / "grid.md").read_text() == grid, rebuilt.stderr
    assert glm_eval(str(tmp_path / "nowhere"), module="glm_eval.grid").returncode == 2


def test_a_suite_fans_out_into_one_job_per_task(tmp_path):
    """`--multirun suite=…`: the suite's tasks become the sweep's task values (one job each; the sweep test above
    runs jobs), and its published rows are written first, so the rebuilt grid has them."""
    from glm_eval.engine.sweep import fan_out_suite
    results = tmp_path / "results"
    overrides = fan_out_suite(["suite=chatglm3-readme", "model=smollm2-135m-instruct,hf", "model.path=x", "limit=1",
                               f"results_dir={results}"])
    assert overrides == ["model=smollm2-135m-instruct,hf", "model.path=x", "limit=1", f"results_dir={results}",
                         "task=gsm8k,math,bbh,mmlu,ceval,cmmlu,mbpp,agieval"]
    published = json.loads((results / "published.json").read_text())
    assert published["reference"] == "ChatGLM3-6B-Base" and published["rows"]["ChatGLM3-6B-Base"]["gsm8k"] == 72.3
    assert fan_out_suite(["task=gsm8k,mmlu", "limit=1"]) == ["task=gsm8k,mmlu", "limit=1"]  # no suite: unchanged
