"""The emulator's Search at scale: milliseconds per Search over a store of many talks.

    python benchmarks/search_scale.py [--talks 200000]

Fills a temporary emulator store with TALKS talks (the sample metadata, 7 fields each) and
times Searches for one value and for 100 values of one key, as settling sends them: each is
answered from the (key, value) index, so the time should not grow with the talks stored.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bulk_uploader import samples
from bulk_uploader.emulator import TalkStore


def fill(store: TalkStore, talks: int) -> None:
    db = store._db  # bulk insert in one transaction: add() commits talk by talk
    db.execute("BEGIN")
    for n in range(talks):
        fields = samples.metadata(n)
        db.execute("INSERT INTO talks (talk_id, connection_id, rpc, format, size, sha256, fields, users, created_at)"
                   " VALUES (?,?,?,?,?,?,?,?,?)",
                   (f"t{n}", "demo-audio", "Upload", "wav", 1, "x", json.dumps(fields), "[]", time.time()))
        db.executemany("INSERT INTO talk_fields VALUES (?,?,?)", [(f"t{n}", k, v) for k, v in fields.items()])
    db.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--talks", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = TalkStore(Path(folder) / "store.sqlite3")
        fill(store, args.talks)
        for values in (["cl-100"], [f"cl-{n}" for n in range(1000, 1100)]):
            started = time.perf_counter()
            for _ in range(20):
                store.search("demo-audio", [("client_id", values, False)], 0, 1000, time.time())
            print(f"{args.talks} talks, Search for {len(values)} value(s): "
                  f"{(time.perf_counter() - started) / 20 * 1000:.2f} ms")
        store.close()


if __name__ == "__main__":
    main()
