"""AIME 2024 and AIME 2025: the American Invitational Mathematics Examination, 30 problems a year (I-1..15,
II-1..15), each answer an integer from 0 to 999.

Data: `aime24/test.jsonl` (problem, answer as a string with leading zeros: "025") or the hub's
`HuggingFaceH4/aime_2024`;
`aime25/aime_2025_{I,II}/` in matharena's original layout (`problems/<n>.tex`, `answers.csv`; TikZ figures as given)
or the hub's `MathArena/aime_2025`.
Protocol (zai-org/glm-simple-evals' evals/math_eval.py, which produced the GLM-4.5+ numbers): one user turn,
"Solve the following math problem step by step. Put your answer inside \\boxed{}.\\n\\n{problem}\\n\\nRemember to put
your answer inside \\boxed{}."; the answer is the last \\boxed{} of the reply (of its answer, after any reasoning);
published as avg@32 with the model's sampling (gen.samples=32 gen.preset=model).
Equivalence: the boxed text as an integer equals the gold integer ("025" is 25); a boxed expression that is no plain
integer ("\\frac{50}{2}") goes to math-verify. With judge=<model config>, a boxed answer the rules call wrong goes to
the judge with simple-evals' equality prompt, as glm-simple-evals does (tasks/math.py).
Averaging: per problem; several samples give avg@n as the headline (maj@k, pass@k and the spread beside it).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from glm_eval.core.files import file_sha256
from glm_eval.core.protocol import Response
from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.scoring.judging import JudgedStep
from glm_eval.tasks.base import Task
from glm_eval.tasks.math import equivalence_step

INTEGER = re.compile(r"[+-]?\d+")


def as_integer(text: str | None) -> int | None:
    """A boxed answer as an integer: spaces, thousands commas, $…$, \\text{} and a trailing degree sign dropped."""
    if text is None:
        return None
    bare = re.sub(r"\\text\{([^}]*)\}|\\mathrm\{([^}]*)\}", r"\1\2", text)
    bare = re.sub(r"[\s$,]|\\[,!; ]|\^\{?\\circ\}?", "", bare)
    return int(bare) if INTEGER.fullmatch(bare) else None


class AIME(Task):
    title = "AIME"
    samples_scoring = SamplesScoring.mean
    shot_choices = (0,)  # the protocol has no exemplars

    @property
    def judged(self) -> JudgedStep:
        return equivalence_step(self.cfg.options)

    def local_rows(self, path: Path):
        if path.is_file():
            return super().local_rows(path)
        rows, bad, digest = [], [], {}
        for part in sorted(p for p in path.iterdir() if (p / "answers.csv").is_file()):  # aime_2025_I, aime_2025_II
            answers_file = part / "answers.csv"
            digest[f"{part.name}/answers.csv"] = file_sha256(answers_file)
            with open(answers_file, newline="", encoding="utf-8") as f:
                answers = {row.get("id"): row.get("answer") for row in csv.DictReader(f)}
            for number in sorted(answers, key=lambda n: int(n) if str(n).isdigit() else 0):
                tex = part / "problems" / f"{number}.tex"
                if not tex.is_file():
                    bad.append(f"{part.name}/problems/{number}.tex missing")
                    continue
                digest[f"{part.name}/problems/{number}.tex"] = file_sha256(tex)
                rows.append({"problem": tex.read_text(encoding="utf-8").strip(), "answer": answers[number],
                             "id": f"{part.name.rsplit('_', 1)[-1]}-{number}"})
        if not rows and not bad:
            bad.append(f"no aime_*/answers.csv under {path}")
        return rows, bad, digest

    def parse(self, row: dict) -> dict | None:
        problem = row.get("problem") or row.get("Problem") or row.get("question")
        gold = as_integer(str(row.get("answer", row.get("Answer", ""))).strip())
        if not isinstance(problem, str) or not problem.strip() or gold is None:
            return None
        return {"problem": problem, "gold": str(gold), "id": str(row.get("id", row.get("problem_idx", "")))}

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        return [], self.cfg.template.format(**doc)

    def extract(self, output: str) -> str | None:
        from glm_eval.scoring.answers import last_boxed
        return last_boxed(output)

    def score_all(self, answers: list[list[Response]], records: list[dict]) -> list[dict]:
        from glm_eval.scoring.answers import math_equal_many
        extracted = [self.extract(a[0].text) for a in answers]
        integers = [as_integer(e) for e in extracted]
        rest = [k for k, (e, n) in enumerate(zip(extracted, integers)) if e is not None and n is None]
        verified = dict(zip(rest, math_equal_many([(extracted[k], records[k]["gold"]) for k in rest])))
        return [{"extracted": e, "correct": (n == int(r["gold"])) if n is not None else verified.get(k, False)}
                for k, (e, n, r) in enumerate(zip(extracted, integers, records))]


TASK = AIME
