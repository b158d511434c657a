"""BIG-Bench Hard: 27 hard BIG-Bench tasks (Suzgun et al. 2022), 6,511 examples.

Data: HF `lukaemon/bbh` (one config per subtask) or `bbh/bbh/<task>.json` ({"examples": [{input, target}]});
the chain-of-thought exemplars are the official `cot-prompts/<task>.txt` (3 shots each; read from
`bbh/cot-prompts/`, a sibling of the data folder, in both cases).
Protocol (ChatGLM3 README grid, 66.1 for ChatGLM3-6B-Base: 3-shot; ChatGLM2-Base was scored with these
prompts): the official prompt (task description + 3 CoT exemplars, canary header dropped), then
"\n\nQ: {input}\nA: Let's think step by step." Greedy, up to 512 new tokens. `task.shots=0` drops the
exemplars (zero-shot CoT: "Q: {input}\nA: Let's think step by step."); a subtask's prompt is one fixed prefix of
all its questions, computed once by the HF backend.
Stops: "\n\nQ:" (the next exemplar) and EOS only. lm-eval's bare "Q" stop cuts any reasoning that contains a
capital Q ("Queen", "Question"), and "\n\n" cuts reasoning with blank lines: neither is used.
Extraction: the text after the last "the answer is" (case-insensitive), trimmed of trailing punctuation,
quotes and markdown; matched case-insensitively with "(A)" = "A" for option targets (glm_eval/scoring/answers.py).
Averaging: headline macro (the unweighted mean of the 27 subtasks, as the BBH paper and OpenCompass);
micro (per example, lm-eval's) and every subtask are reported too.
"""
from __future__ import annotations

import json
from pathlib import Path

from glm_eval.core.errors import UserError
from glm_eval.core.averaging import Average, Averaging
from glm_eval.core.files import file_sha256
from glm_eval.tasks.base import Task

SUBTASKS = ["boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
            "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
            "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
            "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
            "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
            "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
            "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
            "word_sorting"]


class BBH(Task):
    title = "BBH"
    averaging = Averaging(Average.macro)
    shot_choices = (3, 0)  # the official prompts' 3 exemplars, or none
    prompt_dir: Path | None = None

    def local_rows(self, path: Path):
        rows, bad, digest = [], [], {}
        self.prompt_dir = path.parent / "cot-prompts"
        for subtask in SUBTASKS:
            file = path / f"{subtask}.json"
            if not file.exists():
                bad.append(f"{file} missing")
                continue
            digest[file.name] = file_sha256(file)
            try:
                examples = json.loads(file.read_text(encoding="utf-8"))["examples"]
            except (ValueError, KeyError) as e:
                bad.append(f"{file.name}: {e}")
                continue
            rows += [{**e, "subject": subtask} if isinstance(e, dict) else None for e in examples]
        return rows, bad, digest

    def hub_rows(self, split: str):
        return self.hub_rows_per_config(SUBTASKS, split)

    def parse(self, row: dict) -> dict | None:
        if not isinstance(row.get("input"), str) or not isinstance(row.get("target"), str):
            return None
        return {"input": row["input"], "gold": row["target"], "subject": row["subject"]}

    def exemplars(self, subtask: str) -> str:
        """The official CoT prompt without its canary line and "-----" separator."""
        if self.prompt_dir is None or not (self.prompt_dir / f"{subtask}.txt").exists():
            raise UserError(f"BBH: the official cot-prompts/{subtask}.txt is needed; pass data_dir=<folder holding "
                            f"bbh/bbh and bbh/cot-prompts> (the hub copy has no prompts)")
        text = (self.prompt_dir / f"{subtask}.txt").read_text(encoding="utf-8")
        return text.split("-----\n", 1)[-1].strip()

    def shots(self, doc: dict, data_dir: str | None) -> list[dict]:
        return []  # the exemplars are the official prompt's text (`exemplars`)

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        question = f"Q: {doc['input']}\nA:"
        return [], f"{self.exemplars(doc['subject'])}\n\n{question}" if self.cfg.shots else question

    def extract(self, output: str) -> str | None:
        from glm_eval.scoring.answers import extract_bbh_answer
        return extract_bbh_answer(output)

    def is_correct(self, extracted: str | None, gold: str) -> bool:
        from glm_eval.scoring.answers import bbh_match
        return bbh_match(extracted, gold)


TASK = BBH
