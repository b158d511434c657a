"""GLM tokenizers without remote code: ChatGLM2/3 (SentencePiece) and GLM-4 (tiktoken).

Token-exact ports of THUDM's `tokenization_chatglm.py` (SPTokenizer/ChatGLMTokenizer and ChatGLM4Tokenizer) for
prompt building, plus `to_fast_tokenizer`, which builds an equivalent `tokenizers` model so converted checkpoints load
with plain `AutoTokenizer` (transformers 5 cannot run the original remote code, docs/chatglm.md §4 and §7).
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

Message = dict[str, Any]  # {"role", "content", optional "metadata", optional "tools" (system messages)}
ROLES = ("system", "user", "assistant", "observation")


class _GLMTokenizer:
    """Shared by both families: prefix, specials appended after the vocabulary, chat layout, decoding around specials.

    Subclasses provide text_ids (plain text, never special ids), _decode_text (ordinary ids) and _message_text."""

    SPECIAL_TOKENS: tuple[str, ...]
    PREFIX: tuple[str, str]
    eos_token_id: int
    padding_side = "left"  # the original `_pad` asserts left padding

    def __init__(self, first_special_id: int):
        self.special_ids = {name: first_special_id + i for i, name in enumerate(self.SPECIAL_TOKENS)}
        self.special_names = {i: name for name, i in self.special_ids.items()}
        self.num_token_ids = first_special_id + len(self.SPECIAL_TOKENS)  # ids >= this are embedding padding rows
        self.prefix = [self.special_ids[name] for name in self.PREFIX]
        # chat replies end at eos or when the model opens the next user/observation turn (chatglm.md §7.6); the role
        # ids never occur in ChatGLM2 or base-model output, so the same list is safe there
        self.stop_ids = [self.eos_token_id, self.special_ids["<|user|>"], self.special_ids["<|observation|>"]]

    def __len__(self) -> int:  # as len() of an HF tokenizer: every id that means a token
        return self.num_token_ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return (self.prefix if add_special_tokens else []) + self.text_ids(text)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            return self._decode_text([i for i in ids if i not in self.special_names])
        text, run = "", []
        for i in ids:  # like SPTokenizer.decode: ordinary runs decoded together, specials written by name
            if i in self.special_names:
                text, run = text + self._decode_text(run) + self.special_names[i], []
            else:
                run.append(i)
        return text + self._decode_text(run)

    def chat_ids(self, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
        ids = list(self.prefix)
        for message in messages:
            if message["role"] not in ROLES:
                raise ValueError(f"unknown chat role {message['role']!r}; expected one of {ROLES}")
            content = self._message_text(message)  # tools folded in; None drops the message
            if content is None:
                continue
            # build_single_message: metadata line and content are separate encode calls (each gets its own prefix)
            ids += [self.special_ids[f"<|{message['role']}|>"], *self.text_ids(f"{message.get('metadata') or ''}\n")]
            ids += self.text_ids(content)
        if add_generation_prompt:
            ids.append(self.special_ids["<|assistant|>"])
        return ids


class ChatGLMTokenizer(_GLMTokenizer):
    """ChatGLM2 / ChatGLM3 (one SentencePiece model; the role tokens are ChatGLM3's)."""

    SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                      "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
    PREFIX = ("[gMASK]", "sop")
    eos_token_id, pad_token_id = 2, 0  # pad is <unk>

    def __init__(self, model_file: str | Path):
        from sentencepiece import SentencePieceProcessor
        self.model_file = Path(model_file)
        self.sp = SentencePieceProcessor(model_file=str(model_file))
        super().__init__(first_special_id=self.sp.vocab_size())  # specials are appended after the 64789 pieces
        self.vocab_size = self.num_token_ids

    def text_ids(self, text: str) -> list[int]:
        return self.sp.encode(text)  # pieces stop below 64789, so text can never spell a special id

    def _decode_text(self, ids: list[int]) -> str:
        # <unk>/<s>/</s> decode to "" in the original (sp itself would print " ⁇ " for <unk>); padding rows have no text
        return self.sp.decode([i for i in ids if 2 < i < self.sp.vocab_size()])

    def _message_text(self, message: Message) -> str:
        content = message.get("content") or ""
        if message["role"] == "system" and message.get("tools") is not None:  # build_chat_input's tool listing
            content += "\n" + json.dumps(message["tools"], indent=4, ensure_ascii=False)
        return content

    def chatglm2_prompt(self, query: str, history: list[tuple[str, str]]) -> str:
        turns = [f"[Round {i}]\n\n问：{q}\n\n答：{r}\n\n" for i, (q, r) in enumerate(history, start=1)]
        return "".join(turns) + f"[Round {len(history) + 1}]\n\n问：{query}\n\n答："


GLM4_TOOL_HINT = "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"


class GLM4Tokenizer(_GLMTokenizer):
    """GLM-4 (tiktoken rank file, specials appended after the ranks)."""

    SPECIAL_TOKENS = ("<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
                      "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
                      "<|begin_of_video|>", "<|end_of_video|>")
    PREFIX = ("[gMASK]", "<sop>")
    # ChatGLM4Tokenizer.pat_str (the same as cl100k_base's split regex)
    PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
    vocab_size = 151552  # embedding rows (padded); only ids < num_token_ids = 151343 mean anything
    eos_token_id = pad_token_id = 151329

    def __init__(self, model_file: str | Path):
        import tiktoken
        self.model_file = Path(model_file)
        self.ranks = read_tiktoken_ranks(model_file)
        self.tiktoken = tiktoken.Encoding(name="glm4", pat_str=self.PATTERN, mergeable_ranks=self.ranks,
                                          special_tokens={})
        super().__init__(first_special_id=len(self.ranks))

    def text_ids(self, text: str) -> list[int]:
        return self.tiktoken.encode(text, disallowed_special=())

    def _decode_text(self, ids: list[int]) -> str:
        return self.tiktoken.decode([i for i in ids if i < len(self.ranks)], errors="replace")

    def _message_text(self, message: Message) -> str | None:
        content = message.get("content") or ""
        if message["role"] == "system" and message.get("tools") is not None:  # build_chat_input's tool blocks
            for tool in message["tools"]:
                function = tool.get("function", tool)  # accept OpenAI-style {"type": "function", "function": {...}}
                content += f"\n\n## {function['name']}\n\n{json.dumps(function, ensure_ascii=False, indent=4)}"
                content += GLM4_TOOL_HINT
        return content or None  # GLM-4's apply_chat_template skips messages without content


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    with open(path, encoding="ascii") as f:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in f if line.strip())}


def is_thudm_tokenizer_folder(path: str | None) -> bool:
    """A local folder holding THUDM's tokenizer.model under a tokenizer_config.json that names their remote-code class
    (ChatGLMTokenizer, ChatGLM4Tokenizer), e.g. a tokenizer-only copy without config.json."""
    folder = Path(path or "").expanduser()
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and str(config.get("tokenizer_class", "")).startswith("ChatGLM")
            and (folder / "tokenizer.model").is_file())


def load_glm_tokenizer(folder: str | Path) -> ChatGLMTokenizer | GLM4Tokenizer:
    model_file = Path(folder) / "tokenizer.model"
    if not model_file.is_file():
        raise ValueError(f"no tokenizer.model in {folder}")
    with open(model_file, "rb") as f:
        head = f.read(256)
    if re.match(rb"[A-Za-z0-9+/]+={0,2} \d+\r?\n", head):  # tiktoken rank file: "base64 rank" lines
        return GLM4Tokenizer(model_file)
    if head[:1] == b"\n":  # SentencePiece ModelProto: starts with field 1 (pieces), length-delimited
        return ChatGLMTokenizer(model_file)
    raise ValueError(f"{model_file} is neither a SentencePiece model nor a tiktoken rank file")


# Chat templates that rebuild chat_ids from text. `tokenizers` cuts text at added tokens and normalizes each piece
# alone, so ChatGLM's Prepend("▁") gives each piece the dummy prefix each sp.encode call adds; the space before the
# content becomes the content call's "▁" ("\n" is byte-fallback only, so nothing merges across it). GLM-4 encodes
# "metadata\n" and the content in separate calls too, but as one text "\n" + content starting with blanks and a
# newline would pre-tokenize as one run ("\n\n\n"): there the template puts SEGMENT_BREAK, a Unicode noncharacter that
# the fast GLM-4 pre-tokenizer cuts at and drops, between the two.
SEGMENT_BREAK = "\ufdd0"
_CONTENT = "{% set ns = namespace(content=(m['content'] if m['content'] is defined else '')) %}"
_METADATA = "{{ m['metadata'] if m['metadata'] is defined else '' }}{{ '\\n' }}"
CHATGLM3_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}" + _CONTENT +
    "{% if m['role'] == 'system' and m['tools'] is defined %}"
    "{% set ns.content = ns.content + '\\n' + (m['tools'] | tojson(indent=4)) %}{% endif %}"
    "<|{{ m['role'] }}|>" + _METADATA + "{% if ns.content %} {{ ns.content }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
GLM4_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}" + _CONTENT +
    "{% if m['role'] == 'system' and m['tools'] is defined %}{% for tool in m['tools'] %}"
    "{% set f = tool['function'] if tool['function'] is defined else tool %}"
    "{% set ns.content = ns.content + '\\n\\n## ' + f['name'] + '\\n\\n' + (f | tojson(indent=4)) + "
    + json.dumps(GLM4_TOOL_HINT, ensure_ascii=False) + " %}{% endfor %}{% endif %}"
    "{% if ns.content %}<|{{ m['role'] }}|>" + _METADATA +
    "{% if ns.content[:1].isspace() %}" + SEGMENT_BREAK + "{% endif %}{{ ns.content }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def to_fast_tokenizer(tok: ChatGLMTokenizer | GLM4Tokenizer) -> PreTrainedTokenizerFast:
    """An HF fast tokenizer encoding ordinary text exactly like `tok`, with [gMASK] <sop> added and a chat template."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    if isinstance(tok, ChatGLMTokenizer):
        backend, unk, eos, pad, template = _sentencepiece_backend(tok), "<unk>", "</s>", "<unk>", CHATGLM3_TEMPLATE
        names = ["<sop>" if n == "sop" else "<eop>" if n == "eop" else n for n in tok.SPECIAL_TOKENS]
        extra = {}
    elif isinstance(tok, GLM4Tokenizer):
        backend, unk, eos, pad, template = _tiktoken_backend(tok), None, "<|endoftext|>", "<|endoftext|>", GLM4_TEMPLATE
        names, extra = list(tok.SPECIAL_TOKENS), {"model_max_length": 128000}
    else:
        raise TypeError(f"not a GLM tokenizer: {type(tok).__name__}")
    # specials go after the ordinary vocab, so they take the original ids in order
    backend.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    assert [backend.token_to_id(n) for n in names] == list(tok.special_names), "special ids out of place"
    gmask, sop = names[tok.SPECIAL_TOKENS.index("[gMASK]")], names[tok.SPECIAL_TOKENS.index(tok.PREFIX[1])]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{gmask}:0 {sop}:0 $A:0", pair=f"{gmask}:0 {sop}:0 $A:0 $B:1 {eos}:1",
        special_tokens=[(t, backend.token_to_id(t)) for t in (gmask, sop, eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=unk, eos_token=eos, pad_token=pad, padding_side="left",
        clean_up_tokenization_spaces=False, chat_template=template, **extra)


def _sentencepiece_backend(tok: ChatGLMTokenizer):
    """Whole-text BPE with byte fallback, which is what sentencepiece runs for this model (no pre-splitting)."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers.tokenization_utils_base import generate_merges

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tok.model_file.read_bytes())
    spec, norm, pieces = proto.trainer_spec, proto.normalizer_spec, proto.pieces
    # sentencepiece merges the best-scored pair, generate_merges ranks merges by piece id: the same order only
    # when scores fall as ids rise; the normalizer below stands for exactly these settings
    scores = [p.score for p in pieces if p.type == p.NORMAL]
    if not (spec.model_type == spec.BPE and spec.byte_fallback and norm.name == "identity" and norm.add_dummy_prefix
            and not norm.remove_extra_whitespaces and all(a > b for a, b in zip(scores, scores[1:]))):
        raise ValueError(f"{tok.model_file}: not the ChatGLM2/3 SentencePiece layout this converter reproduces")
    vocab = {p.piece: i for i, p in enumerate(pieces)}
    # only NORMAL pieces merge: text can't spell <unk>, <s>, </s> or the <0x..> byte pieces in sentencepiece
    normal = {p.piece: i for i, p in enumerate(pieces) if p.type == p.NORMAL}
    backend = Tokenizer(BPE(vocab, generate_merges(normal), unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1)])
    # pad <unk> and eos </s> become matchable specials in any HF tokenizer; <s> (never used by ChatGLM) stays plain
    # text so "<s>" in data (HTML, code) still tokenizes as sentencepiece does
    backend.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in ("<unk>", "</s>")])
    return backend


def _tiktoken_backend(tok: GLM4Tokenizer):
    """Byte-level BPE through transformers' TikTokenConverter, fed the already parsed ranks."""
    from tokenizers import pre_tokenizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class RankConverter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(lambda _path: tok.ranks)

    backend = RankConverter(vocab_file=str(tok.model_file), pattern=tok.PATTERN).converted()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(SEGMENT_BREAK, behavior="removed"), backend.pre_tokenizer])
    return backend
