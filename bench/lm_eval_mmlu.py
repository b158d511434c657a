"""Reference MMLU run through lm-eval's HF backend on a local JSON-lines file (no hub access).

The task mirrors lm_eval/tasks/mmlu/default (_default_template_yaml + the per-subject description) in one
task: the subject's description is a template over the row's `subject_name`, so every question gets
"The following are multiple choice questions (with answers) about {subject}.\\n\\n" as in the per-subject YAMLs.
0-shot, output_type multiple_choice: the log-likelihood of " A" … " D" after the context; acc = argmax.
"""
from __future__ import annotations

import os

from lm_eval_local import evaluate_local_task

TASK_NAME = "mmlu_local_bench"


def _task_config(data_file: str) -> dict:
    return {
        "task": TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": os.path.abspath(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "description": "The following are multiple choice questions (with answers) about {{subject_name}}.\n\n",
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                       "D. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }


def run_lm_eval_mmlu(model_dir: str, data_file: str, batch_size: int = 32) -> dict:
    """Returns {"wall_s", "acc", "samples": [{"doc_id", "prompt", "chosen"}]} (wall: simple_evaluate only)."""
    results, wall_s = evaluate_local_task(_task_config(data_file), model_dir, batch_size=batch_size)
    samples = []
    for entry in results["samples"][TASK_NAME]:
        scores = [float(r[0]) for r in entry["filtered_resps"]]
        samples.append({"doc_id": entry["doc_id"], "prompt": entry["arguments"][0][0],
                        "chosen": "ABCD"[max(range(4), key=scores.__getitem__)]})
    samples.sort(key=lambda s: s["doc_id"])
    return {"wall_s": wall_s, "acc": float(results["results"][TASK_NAME]["acc,none"]), "samples": samples}
