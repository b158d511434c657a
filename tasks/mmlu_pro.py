"""MMLU-Pro: 12,032 harder, reasoning-focused multiple-choice questions with up to ten options (A-J) in 14
categories (Wang et al. 2024).

Data: `mmlu_pro/data/{test,validation}-00000-of-00001.parquet` or the hub's `TIGER-Lab/MMLU-Pro` (test; validation
holds five chain-of-thought exemplars per category in `cot_content`). Options "N/A" are dropped, as both reference
scripts do.
Protocol, by the kind of model (task.options.form=auto; or chat / cot):
  chat (models with a chat format): zai-org/glm-simple-evals' evals/mmlu_pro_eval.py, which produced the GLM-4.5
    numbers: 0-shot, one user turn "The following are multiple choice questions (with answers) about {category}.
    Think step by step and then output the answer in the format of \"The answer is (X)\" at the end.\\n\\n
    Question: …\\nOptions: A. …\\nB. …\\n"; "**" is removed from the reply before extraction.
  cot (base models, raw text): TIGER-AI-Lab's evaluate_from_local.py: its initial_prompt.txt header, the category's
    task.shots=5 validation exemplars "Question:\\n…\\nOptions:\\nA. …\\nAnswer: Let's think step by step. … The
    answer is (X).", the question ending "Answer: Let's think step by step."; stops at "Question:".
Extraction (both scripts): the first "answer is (X)", else the last "answer: X" of the first line having one, else
the last standalone letter A-J. Neither shortens a long prompt here (TIGER-AI-Lab drops exemplars past 2,048 tokens).
No answer is wrong: TIGER-AI-Lab's scripts count a random guess instead (seed 12345), glm-simple-evals scores 0.
Judge (judge=<model config>): a reply from which the three patterns read no letter goes to the judge with
glm-simple-evals' choice-extraction prompt, as GPQA's does (tasks/choice.py); glm-simple-evals itself judges no
MMLU-Pro reply, so its protocol preset asks none (task.options.judge=false).
Averaging: micro over all questions (both scripts), per category beside it.
"""
from __future__ import annotations

import re
from pathlib import Path

from glm_eval.core.errors import UserError
from glm_eval.core.files import file_sha256
from glm_eval.core.protocol import Response
from glm_eval.scoring.judging import JudgedStep
from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.tasks.base import Task
from glm_eval.tasks.choice import letter_step

LETTERS = "ABCDEFGHIJ"
CHAT_HEADER = ("The following are multiple choice questions (with answers) about {}. Think step by step and then "
               "output the answer in the format of \"The answer is (X)\" at the end.\n\n")
# TIGER-AI-Lab's cot_prompt_lib/initial_prompt.txt (ends in three newlines) plus the "\n" its code adds
COT_HEADER = ("The following are multiple choice questions (with answers) about {}. Think step by step and then "
              "finish your answer with \"the answer is (X)\" where X is the correct letter choice.\n\n\n\n")
FIRST = re.compile(r"answer is \(?([A-J])\)?")
SECOND = re.compile(r".*[aA]nswer:\s*([A-J])")
LAST = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)


def extract_letter(text: str) -> str | None:
    """The reference scripts' cascade, in order."""
    for pattern in (FIRST, SECOND):
        if found := pattern.search(text):
            return found.group(1)
    found = LAST.search(text)
    return found.group(0) if found else None


def cot_example(doc: dict, with_answer: bool) -> str:
    options = "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, doc["options"]))
    text = f"Question:\n{doc['question']}\nOptions:\n{options}"
    if not with_answer:
        return text + "Answer: Let's think step by step."
    return text + doc["cot"].replace("A: Let's think step by step.", "Answer: Let's think step by step.") + "\n\n"


class MMLUPro(Task):
    title = "MMLU-Pro"
    samples_scoring = SamplesScoring.mean
    shot_choices = None  # the cot form's exemplars: the category's first k of the validation split (k ≤ 5)
    record_fields = ("gold", "letters", "question", "options")

    def __init__(self, cfg):
        super().__init__(cfg)
        if str(cfg.options.get("form", "auto")) not in ("auto", "chat", "cot"):
            raise UserError(f"task.options.form={cfg.options.get('form')}: MMLU-Pro's forms are auto (chat for chat "
                            f"models, cot for base models), chat (glm-simple-evals, 0-shot) and cot (TIGER-AI-Lab, "
                            f"5-shot)")

    def local_rows(self, path: Path):
        import pandas as pd
        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - a truncated download or a Git LFS pointer: one line
            raise UserError(f"{self.title}: {path} is not a readable parquet file ({type(e).__name__}); fetch it "
                            f"again from TIGER-Lab/MMLU-Pro") from e
        return frame.to_dict("records"), [], {path.name: file_sha256(path)}

    def parse(self, row: dict) -> dict | None:
        given = row.get("options")
        if isinstance(given, (str, bytes, dict)) or not hasattr(given, "__iter__"):  # a list (parquet: an array)
            return None
        options = [str(o) for o in given if o != "N/A"]
        answer = str(row.get("answer", "")).strip()
        if not isinstance(row.get("question"), str) or not options or answer not in LETTERS[:len(options)]:
            return None
        return {"question": row["question"], "options": options, "gold": answer, "letters": LETTERS[:len(options)],
                "subject": str(row.get("category") or "other"), "cot": str(row.get("cot_content") or "")}

    def shot_candidates(self, doc: dict, pool: list[dict]) -> list[dict]:
        return [s for s in pool if s["subject"] == doc["subject"]]

    def form(self, renderer) -> str:
        """chat or cot; auto decided once by the model's prompt format and written back (config.yaml keeps it)."""
        if self.cfg.options.get("form", "auto") == "auto":
            self.cfg.options["form"] = "cot" if renderer.format == "raw" else "chat"
        return self.cfg.options["form"]

    @property
    def judged(self) -> JudgedStep | None:
        if not self.cfg.options.get("judge", True):
            return None
        return letter_step(self.chat_question, lambda r: r["letters"], self.cfg.options)

    def chat_question(self, doc: dict) -> str:
        options = "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, doc["options"]))
        return CHAT_HEADER.format(doc["subject"]) + f"Question: {doc['question']}\nOptions: {options}"

    def requests(self, doc: dict, shots: list[dict], renderer, gen, stop: list[str]):
        if self.form(renderer) == "chat":
            return self.generation_requests(doc, renderer.render([], self.chat_question(doc)), gen,
                                            [*self.cfg.stop, *stop])
        text = (COT_HEADER.format(doc["subject"]) + "".join(cot_example(s, True) for s in shots)
                + cot_example(doc, False))
        return self.generation_requests(doc, renderer.render([], text), gen, ["Question:", *self.cfg.stop, *stop])

    def extract(self, output: str) -> str | None:
        return extract_letter(output.replace("**", "") if self.cfg.options.get("form") == "chat" else output)

    def score(self, answers: list[Response], record: dict) -> dict:
        extracted = self.extract(answers[0].text)
        return {"extracted": extracted, "correct": extracted == record["gold"]}


TASK = MMLUPro
