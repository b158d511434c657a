"""GSM8K data, prompts and answer extraction, on the real test/train files."""
import json

import pytest

from glm_eval.core.config import TaskConfig
from glm_eval.core.errors import UserError
from glm_eval.tasks.gsm8k import GSM8K, extract_answer


def gsm8k(**overrides) -> GSM8K:
    cfg = TaskConfig(name="gsm8k", dataset="openai/gsm8k", dataset_config="main", local_file="gsm8k/test.jsonl",
                     shot_local_file="gsm8k/train.jsonl", template="Q: {question}\nA:",
                     gen_prefix="Let's think step by step.", stop=["\nQ:"])
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return GSM8K(cfg)


@pytest.mark.parametrize("output, expected", [
    ("Janet sells 16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is 18.", "18"),
    ("She makes 9 * $2 = $18 every day.\n#### 18", "18"),
    ("The total cost is $1,234.00", "1234"),
    ("So she earns 18 dollars.", "18"),
    ("First 3 + 4 = 7, then 16 - 7 = 9, and 9 * 2 = 18.", "18"),  # several numbers: the last counts
    ("The answer is 18. Let me double check: 16 - 3 - 4 = 9.", "18"),  # "the answer is" beats the last number
    ("The answer is: $1,250.", "1250"),
    ("So the final answer is \\boxed{42}.", "42"),
    ("He loses 5 dollars, so the change is -5.", "-5"),
    ("Each costs 3.50, so the answer is 3.50", "3.5"),
    ("The temperature went from 5-3 degrees", "3"),  # a hyphen between numbers is not a minus sign
    ("I don't know.", None),
])
def test_extraction_on_realistic_outputs(output, expected):
    assert extract_answer(output) == expected


def test_numbers_compare_exactly():
    task = gsm8k()
    assert task.is_correct("18.00", "18")
    assert task.is_correct("1234", "1234")
    assert not task.is_correct("18.5", "18")
    assert not task.is_correct(None, "18")


def test_real_test_split_loads_with_golds(data_dir):
    docs = gsm8k().documents(str(data_dir))
    assert len(docs.docs) == 1319 and docs.malformed == 0
    assert docs.docs[0]["gold"] == "18" and docs.docs[0]["doc_id"] == 0
    assert docs.sha256["gsm8k/test.jsonl"] == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    # gold answers with thousands separators are normalised: every gold parses as a plain number
    assert all(d["gold"].lstrip("-").replace(".", "").isdigit() for d in docs.docs)


def test_malformed_rows_are_counted_not_dropped_silently(data_dir, tmp_path):
    real = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:5]
    (tmp_path / "gsm8k").mkdir()
    bad = ['{"question": "no answer field"}', "{not json", json.dumps({"question": "q", "answer": "#### twelve"})]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("\n".join(real[:2] + bad + real[2:]) + "\n")
    docs = gsm8k().documents(str(tmp_path))
    assert len(docs.docs) == 5 and docs.malformed == 3
    assert [d["doc_id"] for d in docs.docs] == [0, 1, 2, 3, 4]
    assert any("not json" in e or "Expecting" in e for e in docs.malformed_examples)


def test_missing_data_names_both_fixes(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="data_dir"):
        gsm8k().documents(str(tmp_path))
    monkeypatch.delenv("GLM_EVAL_DATA", raising=False)
    with pytest.raises(UserError) as hub_failure:  # no data_dir and no hub here
        gsm8k().documents(None)
    message = str(hub_failure.value)
    assert "data_dir=" in message and "GLM_EVAL_DATA" in message and "hub" in message and "\n" not in message


@pytest.mark.parametrize("sampling", ["fixed", "per_doc"])
def test_shots_are_deterministic_per_document(data_dir, sampling):
    task = gsm8k(shots=3, shot_sampling=sampling)
    docs = task.documents(str(data_dir)).docs[:4]
    forward = [task.shots(d, str(data_dir)) for d in docs]
    backward = [task.shots(d, str(data_dir)) for d in reversed(docs)][::-1]
    assert forward == backward and all(len(s) == 3 for s in forward)
    if sampling == "fixed":  # the train split's first three for every problem: one shared prefix
        train = task._load(str(data_dir), task.cfg.shot_local_file, task.cfg.shot_split).docs
        assert all(s == train[:3] for s in forward)
    else:
        assert forward[0] != forward[1]  # drawn per document, seeded by doc_id
    pairs, question = task.prompt(docs[0], forward[0])
    assert question.startswith("Q: Janet") and question.endswith("\nA:")
    assert all(a.startswith("Let's think step by step.") and "The answer is" in a and "<<" not in a for _, a in pairs)
