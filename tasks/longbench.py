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
            (not of the 21 datasets); EN / ZH = the same over each language's datasets, code counting in both.
LongBench-E (tasks/longbench_e.py): 13 sets with even length spread, also scored per `length` bucket.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from omegaconf import OmegaConf

from glm_eval.errors import UserError
from glm_eval.longbench_metrics import GOLD_PARAGRAPH, code_sim_backend, dataset_score, rouge_failures, sample_score
from glm_eval.runner import stderr_of_weighted_means
from glm_eval.task import Task, file_sha256, read_jsonl

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


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


class LongBench(Task):
    title = "LongBench"
    metric = "LongBench score"
    headline = "macro"
    record_fields = ("answers", "all_classes", "length", "input_tokens")
    limit_per_subject = True
    prompt_excerpt = 1500
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
        """THUDM's table: rounded dataset scores, categories and overall averaged from them (0-100)."""
        per_dataset = {d: [r["score"] for r in records if r["subject"] == d] for d in self.all_datasets}
        datasets = {d: dataset_score(v) for d, v in per_dataset.items() if v}

        def by_category(language: str | None) -> dict[str, float]:
            chosen = {d: s for d, s in datasets.items() if language is None or DATASETS[d][1] in (language, "code")}
            return {c: mean(s for d, s in chosen.items() if DATASETS[d][0] == c)
                    for c in CATEGORIES if any(DATASETS[d][0] == c for d in chosen)}

        categories = by_category(None)
        overall = mean(categories.values())
        columns = {"Avg": overall, **categories, "EN": mean(by_category("en").values()),
                   "ZH": mean(by_category("zh").values()), **datasets}
        columns = {k: v for k, v in columns.items() if not math.isnan(v)}
        # the overall is a weighted sum of dataset means: its stderr follows from theirs (in 0-1 units)
        weights = {d: 1 / (len(categories) * sum(DATASETS[e][0] == DATASETS[d][0] for e in datasets)) for d in datasets}
        block = {"table": self.cfg.name.split("/")[0], "columns": columns,
                 "missing": [d for d in self.all_datasets if d not in datasets],
                 "rouge_failures": sum("rouge_failed" in r for r in records),
                 "code_sim_matcher": code_sim_backend() if {"lcc", "repobench-p"} & set(datasets) else None,
                 "published": self.options.get("published") or {}, "reference": self.options.get("reference")}
        stderr = stderr_of_weighted_means([(weights[d], per_dataset[d]) for d in datasets])
        return {"score": overall / 100, "stderr": stderr, "average": "categories", "longbench": block}


TASK = LongBench
