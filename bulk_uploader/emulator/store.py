"""Durable record of every talk the emulator accepted (SQLite).

Each accepted talk is committed before the caller is answered, so a test or a user can
count what arrived, find duplicates and inspect one talk, even after the emulator was
killed. Readers open the same file (WAL mode lets them read while the emulator writes).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS talks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    talk_id TEXT NOT NULL UNIQUE,
    connection_id TEXT NOT NULL,
    rpc TEXT NOT NULL,
    format TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    message_count INTEGER,
    fields TEXT NOT NULL,
    users TEXT NOT NULL,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS talk_fields (
    talk_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS talk_fields_kv ON talk_fields (key, value);
CREATE INDEX IF NOT EXISTS talk_fields_talk ON talk_fields (talk_id);
"""


@dataclass(frozen=True, slots=True)
class StoredTalk:
    """One accepted talk as the store holds it."""

    talk_id: str
    connection_id: str
    rpc: str
    format: str | None
    size: int
    sha256: str
    message_count: int | None
    fields: dict[str, str]
    users: list[dict[str, Any]]
    idempotency_key: str | None
    created_at: float
    updated_at: float | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the form `bulk-upload talks` prints)."""
        return {name: getattr(self, name) for name in self.__slots__}


def messages_digest(messages: Iterable[tuple[str, str, str]]) -> tuple[str, int]:
    """sha256 and count of chat messages given as (user_id, RFC 3339 UTC timestamp, text).

    The canonical form is one JSON array per message, newline-separated, so the uploader's
    tests can compute the same digest from their own input.
    """
    digest, count = hashlib.sha256(), 0
    for user_id, timestamp, text in messages:
        digest.update(json.dumps([user_id, timestamp, text], ensure_ascii=False).encode() + b"\n")
        count += 1
    return digest.hexdigest(), count


class TalkStore:
    """SQLite-backed store of accepted talks; safe to call from one event loop and from readers."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed talk survives the emulator process dying (not a power cut).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        """Flush and close the database."""
        with self._lock:
            self._db.close()

    def add(
        self,
        *,
        talk_id: str,
        connection_id: str,
        rpc: str,
        format: str | None,
        size: int,
        sha256: str,
        fields: Mapping[str, str],
        users: list[dict[str, Any]],
        message_count: int | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Commit one accepted talk."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO talks (talk_id, connection_id, rpc, format, size, sha256, message_count,"
                " fields, users, idempotency_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    talk_id,
                    connection_id,
                    rpc,
                    format,
                    size,
                    sha256,
                    message_count,
                    json.dumps(dict(fields), ensure_ascii=False, sort_keys=True),
                    json.dumps(users, ensure_ascii=False),
                    idempotency_key,
                    time.time(),
                ),
            )
            self._insert_fields(talk_id, fields, users)
            self._db.execute("COMMIT")

    def _insert_fields(self, talk_id: str, fields: Mapping[str, str], users: list[dict[str, Any]]) -> None:
        rows = [(talk_id, k, v) for k, v in fields.items()]
        rows += [(talk_id, f"user:{k}", v) for user in users for k, v in user.get("fields", {}).items()]
        self._db.executemany("INSERT INTO talk_fields (talk_id, key, value) VALUES (?,?,?)", rows)

    def update_metadata(self, talk_id: str, fields: Mapping[str, str], users: list[dict[str, Any]]) -> bool:
        """Replace a talk's fields and users; False when no such talk exists."""
        with self._lock:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "UPDATE talks SET fields = ?, users = ?, updated_at = ? WHERE talk_id = ?",
                (json.dumps(dict(fields), ensure_ascii=False, sort_keys=True), json.dumps(users), time.time(), talk_id),
            )
            if cur.rowcount:
                self._db.execute("DELETE FROM talk_fields WHERE talk_id = ?", (talk_id,))
                self._insert_fields(talk_id, fields, users)
            self._db.execute("COMMIT")
            return bool(cur.rowcount)

    def get(self, talk_id: str) -> StoredTalk | None:
        """One talk by id."""
        with self._lock:
            row = self._db.execute("SELECT * FROM talks WHERE talk_id = ?", (talk_id,)).fetchone()
        return _talk(row) if row else None

    def count(self) -> int:
        """How many talks are stored."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM talks").fetchone()[0])

    def talks(self) -> Iterator[StoredTalk]:
        """Every stored talk, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM talks ORDER BY seq").fetchall()
        return (_talk(row) for row in rows)

    def get_many(self, talk_ids: Iterable[str]) -> list[StoredTalk]:
        """The talks among these ids that exist, in the order asked."""
        ids = list(dict.fromkeys(talk_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM talks WHERE talk_id IN ({','.join('?' * len(ids))})",
                                    ids).fetchall() if ids else []
        found = {row["talk_id"]: _talk(row) for row in rows}
        return [found[i] for i in ids if i in found]

    def search(
        self, connection_id: str, filters: list[tuple[str, list[str], bool]], offset: int, limit: int,
        created_before: float | None = None,
    ) -> tuple[list[str], int]:
        """Talk ids matching every (key, any-of values, inverse) filter, oldest first; a page and the total.

        `created_before` (epoch seconds) hides talks stored later: the index lag.
        """
        sql, args = _search_sql(connection_id, filters, created_before)
        with self._lock:
            ids = [r[0] for r in self._db.execute(sql, args).fetchall()]
        return ids[offset : offset + limit], len(ids)

    def query_plan(self, connection_id: str, filters: list[tuple[str, list[str], bool]]) -> str:
        """How SQLite runs such a Search, one step a line (tests check that it uses the index)."""
        sql, args = _search_sql(connection_id, filters, None)
        with self._lock:
            return "\n".join(str(row[-1]) for row in self._db.execute("EXPLAIN QUERY PLAN " + sql, args))

    def duplicates(self, key: str) -> dict[str, int]:
        """Values of a talk field held by more than one talk, with their counts."""
        with self._lock:
            rows = self._db.execute(
                "SELECT value, COUNT(*) FROM talk_fields WHERE key = ? GROUP BY value HAVING COUNT(*) > 1",
                (key,),
            ).fetchall()
        return {value: n for value, n in rows}


def _search_sql(connection_id: str, filters: list[tuple[str, list[str], bool]],
                created_before: float | None) -> tuple[str, list[Any]]:
    """A Search as SQL. The first filter that is not inverse drives the query through the
    (key, value) index, so a Search for a few values costs a few index lookups however many
    talks are stored; only a Search with no such filter scans the talks."""
    positive = next((n for n, (_, _, inverse) in enumerate(filters) if not inverse), None)
    args: list[Any] = []
    if positive is None:
        sql = "SELECT t.talk_id FROM talks t WHERE 1=1"
    else:
        key, values, _ = filters[positive]
        sql = (f"SELECT t.talk_id FROM talk_fields d JOIN talks t ON t.talk_id = d.talk_id"
               f" WHERE d.key = ? AND d.value IN ({','.join('?' * len(values)) or 'NULL'})")
        args += [key, *values]
    if connection_id:
        sql += " AND t.connection_id = ?"
        args.append(connection_id)
    if created_before is not None:
        sql += " AND t.created_at <= ?"
        args.append(created_before)
    for n, (key, values, inverse) in enumerate(filters):
        if n != positive:
            marks = ",".join("?" * len(values)) or "NULL"
            sql += (f" AND {'NOT ' if inverse else ''}EXISTS (SELECT 1 FROM talk_fields f"
                    f" WHERE f.talk_id = t.talk_id AND f.key = ? AND f.value IN ({marks}))")
            args += [key, *values]
    return sql + " ORDER BY t.seq", args


def _talk(row: sqlite3.Row) -> StoredTalk:
    data = dict(row)
    data.pop("seq")
    data["fields"] = json.loads(data["fields"])
    data["users"] = json.loads(data["users"])
    return StoredTalk(**data)
