"""Instructions a compared entity of `agent-coord check`, counted by callgrind: a steady measure
where wall and CPU times drift with a shared machine's speed.

    flock /work/bench.lock .venv/bin/python bench/check_instructions.py --json FILE
    flock /work/bench.lock .venv/bin/python bench/check_instructions.py --scale 20000 --sample 0.1

It starts a private redis-server (a free loopback port, never 6379; `gateway.testing.RedisServer`),
fills it with the realistic legacy data set at `--scale` (`gateway.legacy.generator`, seed 1) and
imports it into a fresh data directory through the bulk layer (`check_bench.build`, what the
migration tool does), then runs the real command line, `python -m gateway.cli check --json
--rounds 0` (with `--jobs 2`, the default: the walk split over two processes), under `valgrind
--tool=callgrind --trace-children=yes`, once in full and once per `--sample` rate. Reported: the
instructions of every process of the check (callgrind's `Ir`, summed over the checking process and
its second one; redis-server is not under valgrind), the entities compared (report
`totals.compared`) and thousand instructions an entity. Start-up (the interpreters' imports, the
stores opened) is in the count: it is part of what a check costs, and what `--scale` makes small
or large beside the walk.

The count does not depend on the machine's speed; it does depend a little on the run (the order
in which the two processes' batches meet, a garbage collection more or less). Compare two
commits with a worktree of each, the same `--scale` and seed. A benchmark, not a test: it asserts
nothing. Every process it starts is stopped at the end (the redis-server by `RedisServer`), the
temporary directory removed unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from check_bench import build  # bench/ is this script's directory

from gateway.testing import RedisServer

ROOT: Final = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S: Final = 3600.0  # one check under callgrind, at most (about 50 times its own time)


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def counted(url: str, data_dir: Path, cg_dir: Path, label: str, *extra: str) -> dict[str, Any]:
    """One check under callgrind: instructions of its processes, entities compared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    env["PYTHONPATH"] = str(ROOT)
    prefix = cg_dir / label
    cmd = [
        "valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
        f"--callgrind-out-file={prefix}.%p", sys.executable, "-m", "gateway.cli", "check",
        "--redis-url", url, "--data-dir", str(data_dir), "--json", "--rounds", "0", "--no-progress",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    # fixed argv: valgrind, our own interpreter and this checkout's command line
    ran = subprocess.run(  # noqa: S603
        cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=RUN_TIMEOUT_S, check=False
    )
    wall = time.perf_counter() - started
    if ran.returncode not in (0, 1):
        raise SystemExit(f"check {label} failed ({ran.returncode}): {ran.stderr[-2000:]}")
    report = json.loads(ran.stdout)
    processes = []
    for path in sorted(cg_dir.glob(f"{label}.*")):
        total = next(
            (int(line.split()[1]) for line in path.read_text(errors="replace").splitlines()
             if line.startswith(("totals:", "summary:"))),
            0,
        )  # fmt: skip
        if total:  # valgrind's own helpers leave empty profiles
            processes.append(total)
    instructions = sum(processes)
    compared = int(report["totals"]["compared"])
    return {
        "args": list(extra),
        "compared": compared,
        "instructions": instructions,
        "processes": sorted(processes, reverse=True),
        "kinstr_per_entity": round(instructions / compared / 1000, 2) if compared else None,
        "wall_under_valgrind_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scale", type=int, default=20_000, help="primary entities of the data set (default 20,000)"
    )
    p.add_argument("--sample", type=float, action="append", help="also sampled checks at these rates")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir: data, callgrind profiles")
    p.add_argument("--label", help="stored in the JSON, e.g. the commit of a worktree")
    args = p.parse_args(argv)
    if not 100 <= args.scale <= 1_000_000:  # noqa: PLR2004 - documented bound
        p.error("--scale must be in 100..1,000,000")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    tmp = Path(tempfile.mkdtemp(prefix="check-instructions-"))
    result: dict[str, Any] = {
        "label": args.label,
        "scale": args.scale,
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
    }
    try:
        with RedisServer() as server:
            result["setup"] = asyncio.run(build(server.url, tmp / "data", args.scale))
            out(f"data set: {result['setup']}")
            variants = [("full", ())] + [
                (f"sample-{rate}", ("--sample", str(rate), "--seed", "1")) for rate in args.sample or []
            ]
            for label, extra in variants:
                run = counted(server.url, tmp / "data", tmp, label, *extra)
                result["runs"].append(run)
                out(
                    f"{label:14} {run['compared']:>9,} compared  {run['instructions'] / 1e9:8.2f} G "
                    f"instructions ({len(run['processes'])} processes)  "
                    f"{run['kinstr_per_entity']} thousand an entity"
                )
    finally:
        if args.keep:
            out(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
