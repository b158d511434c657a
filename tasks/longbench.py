"""LongBench v1 (Bai et al., ACL 2024; THUDM/LongBench): 21 long-context datasets in 6 categories, 4,750 examples.

Data: HF `THUDM/LongBench`, one config per dataset, split test (read from the hub's parquet export: datasets ≥ 4
no longer runs its loading script), or `<data_dir>/longbench/data/<dataset>.jsonl`, the official files.
Protocol: THUDM's pred.py and eval.py to the letter (../shared/docs/longbench.md; prompts and max new tokens are
their dataset2prompt.json / dataset2maxlen.json, shipped verbatim in tasks/longbench_config/):
  prompt    the dataset's template filled with the row's context and input, truncated in the middle to the
            model's max_input_length tokens (first half + last half, each decoded without special tokens; 31,500
            for 32K models), then the model's chat wrapper, except for trec, triviaqa, samsum, lsht, lcc and
            repobench-p, which get the raw text with the tokenizer's own prefix ([gMASK] sop for ChatGLM).
  decoding  greedy; samsum alone stops at a newline, after at least one token.
  scoring   first line only for trec, triviaqa, samsum, lsht; the best over all gold answers; per dataset:
            qa_f1 (jieba for Chinese), ROUGE-L (rouge 1.0.1), classification, retrieval, count, code edit similarity.
  averages  dataset = round(100 · mean, 2); category = mean of its datasets; overall = mean of the 6 categories
            (not of the 21 datasets), declared as `averaging`; EN / ZH = the same over each language's datasets,
            code counting in both.
LongBench-E (tasks/longbench_e.py): 13 sets with even length spread, also scored per `length` bucket.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import OmegaConf

from glm_eval.core.averaging import Average, Averaging, summarize
from glm_eval.core.errors import UserError
from glm_eval.core.files import file_sha256, read_jsonl
from glm_eval.scoring.longbench import GOLD_PARAGRAPH, code_sim_backend, rouge_failures, sample_score
from glm_eval.tasks.base import Task

CONFIG = Path(__file__).with_name("longbench_config")
DATASETS = {  # dataset: (category, language, metric in eval.py)
    "narrativeqa": ("Single-Doc QA", "en", "qa_f1"), "qasper": ("Single-Doc QA", "en", "qa_f1"),
    "multifieldqa_en": ("Single-Doc QA", "en", "qa_f1"), "multifieldqa_zh": ("Single-Doc QA", "zh", "qa_f1_zh"),
    "hotpotqa": ("Multi-Doc QA", "en", "qa_f1"), "2wikimqa": ("Multi-Doc QA", "en", "qa_f1"),
    "musique": ("Multi-Doc QA", "en", "qa_f1"), "dureader": ("Multi-Doc QA", "zh", "rouge_zh"),
    "gov_report": ("Summary", "en", "rouge"), "qmsum": ("Summary", "en", "rouge"),
    "multi_news": ("Summary", "en", "rouge"), "vcsum": ("Summary", "zh", "rouge_zh"),
    "trec": ("Few-shot", "en", "classification"), "triviaqa": ("Few-shot", "en", "qa_f1"),
    "samsum": ("Few-shot", "en", "rouge"), "lsht": ("Few-shot", "zh", "classification"),
    "passage_count": ("Synthetic", "en", "count"), "passage_retrieval_en": ("Synthetic", "en", "retrieval"),
    "passage_retrieval_zh": ("Synthetic", "zh", "retrieval_zh"),
    "lcc": ("Code", "code", "code_sim"), "repobench-p": ("Code", "code", "code_sim"),
}
CATEGORIES = ["Summary", "Single-Doc QA", "Multi-Doc QA", "Code", "Few-shot", "Synthetic"]  # ChatGLM3 README order
NO_CHAT = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}  # pred.py: better without the chat wrapper


class LongBench(Task):
    title = "LongBench"
    shot_choices = (0,)  # its protocol has no exemplars
    metric = "LongBench score"
    # THUDM's eval.py: a dataset scores round(100 · mean, 2); the overall is the mean of the 6 categories' means
    averaging = Averaging(Average.categories, subject_decimals=2)
    record_fields = ("answers", "all_classes", "length", "input_tokens")
    limit_per_subject = True
    prompt_excerpt = 1500
    counts_tokens = True  # middle truncation to max_input_length tokens
    no_answer = {"score": 0.0}  # a reply cut off inside its reasoning: graded 0
    variant = ""  # LongBench-E reads the `<dataset>_e` files and configs
    all_datasets = list(DATASETS)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.options = OmegaConf.to_container(OmegaConf.create(dict(cfg.options)), resolve=True)
        self.datasets = list(self.options.get("datasets") or self.all_datasets)
        unknown = [d for d in self.datasets if d not in self.all_datasets]
        if unknown:
            raise UserError(f"{self.title}: unknown dataset {', '.join(unknown)}; valid: {', '.join(self.all_datasets)}")
        self.templates = json.loads((CONFIG / "dataset2prompt.json").read_text(encoding="utf-8"))
        self.max_new_tokens = json.loads((CONFIG / "dataset2maxlen.json").read_text(encoding="utf-8"))

    # ---- data --------------------------------------------------------------------------------------------
    def local_rows(self, path: Path):
        files = {name: path / f"{name}{self.variant}.jsonl" for name in self.datasets}
        missing = [f.name for f in files.values() if not f.exists()]
        if missing:
            present = [d for d in self.all_datasets if (path / f"{d}{self.variant}.jsonl").exists()]
            hint = f"run the present ones with task.options.datasets=[{','.join(present)}]" if present else \
                f"download THUDM/LongBench's data.zip (data/<dataset>{self.variant}.jsonl) there"
            raise UserError(f"{self.title}: {len(missing)} of {len(files)} files missing in {path} "
                            f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''}); {hint}")
        rows, bad = [], []
        for name, file in files.items():
            found, problems = read_jsonl(file)
            rows += [{**row, "dataset": name} if row is not None else None for row in found]
            bad += problems
        return rows, bad, {f.name: file_sha256(f) for f in files.values()}

    def hub_rows(self, split: str):
        return self.hub_rows_per_config([name + self.variant for name in self.datasets], split, tag="dataset")

    def parse(self, row: dict) -> dict | None:
        name = str(row.get("dataset", "")).removesuffix(self.variant)  # hub rows are tagged `<dataset>_e` in E
        question = row.get("input", row.get("question"))  # parquet mirrors rename `input`
        context, answers, classes = row.get("context"), row.get("answers"), row.get("all_classes")
        if (name not in DATASETS or not isinstance(context, str) or not isinstance(question, str)
                or not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers)
                or (DATASETS[name][2] == "classification" and not classes)
                or not all(re.search(GOLD_PARAGRAPH.get(DATASETS[name][2], ""), a) for a in answers)):
            return None  # counted as malformed: scoring it would fail
        category, language, _ = DATASETS[name]
        return {"subject": name, "category": category, "language": language, "context": context, "input": question,
                "answers": answers, "all_classes": classes, "length": int(row.get("length") or 0)}

    # ---- prompt ------------------------------------------------------------------------------------------
    def requests(self, doc: dict, shots, renderer, gen, stop):
        name = doc["subject"]
        text = self.templates[name].format(context=doc["context"], input=doc["input"])
        text, doc["input_tokens"] = renderer.truncate_middle(text)  # before the chat wrapper, as pred.py
        prompt = renderer.plain(text) if name in NO_CHAT else renderer.render([], text)
        samsum = name == "samsum"  # eos_token_id += "\n" and min_length = prompt + 1 in pred.py
        return self.generation_requests(doc, prompt, gen, [*stop, *(["\n"] if samsum else [])],
                                        max_new_tokens=self.max_new_tokens[name], min_new_tokens=int(samsum))

    # ---- metric ------------------------------------------------------------------------------------------
    def score(self, answers, record: dict) -> dict:
        failures = rouge_failures.count
        name = record["subject"]
        value = sample_score(name, DATASETS[name][2], answers[0].text, record["answers"], record["all_classes"])
        return {"score": value, **({"rouge_failed": rouge_failures.last} if rouge_failures.count > failures else {})}

    def aggregate(self, records: list[dict]) -> dict:
        """LongBench's extras (the dataset, category and overall scores follow from `averaging`): EN and ZH, the
        same average over each language's datasets with code counted in both (0-100), and what the table needs."""
        def language(name: str) -> float:
            chosen = [r for r in records if DATASETS[r["subject"]][1] in (name, "code")]
            return 100 * summarize([r["score"] for r in chosen], [r["subject"] for r in chosen],
                                   [DATASETS[r["subject"]][0] for r in chosen], self.averaging)["score"]
        present = {r["subject"] for r in records}
        return {"longbench": {
            "table": self.cfg.name.split("/")[0],
            "languages": {name.upper(): language(name) for name in ("en", "zh")
                          if any(DATASETS[d][1] == name for d in present)},
            "missing": [d for d in self.all_datasets if d not in present],
            "rouge_failures": sum("rouge_failed" in r for r in records),
            "code_sim_matcher": code_sim_backend() if {"lcc", "repobench-p"} & present else None,
            "published": self.options.get("published") or {}, "reference": self.options.get("reference")}}


TASK = LongBench
