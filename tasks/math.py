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
Averaging: per problem (micro), with per-subject scores; macro over the 7 subjects reported too. Several samples
(`gen.samples=n`, sampled): avg@n as the headline, as reasoning models are published (glm-simple-evals runs
MATH-500 as avg@3), with maj@k, pass@k and the spread across seeds beside it.
"""
from __future__ import annotations

from glm_eval.core.protocol import Response
from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.tasks.base import Task

SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus"]


class MATH(Task):
    title = "MATH"
    samples_scoring = SamplesScoring.mean

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
