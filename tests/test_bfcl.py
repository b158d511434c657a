"""BFCL: each family's tool format written and read back (single and parallel calls, values holding quotes, newlines
and nested JSON, prose around a call, truncated and huge replies), BFCL's AST checker on the first rows of every
category (the gold call passes, each mutation fails for its own reason), the tool prompts of the real tokenizers and
templates, and bad data files. The real small model end to end (in process and through glm_eval.serve's OpenAI API
with `tools`) is in test_serve.py, beside its server."""
import json

import pytest
from tiny_glm import TEMPLATES

from glm_eval.core.errors import UserError
from glm_eval.engine.overrides import compose_config
from glm_eval.glm.prompts import PromptRenderer
from glm_eval.glm.tools import parse_calls, write_call
from glm_eval.scoring import bfcl
from glm_eval.tasks import load_task

FORMATS = ("chatglm3", "glm4", "glm45", "glm47", "hermes", "python", "openai")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "units": {"type": "object"},
        "ok": {"type": "boolean"}}}}}]
CALL = {"name": "get_weather", "arguments": {"city": 'São "Paulo"\nzona sul', "days": 3, "ok": True,
                                             "units": {"t": "C", "steps": [1, 2.5, None]}}}
OTHER = {"name": "get_weather", "arguments": {"city": "Lyon", "days": 1}}


def reply(fmt: str, *calls: dict) -> str:
    """A reply making `calls` as a model of format `fmt` writes them (GLM-4's and ChatGLM3's parallel calls are further
    <|assistant|> segments, whose role tokens the decoded reply no longer holds)."""
    if fmt == "python":
        return "[" + ", ".join(write_call(fmt, c)[1:-1] for c in calls) + "]"
    if fmt == "openai":
        return json.dumps([json.loads(write_call(fmt, c))[0] for c in calls])
    return "".join(write_call(fmt, c) for c in calls)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_what_it_writes(fmt):
    parsed = parse_calls(fmt, reply(fmt, CALL), TOOLS)
    assert parsed.problem is None and parsed.calls == [CALL]
    if fmt != "chatglm3":  # ChatGLM3's process_response keeps one call per reply
        assert parse_calls(fmt, reply(fmt, CALL, OTHER), TOOLS).calls == [CALL, OTHER]
    for prose in ("I cannot help with that.", "", "get_weather"):
        none = parse_calls(fmt, prose, TOOLS)
        assert none.calls == [] and none.problem, (fmt, prose)
    whole = reply(fmt, CALL)
    for cut in (len(whole) // 3, len(whole) - 3):  # a reply that ran out of tokens inside its call
        truncated = parse_calls(fmt, whole[:cut], TOOLS)
        assert truncated.calls == [] and truncated.problem, (fmt, cut)


def test_glm_formats_as_vllms_parsers_read_them():
    # prose around the calls is content; GLM-4.7's zero-argument call; string-typed parameters keep their text, the
    # others are JSON, else a Python literal, else the text
    text = ("Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value> 42 </arg_value>\n<arg_key>days"
            "</arg_key>\n<arg_value> 2 </arg_value>\n<arg_key>units</arg_key>\n<arg_value>{'t': 'F'}</arg_value>\n"
            "</tool_call>\nDone.")
    parsed = parse_calls("glm45", text, TOOLS)
    assert parsed.calls == [{"name": "get_weather", "arguments": {"city": " 42 ", "days": 2, "units": {"t": "F"}}}]
    assert parsed.content == "Let me check.\n\nDone."
    assert parse_calls("glm47", "<tool_call>now</tool_call>", TOOLS).calls == [{"name": "now", "arguments": {}}]
    assert parse_calls("glm45", "<tool_call>now\n</tool_call>", TOOLS).calls == [{"name": "now", "arguments": {}}]
    # GLM-4-0414 writes a parallel call as another segment: the model card's regex finds both after prose
    glm4 = 'Sure.\nget_weather\n{"city": "A"}get_weather\n{"city": "B", "units": {"t": "C"}}'
    assert [c["arguments"]["city"] for c in parse_calls("glm4", glm4, TOOLS).calls] == ["A", "B"]
    # BFCL's prompt mode: dotted names, a bare call without brackets, fenced
    assert parse_calls("python", "```python\nmath.factorial(number=5)\n```", []).calls == \
        [{"name": "math.factorial", "arguments": {"number": 5}}]


def test_huge_and_hostile_replies_are_wrong_answers_not_crashes():
    tools = TOOLS
    hostile = ["x" * 1_000_000, "<tool_call>" + "{" * 200_000, "[" * 200_000, "get_weather\n" + "{" * 200_000,
               "<tool_call>get_weather\n" + "<arg_key>a</arg_key><arg_value>" * 50_000, "<tool_call>" * 100_000,
               "\n{" * 300_000, "[__import__('os').system('x')]", "[f(a=__import__('os'))]", "[f(a=9**9**9)]",
               '[{"function": 5}]', "null"]
    for fmt in FORMATS:  # every scan is linear: these finish in a second (a quadratic one would hang here)
        for text in hostile:
            parsed = parse_calls(fmt, text, tools)
            assert isinstance(parsed.calls, list) and (parsed.problem or parsed.calls), (fmt, text[:40])
            assert all(isinstance(c["arguments"], dict) for c in parsed.calls)
    assert parse_calls("glm45", 12345, tools).problem  # an edited record's output that is no string


def gold_call(answer: dict) -> dict:
    """The call a possible answer describes: each parameter's first listed value, optional ones ("" first) left out."""
    def first(values):
        value = next(v for v in values if v != "")
        if isinstance(value, dict):
            return {k: first(v) for k, v in value.items() if any(x != "" for x in v)}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return [{k: first(v) for k, v in d.items() if any(x != "" for x in v)} for d in value]
        return value
    name, params = next(iter(answer.items()))
    return {"name": name, "arguments": {k: first(v) for k, v in params.items() if any(x != "" for x in v)}}


def rows(data_dir, category, n=4):
    folder = data_dir / "bfcl" / "v3"
    questions = [json.loads(line) for line in open(folder / f"BFCL_v3_{category}.json")][:n]
    answers = {a["id"]: a["ground_truth"] for a in map(json.loads, open(folder / "possible_answer" /
                                                                          f"BFCL_v3_{category}.json"))}
    return [(q["function"], answers[q["id"]]) for q in questions]


def mutations(functions, answers):
    """(reason, mutated calls) for the first call: a wrong name, a dropped required parameter, a wrong type, a value
    outside the possible answers."""
    calls = [gold_call(a) for a in answers]
    schema = next(f for f in functions if f["name"] == calls[0]["name"])
    props, args = schema["parameters"]["properties"], calls[0]["arguments"]

    def changed(**edit):
        return [{**calls[0], **edit}, *calls[1:]]
    out = [("wrong_func_name", changed(name=calls[0]["name"] + "_v2"))]
    required = [p for p in schema["parameters"].get("required", []) if p in args]
    if required:
        out.append(("missing_required", changed(arguments={k: v for k, v in args.items() if k != required[0]})))
    typed = [p for p in args if props[p]["type"] in ("integer", "float", "boolean", "array", "dict")]
    if typed:
        out.append(("type_error", changed(arguments={**args, typed[0]: "not a value"})))
    strings = [p for p in args if props[p]["type"] == "string" and isinstance(args[p], str)]
    if strings:
        out.append(("value_error:string", changed(arguments={**args, strings[0]: "zz-not-an-answer"})))
    return calls, out


@pytest.mark.parametrize("category", bfcl.NON_LIVE + bfcl.LIVE)
def test_the_checker_passes_the_gold_call_and_fails_each_mutation_for_its_reason(category, data_dir):
    seen = set()
    for functions, answers in rows(data_dir, category):
        calls, mutated = mutations(functions, answers)
        assert bfcl.check(category, functions, calls, answers) is None
        if "parallel" in category:  # the calls in any order
            assert bfcl.check(category, functions, calls[::-1], answers) is None
        for reason, bad in mutated:
            miss = bfcl.check(category, functions, bad, answers)
            assert miss is not None and reason in f"{miss.kind} {miss.message}", (category, reason, miss)
            seen.add(reason)
        assert bfcl.check(category, functions, calls + calls[:1], answers).kind.endswith("wrong_count")
    assert {"wrong_func_name", "missing_required", "value_error:string"} <= seen


def test_bfcl_type_rules():
    schema = {"name": "f", "parameters": {"type": "dict", "required": ["x"], "properties": {
        "x": {"type": "float"}, "n": {"type": "integer"}, "flag": {"type": "boolean"}, "tags": {"type": "array",
                                                                                            "items": {"type": "float"}},
        "unit": {"type": "string"}}}}
    answer = [{"f": {"x": [5.0], "n": [3], "flag": ["", False], "tags": ["", [1.5, 2.0]], "unit": ["", "Meters"]}}]

    def check(**args):
        return bfcl.check("simple", [schema], [{"name": "f", "arguments": args}], answer)
    assert check(x=5, n=3) is None  # an int for a float: BFCL's one allowance
    assert check(x=5.0, n=3.0).kind == "type_error:simple"  # not the other way round
    assert check(x=5.0, n=True).kind == "type_error:simple"  # a bool is not an int
    assert check(x=5.0, n=3, unit="meters") is None and check(x=5.0, n=3, unit=" METERS.") is None  # standardised
    assert check(x=5.0, n=3, tags=[1.5, 2.0]) is None
    # BFCL's quirk: an optional list ("" among its answers) skips the element types, and only the value fails
    assert check(x=5.0, n=3, tags=[1.5, "2"]).kind == "value_error:list/tuple"
    answer[0]["f"]["tags"] = [[1.5, 2.0]]
    assert check(x=5.0, n=3, tags=[1.5, "2"]).kind == "type_error:nested"
    answer[0]["f"]["tags"] = ["", [1.5, 2.0]]
    assert check(x=5.0).kind == "simple_function_checker:missing_optional"  # n lists no "": it must be given
    assert check(n=3).kind == "simple_function_checker:missing_required"
    assert check(x=5.0, n=3, extra=1).kind == "simple_function_checker:unexpected_param"


def task(data_dir, *overrides):
    return load_task(compose_config(["task=bfcl", f"data_dir={data_dir}", *overrides]).task)


def test_irrelevance_is_right_when_no_call_is_made_and_summaries_follow_bfcl(data_dir):
    from glm_eval.core.protocol import Response
    t = task(data_dir, "task.options.categories=[irrelevance]")
    doc = t.documents(str(data_dir)).docs[0]
    record = {**{k: doc[k] for k in t.record_fields}, "tool_format": "python"}
    assert t.score([Response(text="None of the functions fits.")], record)["correct"] is True
    called = t.score([Response(text=f"[{doc['functions'][0]['name']}(weight=1.0, height=2.0)]")], record)
    assert called["correct"] is False and called["calls"]
    for edited in ({"gold": 5, "bfcl_category": "simple"}, {"functions": "none"}, {"tool_format": "yaml"}):
        verdict = t.score([Response(text="[f(x=1)]")], {**record, **edited})
        assert "scoring_error" in verdict or verdict["correct"] is False, edited  # never an exception
    scores = {"simple": (3, 4), "multiple": (1, 2), "parallel": (2, 2), "parallel_multiple": (0, 2),
              "live_simple": (1, 1), "live_multiple": (1, 3), "live_parallel": (0, 1), "live_parallel_multiple": (1, 1),
              "irrelevance": (1, 2)}
    v3 = bfcl.summaries("v3", scores)
    assert v3["non_live_ast"] == pytest.approx((0.75 + 0.5 + 1 + 0) / 4)
    assert v3["non_live_overall"] == pytest.approx((0.75 + 0.5 + 1 + 0 + 0.5) / 5)
    assert v3["live_ast"] == pytest.approx(3 / 6)  # weighted by documents
    assert bfcl.summaries("v3", {"simple": (1, 1)})["non_live_ast"] is None  # never a partial mean under BFCL's name


def test_tools_reach_each_model_as_its_format_offers_them(data_dir):
    from glm_eval.glm.tokenizers import load_glm_tokenizer
    from tiny_glm import glm45_tokenizer
    messages = (("user", "Weather in Lyon?"),)
    chatglm3 = PromptRenderer(load_glm_tokenizer(data_dir.parent / "models/chatglm3-tokenizer"), True,
                              "chatglm3")
    assert chatglm3.tool_format == "chatglm3"
    text = chatglm3.render_messages(messages, tools=TOOLS).text
    assert "You have access to the following tools:\n[\n    {\n        \"name\": \"get_weather\"" in text
    glm4 = PromptRenderer(load_glm_tokenizer(data_dir.parent / "models/glm4-tokenizer"), True, "glm4")
    text = glm4.render_messages(messages, tools=TOOLS).text
    assert "# 可用工具\n\n## get_weather\n\n{\n    \"name\": \"get_weather\"" in text and "Json 格式" in text
    tokenizer = glm45_tokenizer()
    for template, fmt, marks in (("GLM-4.6.jinja", "glm45", ["<tools>\n{\"type\": \"function\"", "<arg_key>"]),
                                 ("GLM-4.7-Flash.jinja", "glm47", ["<tools>", "<tool_call>{function-name}<arg_key>"]),
                                 ("GLM-4-0414.RECONSTRUCTED.jinja", "glm4", ["# 可用工具", "## get_weather"])):
        tokenizer.chat_template = (TEMPLATES / template).read_text()
        prompt = PromptRenderer(tokenizer, None, tool_format=fmt).render_messages(messages, tools=TOOLS)
        assert all(m in prompt.text for m in marks) and prompt.tool_format == fmt, template
    tokenizer.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    python = PromptRenderer(tokenizer, None).render_messages((("system", "Be brief."), *messages), tools=TOOLS)
    assert python.tool_format == "python" and "You are an expert in composing functions." in python.text
    assert python.text.count("<|system|>") == 1 and "Be brief." in python.text  # BFCL's merge into the system turn
    with pytest.raises(UserError, match="tool_format=python"):
        PromptRenderer(tokenizer, None, tool_format="glm45").render_messages(messages, tools=TOOLS)
    with pytest.raises(UserError, match="chat turns"):
        PromptRenderer(tokenizer, False).render_messages(messages, tools=TOOLS)


def test_bad_rows_are_counted_and_bad_options_refused(data_dir, tmp_path):
    folder = tmp_path / "bfcl" / "v3"
    (folder / "possible_answer").mkdir(parents=True)
    good = (data_dir / "bfcl/v3/BFCL_v3_simple.json").read_text().splitlines()[:3]
    unknown_type = json.loads(good[2])
    first = next(iter(unknown_type["function"][0]["parameters"]["properties"].values()))
    first["type"] = "complex128"
    lines = [good[0], "{not json", json.dumps({"id": "simple_1", "question": "no turns"}), json.dumps(unknown_type)]
    (folder / "BFCL_v3_simple.json").write_text("\n".join(lines) + "\n")
    (folder / "possible_answer" / "BFCL_v3_simple.json").write_text(
        (data_dir / "bfcl/v3/possible_answer/BFCL_v3_simple.json").read_text())
    documents = task(tmp_path, "task.options.categories=[simple]").documents(str(tmp_path))
    assert len(documents.docs) == 1 and documents.malformed == 3
    problem = bfcl.schema_problem(unknown_type["function"][0])
    assert "has type 'complex128', which BFCL's checker does not know" in problem
    for bad in ("task.options.version=v9", "task.options.categories=[simple,exec_simple]"):
        with pytest.raises(UserError):
            task(data_dir, bad)
    with pytest.raises(UserError, match="not in"):
        task(tmp_path, "task.options.categories=[multiple]").documents(str(tmp_path))


def test_an_endpoints_tool_calls_streamed_and_not_are_scored_and_rescored(serve, data_dir, tmp_path):
    """An OpenAI server (vLLM with --tool-call-parser) sent `tools` answers with tool_calls, whole or streamed in
    pieces (the name, then the arguments in fragments): the run scores them with the checker, and rescore agrees."""
    from conftest import run_command, run_eval
    from test_http_backends import send_sse

    from conftest import send

    from glm_eval.engine.rescore import main as rescore
    arguments = '{"base": 10, "height": 5}'

    def reply(handler, path, payload):
        call = {"id": "call_1", "type": "function", "function": {"name": "calculate_triangle_area",
                                                                 "arguments": arguments}}
        if not payload.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return send(handler, body={"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        chunk = lambda delta, fin=None: "data: " + json.dumps(  # noqa: E731
            {"choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}) + "\n"
        pieces = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "calculate_triangle_area"}},
                  *({"index": 0, "function": {"arguments": arguments[i:i + 7]}} for i in range(0, len(arguments), 7))]
        send_sse(handler, [chunk({"role": "assistant"}), *(chunk({"tool_calls": [p]}) for p in pieces),
                           chunk({}, "tool_calls"), "data: [DONE]\n"])
    server = serve(reply)
    for stream in ("false", "true"):
        results = tmp_path / stream
        metrics = run_eval("task=bfcl", "task.options.categories=[simple]", "limit=1", "model=openai_api",
                           f"model.endpoint.url={server.url}/v1", f"model.endpoint.stream={stream}",
                           f"data_dir={data_dir}", f"results_dir={results}", "progress=false")
        [run] = results.glob("*/bfcl")
        [record] = [json.loads(line) for line in open(run / "samples.jsonl")]
        assert record["correct"] is True and metrics["score"] == 1.0, record
        assert record["calls"] == [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]
        assert json.loads(record["tool_calls"])[0]["function"]["arguments"] == arguments
        assert run_command(rescore, run).returncode == 0
        assert [json.loads(line) for line in open(run / "samples.jsonl")] == [record]
    sent = server.seen[-1][2]
    assert sent["tools"][0]["function"]["parameters"]["type"] == "object" and "messages" in sent


def test_the_server_answers_calls_as_tool_calls():
    from fastapi.testclient import TestClient
    from test_serve import EchoBackend
    from tiny_glm import glm45_tokenizer

    from glm_eval.core.protocol import BackendInfo, Response
    from glm_eval.engine.serve import BatchingEngine, make_app

    class Caller(EchoBackend):
        info = BackendInfo(fingerprint="caller", dtype="none", device="none", context_length=4096)

        def answer(self, requests, on_response, on_text):
            for i, r in enumerate(requests):
                text = "[get_weather(city='Lyon', days=2)]" if r.prompt.tools else "No tools."
                if "Think" in r.prompt.text:  # a call inside reasoning that closed, or that the budget cut off
                    text = "<think>Maybe [get_weather(city='Oslo', days=9)]" + \
                        ("</think>[get_weather(city='Lyon', days=2)]" if "closes" in r.prompt.text else "")
                cut = "Think forever" in r.prompt.text
                on_response(i, Response(text=text, num_tokens=9, finish_reason="length" if cut else "eos"))
    tokenizer = glm45_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    client = TestClient(make_app(PromptRenderer(tokenizer, None), BatchingEngine(Caller()), "tiny"))
    body = {"messages": [{"role": "user", "content": "Weather in Lyon?"}], "tools": TOOLS}
    done = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert done["finish_reason"] == "tool_calls" and done["message"]["content"] is None
    [call] = done["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == \
        {"city": "Lyon", "days": 2}
    events = [line[6:] for line in client.post("/v1/chat/completions", json={**body, "stream": True}).text.splitlines()
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(events[0])["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    plain = client.post("/v1/chat/completions", json={"messages": body["messages"]}).json()["choices"][0]
    assert plain["message"] == {"role": "assistant", "content": "No tools."} and plain["finish_reason"] == "stop"
    # the answer is what follows the first </think>, as in every scored reply: a reply still reasoning calls nothing
    thought = {**body, "messages": [{"role": "user", "content": "Think, then call (it closes)."}]}
    done = client.post("/v1/chat/completions", json=thought).json()["choices"][0]
    assert done["message"]["content"] == "<think>Maybe [get_weather(city='Oslo', days=9)]</think>"
    assert [json.loads(c["function"]["arguments"])["city"] for c in done["message"]["tool_calls"]] == ["Lyon"]
    thought["messages"][0]["content"] = "Think forever."
    cut = client.post("/v1/chat/completions", json=thought).json()["choices"][0]
    assert "tool_calls" not in cut["message"] and cut["finish_reason"] == "length"
    for bad in ([{"type": "function", "function": {"description": "no name"}}], "tools", [{"function": None}]):
        assert client.post("/v1/chat/completions", json={**body, "tools": bad}).status_code == 400
