"""BFCL's AST checker (gorilla berkeley-function-call-leaderboard, eval_checker/ast_eval/ast_checker.py), Python
rules, rewritten here with its semantics: a call matches a possible answer when

- its function name is the expected one (names with dots are compared after the same `.` → `_` mapping on both
  sides for models whose tool names cannot hold dots; here the endpoint path maps names back exactly);
- every required parameter is given, no parameter outside the schema or the possible answer is given, and every
  possible-answer parameter left out lists `""` (BFCL: "may be omitted");
- each value has the schema's type (Python types: integer→int, float→float, string→str, boolean→bool, array and
  tuple→list, dict→dict, any→str; `type(v) == t`, so a bool is not an int). An int is accepted for a float (BFCL's
  one allowance), a tuple for a tuple/array. Where the possible answer's own type differs from the schema's (a
  "variable" answer), a value of the answer's type passes the type check;
- the value is one of the possible answers: strings compared after BFCL's `standardize_string` (drop spaces and
  `,./-_*^`, lower-case, `'` → `"`), lists element-wise with the same normalisation of string elements, dicts key by
  key against each possible dict (a missing key must list ""), lists of dicts pairwise; other values by ==.

Categories: simple (exactly one call), multiple (one call, the expected one among several offered), parallel and
parallel_multiple (the same number of calls as the answer, each answer matched by some unmatched call, in any
order), irrelevance (correct when the reply decodes to no call). Each verdict carries BFCL's error type and its first
message.
"""
from __future__ import annotations

import re

TYPES = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list, "dict": dict,
         "any": str}
NESTED = ("array", "tuple")  # their `items` type is checked element by element


class Miss(Exception):
    """The first reason a call does not match (BFCL's error_type and message)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def standardize_string(text: str) -> str:
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", text).lower().replace("'", '"')


def _answer_type(possible: list):
    for item in possible:
        if item != "":
            return type(item)
    return None


def _type_check(param: str, value, possible: list, expected: str, expected_type, nested_type) -> bool:
    """BFCL's type_checker: raises Miss when the type is wrong; returns whether the answer is a "variable"."""
    answer_type = _answer_type(possible)
    variable = answer_type is not None and answer_type != expected_type
    nested_failed = False
    if type(value) is expected_type:
        if nested_type is None:
            return variable
        for item in possible:
            # BFCL: an answer that is not a list ("" of an optional parameter) passes the nested check
            if type(item) is not list or all(_nested_ok(param, v, item, nested_type) for v in value):
                return variable
        nested_failed = True
    if answer_type is not None and type(value) is answer_type and not nested_failed:
        return True
    if nested_failed and answer_type is list:  # BFCL reports the nested failure only where the answer is a list
        raise Miss("type_error:nested", f"Nested type checking failed for parameter {param!r}. Expected outer type "
                                        f"{expected} with inner type {nested_type.__name__}. Parameter value: "
                                        f"{value!r}.")
    raise Miss("type_error:simple", f"Incorrect type for parameter {param!r}. Expected type {expected}, got "
                                    f"{type(value).__name__}. Parameter value: {value!r}.")


def _nested_ok(param: str, value, possible: list, nested_type) -> bool:
    try:
        _type_check(param, value, possible, nested_type.__name__, nested_type, None)
        return True
    except Miss:
        return False


def _normal(value):
    return standardize_string(value) if isinstance(value, str) else value


def _string_check(param: str, value: str, possible: list) -> None:
    if standardize_string(value) not in [_normal(p) for p in possible]:
        raise Miss("value_error:string", f"Invalid value for parameter {param!r}: {value!r}. Expected one of "
                                         f"{possible}. Case insensitive.")


def _list_check(param: str, value: list, possible: list) -> None:
    normal = [_normal(v) for v in value]
    # BFCL iterates every option: a string option ("" of an optional parameter) becomes the list of its characters
    if normal not in [[_normal(v) for v in p] if isinstance(p, (list, str)) else p for p in possible]:
        raise Miss("value_error:list/tuple", f"Invalid value for parameter {param!r}: {value!r}. Expected one of "
                                             f"{possible}.")


def _dict_check(param: str, value: dict, possible: list) -> None:
    miss = Miss("dict_checker:unclear", f"Invalid value for parameter {param!r}: {value!r}.")
    for answer in possible:
        if answer == "":
            continue
        try:
            if not isinstance(answer, dict):
                raise Miss("value_error:dict_value", f"Invalid value for parameter {param!r}: {value!r}.")
            for key, item in value.items():
                if key not in answer:
                    raise Miss("value_error:dict_key", f"Unexpected dict key parameter: {key!r}.")
                if _normal(item) not in [_normal(p) for p in answer[key]]:
                    raise Miss("value_error:dict_value", f"Invalid value for parameter {key!r}: {item!r}. Expected "
                                                         f"one of {answer[key]}.")
            for key, item in answer.items():
                if key not in value and "" not in item:
                    raise Miss("value_error:dict_key", f"Missing dict key parameter: {key!r}.")
            return
        except Miss as e:
            miss = e
    raise miss


def _list_dict_check(param: str, value: list, possible: list) -> None:
    miss = Miss("list_dict_checker:unclear", f"Invalid value for parameter {param!r}: {value!r}.")
    for answer in possible:
        if not isinstance(answer, list) or len(answer) != len(value):
            miss = Miss("value_error:list_dict_count", f"Invalid length for list of dict parameter {param!r}.")
            continue
        try:
            for item, expected in zip(value, answer):
                if not isinstance(item, dict):
                    raise Miss("value_error:list_dict", f"Invalid value for parameter {param!r}: {item!r}.")
                _dict_check(param, item, [expected])
            return
        except Miss as e:
            miss = e
    raise miss


def check_call(schema: dict, call: dict, answer: dict) -> None:
    """BFCL's simple_function_checker: raises Miss with the first reason `call` does not match `answer`
    ({name: {param: [possible values]}}) under `schema`."""
    expected_name, possible = next(iter(answer.items()))
    if call.get("name") != expected_name:
        raise Miss("simple_function_checker:wrong_func_name", f"Function name {expected_name!r} not found.")
    arguments = call.get("arguments") or {}
    params = (schema.get("parameters") or {}).get("properties") or {}
    for name in (schema.get("parameters") or {}).get("required") or []:
        if name not in arguments:
            raise Miss("simple_function_checker:missing_required", f"Missing required parameter: {name!r}.")
    for name, value in arguments.items():
        if name not in params or name not in possible:
            raise Miss("simple_function_checker:unexpected_param", f"Unexpected parameter: {name!r}.")
        expected = params[name].get("type")
        if expected not in TYPES:
            raise Miss("type_error:schema", f"Parameter {name!r} has a type BFCL does not know: {expected!r}.")
        expected_type, nested_type = TYPES[expected], None
        if expected in NESTED:
            nested = (params[name].get("items") or {}).get("type")
            nested_type = TYPES.get(nested)
        if expected == "tuple" and type(value) is tuple:
            value = list(value)
        if expected == "float" and type(value) is int:  # BFCL's one allowance: an int where a float is expected
            value = float(value)
        if _type_check(name, value, possible[name], expected, expected_type, nested_type):
            if value not in possible[name]:  # a "variable" answer (another type than the schema's): exact match
                raise Miss("value_error:others", f"Invalid value for parameter {name!r}: {value!r}. Expected one of "
                                                 f"{possible[name]}.")
            continue
        if expected_type is dict:
            _dict_check(name, value, possible[name])
        elif expected_type is list and nested_type is dict:
            _list_dict_check(name, value, possible[name])
        elif expected_type is str:
            _string_check(name, value, possible[name])
        elif expected_type is list:
            _list_check(name, value, possible[name])
        elif value not in possible[name]:
            raise Miss("value_error:others", f"Invalid value for parameter {name!r}: {value!r}. Expected one of "
                                             f"{possible[name]}.")
    for name, values in possible.items():
        if name not in arguments and "" not in values:
            raise Miss("simple_function_checker:missing_optional", f"Optional parameter {name!r} not provided and "
                                                                    f"not marked as optional.")


def check(category: str, functions: list[dict], calls: list[dict], answers: list[dict]) -> Miss | None:
    """BFCL's ast_checker for a category: None when `calls` match `answers`, else the first miss."""
    by_name = {f.get("name"): f for f in functions}
    try:
        if "parallel" in category:
            if len(calls) != len(answers):
                raise Miss("parallel_function_checker_no_order:wrong_count", "Wrong number of functions.")
            matched: set[int] = set()
            for i, answer in enumerate(answers):
                schema, first = by_name.get(next(iter(answer))) or {}, None
                for j, call in enumerate(calls):
                    if j in matched:
                        continue
                    try:
                        check_call(schema, call, answer)
                        matched.add(j)
                        break
                    except Miss as e:
                        first = first or e
                else:
                    raise Miss("parallel_function_checker_no_order:cannot_find_match",
                               f"Could not find a matching function for index {i} of possible answers"
                               + (f" ({first.kind}: {first.message})" if first else "."))
            return None
        if len(calls) != len(answers):
            kind = "multiple_function_checker" if "multiple" in category else "simple_function_checker"
            raise Miss(f"{kind}:wrong_count", "Wrong number of functions.")
        check_call(by_name.get(next(iter(answers[0]))) or {}, calls[0], answers[0])
        return None
    except Miss as miss:
        return miss


# ---- BFCL's data: schemas offered to models, and its summaries ------------------------------------------------------
# BFCL's GORILLA_TO_OPENAPI, for models that take OpenAPI-style tools (every format but its own prompt mode)
OPENAPI = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}


def schema_problem(function) -> str | None:
    """Why a BFCL function document cannot be offered or checked (None: it can): a name, parameters of type dict, and
    every parameter's type one the checker knows (nested items and properties too)."""
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        return "a function without a name"
    params = function.get("parameters")
    if not isinstance(params, dict) or not isinstance(params.get("properties", {}), dict) or \
            not isinstance(params.get("required", []), list):
        return f"{function['name']}: parameters are not an object schema"

    def walk(name: str, node) -> str | None:
        if not isinstance(node, dict) or node.get("type") not in TYPES:
            kind = node.get("type") if isinstance(node, dict) else node
            return f"{function['name']}: parameter {name!r} has type {kind!r}, which BFCL's checker does not know " \
                   f"({', '.join(TYPES)})"
        children = [(f"{name}[]", node["items"])] if "items" in node else []
        children += [(f"{name}.{k}", v) for k, v in (node.get("properties") or {}).items()]
        return next((p for p in (walk(n, c) for n, c in children) if p), None)
    return next((p for p in (walk(k, v) for k, v in params.get("properties", {}).items()) if p), None)


def underscored(name: str) -> str:
    """BFCL's convert_func_name for models whose tool names cannot hold dots: every "." → "_"."""
    return name.replace(".", "_")


def openapi_tools(functions: list[dict], underscore: bool) -> list[dict]:
    """BFCL's convert_to_tool: OpenAI-style tools with OpenAPI types (a float parameter's description says so)."""
    def convert(node: dict) -> dict:
        out = {k: v for k, v in node.items() if k not in ("items", "properties")}
        if node.get("type") == "float":
            out["description"] = f"{node.get('description', '')} This is a float type value.".strip()
        out["type"] = OPENAPI.get(node.get("type"), node.get("type"))
        if "items" in node:
            out["items"] = convert(node["items"])
        if "properties" in node:
            out["properties"] = {k: convert(v) for k, v in node["properties"].items()}
        return out
    return [{"type": "function", "function": {**f, "name": underscored(f["name"]) if underscore else f["name"],
                                              "parameters": convert({**f["parameters"], "type": "dict"})}}
            for f in functions]


def renamed(functions: list[dict], answers: list[dict]) -> tuple[list[dict], list[dict]]:
    """The schemas and possible answers with BFCL's `.` → `_` applied to the expected names (convert_func_name)."""
    return ([{**f, "name": underscored(f["name"])} for f in functions],
            [{underscored(name): params for name, params in a.items()} for a in answers])


NON_LIVE = ("simple", "multiple", "parallel", "parallel_multiple")
LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")


def summaries(version: str, scores: dict[str, tuple[int, int]]) -> dict:
    """BFCL's generate_leaderboard_csv summaries of the AST categories run ({category: (correct, n)}); a summary
    whose categories were not all run is None (BFCL would count them as 0). Java and JavaScript simple are not staged:
    BFCL's "simple" is the mean of Python, Java and JavaScript simple, here Python's alone."""
    accuracy = {c: k / n for c, (k, n) in scores.items() if n}

    def unweighted(cats):
        return sum(accuracy[c] for c in cats) / len(cats) if all(c in accuracy for c in cats) else None

    def weighted(cats):
        if not all(c in accuracy for c in cats):
            return None
        return sum(scores[c][0] for c in cats) / sum(scores[c][1] for c in cats)
    out = {"non_live_ast": unweighted(NON_LIVE), "live_ast": weighted(LIVE), "irrelevance": accuracy.get("irrelevance")}
    if version == "v3":  # v3's non-live overall also averages irrelevance in (its live overall: live irrelevance)
        out["non_live_overall"] = unweighted((*NON_LIVE, "irrelevance"))
    return out
