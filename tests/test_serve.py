"""glm-eval's own server with the real small model on loopback, called by glm-eval's HTTP backends (GSM8K answers
equal to in-process generation), by LangChain's ChatGLM clients and by the official openai client; a whole run
through a failing endpoint with exact accounting and a resume; the server's checks without a model."""
import json
import subprocess
import sys
import time
import warnings

import httpx
import pytest
from conftest import REPO, Server, run_eval, send
from fastapi.testclient import TestClient

from glm_eval.core.protocol import BackendInfo, Response, answer_in_rounds
from glm_eval.engine.serve import BatchingEngine, make_app


@pytest.fixture(scope="module")
def server(isolated_cache, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with socket_port() as port, open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "glm_eval.serve", "model=smollm2-135m-instruct", f"port={port}"],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(30)


class socket_port:
    """A free loopback port (closed again before the server binds it)."""

    def __enter__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def gsm8k_answers(tmp_path, data_dir, label, *overrides):
    results = tmp_path / label
    run_eval("task=gsm8k", "limit=5", "gen.max_new_tokens=100", f"data_dir={data_dir}", "progress=false",
             f"results_dir={results}", *overrides)
    [samples] = results.glob("*/gsm8k/samples.jsonl")
    records = [json.loads(line) for line in open(samples, encoding="utf-8")]
    assert not any("error" in r for r in records)
    return [r["extracted"] for r in records]


def test_gsm8k_through_each_http_backend_equals_in_process(server, tmp_path, data_dir):
    # A chat API cannot start the reply for the model, so the chat comparisons drop GSM8K's answer prefix on both
    # sides; the completions API carries the raw prompt whole, prefix included.
    chat = gsm8k_answers(tmp_path, data_dir, "chat", "model=smollm2-135m-instruct", "task.gen_prefix=")
    raw = gsm8k_answers(tmp_path, data_dir, "raw", "model=smollm2-135m-instruct", "model.chat=false")
    assert gsm8k_answers(tmp_path, data_dir, "openai_chat", "model=openai_api", f"model.endpoint.url={server}/v1",
                         "task.gen_prefix=") == chat
    assert gsm8k_answers(tmp_path, data_dir, "openai_completions", "model=openai_api", "model.endpoint.stream=true",
                         f"model.endpoint.url={server}/v1", "model.endpoint.api=completions") == raw
    assert gsm8k_answers(tmp_path, data_dir, "chatglm", "model=chatglm_api", f"model.endpoint.url={server}/",
                         "task.gen_prefix=") == chat


def run_records(tmp_path, data_dir, label, *overrides):
    results = tmp_path / label
    metrics = run_eval(f"data_dir={data_dir}", "progress=false", f"results_dir={results}", *overrides)
    [samples] = results.glob("*/*/samples.jsonl")
    records = [json.loads(line) for line in open(samples, encoding="utf-8")]
    assert not any("error" in r for r in records)
    return records, metrics


def test_completions_with_the_tokenizer_send_the_in_process_chat_prompt(server, tmp_path, data_dir):
    # chat template and GSM8K's answer prefix on both sides: the server gets the in-process token ids
    gsm8k = ["task=gsm8k", "limit=5", "gen.max_new_tokens=100"]
    here, here_metrics = run_records(tmp_path, data_dir, "here", *gsm8k, "model=smollm2-135m-instruct")
    there, there_metrics = run_records(tmp_path, data_dir, "there", *gsm8k, "model=openai_api",
                                       f"model.endpoint.url={server}/v1", "model.endpoint.api=completions",
                                       "model.tokenizer=smollm2-135m-instruct")
    assert here[0]["prompt"].startswith("<|im_start|>system") and here[0]["prompt"].endswith("Let's think step by step.")
    assert [r["prompt"] for r in there] == [r["prompt"] for r in here]
    assert [r["output"] for r in there] == [r["output"] for r in here]
    assert there_metrics["prompt_sha256"] == here_metrics["prompt_sha256"]


def test_bfcl_through_the_servers_tools_api_equals_in_process(server, tmp_path, data_dir):
    """BFCL's functions offered in process (SmolLM2's template ignores tools=, so BFCL's own prompt offers them) and
    as the OpenAI API's `tools` to glm_eval.serve, which offers them the same way and answers calls as tool_calls:
    the same replies, calls and verdicts; rescore recomputes each record from itself."""
    from conftest import run_command

    from glm_eval.engine.rescore import main as rescore
    bfcl = ["task=bfcl", "task.options.categories=[simple,parallel,live_simple,irrelevance]", "limit=1",
            "gen.max_new_tokens=48"]
    here, _ = run_records(tmp_path, data_dir, "here", *bfcl, "model=smollm2-135m-instruct")
    there, _ = run_records(tmp_path, data_dir, "there", *bfcl, "model=openai_api", f"model.endpoint.url={server}/v1")
    assert [r["bfcl_category"] for r in here] == ["simple", "parallel", "live_simple", "irrelevance"]
    assert [r["tool_format"] for r in here + there] == ["python"] * 4 + ["openai"] * 4
    assert "You are an expert in composing functions." in here[0]["prompt"] and "[tools] [" in there[0]["prompt"]
    def verdicts(records):  # the parsed calls, the verdict and BFCL's error type (the reasons' words differ)
        return [(r["calls"], r["correct"], ":".join(r.get("miss", "").split(":")[:2])) for r in records]
    assert verdicts(there) == verdicts(here)
    assert [r["output"] for r in there if "tool_calls" not in r] == [r["output"] for r in here if not r["calls"]]
    for run in (tmp_path / "here", tmp_path / "there"):
        [folder] = run.glob("*/bfcl")
        before = [json.loads(line) for line in open(folder / "samples.jsonl")]
        assert run_command(rescore, folder).returncode == 0
        assert [json.loads(line) for line in open(folder / "samples.jsonl")] == before


def test_the_real_model_served_as_the_judge(server, tmp_path, data_dir):
    """SmolLM2 behind glm_eval.serve judges MATH-500 (equivalence, after the rules) and AlignBench (a rating): every
    judged verdict and the metrics follow from the records; a finished run is judged later by rescore."""
    from conftest import run_command

    from glm_eval.core.averaging import summarize
    from glm_eval.engine.rescore import main as rescore
    from glm_eval.tasks.alignbench import AlignBench
    judge = ["judge=openai_api", f"judge.endpoint.url={server}/v1", "judge.max_new_tokens=24"]
    math = ["task=math500", "limit=4", "gen.max_new_tokens=64", "model=smollm2-135m-instruct"]
    records, metrics = run_records(tmp_path, data_dir, "math", *math, *judge, "judge.audit=1")
    asked = [r for r in records if "judge" in r]
    assert asked == [r for r in records if r["extracted"] is not None and not r["rule"]["correct"]]
    assert all("reply" in r["judge"] for r in asked) and metrics["judge"]["failed"] == 0
    assert metrics["judge"]["asked"] == len(asked) > 0
    assert metrics["judge"]["rule_score"] == sum(bool((r.get("rule") or r)["correct"]) for r in records) / 4
    assert metrics["score"] == metrics["judge"]["cascade_score"] == sum(r["correct"] for r in records) / 4

    # AlignBench: one real question of a reasoning and one of a language category (each judge prompt is ~2K tokens
    # for SmolLM2's tokenizer), THUDM's config beside them
    subset = tmp_path / "data" / "alignbench"
    subset.mkdir(parents=True)
    (subset / "config").symlink_to(data_dir / "alignbench" / "config")
    rows = [json.loads(line) for line in open(data_dir / "alignbench/data_v1.1_release.jsonl", encoding="utf-8")]
    picked = [next(r for r in rows if r["category"] == c) for c in ("数学计算", "专业能力")]
    (subset / "data_v1.1_release.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked),
                                                    encoding="utf-8")
    records, metrics = run_records(tmp_path, tmp_path / "data", "alignbench", "task=alignbench",
                                   "gen.max_new_tokens=32", "model=smollm2-135m-instruct", *judge)
    assert len(records) == 2 and all("reply" in r["judge"] for r in records)
    scored = [r for r in records if "score" in r]
    assert all(r["score"] == -1 or 1 <= r["score"] <= 10 for r in scored) and metrics["n"] == len(scored)
    thudm = summarize([r["score"] for r in scored], [r["subject"] for r in scored], [r["category"] for r in scored],
                      AlignBench.averaging)  # categories' means, then 中文推理 and 中文语言, then their mean
    assert metrics["score"] == pytest.approx(thudm["score"])

    run_records(tmp_path, data_dir, "later", *math)
    [folder] = (tmp_path / "later").glob("*/math500")
    assert run_command(rescore, folder, *judge).returncode == 0
    later = json.loads((folder / "metrics.json").read_text())
    judged = [json.loads(line) for line in open(folder / "samples.jsonl", encoding="utf-8")]
    assert later["judge"]["asked"] == sum("judge" in r for r in judged) > 0 and later["judge"]["failed"] == 0


def test_completions_take_token_ids_that_name_tokens(server):
    def complete(prompt):
        return httpx.post(f"{server}/v1/completions", timeout=60, json={"prompt": prompt, "max_tokens": 3})
    ok = complete([1, 2, 3]).json()
    assert ok["usage"]["prompt_tokens"] == 3 and ok["choices"][0]["finish_reason"] in ("length", "stop")
    for bad in ([], [-1], [10 ** 9], [1.5], [1, "a"], [[1]]):
        assert complete(bad).status_code == 400, bad


def test_longbench_through_an_endpoint_is_truncated_and_answered_as_in_process(server, tmp_path, data_dir):
    from test_longbench import THREE
    longbench = ["task=longbench", f"task.options.datasets=[{','.join(THREE)}]", "limit=2", "gen.max_new_tokens=12",
                 "model.max_input_length=2000"]  # a budget the three sets' documents all exceed, cheap on CPU
    here, here_metrics = run_records(tmp_path, data_dir, "here", *longbench, "model=smollm2-135m-instruct")
    cut = [r for r in here if r["input_tokens"] > 2000]
    assert len(here) == 6 and len(cut) == 5  # one multi_news document is shorter than the budget
    assert all(2000 <= r["prompt_tokens"] < 2100 for r in cut if "prompt_tokens" in r)  # kept for long prompts
    endpoint = ["model=openai_api", f"model.endpoint.url={server}/v1", "model.tokenizer=smollm2-135m-instruct"]
    for label, api in [("completions", "completions"), ("chat", "chat")]:  # ids as in process; turns the server wraps
        there, there_metrics = run_records(tmp_path, data_dir, label, *longbench, *endpoint, f"model.endpoint.api={api}")
        assert [(r["input_tokens"], r.get("prompt_tokens"), r["prompt"]) for r in there] == \
            [(r["input_tokens"], r.get("prompt_tokens"), r["prompt"]) for r in here]
        assert there_metrics["prompt_sha256"] == here_metrics["prompt_sha256"]
        assert [r["output"] for r in there] == [r["output"] for r in here]


def test_langchain_chatglm_clients_with_their_own_payloads(server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community announces its sunset on import
        from langchain_community.llms import ChatGLM
        from langchain_community.llms.chatglm3 import ChatGLM3
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    # ChatGLM posts {prompt, temperature 0.1, history, max_length, top_p 0.7} to POST /. Its default max_length
    # (20000) would let a sampled reply run to the context's end; a test keeps replies short.
    llm = ChatGLM(endpoint_url=f"{server}/", with_history=True, max_token=300)
    reply = llm.invoke("What is the capital of France?")
    assert reply.strip() and llm.history == [["What is the capital of France?", reply]]
    assert llm.invoke("And of Italy?").strip()
    # greedy, the history it keeps must reach the model: the same reply as the history sent by hand
    greedy = ChatGLM(endpoint_url=f"{server}/", temperature=0, history=[["Name a colour.", "Blue."]], max_token=300)
    by_hand = httpx.post(f"{server}/", json={"prompt": "Name another one.", "temperature": 0, "max_length": 300,
                                             "history": [["Name a colour.", "Blue."]]}, timeout=120).json()
    assert greedy.invoke("Name another one.") == by_hand["response"]
    # ChatGLM3 posts OpenAI chat (max_tokens 20000 by default, clamped to the context) with its prefix_messages first
    prefix = [SystemMessage(content="Answer in one word."), HumanMessage(content="Capital of Spain?"),
              AIMessage(content="Madrid")]
    chat_url = f"{server}/v1/chat/completions"
    assert ChatGLM3(endpoint_url=chat_url, prefix_messages=prefix, max_tokens=64).invoke("Capital of Japan?")
    greedy3 = ChatGLM3(endpoint_url=chat_url, prefix_messages=prefix, temperature=0)  # greedy stops at EOS
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of Spain?"},
                {"role": "assistant", "content": "Madrid"}, {"role": "user", "content": "Capital of Japan?"}]
    by_hand = httpx.post(f"{server}/v1/chat/completions", timeout=120,
                         json={"model": "x", "messages": messages, "temperature": 0, "max_tokens": 20000}).json()
    assert greedy3.invoke("Capital of Japan?") == by_hand["choices"][0]["message"]["content"]


def test_openai_client_stream_and_not(server):
    from openai import OpenAI
    client = OpenAI(api_key="EMPTY", base_url=f"{server}/v1")
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
    ask = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hello."}],
           "temperature": 0, "max_tokens": 24}
    whole = client.chat.completions.create(**ask)
    assert whole.choices[0].message.content and whole.usage.completion_tokens > 0
    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(**ask, stream=True)]
    assert "".join(pieces) == whole.choices[0].message.content and len([p for p in pieces if p]) > 3  # token by token
    text = client.completions.create(model="x", prompt="1, 2, 3,", max_tokens=6, temperature=0).choices[0].text
    assert text.strip()


def test_concurrent_requests_are_batched_together(server):
    """The engine decodes requests that arrive together in one batch: 40 concurrent requests, far fewer batches."""
    import concurrent.futures
    before = httpx.get(f"{server}/health").json()
    ask = lambda i: httpx.post(f"{server}/v1/chat/completions", timeout=300, json={  # noqa: E731
        "model": "x", "messages": [{"role": "user", "content": f"Count to {i % 7 + 2}."}], "max_tokens": 8,
        "temperature": 0}).json()["choices"][0]["message"]["content"]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        replies = list(pool.map(ask, range(40)))
    assert all(replies) and replies[0] == replies[7]  # same prompt, same greedy reply (possibly other batches)
    after = httpx.get(f"{server}/health").json()
    assert after["requests"] - before["requests"] == 40 and after["batches"] - before["batches"] <= 10


def test_a_client_that_leaves_stops_its_request(server):
    """A stream read for two chunks then closed, and a plain request whose client gives up after a second: the
    engine drops both rows (counted in /health) instead of decoding 1500 tokens nobody will read, and the server
    answers the next request."""
    ask = {"model": "x", "messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 1500,
           "temperature": 0.8, "seed": 1}
    before = httpx.get(f"{server}/health").json()["cancelled"]
    with httpx.stream("POST", f"{server}/v1/chat/completions", json={**ask, "stream": True}, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ") and next(l for l in lines if l).startswith("data: ")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server}/v1/chat/completions", json=ask, timeout=1.0)
    deadline = time.time() + 120  # a bound on waiting, not a timing: 1500 tokens each would take far longer
    while httpx.get(f"{server}/health").json()["cancelled"] < before + 2:
        assert time.time() < deadline, "the abandoned requests kept decoding"
        time.sleep(0.2)
    short = httpx.post(f"{server}/v1/chat/completions", timeout=60, json={**ask, "max_tokens": 4}).json()
    assert short["usage"]["completion_tokens"] == 4


def test_a_short_request_is_not_held_behind_a_long_one(server):
    """A stream asked for the whole context (min_tokens: no early EOS), then a short request: the short one joins
    the long one's batch at the next step and is answered while the long one still decodes."""
    long = {"model": "x", "messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 10**9,
            "min_tokens": 10**6, "temperature": 0.8, "seed": 3, "stream": True}
    before = httpx.get(f"{server}/health").json()
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=long, timeout=60) as stream:
        lines = (line for line in stream.iter_lines() if line)
        assert '"content"' in next(lines) and '"content"' in next(lines)  # decoding
        # a bound on waiting, not a timing: held behind the long one it would wait for 8192 tokens
        short = httpx.post(f"{server}/v1/chat/completions", timeout=120, json={
            "model": "x", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}).json()
        assert short["usage"]["completion_tokens"] == 4
        still = json.loads(next(lines).removeprefix("data: "))
        assert still["choices"][0]["finish_reason"] is None  # the long one is still going
        during = httpx.get(f"{server}/health").json()
    assert during["requests"] - before["requests"] == 2 and during["batches"] - before["batches"] == 1


# ---- a whole run through a failing endpoint ------------------------------------------------------------------
def test_failing_endpoint_run_accounts_exactly_and_resumes(tmp_path, data_dir):
    questions = [json.loads(line)["question"] for line in open(data_dir / "gsm8k" / "test.jsonl")][:10]
    broken = {questions[2]: "500", questions[5]: "400"}  # always 500 (retried, then failed); 400 (failed at once)
    flaky = {questions[7]: "drop", questions[8]: "malformed"}  # once each, then fine: not failures
    healthy = {"on": False}

    def reply(handler, path, payload):
        asked = payload["messages"][-1]["content"]
        fault = next((f for q, f in {**broken, **flaky}.items() if q in asked), None)
        if fault and not healthy["on"]:
            if fault in ("drop", "malformed"):
                del flaky[next(q for q in flaky if q in asked)]
            if fault == "drop":
                handler.connection.close()
                return
            if fault == "malformed":
                return send(handler, 200, b'{"choices": [')
            return send(handler, int(fault), {"error": {"message": fault}})
        send(handler, 200, {"id": "", "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": "The answer is 18."}}]})

    server = Server(reply)
    try:
        run = ["task=gsm8k", "limit=10", f"data_dir={data_dir}", "progress=false", f"results_dir={tmp_path}",
               "model=openai_api", f"model.endpoint.url={server.url}/v1", "model.endpoint.retries=2",
               "model.endpoint.backoff_s=0.01"]
        run_eval(*run)
        metrics = json.loads((tmp_path / "openai_api" / "gsm8k" / "metrics.json").read_text())
        assert (metrics["n"], metrics["failed"], metrics["generated"]) == (8, 2, 10)
        records = [json.loads(line) for line in open(tmp_path / "openai_api" / "gsm8k" / "samples.jsonl")]
        assert [i for i, r in enumerate(records) if "error" in r] == [2, 5]
        assert "HTTP 500 after 3 attempts" in records[2]["error"] and records[5]["error"].startswith("HTTP 400")
        assert metrics["correct"] == 1  # only problem 0's gold is 18: failures are not counted as wrong answers
        calls = [p["messages"][-1]["content"] for _, _, p in server.seen]
        assert sum(questions[2] in c for c in calls) == 3 and sum(questions[5] in c for c in calls) == 1

        healthy["on"] = True
        run_eval(*run)  # resume: only the two failed requests go out again
        metrics = json.loads((tmp_path / "openai_api" / "gsm8k" / "metrics.json").read_text())
        assert (metrics["n"], metrics["failed"], metrics["generated"], metrics["from_cache"]) == (10, 0, 2, 8)
    finally:
        server.close()


# ---- the server's own checks, without a model ------------------------------------------------------------------
class EchoBackend:
    """Stands in for the model (the whole Backend protocol): replies "<n> tokens" for a prompt of n tokens, one
    character per step, reporting the reply so far at each step and cutting at stop strings as the generator does."""

    info = BackendInfo(fingerprint="echo", dtype="none", device="none", context_length=64)

    def generate(self, requests, on_response, on_text=None, arrivals=None):
        answer_in_rounds(self.answer, requests, on_response, on_text, arrivals)

    def answer(self, requests, on_response, on_text):
        for i, r in enumerate(requests):
            text = f"{len(r.prompt.token_ids)} tokens"
            for k in range(1, len(text)):
                if on_text and not any(s in text[:k] for s in r.stop):
                    on_text(i, text[:k])
            cuts = [text.find(s) for s in r.stop if s in text]
            on_response(i, Response(text=text[:min(cuts)] if cuts else text, num_tokens=2, finish_reason="eos"))

    def loglikelihood(self, requests, on_response):
        raise NotImplementedError("not used by the server")

    def groups(self, requests):
        return [[i] for i in range(len(requests))]

    def tokens_processed(self):
        return 0

    def take_stats(self):
        return {}


class CharRenderer:
    """One token per character."""

    def render_messages(self, messages, tools=None):
        from glm_eval.core.protocol import Prompt
        text = "".join(c for _, c in messages)
        return Prompt(text, tuple(range(len(text))), messages)

    def plain(self, text):
        from glm_eval.core.protocol import Prompt
        return Prompt(text, tuple(range(len(text))))


def test_server_checks_keys_bodies_and_lengths():
    client = TestClient(make_app(CharRenderer(), BatchingEngine(EchoBackend()), "echo", api_key="s3cret"))
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
    assert client.get("/health").status_code == 200  # no key needed
    assert client.post("/v1/chat/completions", json=chat).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    ok = client.post("/v1/chat/completions", json=chat, headers=auth).json()
    assert ok["choices"][0]["message"]["content"] == "5 tokens" and ok["usage"]["prompt_tokens"] == 5
    for bad in ({"messages": []}, {"messages": [{"role": "assistant", "content": "x"}]}, {"messages": "hi"},
                {"messages": [{"role": "user", "content": "x" * 64}]}):
        assert client.post("/v1/chat/completions", json=bad, headers=auth).status_code == 400
    assert client.post("/", content=b"not json", headers=auth).status_code == 400
    legacy = client.post("/", json={"prompt": "hi", "history": [["a", "b"]]}, headers=auth).json()
    assert legacy["response"] == "4 tokens" and legacy["history"] == [["a", "b"], ["hi", "4 tokens"]]
    # streams: pieces as the row grows, never past what a stop string may still cut, adding up to the reply
    for stop, reply in ((None, "5 tokens"), (["ken"], "5 to")):
        with client.stream("POST", "/v1/chat/completions", headers=auth, json={**chat, "stream": True, "stop": stop}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
        pieces = [c["delta"].get("content", "") for c in chunks]
        assert chunks[0]["delta"]["role"] == "assistant" and chunks[-1]["finish_reason"] == "stop"
        assert "".join(pieces) == reply and len([p for p in pieces if p]) > 2


def test_bad_fields_are_400_and_never_reach_the_engine():
    engine = BatchingEngine(EchoBackend())
    client = TestClient(make_app(CharRenderer(), engine, "echo"))
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    for bad in ({"stop": [5]}, {"top_p": -1}, {"top_p": 0}, {"temperature": "hot"}, {"seed": 2**70}, {"seed": -1},
                {"max_tokens": 0}, {"stream": [1]}, {"messages": [{"role": "user"}]}, {"stop": ["x"] * 100}):
        reply = client.post("/v1/chat/completions", json={**chat, **bad})
        assert reply.status_code == 400 and reply.json()["detail"], (bad, reply.text)
    for path, bad in (("/v1/completions", {"prompt": 5}), ("/v1/completions", {"prompt": ["a", "b"]}),
                      ("/", {"prompt": "hi", "history": [["only one"]]}), ("/", {"prompt": "hi", "top_p": 2})):
        assert client.post(path, json=bad).status_code == 400, (path, bad)
    assert engine.requests == 0  # none reached the engine
    # a well-formed request with the largest seed and a huge max_tokens is answered (capped to the context)
    ok = client.post("/v1/chat/completions", json={**chat, "seed": 2**63 - 1, "max_tokens": 10**9, "temperature": 0.5})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "5 tokens"


def test_bodies_are_bounded_and_health_stays_up():
    client = TestClient(make_app(CharRenderer(), BatchingEngine(EchoBackend()), "echo"))
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (9 << 20) + b'"}]}'
    assert client.post("/v1/chat/completions", content=huge,
                       headers={"Content-Type": "application/json"}).status_code == 413
    chunked = client.post("/v1/chat/completions", content=iter([b'{"messages": []}']),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 411
    assert client.get("/health").json()["status"] == "ok"

