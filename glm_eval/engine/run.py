"""One evaluation: config → task → requests → cached/batched inference → scoring → records → metrics → grid."""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf, open_dict
from tqdm import tqdm

from glm_eval.analysis.grid import rebuild_grid, register_run, write_published
from glm_eval.core.config import Backend as BackendKind
from glm_eval.core.config import (EndpointApi, EvalConfig, GenPreset, ModelConfig, PromptFormat, Protocol, Reasoning,
                                  Thinking, ToolFormat, decoding)
from glm_eval.core.errors import UserError, describe
from glm_eval.core.files import cache_root, writable_folder
from glm_eval.core.protocol import Backend, GenerationRequest, LoglikelihoodRequest, Request, Response
from glm_eval.engine.cache import ResponseCache
from glm_eval.engine.overrides import choices, config_file, model_config
from glm_eval.engine.parallel import Ranks, join, ranks
from glm_eval.engine.records import make_record, prompt_of, score_records, summarize, versions, write_run
from glm_eval.glm.prompts import Format, PromptRenderer, replies_reason
from glm_eval.scoring.reasoning import State, opens_reasoning, split_reply
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
        settings = dict(thinking=model.thinking, reasoning=self.reasoning, prompt_prefix=model.prompt_prefix,
                        tool_format=model.tool_format)
        if not self.remote:
            return PromptRenderer(self.source.load_tokenizer(), model.chat, model.prompt_format,
                                  self.source.max_input_length(), **settings)
        chat_api = model.backend == BackendKind.chatglm_api or model.endpoint.api == EndpointApi.chat
        source = self.tokenizer_source
        if source is None:
            return PromptRenderer(None, None, Format.messages if chat_api else Format.raw, **settings)
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
        if model.tool_format == ToolFormat.auto:  # the served model's own, as its prompt format
            settings["tool_format"] = named.tool_format
        return PromptRenderer(tokenizer, chat, prompt_format, budget, chat_api=chat_api, **settings)

    @cached_property
    def reasoning(self) -> Reasoning | None:
        """The model's thinking behaviour: its config's, or for an endpoint the one of the config model.tokenizer
        names (None: unknown)."""
        model = self.cfg.model
        if model.reasoning is None and self.remote and model.tokenizer in choices("model"):
            return model_config(model.tokenizer).reasoning
        return model.reasoning

    @property
    def reasons(self) -> bool:
        """Replies reason before answering (known before the tokenizer loads)."""
        return replies_reason(self.reasoning, self.cfg.model.thinking)

    def check_thinking(self) -> None:
        """model.thinking=on|off where the model, or the way it is reached, has no such switch: one line."""
        model, want = self.cfg.model, Thinking(self.cfg.model.thinking)
        if want == Thinking.auto:
            return
        if self.reasoning == Reasoning.none:
            raise UserError(f"model.thinking={want}: {model.name} does not think (its config says reasoning: none), so "
                            f"there is nothing to switch: drop model.thinking")
        if self.reasoning == Reasoning.always and want == Thinking.off:
            raise UserError(f"model.thinking=off: {model.name} always thinks (its template opens <think> in every "
                            f"reply; there is no switch): drop model.thinking, or evaluate a hybrid model (GLM-4.5+)")
        if model.backend == BackendKind.chatglm_api:
            raise UserError(f"model.thinking={want}: THUDM's api.py protocol has no thinking switch; use "
                            f"model=openai_api")

    def check_architecture(self) -> None:
        """model.architecture (a model config's family) against the checkpoint's config.json, before the weights."""
        expected = self.cfg.model.architecture
        found = (self.source.checkpoint_config.get("architectures") or [None])[0] if expected else None
        if expected and found and found != expected:
            raise UserError(f"model={self.cfg.model.name} expects a {expected} checkpoint, and {self.cfg.model.path} "
                            f"holds a {found}: point model.path at that model, or use model=hf for any checkpoint")

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            model = self.cfg.model
            if not self.remote:
                self.check_architecture()
            if model.backend == BackendKind.hf:
                from glm_eval.backends.hf import HFBackend
                self._backend = HFBackend(self.source, self.renderer.tokenizer, self.cfg.batch)
            elif model.backend == BackendKind.vllm:
                from glm_eval.backends.vllm import VLLMBackend
                self._backend = VLLMBackend(self.source, self.renderer.tokenizer)
            elif model.backend == BackendKind.openai_api:
                from glm_eval.backends.http import OpenAIBackend
                self._backend = OpenAIBackend(model.endpoint, model.name, tokenized=bool(model.tokenizer),
                                              thinking=model.thinking)
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
                        f"scored for aime24, aime25, gpqa_diamond, mmlu_pro, math, math500 (avg@n), gsm8k (majority "
                        f"vote), mbpp and humaneval (pass@1)")
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
    apply_protocol(cfg)
    task = load_task(cfg.task)
    settle_generation(cfg)
    check_task(cfg, task)
    judge = make_judge(cfg, [task])
    loaded = LoadedModel(cfg)
    loaded.check_thinking()
    return evaluate_task(cfg, loaded, task, judge)


def command_line_keys() -> set[str]:
    """The keys set on the command line (task.samples, …); none when called from Python."""
    from hydra.core.hydra_config import HydraConfig
    try:
        return {o.lstrip("+~").partition("=")[0] for o in HydraConfig.get().overrides.task}
    except ValueError:
        return set()


def apply_protocol(cfg: EvalConfig) -> None:
    """protocol=<name>: the task's settings under that protocol (the `protocols` block of its config: task.* and
    gen.* values), each one the command line does not set itself."""
    if Protocol(cfg.protocol) == Protocol.default:
        return
    preset = cfg.task.protocols.get(str(cfg.protocol))
    if preset is None:
        covered = [n for n in choices("task") if str(cfg.protocol) in (config_file("task", n).get("protocols")
                                                                        or {})]
        raise UserError(f"protocol={cfg.protocol} has no settings for {cfg.task.name}; it covers "
                        f"{', '.join(covered)} (drop protocol, or pick one of those tasks)")
    given = command_line_keys()
    for section in ("task", "gen"):
        for key, value in (preset.get(section) or {}).items():
            if key == "options":
                with open_dict(cfg.task.options):  # free-form keys
                    for option, setting in value.items():
                        if f"task.options.{option}" not in given:
                            cfg.task.options[option] = setting
            elif f"{section}.{key}" not in given:
                cfg[section][key] = value


def make_judge(cfg: EvalConfig, tasks: list[Task]):
    """The judge model (judge=<model config>) where a task has a judged step, checked reachable before the main model
    loads; None without one (a task whose judge is its metric refuses to run without)."""
    needs = [t.title for t in tasks if t.judge_required]
    if cfg.show_prompts:  # prints the model's prompts and exits: no judge is asked
        return None
    if cfg.judge is None:
        if needs:
            raise UserError(f"{needs[0]} is scored by a judge model: set judge=<model config> (e.g. judge=openai_api "
                            f"judge.endpoint.url=http://host:8000/v1)")
        return None
    if all(t.judged is None for t in tasks):
        log.warning(f"judge={cfg.judge.name}: {', '.join(t.title for t in tasks)} has no judged step; the judge is "
                    f"not used")
        return None
    from glm_eval.engine.judge import Judge
    judge = Judge(cfg, progress=cfg.progress)
    judge.check()
    return judge


def settle_generation(cfg: EvalConfig) -> None:
    """Concrete sampling settings, recorded in the run's config.yaml. gen.preset (unset: the task's published
    protocol, task.preset) =model fills every gen.* left unset from the model card (model.sampling); what is still
    unset is greedy. gen.samples unset is the task's (AIME: 32) when sampling, else 1."""
    gen, card, task = cfg.gen, cfg.model.sampling, cfg.task
    preset = GenPreset(task.preset if gen.preset is None else gen.preset)
    if preset == GenPreset.model:
        given = {k: card[k] for k in ("temperature", "top_p", "top_k", "max_new_tokens") if card[k] is not None}
        if not given and gen.preset is not None:
            raise UserError(f"gen.preset=model: {cfg.model.name}'s config gives no recommended sampling "
                            f"(model.sampling.*); set gen.temperature / gen.top_p / gen.top_k yourself")
        if not given:  # the task's protocol samples with the card's settings, and this card has none
            log.warning(f"{task.name} is published with the model card's sampling; {cfg.model.name}'s config names "
                        f"none (model.sampling.*), so it decodes greedily, one sample a document (set gen.temperature "
                        f"and gen.samples to sample)")
            preset = GenPreset.none
        for key, value in given.items():
            if gen[key] is None:
                gen[key] = value
    gen.preset = preset
    for key, value in decoding(gen).items():
        gen[key] = value
    if gen.samples is None:
        gen.samples = task.samples if gen.temperature > 0 else 1


def join_ranks(cfg: EvalConfig) -> Ranks:
    """Under torchrun: join the job (NCCL where the transformers backend puts each rank on a GPU, else gloo)."""
    world, engine = ranks().world, cfg.model.vllm
    if cfg.model.backend == BackendKind.vllm and world > 1 and engine.pipeline_parallel_size > 1:
        raise UserError(f"model.vllm.pipeline_parallel_size={engine.pipeline_parallel_size}: pipeline stages run in "
                        f"one engine that starts its own workers; start glm-eval without torchrun")
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
            task_cfg = copy.deepcopy(cfg)  # each task settles its own gen.* (AIME samples, IFEval is greedy)
            task_cfg.task = compose("config", overrides=[f"task={name}"]).task
            task_cfg.suite = None
        apply_protocol(task_cfg)
        task = load_task(task_cfg.task)
        settle_generation(task_cfg)
        check_task(task_cfg, task)
        configs.append((name, task_cfg, task))
    judge = make_judge(cfg, [task for _, _, task in configs])
    for name, task_cfg, task in configs:  # every task checked before the model loads
        if loaded is None:
            loaded = LoadedModel(task_cfg)
            loaded.check_thinking()
        results[name] = evaluate_task(task_cfg, loaded, task, judge)
    if cfg.show_prompts or not ranks().leader:
        return results
    write_published(Path(cfg.results_dir), OmegaConf.to_container(cfg.suite, resolve=True))
    grid = rebuild_grid(Path(cfg.results_dir))
    print(f"\n{cfg.suite.name} · {cfg.model.name}\n{(Path(cfg.results_dir) / 'grid.md').read_text()}")
    return {"suite": cfg.suite.name, "tasks": results, "grid_rows": len(grid)}


def evaluate_task(cfg: EvalConfig, loaded: LoadedModel, task: Task, judge=None) -> dict | None:
    started = time.time()
    if (loaded.remote or loaded.reasons) and task.multiple_choice and cfg.task.choice_scoring != "generate":
        # an endpoint returns text, not logits; a reasoning model answers after its reasoning, not at the next token
        if loaded.reasons:
            log.warning(f"{cfg.model.name} reasons before it answers: {task.title} is scored by generation "
                        f"(task.choice_scoring=generate), not by the next token's log-probabilities")
        cfg.task.choice_scoring = "generate"
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
            if renderer.reasoning == Reasoning.hybrid and renderer.format == Format.chat_template:
                for mode in (Thinking.on, Thinking.off):  # a switchable model: both prompts, each with its ids
                    other = renderer.with_thinking(mode)
                    show_prompts([task.requests(doc, task.shots(doc, cfg.data_dir), other, cfg.gen,
                                                list(cfg.model.stop)) for doc in docs[:cfg.show_prompts]],
                                 cfg.show_prompts, f"thinking {mode}")
            else:
                show_prompts(per_doc, cfg.show_prompts)
        return None
    check_budget(cfg, loaded, per_doc)

    writable_folder(Path(cfg.output_dir), "output_dir")  # before the work, not after it
    writable_folder(Path(cfg.results_dir), "results_dir")
    cache = ResponseCache(cache_root(cfg.cache_dir) / "responses.sqlite")
    try:
        backend = loaded.backend
        flat = [(d, r) for d, reqs in enumerate(per_doc) for r in reqs]
        answered = answer(cfg, backend, cache, flat, len(per_doc), loaded.remote)
        if answered is None:  # a rank other than 0 of a torchrun job: rank 0 writes the run
            return None
        by_doc: list[list[Response]] = [[] for _ in per_doc]
        for (d, _), response in zip(flat, answered.responses):
            by_doc[d].append(response)
        records = [make_record(task, doc, requests, answers, renderer.tokenizer, loaded.remote)
                   for doc, requests, answers in zip(docs, per_doc, by_doc)]
        # the main answers are all cached by now: the judge (if any) asks only after them, through the same cache
        score_records(task, records, by_doc, judge and judge.bind(cfg.judging.audit, cache, {}))
    finally:
        cache.close()

    budgets = [r.max_new_tokens for _, r in flat if isinstance(r, GenerationRequest)]
    metrics = summarize(records, task, max(budgets, default=None), judge and judge.describe())
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


def check_budget(cfg: EvalConfig, loaded: LoadedModel, per_doc: list[list[Request]]) -> None:
    """Before any weights load: a reply budget at or above the model's context, or (transformers backend) one whose
    KV cache the device cannot hold, is one line."""
    asked = [(len(r.prompt.token_ids), r.max_new_tokens) for reqs in per_doc for r in reqs
             if isinstance(r, GenerationRequest)]
    if not asked:
        return
    budget = max(b for _, b in asked)
    model = cfg.model
    if loaded.remote:
        context = loaded.backend.info.context_length  # what the server says (vLLM's max_model_len), else unknown
    else:
        config = loaded.source.checkpoint_config
        context = (model.vllm.max_model_len if model.backend == BackendKind.vllm else None) or model.max_length or \
            config.get("max_position_embeddings") or config.get("seq_length")
    if context and budget >= context and cfg.gen.max_new_tokens is None:  # the task's default: cut at the context
        log.warning(f"{cfg.task.name}'s budget of {budget} new tokens is not below {model.name}'s context of "
                    f"{context}: each reply ends where the context does (set gen.max_new_tokens to choose)")
    elif context and budget >= context:
        raise UserError(f"max_new_tokens={budget} is not below {model.name}'s context of {context} tokens, which the "
                        f"prompt shares: set gen.max_new_tokens below it")
    if model.backend != BackendKind.hf or not loaded.source.checkpoint_config:
        return
    from glm_eval.backends.generator import kv_bytes_per_token
    from glm_eval.backends.hf import free_memory, resolve_device_dtype
    device, dtype = resolve_device_dtype(model.device, model.dtype, model.device_index)
    per_token = kv_bytes_per_token(loaded.source.checkpoint_config, dtype)
    row = min(max(p + b for p, b in asked), context or 1 << 62)
    weights = loaded.source.weight_bytes(dtype)
    free = free_memory(device)
    if per_token and free is not None and per_token * row > free - weights:
        raise UserError(f"a reply budget of {budget} tokens: one row of {row:,} tokens needs "
                        f"{per_token * row / 2**30:.1f} GiB of KV cache ({per_token:,} B a token in {dtype}), and "
                        f"{device} has {max(free - weights, 0) / 2**30:.1f} GiB free beside the weights "
                        f"({weights / 2**30:.1f} GiB): lower gen.max_new_tokens, or use model.backend=vllm")


def show_prompts(per_doc: list[list[Request]], count: int, label: str = "") -> None:
    for doc_id, requests in enumerate(per_doc[:count]):
        prompt = prompt_of(requests[0])
        mode = label or {True: "reasons first", False: "thinking off", None: ""}[prompt.thinking]
        print(f"===== prompt {doc_id} ({len(prompt.token_ids)} tokens{f', {mode}' if mode else ''}) =====")
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
           num_docs: int, remote: bool = False) -> Answered | None:
    """Answer every request: from the response cache where possible, else from the backend, writing each
    new response through to the cache the moment it arrives. The progress bar counts documents (samples, where
    each document has several), with tokens/s and, for replies that reason, the share cut off in their reasoning so
    far. Under torchrun each rank answers its share and rank 0 gets all the answers (the other ranks get None)."""
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
    per_sample = cfg.gen.samples > 1  # the bar counts samples: AIME's 30 documents × 32 are 960 replies
    todo = len(pending) if per_sample else sum(1 for n in remaining if n)
    total = len(flat) if per_sample else num_docs
    desc = f"{cfg.model.name} · {cfg.task.name}" + (f" · rank 0 of {job.world}" if job.world > 1 else "")
    # under torchrun the bar counts rank 0's share: its ETA is the job's, shares being balanced
    bar = tqdm(total=todo if job.world > 1 else total, initial=0 if job.world > 1 else total - todo,
               unit="sample" if per_sample else "doc", desc=desc, disable=not cfg.progress or not job.leader,
               dynamic_ncols=True)
    started, tokens = time.time(), 0
    reasoning = {"replies": 0, "cut_off": 0}  # replies that reason, and those cut off inside their reasoning
    backend.take_stats()  # from here on, the counters are this task's alone

    def on_response(index: int, response: Response) -> None:
        nonlocal tokens
        responses[index] = response
        cache.put(keys[index], response)
        tokens += response.num_tokens
        doc, request = flat[index]
        remaining[doc] -= 1
        if isinstance(request, GenerationRequest) and request.prompt.thinking and response.error is None:
            reasoning["replies"] += 1
            reasoning["cut_off"] += split_reply(response.text, response.finish_reason, response.reasoning, True,
                                                opens_reasoning(request.prompt.text),
                                                tags_kept=not remote).state == State.cut_off
        if per_sample or remaining[doc] == 0:
            # live throughput: tokens of rows still decoding count too
            rate = backend.tokens_processed() / max(time.time() - started, 1e-9)
            cut = f", cut off {reasoning['cut_off'] / reasoning['replies']:.0%}" if reasoning["replies"] else ""
            bar.set_postfix_str(f"{rate:.0f} tok/s{cut}", refresh=False)
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
