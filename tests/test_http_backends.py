"""HTTP backends against small local servers: payloads, SSE parsing, the legacy api.py dialect, and exact
accounting of retries and failures under injected faults. No model needed."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter

import pytest
from conftest import send

from glm_eval.core.config import EndpointConfig
from glm_eval.core.errors import UserError
from glm_eval.backends.http import ChatGLMBackend, OpenAIBackend
from glm_eval.core.protocol import GenerationRequest, LoglikelihoodRequest, Prompt, Response


def send_sse(handler, lines):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()  # HTTP/1.0: the stream ends when the connection closes
    for line in lines:
        handler.wfile.write(line.encode() + b"\n")
        handler.wfile.flush()


def chat_reply(text, finish="stop", usage=True):
    reply = {"model": "m", "id": "", "object": "chat.completion", "created": 0,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
    if usage:
        reply["usage"] = {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    return reply


def sse_chat(pieces, finish="stop"):
    """ChatGLM3's api_server stream: a ping, a role-only first delta, an empty chunk, the pieces, [DONE]."""
    chunk = lambda delta, fin=None: "data: " + json.dumps(  # noqa: E731
        {"model": "m", "id": "", "object": "chat.completion.chunk", "created": 0,
         "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}) + "\n"
    return [": ping\n", chunk({"role": "assistant"}), chunk({"content": ""}),
            *(chunk({"content": p}) for p in pieces), chunk({}, finish), "data: [DONE]\n"]


def request(text="hi", messages=(), max_new_tokens=16, stop=(), temperature=0.0, **kw):
    return GenerationRequest(Prompt(text=text, messages=tuple(messages)), max_new_tokens, tuple(stop),
                             temperature, **kw)


def run(backend, requests):
    responses: dict[int, list[Response]] = {}
    threads = set()

    def on_response(i, response):
        threads.add(threading.get_ident())
        responses.setdefault(i, []).append(response)
    backend.generate(requests, on_response)
    assert threads <= {threading.get_ident()}, "on_response must run in the caller's thread"
    assert sorted(responses) == list(range(len(requests))) and all(len(r) == 1 for r in responses.values())
    return [responses[i][0] for i in range(len(requests))]


def endpoint(url, **kw):
    return EndpointConfig(url=url, **{"concurrency": 4, "timeout_s": 5.0, "retries": 2, "backoff_s": 0.01, **kw})


def test_openai_chat_payload_and_reply(serve, monkeypatch):
    server = serve(lambda h, path, p: send(h, body=chat_reply("The answer is 4.")), model_id="chatglm3-6b")
    monkeypatch.setenv("TEST_GLM_KEY", "sk-secret")
    backend = OpenAIBackend(endpoint(server.url + "/v1", api_key_env="TEST_GLM_KEY"), "chatglm3-6b")
    messages = (("system", "Be brief."), ("user", "1+1?"), ("assistant", "2"), ("user", "2+2?"))
    [greedy, sampled] = run(backend, [request(messages=messages, stop=["\n\n"]),
                                      request(text="plain", temperature=0.7, top_p=0.9, seed=5)])
    assert greedy == Response(text="The answer is 4.", num_tokens=7, finish_reason="stop")
    assert sampled.text == "The answer is 4." and sampled.error is None
    by_text = {p.get("messages")[-1]["content"]: (path, headers, p) for path, headers, p in server.seen}
    path, headers, payload = by_text["2+2?"]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-secret"
    assert payload == {"model": "chatglm3-6b", "messages": [{"role": r, "content": c} for r, c in messages],
                       "max_tokens": 16, "temperature": 0.0, "top_p": 1.0, "stop": ["\n\n"], "stream": False}
    _, _, payload = by_text["plain"]
    assert payload["messages"] == [{"role": "user", "content": "plain"}]
    assert payload["seed"] == 5 and payload["temperature"] == 0.7 and payload["top_p"] == 0.9
    assert "stop" not in payload
    assert backend.info.fingerprint == json.dumps(["openai_api", "chatglm3-6b", "", "chat", None])
    assert (backend.info.dtype, backend.info.device) == ("remote", server.url + "/v1")
    assert backend.take_stats() == {"requests": 2, "failed": 0, "retries": 0, "tokens": 14, "in_flight_limit": 4}
    assert backend.take_stats()["requests"] == 0  # per call: the next task counts its own


def test_openai_chat_stream(serve):
    server = serve(lambda h, path, p: send_sse(h, sse_chat(["The ans", "", "wer", " is 4."])), model_id="served-name")
    backend = OpenAIBackend(endpoint(server.url + "/v1/", stream=True, model="served-name"), "chatglm3-6b")
    [response] = run(backend, [request(messages=[("user", "2+2?")])])
    assert response == Response(text="The answer is 4.", num_tokens=0, finish_reason="stop")  # no usage sent
    [(path, headers, payload)] = server.seen
    assert path == "/v1/chat/completions" and payload["stream"] is True and payload["model"] == "served-name"
    assert "authorization" not in {k.lower() for k in headers}


def test_openai_completions_stream_and_plain(serve):
    def reply(h, path, p):
        if p["stream"]:
            chunks = [{"choices": [{"index": 0, "text": t, "finish_reason": f}]} for t, f in
                      [("4", None), ("", None), (".\nQ", "length")]]
            send_sse(h, [": ping\n", *(f"data: {json.dumps(c)}\n" for c in chunks), "data: [DONE]\n"])
        else:
            send(h, body={"id": "x", "choices": [{"index": 0, "text": " 4", "finish_reason": "length"}],
                          "usage": {"completion_tokens": 2}})
    server = serve(reply)
    for stream, text in [(False, " 4"), (True, "4.")]:
        backend = OpenAIBackend(endpoint(server.url, api="completions", stream=stream), "m")
        [response] = run(backend, [request(text="Q: 2+2?\nA:", messages=[("user", "ignored")], stop=["\nQ"])])
        assert response.text == text and response.error is None
        assert response.finish_reason == ("stop" if stream else "length")  # client-side cut at "\nQ"
    assert [(path, p["prompt"]) for path, _, p in server.seen] == [("/completions", "Q: 2+2?\nA:")] * 2
    assert "messages" not in server.seen[0][2]


@pytest.mark.parametrize("owned_by,prompt_as,tokenized,sent", [
    ("vllm", "auto", True, [7, 8, 9]), ("glm-eval", "auto", True, [7, 8, 9]),  # servers known to take ids
    ("openai", "auto", True, "Q: 2+2?"), (None, "auto", True, "Q: 2+2?"),  # others, or a card that does not say
    ("vllm", "text", True, "Q: 2+2?"), ("other", "token_ids", True, [7, 8, 9]),  # forced either way
    ("vllm", "auto", False, "Q: 2+2?")])  # no model.tokenizer: the ids are not the server's
def test_completions_send_the_prompts_token_ids_where_the_server_takes_them(serve, owned_by, prompt_as, tokenized,
                                                                             sent):
    server = serve(lambda h, path, p: send(h, body={"choices": [{"index": 0, "text": " 4", "finish_reason": "stop"}]}),
                   owned_by=owned_by)
    backend = OpenAIBackend(endpoint(server.url, api="completions", prompt_as=prompt_as), "m", tokenized=tokenized)
    prompt = Prompt(text="Q: 2+2?", token_ids=(7, 8, 9) if tokenized else ())
    [response] = run(backend, [GenerationRequest(prompt, 16, min_new_tokens=1)])
    assert response.text == " 4" and server.seen[-1][2]["prompt"] == sent
    assert server.seen[-1][2]["min_tokens"] == 1  # vLLM's name for min_new_tokens
    by_text = OpenAIBackend(endpoint(server.url, api="completions", prompt_as="text"), "m", tokenized=tokenized)
    assert (backend.info.fingerprint == by_text.info.fingerprint) == (sent == "Q: 2+2?")  # ids: answers of their own


def test_chatglm_legacy(serve, capsys):
    server = serve(lambda h, path, p: send(h, body={"response": "4. Next question: 3+3", "history": [],
                                                   "status": 200, "time": "2024-01-01 00:00:00"}))
    backend = ChatGLMBackend(endpoint(server.url + "/", max_length=4096), "chatglm2-6b")
    messages = (("system", "Be brief."), ("user", "1+1?"), ("assistant", "2"), ("user", "2+2?"))
    responses = run(backend, [request(messages=messages, stop=[" Next"], max_new_tokens=32),
                              request(text="plain", temperature=0.5)])
    assert responses[0] == Response(text="4.", finish_reason="stop")
    assert responses[1].text == "4. Next question: 3+3" and responses[1].finish_reason == "eos"
    run(backend, [request()])  # a second greedy batch: no second warning
    payloads = {p["prompt"]: (path, p) for path, _, p in server.seen}
    path, payload = payloads["Be brief.\n2+2?"]
    assert path == "/" and payload == {"prompt": "Be brief.\n2+2?", "history": [["1+1?", "2"]], "max_length": 4096,
                                       "max_new_tokens": 32, "top_p": 1.0, "temperature": 0.0}
    assert payloads["plain"][1]["history"] == []
    assert capsys.readouterr().err.count("warning: " + server.url + "/: the original api.py turns temperature 0") == 1
    # api.py names no model: the configured name and revision are the cache identity, never the URL
    assert backend.info.fingerprint == json.dumps(["chatglm_api", "chatglm2-6b", None])
    assert (backend.info.dtype, backend.info.device) == ("remote", server.url + "/")


def test_loglikelihood_and_config_errors(monkeypatch):
    monkeypatch.delenv("TEST_GLM_MISSING_KEY", raising=False)
    with pytest.raises(UserError, match="TEST_GLM_MISSING_KEY"):
        OpenAIBackend(endpoint("http://127.0.0.1:1", api_key_env="TEST_GLM_MISSING_KEY"), "m")
    with pytest.raises(UserError, match="api"):
        OpenAIBackend(endpoint("http://127.0.0.1:1", api="embeddings"), "m")
    ll = [LoglikelihoodRequest(Prompt("q"), ((1,),))]
    for backend in (OpenAIBackend(endpoint("http://127.0.0.1:1"), "m"), ChatGLMBackend(endpoint("http://x/"), "m")):
        with pytest.raises(UserError, match="choice_scoring=generate"):
            backend.loglikelihood(ll, lambda i, r: None)


def test_a_server_gone_mid_run_gives_failed_responses(serve):
    server = serve(lambda h, path, p: send(h, body=chat_reply("x")))
    backend = OpenAIBackend(endpoint(server.url + "/v1", retries=1), "m")
    assert json.loads(backend.info.fingerprint)[1] == "m"  # identified while the server was up
    server.close()
    [response] = run(backend, [request()])
    assert response.finish_reason == "error" and response.text == ""
    assert response.error == "connection error (ConnectError) after 2 attempts"
    assert backend.take_stats() == {"requests": 1, "failed": 1, "retries": 1, "tokens": 0, "in_flight_limit": 4}


def test_no_server_at_the_start_is_one_line_before_any_request():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(endpoint(f"http://127.0.0.1:{port}/v1"), "m")
    with pytest.raises(UserError, match=f"cannot reach http://127.0.0.1:{port}/v1/models"):
        backend.generate([request()], lambda i, r: None)


def test_cache_identity_is_the_served_model_not_the_url(serve):
    reply = lambda h, path, p: send(h, body=chat_reply("x"))  # noqa: E731
    a, b = serve(reply, model_id="glm-4-9b-chat"), serve(reply, model_id="glm-4-9b-chat")
    first, moved = (OpenAIBackend(endpoint(s.url + "/v1"), "glm4").info.fingerprint for s in (a, b))
    assert first == moved  # the same model on another host keeps its cached answers
    assert OpenAIBackend(endpoint(a.url + "/v1", revision="2024-06-05"), "glm4").info.fingerprint != first
    other = serve(reply, model_id="chatglm3-6b")
    assert OpenAIBackend(endpoint(other.url + "/v1"), "glm4").info.fingerprint != first
    with pytest.raises(UserError, match="serves chatglm3-6b; set model.endpoint.model"):
        _ = OpenAIBackend(endpoint(other.url + "/v1", model="glm-4-9b-chat"), "glm4").info


# kind → (retries it costs, whether it finally fails); the server decides by the prompt, so concurrency
# does not change which request meets which fault
RETRIES = 3
FAULTS = {"ok": (0, False), "twice500": (2, False), "always500": (RETRIES, True), "bad400": (0, True),
          "rate429": (1, False), "malformed": (1, False), "missing": (1, False), "slow": (1, False),
          "drop": (1, False), "partial": (1, False)}


def fault_reply(calls, lock):
    def reply(h, path, p):
        prompt = p["messages"][-1]["content"]
        kind = prompt.split("-")[0]
        with lock:
            calls[prompt] += 1
            n = calls[prompt]
        good = (lambda: send_sse(h, sse_chat([f"re:{prompt}"]))) if p["stream"] else \
            (lambda: send(h, body=chat_reply(f"re:{prompt}")))
        if kind == "twice500" and n <= 2 or kind == "always500":
            send(h, 500, b"internal error")
        elif kind == "bad400":
            send(h, 400, b'{"detail": "messages must\nend with a user turn"}')
        elif kind == "rate429" and n == 1:
            send(h, 429, b"slow down", headers=[("Retry-After", "0")])
        elif kind == "malformed" and n == 1:
            send_sse(h, ["data: {not json\n"]) if p["stream"] else send(h, body=b"{not json")
        elif kind == "missing" and n == 1:  # a stream that closes without [DONE]; a reply without choices
            send_sse(h, sse_chat(["half"])[:4]) if p["stream"] else send(h, body={"id": "", "choices": []})
        elif kind == "slow" and n == 1:
            time.sleep(1.0)
            good()
        elif kind == "drop" and n == 1:  # close without a reply
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "partial" and n == 1:  # promise 1000 bytes, send 20, close
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream" if p["stream"] else "application/json")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.write(b'data: {"choices": [')
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
        else:
            good()
    return reply


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_fault_injection_exact_accounting(serve, stream):
    calls, lock = Counter(), threading.Lock()
    server = serve(fault_reply(calls, lock))
    kinds = list(FAULTS)
    prompts = [f"{kinds[i % len(kinds)]}-{i}" for i in range(40)]
    backend = OpenAIBackend(endpoint(server.url + "/v1", concurrency=8, timeout_s=0.5, retries=RETRIES,
                                     backoff_s=0.01, stream=stream), "m")
    start = time.monotonic()
    responses = run(backend, [request(messages=[("user", p)]) for p in prompts])
    assert time.monotonic() - start < 10

    failed = {i for i, r in enumerate(responses) if r.error is not None}
    assert failed == {i for i, p in enumerate(prompts) if FAULTS[p.split("-")[0]][1]}
    for prompt, response in zip(prompts, responses):
        kind = prompt.split("-")[0]
        if kind == "always500":
            assert response.error == f"HTTP 500 after {RETRIES + 1} attempts" and calls[prompt] == RETRIES + 1
        elif kind == "bad400":  # not retried; the body is quoted on one line
            assert response.error == 'HTTP 400: {"detail": "messages must end with a user turn"}'
            assert calls[prompt] == 1
        else:
            assert response.error is None and response.text == f"re:{prompt}" and response.finish_reason == "stop"
            assert calls[prompt] == FAULTS[kind][0] + 1
        if response.error:
            assert response.finish_reason == "error" and response.text == ""
    stats = backend.take_stats()
    assert stats == {"requests": 40, "failed": len(failed), "in_flight_limit": 8, "tokens": stats["tokens"],
                     "retries": sum(FAULTS[p.split("-")[0]][0] for p in prompts)}


def test_interrupt_cancels_pending(serve):
    server = serve(lambda h, path, p: (time.sleep(0.05), send(h, body=chat_reply("x"))))
    backend = OpenAIBackend(endpoint(server.url, concurrency=2), "m")

    def on_response(i, response):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        backend.generate([request(text=str(i)) for i in range(50)], on_response)
    time.sleep(0.3)
    assert len(server.seen) < 10  # the queued requests were never sent


def trickle(h, path, p):
    """Headers at once, then a byte every 0.2 s, forever (a stuck proxy; each read returns in time)."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream" if p.get("stream") else "application/json")
    h.end_headers()
    try:
        for _ in range(300):
            h.wfile.write(b": ping\n\n" if p.get("stream") else b" ")
            h.wfile.flush()
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.mark.parametrize("stream", [False, True], ids=["trickled-json", "pings-only-sse"])
def test_the_timeout_bounds_the_whole_attempt(serve, stream):
    server = serve(trickle)
    backend = OpenAIBackend(endpoint(server.url + "/v1", timeout_s=1.0, retries=1, backoff_s=0.01, stream=stream), "m")
    start = time.monotonic()
    [response] = run(backend, [request()])
    assert time.monotonic() - start < 5.0  # two attempts of 1 s each, not 60 s of trickle
    assert response.error == "timeout (1 s for the attempt) after 2 attempts" and response.text == ""


def test_interrupt_cuts_requests_in_flight(serve):
    def reply(h, path, p):
        if p["messages"][-1]["content"] == "fast":
            return send(h, body=chat_reply("x"))
        trickle(h, path, p)
    server = serve(reply)
    backend = OpenAIBackend(endpoint(server.url + "/v1", concurrency=4, timeout_s=60.0), "m")

    def on_response(i, response):
        raise KeyboardInterrupt
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        backend.generate([request(messages=[("user", "slow")])] * 3 + [request(messages=[("user", "fast")])],
                         on_response)
    deadline = time.monotonic() + 2.0
    while any(t.name.startswith("openai_api") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("openai_api") for t in threading.enumerate())  # the process can exit now
    assert time.monotonic() - start < 3.0


def test_requests_that_arrive_during_a_call_start_at_once(serve):
    """A server behind an endpoint (glm-eval's arrivals): a request handed over while a slow one runs is sent at
    once and answered first, numbered on."""
    release = threading.Event()

    def reply(h, path, p):
        if p["messages"][-1]["content"] == "slow":
            release.wait(30)
        send(h, body=chat_reply(p["messages"][-1]["content"]))
    server = serve(reply)
    backend = OpenAIBackend(endpoint(server.url + "/v1"), "m")
    handed, order = [], []

    def arrivals():
        if not handed and server.seen:
            handed.append(1)
            return [request(messages=[("user", "fast")])]
        return []

    def on_response(i, response):
        order.append((i, response.text))
        release.set()
    backend.generate([request(messages=[("user", "slow")])], on_response, None, arrivals)
    assert order == [(1, "fast"), (0, "slow")]
