"""HumanEval: 164 hand-written Python functions to complete (Chen et al. 2021).

Data: HF `openai/openai_humaneval` (test) or `humaneval/HumanEval.jsonl.gz` (task_id, prompt, entry_point,
canonical_solution, test).
Protocol (not in the ChatGLM3 README grid; GLM-4's report gives ChatGLM3-6B-Base 58.5, protocol unpublished):
0-shot pass@1, greedy, 512 new tokens. Base models (raw prompts) continue the function signature and docstring,
stopping at a new top-level block ("\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint"), as in the Codex paper.
Chat models get "Complete the following Python function:\\n```python\\n{prompt}```" and their first fenced
block is taken (no stops: they would cut the block).
Execution: prompt + completion + the tests + check(entry_point) in the sandbox (glm_eval/scoring/sandbox.py: own process
and temp dir, 10 s, 1 GB, no network); a reply that redefines the function simply replaces the stub.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from glm_eval.core.config import GenConfig
from glm_eval.core.protocol import Request
from glm_eval.core.files import file_sha256
from glm_eval.tasks.code import CodeTask, extract_code

CODEX_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


class HumanEval(CodeTask):
    title = "HumanEval"

    def local_rows(self, path: Path):
        rows, bad = [], []
        with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    rows.append(json.loads(line)) if line.strip() else None
                except json.JSONDecodeError as e:
                    rows.append(None)
                    bad.append(f"{path.name}:{number}: {e.msg}")
        return rows, bad, {path.name: file_sha256(path)}

    def parse(self, row: dict) -> dict | None:
        if not all(isinstance(row.get(k), str) for k in ("prompt", "test", "entry_point")):
            return None
        return {"task_id": row.get("task_id"), "prompt": row["prompt"],
                "gold": {"prompt": row["prompt"], "test": row["test"], "entry_point": row["entry_point"]}}

    def requests(self, doc: dict, shots: list[dict], renderer, gen: GenConfig, stop: list[str]) -> list[Request]:
        if renderer.chat:
            prompt = renderer.render([], self.cfg.options["chat_template"].format(**doc))
            stops = list(stop)
        else:
            prompt = renderer.render([], doc["prompt"])
            stops = CODEX_STOPS + list(stop)
        return self.generation_requests(doc, prompt, gen, [*self.cfg.stop, *stops])

    def extract(self, output: str) -> str:
        return extract_code(output)

    def program(self, code: str, record: dict) -> str:
        gold = record["gold"]
        return f"{gold['prompt']}\n{code}\n\n{gold['test']}\n\ncheck({gold['entry_point']})\n"


TASK = HumanEval
