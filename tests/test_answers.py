"""glm_eval.scoring.answers: extraction and comparison on realistic outputs and on the real MATH / BBH / AGIEval data."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from glm_eval.scoring import answers
from glm_eval.scoring.answers import (bbh_match, close_math_worker, extract_bbh_answer, extract_choice, extract_math_answer,
                              last_boxed, math_equal, math_equal_many)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def stop_worker_afterwards():
    yield
    close_math_worker()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- MATH: extraction
@pytest.mark.parametrize("text, expected", [
    (r"so the answer is $\boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),
    (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}$", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"first \boxed{1}, then \fbox{2} and finally \boxed{ 3 }", "3"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are literal, not grouping
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    (r"The answer is $\boxed 5$.", "5"),
    (r"we had \boxed{3} but then \boxed{\frac{1}{2", "3"),  # a truncated last box: the last complete one
    (r"\boxed{}", ""),
    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("output, expected", [
    (r"We get $x^2 = 4$, so $x = 2$. Thus the answer is $\boxed{\dfrac{1}{2}}$.", r"\dfrac{1}{2}"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),  # Minerva shots
    ("Adding them, the answer is 42.", "42"),
    ("The answer is 5, since x is positive.", "5"),
    ("答案是 5，因为 x>0", "5"),
    ("So the answer is \\(\\frac{1}{2}\\), as shown.", r"\frac{1}{2}"),
    ("So the answer is 3.5.", "3.5"),
    ("The final answer is **$(3, 4]$**.", "(3, 4]"),
    ("所以答案是$\\frac{1}{2}$。", r"\frac{1}{2}"),
    ("故答案是$5$;$10$", "5;10"),  # gaokao cloze with two blanks
    ("The answer is:\n\\[\n\\frac{7}{2}\n\\]", r"\frac{7}{2}"),
    ("Solving gives $y = 7$ and then $x = 3$", "x = 3"),  # the last math span
    ("There are 1,234 apples and 56 pears left", "56"),  # the last number
    ("The total is 1,234", "1234"),
    ("I cannot solve this.", None),
])
def test_extract_math_answer(output, expected):
    assert extract_math_answer(output) == expected


# ---------------------------------------------------------------- MATH: comparison
@pytest.mark.parametrize("prediction, gold", [
    (r"\dfrac{1}{2}", r"\frac12"), ("0.5", r"\frac{1}{2}"), (r"\frac{9}{7}", r"\dfrac{9}{7}"), ("1/2", r"\frac12"),
    ("x = 3", "3"), ("3", "x=5-2"), ("90", r"90^\circ"), (r"90^{\circ}", "90"), ("5.4", r"5.4 \text{ cents}"),
    ("864", r"864 \mbox{ inches}^2"), ("10080", r"10,\!080"), ("32348", r"\$32,\!348"), (".5", "0.50"),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"), ("(3,4]", "(3, 4]"), ("[-2,7]", r"x \in [-2,7]"),
    (r"\frac{270}{7}", r"\frac{270}7\text{ degrees}"), ("C", r"\text{(C)}"), ("Evelyn", r"\text{Evelyn}"),
    (r"\begin{bmatrix} -1 & 0 \\ 0 & -1 \end{bmatrix}", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}"),
    # the rest need math-verify
    (r"\frac{1}{\sqrt{3}}", r"\frac{\sqrt{3}}{3}"), (r"\frac{9}{5}", r"1\frac{4}{5}"), ("2(k+1)", "2k+2"),
    ("(b+2)(a+5)", "(a+5)(b+2)"), (r"1+\sqrt{19}, 1-\sqrt{19}", r"1 \pm \sqrt{19}"), ("3, 5, 7", "7, 5, 3"),
    (r"\begin{pmatrix} -\frac13 \\ \frac23 \end{pmatrix}", r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}"),
    ("0.33", r"\dfrac{33}{100}"), ("52_{8}", "52_8"), (r"\cot x", r"\frac{\cos x}{\sin x}"),
])
def test_math_equal_accepts_equivalent_answers(prediction, gold):
    assert math_equal(prediction, gold)


@pytest.mark.parametrize("prediction, gold", [
    ("4", "5"), ("(3,4)", "(3,4]"), (r"\frac{1}{2}", r"\frac{1}{3}"), ("x+1", "x-1"), ("3", "3, 5"),
    ("2", r"2\sqrt{2}"), ("east", r"\text{west}"), ("1.25", "1.26"), ("y=1", r"\frac{x^2}{16} - \frac{y^2}{9} = 1"),
    (None, "5"), ("", "5"), ("garbage }{ \\frac", "5"),
])
def test_math_equal_rejects_different_answers(prediction, gold):
    assert not math_equal(prediction, gold)


def test_math_equal_many():
    assert math_equal_many([("0.5", r"\frac12"), (None, "1"), ("2", "3"), (r"\dfrac{3}{2}", "1.5")]) == [
        True, False, False, True]


@pytest.mark.parametrize("adversarial", [r"10^{10^{10}}", r"(10^{10})!"])
def test_hanging_comparison_times_out_and_the_worker_recovers(adversarial):
    assert math_equal("0.5", r"\frac{1}{2}")  # a warm worker
    before = answers._worker[0].pid
    start = time.monotonic()
    assert not math_equal(adversarial, "5", timeout=0.5)  # sympy would grind on for minutes
    assert time.monotonic() - start < 0.5 + 2.5  # the kill and join included, on a loaded machine
    assert answers._worker is None  # killed, not left running
    close_math_worker()  # harmless without a worker
    assert math_equal(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")  # a fresh worker answers the next call
    assert answers._worker[0].pid != before


def test_concurrent_calls_from_threads():
    pairs = [(r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}", True), ("2k+2", "2(k+1)", True), ("3", "4", False)] * 3
    results: list = [None] * len(pairs)

    def work(i: int) -> None:
        results[i] = math_equal(pairs[i][0], pairs[i][1])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [expected for _, _, expected in pairs]


def _state(pid: int) -> str | None:
    try:  # zombies count as gone: PID 1 in a container may never reap them
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return None if state in "ZX" else state
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


_PARENT = """
import threading, time
from glm_eval.scoring import answers
def start():
    answers.math_equal("0.5", r"\\frac12")
    print(answers._worker[0].pid, flush=True)
    if {busy}:
        answers.math_equal(r"(10^{{10}})!", "5", timeout=600)
threading.Thread(target=start).start() if {from_thread} else start()
time.sleep(600)
"""  # no __main__ guard on purpose: the worker must not re-run this script


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_worker_exits_when_its_parent_dies(tmp_path):
    """Parents SIGKILLed (no atexit): the worker must not outlive them, idle (started from the main thread) or
    stuck in a computation (started from a thread, so only its watchdog can notice). The parents are unguarded
    script files, which spawn would re-run in the child if answers.py did not hide __main__."""
    parents, workers = [], []
    for t, b in [(False, False), (True, True)]:
        script = tmp_path / f"parent_{t}_{b}.py"
        script.write_text(_PARENT.format(from_thread=t, busy=b))
        parents.append(subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO)}))
    try:
        workers = [int(p.stdout.readline()) for p in parents]
        time.sleep(0.3)
        assert all(_state(w) is not None for w in workers)
    finally:
        for p in parents:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
    deadline = time.monotonic() + 5
    while any(_state(w) is not None for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [w for w in workers if _state(w) is not None]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert not survivors, "a math-verify worker outlived its parent"


def _compare_in_forked_child(queue) -> None:
    inherited = answers._worker
    queue.put((inherited, math_equal(r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"), answers._worker[0].pid))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_gets_its_own_worker():
    """A fork (e.g. data-loader workers) must not talk on, or kill, the parent's worker."""
    assert math_equal("0.5", r"\frac12")
    mine = answers._worker[0].pid
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_compare_in_forked_child, args=(queue,))
    child.start()
    inherited, equal, theirs = queue.get(timeout=60)
    child.join(30)
    assert inherited is None and equal and theirs != mine
    assert answers._worker[0].pid == mine and math_equal("0.25", r"\frac14")


# ---------------------------------------------------------------- MATH: the real data
def test_math500_answers_round_trip(data_dir):
    rows = read_jsonl(data_dir / "math" / "math500" / "test.jsonl")
    assert len(rows) == 500
    failures = [r["answer"] for r in rows
                if not math_equal(extract_math_answer("... so the final answer is $\\boxed{" + r["answer"] + "}$."),
                                  r["answer"])]
    assert failures == []  # measured: 0 of 500 (all on the string path)
    templates = ["Final Answer: The final answer is $%s$. I hope it is correct.", "Hence the answer is $%s$.",
                 "综上，答案是$%s$。", "The answer is %s.\n"]  # without a box, after a distracting $y = 2$
    failures = [(t, r["answer"]) for t in templates for r in rows
                if not math_equal(extract_math_answer("We compute $y = 2$. " + t % r["answer"]), r["answer"])]
    assert failures == []


def test_math_verify_reads_the_math500_golds(data_dir):
    """The fallback itself: math-verify (bypassing the string path) finds every 20th gold equal to itself."""
    rows = read_jsonl(data_dir / "math" / "math500" / "test.jsonl")[::20]
    assert [r["answer"] for r in rows if not answers._verify(r["answer"], r["answer"], 5.0)] == []


def test_math_test_solutions_extract_their_boxed_answer(data_dir):
    rows = read_jsonl(data_dir / "math" / "test.jsonl")
    assert len(rows) == 5000
    differ = [i for i, r in enumerate(rows) if last_boxed(r["solution"]) is None
              or extract_math_answer(r["solution"]) != last_boxed(r["solution"])]
    assert differ == []  # every solution has a \boxed{}, and extraction reads the last one
    # MATH-500's curated `answer` field against the answer read from the full solution (string path mostly)
    by_problem = {r["problem"]: r["solution"] for r in rows}
    math500 = read_jsonl(data_dir / "math" / "math500" / "test.jsonl")
    disagree = [r["answer"] for r in math500 if not math_equal(extract_math_answer(by_problem[r["problem"]]),
                                                              r["answer"])]
    assert disagree == []


@pytest.mark.parametrize("name", ["math.jsonl", "gaokao-mathcloze.jsonl"])
def test_agieval_cloze_answers_round_trip(data_dir, name):
    rows = read_jsonl(data_dir / "agieval" / "v1" / name)
    for template in ["So the final answer is $\\boxed{%s}$.", "故答案是%s。", "The answer is %s.\n"]:
        failures = [r["answer"] for r in rows
                    if not math_equal(extract_math_answer(template % r["answer"]), r["answer"])]
        assert failures == [], template


# ---------------------------------------------------------------- BBH
@pytest.mark.parametrize("output, target, expected", [
    ("Let's think step by step. ... So the answer is (A).", "(A)", True),
    ("So the answer is (a).", "(A)", True),
    ("So the answer is A.", "(A)", True),
    ("So the answer is **(B) Paris**.", "(B)", True),
    ("So the answer is (E) 12/30/1999.", "(E)", True),
    ("So the answer is (A) or (B).", "(A)", False),  # hedging is wrong, not a substring hit
    ("So the answer is (A)(B).", "(A)", False),
    ("So the answer is A, B.", "(A)", False),
    ("So the answer is (C). Wait, the answer is (D).", "(D)", True),  # the last statement counts
    ("So the answer is (C). Wait, the answer is (D).", "(C)", False),
    ("the answer is a bit unclear", "(A)", False),
    ("not (B) i think", "(B)", False),
    ("So the answer is True.", "True", True),
    ("so the answer is true", "True", True),
    ("So the answer is False.", "True", False),
    ("So the answer is Yes.", "Yes", True),
    ("So the answer is no.", "No", True),
    ("So the answer is invalid.", "valid", False),
    ("So the answer is valid.", "valid", True),
    ("So the answer is 24.", "24", True),
    ("So the answer is -11520.", "-11520", True),
    ("So the answer is 5.0.", "5", True),
    ("So the answer is 8 objects.", "8", True),
    ("So the answer is 25.", "24", False),
    ("So the answer is $\\boxed{24}$.", "24", True),
    ('So the answer is "Monsters, Inc".', "Monsters, Inc", True),
    ("So the answer is ] ] >.", "] ] >", True),
    ("So the answer is ]]>.", "] ] >", True),
    ("So the answer is ] >.", "] ] >", False),
    ("So the answer is apple, banana  cherry.\n\nQ: next question", "apple banana cherry", True),
    ("So the answer is banana apple cherry.", "apple banana cherry", False),
    ("The answer is: no", "no", True),
    ("I give up.", "Yes", False),
])
def test_bbh(output, target, expected):
    assert bbh_match(extract_bbh_answer(output), target) is expected


def test_bbh_extract_trims_markup():
    assert extract_bbh_answer("So the answer is **Yes**.") == "Yes"
    assert extract_bbh_answer("So the answer is `(C)`!") == "(C)"
    assert extract_bbh_answer("no statement") is None


def test_bbh_every_real_target(data_dir):
    files = sorted((data_dir / "bbh" / "bbh").glob("*.json"))
    assert len(files) == 27
    checked = 0
    for path in files:
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
        targets = {e["target"] for e in examples}
        for target in targets:
            assert bbh_match(extract_bbh_answer(f"... So the answer is {target}."), target), (path.name, target)
            assert bbh_match(extract_bbh_answer(f"so THE ANSWER IS **{target}**\nQ: next"), target), (path.name, target)
            if target.startswith("("):  # option letters: bare, lower-case, with the option text, never a different one
                letter = target[1]
                assert bbh_match(letter, target) and bbh_match(f"({letter.lower()})", target)
                assert bbh_match(f"{target} some option text", target)
                assert not bbh_match(f"{target} or (Z)", target)
                assert not any(bbh_match(other, target) for other in targets if other != target)
            elif target in ("True", "False", "Yes", "No", "yes", "no", "valid", "invalid"):
                assert bbh_match(target.upper() + ".", target)
                assert not any(bbh_match(other, target) for other in targets if other != target)
            checked += 1
    assert checked > 600  # 620 distinct (task, target) pairs


# ---------------------------------------------------------------- multiple choice in generate mode
@pytest.mark.parametrize("output, expected", [
    ("答案是B", "B"), ("答案：B", "B"), ("答案: C", "C"), ("正确答案为 C。", "C"), ("选B", "B"), ("B项", "B"),
    ("故选：A", "A"), ("The answer is (C).", "C"), ("Answer: D", "D"), ("**B**", "B"), ("B. Paris", "B"), ("(B)", "B"),
    ("B", "B"), ("A", "A"), ("\nC", "C"), ("答案：Ｂ", "B"), ("（C）", "C"), ("答案是 **B**", "B"),
    ("The correct option is D.", "D"), ("解析：…… 答案应该是 D 选项", "D"), ("答案：\n\nC. 北京", "C"),
    ("根据题意，A项错误，B项错误，C项正确。故选C。", "C"),  # the explicit cue beats the first letter
    ("A car is a vehicle, so the answer is B.", "B"),  # "A" is an article here
    ("A car is a vehicle. B is the right one.", "B"),
    ("A is correct.", "A"),
    ("The answer is A because B is wrong.", "A"),
    ("I think C is correct because D is wrong", "C"),
    ("Let me think. Options B and D are wrong, leaving C", "C"),  # no cue, no leading letter: the last one
    ("答案是AC", None), ("Apple is the answer", None), ("E", None), ("", None), ("I don't know.", None),
])
def test_extract_choice(output, expected):
    assert extract_choice(output) == expected


@pytest.mark.parametrize("output, expected", [
    ("答案是AC", "AC"), ("A、C", "AC"), ("A and C", "AC"), ("答案：C、A", "AC"), ("The answer is B, D.", "BD"),
    ("ABD", "ABD"), ("故选BC", "BC"), ("答案是B", "B"), ("正确答案是A和D", "AD"), ("没有答案", None),
])
def test_extract_choice_multi(output, expected):
    assert extract_choice(output, multi=True) == expected


def test_extract_choice_five_letters():
    assert extract_choice("The answer is (E).", "ABCDE") == "E"
    assert extract_choice("答案是E", "ABCD") is None


def test_extract_choice_on_agieval_options(data_dir):
    folder = data_dir / "agieval" / "v1"
    for name in ["aqua-rat.jsonl", "logiqa-zh.jsonl", "gaokao-physics.jsonl", "jec-qa-kd.jsonl"]:
        for row in read_jsonl(folder / name)[:60]:
            letters = "ABCDE"[:len(row["options"])]
            gold = "".join(sorted(row["label"])) if isinstance(row["label"], list) else row["label"]
            multi = isinstance(row["label"], list)
            if not multi:  # the option as printed: "(B)在反补贴调查期间…"
                assert extract_choice(f"The answer is {row['options'][letters.index(gold)]}", letters) == gold
            assert extract_choice(f"故选{'、'.join(gold)}。", letters, multi=multi) == gold
            assert extract_choice(f"答案是：{gold}", letters, multi=multi) == gold
