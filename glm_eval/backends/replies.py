"""How a finished row's tokens become its Response, the same for every engine that generates here (the slot
generator, vLLM): decoded whole by glm-eval's tokenizer, the EOS token left out, the text cut at the first stop
string. So a reply's text depends only on its tokens, not on which engine produced them."""
from __future__ import annotations

from glm_eval.core.protocol import Response


def reply(tokenizer, tokens: list[int], reason: str, stop: tuple[str, ...]) -> Response:
    """`reason`: "eos" (the last token is the EOS or a stop id), "stop" (a stop string), "length" or "cancelled"."""
    if reason == "cancelled":
        return Response(num_tokens=len(tokens), finish_reason=reason, error="cancelled by the caller")
    text = tokenizer.decode(tokens[:-1] if reason == "eos" else tokens, skip_special_tokens=True)
    if reason == "stop":
        cuts = [text.find(s) for s in stop if s in text]
        text = text[:min(cuts)] if cuts else text  # a special-token stop is already gone from `text`
    return Response(text=text, num_tokens=len(tokens), finish_reason=reason)
