"""IFEval: 541 prompts carrying 834 verifiable instructions of 25 types ("answer in at least 300 words", "wrap the
whole reply in double quotes", "no commas"), Zhou et al. 2023.

Data: `ifeval/input_data.jsonl` (Google's current revision: key, prompt, instruction_id_list, kwargs) or the hub's
`google/IFEval` (split train; its kwargs are padded with None, which is dropped). Key 2785's prompt changed between
Google's two revisions ("at least one placeholder" → "at least 3 placeholders"); its kwargs and so its verdicts did
not, and records carry the prompt that was sent.
Protocol (Google's instruction_following_eval, as the GLM cards report it): the prompt as the only user turn, one
reply, checked by Google's own checker (glm_eval/scoring/ifeval.py): strict and loose, per instruction. The headline
is prompt-level strict (every instruction of the prompt followed), the number GLM-4.5 (86.1) and GLM-Z1 (81.9, 84.5)
publish; prompt-level loose and instruction-level strict / loose are beside it.
Averaging: micro over prompts (instruction level: over the instructions of all prompts).
"""
from __future__ import annotations

from glm_eval.core.protocol import Response
from glm_eval.tasks.base import Task


class IFEval(Task):
    title = "IFEval"
    metric = "prompt-level strict accuracy"
    shot_choices = (0,)
    record_fields = ("gold", "key", "instruction_ids", "kwargs", "question")

    def __init__(self, cfg):
        super().__init__(cfg)
        from glm_eval.scoring.ifeval import registry
        self.known = registry()  # before any model loads: a missing checker is one line

    def parse(self, row: dict) -> dict | None:
        ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
        if not isinstance(row.get("prompt"), str) or not isinstance(ids, list) or not ids or \
                not isinstance(kwargs, list) or len(kwargs) != len(ids) or \
                not all(isinstance(i, str) and i in self.known for i in ids) or \
                not all(k is None or isinstance(k, dict) for k in kwargs):
            return None
        return {"question": row["prompt"], "key": row.get("key"), "instruction_ids": ids, "kwargs": kwargs,
                "gold": f"{len(ids)} instruction{'s' if len(ids) > 1 else ''}"}

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        return [], doc["question"]

    def score(self, answers: list[Response], record: dict) -> dict:
        from glm_eval.scoring.ifeval import check_instructions
        try:
            strict, loose = check_instructions(record["key"], record["question"], answers[0].text,
                                               record["instruction_ids"], record["kwargs"])
        except Exception as e:  # noqa: BLE001 - the reference checker failing is a failed check, not a wrong reply
            return {"scoring_error": f"IFEval checker: {type(e).__name__}: {str(e)[:200]}"}
        return {"strict": strict, "loose": loose, "correct": all(strict)}

    def aggregate(self, records: list[dict]) -> dict:
        # a reply with no answer (cut off inside its reasoning) followed none of its instructions
        def verdicts(record: dict, key: str) -> list[bool]:
            given, ids = record.get(key), record.get("instruction_ids")
            if isinstance(given, list):
                return [v is True for v in given]
            return [False] * (len(ids) if isinstance(ids, list) else 1)
        strict, loose = [verdicts(r, "strict") for r in records], [verdicts(r, "loose") for r in records]

        def share(values: list[bool]) -> float:
            return sum(values) / len(values) if values else 0.0
        return {"prompt_strict": share([all(v) for v in strict]), "prompt_loose": share([all(v) for v in loose]),
                "instruction_strict": share([v for r in strict for v in r]),
                "instruction_loose": share([v for r in loose for v in r])}


TASK = IFEval
