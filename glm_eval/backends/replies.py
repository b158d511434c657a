"""The Responses every engine that runs here (the slot generator and log-likelihood scorer, vLLM) builds the same
way: a finished row's tokens decoded whole by glm-eval's tokenizer, the EOS token left out, the text cut at the
first stop string (so a reply's text depends only on its tokens, not on the engine), and the failed request for
one that does not fit the context (never a wrong answer).

A reply that reasons first keeps its `<think>` / `</think>` in the text (a tokenizer that calls them special tokens
would drop them with the other specials), and its stop strings count only after its `</think>`: a task's stop
("\n\nProblem:") must not cut the reasoning short (scoring/reasoning.py splits the two later)."""
from __future__ import annotations

import weakref

from glm_eval.core.protocol import THINK_CLOSE, THINK_OPEN, GenerationRequest, LoglikelihoodRequest, Response

_SPECIAL_TAGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → its special think tags


def special_think_tags(tokenizer) -> dict[int, str]:
    """The think tags this tokenizer holds as single special tokens ({id: tag}), which skip_special_tokens would
    drop; looked up once per tokenizer."""
    if tokenizer not in _SPECIAL_TAGS:
        _SPECIAL_TAGS[tokenizer] = {
            token_id: str(added) for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
            if getattr(added, "special", False) and str(added) in (THINK_OPEN, THINK_CLOSE)}
    return _SPECIAL_TAGS[tokenizer]


def decode_reply(tokenizer, tokens: list[int]) -> str:
    """The reply's text without special tokens, but with its think tags."""
    tags = special_think_tags(tokenizer)
    if not tags or not any(t in tags for t in tokens):
        return tokenizer.decode(tokens, skip_special_tokens=True)
    text, run = "", []
    for token in tokens:
        if token in tags:
            text, run = text + tokenizer.decode(run, skip_special_tokens=True) + tags[token], []
        else:
            run.append(token)
    return text + tokenizer.decode(run, skip_special_tokens=True)


def answer_start(text: str, reasoning: bool) -> int | None:
    """Where stop strings start to count in `text`: 0, or after the first `</think>` of a reply that reasons (None
    while its reasoning is still open)."""
    if not reasoning:
        return 0
    at = text.find(THINK_CLOSE)
    return None if at < 0 else at + len(THINK_CLOSE)


class StopScan:
    """Whether a growing reply has reached one of its stop strings, which count only after the `</think>` of a reply
    that reasons (the slot generator checks each row after every token; vLLM's own stop check cannot skip the
    reasoning, so such rows are checked here as they grow)."""

    def __init__(self, tokenizer, request: GenerationRequest):
        self.tokenizer, self.stop = tokenizer, request.stop
        self.window = max((len(s) for s in request.stop), default=0) + 2  # a stop of c chars spans ≤ c tokens
        self.answer_from: int | None = None if request.prompt.thinking else 0  # first token after </think>

    def reached(self, tokens: list[int]) -> bool:
        if not self.stop:
            return False
        if self.answer_from is None:
            if answer_start(decode_reply(self.tokenizer, tokens[-12:]), True) is None:
                return False
            self.answer_from = len(tokens)
        tail = self.tokenizer.decode(tokens[max(self.answer_from, len(tokens) - self.window):],
                                     skip_special_tokens=False)
        return any(s in tail for s in self.stop)


def reply(tokenizer, tokens: list[int], reason: str, request: GenerationRequest) -> Response:
    """`reason`: "eos" (the last token is the EOS or a stop id), "stop" (a stop string), "length" or "cancelled"."""
    if reason == "cancelled":
        return Response(num_tokens=len(tokens), finish_reason=reason, error="cancelled by the caller")
    text = decode_reply(tokenizer, tokens[:-1] if reason == "eos" else tokens)
    if reason == "stop":
        start = answer_start(text, bool(request.prompt.thinking)) or 0
        cuts = [text.find(s, start) for s in request.stop if s in text[start:]]
        text = text[:min(cuts)] if cuts else text  # a special-token stop is already gone from `text`
    return Response(text=text, num_tokens=len(tokens), finish_reason=reason)


def unfit_generation(request: GenerationRequest, context: int) -> Response | None:
    """The failed Response of a prompt that leaves no room for a reply in `context` tokens, else None."""
    if len(request.prompt.token_ids) < context:
        return None
    return Response(finish_reason="error", error=f"prompt of {len(request.prompt.token_ids)} tokens does not fit "
                                                 f"the model's context of {context}")


def unfit_loglikelihood(request: LoglikelihoodRequest, context: int, spare: int = 0) -> Response | None:
    """The failed Response of a request whose context + longest continuation (+ `spare` tokens the engine adds)
    exceeds `context`, or that has an empty part; else None."""
    longest = len(request.context.token_ids) + max((len(c) for c in request.continuations), default=0)
    if longest + spare > context:
        return Response(finish_reason="error", error=f"context + continuation of {longest} tokens does not fit the "
                                                     f"model's context of {context}")
    if not request.context.token_ids or not all(request.continuations):
        return Response(finish_reason="error", error="empty context or continuation")
    return None
