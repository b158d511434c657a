"""Few-shot evaluation, glm-eval (shared prefixes computed once) vs lm-eval, side by side in one process.

Same model (smollm2-135m-instruct, fp32, CPU, the same converted weights), token-identical prompts (raw text, no
chat template, as lm-eval sends them by default), empty response cache. Wall times include model loading, not the
Python imports both harnesses share (done before either clock: `warm_imports`).

1. MMLU 5-shot: every 14th of the 14,042 test questions (1,000, all 57 subjects). lm-eval runs its mmlu task
   mirrored locally, one task per subject as its group does (description per subject, the subject's dev split,
   sampler first_n, " A".." D" log-likelihoods); glm-eval runs task=mmlu task.shots=5 (letter logits, the
   subject's first five dev questions). Agreement: the same letter. glm-eval is also run with
   batch.share_prefix=false on the first --unshared questions: on-vs-off agreement.
2. BBH 3-shot CoT: the first --per-subtask examples of each of the 27 subtasks, greedy, <= --max-new-tokens new
   tokens, stops "\\n\\nQ:", "</s>", "<|im_end|>". lm-eval runs one generate_until task per subtask whose description
   is the official cot-prompt (so its prompt is glm-eval's, token for token). Agreement: the same extracted
   answer; identical outputs are counted too. glm-eval with sharing off on the first --unshared-bbh prompts.
3. MMLU 0-shot: glm-eval's scoring throughput as a fraction of this machine's fp32 matmul peak, measured in this
   process (a 4096^3 matmul, best of 3, on the same threads): 2 x parameters x context tokens computed / scoring
   seconds / peak.
lm-eval runs at its fastest batch size on this machine: MMLU 5-shot, 114 questions (2 per subject), took
174.7 s at batch 1, 204.3 s at 4, 265.1 s at 16 (its multiple-choice path computes full-vocabulary logits at every
position of ~740-token contexts). BBH's batch size was not swept (4, as for its 0-shot generation here).

    pip install -e .[bench] && python bench/fewshot_vs_lm_eval.py [--parts mmlu,bbh,zero] [--questions 1000]

Verify in ten minutes: `--parts mmlu --questions 100 --unshared 25` (the README gives the ratio at that size).

What decides speed is printed first, as an environment block: the CPU, the cores this process may use and the
load on them (another job on the same cores slows either harness several times over), torch's threads and OpenMP
waiting policy, the fp32 matmul peak measured now, torch / transformers / lm-eval versions, and the attention
implementation each harness's model actually runs with. glm-eval registers its CPU GQA attention with transformers
under its own name ("sdpa_gqa") and switches only the models it loads; the block loads lm-eval's model the way
lm-eval does and stops the bench if it runs anything but transformers' own "sdpa".

Last line: the MMLU 5-shot part's speedup=<lm-eval wall / glm-eval wall> agreement=<fraction>
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
from lm_eval_local import evaluate_local_task  # noqa: E402
from mmlu_vs_lm_eval import select_questions  # noqa: E402

from glm_eval.backends.source import ModelSource  # noqa: E402
from glm_eval.engine.overrides import compose_config  # noqa: E402
from glm_eval.engine.run import evaluate  # noqa: E402
from glm_eval.scoring.answers import extract_bbh_answer  # noqa: E402
from glm_eval.tasks.bbh import SUBTASKS  # noqa: E402

BBH_STOP = ["\n\nQ:", "</s>", "<|im_end|>"]


def warm_imports() -> None:
    """Import what both harnesses use before either clock starts: lm-eval's wall is simple_evaluate's alone, and the
    first glm-eval run would otherwise pay transformers' lazy imports (~9 s here) that lm-eval then finds done."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401


def run_glm(work: Path, name: str, *overrides: str) -> tuple[float, list[dict], dict]:
    cfg = compose_config(["model=smollm2-135m-instruct", "model.dtype=float32", "model.device=cpu",
                          "model.chat=false", "overwrite=true", "progress=false", f"results_dir={work}",
                          f"output_dir={work / name}", *overrides])
    started = time.time()
    metrics = evaluate(cfg)
    wall = time.time() - started
    return wall, [json.loads(line) for line in open(work / name / "samples.jsonl", encoding="utf-8")], metrics


# ---- 1. MMLU 5-shot ---------------------------------------------------------------------------------------
def mmlu_lm_eval_tasks(data_dir: Path, ordered: list[dict], work: Path) -> list[dict]:
    """One lm-eval task per subject: lm_eval/tasks/mmlu/default/_default_template_yaml + the subject's YAML
    (description), on local JSON lines (the chosen test questions; the subject's dev questions in file order)."""
    tasks, subjects = [], sorted({r["subject"] for r in ordered})
    folder = work / "lm_eval_mmlu"
    folder.mkdir()
    for subject in subjects:
        def rows(items):
            return "".join(json.dumps({"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                                       "answer": int(r["answer"])}, ensure_ascii=False) + "\n" for r in items)
        with open(data_dir / "mmlu" / "dev" / f"{subject}_dev.csv", encoding="utf-8", newline="") as f:
            (folder / f"{subject}_dev.jsonl").write_text(rows(list(csv.DictReader(f))), encoding="utf-8")
        (folder / f"{subject}_test.jsonl").write_text(rows([r for r in ordered if r["subject"] == subject]),
                                                      encoding="utf-8")
        tasks.append({
            "task": f"mmlu5_{subject}", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(folder / f"{subject}_test.jsonl"),
                                              "dev": str(folder / f"{subject}_dev.jsonl")}},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                           "D. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "num_fewshot": 5, "metadata": {"version": 1.0}})
    return tasks


def mmlu_part(args, data_dir: Path, model_dir: str, work: Path) -> dict:
    data, ordered = select_questions(data_dir, args.questions, work)
    (data / "mmlu" / "dev").symlink_to((data_dir / "mmlu" / "dev").resolve())
    n = len(ordered)
    glm_wall, glm, glm_metrics = run_glm(work, "mmlu5", "task=mmlu", "task.shots=5", f"data_dir={data}")
    off_wall, off, _ = run_glm(work, "mmlu5_off", "task=mmlu", "task.shots=5", f"data_dir={data}",
                               "batch.share_prefix=false", f"limit={min(args.unshared, n)}")
    tasks = mmlu_lm_eval_tasks(data_dir, ordered, work)
    results, lm_wall = evaluate_local_task(tasks, model_dir, batch_size=args.lm_eval_batch_size)
    lm = []
    for task in tasks:
        for entry in sorted(results["samples"][task["task"]], key=lambda e: e["doc_id"]):
            scores = [float(r[0]) for r in entry["filtered_resps"]]
            lm.append({"prompt": entry["arguments"][0][0], "chosen": "ABCD"[max(range(4), key=scores.__getitem__)]})
    assert len(glm) == len(lm) == n, (len(glm), len(lm), n)
    stats = glm_metrics["backend_stats"]
    return {
        "name": "MMLU 5-shot", "n": n, "subjects": len({r["subject"] for r in ordered}),
        "identical_prompts": sum(g["prompt"] == l["prompt"] for g, l in zip(glm, lm)),
        "lm_wall": lm_wall, "lm_acc": sum(l["chosen"] == g["gold"] for g, l in zip(glm, lm)) / n,
        "glm_wall": glm_wall, "glm_acc": glm_metrics["score"],
        "agreement": sum(g["extracted"] == l["chosen"] for g, l in zip(glm, lm)) / n,
        "on_off": (sum(a["extracted"] == b["extracted"] for a, b in zip(glm, off)), len(off), off_wall),
        "tokens": (stats["loglik_tokens"], stats["loglik_computed_tokens"]),
        "lm_batch": args.lm_eval_batch_size}


# ---- 2. BBH 3-shot CoT ------------------------------------------------------------------------------------
def bbh_part(args, data_dir: Path, model_dir: str, work: Path) -> dict:
    data = work / "bbh_data" / "bbh"
    (data / "bbh").mkdir(parents=True)
    (data / "cot-prompts").symlink_to((data_dir / "bbh" / "cot-prompts").resolve())
    lm_tasks, folder = [], work / "lm_eval_bbh"
    folder.mkdir()
    for subtask in SUBTASKS:  # glm-eval reads the subtasks in this order
        examples = json.loads((data_dir / "bbh" / "bbh" / f"{subtask}.json").read_text())["examples"]
        chosen = examples[:args.per_subtask]
        (data / "bbh" / f"{subtask}.json").write_text(json.dumps({"examples": chosen}), encoding="utf-8")
        (folder / f"{subtask}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in chosen), encoding="utf-8")
        exemplars = (data_dir / "bbh" / "cot-prompts" / f"{subtask}.txt").read_text(encoding="utf-8")
        lm_tasks.append({
            "task": f"bbh3_{subtask}", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(folder / f"{subtask}.jsonl")}}, "test_split": "test",
            "output_type": "generate_until",
            "description": exemplars.split("-----\n", 1)[-1].strip() + "\n\n",  # what tasks/bbh.py puts first
            "doc_to_text": "Q: {{input}}\nA: Let's think step by step.", "doc_to_target": "{{target}}",
            "generation_kwargs": {"until": BBH_STOP, "do_sample": False, "temperature": 0.0,
                                  "max_gen_toks": args.max_new_tokens},
            "num_fewshot": 0, "metric_list": [{"metric": "exact_match", "aggregation": "mean",
                                              "higher_is_better": True}], "metadata": {"version": 1.0}})
    common = ["task=bbh", f"data_dir={work / 'bbh_data'}", f"gen.max_new_tokens={args.max_new_tokens}"]
    glm_wall, glm, glm_metrics = run_glm(work, "bbh", *common)
    off_wall, off, _ = run_glm(work, "bbh_off", *common, "batch.share_prefix=false",
                               f"limit={min(args.unshared_bbh, len(glm))}")
    results, lm_wall = evaluate_local_task(lm_tasks, model_dir, batch_size=args.bbh_lm_eval_batch_size)
    lm = []
    for task in lm_tasks:
        for entry in sorted(results["samples"][task["task"]], key=lambda e: e["doc_id"]):
            lm.append({"prompt": entry["arguments"][0][0], "output": entry["resps"][0][0]})
    n = len(glm)
    assert len(lm) == n, (len(lm), n)
    by_index = {s["doc_id"]: s for s in glm}
    off_same = sum(a["output"] == by_index[a["doc_id"]]["output"] for a in off)
    from glm_eval.scoring.answers import bbh_match
    return {
        "name": "BBH 3-shot CoT", "n": n, "identical_prompts": sum(g["prompt"] == l["prompt"] for g, l in zip(glm, lm)),
        "lm_wall": lm_wall, "lm_acc": sum(bbh_match(extract_bbh_answer(l["output"]), g["gold"])
                                          for g, l in zip(glm, lm)) / n,
        "glm_wall": glm_wall, "glm_acc": glm_metrics["micro"],
        "agreement": sum(extract_bbh_answer(g["output"]) == extract_bbh_answer(l["output"])
                         for g, l in zip(glm, lm)) / n,
        "identical_outputs": sum(g["output"] == l["output"] for g, l in zip(glm, lm)),
        "on_off": (off_same, len(off), off_wall), "lm_batch": args.bbh_lm_eval_batch_size,
        "stats": glm_metrics["backend_stats"]}


# ---- 3. MMLU 0-shot throughput against the matmul peak ------------------------------------------------------
def matmul_peak_gflops(size: int = 4096) -> float:
    import torch
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def zero_shot_part(args, data_dir: Path, work: Path) -> dict:
    import torch
    data, ordered = select_questions(data_dir, args.questions, work / "zero")
    peak_before = matmul_peak_gflops()
    _, _, metrics = run_glm(work, "mmlu0", "task=mmlu", "task.shots=0", f"data_dir={data}")
    peak = max(peak_before, matmul_peak_gflops())
    model = ModelSource(compose_config(["model=smollm2-135m-instruct"]).model).load_model("float32", "cpu")
    parameters = sum(p.numel() for p in model.parameters())
    tokens = metrics["backend_stats"]["loglik_computed_tokens"]
    gflops = 2 * parameters * tokens / metrics["generation_s"] / 1e9
    return {"name": "MMLU 0-shot", "n": len(ordered), "tokens": tokens, "seconds": metrics["generation_s"],
            "parameters": parameters, "gflops": gflops, "peak": peak, "fraction": gflops / peak,
            "threads": torch.get_num_threads()}


def environment(model_dir: str) -> list[str]:
    """What decides both harnesses' speed here and now; stops the bench if glm-eval's attention reached lm-eval's
    model."""
    import importlib.metadata as metadata
    import platform

    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    ours = ModelSource(compose_config(["model=smollm2-135m-instruct"]).model).load_model("float32", "cpu")
    peer = HFLM(pretrained=model_dir, dtype="float32", device="cpu").model  # as evaluate_local_task loads it
    ours_impl, peer_impl = ours.config._attn_implementation, peer.config._attn_implementation
    sdpa_is_transformers = ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    del ours, peer
    if peer_impl != "sdpa" or not sdpa_is_transformers:
        sys.exit(f"lm-eval's model runs attention {peer_impl!r} (transformers' own sdpa: {sdpa_is_transformers}): "
                 "glm-eval's registration reached it; the comparison would not be lm-eval's")
    return ["environment:",
            f"  cpu {cpu}; {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable; load average {load}",
            f"  torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}), transformers {metadata.version('transformers')}, "
            f"lm-eval {metadata.version('lm_eval')}, python {platform.python_version()}",
            f"  fp32 matmul peak now: {matmul_peak_gflops():.0f} GFLOP/s (4096^3, best of 3)",
            f"  attention: glm-eval's model {ours_impl}, lm-eval's model {peer_impl} (transformers' own sdpa function: "
            f"{sdpa_is_transformers})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="zero,bbh,mmlu", help="any of mmlu,bbh,zero (MMLU's line prints last)")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--unshared", type=int, default=250, help="MMLU questions also scored with sharing off")
    parser.add_argument("--per-subtask", type=int, default=10)
    parser.add_argument("--unshared-bbh", type=int, default=54, help="BBH prompts also generated with sharing off")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--lm-eval-batch-size", type=int, default=1)
    parser.add_argument("--bbh-lm-eval-batch-size", type=int, default=4)
    parser.add_argument("--data-dir", default=os.environ.get("GLM_EVAL_DATA", "../shared/data"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    data_dir = Path(args.data_dir)
    model_dir = ModelSource(compose_config(["model=smollm2-135m-instruct"]).model).folder()
    warm_imports()
    work = Path(tempfile.mkdtemp(prefix="fewshot_bench_"))
    lines = environment(model_dir)
    print("\n".join(lines), flush=True)
    try:
        if "zero" in parts:
            z = zero_shot_part(args, data_dir, work)
            lines.append(f"MMLU 0-shot, {z['n']} questions: {z['tokens']} context tokens in {z['seconds']} s, "
                         f"2 x {z['parameters'] / 1e6:.1f}M params x tokens / s = {z['gflops']:.0f} GFLOP/s; fp32 "
                         f"matmul peak {z['peak']:.0f} GFLOP/s ({z['threads']} threads): "
                         f"prefill_fraction={z['fraction']:.2f}")
            print(lines[-1], flush=True)
        if "bbh" in parts:
            b = bbh_part(args, data_dir, model_dir, work)
            on, total, off_wall = b["on_off"]
            lines.append(f"BBH 3-shot CoT, {b['n']} prompts ({args.per_subtask} x 27), <= {args.max_new_tokens} new "
                         f"tokens, identical prompts {b['identical_prompts']}/{b['n']}\n"
                         f"  lm-eval  (HF, batch {b['lm_batch']}): wall {b['lm_wall']:.1f} s   acc {b['lm_acc']:.4f}\n"
                         f"  glm-eval (shared prefixes): wall {b['glm_wall']:.1f} s   acc {b['glm_acc']:.4f}   "
                         f"prefill {b['stats']['prefill_tokens']} tokens computed, "
                         f"{b['stats']['reused_prefix_tokens']} reused\n"
                         f"  identical outputs {b['identical_outputs']}/{b['n']}; sharing on vs off: identical "
                         f"outputs {on}/{total} (off: {off_wall:.1f} s)\n"
                         f"  bbh: speedup={b['lm_wall'] / b['glm_wall']:.2f} agreement={b['agreement']:.3f}")
            print(lines[-1], flush=True)
        if "mmlu" in parts:
            m = mmlu_part(args, data_dir, model_dir, work)
            on, total, off_wall = m["on_off"]
            lines.append(f"MMLU 5-shot, {m['n']} questions ({m['subjects']} subjects), identical prompts "
                         f"{m['identical_prompts']}/{m['n']}\n"
                         f"  lm-eval  (HF, batch {m['lm_batch']}, loglik of ' A'..' D'): wall {m['lm_wall']:.1f} s   "
                         f"acc {m['lm_acc']:.4f}\n"
                         f"  glm-eval (letter logits, shared prefixes): wall {m['glm_wall']:.1f} s   "
                         f"acc {m['glm_acc']:.4f}   context tokens {m['tokens'][0]}, computed {m['tokens'][1]}\n"
                         f"  sharing on vs off: same letter {on}/{total} (off: {off_wall:.1f} s)\n"
                         f"speedup={m['lm_wall'] / m['glm_wall']:.2f} agreement={m['agreement']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
