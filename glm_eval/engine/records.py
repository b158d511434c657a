"""Per-document records (what a reader checks: prompt, output, extraction, verdict) and the metrics summarised
from them; shared by a run and by rescore."""
from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from glm_eval.core import averaging
from glm_eval.core.averaging import is_scored, record_value
from glm_eval.core.files import write_atomic, write_json, write_jsonl
from glm_eval.core.protocol import GenerationRequest, Prompt, Request, Response
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


def summarize(records: list[dict], task) -> dict:
    """Score fields of metrics.json from per-document records: n and failures, the headline as the task's
    `averaging` declares (with micro, macro, subjects and categories where documents have subjects), pass@k and
    maj@k where documents have several samples, and the task's own extras."""
    scored = [r for r in records if is_scored(r)]
    out = {"task": task.cfg.name, "metric": task.metric, "n": len(scored), "failed": len(records) - len(scored)}
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
        out["pass@k"] = {}
        for k in k_values(n):
            chances = [pass_at_k(len(r["samples"]), r["passed"], k) for r in scored]
            out["pass@k"][f"pass@{k}"] = averaging.summarize(chances, subjects, categories, task.averaging)["score"]
    return {**out, **task.aggregate(scored)}


def make_record(task, doc: dict, requests: list[Request], answers: list[Response]) -> dict:
    """What a reader needs to check one document: the prompt, the raw output (or the scored log-probs), and the
    fields the task scores it with (so rescore needs no data files)."""
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
    else:
        record["logprobs"] = answers[0].logprobs
    record.update({k: doc[k] for k in task.record_fields})
    errors = [a.error for a in answers if a.error]
    if errors:
        record["error"] = errors[0]  # a failed request is not a wrong answer
    return record


def answers_from_record(record: dict) -> list[Response]:
    if "logprobs" in record:
        return [Response(logprobs=record["logprobs"])]
    return [Response(text=t) for t in record.get("outputs") or [record["output"]]]


STALE = ("scoring_error", "correct", "score", "samples", "passed")  # verdict fields a rescore replaces


def score_records(task, records: list[dict], answers: list[list[Response]]) -> None:
    """Add the task's extraction and verdict to every record whose requests succeeded."""
    ok = [i for i, r in enumerate(records) if "error" not in r]
    for i, fields in zip(ok, task.score_documents([answers[i] for i in ok], [records[i] for i in ok])):
        for stale in STALE:  # rescore: a verdict is replaced, never mixed with an old one
            records[i].pop(stale, None)
        records[i].update(fields)


def write_run(output_dir: Path, config_yaml: str, records: list[dict], metrics: dict) -> None:
    """config.yaml, samples.jsonl and metrics.json, each written atomically. A folder with metrics.json is
    complete: the old one goes first and the new one comes last, so a run killed (or out of disk) while it
    rewrites a folder leaves an incomplete folder, never old metrics beside new samples."""
    (output_dir / "metrics.json").unlink(missing_ok=True)
    write_atomic(output_dir / "config.yaml", config_yaml)
    write_jsonl(output_dir / "samples.jsonl", records)
    write_json(output_dir / "metrics.json", metrics)
