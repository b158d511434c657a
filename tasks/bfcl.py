"""BFCL: the Berkeley Function Calling Leaderboard's AST categories (Patil et al., gorilla), single-turn function
calling checked against possible answers without running anything.

Data: `bfcl/<version>/BFCL_<version>_<category>.json` and `possible_answer/` beside them (JSON lines: `id`, `question`
= turns of {role, content}, `function` = BFCL schemas; answers `{name: {param: [allowed values]}}`), v3 (what the
published GLM scores used) or v4 (the maintainers' fixes; `simple` is named `simple_python`); or the hub's
`gorilla-llm/Berkeley-Function-Calling-Leaderboard` files. Categories: simple, multiple, parallel, parallel_multiple,
the four live_* ones (user-contributed APIs) and irrelevance (no offered function fits: the right reply calls none).
Protocol: the question's turns with the functions offered as the model's own format offers tools
(glm_eval/glm/tools.py: ChatGLM3's tool system turn, GLM-4's, GLM-4.5's and GLM-4.7's templates, a template's
`tools=`, an endpoint's `tools`; BFCL's own prompt for templates without tools), one greedy reply, read back into
calls in that format after the reasoning is stripped, and checked by BFCL's AST checker (glm_eval/scoring/bfcl.py).
Tool names are offered with "." → "_" and compared after BFCL's same mapping, as BFCL does for GLM-4-9B-Chat and
GLM-4.5's API (its prompt mode keeps the dots). A reply that is prose, malformed or cut off made no call: wrong,
with the reason, except in irrelevance, where making no call is the right answer (BFCL: a failed decode counts as
no call).
Averaging, as BFCL's leaderboard (eval_runner_helper.py) averages the parts staged here: non-live = the mean of its
categories (v3: irrelevance among them), live = all live documents weighted alike, v4: irrelevance its own part; the
headline is the mean of the parts. BFCL's overall also averages multi-turn (and in v4 agentic) parts, which are not
staged: published BFCL overalls are not comparable with this headline; `bfcl.non_live_ast` and `bfcl.live_ast` are.
"""
from __future__ import annotations

import json
from pathlib import Path

from glm_eval.core.averaging import Average, Averaging
from glm_eval.core.errors import UserError
from glm_eval.core.files import file_sha256, read_jsonl
from glm_eval.core.protocol import Response
from glm_eval.glm.tools import Calls, ToolFormat, jsonable, parse_calls
from glm_eval.scoring import bfcl
from glm_eval.tasks.base import Task

CATEGORIES = (*bfcl.NON_LIVE, *bfcl.LIVE, "irrelevance")


class BFCL(Task):
    title = "BFCL"
    metric = "AST accuracy"
    averaging = Averaging(Average.categories)
    shot_choices = (0,)
    record_fields = ("gold", "bfcl_id", "bfcl_category", "functions")
    limit_per_subject, limit_field = True, "bfcl_category"  # `limit=N`: the first N of each BFCL category

    def __init__(self, cfg):
        super().__init__(cfg)
        self.version = str(cfg.options.get("version", "v3"))
        self.categories = list(cfg.options.get("categories") or CATEGORIES)
        if self.version not in ("v3", "v4"):
            raise UserError(f"task.options.version={self.version}: BFCL's staged versions are v3 and v4")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown or not self.categories:
            raise UserError(f"task.options.categories: unknown {unknown or 'empty list'}; choose among "
                            f"{', '.join(CATEGORIES)}")

    def file(self, category: str) -> str:
        renamed = "simple_python" if (self.version, category) == ("v4", "simple") else category  # v4's name
        return f"BFCL_{self.version}_{renamed}.json"

    def local_rows(self, path: Path):
        folder = path / self.version
        rows, bad, digest = [], [], {}
        for category in self.categories:
            questions, answers = folder / self.file(category), folder / "possible_answer" / self.file(category)
            if not questions.exists() or (category != "irrelevance" and not answers.exists()):
                raise UserError(f"{self.title}: {questions.name} (or its possible_answer) not in {folder}; point "
                                f"data_dir at a folder laid out like ../shared/data (bfcl/{self.version}/…)")
            found, problems = read_jsonl(questions)
            gold, more = read_jsonl(answers) if category != "irrelevance" else ([], [])
            by_id = {g["id"]: g.get("ground_truth") for g in gold if isinstance(g, dict) and "id" in g}
            rows += [None if r is None else {**r, "category": category, "ground_truth": by_id.get(r.get("id"))}
                     for r in found]
            bad += problems + more
            digest.update({f"{self.version}/{questions.name}": file_sha256(questions)})
            if category != "irrelevance":
                digest[f"{self.version}/possible_answer/{answers.name}"] = file_sha256(answers)
        return rows, bad, digest

    def hub_rows(self, split: str):
        try:  # the hub repo holds BFCL's JSON-lines files (not a `datasets` table: each category has its own columns)
            from huggingface_hub import hf_hub_download
            def fetch(name: str) -> str:
                return hf_hub_download(self.cfg.dataset, name, repo_type="dataset", revision=self.cfg.revision)
            files = {c: (fetch(self.file(c)), None if c == "irrelevance" else fetch(f"possible_answer/{self.file(c)}"))
                     for c in self.categories}
        except Exception as e:  # offline, gated, unknown file: one line with both fixes
            raise UserError(f"{self.title}: cannot download {self.cfg.dataset} ({str(e).splitlines()[0][:120]}); pass "
                            f"data_dir=<folder holding bfcl/{self.version}/> or make the hub reachable") from e
        rows = []
        for category, (questions, answers) in files.items():
            gold = {g["id"]: g.get("ground_truth") for g in read_jsonl(Path(answers))[0] if g} if answers else {}
            rows += [{**r, "category": category, "ground_truth": gold.get(r.get("id"))}
                     for r in read_jsonl(Path(questions))[0] if r]
        return rows, f"hf:{self.cfg.dataset}/{self.version}", {}

    def parse(self, row: dict) -> dict | None:
        turns, functions, category = row.get("question"), row.get("function"), row.get("category")
        answers = row.get("ground_truth") if category != "irrelevance" else []
        if not (isinstance(turns, list) and turns and isinstance(turns[0], list) and turns[0]
                and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                        for m in turns[0])) or not isinstance(functions, list) or not functions:
            return None
        if any(bfcl.schema_problem(f) for f in functions) or not isinstance(answers, list) or \
                (category != "irrelevance" and not answers) or \
                not all(isinstance(a, dict) and len(a) == 1 and isinstance(params := next(iter(a.values())), dict)
                        and all(isinstance(v, list) for v in params.values()) for a in answers):
            return None
        part = "live" if category.startswith("live") else \
            "irrelevance" if category == "irrelevance" and self.version == "v4" else "non_live"
        return {"question": [(m["role"], m["content"]) for m in turns[0]], "functions": functions, "gold": answers,
                "bfcl_id": row.get("id"), "bfcl_category": category, "category": part,
                # live documents weigh alike (BFCL weights live categories by their sizes): one subject for them all
                "subject": "live" if part == "live" else category}

    def requests(self, doc, shots, renderer, gen, stop):
        tools = bfcl.openapi_tools(doc["functions"], underscore=renderer.tool_format != ToolFormat.python)
        prompt = renderer.render_messages(tuple(doc["question"]), tools=tools)
        return self.generation_requests(doc, prompt, gen, [*self.cfg.stop, *stop])

    def score(self, answers: list[Response], record: dict) -> dict:
        try:
            return self.verdict(answers[0], record)
        except (TypeError, KeyError, AttributeError, ValueError) as e:  # an edited record: a failed check, no crash
            return {"scoring_error": f"BFCL checker: {type(e).__name__}: {str(e)[:200]}"}

    def verdict(self, reply: Response, record: dict) -> dict:
        fmt = ToolFormat(record.get("tool_format", ToolFormat.python))  # an edited one: a scoring error
        functions, gold = record["functions"], record["gold"]
        if fmt != ToolFormat.python:
            functions, gold = bfcl.renamed(functions, gold)
        offered = bfcl.openapi_tools(functions, underscore=False)
        if reply.tool_calls is not None:  # a server's own parse (OpenAI tool_calls)
            parsed = parse_calls(ToolFormat.openai, reply.tool_calls, offered)
        elif fmt == ToolFormat.openai:  # an endpoint that answered with content alone
            parsed = Calls(content=reply.text, problem="no tool call (the reply has no tool_calls)")
        else:
            parsed = parse_calls(fmt, reply.text, offered)
        calls = jsonable(parsed.calls)  # as the record keeps them; the checker sees them as parsed (a tuple stays one)
        if record["bfcl_category"] == "irrelevance":
            return {"calls": calls, "correct": not calls,
                    **({"miss": "irrelevance_error:decoder_success"} if calls else {"no_call": parsed.problem})}
        if not calls:
            return {"calls": [], "correct": False, "miss": f"ast_decoder:decoder_failed: {parsed.problem}"}
        miss = bfcl.check(record["bfcl_category"], functions, parsed.calls, gold)
        return {"calls": calls, "correct": miss is None,
                **({"miss": f"{miss.kind}: {miss.message}"[:500]} if miss else {})}

    def aggregate(self, records: list[dict]) -> dict:
        per: dict[str, list[int]] = {}
        for r in records:
            counts = per.setdefault(r["bfcl_category"], [0, 0])
            counts[0] += bool(r.get("correct"))
            counts[1] += 1
        scores = {c: (k, n) for c, (k, n) in per.items()}
        return {"bfcl": {"version": self.version, "categories": {c: k / n for c, (k, n) in scores.items()},
                         **bfcl.summaries(self.version, scores)}}


TASK = BFCL
