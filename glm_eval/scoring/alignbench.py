"""AlignBench's rating parser (THUDM/AlignBench judge.py `post_process`, @ 5b79d4a), in linear time.

THUDM reads the judge's last one-line `{...}` dict (`re.search(r'{(.*?)}(?![^{]*{)')`), its `'key': int` pairs
(`re.findall(r"'(.*?)': (\\d+)")`) and the overall score `'综合得分'` from them, else from the first
`'综合得分': N(.NN)` anywhere; with neither the score is -1, and THUDM averages that -1 into the category mean.
Both regexes backtrack quadratically on a hostile reply (thousands of `{` or `'` on one line): the scans below give the
same matches in one pass each (tests/test_judge.py checks them against THUDM's regexes).
"""
from __future__ import annotations

import re

OVERALL = "综合得分"
_PAIR_END = re.compile(r"': (\d+)")
_SCORE = re.compile(r"'综合得分': (\d+(\.\d{1,2})?)")
UNPARSED = -1.0  # THUDM's score for a judgment it cannot read


def last_dict(text: str) -> str | None:
    """What `{(.*?)}(?![^{]*{)` captures: the first `{` of the line holding the first `}` after the text's last `{`,
    up to that `}` (None where that `}` is missing or a newline lies between)."""
    last_open = text.rfind("{")
    if last_open < 0:
        return None
    close = text.find("}", last_open)
    if close < 0:
        return None
    line_start = text.rfind("\n", 0, close) + 1
    start = text.find("{", line_start, close)
    return text[start + 1:close] if start >= 0 else None


def pairs(text: str) -> dict[str, int]:
    """What findall(r"'(.*?)': (\\d+)") gives on one line, as a dict (a later key replaces an earlier one): each pair
    starts at a quote and ends at the first `': <digits>` after it."""
    found, pos = {}, 0
    while (start := text.find("'", pos)) >= 0:
        end = _PAIR_END.search(text, start + 1)
        if end is None:
            break
        digits = end.group(1)
        if len(digits) <= 9:  # THUDM's int(); a longer run is no score (and Python refuses 4,300+ digits)
            found[text[start + 1:end.start()]] = int(digits)
        pos = end.end()
    return found


def parse_rating(judgment: str) -> tuple[dict[str, int], float]:
    """(per-dimension ratings, overall score); the score is UNPARSED (-1) where THUDM's parser finds none."""
    inside = last_dict(judgment)
    rating = pairs(inside) if inside is not None else {}
    score = rating.get(OVERALL, UNPARSED)
    if score == UNPARSED:
        found = _SCORE.search(judgment)
        score = float(found.group(1)) if found and len(found.group(1)) <= 12 else UNPARSED
    return rating, float(score)
