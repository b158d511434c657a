"""GPQA-Diamond: 198 graduate-level multiple-choice questions in biology, physics and chemistry (Rein et al. 2023),
the subset both expert validators answered correctly.

Data: `gpqa/gpqa_diamond.csv` (the authors' release: `Question`, `Correct Answer`, `Incorrect Answer 1..3`,
`High-level domain`, `Record ID`) or the hub's `Idavidrein/gpqa` (config `gpqa_diamond`, split `train`). The hub copy
is gated: accept its terms and log in (`huggingface-cli login`), or download the CSV once and pass
data_dir=<folder holding gpqa/gpqa_diamond.csv>.
Protocol (zai-org/glm-simple-evals' evals/gpqa_eval.py, which produced the GLM-4.5+ numbers): one user turn asking for
a last line "ANSWER: $LETTER", the question and the four options as "A) …"; the answer is the first
`(?i)ANSWER\\s*:\\s*([A-D])` in the reply's last 1,024 characters; published as avg@8 with the model's sampling
(the task's default: task.samples=8, task.preset=model).
Option order: the correct answer is always its own column, so the four are shuffled per document *and* sample.
  task.options.permutation=record (default): sample k of a question shows the order random.Random("gpqa:<Record
  ID>:<k>").sample(range(4), 4) draws: the same letters for every model, seed, rank count and resumption, so runs
  compare question by question.
  =simple-evals: simple-evals' (and glm-simple-evals') own draws, one random.Random(0) over the file's rows repeated
  n times (sample k of row i takes draw k·198 + i), to reproduce a published run's prompts exactly.
Judge (judge=<model config>): a reply with no ANSWER line goes to the judge with glm-simple-evals' choice-extraction
prompt (common.py: the question, the reply's last 5 non-empty lines of its last 1,024 characters, or their last
\\boxed{}); its "<CHOICE>: X" reply gives the letter. A judge that names no letter leaves the answer wrong, counted
(judge.unreadable). protocol=glm-simple-evals reproduces their published recipe (--auto_extract_answer): the bare
question (QUERY_TEMPLATE_RAW), every reply read by the judge (options.judge_all), and a random letter where it names
none (options.guess: seeded here per question and sample, and marked `guessed`).
Averaging: micro over all samples of all questions (avg@n), per high-level domain beside it.
"""
from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from glm_eval.core.errors import UserError, first_line
from glm_eval.core.files import file_sha256
from glm_eval.core.protocol import Response
from glm_eval.scoring.judging import JudgedStep
from glm_eval.scoring.sampling import SamplesScoring
from glm_eval.tasks.base import Task
from glm_eval.tasks.choice import TAIL, letter_step

COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
ANSWER = re.compile(r"(?i)ANSWER\s*:\s*([A-D])")


class GPQA(Task):
    title = "GPQA-Diamond"
    samples_scoring = SamplesScoring.mean
    shot_choices = (0,)
    record_fields = ("gold", "record_id", "row", "rows", "question", "options")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rule = str(cfg.options.get("permutation", "record"))
        if self.rule not in ("record", "simple-evals"):
            raise UserError(f"task.options.permutation={self.rule}: GPQA shuffles its options by `record` (per "
                            f"question and sample) or `simple-evals` (simple-evals' own draws)")

    def local_rows(self, path: Path):
        try:
            with open(path, newline="", encoding="utf-8") as f:  # fields hold newlines: a real CSV parser
                rows = list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as e:  # not the authors' UTF-8 CSV
            raise UserError(f"{self.title}: {path} is not a readable UTF-8 CSV ({first_line(e, 120)}); use the "
                            f"authors' gpqa_diamond.csv") from e
        return rows, [], {path.name: file_sha256(path)}

    def documents(self, data_dir):
        documents = super().documents(data_dir)
        for doc in documents.docs:  # simple-evals' draws are numbered by row within the whole file
            doc["row"], doc["rows"] = doc["doc_id"], len(documents.docs)
        return documents

    def parse(self, row: dict) -> dict | None:
        options = [row.get(c) for c in COLUMNS]
        if not isinstance(row.get("Question"), str) or not all(isinstance(o, str) and o.strip() for o in options):
            return None
        return {"question": row["Question"], "options": options, "gold": "Correct Answer",
                "record_id": str(row.get("Record ID") or row["Question"][:64]), "subject": row.get("High-level domain")
                or "unknown"}

    def permutation(self, record: dict, sample: int) -> list[int]:
        """The columns shown as A-D in sample `sample` of a question (COLUMNS[0], the correct one, is at the
        position holding 0)."""
        if self.rule == "simple-evals":
            draws = _simple_evals_draws(record["rows"] * (sample + 1))
            return draws[sample * record["rows"] + record["row"]]
        return random.Random(f"gpqa:{record['record_id']}:{sample}").sample(range(4), 4)

    @property
    def judged(self) -> JudgedStep:
        def vote(record: dict, letter: str) -> str:  # the column a letter names in this sample's order
            return COLUMNS[self.permutation(record, record.get("sample_index", 0))["ABCD".index(letter)]]
        return letter_step(lambda r: self.question(r, r.get("sample_index", 0)), lambda r: "ABCD", self.cfg.options,
                           vote)

    def question(self, doc: dict, sample: int) -> str:
        options = {letter: doc["options"][column] for letter, column in zip("ABCD", self.permutation(doc, sample))}
        return self.cfg.template.format(question=doc["question"], **options)

    def requests(self, doc: dict, shots: list[dict], renderer, gen, stop: list[str]):
        prompts = [renderer.render([], self.question(doc, k), self.cfg.gen_prefix) for k in range(gen.samples or 1)]
        return self.generation_requests(doc, prompts, gen, [*self.cfg.stop, *stop])

    def extract(self, output: str) -> str | None:
        found = ANSWER.search(output[-TAIL:])
        return found.group(1).upper() if found else None

    def score(self, answers: list[Response], record: dict) -> dict:
        row, rows = record.get("row"), record.get("rows")
        if not (isinstance(row, int) and isinstance(rows, int) and 0 <= row < rows <= 100_000):  # an edited record
            return {"scoring_error": f"record {record.get('doc_id')}: row {row!r} of {rows!r} names no question's "
                                     f"option order"}
        order = self.permutation(record, record.get("sample_index", 0))
        gold = "ABCD"[order.index(0)]
        extracted = self.extract(answers[0].text)
        # the sample's answer as a column, so samples with different option orders vote together (maj@k)
        vote = COLUMNS[order["ABCD".index(extracted)]] if extracted else None
        return {"extracted": extracted, "gold": gold, "vote": vote, "correct": extracted == gold}


_DRAWS: list[list[int]] = []
_RNG = random.Random(0)


def _simple_evals_draws(count: int) -> list[list[int]]:
    """The first `count` permutations simple-evals draws: rng = random.Random(0), then rng.sample(range(4), 4) for
    each row of the examples repeated n times, in order (openai/simple-evals gpqa_eval.py)."""
    while len(_DRAWS) < count:
        _DRAWS.append(_RNG.sample(range(4), 4))
    return _DRAWS


TASK = GPQA
