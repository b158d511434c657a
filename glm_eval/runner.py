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
from glm_eval.errors import UserError
from glm_eval.grid import rebuild_grid, register_run, write_published
from glm_eval.models import HFBackend, ModelSource, PromptRenderer, cache_root
from glm_eval.protocol import GenerationRequest, LoglikelihoodRequest, Prompt, Request, Response
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


def stderr_of_weighted_means(parts: list[tuple[float, list[float]]]) -> float:
    """Standard error of Σ weight · mean(values) over independent groups: sqrt(Σ weight² · stderr²); a group of
    one value has no stderr and adds nothing."""
    errors = [(weight, mean_and_stderr(values)[1]) for weight, values in parts]
    return math.sqrt(sum(weight * weight * e * e for weight, e in errors if e == e))


def summarize(records: list[dict], task) -> dict:
    """Score fields of metrics.json from per-document records (shared with rescore). With subjects: the micro
    (per question) and macro (mean of subjects) averages, per subject and per category (a category averages its
    subjects the way the headline does); `score` is the task's headline average."""
    scored = [r for r in records if "error" not in r and "scoring_error" not in r]
    micro, stderr = mean_and_stderr([sample_value(r) for r in scored])
    out = {"task": task.cfg.name, "metric": task.metric, "score": micro, "stderr": stderr, "average": "micro",
           "n": len(scored), "failed": len(records) - len(scored)}
    if all("correct" in r for r in scored):
        out["correct"] = sum(bool(r["correct"]) for r in scored)
    by_subject: dict[str, list[float]] = {}
    category_of: dict[str, set[str]] = {}  # a subject may belong to several groups (CMMLU's "China specific")
    for r in scored:
        if "subject" in r:
            by_subject.setdefault(r["subject"], []).append(sample_value(r))
            groups = r.get("category") or []
            category_of[r["subject"]] = set([groups] if isinstance(groups, str) else groups)
    if not by_subject:
        return {**out, **task.aggregate(scored)}
    subjects = {s: {"score": sum(v) / len(v), "n": len(v)} for s, v in sorted(by_subject.items())}
    macro = sum(x["score"] for x in subjects.values()) / len(subjects)
    macro_stderr = stderr_of_weighted_means([(1 / len(subjects), v) for v in by_subject.values()])
    categories: dict[str, dict] = {}
    for category in sorted(set().union(*category_of.values())):
        members = [s for s in subjects if category in category_of[s]]
        values = [v for s in members for v in by_subject[s]]
        average = (sum(subjects[s]["score"] for s in members) / len(members) if task.headline == "macro"
                   else sum(values) / len(values))
        categories[category] = {"score": average, "n": len(values), "subjects": len(members)}
    out.update(micro=micro, macro=macro, subjects=subjects, categories=categories, average=task.headline)
    if task.headline == "macro":
        out.update(score=macro, stderr=macro_stderr)
    return {**out, **task.aggregate(scored)}


def sample_value(record: dict) -> float:
    """A document's value: its graded `score` (LongBench's F1, ROUGE, …) or 1/0 for `correct`."""
    return float(record["score"] if "score" in record else record["correct"])


def quiet_transformers() -> None:
    """Our own progress bar is the one that matters; drop transformers' per-load bars and notices."""
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_requests(cfg: EvalConfig, task, renderer, docs) -> list[list[Request]]:
    return [task.requests(doc, task.shots(doc, cfg.data_dir), renderer, cfg.gen, list(cfg.model.stop))
            for doc in docs]


def prompt_of(request: Request) -> Prompt:
    return request.prompt if isinstance(request, GenerationRequest) else request.context


def show_prompts(per_doc: list[list[Request]], count: int) -> None:
    for doc_id, requests in enumerate(per_doc[:count]):
        prompt = prompt_of(requests[0])
        print(f"===== prompt {doc_id} ({len(prompt.token_ids)} tokens) =====")
        print(prompt.text)
        print(f"----- token ids -----\n{list(prompt.token_ids)}")
        if isinstance(requests[0], LoglikelihoodRequest):
            print(f"----- scored continuations -----\n{[list(c) for c in requests[0].continuations]}")


BACKENDS = ("hf", "openai_api", "chatglm_api")


class LoadedModel:
    """The model side of a run: tokenizer and prompt format now, weights on first use; a suite shares it.
    An HTTP endpoint has no tokenizer here: prompts go as chat turns (or, for a completions API, as raw text)."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        if cfg.model.backend not in BACKENDS:
            raise UserError(f"unknown model.backend {cfg.model.backend!r}; valid: {', '.join(BACKENDS)}")
        self.remote = cfg.model.backend != "hf"
        if self.remote:
            if cfg.model.endpoint is None:
                raise UserError(f"model.backend={cfg.model.backend} needs model.endpoint.url=<URL>")
            completions = cfg.model.backend == "openai_api" and cfg.model.endpoint.api == "completions"
            self.renderer = PromptRenderer(None, None, "raw" if completions else "messages")
        else:
            if not cfg.model.path:
                raise UserError("model.path is not set: give model.path=<hub id or local folder>")
            self.source = ModelSource(cfg.model)  # converted models live under GLM_EVAL_CACHE, whatever cache_dir says
            self.renderer = PromptRenderer(self.source.load_tokenizer(), cfg.model.chat, cfg.model.prompt_format,
                                           self.source.max_input_length())
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            c = self.cfg
            if self.remote:
                from glm_eval.http_backends import ChatGLMBackend, OpenAIBackend
                kind = OpenAIBackend if c.model.backend == "openai_api" else ChatGLMBackend
                self._backend = kind(c.model.endpoint, c.model.name)
            else:
                self._backend = HFBackend(self.source, self.renderer.tokenizer, c.model.device, c.model.dtype,
                                          c.batch.max_rows, c.batch.max_tokens, c.batch.prefill_tokens)
        return self._backend


def evaluate(cfg: EvalConfig) -> dict | None:
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)
    quiet_transformers()
    if cfg.suite is not None:
        return evaluate_suite(cfg)
    return evaluate_task(cfg, LoadedModel(cfg))


def evaluate_suite(cfg: EvalConfig) -> dict:
    """Every task of the suite for one model, loaded once; the other overrides apply to each task."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    try:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("suite=", "task="))]
    except ValueError:  # called from Python, not the command line: the config's own values are the overrides
        overrides = None
    if any(o.startswith("output_dir=") for o in overrides or []):
        raise UserError("a suite writes each task to results_dir/<model>/<task>; set results_dir, not output_dir")
    loaded, results = None, {}
    for name in cfg.suite.tasks:
        if overrides is not None:
            task_cfg = compose("config", overrides=[*overrides, f"task={name}"])
        else:
            task_cfg = OmegaConf.merge(cfg, {"task": compose("config", overrides=[f"task={name}"]).task})
            task_cfg.suite = None
        loaded = loaded or LoadedModel(task_cfg)
        results[name] = evaluate_task(task_cfg, loaded)
    if cfg.show_prompts:
        return results
    write_published(Path(cfg.results_dir), OmegaConf.to_container(cfg.suite, resolve=True))
    grid = rebuild_grid(Path(cfg.results_dir))
    print(f"\n{cfg.suite.name} · {cfg.model.name}\n{(Path(cfg.results_dir) / 'grid.md').read_text()}")
    return {"suite": cfg.suite.name, "tasks": results, "grid_rows": len(grid)}


def evaluate_task(cfg: EvalConfig, loaded: LoadedModel) -> dict | None:
    started = time.time()
    if loaded.remote and cfg.task.choice_scoring != "generate":
        cfg.task.choice_scoring = "generate"  # an endpoint returns text, not logits
    task = load_task(cfg.task)
    renderer = loaded.renderer
    documents = task.documents(cfg.data_dir)
    if documents.malformed:
        print(f"warning: {documents.malformed} malformed rows in {documents.source} skipped, e.g. "
              f"{'; '.join(documents.malformed_examples[:2])}", file=sys.stderr)
    docs = task.limit(documents.docs, cfg.limit)
    per_doc = build_requests(cfg, task, renderer, docs)
    if cfg.show_prompts:
        show_prompts(per_doc, cfg.show_prompts)
        return None

    backend = loaded.backend
    flat = [(d, r) for d, reqs in enumerate(per_doc) for r in reqs]
    answered = answer(cfg, backend, flat, len(per_doc))
    by_doc: list[list[Response]] = [[] for _ in per_doc]
    for (d, _), response in zip(flat, answered.responses):
        by_doc[d].append(response)
    records = [make_record(task, doc, requests, answers) for doc, requests, answers in zip(docs, per_doc, by_doc)]
    score_records(task, records, by_doc)

    metrics = summarize(records, task)
    metrics.update({
        "model": cfg.model.name,
        "generated": answered.generated, "from_cache": len(flat) - answered.generated,
        "wall_s": round(time.time() - started, 2),
        "generation_s": round(answered.seconds, 2),
        "generated_tokens": answered.tokens,
        "generated_tokens_per_s": round(answered.tokens / answered.seconds, 2) if answered.generated else None,
        "malformed_rows": documents.malformed,
        "data": {"source": documents.source, "sha256": documents.sha256},
        "prompt_sha256": hashlib.sha256("\n".join(prompt_of(r[0]).text for r in per_doc).encode()).hexdigest(),
        "choice_scoring": cfg.task.choice_scoring if task.multiple_choice else None,
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
    print(f"{cfg.model.name} · {cfg.task.name}: {metrics['metric']} ({metrics['average']}) "
          f"{metrics['score']:.4f} ± {metrics['stderr']:.4f} "
          f"(n={metrics['n']}, failed={metrics['failed']}, generated={metrics['generated']}, "
          f"from cache={metrics['from_cache']}) → {cfg.output_dir}")
    return metrics


@dataclass
class Answered:
    responses: list[Response]
    generated: int  # requests answered by the model in this run (the rest came from the cache)
    tokens: int
    seconds: float


def answer(cfg: EvalConfig, backend, flat: list[tuple[int, Request]], num_docs: int) -> Answered:
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

    def on_response(index: int, response: Response) -> None:
        nonlocal tokens
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
        for kind, call in ((GenerationRequest, backend.generate), (LoglikelihoodRequest, backend.loglikelihood)):
            batch = [i for i in pending if isinstance(flat[i][1], kind)]
            if batch:
                call([flat[i][1] for i in batch], lambda position, response, batch=batch:
                     on_response(batch[position], response))
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


def make_record(task, doc: dict, requests: list[Request], answers: list[Response]) -> dict:
    """What a reader needs to check one document: the prompt, the raw output (or the scored log-probs), and the
    fields the task scores it with (so rescore needs no data files)."""
    record = {"doc_id": doc["doc_id"], **{k: doc[k] for k in ("subject", "category") if k in doc}}
    prompt = prompt_of(requests[0])
    record["prompt"] = prompt.text
    if task.prompt_excerpt and len(prompt.text) > 2 * task.prompt_excerpt + 100:  # long-context prompts: ends only
        cut = len(prompt.text) - 2 * task.prompt_excerpt
        record["prompt"] = (f"{prompt.text[:task.prompt_excerpt]}\n[… {cut} characters not stored …]\n"
                            f"{prompt.text[-task.prompt_excerpt:]}")
        record["prompt_tokens"] = len(prompt.token_ids)
    if isinstance(requests[0], GenerationRequest):
        record["output"] = answers[0].text
        if len(answers) > 1:
            record["outputs"] = [a.text for a in answers]
        record["finish_reason"] = answers[0].finish_reason
        record["num_tokens"] = answers[0].num_tokens
    else:
        record["logprobs"] = answers[0].logprobs
    record.update({k: doc[k] for k in task.record_fields})
    errors = [a.error for a in answers if a.error]
    if errors:
        record["error"] = errors[0]  # a failed request is not a wrong answer
    return record


def answers_from_record(record: dict) -> list[Response]:
    if "logprobs" in record:
        return [Response(logprobs=record["logprobs"])]
    return [Response(text=t) for t in record.get("outputs") or [record["output"]]]


def score_records(task, records: list[dict], answers: list[list[Response]]) -> None:
    """Add the task's extraction and verdict to every record whose requests succeeded."""
    ok = [i for i, r in enumerate(records) if "error" not in r]
    for i, fields in zip(ok, task.score_all([answers[i] for i in ok], [records[i] for i in ok])):
        for stale in ("scoring_error", "correct", "score"):  # rescore: a verdict is replaced, never mixed with an old one
            records[i].pop(stale, None)
        records[i].update(fields)


def write_records(output_dir: Path, records: list[dict]) -> None:
    with open(output_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_run(output_dir: Path, config_yaml: str, records: list[dict], metrics: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(config_yaml)
    write_records(output_dir, records)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
