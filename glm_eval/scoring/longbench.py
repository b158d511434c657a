"""LongBench v1 metrics with THUDM's exact semantics (LongBench/metrics.py and eval.py; ../shared/docs/longbench.md §4-5).

Each metric takes (prediction, one gold answer, all_classes) and returns a value in [0, 1]; `sample_score` takes
the maximum over the gold answers, after the first-line cut for the few-shot sets, as eval.py does. The quirks are
kept on purpose: ROUGE's recursive LCS fails on long texts and THUDM's bare `except` turns that into 0 (we do too,
but count it), and classification removes items from the list it iterates over.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

EN_PUNCTUATION = set(string.punctuation)
ZH_PUNCTUATION = EN_PUNCTUATION | set("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.")
FIRST_LINE_DATASETS = ("trec", "triviaqa", "samsum", "lsht")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in EN_PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def normalize_zh_answer(s: str) -> str:
    """Lowercase, drop ASCII and CJK punctuation, remove all whitespace (no article removal)."""
    return "".join("".join(ch for ch in s.lower() if ch not in ZH_PUNCTUATION).split())


def f1_score(prediction: list[str], ground_truth: list[str]) -> float:
    same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(ground_truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_) -> float:
    return f1_score(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _jieba_words(text: str) -> list[str]:
    import jieba
    jieba.setLogLevel(60)  # its "Building prefix dict" notice on first use is noise in a progress bar
    return list(jieba.cut(text, cut_all=False))


def qa_f1_zh_score(prediction: str, ground_truth: str, **_) -> float:
    def tokens(text: str) -> list[str]:
        return [t for t in (normalize_zh_answer(w) for w in _jieba_words(text)) if t]
    return f1_score(tokens(prediction), tokens(ground_truth))


class RougeFailures:
    """ROUGE calls that raised: THUDM scores them 0 silently; so do we, but the count is reported."""
    count = 0
    last = ""


rouge_failures = RougeFailures()
# ROUGE 1.0.1's LCS recurses once per token, so whether a long pair hits the recursion limit depends on the stack
# depth at the call. A worker thread starts every call at the same shallow depth, whoever calls it.
_rouge_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rouge")


def _rouge_l_f(prediction: str, ground_truth: str) -> float:
    from rouge import Rouge
    return Rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"]


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    try:
        return _rouge_thread.submit(_rouge_l_f, prediction, ground_truth).result()
    except Exception as e:  # THUDM: bare except → 0.0 (empty prediction, RecursionError on long texts)
        rouge_failures.count += 1
        rouge_failures.last = type(e).__name__
        return 0.0


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    return rouge_score(" ".join(_jieba_words(prediction)), " ".join(_jieba_words(ground_truth)))


def classification_score(prediction: str, ground_truth: str, all_classes: list[str], **_) -> float:
    matches = [name for name in all_classes if name in prediction]
    for term in matches:  # THUDM removes while iterating, which skips the element after each removal: kept as is
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return 0.0 if not numbers else sum(n == target for n in numbers) / len(numbers)


GOLD_PARAGRAPH = {"retrieval": r"Paragraph (\d+)", "retrieval_zh": r"段落(\d+)"}


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    return _share_equal(prediction, re.findall(GOLD_PARAGRAPH["retrieval"], ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, **_) -> float:
    return _share_equal(prediction, re.findall(GOLD_PARAGRAPH["retrieval_zh"], ground_truth)[0])


def count_score(prediction: str, ground_truth, **_) -> float:
    return _share_equal(prediction, str(ground_truth))


def _fuzz():
    import warnings
    with warnings.catch_warnings():  # "slow pure-python SequenceMatcher": the matcher THUDM's requirements give
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz
    return fuzz


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """fuzzywuzzy's ratio (an integer 0-100) of the first line that is not a comment or a code fence."""
    line = next((s for s in prediction.lstrip("\n").split("\n") if "`" not in s and "#" not in s and "//" not in s), "")
    return _fuzz().ratio(line, ground_truth) / 100


def code_sim_backend() -> str:
    """fuzzywuzzy's matcher: difflib without python-Levenshtein (THUDM's requirements.txt), Levenshtein with it."""
    return _fuzz().SequenceMatcher.__module__


METRICS = {"qa_f1": qa_f1_score, "qa_f1_zh": qa_f1_zh_score, "rouge": rouge_score, "rouge_zh": rouge_zh_score,
           "classification": classification_score, "retrieval": retrieval_score, "retrieval_zh": retrieval_zh_score,
           "count": count_score, "code_sim": code_sim_score}


def sample_score(dataset: str, metric: str, prediction: str, answers: list, all_classes: list[str] | None) -> float:
    """eval.py's per-example score: first line for the few-shot sets, then the best over all gold answers."""
    if dataset in FIRST_LINE_DATASETS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    score = 0.0
    for gold in answers:
        score = max(score, METRICS[metric](prediction, gold, all_classes=all_classes))
    return score


def dataset_score(scores: list[float]) -> float:
    """eval.py: round(100 * mean, 2)."""
    return round(100 * sum(scores) / len(scores), 2) if scores else float("nan")


def length_bucket(length: int) -> str:
    """LongBench-E buckets of the record's `length` field (words or characters, not tokens)."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"
