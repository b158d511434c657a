"""Typed Hydra structured configs. YAML files under configs/ fill these; unknown keys are errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EndpointConfig:
    """A deployed model reached over HTTP (model.backend=openai_api | chatglm_api)."""
    url: str = MISSING  # openai_api: base URL ending in /v1; chatglm_api: the POST URL of api.py (http://host:8000/)
    api: str = "chat"  # openai_api: chat (/chat/completions, messages) | completions (/completions, prompt text)
    model: Optional[str] = None  # the `model` field of OpenAI requests; default: model.name
    api_key_env: Optional[str] = None  # environment variable holding a bearer key (the key never sits in a config)
    concurrency: int = 8  # requests in flight
    timeout_s: float = 300.0  # per attempt
    retries: int = 4  # further attempts after connection errors, timeouts, malformed replies, 5xx and 429
    backoff_s: float = 0.5  # first wait between attempts; doubles each time (a Retry-After header wins)
    stream: bool = False  # read replies as server-sent events
    max_length: int = 8192  # chatglm_api: the `max_length` (prompt + reply tokens) that api.py passes to model.chat


@dataclass
class ModelConfig:
    name: str = MISSING
    backend: str = "hf"  # hf (weights loaded here) | openai_api | chatglm_api (an HTTP endpoint: see `endpoint`)
    endpoint: Optional[EndpointConfig] = None
    path: Optional[str] = None  # hub id or local directory (or the GGUF's folder when gguf_file is set); hf only
    gguf_file: Optional[str] = None  # a GGUF file inside `path`: dequantised once, then cached as safetensors
    gguf_package: Optional[str] = None  # a Python package whose folder holds the GGUF (sets `path`)
    revision: Optional[str] = None
    chat: Optional[bool] = None  # prompt_format auto: use the chat template; None: when the tokenizer has one
    prompt_format: str = "auto"  # auto | chat_template | raw | chatglm3 | chatglm2 | glm4 (token-exact THUDM formats)
    stop_ids: list[int] = field(default_factory=list)  # token ids that end a reply besides the checkpoint's eos
    rope_scaling: Optional[str] = None  # chatglm checkpoints: base | interpolation; default: the checkpoint's code
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    stop: list[str] = field(default_factory=list)  # extra stop strings for this model
    max_length: Optional[int] = None  # context length; default from the checkpoint's config (seq_length)
    max_input_length: Optional[int] = None  # long-context prompt budget (LongBench); default: context − 500


@dataclass
class TaskConfig:
    name: str = MISSING
    dataset: str = MISSING  # HF datasets id
    dataset_config: Optional[str] = None
    revision: Optional[str] = None  # hub revision of the dataset (branch, tag or commit)
    split: str = "test"
    local_file: str = MISSING  # path under data_dir, in the layout of ../shared/data
    shots: int = 0
    shot_split: str = "train"
    shot_local_file: Optional[str] = None
    shot_seed: int = 1234
    template: str = "{question}"  # the user turn; fields of the document in braces
    gen_prefix: str = ""  # text the answer starts with (e.g. the zero-shot CoT trigger)
    stop: list[str] = field(default_factory=list)
    max_new_tokens: int = 256
    choice_scoring: str = "logits"  # multiple-choice tasks: logits | loglik | generate (see glm_eval/choice.py)
    options: dict[str, Any] = field(default_factory=dict)  # task-specific knobs


@dataclass
class BatchConfig:
    max_rows: int = 128  # rows decoded together (CPU: ≈ the same cost per row from 64 up; fewer steps)
    max_tokens: int = 131072  # KV-cache budget: rows × (prompt + new tokens)
    prefill_tokens: int = 4096  # prompt tokens per prefill forward


@dataclass
class GenConfig:
    max_new_tokens: Optional[int] = None  # default: the task's
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 1234
    samples: int = 1  # samples per document (pass@k, majority vote)


@dataclass
class SuiteConfig:
    """Several tasks run for one model in one process (the model is loaded once), plus published rows for the grid."""
    name: str = MISSING
    tasks: list[str] = MISSING
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # row name → task → score (%)
    reference: Optional[str] = None  # the published row the grid's Δ rows compare against


@dataclass
class EvalConfig:
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    limit: Optional[int] = None  # first N documents
    data_dir: Optional[str] = None  # local data root; default env GLM_EVAL_DATA, else the HF hub
    results_dir: str = "results"
    output_dir: str = "${results_dir}/${model.name}/${task.name}"
    cache_dir: Optional[str] = None  # response cache folder; default env GLM_EVAL_CACHE, else ~/.cache/glm_eval
    overwrite: bool = False  # ignore cached responses
    show_prompts: int = 0  # print the first N prompts with token ids and exit
    threads: Optional[int] = None  # torch CPU threads
    progress: bool = True
    batch: BatchConfig = field(default_factory=BatchConfig)
    gen: GenConfig = field(default_factory=GenConfig)
    suite: Optional[SuiteConfig] = None  # suite=<name>: run its tasks instead of `task`


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="suite", name="suite_schema", node=SuiteConfig)
