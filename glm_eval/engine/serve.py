"""`python -m glm_eval.serve model=<name> [host=127.0.0.1] [port=8000] [api_key_env=VAR] [batch.*=…]`

Serves a model loaded as glm-eval loads it, over the HTTP APIs that ChatGLM users and their clients speak:
  GET  /health, GET /v1/models
  POST /v1/chat/completions   OpenAI chat (stream and non-stream; ChatGLM3's openai_api_demo, LangChain's ChatGLM3)
  POST /v1/completions        OpenAI completions: the prompt text as is, no chat template, or its token ids
  POST /                      ChatGLM api.py: {prompt, history, max_length, top_p, temperature} → {response, history,
                              status, time} (LangChain's ChatGLM). Unlike api.py, temperature 0 means greedy.
Requests are rendered with the model's own prompt format (glm_eval/glm/prompts.py), so an endpoint run sees the same
tokens as an in-process one, and answered by the batched slot generator: requests that arrive together are decoded
together, and one that arrives while others decode joins them at the next step. A chat request's
`chat_template_kwargs: {enable_thinking}` switches a reasoning model's thinking (as on vLLM and SGLang); replies come
back whole, `<think>…</think>` included in the content (a server without a reasoning parser), and an earlier
assistant turn's `reasoning_content` (or `reasoning`) reaches the template as its think block. Binds loopback unless
told otherwise; with api_key_env set, requests need `Authorization: Bearer <key>`.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glm_eval.core.cli import parse_args, port
from glm_eval.core.errors import UserError
from glm_eval.core.protocol import Backend, GenerationRequest, Prompt, Response
from glm_eval.engine.overrides import validate
from glm_eval.glm.tools import jsonable, parse_calls
from glm_eval.scoring.reasoning import opens_reasoning, split_reply


MAX_BODY = 8 << 20  # bytes: a 32K-token conversation is well under 1 MB; a 50 MB body would stall everyone


class Sampling(BaseModel):
    """The generation fields a request may set, typed and bounded as vLLM's OpenAI server checks them: a request
    with a bad field is answered 400 and never reaches the engine (where it would fail its batch-mates)."""
    model_config = ConfigDict(extra="ignore")  # fields of the APIs we do not use (n, logprobs, user, …)
    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0)  # vLLM's extension: stops and EOS are ignored before this many tokens
    top_k: int | None = Field(None, ge=-1)  # vLLM's extension; 0 and -1: no cut


class Message(BaseModel):
    role: str = "user"
    content: str
    reasoning_content: str | None = None  # an earlier reply's reasoning (OpenAI-style servers' field)
    reasoning: str | None = None  # vLLM 0.32's name for it

    def text(self) -> str:
        """The turn as the template reads it: an assistant turn's reasoning as its <think> block."""
        thought = self.reasoning_content if self.reasoning_content is not None else self.reasoning
        return f"<think>{thought}</think>{self.content}" if thought is not None and self.role == "assistant" \
            else self.content


class TemplateKwargs(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a template's other switches: this server's templates read none
    enable_thinking: bool | None = None


class Function(BaseModel):
    model_config = ConfigDict(extra="allow")  # description, strict, …: passed on to the template as sent
    name: str = Field(min_length=1, max_length=256)
    parameters: dict | None = None


class Tool(BaseModel):
    type: str = "function"
    function: Function


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    chat_template_kwargs: TemplateKwargs | None = None
    # functions the model may call: offered in its own tool format, its calls returned as `tool_calls` (tool_choice
    # is not honoured: the model decides, as with vLLM's "auto")
    tools: list[Tool] | None = Field(None, max_length=256)


class CompletionBody(Sampling):
    prompt: str | list[str] | list[int]  # text, or token ids (vLLM's API: glm-eval's endpoint runs send them)


class LegacyBody(Sampling):  # api.py: {prompt, history, max_length, top_p, temperature}
    prompt: str
    history: list[Message | tuple[str, str]] | None = None
    max_length: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)


@dataclass
class Job:
    request: GenerationRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop = field(repr=False)
    pieces: asyncio.Queue | None = None  # streaming: text as it is decoded, then the final Response
    sent: str = ""
    cancelled: bool = False  # its client went away: the engine drops the row at its next token


CANCELLED = Response(finish_reason="cancelled", error="cancelled: the client went away")


class BatchingEngine:
    """One thread owns the model. It takes every request waiting, decodes them as one batch with the slot
    generator, and hands it each request that arrives meanwhile, which takes a free slot (or a slot added within
    the KV budget) at the next step: a short request is never held behind a long one. Each caller's future is
    resolved as its row finishes (streams get text as rows grow). A request whose client went away is dropped: from
    the queue, or from its batch at the next token."""

    def __init__(self, backend: Backend, gather_s: float = 0.005, poll_s: float = 0.25):
        self.backend, self.gather_s, self.poll_s = backend, gather_s, poll_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.batches = self.requests = self.cancelled = 0  # counters shown by /health
        threading.Thread(target=self._run, name="glm-eval-engine", daemon=True).start()

    async def generate(self, request: GenerationRequest, gone: Callable[[], Awaitable[bool]]) -> Response:
        """The answer; `gone()` is asked every `poll_s` seconds whether the client disconnected meanwhile."""
        loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), loop)
        self.jobs.put(job)
        try:
            while not job.future.done():
                await asyncio.wait([job.future], timeout=self.poll_s)
                if not job.future.done() and await gone():
                    job.cancelled = True
                    return CANCELLED
            return job.future.result()
        finally:
            job.cancelled = job.cancelled or not job.future.done()  # the handler itself was cancelled

    async def stream(self, request: GenerationRequest):
        """Yields text pieces as the row grows, and last the Response (its text is the pieces joined). Closed
        early (the client disconnected, so the server stops iterating), it cancels the row."""
        loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), loop, pieces=asyncio.Queue())
        self.jobs.put(job)
        try:
            while not isinstance(item := await job.pieces.get(), Response):
                yield item
            yield item
        finally:
            job.cancelled = job.cancelled or not job.future.done()

    @staticmethod
    def _progress(job: Job, text: str) -> None:
        """Send the new text of a streaming row, holding back what a stop string could still cut and a
        character still incomplete, so the pieces always add up to the final reply."""
        hold = max((len(s) for s in job.request.stop), default=1) - 1
        ready = (text[:len(text) - hold] if hold else text).rstrip("\ufffd")
        if len(ready) > len(job.sent) and ready.startswith(job.sent):
            piece, job.sent = ready[len(job.sent):], ready
            job.loop.call_soon_threadsafe(job.pieces.put_nowait, piece)

    def _take(self, batch: list[Job], wait_s: float | None) -> list[GenerationRequest]:
        """Move the waiting jobs into `batch` (a job whose client left is answered as cancelled instead), the first
        one waited for up to `wait_s` (None: as long as it takes); their requests, in order."""
        start = len(batch)
        while True:
            try:
                job = self.jobs.get(timeout=wait_s) if wait_s is None or wait_s > 0 else self.jobs.get_nowait()
            except queue.Empty:
                return [job.request for job in batch[start:]]
            wait_s = 0
            if job.cancelled:  # gone before its turn: never decoded
                self.cancelled += 1
                job.loop.call_soon_threadsafe(_settle, job.future, CANCELLED)
            else:
                batch.append(job)
                self.requests += 1

    def _run(self) -> None:
        while True:
            batch: list[Job] = []
            requests = self._take(batch, None)
            time.sleep(self.gather_s)  # let a burst of concurrent requests arrive together
            requests += self._take(batch, 0)
            if not batch:
                continue
            self.batches += 1
            answered = set()

            def reply(index: int, response: Response) -> None:
                answered.add(index)
                self.cancelled += response.finish_reason == "cancelled"
                job = batch[index]
                if job.pieces is not None:
                    rest = response.text[len(job.sent):] if response.text.startswith(job.sent) else ""
                    for item in ([rest] if rest else []) + [response]:
                        job.loop.call_soon_threadsafe(job.pieces.put_nowait, item)
                job.loop.call_soon_threadsafe(_settle, job.future, response)

            def progress(index: int, text: str) -> bool:
                if batch[index].cancelled:
                    return False
                if batch[index].pieces is not None:
                    self._progress(batch[index], text)
                return True

            try:  # requests that arrive while it decodes join it (numbered on, as `batch` grows)
                self.backend.generate(requests, reply, progress, lambda batch=batch: self._take(batch, 0))
            except Exception as e:  # the model failed: every caller still gets an answer
                for index, job in enumerate(batch):
                    if index not in answered:
                        reply(index, Response(finish_reason="error", error=f"{type(e).__name__}: {e}"))


def _settle(future: asyncio.Future, response: Response) -> None:
    if not future.done():
        future.set_result(response)


class Gate:
    """Checks every request before any of it is read: the API key (all routes but /health) and, for a POST, a
    Content-Length of at most MAX_BODY. Plain ASGI rather than FastAPI's `@app.middleware("http")`, which wraps
    `receive` so that a handler can no longer see its client disconnect (needed to cancel abandoned rows)."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = None
            if self.api_key and scope["path"] != "/health" and \
                    headers.get("authorization", "") != f"Bearer {self.api_key}":
                refusal = JSONResponse({"error": {"message": "invalid or missing API key", "type": "auth"}}, 401)
            elif scope["method"] == "POST":
                length = headers.get("content-length", "")
                if not length.isdigit():
                    refusal = JSONResponse({"error": {"message": "a body needs a Content-Length", "type": "invalid"}},
                                           411)
                elif int(length) > MAX_BODY:
                    refusal = JSONResponse({"error": {"message": f"the body has {length} bytes; at most {MAX_BODY}",
                                                      "type": "invalid"}}, 413)
            if refusal is not None:
                return await refusal(scope, receive, send)
        await self.app(scope, receive, send)


def make_app(renderer, engine: BatchingEngine, model_id: str, api_key: str | None = None) -> FastAPI:
    info = engine.backend.info
    context = info.context_length or 1 << 30
    app = FastAPI(title=f"glm-eval · {model_id}")

    app.add_middleware(Gate, api_key=api_key)

    async def body_of(request: Request, model: type[BaseModel]):
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise HTTPException(400, "the body is not JSON")
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        try:
            return model.model_validate(body)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise HTTPException(400, f"{where}: {first['msg']}") from None

    def generation(prompt: Prompt, body: Sampling, max_new_default: int, max_new: int | None = None,
                   temperature: float = 1.0, top_p: float = 1.0) -> GenerationRequest:
        if len(prompt.token_ids) >= context:
            raise HTTPException(400, f"the prompt has {len(prompt.token_ids)} tokens; the context is {context}")
        stop = body.stop or ()
        return GenerationRequest(
            prompt=prompt, stop=tuple([stop] if isinstance(stop, str) else stop),
            max_new_tokens=max(1, min(max_new or max_new_default, context - len(prompt.token_ids))),
            temperature=temperature if body.temperature is None else body.temperature,
            top_p=top_p if body.top_p is None else body.top_p, top_k=max(body.top_k or 0, 0),
            seed=uuid.uuid4().int % 2**31 if body.seed is None else body.seed, min_new_tokens=body.min_tokens)

    async def answer(request: GenerationRequest, http: Request) -> Response:
        response = await engine.generate(request, http.is_disconnected)
        if response.error:
            raise HTTPException(500, response.error)
        return response

    def usage(request: GenerationRequest, response: Response) -> dict:
        prompt = len(request.prompt.token_ids)
        return {"prompt_tokens": prompt, "completion_tokens": response.num_tokens,
                "total_tokens": prompt + response.num_tokens}

    def finish(response: Response) -> str:
        return "length" if response.finish_reason == "length" else "stop"

    def with_calls(prompt: Prompt, response: Response) -> tuple[dict, str]:
        """The reply's message with the calls its answer makes as OpenAI tool_calls, and its finish reason
        ("tool_calls" where it called); a reply without calls, or with no answer (still inside its reasoning), is
        returned as it came. The answer is split off as every scored reply's is (scoring/reasoning.py)."""
        split = split_reply(response.text, response.finish_reason, None, prompt.thinking,
                            opens_reasoning(prompt.text))
        calls = parse_calls(prompt.tool_format, split.answer, json.loads(prompt.tools)) if split.answered else None
        if calls is None or not calls.calls:
            return {"role": "assistant", "content": response.text}, finish(response)
        reasoning = response.text[:len(response.text) - len(split.answer)]  # up to and with its </think>
        tool_calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "index": i,
                       "function": {"name": c["name"],
                                    "arguments": json.dumps(jsonable(c["arguments"]), ensure_ascii=False)}}
                      for i, c in enumerate(calls.calls)]
        content = reasoning + calls.content
        return {"role": "assistant", "content": content or None, "tool_calls": tool_calls}, "tool_calls"

    def event(payload) -> str:
        return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"

    def sse(request: GenerationRequest, chunk, first: list[dict] = ()) -> StreamingResponse:
        """Server-sent events: `first`, then chunk(piece, None) per piece of text and chunk("", finish_reason)
        at the end, then [DONE]. A failure after the first byte can only be reported in the stream."""
        async def events():
            for head in first:
                yield event(head)
            async for item in engine.stream(request):
                if isinstance(item, Response):
                    yield event({"error": {"message": item.error, "type": "generation"}} if item.error
                                else chunk("", finish(item)))
                else:
                    yield event(chunk(item, None))
            yield event("[DONE]")
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return {"status": "ok", "requests": engine.requests, "batches": engine.batches, "cancelled": engine.cancelled}

    @app.get("/v1/models")
    async def models():
        # `root` names the weights (their fingerprint), as vLLM's card does: an endpoint run keys its cache by it
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "glm-eval",
                                            "root": info.fingerprint, "max_model_len": info.context_length}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await body_of(request, ChatBody)
        if body.messages[-1].role == "assistant":
            raise HTTPException(400, "the last message must not be the assistant's")
        switch = body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else None
        tools = (await request.json())["tools"] if body.tools else None  # as sent: key order shapes the prompt
        try:
            chosen = renderer if switch is None else renderer.with_thinking("on" if switch else "off")
        except UserError as e:  # a model whose prompts have no template to switch
            raise HTTPException(400, f"chat_template_kwargs.enable_thinking: {e}") from None
        try:
            prompt = chosen.render_messages(tuple((m.role, m.text()) for m in body.messages), tools=tools)
        except UserError as e:  # tools for a model whose prompts cannot carry them
            raise HTTPException(400, f"tools: {e}") from None
        request_ = generation(prompt, body, 1024, body.max_tokens or body.max_completion_tokens)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_id}
        if tools:  # calls are known only once the reply is whole: a stream gets it in one piece
            response = await answer(request_, request)
            message, reason = with_calls(prompt, response)
            if not body.stream:
                return {**head, "object": "chat.completion", "usage": usage(request_, response),
                        "choices": [{"index": 0, "message": message, "finish_reason": reason}]}
            chunk = {**head, "object": "chat.completion.chunk"}
            events = [{**chunk, "choices": [{"index": 0, "delta": message, "finish_reason": None}]},
                      {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}]
            return StreamingResponse(iter([*map(event, events), event("[DONE]")]), media_type="text/event-stream")
        if body.stream:
            def chunk(piece: str, reason: str | None, delta: dict | None = None) -> dict:
                delta = delta if delta is not None else ({"content": piece} if piece else {})
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            return sse(request_, chunk, [chunk("", None, {"role": "assistant", "content": ""})])
        response = await answer(request_, request)
        return {**head, "object": "chat.completion", "usage": usage(request_, response),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": response.text},
                             "finish_reason": finish(response)}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await body_of(request, CompletionBody)
        given = body.prompt
        if isinstance(given, list) and len(given) == 1 and isinstance(given[0], str):
            given = given[0]
        if isinstance(given, str):
            prompt = renderer.plain(given)
        elif all(isinstance(i, int) for i in given):
            try:
                prompt = renderer.from_token_ids(given)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        else:
            raise HTTPException(400, "prompt must be a string (or a list of one), or a list of token ids")
        request_ = generation(prompt, body, 16, body.max_tokens)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_id}
        if body.stream:
            return sse(request_, lambda piece, reason: {**head, "object": "text_completion", "choices": [
                {"index": 0, "text": piece, "finish_reason": reason}]})
        response = await answer(request_, request)
        return {**head, "object": "text_completion", "usage": usage(request_, response),
                "choices": [{"index": 0, "text": response.text, "finish_reason": finish(response)}]}

    @app.post("/")
    async def legacy(request: Request):
        body = await body_of(request, LegacyBody)
        history, turns = body.history or [], []
        for turn in history:  # [[q, a], …] as api.py, or [{role, content}, …] as later ChatGLM3 demos
            turns += [(turn.role, turn.text())] if isinstance(turn, Message) else \
                [("user", turn[0]), ("assistant", turn[1])]
        prompt = renderer.render_messages((*turns, ("user", body.prompt)))
        # api.py's max_length counts the prompt too; max_new_tokens (ours) is what an evaluation asks for
        max_new = body.max_new_tokens or (body.max_length or 2048) - len(prompt.token_ids)
        request_ = generation(prompt, body, 2048, max_new, temperature=0.95, top_p=0.7)  # api.py's defaults
        response = await answer(request_, request)
        pairs = [list(t) for t in history if isinstance(t, tuple)] + [[body.prompt, response.text]]
        return {"response": response.text, "history": pairs, "status": 200,
                "time": time.strftime("%Y-%m-%d %H:%M:%S")}

    return app


USAGE = "usage: python -m glm_eval.serve model=<name> [host=127.0.0.1] [port=8000] [api_key_env=VAR] [batch.*=…]"
OPTIONS = {"host": str,  # address to bind (default loopback)
           "port": port,
           "api_key_env": str}  # environment variable holding the bearer key requests must carry


def main(argv: list[str]) -> int:
    from hydra import compose, initialize_config_dir

    from glm_eval.core.files import config_dir
    from glm_eval.engine.run import LoadedModel
    _, settings, overrides = parse_args(argv, USAGE, OPTIONS, paths=(0, 0), passthrough=True)
    validate(overrides)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if cfg.model.backend != "hf":
        raise UserError("serve loads a model here: pick one with weights, not an HTTP endpoint")
    api_key = None
    if settings.get("api_key_env"):
        api_key = os.environ.get(settings["api_key_env"])
        if not api_key:
            raise UserError(f"api_key_env={settings['api_key_env']} but that environment variable is empty")
    loaded = LoadedModel(cfg)
    engine = BatchingEngine(loaded.backend)
    app = make_app(loaded.renderer, engine, cfg.model.name, api_key)
    host, port = settings.get("host", "127.0.0.1"), settings.get("port", 8000)
    import uvicorn
    print(f"serving {cfg.model.name} on http://{host}:{port} (OpenAI /v1/chat/completions, /v1/completions, "
          f"legacy POST /)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
