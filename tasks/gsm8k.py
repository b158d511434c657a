"""GSM8K: grade-school math word problems (Cobbe et al. 2021), test split, 1,319 problems.

Data: HF `openai/gsm8k` (config `main`) or `gsm8k/test.jsonl` from openai/grade-school-math; the gold
answer is the number after `####`.
Protocol (ChatGLM3 README grid, 72.3 for ChatGLM3-6B-Base): 0-shot chain of thought, greedy.
  Prompt: "Q: {question}\nA: Let's think step by step." (Kojima et al. zero-shot CoT; the same user text
  inside the chat template for chat models). `shots=k` adds k train exemplars, the first k for every problem
  (task.shot_sampling=fixed: one shared prefix, computed once) or drawn per problem (per_doc): the CoT trigger,
  the rationale without calculator annotations, then "The answer is N.".
  Stops: "\nQ:", "Question:", EOS; up to 512 new tokens (256 cuts off long chains).
Extraction, in this order, the last match of the first rule that matches:
  "the answer is N" → "#### N" → "\boxed{N}" → else the last number in the output.
  Thousands separators, "$" and trailing periods are dropped; numbers are compared exactly
  (Decimal: "18.00" equals "18").
Metric: accuracy over problems (exact match), with the standard error of the mean.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.tasks.base import Task

NUMBER = r"(?<![\d.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
RULES = [
    re.compile(r"answer is[^\d\n-]{0,16}?(" + NUMBER + ")", re.IGNORECASE),
    re.compile(r"####[^\d\n-]{0,4}(" + NUMBER + ")"),
    re.compile(r"\\boxed\{[^\d}-]{0,4}(" + NUMBER + ")"),
    re.compile("(" + NUMBER + ")"),
]
CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


def to_decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text.replace(",", "").replace("$", "").strip().rstrip("."))
    except InvalidOperation:
        return None


def extract_answer(output: str) -> str | None:
    for rule in RULES:
        found = rule.findall(output)
        if found:
            value = to_decimal(found[-1])
            return None if value is None else format(value.normalize(), "f")
    return None


class GSM8K(Task):
    title = "GSM8K"
    samples_scoring = SamplesScoring.majority

    def parse(self, row: dict) -> dict | None:
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str) or "####" not in answer:
            return None
        rationale, gold = answer.rsplit("####", 1)
        gold_value = to_decimal(gold)
        if gold_value is None:
            return None
        return {"question": question, "rationale": CALCULATOR_NOTE.sub("", rationale).strip(),
                "gold": format(gold_value.normalize(), "f")}

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        answer = "{prefix} {rationale} The answer is {gold}."
        pairs = [(self.cfg.template.format(**s), answer.format(prefix=self.cfg.gen_prefix, **s).strip()) for s in shots]
        return pairs, self.cfg.template.format(**doc)

    def extract(self, output: str) -> str | None:
        return extract_answer(output)

    def is_correct(self, extracted: str | None, gold: str) -> bool:
        value = to_decimal(extracted)
        return value is not None and value == to_decimal(gold)


TASK = GSM8K
