"""AGIEval v1: human exam questions (Zhong et al. 2023), 21 subsets, 8,269 questions (English and Chinese).

Data: `agieval/v1/<subset>.jsonl` (passage, question, options "(A)…", label: a letter or a list of letters,
answer for the cloze subsets) or HF `hails/agieval-<subset>` (the same prompts, pre-formatted as `query`).
Protocol (ChatGLM3 README grid, 53.7 for ChatGLM3-6B-Base: "multiple-choice, 0-shot"): AGIEval's own zero-shot
prompt (src/dataset_loader.py convert_zero_shot):
  English: "{passage}Q: {question} Answer Choices: (A)… (B)…\nA: Among A through {last}, the answer is"
  Chinese: "{passage}问题：{question} 选项：(A)… (B)…\n答案：从A到{last}, 我们应选择"
  Cloze (math, gaokao-mathcloze): "{passage}Q: {question}\nA: The answer is" / "{passage}问题：{question}\n答案："
Choice subsets are scored by task.choice_scoring (letter logits by default; tasks/choice.py); jec-qa-kd,
jec-qa-ca and gaokao-physics may have several answers. Cloze subsets are generated greedily (64 new tokens) and
compared by math equivalence (the last \\boxed{}, else a $…$ span or number; glm_eval/scoring/answers.py).
Averaging: headline macro over the 21 subsets (AGIEval's and OpenCompass's); English and Chinese averages (the
`category`) and micro are reported too. sat-en-without-passage repeats sat-en's questions, as upstream.
"""
from __future__ import annotations

from pathlib import Path

from glm_eval.tasks.choice import MultipleChoiceTask
from glm_eval.core.config import GenConfig
from glm_eval.core.protocol import Request, Response
from glm_eval.core.averaging import Average, Averaging
from glm_eval.core.files import file_sha256, read_jsonl
from glm_eval.tasks.base import load_hub_dataset

ENGLISH_CHOICE = ["lsat-ar", "lsat-lr", "lsat-rc", "logiqa-en", "sat-math", "sat-en", "aqua-rat",
                  "sat-en-without-passage", "gaokao-english"]
CHINESE_CHOICE = ["logiqa-zh", "jec-qa-kd", "jec-qa-ca", "gaokao-chinese", "gaokao-geography", "gaokao-history",
                  "gaokao-biology", "gaokao-chemistry", "gaokao-physics", "gaokao-mathqa"]
CLOZE = {"math": "English", "gaokao-mathcloze": "Chinese"}
MULTI_ANSWER = {"jec-qa-kd", "jec-qa-ca", "gaokao-physics"}
SUBSETS = ENGLISH_CHOICE + CHINESE_CHOICE + list(CLOZE)
LETTERS = "ABCDEFG"


def zero_shot_prompt(subset: str, passage: str, question: str, options: list[str]) -> str:
    """AGIEval's convert_zero_shot, including its default letter range when a row lists a single option."""
    if subset in CLOZE:
        return passage + ("Q: " + question + "\nA: The answer is" if subset == "math" else
                          "问题：" + question + "\n答案：")
    count = len(options) if len(options) != 1 else (5 if subset in ENGLISH_CHOICE else 4)
    if subset in ENGLISH_CHOICE:
        return (f"{passage}Q: {question} Answer Choices: {' '.join(options)}\n"
                f"A: Among A through {LETTERS[count - 1]}, the answer is")
    return f"{passage}问题：{question} 选项：{' '.join(options)}\n答案：从A到{LETTERS[count - 1]}, 我们应选择"


class AGIEval(MultipleChoiceTask):
    title = "AGIEval"
    shot_choices = (0,)  # its protocol has no exemplars
    averaging = Averaging(Average.macro)
    record_fields = ("gold", "letters", "multi", "cloze")

    def local_rows(self, path: Path):
        rows, bad, digest = [], [], {}
        for subset in SUBSETS:
            file = path / f"{subset}.jsonl"
            if not file.exists():
                bad.append(f"{file} missing")
                continue
            found, problems = read_jsonl(file)
            rows += [{**r, "subset": subset} if r else None for r in found]
            bad += problems
            digest[file.name] = file_sha256(file)
        return rows, bad, digest

    def hub_rows(self, split: str):
        rows, digest = [], {}
        for subset in SUBSETS:
            ds = load_hub_dataset(self.title, self.cfg, None, split, dataset=f"{self.cfg.dataset}-{subset}")
            rows += [{**r, "subset": subset} for r in ds]
            digest[f"hf:hails/agieval-{subset}/{split}"] = ds._fingerprint
        return rows, f"hf:hails/agieval-*/{split}", digest

    def parse(self, row: dict) -> dict | None:
        subset = row["subset"]
        category = "English" if subset in ENGLISH_CHOICE or CLOZE.get(subset) == "English" else "Chinese"
        doc = {"subject": subset, "category": category, "multi": subset in MULTI_ANSWER, "cloze": subset in CLOZE}
        if "query" in row:  # hails/agieval-*: AGIEval's prompt, pre-formatted
            gold = row.get("gold") or []
            choices = row.get("choices") or []
            doc.update(prompt_text=row["query"], letters=LETTERS[:len(choices)])
            doc["gold"] = (str(gold[0]) if doc["cloze"] and gold else
                           "".join(sorted(LETTERS[i] for i in gold)) if isinstance(gold, list) else "")
            return doc if doc["gold"] else None
        question, options = row.get("question"), row.get("options") or []
        if not isinstance(question, str):
            return None
        doc["prompt_text"] = zero_shot_prompt(subset, row.get("passage") or "", question, options)
        if doc["cloze"]:
            return {**doc, "gold": str(row["answer"]), "letters": ""} if row.get("answer") else None
        label = row.get("label")
        labels = list(label) if isinstance(label, (list, str)) else []  # a string may hold several letters ("AD")
        if not options or not labels or any(not isinstance(x, str) or x not in LETTERS[:len(options)] for x in labels):
            return None
        return {**doc, "gold": "".join(sorted(labels)), "letters": LETTERS[:len(options)]}

    def question_text(self, doc: dict) -> str:
        return doc["prompt_text"]

    def requests(self, doc: dict, shots: list[dict], renderer, gen: GenConfig, stop: list[str]) -> list[Request]:
        if not doc["cloze"]:
            return super().requests(doc, shots, renderer, gen, stop)
        return self.generation_requests(doc, renderer.render([], doc["prompt_text"]), gen,
                                        ["\nQ:", "\n问题：", *stop], self.cfg.options.get("cloze_tokens", 64))

    def score_all(self, answers: list[list[Response]], records: list[dict]) -> list[dict]:
        from glm_eval.scoring.answers import extract_math_answer, math_equal_many
        cloze = [i for i, r in enumerate(records) if r["cloze"]]
        extracted = [extract_math_answer(answers[i][0].text) for i in cloze]
        verdicts = dict(zip(cloze, math_equal_many([(e, records[i]["gold"]) for e, i in zip(extracted, cloze)])))
        found = dict(zip(cloze, extracted))
        return [{"extracted": found[i], "correct": verdicts[i]} if i in verdicts else self.score(a, r)
                for i, (a, r) in enumerate(zip(answers, records))]


TASK = AGIEval
