"""MMLU: 57 subjects of multiple-choice questions (Hendrycks et al. 2021), test split, 14,042 questions.

Data: HF `cais/mmlu` (config `all`; dev for shots) or `mmlu/{test,dev}/<subject>_{test,dev}.csv` (HF export:
columns question, choice0..3, answer as 0-3).
Protocol (ChatGLM3 README grid, 61.4 for ChatGLM3-6B-Base): 0-shot multiple choice; `shots=5` takes the
subject's first five dev questions (the original 5-shot protocol).
  Prompt, as Hendrycks' code and lm-eval: "The following are multiple choice questions (with answers) about
  {subject}.\n\n{question}\nA. …\nB. …\nC. …\nD. …\nAnswer:".
Scoring: task.choice_scoring (tasks/choice.py): logits of " A"… " D" after "Answer:" by default.
Averaging: headline micro (per question, as Hendrycks' evaluate.py); macro over the 57 subjects and the four
categories of Hendrycks' categories.py (STEM, humanities, social sciences, other) are reported too.
"""
from __future__ import annotations

from pathlib import Path

from glm_eval.tasks.choice import MultipleChoiceTask, read_subject_csvs
from glm_eval.tasks.base import load_hub_dataset

CATEGORIES = {
    "STEM": "abstract_algebra astronomy college_biology college_chemistry college_computer_science "
            "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
            "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
            "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
                  "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
                  "prehistory professional_law world_religions",
    "social sciences": "econometrics high_school_geography high_school_government_and_politics "
                       "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
                       "professional_psychology public_relations security_studies sociology us_foreign_policy",
    "other": "anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging management "
             "marketing medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
}
CATEGORY_OF = {subject: category for category, names in CATEGORIES.items() for subject in names.split()}


class MMLU(MultipleChoiceTask):
    title = "MMLU"
    description = "The following are multiple choice questions (with answers) about {subject}.\n\n"
    cue = "Answer:"

    def local_rows(self, path: Path):
        split = path.name  # test | dev
        return read_subject_csvs(path, suffix=f"_{split}")

    def hub_rows(self, split: str):
        ds = load_hub_dataset(self.title, self.cfg, self.cfg.dataset_config, split)
        rows = [{"question": r["question"], "subject": r["subject"], "answer": r["answer"],
                 **{f"choice{i}": c for i, c in enumerate(r["choices"])}} for r in ds]
        return rows, f"hf:{self.cfg.dataset}/{split}", {f"hf:{self.cfg.dataset}/{split}": ds._fingerprint}

    def parse(self, row: dict) -> dict | None:
        options = [row.get(f"choice{i}") for i in range(4)]
        answer = str(row.get("answer", "")).strip()
        if not row.get("question") or any(o is None for o in options) or answer not in {"0", "1", "2", "3"}:
            return None
        subject = row["subject"]
        return {"question": row["question"], "options": [str(o) for o in options], "letters": "ABCD",
                "gold": "ABCD"[int(answer)], "subject": subject, "category": CATEGORY_OF.get(subject, "other"),
                "multi": False}


TASK = MMLU
