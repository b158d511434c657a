"""MATH: competition mathematics (Hendrycks et al. 2021), test split, 5,000 problems in 7 subjects;
`task=math500` is the 500-problem subset of Lightman et al. (PRM800K).

Data: HF `EleutherAI/hendrycks_math` (one config per subject) / `HuggingFaceH4/MATH-500`, or `math/test.jsonl`
(problem, level, type, solution) / `math/math500/test.jsonl` (problem, solution, answer, subject, level).
The gold answer is the last \\boxed{} of the reference solution (MATH-500 also gives it as `answer`).
Protocol (ChatGLM3 README grid, 25.7 for ChatGLM3-6B-Base): 0-shot chain of thought, greedy, up to 1,024 new
tokens. Prompt (OpenCompass math_0shot_gen / Qwen): "{problem}\nPlease reason step by step, and put your final
answer within \\boxed{}." — raw text for base models, the user turn for chat models. `shots=k` puts k train
problems with their reference solutions before it (task.shot_sampling: the first k, or drawn per problem); the
train split is on the hub or in a local `math/train.jsonl`, which ../shared/data does not hold.
Extraction: the last \\boxed{} of the output, else a "final answer is"/"answer is" sentence, else the last
$…$ span or number (glm_eval/scoring/answers.py).
Equivalence: normalised string match, else math-verify in a worker process with a 5 s timeout per answer.
Judge (judge=<model config>): where the rules call an extracted answer wrong (or cannot parse it), the judge is asked
whether it equals the gold with simple-evals' equality prompt, as glm-simple-evals asks Llama-3.1-70B-Instruct
(Expression 1 the gold, 2 the answer; temperature 0, 1,024 tokens); "Yes"/"No" as the reply's first word, anything
else unreadable (the rule verdict stands, counted). task.options.judge_reading=substring reads it as glm-simple-evals
does ("yes" anywhere in the reply: its protocol preset). No extracted answer is wrong, unasked (as there).
Averaging: per problem (micro), with per-subject scores; macro over the 7 subjects reported too. Several samples
(`gen.samples=n`, sampled): avg@n as the headline, as reasoning models are published (glm-simple-evals runs
MATH-500 as avg@3), with maj@k, pass@k and the spread across seeds beside it.
"""
from __future__ import annotations

import re

from glm_eval.core.errors import UserError
from glm_eval.core.protocol import Response
from glm_eval.scoring.judging import JudgedStep, JudgeWhen
from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.tasks.base import Task

# openai/simple-evals' EQUALITY_TEMPLATE, which zai-org/glm-simple-evals' evals/math_eval.py (@ db7fdc8) uses as is
EQUALITY = r"""Look at the following two expressions (answers to a math problem) and judge whether they are equivalent. Only perform trivial simplifications

Examples:

    Expression 1: $2x+3$
    Expression 2: $3+2x$

Yes

    Expression 1: 3/2
    Expression 2: 1.5

Yes

    Expression 1: $x^2+2x+1$
    Expression 2: $y^2+2y+1$

No

    Expression 1: $x^2+2x+1$
    Expression 2: $(x+1)^2$

Yes

    Expression 1: 3245/5
    Expression 2: 649

No
(these are actually equal, don't mark them equivalent if you need to do nontrivial simplifications)

    Expression 1: 2/(-3)
    Expression 2: -2/3

Yes
(trivial simplifications are allowed)

    Expression 1: 72 degrees
    Expression 2: 72

Yes
(give benefit of the doubt to units)

    Expression 1: 64
    Expression 2: 64 square feet

Yes
(give benefit of the doubt to units)

---

YOUR TASK


Respond with only "Yes" or "No" (without quotes). Do not include a rationale.

    Expression 1: %(expression1)s
    Expression 2: %(expression2)s"""
FIRST_WORD = re.compile(r"\W*(yes|no)\b", re.IGNORECASE)


def equivalence_step(options) -> JudgedStep:
    """The judge's equivalence check, read as task.options.judge_reading says (first_word | substring)."""
    reading = str(options.get("judge_reading", "first_word"))
    if reading not in ("first_word", "substring"):
        raise UserError(f"task.options.judge_reading={reading}: first_word (Yes/No as the reply's first word, else "
                        f"unreadable) or substring (glm-simple-evals: \"yes\" anywhere)")

    def ask(record: dict, answer: str, verdict: dict) -> list[tuple[str, str]]:
        return [("user", EQUALITY % {"expression1": record["gold"], "expression2": verdict["extracted"]})]

    def read(reply: str, record: dict, verdict: dict) -> dict | None:
        if reading == "substring":
            return {"correct": "yes" in reply.lower()}
        found = FIRST_WORD.match(reply[:200])
        return {"correct": found.group(1).lower() == "yes"} if found else None

    return JudgedStep("equivalence", f"simple-evals-equality-1/{reading}", JudgeWhen.rule_wrong, ask, read,
                      max_new_tokens=1024)

SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus"]


class MATH(Task):
    title = "MATH"
    samples_scoring = SamplesScoring.mean

    @property
    def judged(self) -> JudgedStep:
        return equivalence_step(self.cfg.options)

    def hub_rows(self, split: str):
        if self.cfg.dataset_config:  # a single-config dataset such as MATH-500
            return super().hub_rows(split)
        return self.hub_rows_per_config(SUBJECTS, split, tag=None)  # rows carry their own `type`

    def parse(self, row: dict) -> dict | None:
        from glm_eval.scoring.answers import last_boxed
        problem, solution = row.get("problem"), row.get("solution")
        gold = row.get("answer") or (last_boxed(solution) if isinstance(solution, str) else None)
        if not isinstance(problem, str) or not gold:
            return None
        subject = str(row.get("type") or row.get("subject") or "unknown")
        return {"problem": problem, "gold": gold, "subject": subject, "level": row.get("level"),
                "solution": solution}

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        return [(self.cfg.template.format(**s), s["solution"]) for s in shots], self.cfg.template.format(**doc)

    def extract(self, output: str) -> str | None:
        from glm_eval.scoring.answers import extract_math_answer
        return extract_math_answer(output)

    def score_all(self, answers: list[list[Response]], records: list[dict]) -> list[dict]:
        from glm_eval.scoring.answers import math_equal_many
        extracted = [self.extract(a[0].text) for a in answers]
        verdicts = math_equal_many(list(zip(extracted, [r["gold"] for r in records])))
        return [{"extracted": e, "correct": v} for e, v in zip(extracted, verdicts)]


TASK = MATH
