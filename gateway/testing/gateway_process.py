"""A real gateway in a subprocess, for tests that need a process (SIGKILL, SIGTERM, restarts).

`GatewayProcess` runs `python -m gateway.cli serve` on a free loopback port with its own data
directory and environment, waits (bounded) until `/health` answers, and can be stopped with
SIGTERM, killed with SIGKILL and started again on the same port and directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcessError(RuntimeError):
    """The gateway process did not start, or died, or did not stop in time."""


class GatewayProcess:
    """One gateway subprocess bound to 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        redis_url: str | None = None,
        phase: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        startup_timeout_s: float = 20.0,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.redis_url = redis_url
        self.phase = phase
        self.env = env or {}
        self.extra_args = extra_args or []
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path or (data_dir.parent / f"gateway-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        if self.phase:
            cmd += ["--phase", self.phase]
        return cmd + self.extra_args

    def start(self) -> Self:
        """Start the process and wait until `/health` answers 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise GatewayProcessError("already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
        env.update({"AGENT_COORD_LOG_FORMAT": "json"}, **self.env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd()
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayProcessError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as r,  # noqa: S310 - loopback
            ):
                if r.status == 200:  # noqa: PLR2004 - HTTP OK
                    return self
            time.sleep(0.05)
        self.kill()
        raise GatewayProcessError(
            f"gateway did not answer /health in {self.startup_timeout_s} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it takes longer than `timeout_s`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise GatewayProcessError(f"gateway ignored SIGTERM for {timeout_s} s") from None
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(GatewayProcessError):
            self.stop()
