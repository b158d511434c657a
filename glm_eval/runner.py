"""One evaluation: config → task → requests → cached/batched inference → scoring → records → metrics → grid."""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from glm_eval.cache import ResponseCache
from glm_eval.config import EvalConfig
from glm_eval.grid import rebuild_grid, register_run
from glm_eval.models import HFBackend, ModelSource, PromptRenderer, cache_root
from glm_eval.protocol import GenerationRequest, Response
from tasks import load_task

VERSIONED = ["glm-eval", "torch", "transformers", "datasets", "hydra-core", "tokenizers"]


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["python"] = sys.version.split()[0]
    return found


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and the standard error of the mean (sample standard deviation / sqrt(n)), as lm-eval reports."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def summarize(records: list[dict], task_name: str) -> dict:
    """Score fields of metrics.json from per-document records (shared with rescore)."""
    scored = [r for r in records if "error" not in r]
    score, stderr = mean_and_stderr([float(r["correct"]) for r in scored])
    return {"task": task_name, "metric": "accuracy", "score": score, "stderr": stderr, "n": len(scored),
            "correct": sum(bool(r["correct"]) for r in scored), "failed": len(records) - len(scored)}


def quiet_transformers() -> None:
    """Our own progress bar is the one that matters; drop transformers' per-load bars and notices."""
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_requests(cfg: EvalConfig, task, renderer, docs) -> list[list[GenerationRequest]]:
    return [task.requests(doc, task.shots(doc, cfg.data_dir), renderer.render, cfg.gen, list(cfg.model.stop))
            for doc in docs]


def show_prompts(per_doc: list[list[GenerationRequest]], count: int) -> None:
    for doc_id, requests in enumerate(per_doc[:count]):
        prompt = requests[0].prompt
        print(f"===== prompt {doc_id} ({len(prompt.token_ids)} tokens) =====")
        print(prompt.text)
        print(f"----- token ids -----\n{list(prompt.token_ids)}")


def evaluate(cfg: EvalConfig) -> dict | None:
    started = time.time()
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)
    quiet_transformers()
    task = load_task(cfg.task)
    source = ModelSource(cfg.model)  # converted models live under GLM_EVAL_CACHE, whatever cache_dir says
    renderer = PromptRenderer(source.load_tokenizer(), cfg.model.chat, cfg.model.prompt_format)
    documents = task.documents(cfg.data_dir)
    if documents.malformed:
        print(f"warning: {documents.malformed} malformed rows in {documents.source} skipped, e.g. "
              f"{'; '.join(documents.malformed_examples[:2])}", file=sys.stderr)
    docs = documents.docs[:cfg.limit] if cfg.limit is not None else documents.docs
    per_doc = build_requests(cfg, task, renderer, docs)
    if cfg.show_prompts:
        show_prompts(per_doc, cfg.show_prompts)
        return None

    backend = HFBackend(source, renderer.tokenizer, cfg.model.device, cfg.model.dtype, cfg.batch.max_rows,
                        cfg.batch.max_tokens, cfg.batch.prefill_tokens)
    flat = [(d, r) for d, reqs in enumerate(per_doc) for r in reqs]
    answered = answer(cfg, backend, flat, len(per_doc))
    by_doc: list[list[Response]] = [[] for _ in per_doc]
    for (d, _), response in zip(flat, answered.responses):
        by_doc[d].append(response)
    records = [make_record(task, doc, requests, answers) for doc, requests, answers in zip(docs, per_doc, by_doc)]

    metrics = summarize(records, cfg.task.name)
    metrics.update({
        "model": cfg.model.name,
        "generated": answered.generated, "from_cache": len(flat) - answered.generated,
        "wall_s": round(time.time() - started, 2),
        "generation_s": round(answered.seconds, 2),
        "generated_tokens": answered.tokens,
        "generated_tokens_per_s": round(answered.tokens / answered.seconds, 2) if answered.generated else None,
        "malformed_rows": documents.malformed,
        "data": {"source": documents.source, "sha256": documents.sha256},
        "prompt_sha256": hashlib.sha256("\n".join(r["prompt"] for r in records).encode()).hexdigest(),
        "model_fingerprint": backend.fingerprint,
        "dtype": backend.dtype, "device": backend.device, "prompt_format": renderer.format,
        "batch": OmegaConf.to_container(cfg.batch),
        "generator": backend.stats() if hasattr(backend, "stats") else {},
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    write_run(Path(cfg.output_dir), OmegaConf.to_yaml(cfg, resolve=True), records, metrics)
    register_run(Path(cfg.results_dir), Path(cfg.output_dir))
    rebuild_grid(Path(cfg.results_dir))
    print(f"{cfg.model.name} · {cfg.task.name}: accuracy {metrics['score']:.4f} ± {metrics['stderr']:.4f} "
          f"(n={metrics['n']}, failed={metrics['failed']}, generated={metrics['generated']}, "
          f"from cache={metrics['from_cache']}) → {cfg.output_dir}")
    return metrics


@dataclass
class Answered:
    responses: list[Response]
    generated: int  # requests answered by the model in this run (the rest came from the cache)
    tokens: int
    seconds: float


def answer(cfg: EvalConfig, backend, flat: list[tuple[int, GenerationRequest]], num_docs: int) -> Answered:
    """Answer every request: from the response cache where possible, else from the backend, writing each
    new response through to the cache the moment it arrives. The progress bar counts documents."""
    cache = ResponseCache(cache_root(cfg.cache_dir) / "responses.sqlite")
    keys = [ResponseCache.key(backend.fingerprint, r) for _, r in flat]
    cached = {} if cfg.overwrite else cache.get_many(keys)
    responses: list[Response | None] = [cached.get(k) for k in keys]
    pending = [i for i, r in enumerate(responses) if r is None]
    remaining = [0] * num_docs  # requests still unanswered per document
    for i in pending:
        remaining[flat[i][0]] += 1
    bar = tqdm(total=num_docs, initial=sum(1 for n in remaining if n == 0), unit="doc",
               desc=f"{cfg.model.name} · {cfg.task.name}", disable=not cfg.progress, dynamic_ncols=True)
    started, tokens = time.time(), 0

    def on_response(position: int, response: Response) -> None:
        nonlocal tokens
        index = pending[position]
        responses[index] = response
        cache.put(keys[index], response)
        tokens += response.num_tokens
        doc = flat[index][0]
        remaining[doc] -= 1
        if remaining[doc] == 0:
            # live throughput: tokens of rows still decoding count too, where the backend reports them
            live_tokens = getattr(backend, "tokens_generated", tokens)
            bar.set_postfix_str(f"{live_tokens / max(time.time() - started, 1e-9):.0f} tok/s", refresh=False)
            bar.update(1)

    try:
        backend.generate([flat[i][1] for i in pending], on_response)
    except KeyboardInterrupt:
        bar.close()
        done = sum(r is not None for r in responses)
        print(f"interrupted: {done}/{len(responses)} responses are cached; rerun the same command to resume",
              file=sys.stderr)
        raise SystemExit(130)
    finally:
        cache.close()
    bar.close()
    return Answered(responses, len(pending), tokens, time.time() - started)


def make_record(task, doc: dict, requests: list[GenerationRequest], answers: list[Response]) -> dict:
    record = {"doc_id": doc["doc_id"], "prompt": requests[0].prompt.text, "output": answers[0].text}
    if len(answers) > 1:
        record["outputs"] = [a.text for a in answers]
    record["finish_reason"] = answers[0].finish_reason
    record["num_tokens"] = answers[0].num_tokens
    errors = [a.error for a in answers if a.error]
    if errors:
        record.update(gold=doc["gold"], error=errors[0])  # a failed request is not a wrong answer
    else:
        record.update(task.score([a.text for a in answers], doc["gold"]))
    return record


def write_records(output_dir: Path, records: list[dict]) -> None:
    with open(output_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_run(output_dir: Path, config_yaml: str, records: list[dict], metrics: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(config_yaml)
    write_records(output_dir, records)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
