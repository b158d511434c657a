"""The judge model (judge=<model config>): rule first, judge second, on constructed replies from fake servers; its cache
identity; rescoring a finished run with a judge; AlignBench's rating parser and THUDM's averages; bad input."""
import json
import random
import re
import time

import pytest
from conftest import DATA, run_command, run_eval, send

from glm_eval.core.errors import UserError
from glm_eval.engine.rescore import main as rescore_main
from glm_eval.scoring.alignbench import parse_rating

MATH500 = [json.loads(line) for line in open(DATA / "math/math500/test.jsonl", encoding="utf-8")][:7]


def reply(handler, text, tokens=5):
    send(handler, body={"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                        "usage": {"completion_tokens": tokens}})


def by_problem(answers: list[str], docs=MATH500, field="problem"):
    """A main model that answers document k with answers[k] (found by its text in the prompt)."""
    def answer(handler, path, payload):
        text = payload["messages"][-1]["content"]
        reply(handler, answers[next(k for k, d in enumerate(docs) if d[field] in text)])
    return answer


def run(tmp_path, main, judge, *overrides, task="math500", limit=7, label="run"):
    results = tmp_path / label
    judged = ["judge=openai_api", f"judge.endpoint.url={judge.url}/v1"] if judge else []
    metrics = run_eval(f"task={task}", f"limit={limit}", f"data_dir={DATA}", "model=openai_api",
                       f"model.endpoint.url={main.url}/v1", *judged, f"results_dir={results}", "progress=false",
                       *overrides)
    [samples] = results.glob(f"*/{task}/samples.jsonl")
    return metrics, [json.loads(line) for line in open(samples, encoding="utf-8")], samples.parent


def judge_posts(server) -> int:
    return sum(path.endswith("/chat/completions") for path, _, _ in server.seen)


def test_the_cascade_asks_only_what_the_rules_reject_and_survives_a_failing_judge(serve, tmp_path):
    answers = ["\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",  # the rules accept it: audited, never judged
               "\\boxed{the difference p minus q}",  # the rules reject it, the judge says Yes
               "\\boxed{999}", "\\boxed{nine-ish}", "\\boxed{fail500}", "\\boxed{slow}",  # No, garbage, 500, timeout
               "I do not know."]  # no answer: wrong, never judged
    verdicts = {"the difference p minus q": "Yes", "999": "No.", "nine-ish": "It depends on the reading.",
                "\\left( 3, \\frac{\\pi}{2} \\right)": "Yes"}

    def judge_reply(handler, path, payload):
        expression = payload["messages"][-1]["content"].rsplit("Expression 2: ", 1)[1]
        if expression == "fail500":
            return send(handler, 500, b"{}")
        if expression == "slow":
            time.sleep(2)
        reply(handler, verdicts.get(expression, "No"), 1)

    main, judge = serve(by_problem(answers), model_id="main-cascade"), serve(judge_reply, model_id="judge-cascade")
    options = ("judge.endpoint.retries=0", "judge.endpoint.timeout_s=0.5", "judge.audit=3")
    metrics, records, _ = run(tmp_path, main, judge, *options)
    block = metrics["judge"]
    assert (block["asked"], block["failed"], block["unreadable"]) == (5, 2, 1)
    assert block["changed"] == {"wrong_to_right": 1, "right_to_wrong": 0}
    assert block["rule_score"] == pytest.approx(1 / 7) and block["cascade_score"] == pytest.approx(2 / 7)
    assert metrics["score"] == pytest.approx(2 / 7) and metrics["failed"] == 0  # a judge failure loses nothing
    assert block["audit"] == {"asked": 1, "answered": 1, "agreed": 1, "agreement": 1.0}
    assert block["prompt_version"].startswith("simple-evals-equality") and "judge-cascade" in block["fingerprint"]
    assert [r["correct"] for r in records] == [True, True, False, False, False, False, False]
    assert "judge" not in records[0] and records[0]["audit"]["agrees"] is True
    assert records[1]["rule"] == {"extracted": "the difference p minus q", "correct": False}
    assert records[1]["judge"]["reply"] == "Yes" and records[1]["judge"]["verdict"] == {"correct": True}
    assert records[3]["judge"]["unreadable"] is True and records[3]["judge"]["reply"].startswith("It depends")
    assert records[4]["judge"]["error"].startswith("HTTP 500") and "timeout" in records[5]["judge"]["error"]
    assert "judge" not in records[6] and "audit" not in records[6]
    assert "| MATH-500 | MATH-500 judge |" in (tmp_path / "run" / "grid.md").read_text()  # the judge of each cell
    from glm_eval.analysis.report import build_report
    build_report(tmp_path / "run", tmp_path / "report")
    [page] = (tmp_path / "report" / "runs").glob("*math500.html")
    assert "rules alone 14.3, with the judge 28.6" in page.read_text() and \
        "<td>the difference p minus q</td><td>False</td><td>p - q</td><td>Yes</td><td>True</td>" in page.read_text()
    prompt = next(p for _, _, p in judge.seen if "the difference" in p["messages"][-1]["content"])
    assert prompt["temperature"] == 0 and prompt["messages"][-1]["content"].endswith(
        "Expression 1: p - q\n    Expression 2: the difference p minus q")
    # a rerun: the answers and the judge's replies come from the cache; only the two failed verdicts are asked again
    posts = judge_posts(judge)
    again, _, _ = run(tmp_path, main, judge, *options, label="again")
    assert judge_posts(judge) - posts == 2 and again["from_cache"] == 7 and again["score"] == metrics["score"]


def test_judge_cache_identity_and_rescore_later(serve, tmp_path):
    main = serve(by_problem(["\\boxed{1}"] * 3), model_id="main-identity")  # the session shares one cache
    judge = serve(lambda h, path, payload: reply(h, "No", 1), model_id="judge-a")
    first, _, _ = run(tmp_path, main, judge, limit=3, label="a")
    assert judge_posts(judge) == 3 and first["judge"]["asked"] == 3
    run(tmp_path, main, judge, limit=3, label="b")
    assert judge_posts(judge) == 3  # the same judge and prompt: no call
    run(tmp_path, main, judge, "task.options.judge_reading=substring", limit=3, label="c")
    assert judge_posts(judge) == 6  # another prompt version: asked afresh
    other = serve(lambda h, path, payload: reply(h, "No", 1), model_id="judge-b")
    run(tmp_path, main, other, limit=3, label="d")
    assert judge_posts(other) == 3  # another judge: asked afresh

    # a run without a judge, judged later by rescore; rescoring it again reuses the replies its records hold
    plain, records, folder = run(tmp_path, main, None, limit=3, label="plain")
    assert "judge" not in plain and not any("rule" in r for r in records)
    later = serve(lambda h, path, payload: reply(h, "Yes", 1), model_id="judge-c")
    done = run_command(rescore_main, folder, "judge=openai_api", f"judge.endpoint.url={later.url}/v1")
    assert done.returncode == 0, done.stderr
    judged = json.loads((folder / "metrics.json").read_text())
    assert judged["score"] == 1.0 and judged["judge"]["changed"]["wrong_to_right"] == 3 and judge_posts(later) == 3
    later.close()  # the judge is gone: its verdicts are in the records
    assert run_command(rescore_main, folder).returncode == 0
    assert json.loads((folder / "metrics.json").read_text())["score"] == 1.0
    bad = run_command(rescore_main, folder, "judge=openai_api", "judge.endpoint.url=http://127.0.0.1:1/v1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "judge: cannot reach" in bad.stderr
    assert run_command(rescore_main, folder, "limit=3").returncode == 2


def test_gpqa_letters_the_judge_reads_and_the_ones_it_cannot(serve, tmp_path):
    import csv
    with open(DATA / "gpqa/gpqa_diamond.csv", newline="", encoding="utf-8") as f:
        docs = list(csv.DictReader(f))[:3]
    main = serve(by_problem(["Thinking.\nANSWER: A", "It is the second option, (B).", "No idea."], docs, "Question"),
                 model_id="main-gpqa")
    judge = serve(lambda h, path, payload: reply(
        h, "<CHOICE>: B" if "(B)" in payload["messages"][-1]["content"] else "none of them", 3))
    metrics, records, _ = run(tmp_path, main, judge, task="gpqa_diamond", limit=3)
    assert judge_posts(judge) == 2 and records[0]["extracted"] == "A" and "judge" not in records[0]
    assert records[1]["extracted"] == "B" and records[1]["rule"]["extracted"] is None
    assert records[1]["correct"] == (records[1]["gold"] == "B")
    assert records[2]["extracted"] is None and records[2]["correct"] is False  # never a guess by default
    assert metrics["judge"]["unreadable"] == 1
    guessed, records, _ = run(tmp_path, main, judge, "task.options.guess=true", task="gpqa_diamond", limit=3,
                              label="guess")
    assert records[2]["extracted"] in "ABCD" and records[2]["guessed"] is True and guessed["judge"]["guessed"] == 1
    from glm_eval.tasks.gpqa_diamond import COLUMNS  # a judged letter votes for its option (maj@k), as a rule's does
    assert records[2]["vote"] in COLUMNS and (records[2]["vote"] == "Correct Answer") == records[2]["correct"]


def test_a_judge_reply_of_a_megabyte_is_bounded(serve, tmp_path):
    main = serve(by_problem(["\\boxed{1}"]), model_id="main-megabyte")
    judge = serve(lambda h, path, payload: reply(h, "Yes " + "x" * 1_000_000, 1), model_id="judge-megabyte")
    metrics, records, _ = run(tmp_path, main, judge, limit=1)
    entry = records[0]["judge"]
    assert entry["unreadable"].startswith("a reply of 1,000,004 characters") and len(entry["reply"]) < 5000
    assert records[0]["correct"] is False and metrics["judge"]["unreadable"] == 1


def test_protocol_glm_simple_evals_takes_their_settings():
    from glm_eval.engine.overrides import compose_config
    from glm_eval.engine.run import apply_protocol
    cfg = compose_config(["task=gpqa_diamond", "protocol=glm-simple-evals"])
    apply_protocol(cfg)
    assert cfg.task.template.startswith("{question}\n\nA) {A}")
    assert (cfg.task.samples, cfg.task.max_new_tokens) == (8, 81920)
    assert dict(cfg.task.options) == {"judge_all": True, "guess": True, "permutation": "simple-evals"}
    assert (cfg.gen.temperature, cfg.gen.top_p) == (0.6, 1.0)
    cfg = compose_config(["task=math500", "protocol=glm-simple-evals"])
    apply_protocol(cfg)
    assert cfg.task.template == compose_config(["task=aime24"]).task.template and cfg.task.samples == 3
    assert list(cfg.task.stop) == [] and cfg.task.options.judge_reading == "substring"
    with pytest.raises(UserError, match="no settings for gsm8k; it covers aime24, aime25, gpqa_diamond, math500, "
                                        "mmlu_pro"):
        apply_protocol(compose_config(["task=gsm8k", "protocol=glm-simple-evals"]))
    with pytest.raises(UserError, match="protocol=x is not valid; valid values: default, glm-simple-evals"):
        compose_config(["protocol=x"])


def test_bad_judges_are_one_line_before_the_model_loads(tmp_path):
    with pytest.raises(UserError, match=r"^judge: cannot reach http://127\.0\.0\.1:1/v1/models"):
        run_eval("task=math500", "limit=1", f"data_dir={DATA}", "judge=openai_api",
                 "judge.endpoint.url=http://127.0.0.1:1/v1", f"results_dir={tmp_path}")
    with pytest.raises(UserError, match="AlignBench is scored by a judge model: set judge="):
        run_eval("task=alignbench", "limit=1", f"data_dir={DATA}", f"results_dir={tmp_path}")
    with pytest.raises(UserError, match="unknown judge 'gpt5'"):
        run_eval("task=alignbench", "judge=gpt5")
    # THUDM's config files edited into something else: one line, not a traceback while the rows are read
    import shutil
    folder = tmp_path / "data" / "alignbench"
    shutil.copytree(DATA / "alignbench" / "config", folder / "config")
    (folder / "data_v1.1_release.jsonl").write_text(
        (DATA / "alignbench/data_v1.1_release.jsonl").read_text(encoding="utf-8").split("\n", 1)[0], encoding="utf-8")
    for name, text, problem in (("temperature", '{"专业能力": "hot"}', "temperature.json gives 专业能力 'hot'"),
                                ("dimension_set", "[1, 2]", "dimension_set.json is not an object")):
        (folder / "config" / f"{name}.json").chmod(0o644)
        original = (folder / "config" / f"{name}.json").read_text(encoding="utf-8")
        (folder / "config" / f"{name}.json").write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=f"AlignBench: config/{problem}"):
            run_eval("task=alignbench", f"data_dir={tmp_path / 'data'}", "show_prompts=1")
        (folder / "config" / f"{name}.json").write_text(original, encoding="utf-8")


# ---- AlignBench ---------------------------------------------------------------------------------------------------
def thudm_post_process(judgment):
    """THUDM/AlignBench judge.py post_process @ 5b79d4a, as published (quadratic regexes and all)."""
    match = re.search(r'{(.*?)}(?![^{]*{)', judgment)
    rating = {k: int(v) for k, v in re.findall(r"'(.*?)': (\d+)", match.group(1))} if match else {}
    score = rating.get("综合得分", -1)
    if score == -1:
        found = re.search(r'\'综合得分\': (\d+(\.\d{1,2})?)', judgment)
        score = float(found.group(1)) if found else -1
    return rating, float(score)


def test_rating_parser_reads_thudms_formats_as_thudm_does():
    formats = ["评价……\n{'事实正确性': 9, '满足用户需求': 6, '综合得分': 7}",
               "{'综合得分': 7.5}", "{'事实正确性': 9,\n '综合得分': 7}", '{"综合得分": 7}', "综合得分：7",
               "先给出 {'a': 1}，最后 {'事实正确性': 8, '综合得分': 8} 结束", "'综合得分': 6.25 以及 {'x': 1}", ""]
    expected = [({"事实正确性": 9, "满足用户需求": 6, "综合得分": 7}, 7.0), ({"综合得分": 7}, 7.0), ({}, 7.0),
                ({}, -1.0), ({}, -1.0), ({"a": 1, "事实正确性": 8, "综合得分": 8}, 8.0),  # the line's first "{" on
                ({"x": 1}, 6.25), ({}, -1.0)]
    assert [parse_rating(f) for f in formats] == expected == [thudm_post_process(f) for f in formats]
    rng = random.Random(0)
    pieces = ["{", "}", "'", ": ", "\n", "综合得分", "维度", "7", "10", ",", " ", "'综合得分': 8", ".5", "x"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert parse_rating(text) == thudm_post_process(text), text
    for hostile in ("{" * 200_000, "{'" + "'" * 200_000 + "}", "{" + "a'" * 100_000 + "}"):
        assert parse_rating(hostile)[1] == -1.0  # linear: THUDM's regexes take minutes here


def test_alignbench_judged_and_averaged_as_thudm_computes(serve, tmp_path):
    docs = [json.loads(line) for line in open(DATA / "alignbench/data_v1.1_release.jsonl", encoding="utf-8")]
    ratings = {"数学计算": 3, "逻辑推理": 5, "专业能力": 6, "中文理解": 7, "基本任务": 8, "文本写作": 9, "角色扮演": 4,
               "综合问答": None}  # 综合问答's judgment is unreadable: THUDM scores it -1, in the mean
    temperatures = {}

    def answer(handler, path, payload):
        question = payload["messages"][-1]["content"]
        category = next(d["category"] for d in docs if d["question"] == question)
        temperatures[category] = payload["temperature"]
        reply(handler, f"回答（{category}）")

    def grade(handler, path, payload):
        prompt = payload["messages"][-1]["content"]
        category = re.search(r"回答类型是(\S+?)，", prompt).group(1)
        score = ratings[category]
        reply(handler, f"解释……\n{{'事实正确性': 5, '综合得分': {score}}}" if score else "无法评分", 20)

    judge = serve(grade)
    metrics, records, _ = run(tmp_path, serve(answer, model_id="main-alignbench"), judge, task="alignbench", limit=1)
    assert temperatures["数学计算"] == 0.1 and temperatures["角色扮演"] == 0.7  # config/temperature.json
    first = records[0]
    assert first["judge"]["verdict"]["rating"] == {"事实正确性": 5, "综合得分": 6}
    [asked] = [p["messages"] for _, _, p in judge.seen if first["question"] in p["messages"][-1]["content"]]
    assert len(asked) == 1 and asked[0]["content"].endswith(
        f"[参考答案开始]\n{first['gold']}\n[参考答案结束]\n[助手的答案开始]\n回答（{first['subject']}）\n[助手的答案结束]\n")
    scores = {c: (-1.0 if s is None else float(s)) for c, s in ratings.items()}
    reasoning = (scores["数学计算"] + scores["逻辑推理"]) / 2
    language = sum(v for c, v in scores.items() if c not in ("数学计算", "逻辑推理")) / 6
    assert metrics["score"] == pytest.approx((reasoning + language) / 2)
    assert metrics["categories"]["中文推理"]["score"] == pytest.approx(reasoning)
    assert metrics["categories"]["中文语言"]["score"] == pytest.approx(language)
    assert metrics["alignbench"]["unparsed"] == 1 and metrics["scale"] == 1 and metrics["n"] == 8
    assert metrics["alignbench"]["overall_without_unparsed"] == pytest.approx(
        (reasoning + (language * 6 + 1) / 5) / 2)
