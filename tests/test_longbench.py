"""LongBench v1 as THUDM scores it: metrics on hand-worked examples, middle truncation, chat wrapper per dataset,
the published averaging, LongBench-E buckets, and the three real official sets end to end with the real small model."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import run_eval

from glm_eval.core.errors import UserError
from glm_eval.engine.overrides import compose_config
from glm_eval.glm.tokenizers import load_glm_tokenizer
from glm_eval.scoring.longbench import (classification_score, code_sim_score, count_score, dataset_score,
                                        qa_f1_score, qa_f1_zh_score, retrieval_score, retrieval_zh_score,
                                        rouge_failures, rouge_score, rouge_zh_score, sample_score)
from glm_eval.glm.prompts import PromptRenderer
from glm_eval.core.protocol import GenerationRequest, Prompt
from glm_eval.analysis.grid import longbench_columns
from glm_eval.engine.records import summarize
from glm_eval.tasks import load_task
from glm_eval.tasks.longbench import DATASETS

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
THREE = ["multi_news", "multifieldqa_zh", "passage_retrieval_zh"]


def task_config(name="longbench", *overrides):
    return compose_config([f"task={name}", *overrides]).task


@pytest.fixture(scope="module")
def chatglm3():
    return load_glm_tokenizer(MODELS / "chatglm3-tokenizer")


# ---- metrics ---------------------------------------------------------------------------------------------------
def test_english_f1_normalises_case_punctuation_and_articles():
    assert qa_f1_score("The Eiffel Tower!", "eiffel tower") == 1.0
    assert qa_f1_score("in Paris, France", "Paris") == pytest.approx(0.5)  # P 1/3, R 1
    assert qa_f1_score("", "Paris") == 0.0
    assert qa_f1_score("a the an", "the") == 0.0  # nothing left after article removal


def test_chinese_f1_on_jieba_words_without_punctuation():
    assert qa_f1_zh_score("厦门大学", "厦门大学。") == 1.0  # 。 is dropped after segmentation
    assert qa_f1_zh_score("在厦门大学举办", "厦门大学。") == pytest.approx(0.5)  # 在 / 厦门大学 / 举办: P 1/3, R 1
    assert qa_f1_zh_score("", "厦门大学。") == 0.0


def test_rouge_l_english_and_chinese():
    assert rouge_score("a b c d", "a b x y") == pytest.approx(0.5, abs=1e-6)  # LCS a b: P = R = 2/4
    assert rouge_score("the cat sat", "the cat sat") == pytest.approx(1.0, abs=1e-6)
    # jieba: 今天天气 / 很 / 好 against 今天天气 / 不错: LCS 1, P 1/3, R 1/2, F 0.4
    assert rouge_zh_score("今天天气很好", "今天天气不错") == pytest.approx(0.4, abs=1e-6)


def test_rouge_failures_score_zero_as_thudm_and_are_counted():
    before = rouge_failures.count
    assert rouge_score("", "a summary") == 0.0  # the package raises on an empty hypothesis
    long_text = " ".join(f"w{i % 50}" for i in range(1500))  # rouge 1.0.1's recursive LCS overflows the stack
    assert rouge_score(long_text, long_text) == 0.0
    assert rouge_failures.count == before + 2 and rouge_failures.last == "RecursionError"
    short = " ".join(f"w{i % 50}" for i in range(300))
    assert rouge_score(short, short) == pytest.approx(1.0, abs=1e-6)


def test_classification_keeps_thudms_remove_while_iterating_quirk():
    # matches in class order: Ind, Indiv, Individual. Removing "Ind" skips "Indiv", which survives: score 1/2
    assert classification_score("Individual", "Individual", all_classes=["Ind", "Indiv", "Individual", "Number"]) == 0.5
    assert classification_score("Number of something", "Number of something",
                                all_classes=["Number of something", "Individual"]) == 1.0
    assert classification_score("Individual", "Number of something", all_classes=["Number of something",
                                                                                 "Individual"]) == 0.0


def test_retrieval_and_count_share_of_numbers():
    assert retrieval_score("Paragraph 3, not paragraph 12", "Paragraph 3") == 0.5
    assert retrieval_score("no idea", "Paragraph 3") == 0.0
    assert retrieval_zh_score("答案是段落2和段落27", "段落27") == 0.5
    assert retrieval_zh_score("段落27", "段落27") == 1.0
    assert count_score("There are 12 unique paragraphs out of 30", "12") == 0.5


def test_code_similarity_reads_the_first_code_line():
    assert code_sim_score("\n# a comment\n```python\nx = foo(1)\ny = 2", "x = foo(1)") == 1.0
    assert code_sim_score("abcd", "abce") == 0.75  # difflib ratio 2·3/8
    assert code_sim_score("// only comments", "x = 1") == 0.0


def test_sample_score_first_line_and_best_gold():
    assert sample_score("trec", "classification", "\nLocation\nDescription", ["Location"],
                        ["Location", "Description"]) == 1.0
    assert sample_score("hotpotqa", "qa_f1", "Paris", ["London", "Paris, France"], None) == pytest.approx(2 / 3)
    assert sample_score("triviaqa", "qa_f1", "Paris\nLondon", ["London"], None) == 0.0  # second line is cut
    assert dataset_score([1.0, 0.0, 1 / 3]) == 44.44


def test_averaging_reproduces_the_published_chatglm3_table():
    task = load_task(task_config())
    published = dict(task.options["published"]["ChatGLM3-6B-32K"])
    records = [{"subject": d, "category": DATASETS[d][0], "score": published[d] / 100} for d in DATASETS]
    columns = longbench_columns(summarize(records, task))  # the one declared averaging, as a run computes it
    assert columns["Avg"] == pytest.approx(50.22, abs=0.005)  # mean of the 6 categories, not of 21 datasets (48.95)
    assert columns["Few-shot"] == pytest.approx(61.575)  # the README prints 61.2
    assert columns["Single-Doc QA"] == pytest.approx(45.825) and columns["Code"] == pytest.approx(56.21)
    assert columns["EN"] == pytest.approx(48.54, abs=0.01) and columns["ZH"] == pytest.approx(52.85, abs=0.01)
    for category in ("Summary", "Single-Doc QA", "Multi-Doc QA", "Code", "Synthetic"):
        assert round(columns[category], 1) == published[category]


def test_longbench_e_scores_length_buckets():
    task = load_task(task_config("longbench_e"))
    records = [{"subject": "qasper", "category": "Single-Doc QA", "score": s, "length": n}
               for s, n in [(1.0, 100), (0.0, 3999), (1.0, 4000), (0.5, 12000)]]
    records.append({"subject": "lcc", "category": "Code", "score": 0.25, "length": 500})
    metrics = summarize(records, task)
    block, columns = metrics["longbench"], longbench_columns(metrics)
    assert block["buckets"]["qasper"] == {"0-4k": 50.0, "4-8k": 100.0, "8k+": 50.0}
    assert block["buckets"]["lcc"] == {"0-4k": 25.0, "4-8k": None, "8k+": None}
    assert block["bucket_means"] == {"0-4k": 37.5, "4-8k": 100.0, "8k+": 50.0}
    assert columns["qasper"] == 62.5 and columns["Avg"] == (62.5 + 25.0) / 2
    assert columns["0-4k"] == 37.5 and metrics["categories"]["Code"]["score"] == 0.25


# ---- prompts ------------------------------------------------------------------------------------------------------
def test_middle_truncation_keeps_exactly_the_first_and_last_halves(chatglm3, smol, data_dir):
    text = json.loads(open(data_dir / "longbench" / "data" / "multifieldqa_zh.jsonl", encoding="utf-8")
                      .readline())["context"]
    for renderer in (PromptRenderer(chatglm3, None, "chatglm3", 1001), PromptRenderer(smol[1], None, "auto", 1001)):
        tokenizer = renderer.tokenizer
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) > 1001
        cut, before = renderer.truncate_middle(text)
        head, tail = tokenizer.decode(ids[:500]), tokenizer.decode(ids[-500:])  # int(1001 / 2) tokens each
        assert before == len(ids) and cut == head + tail
        # a byte-level BPE may split a Chinese character at the cut: that half decodes it as U+FFFD, as in pred.py
        assert text.startswith(head.rstrip("\ufffd")) and text.endswith(tail.lstrip("\ufffd"))
        assert abs(len(tokenizer.encode(cut, add_special_tokens=False)) - 1000) <= 6  # re-tokenizing drifts a little
        assert PromptRenderer(tokenizer, None, renderer.format, len(ids)).truncate_middle(text) == (text, len(ids))
    with pytest.raises(UserError, match="set model.max_input_length"):
        PromptRenderer(chatglm3, None, "chatglm3").truncate_middle(text)


def test_chat_wrapper_except_on_the_six_raw_datasets(chatglm3, data_dir):
    task = load_task(task_config("longbench", "gen.max_new_tokens=null"))
    renderer = PromptRenderer(chatglm3, None, "chatglm3", max_input_length=31500)
    gen = compose_config([]).gen
    doc = {"doc_id": 0, "context": "Question: Who wrote it ?\nType: Individual", "input": "Question: Why ?\nType:"}
    for name, max_new in (("multi_news", 512), ("passage_retrieval_zh", 32), ("trec", 64), ("samsum", 128)):
        [request] = task.requests({**doc, "subject": name}, [], renderer, gen, [])
        text = task.templates[name].format(context=doc["context"], input=doc["input"])
        if name in ("trec", "samsum"):  # raw text with the tokenizer's own [gMASK] sop
            assert list(request.prompt.token_ids) == chatglm3.encode(text)
        else:  # build_chat_input: [gMASK] sop <|user|> \n text <|assistant|>
            assert list(request.prompt.token_ids) == chatglm3.chat_ids([{"role": "user", "content": text}])
        assert request.max_new_tokens == max_new and request.temperature == 0
        assert (request.stop, request.min_new_tokens) == ((("\n",), 1) if name == "samsum" else ((), 0))


def test_an_endpoint_with_the_served_models_tokenizer_renders_as_in_process(chatglm3, data_dir):
    """model.tokenizer for a deployed ChatGLM3-6B-32K given as its tokenizer-only folder (THUDM's tokenizer.model, no
    config.json): ids, text and middle truncation as the in-process renderer. No server is asked."""
    from glm_eval.engine.run import LoadedModel
    endpoint = ["model=openai_api", "model.endpoint.url=http://127.0.0.1:9/v1", "model.endpoint.api=completions"]
    remote = LoadedModel(compose_config([*endpoint, f"model.tokenizer={MODELS / 'chatglm3-tokenizer'}",
                                         "model.prompt_format=chatglm3", "model.max_input_length=31500"])).renderer
    here = PromptRenderer(chatglm3, None, "chatglm3", max_input_length=31500)
    assert type(remote.tokenizer) is type(chatglm3) and remote.format == "chatglm3"
    task = load_task(task_config("longbench", "gen.max_new_tokens=null"))
    gen = compose_config([]).gen
    for line in open(data_dir / "longbench" / "data" / "multifieldqa_zh.jsonl", encoding="utf-8").readlines()[:2]:
        row = json.loads(line)
        doc = {"doc_id": 0, "subject": "multifieldqa_zh", "context": row["context"] * 16, "input": row["input"]}
        docs = [dict(doc), dict(doc)]
        [theirs], [ours] = (task.requests(d, [], r, gen, []) for d, r in zip(docs, (remote, here)))
        assert docs[0]["input_tokens"] == docs[1]["input_tokens"] > 31500 >= len(ours.prompt.token_ids) - 10  # cut
        assert theirs.prompt.token_ids == ours.prompt.token_ids and theirs.prompt.text == ours.prompt.text
    # a model config's name brings its checkpoint's prompt format and LongBench budget
    named = LoadedModel(compose_config([*endpoint, "model.tokenizer=chatglm3-6b-32k"])).tokenizer_source.cfg
    assert (named.path, named.prompt_format, named.max_input_length) == ("THUDM/chatglm3-6b-32k", "chatglm3", 31500)


def test_real_sets_load_with_categories_and_one_line_errors(data_dir):
    task = load_task(task_config("longbench", f"task.options.datasets=[{','.join(THREE)}]"))
    docs = task.documents(str(data_dir))
    assert docs.malformed == 0 and len(docs.docs) == 600
    assert {d["subject"]: d["category"] for d in docs.docs} == {"multi_news": "Summary",
                                                                "multifieldqa_zh": "Single-Doc QA",
                                                                "passage_retrieval_zh": "Synthetic"}
    assert docs.sha256["longbench/data/multi_news.jsonl"] == \
        "5e79ca4f3d715af95eb684c3a6beaecb8b7542b76f2a891bf8657d82084af1ad"
    assert [d["subject"] for d in task.limit(docs.docs, 2)] == [n for n in THREE for _ in range(2)]
    with pytest.raises(UserError, match="18 of 21 files missing.*task.options.datasets="):
        load_task(task_config()).documents(str(data_dir))
    with pytest.raises(UserError, match="13 of 13 files missing.*qasper_e.jsonl.*download"):
        load_task(task_config("longbench_e")).documents(str(data_dir))
    with pytest.raises(UserError, match="unknown dataset nq"):
        load_task(task_config("longbench", "task.options.datasets=[nq]"))


def test_shipped_thudm_config_files_are_verbatim(data_dir):
    shipped = Path(__file__).resolve().parents[1] / "tasks" / "longbench_config"
    for name, digest in (("dataset2prompt.json", "56d22ad4f382169c2b8a11ff4c982a4a1bea096c8152b0f0b85b64686b157c30"),
                         ("dataset2maxlen.json", "72966b3c0933e214591637fb085798c5e687ebff4ddaab5d99bbc31120532022")):
        assert hashlib.sha256((shipped / name).read_bytes()).hexdigest() == digest
        assert (shipped / name).read_bytes() == (data_dir / "longbench" / "config" / name).read_bytes()
    assert set(json.loads((shipped / "dataset2prompt.json").read_text())) == set(DATASETS)


# ---- generation and end to end ------------------------------------------------------------------------------------
def test_min_new_tokens_masks_the_newline_stop_at_the_first_step_as_hf_min_length(smol):
    """samsum: pred.py stops at "\\n" but forbids it (and EOS) as the first token; this prompt's greedy first token
    is "\\n", so without the rule the reply would be empty."""
    from transformers import GenerationConfig

    from glm_eval.backends.generator import SlotGenerator
    model, tokenizer = smol
    text = "Dialogue: Anna: Are you coming?\nBen: Yes.\nSummary:"
    prompt = Prompt(text, tuple(tokenizer(text).input_ids))
    out = {}
    generator = SlotGenerator(model, tokenizer, {tokenizer.eos_token_id})
    generator.generate([GenerationRequest(prompt, 40, stop=("\n",)),
                        GenerationRequest(prompt, 40, stop=("\n",), min_new_tokens=1)], out.__setitem__)
    assert out[0].text == "" and out[0].finish_reason == "stop"
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    config = GenerationConfig(max_new_tokens=40, min_new_tokens=1, do_sample=False, pad_token_id=0,
                              eos_token_id=[tokenizer.eos_token_id, newline])
    new = model.generate(torch.tensor([prompt.token_ids]), generation_config=config)[0, len(prompt.token_ids):]
    assert out[1].text == tokenizer.decode(new, skip_special_tokens=True).split("\n")[0] != ""


def test_three_real_sets_end_to_end_with_truncation_grid_and_rescore(tmp_path, data_dir):
    results = tmp_path / "results"
    common = ["model=smollm2-135m-instruct", "limit=1", "gen.max_new_tokens=8", f"results_dir={results}",
              f"data_dir={data_dir}", "progress=false"]
    run_eval("task=longbench", f"task.options.datasets=[{','.join(THREE)}]", *common)
    run_dir = results / "smollm2-135m-instruct" / "longbench"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    block = metrics["longbench"]
    columns = longbench_columns(metrics)
    assert set(columns) == {"Avg", "Summary", "Single-Doc QA", "Synthetic", "EN", "ZH", *THREE}
    assert set(metrics["categories"]) == {"Summary", "Single-Doc QA", "Synthetic"} and "columns" not in block
    records = [json.loads(line) for line in open(run_dir / "samples.jsonl", encoding="utf-8")]
    assert [r["subject"] for r in records] == THREE
    truncated = [r for r in records if r["input_tokens"] > 7500]
    assert truncated, "an 8K model must middle-truncate the long Chinese documents"
    assert all(7500 <= r["prompt_tokens"] <= 7600 for r in truncated)  # 7,500 + the chat template's tokens
    table = (results / "longbench.md").read_text()
    assert "ChatGLM3-6B-32K (published)" in table and "Δ smollm2-135m-instruct − ChatGLM3-6B-32K" in table
    assert "LongBench" in (results / "grid.md").read_text()

    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "score": -1.0}))
    from glm_eval.engine.rescore import rescore
    assert rescore(run_dir)["score"] == pytest.approx(metrics["score"])

    one = run_eval("task=longbench/passage_retrieval_zh", *common)  # one dataset: served from the response cache
    assert (one["generated"], one["from_cache"]) == (0, 1)


def test_malformed_rows_are_counted_not_scored(tmp_path, data_dir):
    real = open(data_dir / "longbench" / "data" / "passage_retrieval_zh.jsonl", encoding="utf-8").readlines()[:2]
    no_paragraph = {**json.loads(real[1]), "answers": ["二十七"]}  # retrieval_zh_score would fail on this gold
    folder = tmp_path / "longbench" / "data"
    folder.mkdir(parents=True)
    (folder / "passage_retrieval_zh.jsonl").write_text(
        real[0] + "{not json\n" + json.dumps({"context": "x"}) + "\n" + json.dumps(no_paragraph) + "\n",
        encoding="utf-8")
    docs = load_task(task_config("longbench/passage_retrieval_zh")).documents(str(tmp_path))
    assert len(docs.docs) == 1 and docs.malformed == 3
