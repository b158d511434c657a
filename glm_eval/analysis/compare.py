"""`python -m glm_eval.compare <run dir | results root> [...] [reference=<model>] [out=DIR] [resamples=N] [seed=S]`

Is checkpoint B better than A on a task, or is the difference noise? For every task two or more runs share, each
run is paired with the reference run document by document (the intersection of their scored documents only):

- Δ = score − reference score on those documents, with the task's own averaging (micro, macro over subjects, or
  LongBench's mean of categories), and a 95% paired bootstrap CI (documents resampled within each subject, so a
  macro average keeps every subject);
- a paired test: McNemar's exact test (a binomial test on the discordant documents) for 0/1 scores, a paired
  sign-flip permutation test of Δ for graded scores (LongBench's F1/ROUGE/…);
- the documents that flipped right→wrong and wrong→right (ids), graded scores: worse/better;
- the same per subject and per category where the task has them.

Writes `comparison.md`, `comparison.csv` (a row per task × scope × run) and `flips.csv` (a row per flipped document).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from glm_eval.analysis.grid import find_run_dirs, scale
from glm_eval.core.averaging import Averaging, category_names, is_scored, record_value, stderr_of_weighted_means
from glm_eval.core.cli import parse_args, whole_number
from glm_eval.core.errors import UserError
from glm_eval.core.files import read_jsonl

log = logging.getLogger(__name__)
SHOWN_IDS = 20  # flip ids listed in Markdown per direction (all of them are in flips.csv)


@dataclass
class Run:
    path: Path
    metrics: dict
    rows: list[dict]  # every readable record of samples.jsonl, failed ones included (the report shows them)
    unreadable: int = 0  # lines of samples.jsonl that are not a JSON object
    label: str = ""

    @property
    def model(self) -> str:
        return self.metrics["model"]

    @property
    def task(self) -> str:
        return self.metrics["task"]

    @cached_property
    def records(self) -> dict[int, dict]:
        """doc_id → scored record: what a comparison pairs."""
        return {r["doc_id"]: r for r in self.rows if isinstance(r.get("doc_id"), int) and is_scored(r)}

    @property
    def unusable(self) -> int:
        """Lines that failed, could not be scored, had no doc_id or were unreadable."""
        return self.unreadable + len(self.rows) - len(self.records)

    @cached_property
    def binary(self) -> bool:
        return all("score" not in r for r in self.records.values())


def load_run(path: Path) -> Run:
    metrics = json.loads((path / "metrics.json").read_text())
    rows, _ = read_jsonl(path / "samples.jsonl")
    return Run(path, metrics, [r for r in rows if r is not None], rows.count(None))


def find_runs(paths: list[str]) -> list[Run]:
    """Each argument is a run folder (holding metrics.json and samples.jsonl) or a folder searched for them."""
    dirs: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise UserError(f"{arg}: no such folder (give run folders or a results root)")
        found = [path] if (path / "metrics.json").exists() else find_run_dirs(path)
        dirs += [d for d in found if (d / "samples.jsonl").exists() and d.resolve() not in {x.resolve() for x in dirs}]
    runs = []
    for d in dirs:
        try:
            run = load_run(d)
        except (OSError, ValueError):
            log.warning(f"{d}: unreadable metrics.json or samples.jsonl, skipped")
            continue
        if isinstance(run.metrics.get("model"), str) and isinstance(run.metrics.get("task"), str):
            runs.append(run)
    label_runs(runs)
    return runs


def label_runs(runs: list[Run]) -> None:
    """A run is named by its model, or, where two runs of one task share a model (the same checkpoint with another
    setting), by the part of its folder path that differs: results/zero-shot/gsm8k, results/few-shot/gsm8k →
    zero-shot, few-shot (so one name picks the same setting in every task)."""
    for run in runs:
        twins = [r.path.resolve().parts for r in runs if r.task == run.task and r.model == run.model]
        if len(twins) == 1:
            run.label = run.model
            continue
        lead = len(os.path.commonprefix(twins))
        trail = len(os.path.commonprefix([t[::-1] for t in twins]))
        parts = run.path.resolve().parts
        run.label = "/".join(parts[lead:max(lead + 1, len(parts) - trail)])


def pick_reference(runs: list[Run], wanted: str | None) -> tuple[Run, str | None]:
    """The run of one task that `wanted` names (label, model or folder); the first run when none does."""
    if wanted:
        for test in (lambda r: r.label == wanted, lambda r: r.model == wanted,
                     lambda r: str(r.path.resolve()).endswith(wanted.rstrip("/"))):
            named = [r for r in runs if test(r)]
            if len(named) == 1:
                return named[0], None
            if len(named) > 1:
                raise UserError(f"reference={wanted} names {len(named)} runs of {runs[0].task} "
                                f"({', '.join(r.label for r in named)}); name one of them")
        return runs[0], f"reference {wanted} has no {runs[0].task} run; compared against {runs[0].label}"
    return runs[0], None


# ---- statistics ---------------------------------------------------------------------------------------------
def strata(subjects: list[str | None], averaging: Averaging, categories: list) -> list[tuple[np.ndarray, float]]:
    """(document indices, weight) per subject, the weights as the task's averaging declares: the headline is
    Σ weight · mean over the subject's documents."""
    keys = np.array(["" if s is None else s for s in subjects], dtype=object)
    return [(np.flatnonzero(keys == s), w) for s, w in averaging.weights(subjects, categories).items()]


def weighted_mean(values: np.ndarray, groups: list[tuple[np.ndarray, float]]) -> float:
    return float(sum(w * values[idx].mean() for idx, w in groups))


def weighted_score(values: np.ndarray, groups: list[tuple[np.ndarray, float]], averaging: Averaging) -> float:
    """The headline as metrics.json computes it (subject scores rounded where the task declares it)."""
    return float(sum(w * averaging.subject_score(values[idx].tolist()) for idx, w in groups))


def weighted_stderr(values: np.ndarray, groups: list[tuple[np.ndarray, float]]) -> float:
    """Standard error of Σ weight · subject mean (independent subjects; a subject of one document adds none)."""
    return stderr_of_weighted_means([(weight, values[idx].tolist()) for idx, weight in groups])


def bootstrap_ci(diff: np.ndarray, groups: list[tuple[np.ndarray, float]], resamples: int,
                 rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the headline Δ under a paired bootstrap: documents are resampled with replacement inside
    each subject (the pair stays together, every subject keeps its size)."""
    totals = np.zeros(resamples)
    for idx, weight in groups:
        values = diff[idx]
        step = max(1, 4_000_000 // len(values))  # bounded memory for 14k-document subjects
        for start in range(0, resamples, step):
            stop = min(resamples, start + step)
            draws = rng.integers(0, len(values), size=(stop - start, len(values)))
            totals[start:stop] += weight * values[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(totals, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p: the discordant documents under H0 flip either way with probability 1/2."""
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(right_to_wrong, discordant, 0.5).pvalue)


def permutation_p(a: np.ndarray, b: np.ndarray, groups: list[tuple[np.ndarray, float]], resamples: int,
                  seed: int, exact_up_to: int = 16) -> float:
    """Two-sided paired permutation p of the headline Δ: under H0 each document's two scores are exchangeable, so
    its weighted difference flips sign at random. Exact (all 2^k sign patterns) when k ≤ `exact_up_to` documents
    differ, else `resamples` random patterns, p = (hits + 1) / (resamples + 1)."""
    weights = np.zeros(len(a))
    for idx, weight in groups:
        weights[idx] = weight / len(idx)
    terms = (weights * (b - a))[b != a]  # documents with equal scores add 0 whatever the sign
    observed = abs(terms.sum())
    tolerance = 1e-12 * max(1.0, observed)
    if len(terms) <= exact_up_to:
        patterns = 1 - 2 * ((np.arange(2 ** len(terms))[:, None] >> np.arange(len(terms))) & 1)
        return float(np.mean(np.abs(patterns @ terms) >= observed - tolerance))
    rng, hits = np.random.default_rng(seed), 0
    step = max(1, 4_000_000 // len(terms))
    for start in range(0, resamples, step):
        signs = rng.choice([-1.0, 1.0], size=(min(step, resamples - start), len(terms)))
        hits += int(np.count_nonzero(np.abs(signs @ terms) >= observed - tolerance))
    return (hits + 1) / (resamples + 1)


# ---- one run against the reference --------------------------------------------------------------------------
@dataclass
class Pairing:
    ids: list[int]
    reference: np.ndarray
    other: np.ndarray
    subjects: list[str | None]
    categories: list
    mismatched: list[int] = field(default_factory=list)  # same id, different document (gold or subject differs)


def identity(record: dict) -> str:
    return json.dumps([record.get("subject"), record.get("gold", record.get("answers"))], sort_keys=True, default=str)


def pair(reference: Run, other: Run) -> Pairing:
    common = sorted(set(reference.records) & set(other.records))
    mismatched = [i for i in common if identity(reference.records[i]) != identity(other.records[i])]
    ids = [i for i in common if i not in set(mismatched)]
    rec = [reference.records[i] for i in ids]
    return Pairing(ids, np.array([record_value(r) for r in rec], dtype=float),
                   np.array([record_value(other.records[i]) for i in ids], dtype=float),
                   [r.get("subject") for r in rec], [r.get("category") for r in rec], mismatched)


def compare_scope(p: Pairing, select: np.ndarray, averaging: Averaging, binary: bool, resamples: int,
                  seed: int, shown: float = 100) -> dict:
    """Scores, Δ, CI, p and flips over the selected documents of a pairing, scores and Δ × `shown` (100: a share as
    %; 1: AlignBench's rating as it is)."""
    a, b = p.reference[select], p.other[select]
    groups = strata([p.subjects[i] for i in select], averaging, [p.categories[i] for i in select])
    rng = np.random.default_rng(seed)
    low, high = bootstrap_ci(b - a, groups, resamples, rng)
    ids = np.array(p.ids)[select]
    worse, better = ids[b < a].tolist(), ids[b > a].tolist()
    if binary:
        p_value, test = mcnemar_exact(len(worse), len(better)), "McNemar exact"
    else:
        p_value, test = permutation_p(a, b, groups, resamples, seed), "paired permutation"
    reference_score, score = weighted_score(a, groups, averaging), weighted_score(b, groups, averaging)
    return {"n": int(len(select)), "reference_score": shown * reference_score, "score": shown * score,
            "delta": shown * (score - reference_score if averaging.subject_decimals else weighted_mean(b - a, groups)),
            "ci_low": shown * low, "ci_high": shown * high, "p": p_value, "test": test,
            "worse": len(worse), "better": len(better), "worse_ids": worse, "better_ids": better}


def category_members(categories: list) -> dict[str, np.ndarray]:
    """Category → indices of its documents (a document's `category` is a name or a list of names)."""
    members: dict[str, list[int]] = {}
    for i, names in enumerate(categories):
        for name in category_names(names):
            members.setdefault(name, []).append(i)
    return {name: np.array(members[name]) for name in sorted(members)}


def compare_pair(reference: Run, other: Run, resamples: int, seed: int) -> tuple[list[dict], Pairing]:
    """Overall, per-category and per-subject rows for one run against the reference."""
    p = pair(reference, other)
    averaging = Averaging.from_metrics(reference.metrics)
    binary = reference.binary and other.binary
    shown = scale(reference.metrics)
    if not p.ids:
        return [], p
    rows = [{"scope": "overall", "group": "",
             **compare_scope(p, np.arange(len(p.ids)), averaging, binary, resamples, seed, shown)}]
    for name, select in category_members(p.categories).items():
        rows.append({"scope": "category", "group": name,
                     **compare_scope(p, select, averaging.within_category, binary, resamples, seed, shown)})
    subject_names = sorted({s for s in p.subjects if s is not None})
    if len(subject_names) > 1:
        for name in subject_names:
            select = np.array([i for i, s in enumerate(p.subjects) if s == name])
            rows.append({"scope": "subject", "group": name,
                         **compare_scope(p, select, Averaging(subject_decimals=averaging.subject_decimals), binary,
                                         resamples, seed, shown)})
    return rows, p


@dataclass
class Comparison:
    rows: pd.DataFrame  # task, scope, group, model, reference, n, scores, Δ, CI, p, test, flips
    flips: pd.DataFrame  # task, model, reference, doc_id, subject, direction
    notes: dict[str, list[str]]  # task → what a reader must know (intersection, reference fallback, mismatches)
    runs: list[Run]


def compare(runs: list[Run], reference: str | None = None, resamples: int = 10_000, seed: int = 0) -> Comparison:
    rows, flips, notes = [], [], {}
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    for task, task_runs in by_task.items():
        if len(task_runs) < 2:
            continue
        ref, fallback = pick_reference(task_runs, reference)
        task_notes = notes.setdefault(task, [fallback] if fallback else [])
        for other in (r for r in task_runs if r is not ref):
            pair_rows, p = compare_pair(ref, other, resamples, seed)
            if p.mismatched:
                task_notes.append(f"{other.label}: {len(p.mismatched)} documents share an id with {ref.label} but not "
                                  f"the gold answer (different data?); left out, e.g. ids {p.mismatched[:5]}")
            left_out = {r.label: len(r.records) - len(p.ids) for r in (ref, other)}
            if any(left_out.values()) or ref.unusable or other.unusable:
                task_notes.append(
                    f"{other.label} vs {ref.label}: compared on the {len(p.ids)} documents both scored (intersection "
                    f"only); left out: " + ", ".join(f"{label} {n}" for label, n in left_out.items())
                    + (f"; failed or unscorable: {ref.label} {ref.unusable}, {other.label} {other.unusable}"
                       if ref.unusable or other.unusable else ""))
            if not pair_rows:
                task_notes.append(f"{other.label}: no document in common with {ref.label}")
            for row in pair_rows:
                rows.append({"task": task, "model": other.label, "reference": ref.label, **row})
                if row["scope"] == "overall":
                    subject_of = dict(zip(p.ids, p.subjects))
                    for direction, key in zip(flip_names(ref.binary and other.binary), ("worse_ids", "better_ids")):
                        flips += [{"task": task, "model": other.label, "reference": ref.label, "doc_id": i,
                                   "subject": subject_of[i], "direction": direction} for i in row[key]]
    table = pd.DataFrame(rows, columns=["task", "scope", "group", "model", "reference", "n", "reference_score", "score",
                                        "delta", "ci_low", "ci_high", "p", "test", "worse", "better",
                                        "worse_ids", "better_ids"])
    return Comparison(table, pd.DataFrame(flips, columns=["task", "model", "reference", "doc_id", "subject",
                                                         "direction"]), notes, runs)


# ---- output -------------------------------------------------------------------------------------------------
def fmt(value: float, signed: bool = False) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        (f"{value:+.1f}" if signed else f"{value:.1f}")


def fmt_p(p: float) -> str:
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def ids_text(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f" … (+{len(ids) - SHOWN_IDS}, all in flips.csv)" if len(ids) > SHOWN_IDS else "")


def flip_names(binary: bool) -> tuple[str, str]:
    return ("right→wrong", "wrong→right") if binary else ("worse", "better")


def markdown_table(rows: pd.DataFrame, binary: bool, labels: list[str], title: str) -> str:
    worse, better = flip_names(binary)
    header = (f"| {title} | n | reference | score | Δ | 95% CI | p | {worse} | {better} |\n"
              "|---|---|---|---|---|---|---|---|---|\n")
    return header + "".join(
        f"| {label} | {r.n} | {fmt(r.reference_score)} | {fmt(r.score)} | {fmt(r.delta, True)} | "
        f"[{fmt(r.ci_low, True)}, {fmt(r.ci_high, True)}] | {fmt_p(r.p)} | {r.worse} | {r.better} |\n"
        for label, (_, r) in zip(labels, rows.iterrows()))


def task_markdown(c: Comparison, task: str) -> str:
    rows = c.rows[c.rows.task == task]
    overall = rows[rows.scope == "overall"]
    runs = [r for r in c.runs if r.task == task]
    metrics = runs[0].metrics
    binary = all(r.binary for r in runs)
    test = overall.test.iloc[0] if len(overall) else ""
    out = [f"## {task}", "",
           f"{metrics.get('metric', 'score')} ({metrics.get('average', 'micro')} average), ×100; reference "
           f"**{overall.reference.iloc[0] if len(overall) else '-'}**; Δ = run − reference on the documents both "
           f"scored, 95% paired bootstrap CI, p from the {test} test.", ""]
    out += [f"- {note}" for note in c.notes.get(task, [])]
    if c.notes.get(task):
        out.append("")
    if len(overall):
        out.append(markdown_table(overall, binary, list(overall.model), "run"))
        for _, r in overall.iterrows():
            for name, ids in zip(flip_names(binary), (r.worse_ids, r.better_ids)):
                if ids:
                    out.append(f"{r.model} {name} ({len(ids)}): {ids_text(ids)}  ")
        out.append("")
    for scope in ("category", "subject"):
        part = rows[rows.scope == scope]
        if len(part):
            several = len(overall) > 1  # name the run in each row only when there are several
            labels = [f"{m} · {g}" if several else g for m, g in zip(part.model, part.group)]
            out += [f"### Per {scope}", "", markdown_table(part, binary, labels, scope)]
    return "\n".join(out)


def to_markdown(c: Comparison) -> str:
    tasks = list(dict.fromkeys(c.rows.task))
    if not tasks:
        return "# Comparison\n\nNo task was run by two or more of the given runs.\n"
    intro = ("# Comparison\n\nScores ×100 on the documents both runs scored. A CI that excludes 0 and a small p "
             "say the difference is unlikely to be noise from the choice of documents; flips list the documents "
             "whose verdict changed.\n")
    return intro + "\n" + "\n\n".join(task_markdown(c, t).strip() for t in tasks) + "\n"


def write(c: Comparison, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(to_markdown(c), encoding="utf-8")
    c.rows.drop(columns=["worse_ids", "better_ids"]).rename(
        columns={"worse": "worse_or_right_to_wrong", "better": "better_or_wrong_to_right"}).to_csv(
        out / "comparison.csv", index=False, float_format="%.10g")
    c.flips.to_csv(out / "flips.csv", index=False)


USAGE = "usage: python -m glm_eval.compare <run dir | results root> [...] [reference=<model>] [out=DIR] [resamples=N] [seed=S]"
OPTIONS = {"reference": str,  # the run compared against: a run name, a model or a folder
           "out": str,  # output folder (default: <common parent>/comparison)
           "resamples": whole_number, "seed": whole_number}  # bootstrap and permutation resamples, their seed


def main(argv: list[str]) -> int:
    paths, options, _ = parse_args(argv, USAGE, OPTIONS)
    runs = find_runs(paths)
    if not runs:
        raise UserError(f"no runs (metrics.json + samples.jsonl) found under {', '.join(paths)}")
    comparison = compare(runs, options.get("reference"), options.get("resamples", 10_000), options.get("seed", 0))
    out = Path(options.get("out") or Path(os.path.commonpath([str(Path(p).resolve()) for p in paths]))
               / "comparison")
    write(comparison, out)
    print(to_markdown(comparison))
    print(f"written: {out}/comparison.md, comparison.csv, flips.csv")
    return 0
