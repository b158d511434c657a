"""Answers read from generated text and compared with the gold (pure functions, plus one helper process).

MATH / AGIEval cloze: `extract_math_answer`, then `math_equal` = normalised string equality, else math-verify in a
persistent worker process killed on a wall-clock timeout (sympy can hang where math-verify's SIGALRM timeout cannot
reach, and that timeout only works in a main thread). BBH: `extract_bbh_answer`, `bbh_match`. Multiple choice in
generate mode: `extract_choice`. Rules learned from lm-eval (minerva_math, agieval) and OpenCompass
(math_postprocess_v2, bbh_*_postprocess, first_option_postprocess); not copied.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import re
import sys
import threading
import types
import unicodedata
from decimal import Decimal, InvalidOperation

# ---------------------------------------------------------------- MATH / AGIEval cloze: extraction
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_STATED = re.compile(r"(?:answer is|答案是|答案为|答案\s*[:：])\s*[:：]?", re.IGNORECASE)
_SPAN = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} / \\fbox{...} (or "\\boxed 5"); a truncated last box is skipped."""
    for m in reversed(list(_BOX.finditer(text))):
        i = j = len(text) - len(text[m.end():].lstrip(" "))
        if text[i:i + 1] == "{":
            depth = 0
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j].strip()
                j += 2 if text[j] == "\\" else 1  # \{ and \} are literal braces, not grouping
        elif i > m.end():  # "\boxed 5": the token runs to the closing "$" or the end of the line
            token = re.match(r"[^$\n]*", text[i:]).group().strip().rstrip(".")
            if token:
                return token
    return None


def _span_text(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None).strip()


def _stated(rest: str) -> str:
    """The answer in "answer is <rest>": a leading math span (unless ";" joins more, as in gaokao "$5$;$10$"),
    else the rest of the sentence without its $ delimiters."""
    rest = rest.lstrip().replace("**", "")
    span = _SPAN.match(rest)
    if span and not re.match(r"\s*[;；]", rest[span.end():]):
        return _span_text(span)
    rest = re.split(r"\.(?=\s|$)|[。，\n]|,?\s+(?:since|because|as|which|where)\b", rest, 1)[0]  # not at "3.5"
    return re.sub(r"(?<!\\)\$", "", rest).strip().rstrip(".")


def extract_math_answer(output: str) -> str | None:
    if boxed := last_boxed(output):
        return boxed
    if stated := [a for a in (_stated(output[m.end():]) for m in _STATED.finditer(output)) if a]:
        return stated[-1]
    if spans := [a for a in map(_span_text, _SPAN.finditer(output)) if a]:
        return spans[-1]
    numbers = _NUMBER.findall(output)
    return numbers[-1].replace(",", "") if numbers else None


# ---------------------------------------------------------------- MATH: comparison
_DROP = [r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\ ", "~", r"\displaystyle", r"\$", "$", r"^{\circ}",
         r"^\circ", "°", r"\%", "%", r"\mathrm{th}", "{,}", r"\bigl", r"\bigr"]
_SWAP = [("dfrac", "frac"), ("tfrac", "frac"), (r"\mbox", r"\text"), (r"\textbf", r"\text"), (r"\mathrm", r"\text"),
         ("bmatrix", "pmatrix"), (r"\leq", r"\le"), (r"\geq", r"\ge"), (r"\neq", r"\ne"),
         (r"\varnothing", r"\emptyset"), (r",\text{and}", ","), (r"\text{and}", ",")]
_UNIT = re.compile(r"\\text\{\s*(?:[a-zA-Z]+\s*)+\}(?:\^\{?[23]\}?)?$")  # a trailing "\text{ square inches}^2"
_SHORTHAND = [(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}"), (r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}"),  # \frac12
              (r"\\frac(\d)\{", r"\\frac{\1}{"), (r"\\sqrt(\w)", r"\\sqrt{\1}"),  # \frac9{19}, \sqrt2
              (r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}"), (r"^\(([A-Z])\)$", r"\1")]  # 1/2; MC gold "\text{(C)}"


def _normalize(answer: str) -> str:
    """Minerva/Hendrycks-style canonical form for the quick string-equality check (both sides, same rules)."""
    s = answer.strip()
    if s.startswith(("\\boxed", "\\fbox")) and last_boxed(s) is not None:
        s = last_boxed(s)
    s = re.sub(r"^(\\\(|\\\[)|(\\\)|\\\])$", "", s).strip()
    s = re.sub(r"^(-?\d+(?:\.\d+)?)\s+(?:[a-zA-Z]+\s*)+$", r"\1", s)  # "5 cm" -> "5"
    for old, new in [(d, "") for d in _DROP] + _SWAP:
        s = s.replace(old, new)
    if re.search(r"[\d}]\s*" + _UNIT.pattern, s):  # a unit after a value: drop it
        s = _UNIT.sub("", s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"^\\?[a-zA-Z]+(?:_\{?\w+\}?)?\s*(?:=|\\in)\s*(?=[^=]*$)", "", s)  # "x = 3", "x \in [1,2]": the value
    s = re.sub(r"\s+", "", s).rstrip(".").rstrip("\\")
    for pattern, replacement in _SHORTHAND:
        s = re.sub(pattern, replacement, s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 10,080 (from "10,\!080")
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d*\.?\d+", s):  # plain numbers by value: "5.0" == "5", ".5" == "0.5"
        s = format(Decimal(s).normalize(), "f")
    return s


def _serve(conn, parent: int, parent_is_main_thread: bool) -> None:
    """The worker: answers (prediction, gold) with a bool until its pipe closes or its parent dies."""
    if parent_is_main_thread:  # PDEATHSIG fires when the *thread* that started us ends: only trust a main thread
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: also reaches us inside a C-level hang
        except (OSError, AttributeError):  # not Linux
            pass

    def watchdog() -> None:  # everywhere else: poll for the parent (needs the GIL now and then)
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(0)
    threading.Thread(target=watchdog, daemon=True).start()
    import logging
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # "timeout disabled": the parent times us
    from math_verify import parse, verify  # a failure here reaches the parent as EOF: it raises RuntimeError
    conn.send("ready")

    def read(answer: str) -> list:  # gold and prediction as math: an escaped \$ would read as a delimiter
        answer = answer.replace(r"\$", "").strip()
        return parse(answer if "$" in answer or "\\boxed" in answer else f"${answer}$", parsing_timeout=None)
    while True:
        try:
            prediction, gold = conn.recv()
        except (EOFError, OSError):
            return
        try:
            ok = verify(read(gold), read(prediction), timeout_seconds=None)
        except Exception:  # noqa: BLE001 - unparsable means not equal
            ok = False
        conn.send(bool(ok))


_CTX = multiprocessing.get_context("spawn")  # not fork: the parent may hold threads, CUDA state, big models
_lock = threading.RLock()
_worker: tuple | None = None  # (process, connection)


def _start_worker() -> tuple:
    here, there = _CTX.Pipe()
    process = _CTX.Process(target=_serve, name="glm-eval-math-verify", daemon=True,
                           args=(there, os.getpid(), threading.current_thread() is threading.main_thread()))
    main, sys.modules["__main__"] = sys.modules["__main__"], types.ModuleType("__main__")
    try:  # hide __main__: spawn would re-run the caller's script in the child (an unguarded one recurses)
        process.start()
    finally:
        sys.modules["__main__"] = main
    there.close()
    try:
        message = here.recv() if here.poll(120) else "no reply within 120 s"
    except (EOFError, OSError) as e:
        message = f"exited ({e!r})"
    if message != "ready":
        process.kill()
        raise RuntimeError(f"math-verify worker did not start: {message}")
    return process, here


def close_math_worker() -> None:
    """Stop the math-verify worker (the next `math_equal` that needs one starts a fresh one)."""
    global _worker
    with _lock:
        if _worker is not None:
            (process, conn), _worker = _worker, None
            conn.close()
            process.kill()
            process.join(5)


def _forget_worker_after_fork() -> None:  # a forked child must neither share nor kill its parent's worker
    global _worker, _lock
    if _worker is not None:
        _worker[1].close()  # only this process's copy of the pipe
    _worker, _lock = None, threading.RLock()


atexit.register(close_math_worker)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_after_fork)


def _verify(prediction: str, gold: str, timeout: float) -> bool:
    global _worker
    with _lock:  # one comparison at a time on the one worker
        for _ in range(2):  # a worker that died under us (not by our timeout) gets one fresh retry
            if _worker is None or not _worker[0].is_alive():
                close_math_worker()
                _worker = _start_worker()
            try:
                _worker[1].send((prediction, gold))
                if _worker[1].poll(timeout):
                    return bool(_worker[1].recv())
            except (EOFError, OSError):
                close_math_worker()
                continue
            close_math_worker()  # timed out: the worker is stuck, kill it; counts as not equal
            return False
    return False


def math_equal(prediction: str | None, gold: str, timeout: float = 5.0) -> bool:
    if prediction is None or not prediction.strip():
        return False
    return _normalize(prediction) == _normalize(gold) or _verify(prediction, gold, timeout)


def math_equal_many(pairs: list[tuple[str | None, str]], timeout: float = 5.0) -> list[bool]:
    return [math_equal(prediction, gold, timeout) for prediction, gold in pairs]


# ---------------------------------------------------------------- BBH
_BBH = re.compile(r"the (?:final )?answer is\s*:?", re.IGNORECASE)


def extract_bbh_answer(output: str) -> str | None:
    hits = list(_BBH.finditer(output))
    if not hits:
        return None
    s = output[hits[-1].end():].strip().split("\n", 1)[0]
    s = re.split(r"\.(?=\s|$)|。", s, 1)[0]  # the sentence ends at ". " (not at the point of "3.5")
    s = re.sub(r"\*\*|__|`", "", s).strip()
    s = re.sub(r"^\$?\\boxed\{(.*)\}\$?$", r"\1", s)
    s = s.strip(" \t\"'“”‘’$").rstrip(".,;:!。 ").strip(" \"'“”‘’")
    return s or None


def _canon(text: str) -> str:
    s = re.sub(r"\s+", " ", text.casefold().replace(",", " ")).strip(" .\"'")
    return re.sub(r"\s", "", s) if re.fullmatch(r"[\s\[\](){}<>]+", s) else s  # dyck: "] )" == "])"


def bbh_match(extracted: str | None, target: str) -> bool:
    if extracted is None:
        return False
    e, t = extracted.strip().rstrip(".:;!").strip(), target.strip()
    if option := re.fullmatch(r"\(([A-Z])\)", t):  # "(A)", "A", "(a)", "A. text", "(A) text"; never "(A) or (B)"
        m = re.fullmatch(r"\(([A-Za-z])\)(?:\s+(.*))?|([A-Z])(?:[.:)]\s*(.*))?|([a-z])", e, re.DOTALL)
        if not m:
            return False
        letter, rest = m.group(1) or m.group(3) or m.group(5), m.group(2) or m.group(4) or ""
        if re.search(r"\([A-Za-z]\)", rest) or re.match(r"(?:or|and)\b|[,/&]", rest, re.IGNORECASE):
            return False
        return letter.upper() == option.group(1)
    if re.fullmatch(r"-?\d+(?:\.\d+)?", t):  # numbers by value; "8 objects" counts as 8
        try:
            return Decimal(re.sub(r"(?<=\d)(?:\s+[A-Za-z]+)+$", "", e).replace(",", "")) == Decimal(t)
        except InvalidOperation:
            return False
    return _canon(e) == _canon(t)


# ---------------------------------------------------------------- multiple choice read from generated text
def extract_choice(output: str, letters: str = "ABCD", multi: bool = False) -> str | None:
    text = unicodedata.normalize("NFKC", output).strip()  # full-width "Ｂ", "（B）", "：" -> ASCII
    one = f"[{re.escape(letters)}]"
    sep = r"(?:\s*(?:[、,;/&]|和|与|及|以及|and)\s*|\s*)"
    pick = rf"({one}(?:{sep}{one})*)" if multi else f"({one})"
    word = r"(?![A-Za-z])"  # a letter, not the start of a word
    alone = word + r"(?!(?<=A)\s+(?!is\b|was\b)[a-z])"  # ...nor the article in "A car ..." (without a cue)
    cue = (r"(?:答案(?:应该|应|就)?(?:是|为|选)?|正确(?:答案|选项)(?:是|为|应是)?|故选|应选|所以选|因此选"
           r"|(?i:answer(?:\s+(?:is|should be|would be))?|correct (?:option|choice)(?: is)?))")
    tiers = [rf"{cue}[\s:*]*(?:选项|(?i:option|choice))?\s*\(?{pick}\)?\**{word}",  # explicit answer patterns
             rf"(?:选\s*|\*\*\(?){pick}\)?{word}"  # "选B", "**B**", "B is correct"
             rf"|(?<![A-Za-z]){pick}\)?\s+is (?:the )?(?:correct|right)",
             rf"^[(\[*\s]*{pick}{alone}",  # a leading option letter: "B. Paris", "(B)", "B"
             rf"(?<![A-Za-z]){pick}{alone}"]  # the last standalone option letter
    for tier in tiers:
        if found := [next(g for g in m.groups() if g) for m in re.finditer(tier, text)]:
            return "".join(sorted(set(re.findall(one, found[-1])))) if multi else found[-1]
    return None
