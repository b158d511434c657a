"""Prompt formats: a task's (few-shot pairs, question) or a conversation → exactly the text and token ids the model
receives, in the model's own format (THUDM's token-exact ChatGLM2/3 and GLM-4 formats, a Jinja chat template, raw
text), or as chat turns for endpoints that apply their own template."""
from __future__ import annotations

import copy
import json
from enum import StrEnum

from glm_eval.core.config import Reasoning, Thinking
from glm_eval.core.errors import UserError
from glm_eval.core.protocol import THINK_OPEN, Prompt
from glm_eval.glm.tokenizers import ChatGLMTokenizer, GLM4Tokenizer
from glm_eval.glm.tools import ToolFormat, system_turn


class Format(StrEnum):
    """What the renderer produces: the user-facing PromptFormat's resolved choices, plus `messages` (endpoints)."""
    chat_template = "chat_template"
    raw = "raw"
    chatglm3 = "chatglm3"
    chatglm2 = "chatglm2"
    glm4 = "glm4"
    messages = "messages"


Messages = tuple[tuple[str, str], ...]  # (role, content) turns


class PromptRenderer:
    """Turns a task's prompt parts into exactly the text and token ids the model receives.

    raw: few-shot text, tokenized with the tokenizer's own prefix ([gMASK] sop for GLM models).
    chat_template: the tokenizer's Jinja chat template.
    chatglm3 / glm4: THUDM's build_chat_input ids, token-exact; few-shot pairs become history turns.
    chatglm2: the "[Round n]\n\n问：…\n\n答：" text of ChatGLM2's build_prompt.
    messages: the turns alone, for chat endpoints that apply their own template (no tokenizer here).
    `chat_api` (and `messages`): prompts for a chat API, which cannot start the reply for the model, so a task's
    answer prefix ends the user turn instead; with a tokenizer the prompt still carries the ids the server's
    template gives those turns (an endpoint's prompts counted and truncated as in process).

    Thinking (today's GLM): `reasoning` is the model's fact (none | always | hybrid, None unknown) and `thinking` the
    run's switch. on/off reach the template as `enable_thinking` (never None: GLM templates read a None as "off");
    auto leaves the template's default. A model that reasons answers after its `</think>`, so a task's answer prefix
    ends the user turn there too (written after `<|assistant|>` it would take the reasoning's place). Each prompt says
    whether its reply reasons first (`Prompt.thinking`).

    Tools (BFCL): `tool_format` (glm/tools.py) says how the model is offered functions and writes calls. auto: THUDM's
    native formats their own (chatglm3, glm4), a chat template hermes where it renders `tools=` and BFCL's prompt
    (python) where it ignores them, an endpoint's chat API openai (`tools` in the request).
    """

    def __init__(self, tokenizer, chat: bool | None, prompt_format: str = "auto", max_input_length: int | None = None,
                 chat_api: bool = False, thinking: str = Thinking.auto, reasoning: str | None = None,
                 prompt_prefix: str | None = None, tool_format: str = ToolFormat.auto):
        if prompt_format == "auto":
            use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
            prompt_format = Format.chat_template if use_chat else Format.raw
        try:
            fmt = Format(str(prompt_format))
        except ValueError:
            raise UserError(f"unknown model.prompt_format {prompt_format!r}; valid: auto, "
                            f"{', '.join(f for f in Format if f != Format.messages)}") from None
        thudm = isinstance(tokenizer, (ChatGLMTokenizer, GLM4Tokenizer))  # THUDM's tokenizer.model, read exactly
        if fmt in (Format.chatglm3, Format.glm4) and not thudm:
            fmt = Format.chat_template  # an HF-format checkpoint (e.g. glm-4-9b-chat-hf) carries its template
        if fmt == Format.chatglm2 and not isinstance(tokenizer, ChatGLMTokenizer):
            raise UserError("prompt_format chatglm2 needs the checkpoint's SentencePiece tokenizer.model")
        self.tokenizer, self.format, self.thudm = tokenizer, fmt, thudm
        self.chat = fmt != Format.raw
        self.chat_api = chat_api or fmt == Format.messages
        self.max_input_length = max_input_length  # long-context prompt budget, in tokens, before the chat wrapper
        self.reasoning = Reasoning(reasoning) if reasoning else None
        self.prompt_prefix = prompt_prefix
        self._switch(thinking)
        self.tool_format = self._tool_format(tool_format)

    def _tool_format(self, chosen: str) -> ToolFormat | None:
        """The resolved tool format; None where prompts have no chat turns to carry tools (raw, chatglm2)."""
        try:
            chosen = ToolFormat(str(chosen))
        except ValueError:
            raise UserError(f"unknown model.tool_format {chosen!r}; valid: {', '.join(ToolFormat)}") from None
        if self.format in (Format.raw, Format.chatglm2):
            return None
        if chosen != ToolFormat.auto:
            return chosen
        if self.format == Format.messages:
            return ToolFormat.openai
        if self.format in (Format.chatglm3, Format.glm4):
            return ToolFormat(str(self.format))
        return ToolFormat.hermes if self.template_renders_tools else ToolFormat.python

    @property
    def template_renders_tools(self) -> bool:
        """The chat template reads `tools=` (SmolLM2's, for one, ignores it)."""
        return "tools" in (getattr(self.tokenizer, "chat_template", None) or "")

    def _switch(self, thinking: str) -> None:
        self.thinking = Thinking(thinking)
        if self.thinking != Thinking.auto and self.format not in (Format.chat_template, Format.messages):
            raise UserError(f"model.thinking={self.thinking} switches a chat template's thinking, and this model's "
                            f"prompts are {self.format} (no template to switch): drop model.thinking")
        switched = self.thinking != Thinking.auto and self.format == Format.chat_template
        self.template_kwargs = {"enable_thinking": self.thinking == Thinking.on} if switched else {}

    def with_thinking(self, thinking: str) -> PromptRenderer:
        """This renderer with another thinking switch (show_prompts shows a hybrid model's prompts both ways; the
        server switches per request)."""
        other = copy.copy(self)
        other._switch(thinking)
        return other

    @property
    def reasons(self) -> bool:
        """Replies reason before they answer (as far as the model's config and the switch tell)."""
        return replies_reason(self.reasoning, self.thinking)

    def _thinking_of(self, text: str) -> bool | None:
        if self.reasoning == Reasoning.none or self.format in (Format.raw, Format.chatglm2, Format.chatglm3,
                                                               Format.glm4):
            return None
        if self.reasoning is not None or self.thinking != Thinking.auto:
            return self.reasons
        return True if text.rstrip().endswith(THINK_OPEN) else None  # an unknown model's template opened <think>

    def render(self, shots: list[tuple[str, str]], question: str, gen_prefix: str = "",
               open_reply: bool = False) -> Prompt:
        """`open_reply`: end where the reply's content starts (after ChatGLM3/GLM-4's metadata line), so the next
        token is the answer itself; multiple-choice letter scoring reads its logits there."""
        if self.format == "raw":
            text = "".join(f"{user} {answer.strip()}\n\n" for user, answer in shots) + question
            return self.plain(with_prefix(text, gen_prefix))
        messages = tuple(m for user, answer in shots for m in (("user", user), ("assistant", answer.strip())))
        return self.render_messages(messages + (("user", question),), gen_prefix, open_reply)

    def render_messages(self, messages: Messages, gen_prefix: str = "", open_reply: bool = False,
                        tools: list[dict] | None = None) -> Prompt:
        """A conversation ending in a user turn, wrapped in the model's chat format (the server renders requests
        with this too, so an endpoint sees the same tokens as an in-process run), with `tools` (OpenAI-style) offered
        as the model's tool format offers them."""
        if tools:
            return self._with_tools(messages, tools)
        prefix = gen_prefix.strip()
        # a thinking model's reply starts where its template says, in either mode: the prefix ends the user turn
        if (self.chat_api or self.reasons or self.reasoning in (Reasoning.always, Reasoning.hybrid)) and prefix:
            *earlier, (role, content) = messages
            messages, prefix = (*earlier, (role, with_prefix(content, prefix))), ""
        if self.format == "messages":
            text = "\n\n".join(f"[{role}] {content}" for role, content in messages)
            return Prompt(text=text, messages=messages, thinking=self._thinking_of(text))
        if self.format == "raw":
            return self.plain(with_prefix("\n\n".join(content for _, content in messages), prefix))
        if self.format == "chatglm2":
            text = self.tokenizer.chatglm2_prompt(*chatglm_query_history(messages)) + prefix
            return Prompt(text=text, token_ids=tuple(self.tokenizer.encode(text)), messages=messages)
        if self.format in ("chatglm3", "glm4"):
            ids = self.tokenizer.chat_ids([{"role": r, "content": c} for r, c in messages])
            if prefix or open_reply:  # the reply's (empty) metadata line, then the prefix, as a turn is encoded
                ids += self.tokenizer.text_ids("\n") + (self.tokenizer.text_ids(prefix) if prefix else [])
            return Prompt(text=self.tokenizer.decode(ids), token_ids=tuple(ids), messages=messages)
        text = self.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages],
                                                  add_generation_prompt=True, tokenize=False, **self.template_kwargs)
        text += prefix
        ids = self.tokenizer(text, add_special_tokens=False).input_ids  # the template holds any BOS
        return Prompt(text=text, token_ids=tuple(ids), messages=messages, thinking=self._thinking_of(text))

    def _with_tools(self, messages: Messages, tools: list[dict]) -> Prompt:
        fmt = self.tool_format
        if fmt is None:
            raise UserError(f"tools need chat turns, and this model's prompts are {self.format}: use a chat model "
                            f"(model.prompt_format=chat_template, chatglm3 or glm4)")
        facts = {"tools": json.dumps(tools, ensure_ascii=False), "tool_format": str(fmt)}
        # the tool system turn glm-eval writes: THUDM's native formats and BFCL's prompt; templates render tools=
        native = self.format in (Format.chatglm3, Format.glm4)
        own = system_turn(fmt, tools) if native or fmt == ToolFormat.python else None
        turns = [{"role": r, "content": c} for r, c in messages]
        if own is not None and fmt == ToolFormat.python and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{own['content']}\n\n{turns[0]['content']}"}  # BFCL's merge
        elif own is not None:
            turns.insert(0, own)
        if self.format == Format.messages:
            text = "\n\n".join(f"[{t['role']}] {t['content']}" for t in turns) + f"\n\n[tools] {facts['tools']}"
            return Prompt(text=text, messages=tuple((t["role"], t["content"]) for t in turns),
                          thinking=self._thinking_of(text), **facts)
        if self.format in (Format.chatglm3, Format.glm4):
            ids = self.tokenizer.chat_ids(turns)
            return Prompt(text=self.tokenizer.decode(ids), token_ids=tuple(ids), messages=messages, **facts)
        if own is None and not self.template_renders_tools:
            raise UserError(f"model.tool_format={fmt} offers tools through the chat template's tools=, which this "
                            f"model's template ignores: set model.tool_format=python (BFCL's prompt) or auto")
        text = self.tokenizer.apply_chat_template(turns, tools=None if own is not None else tools,
                                                  add_generation_prompt=True, tokenize=False, **self.template_kwargs)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return Prompt(text=text, token_ids=tuple(ids), messages=tuple((t["role"], t["content"]) for t in turns),
                      thinking=self._thinking_of(text), **facts)

    def truncate_middle(self, text: str) -> tuple[str, int]:
        """LongBench's truncation (pred.py): over max_input_length tokens, keep the first and the last
        int(max_input_length / 2), each half decoded on its own without special tokens (the text is tokenized
        again afterwards, so its length may drift by a few tokens). Returns the text and its length before."""
        if not self.max_input_length:
            raise UserError("the model's context length is unknown; set model.max_input_length")
        # pred.py counts with the default special tokens, except for ChatGLM3 (add_special_tokens=False)
        ids = self.tokenizer.encode(text, add_special_tokens=self.format != "chatglm3")
        if len(ids) <= self.max_input_length:
            return text, len(ids)
        half = int(self.max_input_length / 2)
        return (self.tokenizer.decode(ids[:half], skip_special_tokens=True)
                + self.tokenizer.decode(ids[-half:], skip_special_tokens=True)), len(ids)

    def plain(self, text: str) -> Prompt:
        """`text` without any chat wrapper, tokenized with the tokenizer's own prefix (BOS, or [gMASK] sop), or with
        model.prompt_prefix where the tokenizer adds none (GLM base checkpoints whose tokenizer.json adds nothing)."""
        if not self.tokenizer:
            return Prompt(text=text)
        ids = self.tokenizer.encode(text)
        if self.prompt_prefix:
            lead = self.tokenizer.encode(self.prompt_prefix, add_special_tokens=False)
            if ids[:len(lead)] != lead:
                ids = lead + self.tokenizer.encode(text, add_special_tokens=False)
        return Prompt(text=text, token_ids=tuple(ids))

    def from_token_ids(self, ids: list[int]) -> Prompt:
        """A prompt given as token ids (a completions request, as vLLM takes them): each must name a token."""
        size = len(self.tokenizer)
        if not ids or not all(0 <= i < size for i in ids):
            raise ValueError(f"prompt token ids must be a non-empty list of ids in [0, {size})")
        return Prompt(text=self.tokenizer.decode(ids), token_ids=tuple(ids))

    def continuation_ids(self, text: str) -> list[int]:
        """`text` tokenized on its own, without special tokens (a continuation after a prompt)."""
        if self.thudm:
            return self.tokenizer.text_ids(text)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def letter_token(self, letter: str) -> int:
        """The one token that writes " X" after an answer cue: " X" itself in byte-level BPE vocabularies, "▁X" in
        SentencePiece ones (whose dummy prefix is that space; THUDM's C-Eval script reads these ids)."""
        for text in (" " + letter, letter):
            ids = self.continuation_ids(text)
            if len(ids) == 1:
                return ids[0]
        raise UserError(f"the tokenizer writes choice letter {letter!r} with more than one token; "
                        f"use task.choice_scoring=loglik or generate")


def replies_reason(reasoning: str | None, thinking: str) -> bool:
    """Does a model (model.reasoning; None: unknown) with this switch (model.thinking) reason before it answers?"""
    if reasoning == Reasoning.always:
        return True
    if reasoning == Reasoning.hybrid:
        return thinking != Thinking.off
    return reasoning is None and thinking == Thinking.on


def chatglm_query_history(messages: Messages, default_query: str = "") -> tuple[str, list[list[str]]]:
    """ChatGLM2's and api.py's (query, history) for a conversation ending in a user turn. They have no system
    turn: system text prefixes the query, as ChatGLM2's own openai_api.py does. The other turns pair up as
    [question, answer]; an assistant turn with no question before it gets an empty one."""
    system = "".join(f"{c}\n" for r, c in messages if r == "system")
    turns = [(r, c) for r, c in messages if r != "system"]
    *earlier, (_, query) = turns or [("user", default_query)]
    history: list[list[str]] = []
    for role, content in earlier:
        if role == "assistant" and history and not history[-1][1]:
            history[-1][1] = content
        else:  # a user turn opens a pair
            history.append([content, ""] if role != "assistant" else ["", content])
    return system + query, history


def with_prefix(text: str, prefix: str) -> str:
    """The answer prefix after a prompt: "A:" + " Let's think…", but a prompt ending in a newline takes it as is."""
    prefix = prefix.strip()
    if not prefix:
        return text
    return text + prefix if text.endswith(("\n", " ")) else f"{text} {prefix}"


