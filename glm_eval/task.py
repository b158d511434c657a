"""What every task shares: loading its data (hub or local files), deterministic few-shot selection, and the
request/score contract the engine calls. A task module subclasses `Task` and reads like the benchmark's
protocol: data → prompt → extraction → metric."""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from glm_eval.config import GenConfig, TaskConfig
from glm_eval.errors import UserError
from glm_eval.protocol import GenerationRequest


@dataclass
class Documents:
    docs: list[dict]
    source: str  # where they came from: a local file or an HF dataset id
    malformed: int = 0  # rows that could not be used (counted, reported, never silently dropped)
    malformed_examples: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)  # data file → sha256 (or HF fingerprint)


def data_root(configured: str | None) -> Path | None:
    root = configured or os.environ.get("GLM_EVAL_DATA")
    return Path(root).expanduser() if root else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_jsonl(path: Path) -> tuple[list[dict | None], list[str]]:
    rows, bad = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append(row if isinstance(row, dict) else None)
            except json.JSONDecodeError as e:
                rows.append(None)
                bad.append(f"{path.name}:{number}: {e.msg}")
    return rows, bad


class Task:
    """Base class. Subclasses set `title` and implement `parse`, `prompt`, `extract`, `is_correct`."""

    title = "task"

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
            rows, bad = _read_jsonl(path)
            source, digest = str(path), {local_file: _sha256(path)}
        else:
            rows, bad, source, digest = self._load_hub(split)
        docs = []
        for number, row in enumerate(rows):
            doc = self.parse(row) if row is not None else None
            if doc is None:
                if row is not None:
                    bad.append(f"row {number}: missing or unusable fields {sorted(row)[:6]}")
                continue
            doc["doc_id"] = len(docs)
            docs.append(doc)
        return Documents(docs, source, malformed=len(bad), malformed_examples=bad[:5], sha256=digest)

    def _load_hub(self, split: str):
        try:
            import datasets
            import huggingface_hub
            datasets.logging.set_verbosity_error()  # their retry warnings would bury our one-line error
            huggingface_hub.utils.logging.set_verbosity_error()
            ds = datasets.load_dataset(self.cfg.dataset, self.cfg.dataset_config, split=split)
        except Exception as e:  # offline, unknown id, broken cache: one line with both fixes
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.title}: cannot load {self.cfg.dataset} from the Hugging Face hub ({reason}); "
                            f"either pass data_dir=<folder holding {self.cfg.local_file}> (or set GLM_EVAL_DATA), "
                            f"or make the hub reachable") from e
        return list(ds), [], f"hf:{self.cfg.dataset}/{self.cfg.dataset_config}/{split}", \
            {f"hf:{self.cfg.dataset}/{split}": ds._fingerprint}

    def documents(self, data_dir: str | None) -> Documents:
        return self._load(data_dir, self.cfg.local_file, self.cfg.split)

    def shots(self, doc: dict, data_dir: str | None) -> list[dict]:
        """k exemplars from the shot split, seeded by (shot_seed, doc_id): the same prompt for a document
        whatever the batch size, document order or process count."""
        if self.cfg.shots <= 0:
            return []
        if self._shot_pool is None:
            self._shot_pool = self._load(data_dir, self.cfg.shot_local_file, self.cfg.shot_split).docs
        rng = random.Random(f"{self.cfg.shot_seed}:{doc['doc_id']}")
        return rng.sample(self._shot_pool, min(self.cfg.shots, len(self._shot_pool)))

    # ---- prompt, extraction, metric ------------------------------------------------------------------------
    def prompt(self, doc: dict, shots: list[dict]) -> tuple[list[tuple[str, str]], str]:
        """(few-shot (question, answer) pairs, final question) before the model's template is applied."""
        raise NotImplementedError

    def requests(self, doc: dict, shots: list[dict], render, gen: GenConfig, stop: list[str]) -> list[GenerationRequest]:
        pairs, question = self.prompt(doc, shots)
        prompt = render(pairs, question, self.cfg.gen_prefix)
        return [GenerationRequest(prompt=prompt, max_new_tokens=gen.max_new_tokens or self.cfg.max_new_tokens,
                                  stop=tuple(dict.fromkeys([*self.cfg.stop, *stop])), temperature=gen.temperature,
                                  top_p=gen.top_p, seed=gen.seed + doc["doc_id"], sample_index=k)
                for k in range(gen.samples)]

    def extract(self, output: str) -> str | None:
        raise NotImplementedError

    def is_correct(self, extracted: str | None, gold: str) -> bool:
        raise NotImplementedError

    def score(self, outputs: list[str], gold: str) -> dict:
        """Per-document record fields. With several samples, the first is scored (pass@1 of sample 0);
        tasks that vote or count pass@k override this."""
        extracted = self.extract(outputs[0])
        return {"extracted": extracted, "gold": gold, "correct": self.is_correct(extracted, gold)}
