"""The house: imports point downward only (core ← glm, scoring ← backends, tasks, analysis ← engine ← the
commands), analysis never pulls in torch or the engine, and a built wheel installed elsewhere runs on its own."""
import ast
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from conftest import REPO

# A module may import its own subpackage and any subpackage of a lower rank, nothing else.
RANKS = {"core": 0, "configs": 0, "glm": 1, "scoring": 1, "backends": 2, "tasks": 2, "analysis": 2, "engine": 3}
COMMANDS = 4  # glm_eval/__main__.py and the `python -m glm_eval.<command>` entry modules
SOURCES = {"glm_eval": REPO / "glm_eval", "glm_eval.tasks": REPO / "tasks", "glm_eval.configs": REPO / "configs"}


def modules():
    """(module name, file) of every module of the installed package, mapped as pyproject maps the checkout."""
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            yield ".".join([package, *parts]).removesuffix(".__init__"), path


def layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS):
        return parts[1], RANKS[parts[1]]
    return "commands", COMMANDS


def imported(path: Path, module: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = module.split(".")[:len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([base] if base else []))
            names |= {f"{base}.{a.name}" for a in node.names} if base == "glm_eval" else {base}
    return {n for n in names if n == "glm_eval" or n.startswith("glm_eval.")}


def test_imports_only_point_downward():
    found = dict(modules())
    assert {"glm_eval.tasks.gsm8k", "glm_eval.engine.run", "glm_eval.analysis.report", "glm_eval.compare"} <= set(found)
    upward = []
    for module, path in found.items():
        own, rank = layer(module)
        for target in imported(path, module):
            if target == "glm_eval":
                upward.append(f"{module} → glm_eval")
                continue
            assert target in found or target.rpartition(".")[0] in found, f"{module} imports missing {target}"
            other, other_rank = layer(target)
            if other != own and other_rank >= rank:
                upward.append(f"{module} → {target}")
    assert upward == []


def test_analysis_imports_neither_torch_nor_the_engine():
    code = ("import sys, glm_eval.analysis.compare, glm_eval.analysis.report, glm_eval.analysis.grid\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')"
            " or m.startswith(('glm_eval.engine', 'glm_eval.backends', 'glm_eval.tasks')))\n"
            "print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_built_wheel_runs_from_an_unrelated_folder(tmp_path, data_dir):
    """`pip install .` (not editable): configs, task modules, LongBench prompt files and report assets are inside
    the distribution, no top-level `tasks` is installed, and the commands run from any folder."""
    wheels, source = tmp_path / "wheels", tmp_path / "source"  # a clean copy: no build/ left by an earlier build
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "results", "build", "report", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = wheels.glob("glm_eval-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)  # the dependencies come from this environment
    python = str(env_dir / "bin" / "python")
    target = env_dir / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["glm_eval"]
    for shipped in ("configs/config.yaml", "configs/task/longbench/trec.yaml", "tasks/gsm8k.py",
                    "tasks/longbench_config/dataset2prompt.json", "analysis/report_assets/viewer.js"):
        assert (target / "glm_eval" / shipped).exists(), shipped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "GLM_EVAL_DATA": str(data_dir)}

    def run(*args):
        return subprocess.run([python, *args], capture_output=True, text=True, cwd=elsewhere, env=env)
    where = run("-c", "import glm_eval, glm_eval.tasks; print(glm_eval.__file__, glm_eval.tasks.__file__)")
    assert where.stdout.count(str(target)) == 2, where.stdout + where.stderr
    done = run("-m", "glm_eval", "task=gsm8k", "model=smollm2-135m-instruct", "limit=2", "gen.max_new_tokens=16",
               "progress=false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (elsewhere / "results" / "smollm2-135m-instruct" / "gsm8k" / "samples.jsonl").exists()
    for command in ("compare", "report", "rescore", "convert", "serve"):  # every entry point, one line on bad input
        refused = run("-m", f"glm_eval.{command}", "bogus_option=1")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, (command, refused.stderr)
        assert refused.stderr.startswith("error: "), (command, refused.stderr)
