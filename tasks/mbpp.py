"""MBPP: mostly basic Python problems (Austin et al. 2021), the 500-problem test split (task_id 11–510).

Data: HF `google-research-datasets/mbpp` (config `full`, split test) or `mbpp/mbpp.jsonl` (all 974 problems;
the test split is selected by task_id). Fields: text, code, test_setup_code, test_list.
Protocol (ChatGLM3 README grid, 52.4 for ChatGLM3-6B-Base: 0-shot, tests executed, pass@1): the standard
prompt with the three tests shown (Austin et al.; lm-eval and OpenCompass without their exemplars):
  "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:
  \n\n{test 1}\n{test 2}\n{test 3}\n", then the reply opens with "[BEGIN]"; stop at "[DONE]"; greedy, 512 tokens.
Extraction: the first ```python block if present (chat models), else the text before "[DONE]".
Execution: test_setup_code + code + the asserts, in the sandbox (glm_eval/scoring/sandbox.py: own process and temp dir,
10 s wall clock, 1 GB memory, no network); pass@1 = all asserts pass.
"""
from __future__ import annotations

from glm_eval.tasks.code import CodeTask, extract_code

TEST_IDS = range(11, 511)


class MBPP(CodeTask):
    title = "MBPP"

    def local_rows(self, path):
        rows, bad, digest = super().local_rows(path)
        return [r for r in rows if r is None or r.get("task_id") in TEST_IDS], bad, digest

    def parse(self, row: dict) -> dict | None:
        tests = row.get("test_list")
        if not isinstance(row.get("text"), str) or not isinstance(tests, list) or not tests:
            return None
        return {"task_id": row.get("task_id"), "text": row["text"], "tests": "\n".join(tests),
                "gold": {"setup": row.get("test_setup_code") or "", "tests": tests}}

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        return [], self.cfg.template.format(**doc)

    def extract(self, output: str) -> str:
        return extract_code(output)

    def program(self, code: str, record: dict) -> str:
        gold = record["gold"]
        return f"{gold['setup']}\n{code}\n\n" + "\n".join(gold["tests"]) + "\n"


TASK = MBPP
