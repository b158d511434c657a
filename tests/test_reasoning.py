"""A reply's reasoning kept apart from its answer, on every reply path: the split on constructed replies, the in-process
decoding and stop strings (which count only after `</think>`), an OpenAI-style server's `reasoning_content` /
`reasoning` streamed and not; and the numbers built on it: avg@n with its spread, maj@k, pass@k, the cut-off share
and the score against the reply budget, checked against hand computations on constructed verdicts."""
import json
import math

import pytest
from conftest import send

from glm_eval.core.averaging import Averaging
from glm_eval.core.config import EndpointConfig, Thinking
from glm_eval.core.protocol import GenerationRequest, Prompt, Response
from glm_eval.core.sampled import budget_curve, maj_at_k, reasoning_summary, seed_scores, spread
from glm_eval.scoring.reasoning import State, split_reply

# (text, finish reason, server's reasoning, prompt's thinking, prompt opens <think>, tags kept)
#   → (state, reasoning, answer)
CASES = [
    ("<think>add them</think>\nThe answer is 5.", "eos", None, True, False, True,
     (State.closed, "add them", "\nThe answer is 5.")),
    # GLM-Z1 / 4.7: the template opened <think>
    ("add them</think>The answer is 5.", "eos", None, True, True, True, (State.closed, "add them", "The answer is 5.")),
    ("\n<think>first</think>\nA</think>B", "stop", None, True, False, True,  # the first </think> ends the reasoning
     (State.closed, "first", "\nA</think>B")),
    ("<think>still thinking about 5", "length", None, True, False, True,
     (State.cut_off, "still thinking about 5", None)),
    ("still thinking about 5", "length", None, True, True, True, (State.cut_off, "still thinking about 5", None)),
    ("thought, then the EOS", "eos", None, True, True, True, (State.unclosed, "thought, then the EOS", None)),
    # the model skipped its thinking
    ("The answer is 5.", "eos", None, True, False, True, (State.none, None, "The answer is 5.")),
    ("The answer is 5, and then on and on", "length", None, True, False, True,  # ran out in its answer, tags visible
     (State.none, None, "The answer is 5, and then on and on")),
    ("The answer is 5.", "eos", None, None, False, True, (State.none, None, "The answer is 5.")),  # a plain model
    ("The answer is 5.", "stop", "add them", True, False, False, (State.closed, "add them", "The answer is 5.")),
    ("", "length", "add them and", True, False, False, (State.cut_off, "add them and", None)),  # vLLM: content null
    ("", "stop", "add them", True, False, False, (State.unclosed, "add them", None)),
    # an endpoint that dropped the tags (no parser, special tokens skipped): out of tokens while expected to think
    ("add them and then", "length", None, True, False, False, (State.cut_off, "add them and then", None)),
    ("The answer is 5.", "stop", None, True, False, False, (State.none, None, "The answer is 5.")),
    ("<think>add them", "eos", None, None, False, True, (State.unclosed, "add them", None)),  # unknown model, tags
]


@pytest.mark.parametrize("text, finish, server, thinking, opened, kept, expected", CASES)
def test_every_reply_shape_splits_and_a_reply_cut_off_in_its_reasoning_has_no_answer(text, finish, server, thinking,
                                                                                      opened, kept, expected):
    split = split_reply(text, finish, server, thinking, opened, tags_kept=kept)
    assert (split.state, split.reasoning, split.answer) == expected
    assert split.answered == (expected[2] is not None)


@pytest.fixture(scope="module")
def glm45():
    from tiny_glm import glm45_tokenizer
    return glm45_tokenizer()


def thinking_request(stop=("\n\nProblem:",), thinking=True) -> GenerationRequest:
    return GenerationRequest(Prompt("<|assistant|>", thinking=thinking), max_new_tokens=64, stop=stop)


def test_in_process_replies_keep_their_tags_and_stops_count_after_the_reasoning(glm45):
    """The slot generator's and vLLM's reply path (backends/replies.py) on GLM-4.5's token ids: a stop string inside
    the reasoning does not end the reply, the same one in the answer does; a tokenizer that calls the think tags
    special tokens still returns them."""
    from glm_eval.backends.replies import StopScan, decode_reply, reply
    text = "<think>try a\n\nProblem: what if b</think>\nSo \\boxed{5}.\n\nProblem: next"
    tokens = glm45(text, add_special_tokens=False).input_ids
    assert glm45.convert_tokens_to_ids("</think>") in tokens
    scan, stopped_at = StopScan(glm45, thinking_request()), None
    for n in range(1, len(tokens) + 1):
        if scan.reached(tokens[:n]):
            stopped_at = n
            break
    assert stopped_at is not None and "</think>" in glm45.decode(tokens[:stopped_at])
    assert glm45.decode(tokens[:stopped_at]).endswith("\n\nProblem:")  # at the token a row would stop
    plain = StopScan(glm45, thinking_request(thinking=None))  # a model that does not reason: the first one counts
    assert next(n for n in range(1, len(tokens) + 1) if plain.reached(tokens[:n])) < stopped_at
    answer = reply(glm45, tokens[:stopped_at], "stop", thinking_request())
    assert answer.text == "<think>try a\n\nProblem: what if b</think>\nSo \\boxed{5}."
    split = split_reply(answer.text, answer.finish_reason, thinking=True)
    assert split.state == State.closed and split.answer == "\nSo \\boxed{5}."
    # the tags as special tokens (as some checkpoints mark them): dropped by skip_special_tokens, kept here
    from tokenizers import AddedToken
    special = type(glm45).from_pretrained  # a copy, so the module's tokenizer keeps its own flags
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        glm45.save_pretrained(folder)
        marked = special(folder)
    marked.add_special_tokens({"additional_special_tokens": [AddedToken("<think>", special=True),
                                                             AddedToken("</think>", special=True)]})
    ids = marked("<think>r</think>a", add_special_tokens=False).input_ids
    assert "think" not in marked.decode(ids, skip_special_tokens=True)
    assert decode_reply(marked, ids) == "<think>r</think>a"


REPLIES = {  # what a reasoning server answers, by the test's name for it
    "split": {"content": "So \\boxed{5}.", "reasoning_content": "add 2 and 3", "finish": "stop"},
    "vllm-0.32-cut-off": {"content": None, "reasoning": "add 2 and", "finish": "length"},
    "tags-in-content": {"content": "<think>add</think>\\boxed{5}\n\nProblem: x", "finish": "stop"},
}


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_servers_reasoning_is_read_streamed_or_not(serve, stream):
    """A local server playing vLLM / SGLang with a reasoning parser (and one without): model.thinking=on goes as
    chat_template_kwargs, no stop string is sent for a reasoning reply (it is cut from the answer here), and each
    reply shape gives the split the rule says."""
    from glm_eval.backends.http import OpenAIBackend

    def reply(handler, path, payload):
        shape = REPLIES[payload["messages"][-1]["content"]]
        if not payload.get("stream"):
            message = {"role": "assistant", "content": shape["content"],
                       **{k: shape[k] for k in ("reasoning", "reasoning_content") if k in shape}}
            send(handler, body={"choices": [{"index": 0, "message": message, "finish_reason": shape["finish"]}],
                                "usage": {"completion_tokens": 7}})
            return
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
        for key in ("reasoning", "reasoning_content"):
            if key in shape:  # reasoning in two pieces, as a stream sends it
                half = len(shape[key]) // 2
                events += [{"choices": [{"index": 0, "delta": {key: piece}}]}
                           for piece in (shape[key][:half], shape[key][half:])]
        if shape["content"]:
            events.append({"choices": [{"index": 0, "delta": {"content": shape["content"]}}]})
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": shape["finish"]}]})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        send(handler, body=body.encode(), content_type="text/event-stream")

    server = serve(reply)
    backend = OpenAIBackend(EndpointConfig(url=f"{server.url}/v1", stream=stream, retries=0), "m",
                            thinking=Thinking.on)
    names = list(REPLIES)
    requests = [GenerationRequest(Prompt(name, messages=(("user", name),), thinking=True), max_new_tokens=32,
                                  stop=("\n\nProblem:",)) for name in names]
    got: dict[int, Response] = {}
    backend.generate(requests, lambda i, r: got.__setitem__(i, r))
    splits = {name: split_reply(got[i].text, got[i].finish_reason, got[i].reasoning, True, tags_kept=False)
              for i, name in enumerate(names)}
    assert (splits["split"].state, splits["split"].reasoning, splits["split"].answer) == \
        (State.closed, "add 2 and 3", "So \\boxed{5}.")
    assert splits["vllm-0.32-cut-off"].state == State.cut_off and splits["vllm-0.32-cut-off"].answer is None
    assert splits["vllm-0.32-cut-off"].reasoning == "add 2 and"
    assert splits["tags-in-content"].answer == "\\boxed{5}"  # the stop cut from the answer, not the reasoning
    for _, _, payload in server.seen:
        assert payload["chat_template_kwargs"] == {"enable_thinking": True} and "stop" not in payload
    # Z.ai's own switch, and none at all when thinking is left to the server
    zai = OpenAIBackend(EndpointConfig(url=f"{server.url}/v1", thinking_as="zai"), "m", thinking=Thinking.off)
    assert zai.payload(requests[0])["thinking"] == {"type": "disabled"}
    assert "chat_template_kwargs" not in OpenAIBackend(EndpointConfig(url=f"{server.url}/v1"), "m").payload(
        requests[0])


def records(verdicts: list[list[bool]], tokens: list[list[int]], finish: list[list[str]]) -> list[dict]:
    out = []
    for d, (v, t, f) in enumerate(zip(verdicts, tokens, finish)):
        out.append({"doc_id": d, "prompt": "", "output": "", "correct": any(v), "score": sum(v) / len(v),
                    "samples": [{"extracted": str(int(ok)) if ok else f"w{d}{j}", "correct": ok}
                                for j, ok in enumerate(v)],
                    "replies": [{"finish_reason": fr, "num_tokens": n,
                                 "reasoning_state": "cut_off" if fr == "length" else "closed"}
                                for fr, n in zip(f, t)]})
    return out


def test_avg_at_n_its_spread_maj_at_k_and_the_budget_curve_equal_hand_computations():
    verdicts = [[True, False, True, True], [False, False, True, False], [True, True, True, True]]
    tokens = [[900, 3000, 1500, 5000], [200, 8000, 700, 100], [1024, 1025, 2048, 4097]]
    finish = [["eos", "length", "eos", "stop"], ["eos", "length", "eos", "eos"], ["eos", "eos", "eos", "eos"]]
    rows, micro = records(verdicts, tokens, finish), Averaging()
    per_seed = seed_scores(rows, 4, micro)
    assert per_seed == pytest.approx([2 / 3, 1 / 3, 1.0, 2 / 3])
    assert spread(per_seed) == pytest.approx(math.sqrt(sum((s - 2 / 3) ** 2 for s in per_seed) / 3))
    # maj@k over the first k samples; wrong answers differ, so a right one wins any tie it is seen first in
    assert maj_at_k(rows, [1, 2, 4], micro) == pytest.approx({"maj@1": 2 / 3, "maj@2": 2 / 3, "maj@4": 2 / 3})
    curve = budget_curve(rows, 8192, micro)
    assert curve["max_new_tokens"] == [1024, 2048, 4096, 8192]
    right_within = {b: [sum(ok and fr != "length" and n <= b for ok, n, fr in zip(v, t, f)) / 4
                        for v, t, f in zip(verdicts, tokens, finish)] for b in curve["max_new_tokens"]}
    assert curve["score"] == pytest.approx([sum(v) / 3 for v in right_within.values()])
    summary = reasoning_summary(rows, micro)
    assert summary["cut_off"] == 2 and summary["cut_off_share"] == pytest.approx(2 / 12)
    assert summary["score_finished"] == pytest.approx((3 / 3 + 1 / 3 + 4 / 4) / 3)
