"""Reference GSM8K run through lm-eval's HF backend, reading a local test.jsonl (no hub access).

Prompt/output notes (lm-eval 0.4.13: api/task.py fewshot_context, models/huggingface.py): at 0 shots
the context is one user message holding doc_to_text verbatim ("Question: {q}\nAnswer:", nothing
stripped). With apply_chat_template=True the context is exactly
    tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                  add_generation_prompt=True, continue_final_message=False)
(the model's own template: SmolLM2 adds its default system turn); otherwise the bare text. A context
starting with the bos_token string is tokenized with add_special_tokens=False. The output is the
new tokens decoded with skip_special_tokens=True, then cut at the first `until` string.
"""
import os

from lm_eval_local import evaluate_local_task

TASK_NAME = "gsm8k_local_bench"


def _task_config(data_file: str) -> dict:
    # Mirrors lm_eval/tasks/gsm8k/gsm8k.yaml (v3.0) except dataset source and num_fewshot=0.
    # No dataset_name ("main" is not a config of the json builder) and no train/fewshot split.
    return {
        "task": TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": os.path.abspath(data_file)}},
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "metric_list": [{
            "metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
            "ignore_case": True, "ignore_punctuation": False,
            "regexes_to_ignore": [",", r"\$", r"(?s).*#### ", r"\.$"],
        }],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"],
                              "do_sample": False, "temperature": 0.0},
        "repeats": 1,
        "num_fewshot": 0,
        "filter_list": [
            {"name": "strict-match", "filter": [
                {"function": "regex", "regex_pattern": r"#### (\-?[0-9\.\,]+)"},
                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [
                {"function": "regex", "group_select": -1,
                 "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                {"function": "take_first"}]},
        ],
        "metadata": {"version": 3.0},
    }


def run_lm_eval_gsm8k(model_dir: str, data_file: str, limit: int, batch_size: int | str = 32,
                      max_gen_toks: int = 256, apply_chat_template: bool = True, model=None) -> dict:
    """Greedy fp32 CPU gsm8k 0-shot via lm-eval; see module docstring for the exact context.

    Returns {"wall_s", "score_strict", "score_flexible", "samples": [{"doc_id", "prompt",
    "output", "flexible"}, ...] sorted by doc_id}. wall_s covers simple_evaluate only
    (model load + generation + scoring), not imports.
    """
    results, wall_s = evaluate_local_task(
        _task_config(data_file), model_dir, model=model, num_fewshot=None,  # YAML's 0 stands
        batch_size=batch_size, limit=limit, apply_chat_template=apply_chat_template,
        # Parsed to {"max_gen_toks": int} and dict.update()-ed into the task's
        # generation_kwargs, so until/do_sample/temperature from the YAML are kept.
        gen_kwargs=f"max_gen_toks={max_gen_toks}")

    # One logged entry per (doc, filter); all share arguments/resps, differ in filtered_resps.
    by_doc: dict[int, dict] = {}
    for entry in results["samples"][TASK_NAME]:
        sample = by_doc.setdefault(entry["doc_id"], {
            "doc_id": entry["doc_id"],
            "prompt": entry["arguments"][0][0],  # (context, gen_kwargs) of the only request
            "output": entry["resps"][0][0],      # raw generation, before filters
        })
        if entry["filter"] == "flexible-extract":
            sample["flexible"] = entry["filtered_resps"][0]
    task_scores = results["results"][TASK_NAME]
    return {
        "wall_s": wall_s,
        "score_strict": float(task_scores["exact_match,strict-match"]),
        "score_flexible": float(task_scores["exact_match,flexible-extract"]),
        "samples": [by_doc[k] for k in sorted(by_doc)],
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-file", required=True)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-gen-toks", type=int, default=256)
    parser.add_argument("--no-chat-template", action="store_true")
    # torch's default (all cores) collapses ~40x when another process holds a core.
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = run_lm_eval_gsm8k(args.model_dir, args.data_file, args.limit, args.batch_size,
                            args.max_gen_toks, not args.no_chat_template)
    print(f"wall_s={out['wall_s']:.2f} strict={out['score_strict']:.4f} "
          f"flexible={out['score_flexible']:.4f} n={len(out['samples'])}")
    first = out["samples"][0]
    print("prompt:", repr(first["prompt"]))
    print("output:", repr(first["output"]))
    print("flexible:", repr(first["flexible"]))
