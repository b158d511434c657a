"""What MBPP and HumanEval share: pulling the program out of a reply and running it in the sandbox."""
from __future__ import annotations

import re

from glm_eval.core.protocol import Response
from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.tasks.base import Task

FENCED = re.compile(r"```(?:[Pp]ython3?|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(output: str) -> str:
    """The first fenced code block if there is one (chat models), else the text up to "[DONE]"."""
    text = output.split("[DONE]", 1)[0]
    block = FENCED.search(text)
    return (block.group(1) if block else text).strip("\n")


class CodeTask(Task):
    shot_choices = (0,)  # its protocol has no exemplars
    metric = "pass@1"
    samples_scoring = SamplesScoring.pass_at_k

    def program(self, code: str, record: dict) -> str:
        raise NotImplementedError

    def score_all(self, answers: list[list[Response]], records: list[dict]) -> list[dict]:
        from glm_eval.scoring.sandbox import run_programs
        codes = [self.extract(a[0].text) for a in answers]
        outcomes = run_programs([self.program(c, r) for c, r in zip(codes, records)],
                                timeout=float(self.cfg.options.get("timeout", 10)),
                                memory_mb=int(self.cfg.options.get("memory_mb", 1024)))
        # A sandbox that could not run the program is a failed check, not a wrong program: it is left out of
        # the score (and retried by rescore), like a failed request.
        return [{"extracted": code, "scoring_error": f"sandbox: {o.detail}"} if o.status == "error" else
                {"extracted": code, "correct": o.status == "passed", "execution": o.status,
                 **({"execution_detail": o.detail[-300:]} if o.status != "passed" else {})}
                for code, o in zip(codes, outcomes)]
