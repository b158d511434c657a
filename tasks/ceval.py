"""C-Eval: 52 subjects of Chinese exam questions (Huang et al. 2023), val split, 1,346 questions (test answers
are not public).

Data: HF `ceval/ceval-exam` (one config per subject; dev for shots) or `ceval/{val,dev}/<subject>_{val,dev}.csv`
with `ceval/subject_mapping.json` (subject → English name, Chinese name, category).
Protocol (ChatGLM3 README grid, 69.0 for ChatGLM3-6B-Base; split not stated): 0-shot multiple choice; `shots=5`
takes the subject's five dev questions. Prompt of C-Eval's official answer-only evaluator:
  "以下是中国关于{科目}考试的单项选择题，请选出其中的正确答案。\n\n{question}\nA. …\nB. …\nC. …\nD. …\n答案：".
Scoring: task.choice_scoring (tasks/choice.py): logits of ▁A…▁D after "答案：" by default (THUDM's ids).
Averaging: headline micro (per question, as THUDM's ChatGLM2 evaluate_ceval.py); macro over the 52 subjects and
the four categories of subject_mapping.json (STEM, Social Science, Humanities, Other) are reported too.
"""
from __future__ import annotations

import json
from pathlib import Path

from glm_eval.tasks.choice import MultipleChoiceTask, letter_columns_doc, read_subject_csvs
from glm_eval.core.files import file_sha256


class CEval(MultipleChoiceTask):
    title = "C-Eval"
    description = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
    cue = "答案："
    mapping: dict[str, list[str]] = {}  # subject → [English, 中文, category]

    def local_rows(self, path: Path):
        mapping_file = path.parent / "subject_mapping.json"
        rows, bad, digest = read_subject_csvs(path, suffix=f"_{path.name}")
        if mapping_file.exists():
            self.mapping = json.loads(mapping_file.read_text(encoding="utf-8"))
            digest[f"../{mapping_file.name}"] = file_sha256(mapping_file)
        else:
            bad.append(f"{mapping_file} missing: subjects keep their English names and have no category")
        return rows, bad, digest

    def hub_rows(self, split: str):
        from huggingface_hub import hf_hub_download
        self.mapping = json.loads(Path(hf_hub_download(self.cfg.dataset, "subject_mapping.json",
                                                       repo_type="dataset")).read_text(encoding="utf-8"))
        return self.hub_rows_per_config(sorted(self.mapping), split)

    def subject_name(self, subject: str) -> str:
        return self.mapping.get(subject, [subject, subject.replace("_", " ")])[1]

    def parse(self, row: dict) -> dict | None:
        return letter_columns_doc(row, "question", "answer", self.mapping.get(row["subject"], ["", "", ""])[2])


TASK = CEval
