"""Shared prefixes computed once (backends/prefix.py): how prompts are grouped, and that the scorer and the slot
generator give the answers they give without sharing, on real few-shot prompts and the real small model."""
import random

import pytest

from conftest import run_eval
from glm_eval.backends.generator import SlotGenerator
from glm_eval.backends.prefix import PrefixGroup, prefix_groups
from glm_eval.core.files import read_jsonl
from glm_eval.engine.overrides import compose_config
from glm_eval.glm.prompts import PromptRenderer
from glm_eval.tasks import load_task


def few_shot_like(seed: int = 0):
    """Token prompts shaped like chat-formatted 5-shot MMLU: a 40-token system header shared by all, then per
    subject its own exemplars, then a question of its own (pairs of which may share their first words), plus
    prompts that share only the header."""
    rng = random.Random(seed)
    header = [rng.randrange(1000) for _ in range(40)]
    prompts, subject_of, prefix_length = [], [], {}
    for subject in range(6):
        exemplars = [1000 + subject] + [rng.randrange(1000) for _ in range(rng.randrange(60, 300))]
        prefix_length[subject] = len(header) + len(exemplars)
        for q in range(rng.randrange(2, 9)):
            opening = [2000 + q // 2] * 3  # questions 0-1, 2-3, … share three more tokens
            prompts.append(header + exemplars + opening + [3000 + q] + [rng.randrange(1000) for _ in range(20)])
            subject_of.append(subject)
    for k in range(5):
        prompts.append(header + [4000 + k] + [rng.randrange(1000) for _ in range(50)])
        subject_of.append(None)
    order = list(range(len(prompts)))
    rng.shuffle(order)
    return [prompts[i] for i in order], [subject_of[i] for i in order], prefix_length


def test_each_subject_shares_its_exemplars_once():
    prompts, subject_of, prefix_length = few_shot_like()
    groups = prefix_groups(prompts, max_length=10_000)
    shared = [g for g in groups if g.length]
    # one group per subject at its exemplars' end, not at the header every prompt has, nor at the three tokens
    # some pairs of its questions add
    assert sorted(sorted(g.members) for g in shared) == sorted(
        sorted(i for i, s in enumerate(subject_of) if s == subject) for subject in prefix_length)
    for g in shared:
        assert g.length == prefix_length[subject_of[g.members[0]]]
    assert groups[-1] == PrefixGroup(0, [i for i, s in enumerate(subject_of) if s is None])


def test_groups_of_any_union_of_whole_groups_are_those_groups():
    """What data parallel relies on: a rank given some whole groups forms exactly those groups."""
    prompts, _, _ = few_shot_like(1)
    shared = [g for g in prefix_groups(prompts, max_length=10_000) if g.length]
    rng = random.Random(0)
    for _ in range(20):
        chosen = [g for g in shared if rng.random() < 0.5]
        subset = [i for g in chosen for i in g.members]
        regrouped = prefix_groups([prompts[i] for i in subset], max_length=10_000)
        assert sorted((g.length, sorted(subset[m] for m in g.members)) for g in regrouped) == \
            sorted((g.length, sorted(g.members)) for g in chosen)


def test_a_prefix_is_shared_only_when_worth_it_and_within_budget():
    base = list(range(100))
    prompts = [base + [1000 + k, 7] for k in range(3)]
    assert prefix_groups(prompts, max_length=10_000) == [PrefixGroup(100, [0, 1, 2])]
    assert prefix_groups(prompts, max_length=99) == [PrefixGroup(0, [0, 1, 2])]  # over the KV budget
    short = [base[:20] + [k] for k in range(3)]  # 20 tokens in common: below MIN_SHARED_TOKENS
    assert prefix_groups(short, max_length=10_000) == [PrefixGroup(0, [0, 1, 2])]
    # duplicates and a prompt that another extends keep their last token to themselves
    assert prefix_groups([base, base, base + [5]], max_length=10_000) == [PrefixGroup(99, [0, 1, 2])]


def choice_requests(task_name: str, subjects: int, per_subject: int, data_dir, tokenizer):
    cfg = compose_config([f"task={task_name}", "task.shots=5", "model.chat=false"])
    task = load_task(cfg.task)
    docs, taken = [], {}
    for doc in task.documents(str(data_dir)).docs:
        if len(taken) < subjects or doc["subject"] in taken:
            taken[doc["subject"]] = taken.get(doc["subject"], 0) + 1
            if taken[doc["subject"]] <= per_subject:
                docs.append(doc)
    renderer = PromptRenderer(tokenizer, chat=False)
    return [task.requests(d, task.shots(d, str(data_dir)), renderer, cfg.gen, [])[0] for d in docs]


def test_mmlu_five_shot_scores_with_and_without_sharing(data_dir, tmp_path):
    """Through the command's own path (config → HF backend → scorer): the same letters and log-probs within
    rounding, a fraction of the tokens computed."""
    runs = {}
    for share in ("true", "false"):
        out = tmp_path / share
        metrics = run_eval("task=mmlu", "task.shots=5", "limit=8", f"batch.share_prefix={share}", "overwrite=true",
                           f"data_dir={data_dir}", f"output_dir={out}", f"results_dir={tmp_path}", "progress=false")
        runs[share] = metrics["backend_stats"], read_jsonl(out / "samples.jsonl")[0]
    (on, shared), (off, alone) = runs["true"], runs["false"]
    assert [s["extracted"] for s in shared] == [s["extracted"] for s in alone]
    for a, b in zip(shared, alone):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4)
    assert on["loglik_tokens"] == off["loglik_tokens"]
    assert on["loglik_computed_tokens"] < 0.4 * off["loglik_computed_tokens"], (on, off)


@pytest.mark.parametrize("task_name", ["ceval", "cmmlu"])
def test_chinese_five_shot_prompts_take_the_subjects_dev_questions_in_order(task_name, data_dir, smol):
    _, tokenizer = smol
    requests = choice_requests(task_name, subjects=2, per_subject=2, data_dir=data_dir, tokenizer=tokenizer)
    cfg = compose_config([f"task={task_name}", "task.shots=5"])
    task = load_task(cfg.task)
    dev = task._load(str(data_dir), cfg.task.shot_local_file, cfg.task.shot_split).docs
    docs = [d for d in task.documents(str(data_dir)).docs][:1]
    first = [s for s in dev if s["subject"] == docs[0]["subject"]][:5]
    text = requests[0].context.text
    positions = [text.index(task.question_text(s) + " " + s["gold"]) for s in first]
    assert positions == sorted(positions)
    groups = prefix_groups([r.context.token_ids for r in requests], max_length=10_000)
    assert [len(g.members) for g in groups if g.length] == [2, 2]  # one shared prefix per subject


def test_bbh_greedy_outputs_with_and_without_sharing(data_dir, smol):
    """Two rows at a time over two subtasks of official 3-shot prompts: a prefix is kept between the prefills of
    its group's rows and dropped after its last one; outputs equal those computed without sharing."""
    model, tokenizer = smol
    cfg = compose_config(["task=bbh", "model.chat=false", "gen.max_new_tokens=16"])
    task = load_task(cfg.task)
    docs = task.documents(str(data_dir)).docs
    chosen = [d for subtask in ("navigate", "sports_understanding") for d in
              [d for d in docs if d["subject"] == subtask][:3]]
    renderer = PromptRenderer(tokenizer, chat=False)
    requests = [task.requests(d, [], renderer, cfg.gen, [])[0] for d in chosen]
    outputs, counters = {}, {}
    for share in (True, False):
        generator = SlotGenerator(model, tokenizer, {tokenizer.eos_token_id}, max_rows=2, share_prefix=share)
        got = {}
        generator.generate(requests, lambda i, r: got.__setitem__(i, r))
        outputs[share], counters[share] = [got[i].text for i in range(len(requests))], generator.take_counters()
    assert outputs[True] == outputs[False]
    prompt_tokens = sum(len(r.prompt.token_ids) for r in requests)
    assert counters[False].prefill_tokens == prompt_tokens
    assert counters[True].prefill_tokens + counters[True].reused_prefix_tokens == prompt_tokens
    assert counters[True].prefill_tokens < 0.5 * prompt_tokens  # each subtask's 3-shot prompt computed once
