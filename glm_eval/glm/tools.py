"""Tools offered to a model and its replies read back as calls, in each family's own format (render and parse side by
side, one entry per format).

- chatglm3 (ChatGLM3-6B's tool_using demo): a system turn + json.dumps(tools, indent=4); a call is a `name` line, then
  a ```python block holding tool_call(k=v, …);
- glm4 (GLM-4-9B-Chat, GLM-4-0414, GLM-Z1): the "# 可用工具" system turn, one block per tool; a call is `name\n{json}`;
- glm45 (GLM-4.5, 4.6; vLLM's glm45 parser): the template's <tools> block; a call is
  `<tool_call>name\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>\n</tool_call>`;
- glm47 (GLM-4.7, GLM-5; vLLM's glm47 parser): the same without the newlines, zero-argument calls allowed;
- hermes (chat templates that render `tools=`): `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`;
- python (chat templates that ignore `tools=`): BFCL's prompt-mode system prompt; calls as `[name(k=v), other(k=v)]`;
- openai (endpoints): the request's `tools`, the reply's `tool_calls`.

A reply is parsed into calls `{"name": str, "arguments": dict}`; prose, a malformed call or a cut-off one gives no
calls and the reason (never an exception: a model's reply is outside input). Argument values are read as their
format writes them: JSON for glm4 / hermes / openai, Python literals for chatglm3 / python, and for glm45 / glm47
the raw text of a string-typed parameter and JSON (else a Python literal, else the text) for the others, as vLLM's
GLM parsers do.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

from glm_eval.core.config import ToolFormat


# The system turns that introduce tools where glm-eval renders them itself (the others are the templates' own)
CHATGLM3_SYSTEM = "Answer the following questions as best as you can. You have access to the following tools:"
GLM4_SYSTEM = ("你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和"
               "要求提供适当的答复和支持。\n\n# 可用工具")
# BFCL v3's DEFAULT_SYSTEM_PROMPT (prompt mode, for models without a tool format of their own). BFCL formats the
# function list with str() (Python quotes) under a line that says JSON; here it is JSON, as v4 writes it.
PYTHON_SYSTEM = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. Based on the "
    "question, you will need to make one or more function/tool calls to achieve the purpose.\nIf none of the "
    "functions can be used, point it out. If the given question lacks the parameters required by the function, also "
    "point it out.\nYou should only return the function calls in your response.\n\nIf you decide to invoke any of "
    "the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, params_name2="
    "params_value2...), func_name2(params)]\nYou SHOULD NOT include any other text in the response.\n\nAt each turn, "
    "you should try your best to complete the tasks requested by the user within the current turn. Continue to output "
    "functions to call until you have fulfilled the user's request to the best of your ability. Once you have no more "
    "functions to call, the system will consider the current turn complete and proceed to the next turn or task.\n"
    "\nHere is a list of functions in JSON format that you can invoke.\n{functions}\n")
PYTHON_NOTE = " Note that the provided function is in Python 3 syntax."  # BFCL adds it to each description


@dataclass
class Calls:
    """What a reply asked for: its calls in order, the text outside them, and why nothing usable was found."""
    calls: list[dict] = field(default_factory=list)
    content: str = ""
    problem: str | None = None  # "no tool call", "malformed …", "cut off …"; None when the calls parsed


def jsonable(value):
    """A parsed value as records can hold it (JSON): tuples and sets as lists, other objects as their repr."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def schemas(tools: list[dict]) -> list[dict]:
    """The function schemas of an OpenAI-style tool list (or of a bare function list)."""
    return [t.get("function", t) if isinstance(t, dict) else {} for t in tools]


def string_params(tools: list[dict], name: str) -> set[str]:
    for schema in schemas(tools):
        if schema.get("name") == name:
            props = (schema.get("parameters") or {}).get("properties") or {}
            return {k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string"}
    return set()


# ---- parsing -------------------------------------------------------------------------------------------------------
def parse_calls(fmt: str, text: str, tools: list[dict]) -> Calls:
    """The calls a reply in format `fmt` makes (openai: `text` is the JSON of the server's tool_calls)."""
    if not isinstance(text, str):  # a record edited by hand
        return Calls(problem=f"malformed call (a reply of type {type(text).__name__})")
    try:
        return PARSERS[ToolFormat(fmt)](text, tools)
    except (ValueError, SyntaxError, TypeError, ZeroDivisionError, OverflowError, RecursionError, MemoryError) as e:
        return Calls(content=text, problem=f"malformed call ({type(e).__name__}: {str(e)[:120]})")


def _python_call(node: ast.expr) -> dict:
    """One `name(k=v, …)` node as BFCL's resolve_ast_call reads it: a dotted name and its keyword values (positional
    arguments name no parameter: BFCL drops them)."""
    if not isinstance(node, ast.Call):
        raise ValueError(f"not a call: {ast.unparse(node)[:60]}")
    return {"name": _dotted(node.func), "arguments": {k.arg: _literal(k.value) for k in node.keywords if k.arg}}


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError("a call's name must be a (dotted) name")
    return ".".join([func.id, *reversed(parts)])


ARITHMETIC = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


def _literal(node: ast.expr):
    """A keyword value as BFCL's resolve_ast_by_type reads it, without running anything: literals, lists, tuples and
    dicts of them, a bare name as its text (`true` → "true"), a nested call with keywords as {name: {…}} and one
    without as its source text, arithmetic on numbers (BFCL evaluates it; here + - * / // % and small powers)."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError("a sign before something that is not a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.BinOp):
        left, right = _literal(node.left), _literal(node.right)
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right))
        if numbers and isinstance(node.op, ast.Pow) and abs(right) <= 64 and abs(left) <= 1e6:
            return left ** right
        if numbers and type(node.op) in ARITHMETIC:
            return ARITHMETIC[type(node.op)](left, right)
        raise ValueError(f"arithmetic glm-eval does not evaluate: {ast.unparse(node)[:60]}")
    if isinstance(node, ast.Call):
        if not node.keywords:
            return ast.unparse(node)
        return {_dotted(node.func): {k.arg: _literal(k.value) for k in node.keywords if k.arg}}
    if isinstance(node, (ast.Subscript, ast.Attribute)):
        return ast.unparse(node)
    raise ValueError(f"not a value BFCL reads: {type(node).__name__}")


def _parse_chatglm3(text: str, tools: list[dict]) -> Calls:
    # process_response: a metadata line naming the tool, then ```python\ntool_call(k=v, …)\n``` (eval'd there)
    metadata, _, body = text.lstrip().partition("\n")
    if not metadata.strip() or not body:
        return Calls(content=text, problem="no tool call")
    lines = body.strip().split("\n")
    if len(lines) < 3 or not lines[0].strip().startswith("```") or lines[-1].strip() != "```":
        return Calls(content=text, problem="malformed call (no ```python … ``` block after the tool name)")
    call = ast.parse("\n".join(lines[1:-1]).strip(), mode="eval").body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "tool_call"):
        return Calls(content=text, problem="malformed call (the block is not tool_call(...))")
    return Calls([{"name": metadata.strip(), "arguments": _python_call(call)["arguments"]}])  # eval'd there: read here


# GLM-4-0414's model card: "name\n{json}" segments (a parallel call is another <|assistant|> segment, whose role token
# the decoded reply no longer holds). The card's regex reads the shortest {…} before a line end; here each object is
# read whole by the JSON decoder (else as a Python literal up to the next newline), and every scan is linear: a reply
# is outside input, and a 1 MB line must not take quadratic time.
def _parse_glm4(text: str, tools: list[dict]) -> Calls:
    text = text.strip()
    calls, outside, pos, failed, tries = [], [], 0, None, 0
    while (newline := text.find("\n{", pos)) >= 0 and tries < 100:  # a failed decode costs O(reply): bounded
        tries += 1
        start = max(pos, text.rfind("\n", pos, newline) + 1, text.rfind("`", pos, newline) + 1)
        try:
            arguments, end = json.JSONDecoder().raw_decode(text, newline + 1)
        except ValueError as e:
            line_end = text.find("\n", newline + 1)
            body = text[newline + 1:line_end if line_end >= 0 else len(text)]
            try:
                arguments, end = ast.literal_eval(body), newline + 1 + len(body)
            except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
                failed, pos = f"malformed call ({str(e)[:80]})", newline + 1
                continue
        if not isinstance(arguments, dict) or not text[start:newline].strip():
            failed, pos = "malformed call (no name, or arguments that are not an object)", newline + 1
            continue
        outside.append(text[pos:start])
        calls.append({"name": text[start:newline].strip(), "arguments": arguments})
        pos = end
    if not calls:
        return Calls(content=text, problem=failed or "no tool call")
    return Calls(calls, ("".join(outside) + text[pos:]).strip())


def _pairs(text: str, open_tag: str, close_tag: str) -> tuple[list[str], str, bool]:
    """The bodies between `open_tag` and `close_tag`, the text outside them, and whether the last one never closed
    (found with str.find: linear however many tags a hostile reply holds)."""
    bodies, outside, pos = [], [], 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return bodies, "".join(outside) + text[pos:], True
        outside.append(text[pos:start])
        bodies.append(text[start + len(open_tag):end])
        pos = end + len(close_tag)
    return bodies, "".join(outside) + text[pos:], False


def _arguments(body: str) -> list[tuple[str, str]]:
    """<arg_key>k</arg_key> <arg_value>v</arg_value> pairs, in order (vLLM's func_arg_regex, scanned linearly)."""
    keys, _, _ = _pairs(body, "<arg_key>", "</arg_key>")
    values, _, _ = _pairs(body, "<arg_value>", "</arg_value>")
    return list(zip(keys, values))


def _glm45_value(raw: str, is_string: bool):
    if is_string:  # vLLM keeps a string parameter's text as written
        return raw
    raw = raw.strip()
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):  # vLLM: the text itself
            return raw


def _tagged(text: str, read) -> Calls:
    """The calls of `<tool_call>…</tool_call>` blocks (GLM-4.5+, Hermes), each body read by `read`; the text outside
    them is content."""
    bodies, outside, cut = _pairs(text, "<tool_call>", "</tool_call>")
    if cut:
        return Calls(content=outside, problem="cut off inside a <tool_call> (no </tool_call>)")
    if not bodies:
        return Calls(content=outside.strip(), problem="no tool call")
    return Calls([read(body) for body in bodies], outside.strip())


def _glm45_call(body: str, tools: list[dict]) -> dict:
    # glm45: the name up to its newline; glm47: up to the first <arg_key> (or the end: no arguments)
    body = body.strip()
    cut = min((i for i in (body.find("\n"), body.find("<arg_key>")) if i >= 0), default=len(body))
    name, rest = body[:cut].strip(), body[cut:]
    if not name or "<" in name:
        raise ValueError(f"a call without a function name: {body[:80]!r}")
    strings = string_params(tools, name)
    return {"name": name, "arguments": {k.strip(): _glm45_value(v, k.strip() in strings) for k, v in _arguments(rest)}}


def _parse_glm45(text: str, tools: list[dict]) -> Calls:
    return _tagged(text, lambda body: _glm45_call(body, tools))


def _parse_hermes(text: str, tools: list[dict]) -> Calls:
    return _tagged(text, lambda body: _json_call(json.loads(body)))


def _json_call(call) -> dict:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ValueError("a call must be an object with a string name")
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI's tool_calls carry the arguments as a JSON string
        arguments = json.loads(arguments) if arguments.strip() else {}
    if not isinstance(arguments, dict):
        raise ValueError(f"the arguments of {call['name']} are not an object")
    return {"name": call["name"], "arguments": arguments}


def _parse_python(text: str, tools: list[dict]) -> Calls:
    # BFCL's default_decode_ast_prompting: strip, drop a ``` fence, wrap a bare call in [ ], parse the list of calls
    body = text.strip().strip("`").strip()
    body = body.removeprefix("python").strip() if body.startswith("python") else body
    if not body.startswith("["):
        body = f"[{body}]"
    try:
        tree = ast.parse(body, mode="eval").body
    except SyntaxError:
        return Calls(content=text, problem="no tool call (not a list of calls)")
    items = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    if not items:
        return Calls(content=text, problem="no tool call (an empty list)")
    return Calls([_python_call(item) for item in items])


def _parse_openai(text: str, tools: list[dict]) -> Calls:
    """`text`: the JSON of a reply's tool_calls ([{"function": {"name", "arguments"}}]), as the backend keeps it."""
    calls = json.loads(text) if text.strip() else []
    if not calls:
        return Calls(problem="no tool call")
    if not isinstance(calls, list):
        raise ValueError("tool_calls is not a list")
    return Calls([_json_call(c.get("function", c) if isinstance(c, dict) else c) for c in calls])


PARSERS = {ToolFormat.chatglm3: _parse_chatglm3, ToolFormat.glm4: _parse_glm4, ToolFormat.glm45: _parse_glm45,
           ToolFormat.glm47: _parse_glm45, ToolFormat.hermes: _parse_hermes, ToolFormat.python: _parse_python,
           ToolFormat.openai: _parse_openai}


# ---- rendering -----------------------------------------------------------------------------------------------------
def write_call(fmt: str, call: dict) -> str:
    """One call as a reply in format `fmt` writes it: the parsers' inverse, which the round-trip tests build on."""
    name, arguments = call["name"], call.get("arguments") or {}
    fmt = ToolFormat(fmt)
    if fmt == ToolFormat.chatglm3:
        return f"{name}\n```python\ntool_call({', '.join(f'{k}={v!r}' for k, v in arguments.items())})\n```"
    if fmt == ToolFormat.glm4:
        return f"{name}\n{json.dumps(arguments, ensure_ascii=False)}"
    if fmt in (ToolFormat.glm45, ToolFormat.glm47):
        sep = "\n" if fmt == ToolFormat.glm45 else ""
        pairs = "".join(f"<arg_key>{k}</arg_key>{sep}<arg_value>"
                        f"{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}</arg_value>{sep}"
                        for k, v in arguments.items())
        return f"<tool_call>{name}{sep if pairs else ''}{pairs}</tool_call>"
    if fmt == ToolFormat.hermes:
        return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n</tool_call>"
    if fmt == ToolFormat.python:
        return f"[{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})]"
    return json.dumps([{"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}])


def system_turn(fmt: str, tools: list[dict]) -> dict | None:
    """The system message that offers `tools` where glm-eval renders it itself (THUDM's native formats take it as
    {"role": "system", "content", "tools"}; python: BFCL's prompt), or None where the template renders them."""
    fmt = ToolFormat(fmt)
    if fmt == ToolFormat.chatglm3:
        return {"role": "system", "content": CHATGLM3_SYSTEM, "tools": schemas(tools)}
    if fmt == ToolFormat.glm4:
        return {"role": "system", "content": GLM4_SYSTEM, "tools": tools}
    if fmt == ToolFormat.python:
        functions = [{**f, "description": f"{f.get('description', '')}{PYTHON_NOTE}"} for f in schemas(tools)]
        return {"role": "system", "content": PYTHON_SYSTEM.format(functions=json.dumps(functions, indent=4))}
    return None
