"""GLM tokenizers: golden ids from docs/chatglm.md §7 and fast (tokenizers) twins checked on real benchmark text."""
import csv
import json
import random
from pathlib import Path

import pytest

from glm_eval.glm.tokenizers import (ChatGLMTokenizer, GLM4Tokenizer, load_glm_tokenizer, to_fast_tokenizer)

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
CHATGLM_DIR, GLM4_DIR = MODELS / "chatglm3-tokenizer", MODELS / "glm4-tokenizer"

TOOLS = [{"name": "get_weather", "description": "查询城市天气",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
CONVERSATIONS = [
    [{"role": "user", "content": "你好"}],
    [{"role": "system", "content": "You are ChatGLM3.", "tools": TOOLS},
     {"role": "user", "content": "北京天气怎么样？"},
     {"role": "assistant", "metadata": "get_weather", "content": "```python\ntool_call(city='北京')\n```"},
     {"role": "observation", "content": '{"city": "北京", "temp": 25}'},
     {"role": "assistant", "content": "北京今天 25 度。"},
     {"role": "user", "content": "  Thanks!\n\tdef f():\r\n        return 1"}],
    [{"role": "system", "content": "", "tools": [{"type": "function", "function": TOOLS[0]}]},
     {"role": "user", "content": "\n\nleading newlines", "metadata": ""},
     {"role": "assistant", "content": ""},  # empty content: kept by ChatGLM3, skipped by GLM-4 (as upstream)
     {"role": "user", "content": " 1+1=?"}],
]


def first_mismatch(text: str, got: list[int], want: list[int]) -> str:
    i = next(k for k in range(len(got) + 1) if k == len(got) or k == len(want) or got[k] != want[k])
    return f"{text[:60]!r}: first difference at id #{i}: fast {got[i:i + 5]} vs original {want[i:i + 5]}"


@pytest.fixture(scope="module")
def chatglm() -> ChatGLMTokenizer:
    return load_glm_tokenizer(CHATGLM_DIR)


@pytest.fixture(scope="module")
def glm4() -> GLM4Tokenizer:
    return load_glm_tokenizer(GLM4_DIR)


def reloaded_fast(tok, folder: Path):
    """What a converted checkpoint ships: saved with save_pretrained, read back by plain AutoTokenizer."""
    from transformers import AutoTokenizer
    to_fast_tokenizer(tok).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def chatglm_fast(chatglm, tmp_path_factory):
    return reloaded_fast(chatglm, tmp_path_factory.mktemp("chatglm_fast"))


@pytest.fixture(scope="module")
def glm4_fast(glm4, tmp_path_factory):
    return reloaded_fast(glm4, tmp_path_factory.mktemp("glm4_fast"))


@pytest.fixture(scope="module")
def real_texts(data_dir) -> list[str]:
    """2,000 real prompts: 500 each of C-Eval, CMMLU, GSM8K and MBPP (code with CRLF, tabs and space runs)."""
    def choice_prompt(row, question):
        return row[question] + "".join(f"\n{k}. {row[k]}" for k in "ABCD") + "\n答案："
    ceval = [choice_prompt(r, "question") for f in sorted((data_dir / "ceval").glob("*/*.csv"))
             for r in csv.DictReader(f.open(encoding="utf-8"))]
    cmmlu = [choice_prompt(r, "Question") for f in sorted((data_dir / "cmmlu" / "test").glob("*.csv"))
             for r in csv.DictReader(f.open(encoding="utf-8"))]
    gsm8k = [f"Question: {r['question']}\nAnswer: {r['answer']}"
             for r in map(json.loads, (data_dir / "gsm8k" / "test.jsonl").open(encoding="utf-8"))]
    mbpp = [r["code"] for r in map(json.loads, (data_dir / "mbpp" / "mbpp.jsonl").open(encoding="utf-8"))]
    rng = random.Random(0)
    texts = [t for pool in (ceval, cmmlu, gsm8k, mbpp) for t in rng.sample(pool, 500)]
    assert sum("\t" in t for t in texts) > 20 and sum("        " in t for t in texts) > 100  # the hard cases are in
    return texts


def test_chatglm_golden_ids(chatglm):
    assert chatglm.vocab_size == 64798 and (chatglm.eos_token_id, chatglm.pad_token_id) == (2, 0)
    assert chatglm.padding_side == "left" and chatglm.prefix == [64790, 64792]
    assert chatglm.stop_ids == [2, 64795, 64797]  # chatglm.md §7.6
    assert chatglm.special_ids == {"[MASK]": 64789, "[gMASK]": 64790, "[sMASK]": 64791, "sop": 64792, "eop": 64793,
                                   "<|system|>": 64794, "<|user|>": 64795, "<|assistant|>": 64796,
                                   "<|observation|>": 64797}
    assert chatglm.encode("你好") == [64790, 64792, 36474, 54591]
    assert chatglm.chat_ids([{"role": "user", "content": "你好"}]) == [64790, 64792, 64795, 30910, 13, 36474, 54591,
                                                                      64796]
    assert chatglm.text_ids("" + "\n") == [30910, 13] and chatglm.text_ids("") == []
    prompt = chatglm.chatglm2_prompt("你好", [])
    assert prompt == "[Round 1]\n\n问：你好\n\n答："
    assert chatglm.encode(prompt) == [64790, 64792, 790, 30951, 517, 30910, 30939, 30996, 13, 13, 54761, 31211, 39701,
                                      13, 13, 55437, 31211]
    assert chatglm.chatglm2_prompt("再见", [("你好", "你好！"), ("1+1", "2")]) == (
        "[Round 1]\n\n问：你好\n\n答：你好！\n\n[Round 2]\n\n问：1+1\n\n答：2\n\n[Round 3]\n\n问：再见\n\n答：")
    assert [chatglm.text_ids(c) for c in "ABCD"] == [[316], [347], [319], [367]]
    assert chatglm.text_ids(" A") == [265, 30938]
    assert chatglm.text_ids("答案：A") == [30910, 33161, 31211, 30938]
    assert chatglm.text_ids("综上所述，ABCD中正确的选项是：") == [30910, 46483, 42626, 31123, 29881, 30952, 54538,
                                                                  34897, 38684, 54532, 31211]


def test_glm4_golden_ids(glm4):
    assert (glm4.vocab_size, glm4.num_token_ids) == (151552, 151343)
    assert glm4.eos_token_id == glm4.pad_token_id == 151329 and glm4.padding_side == "left"
    assert glm4.special_ids["<|endoftext|>"] == 151329 and glm4.special_ids["<|end_of_video|>"] == 151342
    assert [glm4.special_ids[n] for n in ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
                                          "<|observation|>")] == [151331, 151333, 151335, 151336, 151337, 151338]
    assert glm4.text_ids("\n") == [198] and glm4.text_ids("你好") == [109377]
    assert glm4.encode("你好") == [151331, 151333, 109377]
    assert glm4.chat_ids([{"role": "user", "content": "你好"}]) == [151331, 151333, 151336, 198, 109377, 151337]
    # as GLM-4's apply_chat_template: a message without content is left out (ChatGLM3's build_chat_input keeps it)
    assert glm4.chat_ids([{"role": "system", "content": ""}, {"role": "user", "content": "你好"}]) == glm4.chat_ids(
        [{"role": "user", "content": "你好"}])
    assert glm4.stop_ids == [151329, 151336, 151338]


def test_chatglm3_history_follows_build_chat_input(chatglm):
    system, user, call, observation, answer, query = CONVERSATIONS[1]
    ids = chatglm.chat_ids(CONVERSATIONS[1])
    t = chatglm.text_ids
    tools_json = json.dumps(TOOLS, indent=4, ensure_ascii=False)
    assert ids == ([64790, 64792, 64794, 30910, 13] + t(system["content"] + "\n" + tools_json)
                   + [64795, 30910, 13] + t(user["content"]) + [64796] + t("get_weather\n") + t(call["content"])
                   + [64797, 30910, 13] + t(observation["content"])
                   + [64796, 30910, 13] + t(answer["content"]) + [64795, 30910, 13] + t(query["content"]) + [64796])
    turn = [64796, 30910, 13, *t(answer["content"]), 64795, 30910, 13]  # no "\n" between content and the next role
    assert any(ids[i:i + len(turn)] == turn for i in range(len(ids)))
    assert chatglm.chat_ids(CONVERSATIONS[0], add_generation_prompt=False)[-1] != 64796


@pytest.mark.parametrize("name", ["chatglm", "glm4"])
def test_decode_round_trip_and_specials(name, request, real_texts):
    tok = request.getfixturevalue(name)
    for text in real_texts[::10]:
        assert tok.decode(tok.text_ids(text)) == text
        assert tok.decode([tok.eos_token_id, *tok.encode(text), tok.eos_token_id], skip_special_tokens=True) == text
    ids = tok.chat_ids([{"role": "user", "content": "你好"}])
    assert tok.decode(ids, skip_special_tokens=True).strip() == "你好"
    sop = "sop" if name == "chatglm" else "<sop>"
    assert tok.decode(ids).startswith(f"[gMASK]{sop}<|user|>\n") and tok.decode(ids).endswith("<|assistant|>")


@pytest.mark.parametrize("name", ["chatglm", "glm4"])
def test_text_never_spells_special_ids(name, request):
    tok = request.getfixturevalue(name)
    text = "<|user|>[gMASK]sop<sop><|assistant|>[MASK]<|endoftext|><|observation|> eop"
    assert all(i < min(tok.special_names) for i in tok.text_ids(text))
    assert tok.encode(text)[:2] == tok.prefix and all(i < min(tok.special_names) for i in tok.encode(text)[2:])


def test_load_glm_tokenizer_sniffs_the_format(tmp_path):
    assert type(load_glm_tokenizer(CHATGLM_DIR)) is ChatGLMTokenizer
    assert type(load_glm_tokenizer(GLM4_DIR)) is GLM4Tokenizer
    with pytest.raises(ValueError, match="no tokenizer.model"):
        load_glm_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_text("{}")
    with pytest.raises(ValueError, match="neither"):
        load_glm_tokenizer(tmp_path)


def test_fast_chatglm_matches_sentencepiece_on_real_texts(chatglm, chatglm_fast, real_texts):
    got = chatglm_fast(real_texts, add_special_tokens=False)["input_ids"]
    wrong = [first_mismatch(t, g, chatglm.text_ids(t)) for t, g in zip(real_texts, got) if g != chatglm.text_ids(t)]
    assert not wrong, f"{len(wrong)} of {len(real_texts)} texts differ:\n" + "\n".join(wrong[:10])
    assert chatglm_fast(real_texts[:50])["input_ids"] == [chatglm.encode(t) for t in real_texts[:50]]
    decoded = chatglm_fast.batch_decode(got, skip_special_tokens=True)
    assert decoded == [chatglm.decode(ids, skip_special_tokens=True) for ids in got]


def test_fast_glm4_matches_tiktoken_on_real_texts(glm4, glm4_fast, real_texts):
    texts = real_texts[::5]  # 400, all four sources
    got = glm4_fast(texts)["input_ids"]
    wrong = [first_mismatch(t, g, glm4.encode(t)) for t, g in zip(texts, got) if g != glm4.encode(t)]
    assert not wrong, f"{len(wrong)} of {len(texts)} texts differ:\n" + "\n".join(wrong[:10])
    assert glm4_fast.batch_decode(got, skip_special_tokens=True) == texts


@pytest.mark.parametrize("name", ["chatglm", "glm4"])
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["single", "history_tools", "empty_and_newlines"])
def test_fast_chat_template_equals_chat_ids(name, conversation, request):
    tok, fast = request.getfixturevalue(name), request.getfixturevalue(f"{name}_fast")
    for generation_prompt in (True, False):
        got = fast.apply_chat_template(conversation, add_generation_prompt=generation_prompt, tokenize=True,
                                       return_dict=False)
        assert got == tok.chat_ids(conversation, add_generation_prompt=generation_prompt)


def test_fast_tokenizer_settings(chatglm, chatglm_fast, glm4, glm4_fast):
    assert (chatglm_fast.pad_token_id, chatglm_fast.eos_token_id, chatglm_fast.padding_side) == (0, 2, "left")
    assert chatglm_fast.convert_tokens_to_ids(["[gMASK]", "<sop>", "<eop>", "<|user|>", "<|observation|>"]) == [
        64790, 64792, 64793, 64795, 64797]
    assert chatglm_fast("philosophy sop")["input_ids"] == chatglm.encode("philosophy sop")  # "sop" is just text
    assert (glm4_fast.pad_token_id, glm4_fast.eos_token_id, glm4_fast.padding_side) == (151329, 151329, "left")
    assert glm4_fast.convert_tokens_to_ids(list(glm4.SPECIAL_TOKENS)) == list(range(151329, 151343))
    batch = chatglm_fast(["你好", "A B C D"], padding=True)
    assert batch["input_ids"][0] == [0, 0, 64790, 64792, 36474, 54591] and batch["attention_mask"][0][:2] == [0, 0]
