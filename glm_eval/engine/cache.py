"""Write-through response cache: one SQLite file (WAL), shared by runs and processes.

Key = sha256(backend fingerprint + request identity: exact prompt tokens and every generation parameter).
Each response is committed as soon as the backend returns it, so a run killed with SIGKILL loses at most
the requests in flight. WAL mode plus a busy timeout lets concurrent runs read and write the same file.
Failed requests are never stored.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from glm_eval.core.protocol import Request, Response


class ResponseCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)  # autocommit: every put is durable
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    @staticmethod
    def key(fingerprint: str, request: Request) -> str:
        payload = json.dumps([fingerprint, type(request).__name__, request.identity()], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self.db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                found[key] = Response(**json.loads(value))
        return found

    def put(self, key: str, response: Response) -> None:
        if response.error is None:
            self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(asdict(response))))

    def close(self) -> None:
        self.db.close()
