"""MMLU 0-shot, glm-eval vs lm-eval, side by side in one process on the same machine.

The same 1,000 test questions (every 14th of the 14,042, so all 57 subjects appear), the same model
(smollm2-135m-instruct, fp32, CPU), token-identical prompts: lm-eval's mmlu template mirrored locally, raw text
(no chat template) as lm-eval sends it by default. lm-eval scores the log-likelihood of " A" … " D" (its
multiple_choice type, HF backend) at batch 4, its fastest here: on 100 questions batch 1/2/4/8/32 took
31.7/34.0/28.7/37.4/87.7 s, the large batches paying for full-vocabulary logits at every position. glm-eval runs
task=mmlu in its default `logits` mode (one forward per question, last position only) with an empty response
cache. Wall times include model loading.
Agreement = share of questions where both harnesses choose the same letter.

    pip install -e .[bench] && python bench/mmlu_vs_lm_eval.py [--questions 1000] [--data-dir ../shared/data]

Last line: speedup=<lm-eval wall / glm-eval wall> agreement=<fraction>
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_eval_mmlu import run_lm_eval_mmlu  # noqa: E402

from glm_eval.engine.overrides import compose_config  # noqa: E402
from glm_eval.backends.source import ModelSource  # noqa: E402
from glm_eval.engine.run import evaluate  # noqa: E402


def select_questions(data_dir: Path, count: int, work: Path) -> tuple[Path, list[dict]]:
    """Every k-th test question, written both as a glm-eval data folder (mmlu/test/<subject>_test.csv) and,
    in the same order, as lm-eval's JSON lines."""
    rows = []
    for path in sorted((data_dir / "mmlu" / "test").glob("*_test.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows += [{**r, "subject": path.name[:-len("_test.csv")]} for r in csv.DictReader(f)]
    chosen = rows[::max(1, len(rows) // count)][:count]
    folder = work / "data" / "mmlu" / "test"
    folder.mkdir(parents=True)
    by_subject: dict[str, list[dict]] = {}
    for r in chosen:
        by_subject.setdefault(r["subject"], []).append(r)
    ordered = []
    for subject, items in sorted(by_subject.items()):
        with open(folder / f"{subject}_test.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["question", "choice0", "choice1", "choice2", "choice3", "answer"])
            writer.writeheader()
            writer.writerows({k: r[k] for k in writer.fieldnames} for r in items)
        ordered += items
    with open(work / "lm_eval.jsonl", "w", encoding="utf-8") as f:
        for r in ordered:
            f.write(json.dumps({"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                                "answer": int(r["answer"]), "subject_name": r["subject"].replace("_", " ")},
                               ensure_ascii=False) + "\n")
    return work / "data", ordered


def run_glm_eval(data_dir: Path, work: Path) -> tuple[float, list[dict], dict]:
    overrides = ["task=mmlu", "model=smollm2-135m-instruct", f"data_dir={data_dir}", "model.dtype=float32",
                 "model.device=cpu", "model.chat=false", "overwrite=true", f"output_dir={work / 'glm'}",
                 f"results_dir={work}", "progress=false"]
    cfg = compose_config(overrides)
    started = time.time()
    metrics = evaluate(cfg)
    wall = time.time() - started
    return wall, [json.loads(line) for line in open(work / "glm" / "samples.jsonl", encoding="utf-8")], metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--data-dir", default=os.environ.get("GLM_EVAL_DATA", "../shared/data"))
    parser.add_argument("--lm-eval-batch-size", type=int, default=4)
    args = parser.parse_args()
    model_cfg = compose_config(["model=smollm2-135m-instruct"]).model
    model_dir = ModelSource(model_cfg).folder()  # the same fp32 weights for both harnesses

    work = Path(tempfile.mkdtemp(prefix="mmlu_bench_"))
    try:
        data, ordered = select_questions(Path(args.data_dir), args.questions, work)
        glm_wall, glm_samples, glm_metrics = run_glm_eval(data, work)
        lm = run_lm_eval_mmlu(model_dir, str(work / "lm_eval.jsonl"), batch_size=args.lm_eval_batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(ordered)
    assert len(glm_samples) == len(lm["samples"]) == n, (len(glm_samples), len(lm["samples"]), n)
    same_prompt = sum(g["prompt"] == l["prompt"] for g, l in zip(glm_samples, lm["samples"]))
    agree = sum(g["extracted"] == l["chosen"] for g, l in zip(glm_samples, lm["samples"]))
    lm_acc = sum(l["chosen"] == g["gold"] for g, l in zip(glm_samples, lm["samples"])) / n
    print(f"questions: {n} ({len(set(r['subject'] for r in ordered))} subjects)   identical prompts: {same_prompt}/{n}")
    print(f"lm-eval  (HF, batch {args.lm_eval_batch_size}, loglik of ' A'..' D'): wall {lm['wall_s']:.1f} s   "
          f"acc {lm['acc']:.4f} (recomputed {lm_acc:.4f})")
    print(f"glm-eval (logits mode, {glm_metrics['batch']['prefill_tokens']}-token forwards): wall {glm_wall:.1f} s   "
          f"acc {glm_metrics['micro']:.4f}   scoring {glm_metrics['generation_s']} s")
    print(f"speedup={lm['wall_s'] / glm_wall:.2f} agreement={agree / n:.3f}")


if __name__ == "__main__":
    main()
