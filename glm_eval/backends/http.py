"""Backends for models deployed behind HTTP endpoints (model.backend=openai_api | chatglm_api).

Protocols:
- openai_api: an OpenAI-compatible server (ChatGLM3's api_server, chatglm.cpp, vLLM), `/chat/completions` with
  messages or `/completions` with the rendered prompt text, optionally streamed as server-sent events.
- chatglm_api: THUDM's original `api.py` (ChatGLM-6B / ChatGLM2-6B): `POST /` with {prompt, history, max_length,
  top_p, temperature} → {response, history, status, time}.

Quirks handled:
- SSE: ping comments, a first delta with only `role`, empty-content chunks and `data: [DONE]` are skipped.
- SSE: a stream closing with neither `[DONE]` nor a finish_reason is a dropped reply: retried.
- `id: ""` and a missing `usage` are accepted (num_tokens is then 0).
- api.py has no stop strings: stops are cut client-side, for every server alike.
- api.py turns temperature 0 into 0.95 (sampling): warned once per backend.
- api.py has no system turn: a system message is prefixed to the prompt, as ChatGLM2's own openai_api.py does.
- Completions with model.tokenizer: the prompt goes as the in-process token ids to servers whose model card says
  they take them (vLLM, glm-eval's serve) or with model.endpoint.prompt_as=token_ids, else as its text.
- Reasoning models: model.thinking=on|off goes as `chat_template_kwargs: {enable_thinking}` (vLLM, SGLang, glm-eval's
  serve) or, with model.endpoint.thinking_as=zai, as Z.ai's `thinking: {type: enabled|disabled}`. A server's split
  reasoning is read from `reasoning_content` (SGLang, older vLLM) or `reasoning` (vLLM 0.32), streamed or not, and
  kept apart from the content. A request whose reply reasons sends no stop strings (a server applies them to the
  reasoning too): they are cut client-side from the answer.
- Cache identity: the model id the server reports (`GET /models`; vLLM's `root`, the weights' path, too) plus
  model.endpoint.revision, never the URL: the same model moved to another host keeps its cached answers, new
  weights behind a new id do not reuse old ones. api.py reports nothing: model.name plus the revision.
- Retries with capped exponential backoff (or Retry-After) on connection errors, timeouts, dropped connections,
  5xx, 429 and 200 replies that are not the expected JSON; other 4xx fail at once.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import cached_property

import httpx
from httpx_sse import EventSource, SSEError

from glm_eval.core.config import EndpointApi, EndpointConfig, PromptAs, Thinking, ThinkingAs, ToolFormat
from glm_eval.core.errors import UserError, describe
from glm_eval.core.protocol import (THINK_CLOSE, Arrivals, BackendInfo, GenerationRequest, LoglikelihoodRequest,
                                    OnResponse, OnText, Response)
from glm_eval.glm.prompts import chatglm_query_history

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0
ARRIVALS_POLL_S = 0.05  # how often a call that takes arrivals (a server's) asks for them while requests run
TAKE_TOKEN_IDS = ("vllm", "glm-eval")  # the `owned_by` of model cards whose servers take `prompt: [ids]`
MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)  # JSON errors are ValueErrors
REASONING_FIELDS = ("reasoning_content", "reasoning")  # SGLang / older vLLM, vLLM 0.32: a server's split reasoning


class Retryable(Exception):
    """A failed attempt worth repeating; `wait_s` (from Retry-After) replaces the backoff."""

    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


class Fatal(Exception):
    """A failed attempt that would fail again the same way (400, 401, 404, 422 …)."""


def _string(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _reasoning(part: dict) -> str | None:
    """The reasoning a message or a streamed delta carries, under either name (None where it has none)."""
    for name in REASONING_FIELDS:
        if isinstance(part.get(name), str):
            return part[name]
    return None


def _tool_calls(calls) -> str | None:
    """A reply's OpenAI `tool_calls` as the JSON a Response keeps ([{"function": {"name", "arguments"}}]); None where
    there are none. Their content is checked where they are scored (glm/tools.py): a malformed call is a wrong answer
    with its reason, not a failed request."""
    if not calls:
        return None
    if not isinstance(calls, list):
        return json.dumps(calls)  # kept as sent: read back as a malformed call
    return json.dumps([{"function": {k: c["function"].get(k) for k in ("name", "arguments")}}
                       if isinstance(c, dict) and isinstance(c.get("function"), dict) else c for c in calls],
                      ensure_ascii=False)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(max(float(response.headers["retry-after"]), 0.0), MAX_WAIT_S)
    except (KeyError, ValueError):  # absent, or an HTTP date (not worth parsing)
        return None


class HTTPBackend:
    """Shared transport: concurrency, retries, client-side stops and accounting. Subclasses build the payload
    and read the reply."""

    name = "http"

    def __init__(self, cfg: EndpointConfig, model_name: str):
        self.cfg, self.model_name = cfg, model_name
        self.headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if key is None:
                raise UserError(f"environment variable {cfg.api_key_env} (model.endpoint.api_key_env) is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        self._counts = self._zero_counts()
        self._lock = threading.Lock()  # retries are counted in worker threads
        self._open: set[httpx.Response] = set()  # responses being read: closed on cancel

    @staticmethod
    def _zero_counts() -> dict:
        return {"requests": 0, "failed": 0, "retries": 0, "tokens": 0}

    @cached_property
    def info(self) -> BackendInfo:
        """Asks the server which model it serves (once, on first use): the cache identity."""
        served, context = self.identify()
        return BackendInfo(fingerprint=json.dumps([self.name, *served, self.cfg.revision]), dtype="remote",
                           device=self.cfg.url, context_length=context)

    def identify(self) -> tuple[list[str], int | None]:
        """(what identifies the served model, its context length if the server says)."""
        raise NotImplementedError

    def tokens_processed(self) -> int:
        return self._counts["tokens"]

    def take_stats(self) -> dict:
        with self._lock:
            taken, self._counts = self._counts, self._zero_counts()
        return {**taken, "in_flight_limit": self.cfg.concurrency}

    def groups(self, requests: list[GenerationRequest] | list[LoglikelihoodRequest]) -> list[list[int]]:
        return [[i] for i in range(len(requests))]  # requests go out one by one

    def loglikelihood(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        if requests:
            raise UserError(f"{self.name} endpoints return text only: use task.choice_scoring=generate")

    def generate(self, requests: list[GenerationRequest], on_response: OnResponse,
                 on_text: OnText | None = None, arrivals: Arrivals | None = None) -> None:
        if not requests:
            return
        _ = self.info  # the served model must be known before a request names it
        self.before(requests)
        workers = max(1, self.cfg.concurrency)
        cancelled = threading.Event()
        sockets: list[socket.socket] = []  # every connection this call opens (a keep-alive one is reused, not new)

        def traced(request: httpx.Request) -> None:
            request.extensions["trace"] = lambda event, info: sockets.append(
                info["return_value"].get_extra_info("socket")) if event == "connection.connect_tcp.complete" else None
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        with httpx.Client(headers=self.headers, timeout=self.cfg.timeout_s, limits=limits,
                          event_hooks={"request": [traced]}) as client:
            pool = ThreadPoolExecutor(workers, thread_name_prefix=self.name)
            futures: dict = {}

            def submit(batch: list[GenerationRequest]) -> set:
                """Start the requests, numbered on in order; their futures."""
                started = [pool.submit(self._answer, client, r, cancelled) for r in batch]
                for future in started:
                    futures[future] = len(futures)
                return set(started)
            try:
                waiting = submit(requests)
                while waiting:
                    done, waiting = wait(waiting, timeout=ARRIVALS_POLL_S if arrivals else None,
                                         return_when=FIRST_COMPLETED)
                    for future in done:  # on_response runs here, in the caller's thread (SQLite)
                        response = future.result()
                        with self._lock:
                            self._counts["requests"] += 1
                            self._counts["failed"] += response.error is not None
                            self._counts["tokens"] += response.num_tokens
                        if on_text and response.error is None:  # whole replies only: heard once, complete
                            on_text(futures[future], response.text)
                        on_response(futures[future], response)
                    if arrivals:  # started at once: endpoints batch as they like
                        waiting |= submit(arrivals())
            finally:  # Ctrl-C or a failing callback: drop what has not started, stop retrying what has,
                cancelled.set()  # and cut what is in flight: its worker returns at once, nothing is recorded
                pool.shutdown(wait=False, cancel_futures=True)
                with self._lock:
                    in_flight = list(self._open)
                for response in in_flight:
                    response.close()
                for connection in sockets:  # a request still waiting for its headers is not a response yet:
                    try:  # shutting its socket down ends the blocked read (closing it alone would not)
                        connection.shutdown(socket.SHUT_RDWR)
                    except OSError:  # already closed
                        pass

    @contextmanager
    def exchange(self, client: httpx.Client, url: str, payload: dict, deadline: float, sse: bool = False):
        """POST `payload` and yield the streamed response. When the attempt's deadline passes (or the run is
        cancelled) the response is closed, which ends the read in progress: a server that trickles a byte a
        second, or streams only keep-alive pings, cannot hold a run past model.endpoint.timeout_s."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"} if sse else None
        with client.stream("POST", url, json=payload, headers=headers) as response:
            with self._lock:
                self._open.add(response)
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), response.close)
            timer.daemon = True
            timer.start()
            try:
                yield response
            finally:
                timer.cancel()
                with self._lock:
                    self._open.discard(response)

    def before(self, requests: list[GenerationRequest]) -> None:  # warnings about a whole batch
        pass

    def post(self, client: httpx.Client, req: GenerationRequest, deadline: float) -> Response:
        """One attempt, through `exchange`: the reply (text, finish reason, completion tokens, a server's split
        reasoning); raises Retryable or Fatal."""
        raise NotImplementedError

    def _answer(self, client: httpx.Client, req: GenerationRequest, cancelled: threading.Event) -> Response:
        attempts = max(0, self.cfg.retries) + 1
        for attempt in range(attempts):
            try:
                return self._cut_at_stop(req, self._attempt(client, req))
            except Fatal as e:
                return Response(finish_reason="error", error=str(e))
            except Retryable as e:
                if attempt + 1 == attempts or cancelled.is_set():
                    n = attempt + 1
                    return Response(finish_reason="error", error=f"{e.reason} after {n} attempt{'s' * (n > 1)}")
                with self._lock:
                    self._counts["retries"] += 1
                wait = e.wait_s if e.wait_s is not None else min(self.cfg.backoff_s * 2 ** attempt, MAX_WAIT_S)
                cancelled.wait(wait)
            except Exception as e:  # a bug or an odd transport state: report it on this request, keep the run
                return Response(finish_reason="error", error=describe(e, 300))
        raise AssertionError("unreachable")

    def _attempt(self, client: httpx.Client, req: GenerationRequest) -> Response:
        """One attempt; a failure is raised as Fatal, or as Retryable with the reason a reader needs."""
        deadline = time.monotonic() + self.cfg.timeout_s
        try:
            return self.post(client, req, deadline)
        except Fatal:
            raise
        except Exception as e:
            if time.monotonic() >= deadline:  # `exchange` closed the response: whatever the read raised, it timed out
                raise Retryable(f"timeout ({self.cfg.timeout_s:g} s for the attempt)") from None
            if isinstance(e, httpx.TimeoutException):
                raise Retryable(f"timeout ({self.cfg.timeout_s:g} s)") from None
            if isinstance(e, SSEError):  # a 200 that is not an event stream
                raise Retryable("malformed reply (not an event stream)") from None
            if isinstance(e, httpx.TransportError):  # refused, reset, closed without a reply, incomplete body
                raise Retryable(f"connection error ({type(e).__name__})") from None
            if isinstance(e, MALFORMED):
                raise Retryable(f"malformed reply ({type(e).__name__})") from None
            raise

    @staticmethod
    def check_status(response: httpx.Response) -> None:
        if response.is_success:
            return
        code = response.status_code
        if code == 429 or code >= 500:
            raise Retryable(f"HTTP {code}", _retry_after(response) if code in (429, 503) else None)
        body = " ".join(response.read().decode("utf-8", "replace").split())
        raise Fatal(f"HTTP {code}: {body[:200]}")

    @staticmethod
    def _cut_at_stop(req: GenerationRequest, response: Response) -> Response:
        """Stops a server did not apply (api.py has none; a reasoning reply's are never sent): the first one in the
        answer, i.e. after the reasoning of a reply that reasons (its content, where the server split it off)."""
        start = 0
        if req.prompt.thinking and response.reasoning is None:
            at = response.text.find(THINK_CLOSE)
            if at < 0:  # still reasoning: no answer to cut
                return response
            start = at + len(THINK_CLOSE)
        cuts = [i for i in (response.text.find(s, start) for s in req.stop if s) if i >= 0]
        if cuts:
            response.text, response.finish_reason = response.text[:min(cuts)], "stop"
        return response


class OpenAIBackend(HTTPBackend):
    name = "openai_api"

    def __init__(self, cfg: EndpointConfig, model_name: str, tokenized: bool = False,
                 thinking: Thinking = Thinking.auto):
        """`tokenized`: prompts carry the in-process token ids (model.tokenizer), which a completions request may
        send instead of the text. `thinking`: model.thinking, told to a chat server when on or off."""
        super().__init__(cfg, model_name)
        self.thinking = Thinking(thinking)
        try:
            self.api = EndpointApi(cfg.api)
        except ValueError:
            raise UserError(f"unknown model.endpoint.api {cfg.api!r}; valid: "
                            f"{', '.join(EndpointApi)}") from None
        self.url = f"{cfg.url.rstrip('/')}/{'chat/completions' if self.api == EndpointApi.chat else 'completions'}"
        self.model = cfg.model or model_name  # the served id once `identify` has asked
        self.tokenized = tokenized
        self.sends_ids = tokenized and cfg.prompt_as == PromptAs.token_ids  # prompt_as=auto: decided by `identify`

    def identify(self) -> tuple[list[str], int | None]:
        url = f"{self.cfg.url.rstrip('/')}/models"
        try:
            reply = httpx.get(url, headers=self.headers, timeout=min(self.cfg.timeout_s, 30.0))
        except httpx.HTTPError as e:
            raise UserError(f"cannot reach {url} ({type(e).__name__}): start the server or fix "
                            f"model.endpoint.url") from None
        if reply.status_code in (404, 405, 501):  # a server without a model list: trust the configuration
            log.warning(f"{url} lists no models (HTTP {reply.status_code}); cached answers are keyed by the name "
                        f"{self.model!r} and model.endpoint.revision={self.cfg.revision}")
            return [self.model, str(self.api), *self._prompt_mark()], None
        if not reply.is_success:
            raise UserError(f"{url} answered HTTP {reply.status_code}"
                            + (": set model.endpoint.api_key_env" if reply.status_code in (401, 403) else ""))
        try:
            cards = [c for c in reply.json()["data"] if isinstance(c, dict) and isinstance(c.get("id"), str)]
        except MALFORMED:
            cards = []
        ids = [c["id"] for c in cards]
        wanted = self.cfg.model or (ids[0] if len(ids) == 1 else self.model_name)
        if wanted not in ids:
            raise UserError(f"{url} serves {', '.join(ids) or 'no model'}; set model.endpoint.model to one of them")
        card = cards[ids.index(wanted)]
        self.model = wanted
        if self.tokenized and self.cfg.prompt_as == PromptAs.auto:  # servers known to take a prompt's token ids
            self.sends_ids = card.get("owned_by") in TAKE_TOKEN_IDS
        context = card.get("max_model_len")  # vLLM says; an OpenAI-style card does not
        return [wanted, str(card.get("root") or ""), str(self.api), *self._prompt_mark()], \
            context if isinstance(context, int) else None

    def _prompt_mark(self) -> list[str]:
        """Sent as token ids, a prompt is not tokenized by the server (answers may differ from text's): its own key."""
        return [str(PromptAs.token_ids)] if self.api == EndpointApi.completions and self.sends_ids else []

    def payload(self, req: GenerationRequest) -> dict:
        payload = {"model": self.model, "max_tokens": req.max_new_tokens, "temperature": req.temperature,
                   "top_p": req.top_p, "stream": self.cfg.stream}
        if self.api == EndpointApi.chat:
            messages = req.prompt.messages or (("user", req.prompt.text),)
            payload["messages"] = [{"role": role, "content": content} for role, content in messages]
            if req.prompt.tools and req.prompt.tool_format != ToolFormat.python:  # python: BFCL's prompt holds them
                payload["tools"] = json.loads(req.prompt.tools)
            if self.thinking != Thinking.auto:  # auto: the server's default, and no field a plain server may refuse
                on = self.thinking == Thinking.on
                if self.cfg.thinking_as == ThinkingAs.zai:
                    payload["thinking"] = {"type": "enabled" if on else "disabled"}
                else:
                    payload["chat_template_kwargs"] = {"enable_thinking": on}
        elif self.sends_ids:  # rendered with model.tokenizer: exactly the ids the in-process backend runs
            payload["prompt"] = list(req.prompt.token_ids)
        else:
            payload["prompt"] = req.prompt.text
        if req.stop and not req.prompt.thinking:  # a server would apply them to the reasoning too: cut here
            payload["stop"] = list(req.stop)
        if req.temperature > 0:  # a seed only matters when sampling
            payload["seed"] = req.seed
            if req.top_k:
                payload["top_k"] = req.top_k  # vLLM's and SGLang's extension
        if req.min_new_tokens:  # vLLM's extension (LongBench's samsum masks its newline stop at the first token)
            payload["min_tokens"] = req.min_new_tokens
        return payload

    def post(self, client: httpx.Client, req: GenerationRequest, deadline: float) -> Response:
        if not self.cfg.stream:
            with self.exchange(client, self.url, self.payload(req), deadline) as response:
                self.check_status(response)
                data = json.loads(response.read())
            choice = data["choices"][0]
            if self.api == EndpointApi.chat:
                message = choice["message"]
                reasoning = _reasoning(message)
                calls = _tool_calls(message.get("tool_calls"))
                # vLLM sends content null when the whole reply was reasoning, or calls alone
                text = "" if message.get("content") is None and (reasoning is not None or calls) else \
                    _string(message["content"])
            else:
                text, reasoning, calls = _string(choice["text"]), None, None
            return Response(text=text, finish_reason=choice.get("finish_reason") or "eos",
                            num_tokens=self._tokens(data), reasoning=reasoning, tool_calls=calls)
        with self.exchange(client, self.url, self.payload(req), deadline, sse=True) as response:
            self.check_status(response)
            parts, thoughts, finish_reason, num_tokens, done = [], None, None, 0, False
            calls: dict[int, dict] = {}  # streamed tool calls by index: the name, then the arguments in pieces
            for event in EventSource(response).iter_sse():  # comments (`: ping`) never reach here
                if not event.data.strip():
                    continue
                if event.data.strip() == "[DONE]":
                    done = True
                    break
                chunk = json.loads(event.data)
                num_tokens = self._tokens(chunk) or num_tokens
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = (choice.get("delta") or {}) if self.api == EndpointApi.chat else {}
                    piece = delta.get("content") if self.api == EndpointApi.chat else choice.get("text")
                    if piece:
                        parts.append(_string(piece))
                    if (thought := _reasoning(delta)) is not None:
                        thoughts = (thoughts or []) + [thought]
                    for piece in delta.get("tool_calls") or []:
                        if not isinstance(piece, dict) or not isinstance(piece.get("index", 0), int):
                            raise Fatal(f"a streamed tool call is not an object with an index: {str(piece)[:80]}")
                        call = calls.setdefault(piece.get("index", 0), {"name": "", "arguments": ""})
                        function = piece.get("function") or {}
                        call["name"] += _string(function.get("name") or "")
                        call["arguments"] += _string(function.get("arguments") or "")
                    finish_reason = choice.get("finish_reason") or finish_reason
            if not done and finish_reason is None:  # closed mid-reply (HTTP/1.0 streams end at close)
                raise Retryable("stream ended before [DONE]")
            return Response(text="".join(parts), finish_reason=finish_reason or "eos", num_tokens=num_tokens,
                            reasoning=None if thoughts is None else "".join(thoughts),
                            tool_calls=_tool_calls([{"function": calls[k]} for k in sorted(calls)]))

    @staticmethod
    def _tokens(data: dict) -> int:
        usage = data.get("usage") or {}
        return int(usage.get("completion_tokens") or 0)


class ChatGLMBackend(HTTPBackend):
    name = "chatglm_api"

    def __init__(self, cfg: EndpointConfig, model_name: str):
        super().__init__(cfg, model_name)
        self._warned = False

    def identify(self) -> tuple[list[str], int | None]:
        return [self.model_name], None  # api.py reports no model: the configured name (and revision) stand for it

    def before(self, requests: list[GenerationRequest]) -> None:
        if not self._warned and any(r.temperature == 0 for r in requests):
            self._warned = True
            log.warning(f"{self.cfg.url}: the original api.py turns temperature 0 into 0.95 (sampling); greedy "
                        "holds only on servers that honour 0 (glm-eval's serve, chatglm.cpp)")

    def payload(self, req: GenerationRequest) -> dict:
        query, history = chatglm_query_history(req.prompt.messages, default_query=req.prompt.text)
        return {"prompt": query, "history": history, "max_length": self.cfg.max_length,
                "max_new_tokens": req.max_new_tokens, "top_p": req.top_p, "temperature": req.temperature}

    def post(self, client: httpx.Client, req: GenerationRequest, deadline: float) -> Response:
        with self.exchange(client, self.cfg.url, self.payload(req), deadline) as response:
            self.check_status(response)
            data = json.loads(response.read())
        return Response(text=_string(data["response"]), finish_reason="eos")
