"""The judge: a second model behind the same Backend protocol (judge=<model config>), asked after the main answers
are cached, about the verdicts a task's `JudgedStep` declares (glm_eval/scoring/judging.py).

Its requests go through the response cache keyed by the judge's own identity (the served model id and revision, or
the weights) and the judged step's prompt version, so a rerun, a resumed run or a rescore never pays a judge call twice,
and another judge or prompt never reuses stale verdicts. A record's stored judge reply counts as cached too (a rescore
without the judge). A judge that fails leaves the rule verdict in place and is counted (where there is no rule,
AlignBench, the document is unscored), never a crash and never a lost answer.
"""
from __future__ import annotations

import copy
import json
import sys

from tqdm import tqdm

from glm_eval.core.errors import UserError
from glm_eval.core.protocol import GenerationRequest, Response
from glm_eval.engine.cache import ResponseCache
from glm_eval.scoring.judging import JudgedStep, audit_order
from glm_eval.scoring.reasoning import opens_reasoning, split_reply

MAX_REPLY = 32_768  # characters of a judge reply that are read; a longer one is unreadable (a yes/no or a rating)
KEPT = 2_000  # characters a record keeps from each end of an over-long judge reply


class Judge:
    def __init__(self, run_cfg, fingerprint: str | None = None, progress: bool = True):
        """`run_cfg`: the run's config with `judge` set; `fingerprint`: the judge's identity as a finished run's
        metrics.json holds it (a rescore reuses stored replies without reaching the judge)."""
        from glm_eval.engine.run import LoadedModel
        cfg = copy.deepcopy(run_cfg)
        cfg.model = cfg.judge
        self.cfg, self.name, self.progress = cfg, cfg.judge.name, progress
        self.loaded = LoadedModel(cfg)
        self._fingerprint = fingerprint

    def check(self) -> None:
        """Before the main model loads: an endpoint judge must answer (a wrong URL is one line, not a lost run)."""
        if self.loaded.remote:
            try:
                _ = self.loaded.backend.info
            except UserError as e:
                raise UserError(f"judge: {e}".replace("model.endpoint", "judge.endpoint")) from None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.loaded.backend.info.fingerprint
        return self._fingerprint

    def describe(self) -> dict:
        return {"model": self.name, "fingerprint": self.fingerprint}

    def bind(self, audit: int, cache: ResponseCache | None, stored: dict[str, str]):
        """What a task's score_documents calls: judge(step, items)."""
        return lambda step, items: self(step, items, audit, cache, stored)

    # ---- the cascade -------------------------------------------------------------------------------------------
    def __call__(self, step: JudgedStep, items: list[tuple[dict, str, dict]], audit: int, cache: ResponseCache | None,
                 stored: dict[str, str]) -> None:
        """Judge each (sample record, answer text, rule verdict) the step wants, in place; audit `audit` verdicts the
        rule was sure of. `stored`: judge replies by cache key from the records being rescored."""
        asked = [k for k, (_, _, verdict) in enumerate(items) if step.wants(verdict)]
        sure = sorted((k for k, (_, _, verdict) in enumerate(items) if step.sure(verdict)),
                      key=lambda k: audit_order(items[k][0]))[:audit]
        jobs = [(k, "judge") for k in asked] + [(k, "audit") for k in sure]
        if not jobs:
            return
        requests = [self.request(step, *items[k]) for k, _ in jobs]
        keys = [self.key(step, r) for r in requests]
        replies = self.answer(keys, requests, cache, stored, f"judge {self.name} · {step.name}")
        for (k, kind), request, key, reply in zip(jobs, requests, keys, replies):
            record, _, verdict = items[k]
            entry = {"key": key, **self.reading(step, request, reply, record, verdict)}
            if kind == "audit":
                if "verdict" in entry:
                    entry["agrees"] = all(verdict.get(name) == value for name, value in entry["verdict"].items())
                verdict["audit"] = entry
                continue
            if step.when != "always":  # the rules' verdict, which the judge's may replace
                verdict["rule"] = {key: verdict[key] for key in ("extracted", "correct") if key in verdict}
            verdict["judge"] = entry
            if "verdict" in entry:
                verdict.update(entry["verdict"])
            elif step.when == "always":  # no rule to fall back on: unscored, and judged again by a rescore
                verdict["scoring_error"] = f"judge: {entry.get('error') or 'unreadable reply'}"

    def request(self, step: JudgedStep, record: dict, answer: str, verdict: dict) -> GenerationRequest:
        prompt = self.loaded.renderer.render_messages(tuple(step.ask(record, answer, verdict)))
        budget = self.cfg.judging.max_new_tokens or step.max_new_tokens
        return GenerationRequest(prompt=prompt, max_new_tokens=budget, temperature=step.temperature)

    def key(self, step: JudgedStep, request: GenerationRequest) -> str:
        return ResponseCache.key(json.dumps([self.fingerprint, step.name, step.version]), request)

    def answer(self, keys: list[str], requests: list[GenerationRequest], cache: ResponseCache | None,
               stored: dict[str, str], desc: str) -> list[Response]:
        """Stored replies, then the cache, then the judge model (`keys`: each request's cache key); each new reply
        written through to the cache."""
        replies: list[Response | None] = [Response(text=stored[k], finish_reason="stored") if k in stored else None
                                          for k in keys]
        missing = [i for i, r in enumerate(replies) if r is None]
        cached = cache.get_many([keys[i] for i in missing]) if cache is not None and missing else {}
        for i in missing:
            replies[i] = cached.get(keys[i])
        pending = [i for i, r in enumerate(replies) if r is None]
        if pending:
            bar = tqdm(total=len(pending), unit="verdict", desc=desc,
                       disable=not self.progress, dynamic_ncols=True)

            def on_response(position: int, response: Response) -> None:
                index = pending[position]
                replies[index] = response
                if cache is not None:
                    cache.put(keys[index], response)
                bar.update(1)

            try:
                self.loaded.backend.generate([requests[i] for i in pending], on_response)
            except KeyboardInterrupt:
                bar.close()
                print("interrupted while judging: the answers and the verdicts so far are cached; rerun the same "
                      "command to resume", file=sys.stderr)
                raise SystemExit(130)
            except UserError as e:  # the judge went away after the run started: the rule verdicts stand
                for i in pending:
                    if replies[i] is None:
                        replies[i] = Response(finish_reason="error", error=f"judge unusable: {e}")
            bar.close()
        return [r if r is not None else Response(finish_reason="error", error="no reply") for r in replies]

    def reading(self, step: JudgedStep, request: GenerationRequest, reply: Response, record: dict,
                verdict: dict) -> dict:
        """What a record keeps of one judge call: the raw reply (bounded) and its reading, or the error."""
        entry: dict = {}
        if reply.error is not None:
            entry["error"] = reply.error
            return entry
        text = reply.text
        entry["reply"] = text if len(text) <= 2 * KEPT else f"{text[:KEPT]}\n[… {len(text) - 2 * KEPT} characters " \
                                                             f"not stored …]\n{text[-KEPT:]}"
        if len(text) > MAX_REPLY:
            entry["unreadable"] = f"a reply of {len(text):,} characters (over {MAX_REPLY:,})"
            return entry
        split = split_reply(text, reply.finish_reason, reply.reasoning, request.prompt.thinking,
                            opens_reasoning(request.prompt.text), tags_kept=not self.loaded.remote)
        read = step.read(split.answer, record, verdict) if split.answered else None
        if read is None:
            entry["unreadable"] = True
        else:
            entry["verdict"] = read
        return entry


def stored_replies(records: list[dict]) -> dict[str, str]:
    """The judge replies a finished run's records hold, by cache key (those stored whole: a cut one is asked again)."""
    found = {}
    for record in records:
        for unit in record.get("samples") or [record]:
            for entry in (unit.get("judge"), unit.get("audit")):
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and \
                        isinstance(entry.get("reply"), str) and "characters not stored" not in entry["reply"]:
                    found[entry["key"]] = entry["reply"]
    return found
