"""Where things live (data, cache) and how files are read and written: JSON lines tolerant of bad rows, and
atomic writes, so an interrupted run never leaves half a samples.jsonl or metrics.json behind."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from glm_eval.core.errors import UserError

_UMASK = os.umask(0o022)  # read once at import (os.umask sets it too; put back at once)
os.umask(_UMASK)


def data_root(configured: str | None) -> Path | None:
    """The local data folder (laid out like ../shared/data): `data_dir`, else env GLM_EVAL_DATA, else None (hub)."""
    root = configured or os.environ.get("GLM_EVAL_DATA")
    return Path(root).expanduser() if root else None


def cache_root(configured: str | None = None) -> Path:
    """Response cache and converted models: `cache_dir`, else env GLM_EVAL_CACHE, else ~/.cache/glm_eval."""
    root = configured or os.environ.get("GLM_EVAL_CACHE") or Path.home() / ".cache" / "glm_eval"
    return Path(root).expanduser()


def writable_folder(path: Path, option: str) -> None:
    """Raise UserError unless `path` is (or can be made) a folder this process can write into: checked before a
    run's work, not after it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".glm-eval-write-check-"):
            pass
    except OSError as e:
        raise UserError(f"{option}={path} is not a writable folder ({e.strerror or type(e).__name__}); "
                        f"give another {option}") from None


def temporary_folder(parent: Path, prefix: str) -> Path:
    """A new folder `<prefix><pid>-<random>` in `parent` for a result built in place and renamed when complete.
    First removes the ones whose process is gone (a conversion killed halfway leaves hundreds of MB)."""
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f"{glob_escape(prefix)}*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=f"{prefix}{os.getpid()}-"))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> tuple[list[dict | None], list[str]]:
    """Rows of a JSON-lines file (None for a line that is not a JSON object) and the problems found."""
    rows, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:  # bytes that are no UTF-8 make a malformed row
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append(row if isinstance(row, dict) else None)
            except json.JSONDecodeError as e:
                rows.append(None)
                bad.append(f"{path.name}:{number}: {e.msg}")
    return rows, bad


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: readers see the old file or
    the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it (mkstemp makes 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it (a crash leaves no empty file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite(value):
    """`value` with NaN and infinities (a mean of nothing, a stderr of one) as None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: Path, payload) -> None:
    write_atomic(path, json.dumps(finite(payload), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def config_dir() -> Path:
    """The Hydra config folder: glm_eval/configs in an installed package, the checkout's top-level configs/ in an
    editable install (pyproject maps it there)."""
    from importlib.resources import files
    return Path(str(files("glm_eval.configs")))
