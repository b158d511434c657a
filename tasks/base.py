"""What every task shares: loading its data (hub or local files), deterministic few-shot selection, and the
request/score contract the engine calls. A task module subclasses `Task` and reads like the benchmark's
protocol: data → prompt → extraction → metric."""
from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from glm_eval.core.averaging import Averaging
from glm_eval.core.config import GenConfig, ShotSampling, TaskConfig, decoding
from glm_eval.core.errors import UserError, first_line
from glm_eval.core.files import data_root, file_sha256, read_jsonl
from glm_eval.core.protocol import GenerationRequest, Request, Response
from glm_eval.scoring.judging import JudgedStep
from glm_eval.scoring.sampling import SamplesScoring, combine


@dataclass
class Documents:
    docs: list[dict]
    source: str  # where they came from: a local file or an HF dataset id
    malformed: int = 0  # rows that could not be used (counted, reported, never silently dropped)
    malformed_examples: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)  # data file → sha256 (or HF fingerprint)


def sample_seed(run_seed: int, doc_id: int, sample: int) -> int:
    """A sample's own seed from (run seed, document, sample index): runs with neighbouring seeds share no samples (a
    sum would: seed 1 of document 2 is seed 2 of document 1)."""
    digest = hashlib.sha256(f"{run_seed}:{doc_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: every engine takes it


def load_hub_dataset(title: str, cfg: TaskConfig, config_name: str | None, split: str, dataset: str | None = None):
    """datasets.load_dataset (of cfg.dataset unless `dataset` is given) with one clear line when the hub (or the
    id) is not reachable."""
    dataset = dataset or cfg.dataset
    try:
        import datasets
        import huggingface_hub
        datasets.logging.set_verbosity_error()  # their retry warnings would bury our one-line error
        huggingface_hub.utils.logging.set_verbosity_error()
        return datasets.load_dataset(dataset, config_name, split=split, revision=cfg.revision)
    except Exception as e:  # offline, unknown id, broken cache: one line with both fixes
        raise UserError(f"{title}: cannot load {dataset} from the Hugging Face hub ({first_line(e, 160)}); "
                        f"either pass data_dir=<folder holding {cfg.local_file}> (or set GLM_EVAL_DATA), "
                        f"or make the hub reachable") from e


class Task:
    """Base class. Subclasses set `title` and implement `parse`, `prompt`, `extract`, `is_correct`.

    A document may carry `subject` (a subtask) and `category` (a group of subjects); the score is then reported
    per subject and category, micro (per question) and macro (mean of subjects), and `averaging` declares which
    one is the task's score (glm_eval/core/averaging.py)."""

    title = "task"
    averaging = Averaging()  # micro
    samples_scoring: SamplesScoring | None = None  # how gen.samples > 1 is scored; None: the task refuses it
    metric = "accuracy"
    scale = 100  # the grid and report show score × scale (a share as %; AlignBench's 1-10 rating as it is)
    multiple_choice = False
    record_fields: tuple[str, ...] = ("gold",)  # document fields copied into records: all that scoring reads
    limit_per_subject = False  # `limit=N`: the first N documents of each subject instead of the first N overall
    limit_field = "subject"  # the document field whose values limit_per_subject counts by
    prompt_excerpt: int | None = None  # records keep this many characters from each end of a long prompt
    shot_choices: tuple[int, ...] | None = None  # the task.shots it takes (None: any k, from the shot split)
    counts_tokens = False  # its prompts are cut to a token budget, so an endpoint needs model.tokenizer
    # the verdict of a reply with no answer (cut off inside its reasoning): wrong, and the task never sees it
    no_answer: dict = {"extracted": None, "correct": False}
    # what a judge model (judge=<model config>) may decide after the rules (scoring/judging.py); None: nothing
    judged: JudgedStep | None = None
    judge_required = False  # the judge is the metric (AlignBench): a run without judge= is refused

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self._shot_pool: list[dict] | None = None

    # ---- data --------------------------------------------------------------------------------------------
    def parse(self, row: dict) -> dict | None:
        """A raw row → the document the task uses (with a `gold`), or None when the row is malformed."""
        raise NotImplementedError

    def _load(self, data_dir: str | None, local_file: str, split: str) -> Documents:
        root = data_root(data_dir)
        if root is not None:
            path = root / local_file
            if not path.exists():
                raise UserError(f"{self.title}: {path} not found; data_dir (or GLM_EVAL_DATA) must point at a "
                                f"folder laid out like ../shared/data (holding {local_file})")
            rows, bad, names = self.local_rows(path)
            # files by their path under the data root (a single-file task: its local_file)
            digest = {(os.path.normpath(f"{local_file}/{k}") if path.is_dir() else local_file): v
                      for k, v in names.items()}
            source = str(path)
        else:
            rows, source, digest = self.hub_rows(split)
            bad = []
        docs = []
        for number, row in enumerate(rows):
            doc = self.parse(row) if row is not None else None
            if doc is None:
                if row is not None:
                    where = row.get("subject") or row.get("subset") or ""
                    bad.append(f"row {number}{f' ({where})' if where else ''}: missing or unusable fields "
                               f"{sorted(row)[:6]}")
                continue
            doc["doc_id"] = len(docs)
            docs.append(doc)
        if not docs:  # a run of n=0 would write a score of nothing
            raise UserError(f"{self.title}: no usable documents in {source}"
                            + (f" ({len(bad)} malformed rows, e.g. {bad[0]})" if bad else " (it is empty)"))
        return Documents(docs, source, malformed=len(bad), malformed_examples=bad[:5], sha256=digest)

    def local_rows(self, path: Path) -> tuple[list[dict | None], list[str], dict[str, str]]:
        """Rows of a local file or folder (None for an unreadable row), problems found, sha256 per file.
        Default: one JSON-lines file; tasks with other layouts (CSV per subject, JSON per subtask) override."""
        rows, bad = read_jsonl(path)
        return rows, bad, {path.name: file_sha256(path)}

    def hub_rows(self, split: str) -> tuple[list[dict], str, dict[str, str]]:
        """Rows from the HF hub: the task's dataset id and config; tasks split over many configs override."""
        ds = load_hub_dataset(self.title, self.cfg, self.cfg.dataset_config, split)
        return list(ds), f"hf:{self.cfg.dataset}/{self.cfg.dataset_config}/{split}", \
            {f"hf:{self.cfg.dataset}/{split}": ds._fingerprint}

    def hub_rows_per_config(self, configs: list[str], split: str, tag: str | None = "subject"):
        """Rows of one hub dataset split over many configs (one per subject), each tagged with its config."""
        rows, digest = [], {}
        for name in configs:
            ds = load_hub_dataset(self.title, self.cfg, name, split)
            rows += [{**r, tag: name} if tag else r for r in ds]
            digest[f"hf:{self.cfg.dataset}/{name}/{split}"] = ds._fingerprint
        return rows, f"hf:{self.cfg.dataset}/{split}", digest

    def documents(self, data_dir: str | None) -> Documents:
        return self._load(data_dir, self.cfg.local_file, self.cfg.split)

    def limit(self, docs: list[dict], limit: int | None) -> list[dict]:
        if limit is None:
            return docs
        if not self.limit_per_subject:
            return docs[:limit]
        taken = Counter()
        kept = []
        for doc in docs:
            taken[doc.get(self.limit_field)] += 1
            if taken[doc.get(self.limit_field)] <= limit:
                kept.append(doc)
        return kept

    def shots(self, doc: dict, data_dir: str | None) -> list[dict]:
        """k exemplars from the shot split: its first k for every document (shot_sampling=fixed), or drawn per
        document seeded by (shot_seed, doc_id) (per_doc). Either way the same prompt for a document whatever the
        batch size, document order or process count."""
        if self.cfg.shots <= 0:
            return []
        if self._shot_pool is None:
            self._shot_pool = self._load(data_dir, self.cfg.shot_local_file, self.cfg.shot_split).docs
        pool = self.shot_candidates(doc, self._shot_pool)
        if self.cfg.shot_sampling == ShotSampling.fixed:
            return pool[:self.cfg.shots]
        rng = random.Random(f"{self.cfg.shot_seed}:{doc['doc_id']}")
        return rng.sample(pool, min(self.cfg.shots, len(pool)))

    def shot_candidates(self, doc: dict, pool: list[dict]) -> list[dict]:
        """The exemplars a document may take, in the shot split's order (multiple choice: its subject's)."""
        return pool

    # ---- prompt, extraction, metric ------------------------------------------------------------------------
    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        """(few-shot (question, answer) pairs, final question) before the model's template is applied."""
        raise NotImplementedError

    def requests(self, doc: dict, shots: list[dict], renderer, gen: GenConfig, stop: list[str]) -> list[Request]:
        pairs, question = self.prompt(doc, shots)
        return self.generation_requests(doc, renderer.render(pairs, question, self.cfg.gen_prefix), gen,
                                        [*self.cfg.stop, *stop])

    def generation_requests(self, doc: dict, prompt, gen: GenConfig, stop: list[str],
                            max_new_tokens: int | None = None, min_new_tokens: int = 0) -> list[GenerationRequest]:
        """gen.samples requests for one prompt (or for a list of prompts, one per sample: GPQA's shuffled options),
        each sample seeded by (gen.seed, document, sample index) when sampling (outputs independent of batching, ranks
        and resumption); greedy requests carry no seed, so the same prompt is the same cached request in any
        subset."""
        sampling = decoding(gen)
        samples = gen.samples or 1  # unset outside a run (the engine settles it first: settle_generation)
        prompts = prompt if isinstance(prompt, list) else [prompt] * samples
        return [GenerationRequest(prompt=prompts[k], max_new_tokens=gen.max_new_tokens or max_new_tokens
                                  or self.cfg.max_new_tokens, stop=tuple(dict.fromkeys(stop)), **sampling,
                                  seed=sample_seed(gen.seed, doc["doc_id"], k) if sampling["temperature"] > 0 else 0,
                                  sample_index=k, min_new_tokens=min_new_tokens)
                for k in range(samples)]

    def extract(self, output: str) -> str | None:
        raise NotImplementedError

    def is_correct(self, extracted: str | None, gold) -> bool:
        raise NotImplementedError

    def score(self, answers: list[Response], record: dict) -> dict:
        """Verdict fields for one document from its response and its record (which holds `record_fields`; on
        rescore the responses are rebuilt from the record)."""
        extracted = self.extract(answers[0].text)
        return {"extracted": extracted, "correct": self.is_correct(extracted, record["gold"])}

    def aggregate(self, records: list[dict]) -> dict:
        """Task-specific fields of metrics.json from the scored records, besides the declared averages."""
        return {}

    def score_all(self, answers: list[list[Response]], records: list[dict]) -> list[dict]:
        """All documents at once, one response each; tasks whose scoring runs programs or workers override it to
        run in parallel."""
        return [self.score(a, r) for a, r in zip(answers, records)]

    def score_documents(self, answers: list[list[Response | None]], records: list[dict], judge=None) -> list[dict]:
        """Verdict fields per document. A document with several samples has each scored on its own, judged where
        `judged` says and a judge is given (`judge(step, [(sample record, answer, verdict)])` updates the verdicts),
        then combined as `samples_scoring` declares (avg@n, majority vote or pass@k: glm_eval/scoring/sampling.py).
        A None answer is a reply that gave none (cut off inside its reasoning): `no_answer`, without asking the task
        or the judge."""
        flat = [(d, j, [response]) for d, responses in enumerate(answers) for j, response in enumerate(responses)]
        live = [k for k, (_, _, a) in enumerate(flat) if a[0] is not None]
        verdicts = [dict(self.no_answer) for _ in flat]
        # each sample's record carries its sample index: a task whose samples differ (GPQA) scores each on its own
        sample_records = [{**records[flat[k][0]], "sample_index": flat[k][1]} for k in live]
        for k, verdict in zip(live, self.score_all([flat[k][2] for k in live], sample_records)):
            verdicts[k] = verdict
        if judge is not None and self.judged is not None:
            judge(self.judged, [(r, flat[k][2][0].text, verdicts[k]) for k, r in zip(live, sample_records)])
        if all(len(a) <= 1 for a in answers):
            return verdicts
        per_document: list[list[dict]] = [[] for _ in answers]
        for (d, _, _), verdict in zip(flat, verdicts):
            per_document[d].append(verdict)
        return [combine(self.samples_scoring, v) for v in per_document]
