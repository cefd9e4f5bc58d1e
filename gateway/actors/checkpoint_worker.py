"""The checkpoint helper process: WAL checkpoints of the gateway's actor files, off its loop.

Run by `checkpoint_helper.CheckpointHelper` as a script (`python -I checkpoint_worker.py MODE`,
standard library only, so it starts in a few tens of milliseconds and imports nothing of the
gateway). It reads one request a line on stdin and answers one line on stdout, as JSON:

    {"id": 7, "path": "/data/actors/shards/3.sqlite", "restart": true}
    {"id": 7, "ok": true, "busy": 0, "log": 412, "done": 412, "ms": 3.1}
    {"id": 8, "ok": false, "error": "unable to open database file"}

Each request is a PASSIVE checkpoint of the file's WAL (SQLite's WAL index is shared between
processes by design: https://www.sqlite.org/wal.html). With `restart`, and every frame copied
back, it then commits one write that changes nothing (page 1 rewritten with the same
`user_version`): the first write after a complete checkpoint starts the WAL over and syncs the
new WAL header, even under `synchronous=NORMAL`. Done here, that sync and the checkpoint's own
hold only the waiting actor's turns; done on the gateway's connection, they held its whole
event loop (`docs/benchmarks.md`, twentieth pass).

Bulk rounds run in a few threads, so the host's file actors and its shards never queue behind
each other; a held round (`restart`), short and with an actor's turns waiting for it, runs at
once on the thread that reads the requests (a thread woken for it waited for a processor on a
busy machine). The gateway never sends two requests for one file at once. A connection per file is kept
(reopened if the file was replaced); they close when stdin closes, which ends the process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

WORKERS = 4
KEPT_CONNECTIONS = 64


class Worker:
    def __init__(self, synchronous: str, out: BinaryIO) -> None:
        self.synchronous = synchronous
        self.out = out
        self._out_lock = threading.Lock()
        self._conns: dict[str, tuple[int, sqlite3.Connection]] = {}
        self._conns_lock = threading.Lock()

    def _connection(self, path: str) -> sqlite3.Connection:
        ino = Path(path).stat().st_ino  # FileNotFoundError: never create a database here
        with self._conns_lock:
            kept = self._conns.pop(path, None)
            if kept is not None and kept[0] == ino:
                self._conns[path] = kept  # most recently used last
                return kept[1]
        if kept is not None:
            kept[1].close()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        with self._conns_lock:
            self._conns[path] = (ino, conn)
            while len(self._conns) > KEPT_CONNECTIONS:
                oldest = next(iter(self._conns))
                self._conns.pop(oldest)[1].close()
        return conn

    def round(self, path: str, restart: bool) -> dict[str, Any]:
        started = time.perf_counter()
        conn = self._connection(path)
        busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if restart and busy == 0 and log_frames > 0 and done == log_frames:
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                conn.execute(f"PRAGMA user_version = {int(version)}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        ms = round((time.perf_counter() - started) * 1000, 2)
        return {"ok": True, "busy": busy, "log": log_frames, "done": done, "ms": ms}

    def handle(self, req: dict[str, Any]) -> None:
        """Answer one request."""
        try:
            reply = self.round(str(req["path"]), bool(req.get("restart")))
        except Exception as e:  # noqa: BLE001 - every failure is the caller's answer, never a hang
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        self.answer(req.get("id"), reply)

    def answer(self, req_id: Any, reply: dict[str, Any]) -> None:
        reply["id"] = req_id
        data = json.dumps(reply).encode() + b"\n"
        with self._out_lock:
            self.out.write(data)
            self.out.flush()

    def close(self) -> None:
        with self._conns_lock:
            for _, conn in self._conns.values():
                conn.close()
            self._conns.clear()


def main(argv: list[str]) -> int:
    synchronous = argv[1] if len(argv) > 1 else "NORMAL"
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        sys.stderr.write(f"checkpoint worker: unknown synchronous mode {synchronous!r}\n")
        return 2
    # Ctrl-C in the gateway's terminal and a service manager's SIGTERM reach the whole process
    # group: the helper ends when the gateway, shutting down, closes its stdin, not before
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = Worker(synchronous, sys.stdout.buffer)
    try:
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="checkpoint") as pool:
            for line in sys.stdin.buffer:
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                except ValueError as e:
                    worker.answer(None, {"ok": False, "error": f"ValueError: {e}"})
                    continue
                if not isinstance(req, dict):
                    worker.answer(None, {"ok": False, "error": "a request is a JSON object"})
                elif req.get("restart"):
                    worker.handle(req)  # a held round: short, and its actor's turns wait for it
                else:
                    pool.submit(worker.handle, req)
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
