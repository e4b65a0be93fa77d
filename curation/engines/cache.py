"""Persistent request cache: a finished generation is never sent to an engine again.

Keyed by :func:`curation.engines.base.request_key` (engine, model, prompt, frames, schema,
sampling) in one SQLite file (WAL mode, so several processes can read and write it at once).
Only successful generations are stored: a failed one (server error, unparsable answer) is
retried by the next run.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from curation.engines.base import Engine, Generation, Request, request_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    engine TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
)
"""


class RequestCache:
    """A SQLite file of finished generations (text only; parsing is redone on read)."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the cache file at ``path``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute(_SCHEMA)
        self._con.commit()

    def get(self, key: str) -> Generation | None:
        """The stored generation for ``key`` (marked ``cached``), or None."""
        with self._lock:
            row = self._con.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM generations WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return Generation(text=row[0], cached=True, prompt_tokens=row[1],
                          completion_tokens=row[2])

    def put(self, key: str, engine: str, model: str, gen: Generation) -> None:
        """Store a finished generation (first write wins)."""
        with self._lock:
            self._con.execute(
                "INSERT OR IGNORE INTO generations (key, engine, model, text, prompt_tokens, "
                "completion_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                (key, engine, model, gen.text, gen.prompt_tokens, gen.completion_tokens),
            )
            self._con.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM generations").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        self._con.close()


class CachedEngine:
    """An engine behind a :class:`RequestCache`: only cache misses reach the engine."""

    def __init__(self, engine: Engine, cache: RequestCache) -> None:
        """Wrap ``engine``; ``kind`` and ``model_id`` are the wrapped engine's."""
        self.engine = engine
        self.cache = cache
        self.kind = engine.kind
        self.model_id = engine.model_id
        #: requests answered by the engine / from the cache since creation.
        self.sent = 0
        self.hits = 0

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Answer from the cache where possible; send the rest in one engine call."""
        from curation.engines.base import parse_json

        keys = [request_key(self.kind, self.model_id, r) for r in requests]
        out: list[Generation | None] = []
        for key, req in zip(keys, requests, strict=True):
            hit = self.cache.get(key)
            if hit is not None:
                parsed = parse_json(hit.text, req.schema)
                parsed.cached, parsed.prompt_tokens = True, hit.prompt_tokens
                parsed.completion_tokens = hit.completion_tokens
                hit = parsed
            out.append(hit)
        todo = [i for i, g in enumerate(out) if g is None]
        self.hits += len(requests) - len(todo)
        if todo:
            fresh = self.engine.generate([requests[i] for i in todo])
            self.sent += len(todo)
            for i, gen in zip(todo, fresh, strict=True):
                out[i] = gen
                if gen.ok:
                    self.cache.put(keys[i], self.kind, self.model_id, gen)
        return [g for g in out if g is not None]
