"""The Responses every engine that runs here (the slot generator and log-likelihood scorer, vLLM) builds the same
way: a finished row's tokens decoded whole by glm-eval's tokenizer, the EOS token left out, the text cut at the
first stop string (so a reply's text depends only on its tokens, not on the engine), and the failed request for
one that does not fit the context (never a wrong answer)."""
from __future__ import annotations

from glm_eval.core.protocol import GenerationRequest, LoglikelihoodRequest, Response


def reply(tokenizer, tokens: list[int], reason: str, stop: tuple[str, ...]) -> Response:
    """`reason`: "eos" (the last token is the EOS or a stop id), "stop" (a stop string), "length" or "cancelled"."""
    if reason == "cancelled":
        return Response(num_tokens=len(tokens), finish_reason=reason, error="cancelled by the caller")
    text = tokenizer.decode(tokens[:-1] if reason == "eos" else tokens, skip_special_tokens=True)
    if reason == "stop":
        cuts = [text.find(s) for s in stop if s in text]
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
