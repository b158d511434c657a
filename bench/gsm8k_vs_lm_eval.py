"""GSM8K, glm-eval vs lm-eval, side by side in one process on the same machine.

Same model (smollm2-135m-instruct, fp32, CPU), same first N test problems, token-identical prompts
(lm-eval's gsm8k 0-shot format "Question: {q}\nAnswer:", raw text as lm-eval sends it by default; no
chat template), the same stop strings and max new tokens, greedy. lm-eval runs its HF backend at batch 32 (its fastest here); glm-eval runs its
default slot-refill generator with an empty response cache. Both wall times include model loading.
Agreement = share of problems whose outputs give the same extracted answer (glm-eval's GSM8K extraction
applied to both outputs, so it measures the generations, not two different regexes).

    pip install -e .[bench] && python bench/gsm8k_vs_lm_eval.py [--limit 200] [--data-dir ../shared/data]

Last line: speedup=<lm-eval wall / glm-eval wall> agreement=<fraction>
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_eval_gsm8k import run_lm_eval_gsm8k  # noqa: E402

from glm_eval.engine.overrides import compose_config  # noqa: E402
from glm_eval.backends.source import ModelSource  # noqa: E402
from glm_eval.engine.run import evaluate  # noqa: E402
from glm_eval.tasks.gsm8k import extract_answer  # noqa: E402

STOP = ["Question:", "</s>", "<|im_end|>"]


def run_glm_eval(data_dir: str, limit: int, max_new_tokens: int, work: Path) -> tuple[float, list[dict], dict]:
    # overwrite=true: every response is generated (none read from the cache).
    overrides = ["task=gsm8k", "model=smollm2-135m-instruct", f"limit={limit}", f"data_dir={data_dir}",
                 f"task.max_new_tokens={max_new_tokens}", "model.dtype=float32", "model.device=cpu", "model.chat=false",
                 "overwrite=true", f"output_dir={work / 'glm'}", f"results_dir={work}"]
    cfg = compose_config(overrides)
    cfg.task.template, cfg.task.gen_prefix, cfg.task.stop = "Question: {question}\nAnswer:", "", STOP
    started = time.time()
    metrics = evaluate(cfg)
    wall = time.time() - started
    samples = [json.loads(line) for line in open(work / "glm" / "samples.jsonl", encoding="utf-8")]
    return wall, samples, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--data-dir", default=os.environ.get("GLM_EVAL_DATA", "../shared/data"))
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--lm-eval-batch-size", type=int, default=32)
    args = parser.parse_args()
    data_file = str(Path(args.data_dir) / "gsm8k" / "test.jsonl")
    model_cfg = compose_config(["model=smollm2-135m-instruct"]).model
    model_dir = ModelSource(model_cfg).folder()  # the same fp32 weights for both harnesses

    with tempfile.TemporaryDirectory() as tmp:
        glm_wall, glm_samples, glm_metrics = run_glm_eval(args.data_dir, args.limit, args.max_new_tokens, Path(tmp))
    lm = run_lm_eval_gsm8k(model_dir, data_file, args.limit, batch_size=args.lm_eval_batch_size,
                           max_gen_toks=args.max_new_tokens, apply_chat_template=False)

    n = len(glm_samples)
    same_prompt = sum(g["prompt"] == l["prompt"] for g, l in zip(glm_samples, lm["samples"]))
    same_text = sum(g["output"] == l["output"] for g, l in zip(glm_samples, lm["samples"]))
    agree = sum(extract_answer(g["output"]) == extract_answer(l["output"]) for g, l in zip(glm_samples, lm["samples"]))
    lm_correct = sum(extract_answer(l["output"]) is not None and g["gold"] == extract_answer(l["output"])
                     for g, l in zip(glm_samples, lm["samples"]))
    print(f"problems: {n}   identical prompts: {same_prompt}/{n}   identical outputs: {same_text}/{n}")
    print(f"lm-eval  (HF, batch {args.lm_eval_batch_size}): wall {lm['wall_s']:.1f} s   "
          f"flexible-extract {lm['score_flexible']:.4f}   strict {lm['score_strict']:.4f}   "
          f"glm-eval extraction {lm_correct / n:.4f}")
    print(f"glm-eval (slot refill, {glm_metrics['batch']['max_rows']} rows): wall {glm_wall:.1f} s   "
          f"accuracy {glm_metrics['score']:.4f}   generated {glm_metrics['generated_tokens']} tokens "
          f"({glm_metrics['generated_tokens_per_s']} tok/s)")
    print(f"speedup={lm['wall_s'] / glm_wall:.2f} agreement={agree / n:.3f}")


if __name__ == "__main__":
    main()
