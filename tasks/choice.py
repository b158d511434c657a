"""Multiple-choice tasks (MMLU, C-Eval, CMMLU, AGIEval's choice subsets) and their scoring modes, chosen per run
with `task.choice_scoring=`:

- logits (default): one forward per question and the next-token logits of the choice letters right after the
  answer cue, as THUDM's C-Eval script does. A letter is the one token writing " X": " X" in byte-level BPE
  vocabularies, "▁X" in SentencePiece ones (ChatGLM: 316, 347, 319, 367). Chat models get the question in the user
  turn and the letters are read where the reply's content starts.
- loglik: the log-likelihood of each option's continuation " X" after the shared context, computed once (lm-eval's
  way; with ChatGLM's SentencePiece model " A" is two tokens, "▁▁" "A").
- generate: greedy generation, then the letter is read from the text (endpoints without logits).

Multi-answer questions (AGIEval jec-qa, part of gaokao-physics): in the logit modes a question counts as right when
the best letter is one of its answers (lm-eval's rule); in generate mode the extracted letters must equal the set.

A judge model reads the letter out of a generated reply where a task's rules find none (GPQA, MMLU-Pro: `letter_step`,
glm-simple-evals' choice-extraction prompt).
"""
from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from glm_eval.core.config import ChoiceScoring, GenConfig
from glm_eval.core.protocol import LoglikelihoodRequest, Request, Response
from glm_eval.core.files import file_sha256
from glm_eval.scoring.judging import JudgedStep, JudgeWhen
from glm_eval.tasks.base import Task

TAIL = 1024  # glm-simple-evals reads only a reply's last 1,024 characters (GPQA)


def options_block(options: list[str], letters: str) -> str:
    return "".join(f"\n{letter}. {option}" for letter, option in zip(letters, options))


def read_subject_csvs(folder: Path, suffix: str = "") -> tuple[list[dict | None], list[str], dict[str, str]]:
    """Every `<subject><suffix>.csv` in a folder, each row tagged with its subject (the layout of MMLU, C-Eval
    and CMMLU in ../shared/data)."""
    rows, bad, digest = [], [], {}
    for path in sorted(folder.glob(f"*{suffix}.csv")):
        subject = path.name[:-len(f"{suffix}.csv")]
        digest[path.name] = file_sha256(path)
        with open(path, encoding="utf-8", newline="") as f:
            for number, row in enumerate(csv.DictReader(f), 2):
                if None in row or any(v is None for v in row.values()):  # ragged line
                    bad.append(f"{path.name}:{number}: wrong number of fields")
                    rows.append(None)
                else:
                    rows.append({**row, "subject": subject})
    if not rows:
        bad.append(f"no *{suffix}.csv files in {folder}")
    return rows, bad, digest


def letter_columns_doc(row: dict, question_key: str, answer_key: str, category) -> dict | None:
    """A four-option question stored as columns A-D with a letter answer (C-Eval, CMMLU)."""
    options = [row.get(k) for k in "ABCD"]
    answer = str(row.get(answer_key, "")).strip()
    if not row.get(question_key) or any(o is None for o in options) or answer not in set("ABCD"):
        return None
    return {"question": row[question_key], "options": [str(o) for o in options], "letters": "ABCD",
            "gold": answer, "subject": row["subject"], "category": category, "multi": False}


class MultipleChoiceTask(Task):
    """Subclasses parse rows into documents with `question`, `options`, `letters`, `gold` (the correct letters),
    `subject`, `category` and optionally `multi`, and build the prompt text ending with the answer cue."""

    multiple_choice = True
    record_fields = ("gold", "letters", "multi")
    description = ""  # a line before the questions; "{subject}" is filled in
    cue = "Answer:"

    def subject_name(self, subject: str) -> str:
        return subject.replace("_", " ")

    def question_text(self, doc: dict) -> str:
        return f"{doc['question'].strip()}{options_block(doc['options'], doc['letters'])}\n{self.cue}"

    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        head = self.description.format(subject=self.subject_name(doc["subject"]))
        pairs = [(self.question_text(s), s["gold"]) for s in shots]
        if pairs:
            pairs[0] = (head + pairs[0][0], pairs[0][1])
            return pairs, self.question_text(doc)
        return pairs, head + self.question_text(doc)

    def shot_candidates(self, doc: dict, pool: list[dict]) -> list[dict]:
        """The dev questions of the document's own subject: with shot_sampling=fixed its first k, the standard
        k-shot protocol."""
        return [s for s in pool if s["subject"] == doc["subject"]]

    def requests(self, doc: dict, shots: list[dict], renderer, gen: GenConfig, stop: list[str]) -> list[Request]:
        mode = ChoiceScoring(self.cfg.choice_scoring)
        if mode == ChoiceScoring.generate:
            return super().requests(doc, shots, renderer, gen, stop)
        pairs, question = self.prompt(doc, shots)
        prompt = renderer.render(pairs, question, "", open_reply=True)
        if mode == ChoiceScoring.logits:
            continuations = tuple((renderer.letter_token(letter),) for letter in doc["letters"])
        else:
            continuations = tuple(tuple(renderer.continuation_ids(" " + letter)) for letter in doc["letters"])
        return [LoglikelihoodRequest(prompt, continuations)]

    def score(self, answers: list[Response], record: dict) -> dict:
        gold, letters, answer = record["gold"], record["letters"], answers[0]
        if answer.logprobs:
            chosen = letters[max(range(len(letters)), key=answer.logprobs.__getitem__)]
            return {"extracted": chosen, "correct": chosen in gold}
        from glm_eval.scoring.answers import extract_choice
        chosen = extract_choice(answer.text, letters, multi=bool(record.get("multi")))
        return {"extracted": chosen, "correct": chosen == gold}


# zai-org/glm-simple-evals @ db7fdc8 evals/common.py: CHOICE_EXTRACTION_TEMPLATE (its trailing spaces kept)
CHOICE_EXTRACTION = """
We have a multiple-choice question with several choices (in ## Question). We also have an answer to this question (in ## Answer). Please determine which choice is selected based on the answer and the choices in the question.

## Question: 
{question}

## Answer: 
{answer}

Put the selected choice in the format of the following example: 

<CHOICE>: <your answer>

Example:
<CHOICE>: A
<CHOICE>: B
<CHOICE>: C
<CHOICE>: D
"""
BOXED = (re.compile(r"\\box\{([^{}]*(?:\{[^{}]*\})*[^{}]*)\}"), re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\})*[^{}]*)\}"))


def answer_lines(reply: str) -> str:
    """What glm-simple-evals shows its judge of a reply: the last 5 non-empty lines, or the last \\boxed{} in them."""
    text = "\n".join([line for line in reply.strip().split("\n") if line.strip()][-5:])
    if "\\box" in text:
        for pattern in BOXED:
            if found := pattern.findall(text):
                return found[-1].strip()
    return text


def letter_step(question_of, letters_of, options, vote_of=None) -> JudgedStep:
    """The judge's letter extraction: `question_of(record)` is the question as the model saw it (the user turn),
    `letters_of(record)` its options' letters, `vote_of(record, letter)` what the letter votes for where samples
    show the options in different orders (GPQA)."""
    always, guess = bool(options.get("judge_all", False)), bool(options.get("guess", False))

    def ask(record: dict, answer: str, verdict: dict) -> list[tuple[str, str]]:
        return [("user", CHOICE_EXTRACTION.format(question=question_of(record), answer=answer_lines(answer[-TAIL:])))]

    def read(reply: str, record: dict, verdict: dict) -> dict | None:
        gold = verdict.get("gold", record["gold"])
        letters = letters_of(record)
        letter = reply.replace("<CHOICE>: ", "").strip()[:1]
        guessed = not (letter and letter in letters)
        if guessed and not guess:
            return None
        if guessed:
            letter = random.Random(f"guess:{record['doc_id']}:{record.get('sample_index', 0)}").choice(letters)
        return {"extracted": letter, "correct": letter == gold, **({"guessed": True} if guessed else {}),
                **({"vote": vote_of(record, letter)} if vote_of else {})}

    return JudgedStep("letter", f"glm-simple-evals-choice-1{'/guess' if guess else ''}",
                      JudgeWhen.always if always else JudgeWhen.no_answer, ask, read, max_new_tokens=1024)
