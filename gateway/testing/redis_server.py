"""A real, throw-away `redis-server` for tests: its own process, loopback port and directory.

Tests must never touch the shared Redis on 127.0.0.1:6379, so `RedisServer` picks a free port
(never 6379), binds to 127.0.0.1 only, persists nothing (`--save ''`, `--appendonly no`) and keeps
its working files in a temporary directory. It can be stopped or killed and started again on the
same port, to test a legacy store that goes away and comes back::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        server.kill()
        server.start()  # same port, same URL, empty data
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

__all__ = ["RedisServer", "RedisServerError", "RedisServerNotFoundError", "find_redis_server"]

BINARY_ENV_VAR: Final = "AGENT_COORD_REDIS_SERVER"
SHARED_REDIS_PORT: Final = 6379  # the machine's shared Redis: never ours to use
LOOPBACK: Final = "127.0.0.1"
_PING_INTERVAL_S: Final = 0.02
_LOG_TAIL_CHARS: Final = 2000


class RedisServerError(RuntimeError):
    """The test redis-server could not be started (or stopped) as asked."""


class RedisServerNotFoundError(RedisServerError):
    """No redis-server binary; the message says how to install one."""


class _NotReadyError(OSError):
    """The server does not answer PING yet (retried until the start-up timeout)."""


def find_redis_server(env: Mapping[str, str] | None = None) -> str:
    """The redis-server binary: `$AGENT_COORD_REDIS_SERVER` if set, else `redis-server` on PATH."""
    environ = os.environ if env is None else env
    configured = environ.get(BINARY_ENV_VAR, "")
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        raise RedisServerNotFoundError(
            f"{BINARY_ENV_VAR}={configured!r} is not an executable file; point it at a redis-server "
            "binary, or unset it to use redis-server from PATH"
        )
    found = shutil.which("redis-server", path=environ.get("PATH", os.defpath))
    if found is None:
        raise RedisServerNotFoundError(
            "redis-server is not installed (not found on PATH); the tests need a real one: install it "
            f"with `apt-get install redis-server`, or set {BINARY_ENV_VAR} to the path of a "
            "redis-server binary"
        )
    return found


def _free_port() -> int:
    """A port the kernel considers free on the loopback interface, never the shared 6379."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            port: int = probe.getsockname()[1]
        if port != SHARED_REDIS_PORT:
            return port


class RedisServer:
    """A redis-server subprocess on a free loopback port, for tests.

    The port is chosen once, at the first `start()` (or given), and kept across restarts, so `url`
    stays valid when the server is stopped or killed and started again. Data does not survive a
    restart (nothing is persisted). Use it as a context manager, or call `start()` and `close()`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        if port == SHARED_REDIS_PORT:
            raise ValueError(f"port {SHARED_REDIS_PORT} is the shared Redis; tests must not use it")
        self._binary = binary if binary is not None else find_redis_server()
        self._port = port
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; fixed at the first start."""
        if self._port is None:
            raise RedisServerError("the server has not been started yet, so it has no port")
        return self._port

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive (it may have been killed from outside)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self._process is not None and self.running else None

    def start(self) -> None:
        """Start the server (again, on the same port) and return once it answers PING.

        Raises RedisServerError if it exits or does not answer within `startup_timeout_s`.
        """
        if self.running:
            raise RedisServerError(f"redis-server on port {self.port} is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="agent-coord-redis-"))
        if self._port is None:
            self._port = _free_port()
        log_path = self._dir / "redis.log"
        argv = [
            self._binary,
            "--port", str(self._port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(log_path),
        ]  # fmt: skip
        # The binary is a resolved path and argv a list: no shell is involved.
        self._process = subprocess.Popen(  # noqa: S603
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, log_path: Path) -> None:
        retrying = Retrying(
            stop=stop_after_delay(self._startup_timeout_s),
            wait=wait_fixed(_PING_INTERVAL_S),
            retry=retry_if_exception_type(_NotReadyError),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._check_alive(log_path)
                    self._ping()
        except _NotReadyError as exc:
            raise RedisServerError(
                f"redis-server on port {self._port} did not answer PING within "
                f"{self._startup_timeout_s} s ({exc}); log: {self._log_tail(log_path)}"
            ) from None

    def _check_alive(self, log_path: Path) -> None:
        process = self._process
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RedisServerError(
                f"redis-server exited with code {process.returncode} while starting on port "
                f"{self._port}: {stderr.strip()} {self._log_tail(log_path)}".strip()
            )

    def _ping(self) -> None:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
        except OSError as exc:
            raise _NotReadyError(str(exc)) from None
        if not reply.startswith(b"+PONG"):
            # e.g. "-LOADING": up, but not serving yet.
            raise _NotReadyError(f"PING answered {reply!r}")

    @staticmethod
    def _log_tail(log_path: Path) -> str:
        try:
            return log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:].strip()
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM and wait for the exit (SIGKILL if it takes longer than `stop_timeout_s`)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash would, and wait for the exit."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._reap()

    def _reap(self) -> None:
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {LOOPBACK}:{self._port} {state}>"
