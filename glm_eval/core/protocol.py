"""The one protocol between tasks and backends: requests in, responses out.

A task turns each document into requests; a backend answers them in any order and reports every answer
through a callback as soon as it is ready (so the engine can cache it write-through). Backends never see
documents, tasks never see models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


# The tags reasoning models put around their thinking (GLM-Z1 → GLM-5, and most others): a reply's answer follows the
# first THINK_CLOSE (glm_eval/scoring/reasoning.py)
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Prompt:
    """What the model sees. `text` is the fully rendered prompt (chat template applied where the model uses
    one); `token_ids` is the same text tokenized for local backends; `messages` keeps the chat form for
    chat endpoints that render the template themselves."""

    text: str
    token_ids: tuple[int, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    # does the reply reason before it answers: True (the template opened <think>, or the model thinks by default or
    # was told to), False (thinking switched off), None (no switch and no thinking model, or unknown). Where True, a
    # stop string ends the reply only after its </think> (scoring/reasoning.py); an endpoint is told on/off.
    thinking: bool | None = None
    # functions the model may call (BFCL): the JSON of an OpenAI-style tool list, which an endpoint is sent as `tools`
    # (in process the rendered text already holds them), and the format its reply writes calls in (glm/tools.py)
    tools: str = ""
    tool_format: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: Prompt
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    # this sample's own seed, derived from (run seed, document, sample index): sampled outputs do not depend on batch
    # composition, process count or resumption
    seed: int = 0
    sample_index: int = 0  # several samples of one prompt (pass@k) are distinct requests
    # EOS and the stop strings cannot end the reply before this many tokens (HF's min_length; LongBench's samsum)
    min_new_tokens: int = 0
    top_k: int = 0  # sample among the k most likely tokens only; 0: no cut

    def identity(self) -> dict:
        """Everything that determines the answer, for cache keys."""
        identity = {"prompt": list(self.prompt.token_ids) or self.prompt.text, "max_new_tokens": self.max_new_tokens,
                    "stop": list(self.stop), "temperature": self.temperature, "top_p": self.top_p,
                    "seed": self.seed, "sample_index": self.sample_index}
        # each only when set, so keys cached before the field existed stay valid
        if self.min_new_tokens:
            identity["min_new_tokens"] = self.min_new_tokens
        if self.top_k:
            identity["top_k"] = self.top_k
        if self.prompt.thinking is not None:  # an endpoint is told on/off: the same text gets other answers
            identity["thinking"] = self.prompt.thinking
        if self.prompt.tools:  # an endpoint's messages do not hold the tools it is sent
            identity["tools"] = self.prompt.tools
        return identity


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Log-probability of each continuation after a shared context (multiple-choice scoring)."""

    context: Prompt
    continuations: tuple[tuple[int, ...], ...]

    def identity(self) -> dict:
        return {"context": list(self.context.token_ids) or self.context.text,
                "continuations": [list(c) for c in self.continuations]}


@dataclass
class Response:
    """A backend's answer. `error` set means the request failed: it is never scored as a wrong answer."""

    text: str = ""
    num_tokens: int = 0
    finish_reason: str = ""  # "eos" | "stop" | "length" | "error" | "cancelled"
    logprobs: list[float] = field(default_factory=list)  # loglikelihood requests: one per continuation
    is_greedy: list[bool] = field(default_factory=list)
    error: str | None = None
    # the reasoning a server split off the reply itself (OpenAI-style `reasoning_content` / vLLM's `reasoning`), `text`
    # then being the rest; None where the reply came whole (its <think>…</think> still in `text`)
    reasoning: str | None = None
    # the calls a server parsed out of the reply itself (OpenAI `tool_calls`, as JSON: [{"function": {"name",
    # "arguments"}}]), `text` then being the content; None where the reply came as text alone
    tool_calls: str | None = None


Request = GenerationRequest | LoglikelihoodRequest
OnResponse = Callable[[int, Response], None]  # (position of the request in the call's list, its response)
# (position, the reply so far) while a request is still generating (streaming). Returning False cancels it.
OnText = Callable[[int, str], bool | None]
# asked by a backend while it answers a call: the requests that arrived since (a server's), which join the call
Arrivals = Callable[[], list[GenerationRequest]]


@dataclass(frozen=True)
class BackendInfo:
    fingerprint: str  # identifies the weights (or served model) + dtype + device class: part of every cache key
    dtype: str  # "bfloat16", "float32", … or "remote" for an endpoint
    device: str  # "cuda:0", "cpu", … or the endpoint's URL
    context_length: int | None  # prompt + reply tokens the model takes; None where an endpoint does not say


class Backend(Protocol):
    """What answers requests: transformers weights loaded here, an HTTP endpoint, later vLLM. Every backend
    implements all of it; the engine never probes for optional parts."""

    info: BackendInfo

    def generate(self, requests: list[GenerationRequest], on_response: OnResponse,
                 on_text: OnText | None = None, arrivals: Arrivals | None = None) -> None:
        """Answer every request, in any order, through `on_response` as soon as each is done; a request that fails
        gets a Response with `error` set (never an exception for one request). `on_text`, where given, hears each
        unfinished reply as it grows (a backend that only sees whole replies calls it once per reply); when it
        returns False the request is dropped as soon as the backend can (its caller went away): answered with
        finish_reason "cancelled" and `error` set, and its batch-mates go on. `arrivals`, where given, is asked
        for more requests until the call returns (at least once after the last answer): each one it hands over
        joins the call, numbered on after the ones before it, and is answered like them; a backend that can start
        a request while others run does so (the slot generator at its next step, an endpoint at once), so a short
        request never waits for a long one."""
        ...

    def loglikelihood(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        """Log-probabilities of each request's continuations (one-token continuations: next-token letter scores).
        A backend that has no log-probabilities raises UserError naming task.choice_scoring=generate."""
        ...

    def groups(self, requests: list[GenerationRequest] | list[LoglikelihoodRequest]) -> list[list[int]]:
        """The positions in `requests` (all of one kind) that this backend computes together in one batch, as it
        would when asked to answer them all: every position in exactly one group. Data parallel gives each rank
        whole groups, so a rank computes the very batches one process would and writes the same numbers; answering
        any union of whole groups must form those groups again. Where batches form while running (continuous
        batching, an endpoint), each request is its own group."""
        ...

    def tokens_processed(self) -> int:
        """Tokens generated or scored since the last `take_stats`, including rows still generating (live tok/s)."""
        ...

    def take_stats(self) -> dict:
        """Statistics since the last call (so a task's metrics.json counts its own work, also inside a suite), then
        start counting afresh."""
        ...


def answer_in_rounds(answer: Callable[[list[GenerationRequest], OnResponse, OnText | None], None],
                     requests: list[GenerationRequest], on_response: OnResponse, on_text: OnText | None,
                     arrivals: Arrivals | None) -> None:
    """Backend.generate for a backend that cannot start a request while a call runs: `answer` the requests, then
    each round of arrivals, numbered on, until none come."""
    offset = 0
    while requests:
        answer(requests, lambda i, response, offset=offset: on_response(offset + i, response),
               None if on_text is None else lambda i, text, offset=offset: on_text(offset + i, text))
        offset += len(requests)
        requests = arrivals() if arrivals else []
