"""Per-document records (what a reader checks: prompt, output, extraction, verdict) and the metrics summarised
from them; shared by a run and by rescore."""
from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from glm_eval.core import averaging, sampled
from glm_eval.core.averaging import is_scored, record_value
from glm_eval.core.files import write_atomic, write_json, write_jsonl
from glm_eval.core.protocol import GenerationRequest, Prompt, Request, Response
from glm_eval.scoring import judging
from glm_eval.scoring.reasoning import Split, opens_reasoning, split_reply
from glm_eval.scoring.sampling import SamplesScoring, k_values, pass_at_k

VERSIONED = ["glm-eval", "torch", "transformers", "datasets", "hydra-core", "tokenizers", "vllm"]


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["python"] = sys.version.split()[0]
    return found


def prompt_of(request: Request) -> Prompt:
    return request.prompt if isinstance(request, GenerationRequest) else request.context


def summarize(records: list[dict], task, budget: int | None = None, judge: dict | None = None) -> dict:
    """Score fields of metrics.json from per-document records: n and failures, the headline as the task's
    `averaging` declares (with micro, macro, subjects and categories where documents have subjects), pass@k and
    maj@k where documents have several samples, the reasoning block and the score against the reply budget (up to
    `budget`, the run's max_new_tokens) where replies were generated, what the judge did (`judge`: its model and
    fingerprint, where a judge was asked) and the task's own extras."""
    scored = [r for r in records if is_scored(r)]
    out = {"task": task.cfg.name, "metric": task.metric, "n": len(scored), "failed": len(records) - len(scored)}
    if task.scale != 100:
        out["scale"] = task.scale
    if all("correct" in r for r in scored):
        out["correct"] = sum(bool(r["correct"]) for r in scored)
    subjects, categories = [r.get("subject") for r in scored], [r.get("category") for r in scored]
    out.update(averaging.summarize([record_value(r) for r in scored], subjects, categories, task.averaging))
    samples = {len(r["samples"]) for r in scored if "samples" in r}
    if samples:
        n = min(samples)
        out["samples"] = n
        if task.samples_scoring == SamplesScoring.majority:
            out["metric"] = f"maj@{n} {task.metric}"
        elif task.samples_scoring == SamplesScoring.mean:
            out["metric"] = f"avg@{n} {task.metric}"
        per_seed = sampled.seed_scores(scored, n, task.averaging)
        if per_seed:  # avg@n whatever the headline, and how much it moves from one seed to the next
            out["avg@n"] = sum(per_seed) / n
            out["spread"] = sampled.spread(per_seed)
            out["seed_scores"] = per_seed
        out["pass@k"] = {}
        for k in k_values(n):
            chances = [pass_at_k(len(r["samples"]), r["passed"], k) for r in scored]
            out["pass@k"][f"pass@{k}"] = averaging.summarize(chances, subjects, categories, task.averaging)["score"]
        if majorities := sampled.maj_at_k(scored, k_values(n), task.averaging):
            out["maj@k"] = majorities
    if (reasoning := sampled.reasoning_summary(records, task.averaging)) is not None:
        out["reasoning"] = reasoning
    if budget and (curve := sampled.budget_curve(scored, budget, task.averaging)) is not None:
        out["budget_curve"] = curve
    if judge is not None and task.judged is not None:
        def averaged(values: list[float], rows: list[dict]) -> float:
            return averaging.summarize(values, [r.get("subject") for r in rows], [r.get("category") for r in rows],
                                       task.averaging)["score"]
        out["judge"] = {**judge, **judging.summary(records, task.judged, averaged)}
    return {**out, **task.aggregate(scored)}


def make_record(task, doc: dict, requests: list[Request], answers: list[Response], tokenizer=None,
                remote: bool = False) -> dict:
    """What a reader needs to check one document: the prompt, the raw output (or the scored log-probs), and the
    fields the task scores it with (so rescore needs no data files). A document with several samples, or whose
    reply reasons, keeps each reply's facts in `replies` (finish reason, tokens, a server's split reasoning, and
    with a tokenizer the answer's token count); `tokenizer` counts answer tokens, `remote` marks an endpoint's
    replies (whose think tags a server may have dropped)."""
    record = {"doc_id": doc["doc_id"], **{k: doc[k] for k in ("subject", "category") if k in doc}}
    prompt = prompt_of(requests[0])
    record["prompt"] = prompt.text
    if task.prompt_excerpt and len(prompt.text) > 2 * task.prompt_excerpt + 100:  # long-context prompts: ends only
        cut = len(prompt.text) - 2 * task.prompt_excerpt
        record["prompt"] = (f"{prompt.text[:task.prompt_excerpt]}\n[… {cut} characters not stored …]\n"
                            f"{prompt.text[-task.prompt_excerpt:]}")
        record["prompt_tokens"] = len(prompt.token_ids)
    if isinstance(requests[0], GenerationRequest):
        record["output"] = answers[0].text
        if len(answers) > 1:
            record["outputs"] = [a.text for a in answers]
        record["finish_reason"] = answers[0].finish_reason
        record["num_tokens"] = answers[0].num_tokens
        thinking = requests[0].prompt.thinking
        if thinking is not None:
            record["thinking"] = thinking
        if remote:
            record["endpoint"] = True
        if prompt.tools:  # the format its calls are read back in (BFCL), and a server's own parse of them
            record["tool_format"] = prompt.tool_format
            if answers[0].tool_calls is not None:
                record["tool_calls"] = answers[0].tool_calls
        splits = [split_of(record, a.text, a.finish_reason, a.reasoning) for a in answers]
        if len(answers) > 1 or thinking is not None or any(s.reasoning is not None for s in splits):
            record["replies"] = [reply_facts(answer, split, tokenizer) for answer, split in zip(answers, splits)]
    else:
        record["logprobs"] = answers[0].logprobs
    record.update({k: doc[k] for k in task.record_fields})
    errors = [a.error for a in answers if a.error]
    if errors:
        record["error"] = errors[0]  # a failed request is not a wrong answer
    return record


def split_of(record: dict, text: str, finish_reason: str, server_reasoning: str | None) -> Split:
    """One reply kept apart from its reasoning (scoring/reasoning.py), from what its record holds."""
    return split_reply(text, finish_reason, server_reasoning, record.get("thinking"),
                       opened=opens_reasoning(record["prompt"]), tags_kept=not record.get("endpoint"))


def reply_facts(answer: Response, split: Split, tokenizer) -> dict:
    facts = {"finish_reason": answer.finish_reason, "num_tokens": answer.num_tokens}
    if answer.tool_calls is not None:
        facts["tool_calls"] = answer.tool_calls
    if answer.reasoning is not None:  # the server split it off: the output holds the content alone
        facts["reasoning"] = answer.reasoning
    if split.reasoning is not None and tokenizer is not None and answer.error is None:
        # the reply's tokens are exact; its answer is tokenized again (± a token at the seam)
        answer_tokens = len(tokenizer.encode(split.answer, add_special_tokens=False)) if split.answer else 0
        facts.update(answer_tokens=answer_tokens, reasoning_tokens=max(0, answer.num_tokens - answer_tokens))
    return facts


def answers_from_record(record: dict) -> list[Response]:
    if "logprobs" in record:
        return [Response(logprobs=record["logprobs"])]
    texts = record.get("outputs") or [record["output"]]
    # a record written before replies were kept: the first reply's finish reason, none known for the others
    facts = record.get("replies") or [{"finish_reason": record.get("finish_reason", ""),
                                       "tool_calls": record.get("tool_calls")}] + [{}] * (len(texts) - 1)
    return [Response(text=t, finish_reason=f.get("finish_reason", ""), num_tokens=f.get("num_tokens", 0),
                     reasoning=f.get("reasoning"), tool_calls=f.get("tool_calls")) for t, f in zip(texts, facts)]


# a rescore replaces these
STALE = ("scoring_error", "correct", "score", "samples", "passed", "reasoning", "answer", "rule", "judge", "audit")


def score_records(task, records: list[dict], answers: list[list[Response]], judge=None) -> None:
    """Keep each reply's reasoning apart from its answer, then add the task's extraction and verdict (of the answers
    alone, judged where the task declares a judged step and `judge` is given: engine/judge.py) to every record whose
    requests succeeded. A reply cut off inside its reasoning has no answer: the task never sees it, and it is
    wrong."""
    ok = [i for i, r in enumerate(records) if "error" not in r]
    scored_answers = []
    for i in ok:
        record, splits = records[i], []
        for j, response in enumerate(answers[i]):
            if response.logprobs or "output" not in record:  # log-likelihood scoring: nothing to split
                splits.append(None)
                continue
            split = split_of(record, response.text, response.finish_reason, response.reasoning)
            splits.append(split)
            if "replies" in record and j < len(record["replies"]):
                record["replies"][j].update(reasoning_state=str(split.state))
                if len(answers[i]) > 1:
                    record["replies"][j]["answer"] = split.answer
        # a server that parsed calls out of a reply answered with them, even with no content beside them
        scored_answers.append([response if split is None else
                               Response(text=split.answer or "", finish_reason=response.finish_reason,
                                        num_tokens=response.num_tokens, tool_calls=response.tool_calls)
                               if split.answered or response.tool_calls else None
                               for response, split in zip(answers[i], splits)])
        for stale in STALE:  # rescore: a verdict is replaced, never mixed with an old one
            record.pop(stale, None)
        if len(splits) == 1 and splits[0] is not None and splits[0].reasoning is not None:
            record.update(reasoning=splits[0].reasoning, answer=splits[0].answer)
    for i, fields in zip(ok, task.score_documents(scored_answers, [records[i] for i in ok], judge)):
        records[i].update(fields)


def write_run(output_dir: Path, config_yaml: str, records: list[dict], metrics: dict) -> None:
    """config.yaml, samples.jsonl and metrics.json, each written atomically. A folder with metrics.json is
    complete: the old one goes first and the new one comes last, so a run killed (or out of disk) while it
    rewrites a folder leaves an incomplete folder, never old metrics beside new samples."""
    (output_dir / "metrics.json").unlink(missing_ok=True)
    write_atomic(output_dir / "config.yaml", config_yaml)
    write_jsonl(output_dir / "samples.jsonl", records)
    write_json(output_dir / "metrics.json", metrics)
