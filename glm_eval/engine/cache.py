"""Write-through response cache: one SQLite file (WAL), shared by runs and processes.

Key = sha256(backend fingerprint + request identity: exact prompt tokens and every generation parameter).
Each response is committed as soon as the backend returns it, so a run killed with SIGKILL loses at most
the requests in flight. WAL mode plus a busy timeout lets concurrent runs read and write the same file.
Failed requests are never stored. A cache that cannot be opened, read or written (corrupt, read-only, a folder
that is a file, a full disk) is one line naming the file and the fixes, checked before any model loads; one that
fills up mid-run is a warning, and the run finishes with its answers in memory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from glm_eval.core.errors import UserError, describe
from glm_eval.core.protocol import Request, Response

log = logging.getLogger(__name__)


class ResponseCache:
    def __init__(self, path: Path):
        self.path, self.writable = path, True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)  # autocommit: every put is durable
            for attempt in range(100):  # processes creating the file together (torchrun ranks): SQLite answers
                try:                    # "locked" at once on the switch to WAL, whatever the busy timeout
                    self.db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 99:
                        raise
                    time.sleep(0.05)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("BEGIN IMMEDIATE")  # can this process write? (a read-only file opens read-only)
            self.db.execute("ROLLBACK")
        except (OSError, sqlite3.Error) as e:
            raise self._unusable(e) from None

    def _unusable(self, error: Exception) -> UserError:
        return UserError(f"the response cache {self.path} is unusable ({describe(error, 120)}); "
                         f"set cache_dir=<a writable folder>, or move the file aside and rerun")

    @staticmethod
    def key(fingerprint: str, request: Request) -> str:
        payload = json.dumps([fingerprint, type(request).__name__, request.identity()], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found = {}
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self.db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                    try:
                        found[key] = Response(**json.loads(value))
                    except (ValueError, TypeError):  # a damaged row: asked again, then replaced
                        continue
        except sqlite3.Error as e:
            raise self._unusable(e) from None
        return found

    def put(self, key: str, response: Response) -> None:
        """Store a response. A cache that stops taking writes mid-run (its disk filled up) must not stop the run
        or lose its answers: one warning, and the run goes on with its answers in memory."""
        if response.error is None and self.writable:
            try:
                self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(asdict(response))))
            except sqlite3.Error as e:
                self.writable = False
                log.warning(f"the response cache {self.path} can no longer be written ({describe(e, 120)}): the "
                            f"answers from here on are kept for this run only, and a rerun would generate them again")

    def close(self) -> None:
        self.db.close()
