"""One evaluation: config → task → requests → cached/batched inference → scoring → records → metrics → grid."""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from glm_eval.analysis.grid import rebuild_grid, register_run, write_published
from glm_eval.core.config import Backend as BackendKind
from glm_eval.core.config import EndpointApi, EvalConfig, ModelConfig, PromptFormat
from glm_eval.core.errors import UserError, describe
from glm_eval.core.files import cache_root, writable_folder
from glm_eval.core.protocol import Backend, GenerationRequest, LoglikelihoodRequest, Request, Response
from glm_eval.engine.cache import ResponseCache
from glm_eval.engine.overrides import choices, model_config
from glm_eval.engine.parallel import Ranks, join, ranks
from glm_eval.engine.records import make_record, prompt_of, score_records, summarize, versions, write_run
from glm_eval.glm.prompts import Format, PromptRenderer
from glm_eval.tasks import load_task
from glm_eval.tasks.base import Task

log = logging.getLogger(__name__)


class LoadedModel:
    """The model side of a run, each part loaded on first use (after the task's data, so a missing file costs no
    model load): the tokenizer and prompt format, then the backend (weights, or an endpoint's identity); a suite
    shares it. An HTTP endpoint has a tokenizer only with model.tokenizer: then its prompts are rendered, counted and
    truncated as in process; without one they go as chat turns (or, for a completions API, as raw text)."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.remote = BackendKind(cfg.model.backend).remote
        if self.remote and cfg.model.endpoint is None:
            raise UserError(f"model.backend={cfg.model.backend} needs model.endpoint.url=<URL>")
        if not self.remote and not cfg.model.path:
            raise UserError("model.path is not set: give model.path=<hub id or local folder>")
        if not self.remote and cfg.model.tokenizer:
            raise UserError(f"model.tokenizer is for endpoints (model=openai_api or chatglm_api); "
                            f"model.backend={cfg.model.backend} uses its checkpoint's own tokenizer: drop it")
        self._backend: Backend | None = None

    @cached_property
    def source(self):
        from glm_eval.backends.source import ModelSource
        return ModelSource(self.cfg.model)  # converted models live under GLM_EVAL_CACHE, whatever cache_dir says

    @cached_property
    def tokenizer_source(self):
        """An endpoint's model.tokenizer: a model config's name (its path, prompt format and budget), else a local
        folder or hub id. None without one (and for weights loaded here, whose own tokenizer is used)."""
        from glm_eval.backends.source import ModelSource
        spec = self.cfg.model.tokenizer
        if not self.remote or not spec:
            return None
        if spec in choices("model"):
            named = model_config(spec)
            if BackendKind(named.backend).remote:
                raise UserError(f"model.tokenizer={spec} is an endpoint's config; name a model with weights (e.g. "
                                f"chatglm3-6b-32k), a local tokenizer folder or a hub id")
        else:
            named = OmegaConf.structured(ModelConfig(name=spec, path=spec))
        try:
            return ModelSource(named)
        except UserError as e:
            raise UserError(f"model.tokenizer={spec}: {e}") from None

    @cached_property
    def renderer(self) -> PromptRenderer:
        model = self.cfg.model
        if not self.remote:
            return PromptRenderer(self.source.load_tokenizer(), model.chat, model.prompt_format,
                                  self.source.max_input_length())
        chat_api = model.backend == BackendKind.chatglm_api or model.endpoint.api == EndpointApi.chat
        source = self.tokenizer_source
        if source is None:
            return PromptRenderer(None, None, Format.messages if chat_api else Format.raw)
        named = source.cfg  # a model config's prompt settings, unless this run sets its own
        chat = model.chat if model.chat is not None else named.chat
        prompt_format = model.prompt_format if model.prompt_format != PromptFormat.auto else named.prompt_format
        try:
            tokenizer = source.load_tokenizer()
            budget = model.max_input_length or source.max_input_length()
        except UserError as e:
            raise UserError(f"model.tokenizer={model.tokenizer}: {e}") from None
        context = self.backend.info.context_length if budget is None else None
        if context and context > 500:  # as served (vLLM's max_model_len); a smaller one leaves no budget to use
            budget = context - 500
        return PromptRenderer(tokenizer, chat, prompt_format, budget, chat_api=chat_api)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            model = self.cfg.model
            if model.backend == BackendKind.hf:
                from glm_eval.backends.hf import HFBackend
                self._backend = HFBackend(self.source, self.renderer.tokenizer, self.cfg.batch)
            elif model.backend == BackendKind.vllm:
                from glm_eval.backends.vllm import VLLMBackend
                self._backend = VLLMBackend(self.source, self.renderer.tokenizer)
            elif model.backend == BackendKind.openai_api:
                from glm_eval.backends.http import OpenAIBackend
                self._backend = OpenAIBackend(model.endpoint, model.name, tokenized=bool(model.tokenizer))
            else:
                from glm_eval.backends.http import ChatGLMBackend
                self._backend = ChatGLMBackend(model.endpoint, model.name)
        return self._backend


def check_task(cfg: EvalConfig, task: Task) -> None:
    """What the typed config cannot know: options that depend on the task. Checked before any model loads."""
    shots = cfg.task.shots
    if task.shot_choices is not None and shots not in task.shot_choices:
        takes = " or ".join(map(str, task.shot_choices))
        raise UserError(f"task.shots={shots}: {task.title}'s protocol takes {takes} exemplars; set task.shots={takes}"
                        if len(task.shot_choices) > 1 else f"task.shots={shots}: {task.title} is evaluated 0-shot "
                        f"(its protocol has no exemplars); drop task.shots")
    if task.shot_choices is None and shots > 0 and not cfg.task.shot_local_file:
        raise UserError(f"task.shots={shots}: {task.title} has no exemplar split configured; set task.shot_split "
                        f"and task.shot_local_file, or drop task.shots")
    if task.counts_tokens and BackendKind(cfg.model.backend).remote and not cfg.model.tokenizer:
        raise UserError(f"{task.title} cuts prompts to a token budget, which an endpoint cannot do without the served "
                        f"model's tokenizer: set model.tokenizer=<model config name, local folder or hub id>")
    samples = cfg.gen.samples
    if samples > 1 and task.samples_scoring is None:
        raise UserError(f"gen.samples={samples}: {task.title} scores one sample per document; several samples are "
                        f"scored for gsm8k, math, math500 (majority vote, pass@k), mbpp and humaneval (pass@k)")
    if samples > 1 and cfg.gen.temperature == 0:
        raise UserError(f"gen.samples={samples} with greedy decoding gives {samples} identical samples; "
                        f"set gen.temperature>0 (e.g. 0.8)")


def evaluate(cfg: EvalConfig) -> dict | None:
    """Run the configured task (or suite): its metrics (the suite's tasks' metrics), None for show_prompts."""
    job = join_ranks(cfg)
    if cfg.threads or job.local_world > 1:  # under torchrun on CPU, each rank gets its share of the cores
        import torch
        torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0)) // job.local_world))
    if job.world > 1 and cfg.model.device_index is None:
        cfg.model.device_index = job.local_rank  # one device per rank (used where the model goes to a GPU)
    if cfg.suite is not None:
        return evaluate_suite(cfg)
    task = load_task(cfg.task)
    check_task(cfg, task)
    return evaluate_task(cfg, LoadedModel(cfg), task)


def join_ranks(cfg: EvalConfig) -> Ranks:
    """Under torchrun: join the job (NCCL where the transformers backend puts each rank on a GPU, else gloo)."""
    world, engine = ranks().world, cfg.model.vllm
    replicas = world // engine.tensor_parallel_size
    if cfg.model.backend == BackendKind.vllm and engine.data_parallel_size not in (None, replicas):
        raise UserError(f"model.vllm.data_parallel_size={engine.data_parallel_size} with tensor_parallel_size="
                        f"{engine.tensor_parallel_size} runs under torchrun --nproc-per-node "
                        f"{engine.data_parallel_size * engine.tensor_parallel_size} (this job has {world} process"
                        f"{'es' if world > 1 else ''}): one process per GPU, vLLM's external launcher")
    if world == 1:
        return ranks()
    if cfg.model.backend == BackendKind.vllm:  # vLLM places its own workers; tensor-parallel peers share one replica
        return join(gpu=False, ranks_per_share=cfg.model.vllm.tensor_parallel_size)
    if cfg.model.backend == BackendKind.hf:
        from glm_eval.backends.hf import resolve_device_dtype
        return join(gpu=resolve_device_dtype(cfg.model.device, cfg.model.dtype)[0] == "cuda")
    return join(gpu=False)


def evaluate_suite(cfg: EvalConfig) -> dict:
    """Every task of the suite for one model, loaded once; the other overrides apply to each task."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    try:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("suite=", "task="))]
    except ValueError:  # called from Python, not the command line: the config's own values stand (task.* aside)
        overrides = None
    if any(o.startswith("output_dir=") for o in overrides or []):
        raise UserError("a suite writes each task to results_dir/<model>/<task>; set results_dir, not output_dir")
    loaded, results, configs = None, {}, []
    for name in cfg.suite.tasks:
        if overrides is not None:
            task_cfg = compose("config", overrides=[*overrides, f"task={name}"])
        else:  # the task's own config replaces the node whole (a merge would keep the previous task's options)
            task_cfg = cfg.copy()
            task_cfg.task = compose("config", overrides=[f"task={name}"]).task
            task_cfg.suite = None
        task = load_task(task_cfg.task)
        check_task(task_cfg, task)
        configs.append((name, task_cfg, task))
    for name, task_cfg, task in configs:  # every task checked before the model loads
        loaded = loaded or LoadedModel(task_cfg)
        results[name] = evaluate_task(task_cfg, loaded, task)
    if cfg.show_prompts or not ranks().leader:
        return results
    write_published(Path(cfg.results_dir), OmegaConf.to_container(cfg.suite, resolve=True))
    grid = rebuild_grid(Path(cfg.results_dir))
    print(f"\n{cfg.suite.name} · {cfg.model.name}\n{(Path(cfg.results_dir) / 'grid.md').read_text()}")
    return {"suite": cfg.suite.name, "tasks": results, "grid_rows": len(grid)}


def evaluate_task(cfg: EvalConfig, loaded: LoadedModel, task: Task) -> dict | None:
    started = time.time()
    if loaded.remote and cfg.task.choice_scoring != "generate":
        cfg.task.choice_scoring = "generate"  # an endpoint returns text, not logits
        task = load_task(cfg.task)
    documents = task.documents(cfg.data_dir)
    if documents.malformed:
        log.warning(f"{documents.malformed} malformed rows in {documents.source} skipped, e.g. "
                    f"{'; '.join(documents.malformed_examples[:2])}")
    docs = task.limit(documents.docs, cfg.limit)
    renderer = loaded.renderer
    per_doc = [task.requests(doc, task.shots(doc, cfg.data_dir), renderer, cfg.gen, list(cfg.model.stop))
               for doc in docs]
    if cfg.show_prompts:
        if ranks().leader:
            show_prompts(per_doc, cfg.show_prompts)
        return None

    writable_folder(Path(cfg.output_dir), "output_dir")  # before the work, not after it
    writable_folder(Path(cfg.results_dir), "results_dir")
    cache = ResponseCache(cache_root(cfg.cache_dir) / "responses.sqlite")
    try:
        backend = loaded.backend
        flat = [(d, r) for d, reqs in enumerate(per_doc) for r in reqs]
        answered = answer(cfg, backend, cache, flat, len(per_doc))
    finally:
        cache.close()
    if answered is None:  # a rank other than 0 of a torchrun job: rank 0 writes the run
        return None
    by_doc: list[list[Response]] = [[] for _ in per_doc]
    for (d, _), response in zip(flat, answered.responses):
        by_doc[d].append(response)
    records = [make_record(task, doc, requests, answers) for doc, requests, answers in zip(docs, per_doc, by_doc)]
    score_records(task, records, by_doc)

    metrics = summarize(records, task)
    metrics.update({
        "model": cfg.model.name,
        "generated": answered.generated, "from_cache": len(flat) - answered.generated,
        **({"answered_per_replica": answered.per_replica} if len(answered.per_replica) > 1 else {}),
        "wall_s": round(time.time() - started, 2),
        "generation_s": round(answered.seconds, 2),
        "generated_tokens": answered.tokens,
        "generated_tokens_per_s": round(answered.tokens / answered.seconds, 2) if answered.generated else None,
        "malformed_rows": documents.malformed,
        "data": {"source": documents.source, "sha256": documents.sha256},
        "prompt_sha256": hashlib.sha256("\n".join(prompt_of(r[0]).text for r in per_doc).encode()).hexdigest(),
        "choice_scoring": cfg.task.choice_scoring if task.multiple_choice else None,
        "model_fingerprint": backend.info.fingerprint,
        "dtype": backend.info.dtype, "device": backend.info.device, "context_length": backend.info.context_length,
        "prompt_format": renderer.format,
        "batch": OmegaConf.to_container(cfg.batch),
        "backend_stats": backend.take_stats(),  # this task's work alone, also inside a suite
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    try:
        write_run(Path(cfg.output_dir), OmegaConf.to_yaml(cfg, resolve=True), records, metrics)
    except OSError as e:
        kept = (f"its answers are in the response cache {cache.path}: rerun the same command to write them without "
                "generating again" if cache.writable else "the response cache could not keep its answers either")
        raise UserError(f"could not write the run to {cfg.output_dir} ({describe(e)}); {kept} once there is room, "
                        f"or set output_dir=<another folder>") from None
    register_run(Path(cfg.results_dir), Path(cfg.output_dir))
    rebuild_grid(Path(cfg.results_dir))
    print(f"{cfg.model.name} · {cfg.task.name}: {metrics['metric']} ({metrics['average']}) "
          f"{metrics['score']:.4f} ± {metrics['stderr']:.4f} "
          f"(n={metrics['n']}, failed={metrics['failed']}, generated={metrics['generated']}, "
          f"from cache={metrics['from_cache']}) → {cfg.output_dir}")
    return metrics


def show_prompts(per_doc: list[list[Request]], count: int) -> None:
    for doc_id, requests in enumerate(per_doc[:count]):
        prompt = prompt_of(requests[0])
        print(f"===== prompt {doc_id} ({len(prompt.token_ids)} tokens) =====")
        print(prompt.text)
        print(f"----- token ids -----\n{list(prompt.token_ids)}")
        if isinstance(requests[0], LoglikelihoodRequest):
            print(f"----- scored continuations -----\n{[list(c) for c in requests[0].continuations]}")


@dataclass
class Answered:
    responses: list[Response]
    generated: int  # requests answered by the model in this run (the rest came from the cache)
    tokens: int
    seconds: float
    per_replica: list[int]  # requests each rank (vLLM: each replica) answered; one entry outside torchrun


def answer(cfg: EvalConfig, backend: Backend, cache: ResponseCache, flat: list[tuple[int, Request]],
           num_docs: int) -> Answered | None:
    """Answer every request: from the response cache where possible, else from the backend, writing each
    new response through to the cache the moment it arrives. The progress bar counts documents. Under torchrun
    each rank answers its share and rank 0 gets all the answers (the other ranks get None)."""
    job = ranks()
    keys = [ResponseCache.key(backend.info.fingerprint, r) for _, r in flat]
    cached = {} if cfg.overwrite or not job.leader else cache.get_many(keys)  # rank 0 alone needs the answers
    responses: list[Response | None] = [cached.get(k) for k in keys]
    # rank 0's view of what is unanswered, on every rank: all split the same list, also while others write the cache
    pending = job.agree([i for i, r in enumerate(responses) if r is None])
    unanswered = len(pending)
    if job.world > 1:
        pending = my_share(job, backend, flat, pending)
    remaining = [0] * num_docs  # requests still unanswered per document
    for i in pending:
        remaining[flat[i][0]] += 1
    todo = sum(1 for n in remaining if n)
    desc = f"{cfg.model.name} · {cfg.task.name}" + (f" · rank 0 of {job.world}" if job.world > 1 else "")
    # under torchrun the bar counts rank 0's share: its ETA is the job's, shares being balanced
    bar = tqdm(total=todo if job.world > 1 else num_docs, initial=0 if job.world > 1 else num_docs - todo,
               unit="doc", desc=desc, disable=not cfg.progress or not job.leader, dynamic_ncols=True)
    started, tokens = time.time(), 0
    backend.take_stats()  # from here on, the counters are this task's alone

    def on_response(index: int, response: Response) -> None:
        nonlocal tokens
        responses[index] = response
        cache.put(keys[index], response)
        tokens += response.num_tokens
        doc = flat[index][0]
        remaining[doc] -= 1
        if remaining[doc] == 0:
            # live throughput: tokens of rows still decoding count too
            rate = backend.tokens_processed() / max(time.time() - started, 1e-9)
            bar.set_postfix_str(f"{rate:.0f} tok/s", refresh=False)
            bar.update(1)

    try:
        for kind, call in ((GenerationRequest, backend.generate), (LoglikelihoodRequest, backend.loglikelihood)):
            batch = [i for i in pending if isinstance(flat[i][1], kind)]
            # under torchrun every rank makes both calls, even with nothing to answer: vLLM's replicas step together
            if batch or job.world > 1:
                call([flat[i][1] for i in batch], lambda position, response, batch=batch:
                     on_response(batch[position], response))
    except KeyboardInterrupt:
        bar.close()
        done = sum(r is not None for r in responses)
        print(f"interrupted: {done}/{len(responses)} responses are cached; rerun the same command to resume"
              if job.world == 1 else f"interrupted (rank {job.rank} of {job.world}): the answers finished so far "
              "are cached; rerun the same command, on any number of ranks, to resume", file=sys.stderr)
        raise SystemExit(130)
    bar.close()
    parts = job.gather(({i: responses[i] for i in pending}, tokens))
    if parts is None:
        return None
    replicas = parts[::job.ranks_per_share]  # vLLM's tensor-parallel peers hold the same answers
    for answers, _ in replicas:
        for i, response in answers.items():
            responses[i] = response
    return Answered(responses, unanswered, sum(t for _, t in replicas), time.time() - started,
                    [len(answers) for answers, _ in replicas])


def my_share(job: Ranks, backend: Backend, flat: list[tuple[int, Request]], pending: list[int]) -> list[int]:
    """This rank's share of the unanswered requests: whole batches as the backend forms them, balanced by tokens."""
    mine = []
    for kind in (GenerationRequest, LoglikelihoodRequest):
        ours = [i for i in pending if isinstance(flat[i][1], kind)]
        if ours:
            requests = [flat[i][1] for i in ours]
            mine += [ours[p] for p in job.share(backend.groups(requests), [_length(r) for r in requests])]
    return sorted(mine)


def _length(request: Request) -> int:
    prompt = prompt_of(request)
    return len(prompt.token_ids) or len(prompt.text)
