"""Where things live (data, cache) and how files are read and written: JSON lines tolerant of bad rows, and
atomic writes, so an interrupted run never leaves half a samples.jsonl or metrics.json behind."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def data_root(configured: str | None) -> Path | None:
    """The local data folder (laid out like ../shared/data): `data_dir`, else env GLM_EVAL_DATA, else None (hub)."""
    root = configured or os.environ.get("GLM_EVAL_DATA")
    return Path(root).expanduser() if root else None


def cache_root(configured: str | None = None) -> Path:
    """Response cache and converted models: `cache_dir`, else env GLM_EVAL_CACHE, else ~/.cache/glm_eval."""
    root = configured or os.environ.get("GLM_EVAL_CACHE") or Path.home() / ".cache" / "glm_eval"
    return Path(root).expanduser()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> tuple[list[dict | None], list[str]]:
    """Rows of a JSON-lines file (None for a line that is not a JSON object) and the problems found."""
    rows, bad = [], []
    with open(path, encoding="utf-8") as f:
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
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload) -> None:
    write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def config_dir() -> Path:
    """The Hydra config folder: glm_eval/configs in an installed package, the checkout's top-level configs/ in an
    editable install (pyproject maps it there)."""
    from importlib.resources import files
    return Path(str(files("glm_eval.configs")))
