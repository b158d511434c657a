"""A reply's reasoning kept apart from its answer, for every backend, before any task sees the reply.

Reasoning models write `<think>…</think>` and then the answer. Three shapes reach glm-eval:
  - the whole reply, tags in the text (in process, vLLM, an endpoint without a reasoning parser): `<think>` written
    by the model (GLM-4.5 / 4.6), or opened by the template so that the reply holds a lone `</think>` (GLM-Z1,
    GLM-4.7, GLM-5);
  - a server's split: `reasoning_content` (SGLang, older vLLM) or `reasoning` (vLLM 0.32) beside the content;
  - nothing at all (a model that does not think).
The answer is what follows the first `</think>`. A reply whose reasoning never closed has **no answer**: it is scored
wrong, never extracted from its reasoning (lm-eval's `split("</think>")[-1]` would score the reasoning itself;
lighteval and OpenCompass strip nothing without both tags), and it is counted: `cut_off` when the token budget ended
it, `unclosed` when it ended otherwise. vLLM's GLM parser puts a reply with no `</think>` wholly in `reasoning`
(its content empty); older versions returned it as content, `<think>` included, when not streaming: both land here
as reasoning that never closed.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from glm_eval.core.protocol import THINK_CLOSE as CLOSE
from glm_eval.core.protocol import THINK_OPEN as OPEN


class State(StrEnum):
    none = "none"  # no reasoning: the whole reply is the answer
    closed = "closed"  # reasoning, then the answer
    cut_off = "cut_off"  # still reasoning when the token budget ran out: no answer
    unclosed = "unclosed"  # ended (EOS, a stop) inside its reasoning: no answer


@dataclass(frozen=True)
class Split:
    state: State
    reasoning: str | None  # None where the reply did not reason
    answer: str | None  # what extraction and scoring see; None where the reasoning never closed

    @property
    def answered(self) -> bool:
        return self.answer is not None


def opens_reasoning(prompt_text: str) -> bool:
    """The prompt ends inside an opened think block (GLM-Z1's and GLM-4.7's templates write `<think>` themselves), so
    the reply starts with reasoning and holds only the closing tag."""
    return prompt_text.rstrip().endswith(OPEN)


def split_reply(text: str, finish_reason: str, server_reasoning: str | None = None, thinking: bool | None = None,
                opened: bool = False, tags_kept: bool = True) -> Split:
    """`text`: the reply (the content alone where the server split off `server_reasoning`); `thinking`: the prompt's
    (True: the model was expected to reason first); `opened`: the prompt ends with `<think>` (`opens_reasoning`);
    `tags_kept`: the text is the model's own, tags included (decoded here); an endpoint's may have lost them."""
    ran_out = finish_reason == "length"
    if server_reasoning is not None:
        if text.strip():
            return Split(State.closed, server_reasoning, text)
        return Split(State.cut_off if ran_out else State.unclosed, server_reasoning, None)
    head, tag, tail = text.partition(CLOSE)
    if tag:
        reasoning = head.lstrip()
        return Split(State.closed, reasoning[len(OPEN):] if reasoning.startswith(OPEN) else head, tail)
    started = text.lstrip().startswith(OPEN)
    # an endpoint that dropped the tags (special tokens skipped, no parser): a reply expected to think that ran out
    # of tokens without a </think> was still reasoning
    if opened or started or (thinking and ran_out and not tags_kept):
        body = text.lstrip()[len(OPEN):] if started else text
        return Split(State.cut_off if ran_out else State.unclosed, body, None)
    return Split(State.none, None, text)
