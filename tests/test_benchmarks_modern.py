"""The benchmarks today's GLM is published on: AIME 2024/2025, GPQA-Diamond, MMLU-Pro, IFEval (tasks/*.py), their
extraction on real-looking replies checked against the data's gold, IFEval's checker per instruction type, GPQA's
permutation rules, the suites' published rows, and each task end to end on the real small model."""
import csv
import json
from collections import Counter

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import run_eval
from glm_eval.core.protocol import Response
from glm_eval.engine.overrides import compose_config
from glm_eval.tasks import load_task


def task_of(name: str, *overrides: str):
    return load_task(compose_config([f"task={name}", *overrides]).task)


def documents(name: str, data_dir, *overrides: str):
    return task_of(name, *overrides).documents(str(data_dir)).docs


# ---- AIME -----------------------------------------------------------------------------------------------------
def test_aime_reads_both_layouts_and_compares_integers(data_dir):
    aime24, aime25 = documents("aime24", data_dir), documents("aime25", data_dir)
    assert len(aime24) == len(aime25) == 30
    assert sorted(d["id"] for d in aime25)[:2] == ["I-1", "I-10"] and "\\frac" in " ".join(d["problem"] for d in aime25)
    task = task_of("aime24")
    leading_zero = next(d for d in aime24 if d["gold"] == "25")  # "025" in the file
    replies = {f"So the answer is $\\boxed{{{leading_zero['gold']}}}$.": True,  # the gold as written
               "First \\boxed{7}, then I recheck: \\boxed{025}": True,          # the last box, leading zero
               "\\boxed{25.5}": False, "The answer is 25.": False,              # no box: no answer
               "\\boxed{\\text{25}}": True}
    for reply, right in replies.items():
        [verdict] = task.score_all([[Response(text=reply)]], [{"gold": leading_zero["gold"]}])
        assert verdict["correct"] is right, reply


# ---- GPQA -----------------------------------------------------------------------------------------------------
def test_gpqa_permutations_are_fixed_spread_and_reproduce_simple_evals(data_dir):
    docs = documents("gpqa_diamond", data_dir)
    assert len(docs) == 198 and Counter(d["subject"] for d in docs) == {"Chemistry": 93, "Physics": 86, "Biology": 19}
    ours, again = task_of("gpqa_diamond"), task_of("gpqa_diamond")
    golds = ["ABCD"[ours.permutation(d, k).index(0)] for d in docs for k in range(8)]
    assert golds == ["ABCD"[again.permutation(d, k).index(0)] for d in docs for k in range(8)]  # runs, ranks, resume
    counts = Counter(golds)
    assert set(counts) == set("ABCD") and min(counts.values()) > 0.2 * len(golds)  # no constant-letter shortcut
    assert len({tuple(ours.permutation(docs[0], k)) for k in range(8)}) > 1  # each sample its own order
    simple = task_of("gpqa_diamond", "task.options.permutation=simple-evals")
    # simple-evals: random.Random(0), one rng.sample(range(4), 4) per row of the file repeated n times
    import random
    rng = random.Random(0)
    draws = [rng.sample(range(4), 4) for _ in range(2 * 198)]
    assert [simple.permutation(d, 0) for d in docs] == draws[:198]
    assert [simple.permutation(d, 1) for d in docs] == draws[198:]


def test_gpqa_prompt_and_extraction_against_the_gold(data_dir):
    with open(data_dir / "gpqa" / "gpqa_diamond.csv", newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    task = task_of("gpqa_diamond")
    [doc] = documents("gpqa_diamond", data_dir)[:1]
    order = task.permutation(doc, 3)
    gold = "ABCD"[order.index(0)]
    wrong = next(letter for letter in "ABCD" if letter != gold)
    assert doc["options"][0] == first["Correct Answer"]
    record = {"gold": doc["gold"], "record_id": doc["record_id"], "row": doc["row"], "rows": doc["rows"],
              "sample_index": 3}
    replies = {f"Let me think... so the energies differ.\nANSWER: {gold}": True,
               f"answer : {gold.lower()}": True,                                  # (?i), spaces
               f"The answer is {gold}.": False,                                   # not the asked form
               f"ANSWER: {wrong}\n...no wait.\nANSWER: {gold}": False,           # the first match counts
               f"ANSWER: {gold}" + " padding" * 200 + f"\nANSWER: {wrong}": False,  # only the last 1,024 characters
               "": False}
    for reply, right in replies.items():
        verdict = task.score([Response(text=reply)], record)
        assert verdict["correct"] is right, reply[:60]
        assert verdict["gold"] == gold
    for row, rows in ((0, 10**12), (-1, 198), ("0", 198)):  # an edited record: a failed check, never a crash
        assert "scoring_error" in task.score([Response(text="ANSWER: A")], {**record, "row": row, "rows": rows})
    text = task.cfg.template.format(question=doc["question"], **dict(zip("ABCD", (doc["options"][c] for c in order))))
    assert text.startswith("Answer the following multiple choice question. The last line of your response should "
                           "be of the following format: 'ANSWER: $LETTER'")
    assert f"\n{gold}) {first['Correct Answer']}" in text


# ---- MMLU-Pro -------------------------------------------------------------------------------------------------
def test_mmlu_pro_extraction_cascade_against_the_gold(data_dir):
    from glm_eval.tasks.mmlu_pro import extract_letter
    docs = documents("mmlu_pro", data_dir)
    assert len(docs) == 12032 and len({d["subject"] for d in docs}) == 14
    assert Counter(len(d["options"]) for d in docs)[10] == 9982
    doc = docs[0]
    gold = doc["gold"]
    cases = {f"Let's see. The answer is ({gold}).": gold,
             f"so the answer is {gold} because": gold,
             f"The answer is ({gold}). Later: the answer is (J).": gold,   # the first "answer is"
             f"I pick\nAnswer: {gold}\nAnswer: J": gold,                     # "answer:" within its first line
             f"Between C and {gold}, it is {gold}.": gold,                   # the last standalone letter
             "no letter here at all.": None}
    for reply, expected in cases.items():
        assert extract_letter(reply) == expected, reply
    assert task_of("mmlu_pro").parse({**doc, "options": "ABCD", "answer": "A", "question": "q"}) is None
    task = task_of("mmlu_pro", "task.options.form=chat")
    assert task.score([Response(text=f"**The answer is ({gold})**")], {"gold": gold})["correct"]


def test_mmlu_pro_prompt_forms(data_dir):
    from glm_eval.core.config import GenConfig
    from glm_eval.tasks.mmlu_pro import cot_example

    class Raw:  # what the task asks of a renderer: the text as the prompt
        format = "raw"

        def render(self, shots, question, gen_prefix=""):
            from glm_eval.core.protocol import Prompt
            return Prompt(text=question)

    gen = GenConfig(samples=1, temperature=0.0, top_p=1.0, top_k=0)
    cot = task_of("mmlu_pro")
    doc = documents("mmlu_pro", data_dir)[0]
    shots = cot.shots(doc, str(data_dir))
    assert len(shots) == 5 and {s["subject"] for s in shots} == {doc["subject"]}
    [request] = cot.requests(doc, shots, Raw(), gen, [])
    assert cot.cfg.options["form"] == "cot" and "Question:" in request.stop
    text = request.prompt.text
    assert text.startswith(f"The following are multiple choice questions (with answers) about {doc['subject']}. "
                           "Think step by step and then finish your answer with \"the answer is (X)\"")
    assert text.endswith(cot_example(doc, False)) and text.endswith("Answer: Let's think step by step.")
    assert text.count("Answer: Let's think step by step.") == 6 and "A: Let's think" not in text

    class Chat(Raw):
        format = "chat_template"
    chat = task_of("mmlu_pro")
    [request] = chat.requests(doc, shots, Chat(), gen, [])
    assert chat.cfg.options["form"] == "chat"
    assert request.prompt.text == (f"The following are multiple choice questions (with answers) about "
                                   f"{doc['subject']}. Think step by step and then output the answer in the format of "
                                   f"\"The answer is (X)\" at the end.\n\nQuestion: {doc['question']}\nOptions: A. "
                                   f"{doc['options'][0]}\nB. {doc['options'][1]}\n" +
                                   "".join(f"{'ABCDEFGHIJ'[i]}. {o}\n" for i, o in enumerate(doc["options"]) if i > 1))


# ---- IFEval ---------------------------------------------------------------------------------------------------
REPEAT = "Write a blog post about the most interesting things you have seen or ridden on public transportation."
# instruction id → (kwargs, a response that follows it, one that does not)
INSTRUCTIONS = {
    "change_case:capital_word_frequency": ({"capital_relation": "at least", "capital_frequency": 3},
                                           "THE CAT and THE DOG RUN.", "The cat runs."),
    "change_case:english_capital": ({}, "THIS IS A LONG ENGLISH SENTENCE WRITTEN IN CAPITAL LETTERS FOR THE TEST.",
                                    "This is a long English sentence written in mixed case for the test."),
    "change_case:english_lowercase": ({}, "this is a long english sentence written in lowercase letters for the test.",
                                      "This Is A Long English Sentence Written In Title Case For The Test."),
    "combination:repeat_prompt": ({"prompt_to_repeat": REPEAT}, REPEAT + " The tram, mostly.",
                                  "The tram, mostly. " + REPEAT),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "First answer.\n******\nFirst answer."),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Send it to [address] by [date].",
                                               "Send it to [address]."),
    "detectable_content:postscript": ({"postscript_marker": "P.P.S"}, "Hello.\nP.P.S. Bye.", "Hello. Bye."),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Maybe, who knows."),
    "detectable_format:json_format": ({}, "```json\n{\"a\": 1}\n```", "a: 1"),
    "detectable_format:multiple_sections": ({"section_spliter": "Section", "num_sections": 2},
                                            "Section 1\nfoo\nSection 2\nbar", "Section 1\nfoo"),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* one\n* two", "* one\n* two\n* three"),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*one* and *two*", "*one* only"),
    "detectable_format:title": ({}, "<<My Title>>\nText.", "My Title\nText."),
    "keywords:existence": ({"keywords": ["atlantis", "constable"]}, "The constable of Atlantis.", "The constable."),
    "keywords:forbidden_words": ({"forbidden_words": ["field", "thanks"]}, "All good here.", "Thanks for the notes."),
    "keywords:frequency": ({"relation": "at least", "keyword": "synonyms", "frequency": 2},
                           "Synonyms and more synonyms.", "Synonyms once."),
    "keywords:letter_frequency": ({"let_relation": "less than", "letter": "t", "let_frequency": 2}, "a cat",
                                  "a tattoo"),
    "language:response_language": ({"language": "fr"}, "Bonjour, je m'appelle Marie et j'habite à Paris depuis dix "
                                   "ans avec ma famille et mes deux chats.", "Hello, my name is Marie and I have "
                                   "lived in Paris for ten years with my family and my two cats."),
    "length_constraints:nth_paragraph_first_word": ({"first_word": "president", "num_paragraphs": 2,
                                                     "nth_paragraph": 2}, "Intro text.\n\nPresident Lincoln led.",
                                                    "Intro text.\n\nThe president led."),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "One.\n***\nTwo.", "One.\n***\nTwo.\n***\nThree."),
    "length_constraints:number_sentences": ({"relation": "less than", "num_sentences": 3}, "One. Two.",
                                            "One. Two. Three. Four."),
    "length_constraints:number_words": ({"relation": "at least", "num_words": 5}, "one two three four five six",
                                        "one two"),
    "punctuation:no_comma": ({}, "No commas here.", "Yes, commas."),
    "startend:end_checker": ({"end_phrase": "Is there anything else I can help with?"},
                             "Done. Is there anything else I can help with?",
                             "Is there anything else I can help with? Done."),
    "startend:quotation": ({}, "\"All of it quoted.\"", "Not quoted."),
}


def test_ifeval_every_instruction_type_passes_and_fails(data_dir):
    from glm_eval.scoring.ifeval import check_instructions, registry
    assert set(INSTRUCTIONS) == set(registry())  # all 25 types
    used = Counter(i for d in documents("ifeval", data_dir) for i in d["instruction_ids"])
    assert set(used) == set(INSTRUCTIONS) and sum(used.values()) == 834
    for instruction, (kwargs, follows, breaks) in INSTRUCTIONS.items():
        assert check_instructions(1, "p", follows, [instruction], [kwargs]) == ([True], [True]), instruction
        assert check_instructions(1, "p", breaks, [instruction], [kwargs])[0] == [False], instruction


def test_ifeval_loose_forgives_markdown_and_a_first_or_last_line(data_dir):
    from glm_eval.scoring.ifeval import check_instructions
    cases = {  # strict fails, loose passes
        "detectable_format:json_format": ({}, "Here is the JSON you asked for:\n{\"a\": 1}"),      # first line
        "startend:quotation": ({}, "\"All of it quoted.\"\nHope this helps!"),                      # last line
        "startend:end_checker": ({"end_phrase": "Any other questions?"}, "Done. **Any other questions?**"),  # "*"
    }
    for instruction, (kwargs, response) in cases.items():
        strict, loose = check_instructions(1, "p", response, [instruction], [kwargs])
        assert (strict, loose) == ([False], [True]), instruction
    # an empty reply follows nothing
    assert check_instructions(1, "p", "   ", ["punctuation:no_comma"], [{}]) == ([False], [False])
    # the hub pads kwargs with every other instruction's keys as None
    assert check_instructions(1, "p", "No commas.", ["punctuation:no_comma"], [{"num_words": None}]) == ([True], [True])


def test_ifeval_key_2785_and_the_two_revisions(data_dir):
    from glm_eval.scoring.ifeval import check_instructions
    doc = next(d for d in documents("ifeval", data_dir) if d["key"] == 2785)
    assert "at least 3 placeholders" in doc["question"]  # Google's current revision
    old = doc["question"].replace("at least 3 placeholders", "at least one placeholder")
    good = "*Torii* gates, *honden* halls and *haiden* halls, at [place], on [date], with [name]."
    bad = "*Torii* gates, *honden* halls and *haiden* halls, at [place]."
    for prompt in (doc["question"], old):  # the checker reads the kwargs, which did not change
        assert check_instructions(2785, prompt, good, doc["instruction_ids"], doc["kwargs"])[0] == [True, True]
        assert check_instructions(2785, prompt, bad, doc["instruction_ids"], doc["kwargs"])[0] == [True, False]


# ---- suites and the grid --------------------------------------------------------------------------------------
def test_suites_carry_the_published_rows():
    glm45 = compose_config(["suite=glm-4.5-report", "task=aime24"]).suite
    assert list(glm45.tasks) == ["mmlu_pro", "aime24", "math500", "gpqa_diamond", "ifeval", "bfcl"]
    assert dict(glm45.published["GLM-4.5"]) == {"mmlu_pro": 84.6, "aime24": 91.0, "math500": 98.2,
                                                "gpqa_diamond": 79.1, "ifeval": 86.1, "bfcl_overall": 77.8}
    assert dict(glm45.published["GLM-4.5-Air"])["ifeval"] == 86.3
    z1 = compose_config(["suite=glm-z1-report", "task=aime24"]).suite
    assert dict(z1.published["GLM-Z1-32B-0414"]) == {"aime24": 80.8, "aime25": 63.6, "gpqa_diamond": 66.1,
                                                     "ifeval": 84.5, "bfcl_overall": 70.5}
    assert dict(z1.published["GLM-4-32B-0414"])["bfcl_overall"] == 69.6


def test_grid_shows_avg_at_n_spread_cut_off_and_a_delta_per_model(tmp_path):
    from glm_eval.analysis.grid import build_grid, write_table
    suite = OmegaConf.to_container(compose_config(["suite=glm-z1-report", "task=aime24"]).suite)
    runs = [{"model": "glm-z1-9b-0414", "task": "aime24", "score": 0.75, "spread": 0.031,
             "reasoning": {"cut_off_share": 0.125}, "finished_at": "1"},
            {"model": "glm-z1-9b-0414", "task": "ifeval", "score": 0.8, "finished_at": "1"},
            {"model": "other", "task": "ifeval", "score": 0.5, "finished_at": "1"},
            {"model": "glm-z1-9b-0414", "task": "bfcl", "score": 0.6, "finished_at": "1"}]
    grid = build_grid(tmp_path, runs, suite)
    # BFCL: the AST headline and the published overall (incl. multi-turn) side by side, never a Δ between them
    assert grid.loc["glm-z1-9b-0414", "BFCL AST"] == pytest.approx(60.0)
    assert grid.loc["GLM-Z1-9B-0414 (published)", "BFCL overall (incl. multi-turn)"] == pytest.approx(66.6)
    delta = grid.loc["Δ glm-z1-9b-0414 − GLM-Z1-9B-0414"]
    assert pd.isna(delta["BFCL AST"]) and pd.isna(delta["BFCL overall (incl. multi-turn)"])
    assert grid.loc["Δ glm-z1-9b-0414 − GLM-Z1-9B-0414", "AIME24"] == pytest.approx(75.0 - 76.4)
    assert grid.loc["Δ glm-z1-9b-0414 − GLM-Z1-9B-0414", "IFEval"] == pytest.approx(80.0 - 81.9)
    assert not any(str(name).startswith("Δ other") for name in grid.index)  # no published row of its name
    write_table(grid, tmp_path / "grid", decimals=1)
    table = (tmp_path / "grid.md").read_text()
    assert "| glm-z1-9b-0414 | 75.0 ± 3.1 | 12.5 |" in table and "AIME24 ±" not in table.splitlines()[0]
    assert "AIME24 ±" in (tmp_path / "grid.csv").read_text()


# ---- end to end on the real small model -----------------------------------------------------------------------
@pytest.mark.parametrize("task,extra", [("gpqa_diamond", ["gen.temperature=0.7", "gen.samples=2"]),
                                        ("mmlu_pro", []), ("ifeval", []), ("aime25", [])])
def test_task_end_to_end_on_the_real_model(task, extra, data_dir, tmp_path):
    metrics = run_eval(f"task={task}", "limit=3", "gen.max_new_tokens=40", *extra, f"data_dir={data_dir}",
                       f"results_dir={tmp_path}", f"output_dir={tmp_path / task}", "progress=false")
    records = [json.loads(line) for line in open(tmp_path / task / "samples.jsonl", encoding="utf-8")]
    assert len(records) == 3 and metrics["n"] == 3 and metrics["failed"] == 0
    scorer = task_of(task, *[o for o in extra if o.startswith("task.")])
    if task == "gpqa_diamond":  # two samples each, each with its own option order and gold letter
        docs = documents(task, data_dir)
        for record in records:
            assert [s["gold"] for s in record["samples"]] == \
                ["ABCD"[scorer.permutation(docs[record["doc_id"]], k).index(0)] for k in range(2)]
            assert [s["extracted"] for s in record["samples"]] == [scorer.extract(o) for o in record["outputs"]]
        assert metrics["metric"].startswith("avg@2") and metrics["score"] == pytest.approx(
            sum(s["correct"] for r in records for s in r["samples"]) / 6)
        assert set(metrics["subjects"]) <= {"Chemistry", "Physics", "Biology"}
    elif task == "ifeval":
        from glm_eval.scoring.ifeval import check_instructions
        for record in records:
            strict, loose = check_instructions(record["key"], record["question"], record["output"],
                                               record["instruction_ids"], record["kwargs"])
            assert record["strict"] == strict and record["loose"] == loose
        assert metrics["score"] == metrics["prompt_strict"] == pytest.approx(
            sum(all(r["strict"]) for r in records) / 3)
        assert metrics["instruction_loose"] == pytest.approx(
            sum(v for r in records for v in r["loose"]) / sum(len(r["loose"]) for r in records))
    else:  # one greedy sample: the model names no sampling, so the task's avg@n default falls back
        for record in records:
            assert record["extracted"] == scorer.extract(record["output"])
        assert metrics["score"] == pytest.approx(sum(r["correct"] for r in records) / 3)
        assert "samples" not in metrics


@pytest.mark.parametrize("overrides, samples, temperature", [
    (["task=gpqa_diamond", "model=glm-z1-9b-0414"], 8, 0.6),    # the published avg@8 with the card's sampling
    (["task=aime24", "model=glm-4.7"], 32, 1.0),
    (["task=aime24", "model=glm-4.7", "gen.samples=4"], 4, 1.0),
    (["task=aime24", "model=glm-4.7", "gen.preset=none"], 1, 0.0),  # asked for greedy: one sample
    (["task=gpqa_diamond", "model=smollm2-135m-instruct"], 1, 0.0),  # no card sampling: greedy, said in a warning
    (["task=ifeval", "model=glm-z1-9b-0414"], 1, 0.6),
])
def test_a_task_declares_its_published_sampling(overrides, samples, temperature):
    from glm_eval.engine.run import settle_generation
    cfg = compose_config(overrides)
    settle_generation(cfg)
    assert (cfg.gen.samples, cfg.gen.temperature) == (samples, temperature)
