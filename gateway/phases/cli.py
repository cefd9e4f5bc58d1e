"""`agent-coord phase show | set | history | dead-letters | retry-dead | drop-dead`: phase control
and the repair dead-letter list, through the gateway's admin API.

The commands talk to a running gateway (the phase must change without a restart and without
dropping requests, so only the gateway itself may switch it). The URL defaults to the
configured `server.host:server.port`; the token to `migration.admin_token` or the token file
the gateway keeps in its data directory.

Exit status: 0 done, 1 refused by a guard (the reasons are printed), 2 bad usage or settings,
3 the gateway cannot be reached or refused the token.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import urllib.error
import urllib.request
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO

from gateway.domain.jscompat import parse_js_date
from gateway.domain.phase import PHASES
from gateway.http.token_file import TOKEN_FILE, cli_token
from gateway.settings import Settings

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def add_phase_parser(sub: Any) -> None:
    """Register `phase` and its subcommands on the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway's base URL (default: http://<server.host>:<server.port>)")
    common.add_argument(
        "--token", help="admin token (default: migration.admin_token, or <data_dir>/admin-token)"
    )
    common.add_argument("--config", type=Path, help="TOML config file (default: $AGENT_COORD_CONFIG)")
    common.add_argument("--data-dir", help="the gateway's data directory (to find its admin token)")
    common.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p = sub.add_parser(
        "phase",
        help="show or change the migration phase of a running gateway",
        description="Show or change the migration phase of a running gateway through its admin API. "
        "Exit status: 0 done, 1 refused by a guard, 2 bad usage or settings, 3 gateway unreachable.",
    )
    ps = p.add_subparsers(
        dest="phase_cmd", required=True, metavar="show|set|history|dead-letters|retry-dead|drop-dead"
    )
    ps.add_parser(
        "show",
        parents=[common],
        help="phase, since when, repair queue, shadow mismatches, last consistency report",
    )
    s = ps.add_parser("set", parents=[common], help="change the phase (guards apply unless --force)")
    s.add_argument("phase", choices=PHASES)
    s.add_argument("--reason", required=True, help="why; recorded in the audit log")
    s.add_argument("--force", action="store_true", help="override the guards (recorded as forced)")
    s.add_argument("--actor", help="who is changing it (default: user@host)")
    h = ps.add_parser("history", parents=[common], help="the audit log of phase changes")
    h.add_argument("--limit", type=int, default=50)
    d = ps.add_parser("dead-letters", parents=[common], help="repairs that failed their last retry, and why")
    d.add_argument("--limit", type=int, default=100)
    for name, what in (
        ("retry-dead", "put dead letters back in the repair queue (after fixing the values)"),
        ("drop-dead", "forget dead letters: their entities stay as the target store holds them"),
    ):
        r = ps.add_parser(name, parents=[common], help=what)
        r.add_argument(
            "seqs", nargs="*", type=int, metavar="SEQ", help="dead-letter numbers (see dead-letters)"
        )
        r.add_argument("--all", action="store_true", help="every dead letter")
        r.add_argument("--actor", help="who is acting (default: user@host)")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from gateway.settings import SettingsError, load_settings  # noqa: PLC0415

    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["storage.data_dir"] = args.data_dir
    try:
        settings = load_settings(config_path=args.config, overrides=overrides)
    except SettingsError as e:
        sys.stderr.write(f"agent-coord: error: {e}\n")
        return EXIT_USAGE
    return run_phase(args, settings)


class AdminClient:
    """A small synchronous client of the admin API."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(  # noqa: S310 - the URL is the operator's own gateway
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"error": raw.decode("utf-8", "replace")}


def _token(args: argparse.Namespace, settings: Settings) -> str | None:
    return cli_token(args.token, settings.migration.admin_token, settings.storage.data_dir)


def _ago(iso: str | None, now_ms: int) -> str:
    ms = parse_js_date(iso) if iso else None
    if ms is None:
        return "unknown"
    s = max(0, (now_ms - ms) // 1000)
    for unit, size in (("h", 3600), ("min", 60)):
        if s >= 2 * size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def print_status(status: dict[str, Any], out: TextIO, now_ms: int) -> None:
    """The human form of `/admin/status`."""
    q = status.get("repairQueue", {})
    rows = [
        ("phase", f"{status['phase']} (since {status['since']}, {_ago(status.get('since'), now_ms)})"),
        ("reads from", str(status.get("reads", "?"))),
        ("writes to", str(status.get("writes", "?"))),
        (
            "repair queue",
            f"{q.get('depth', 0)} entries"
            + (f", oldest {q['oldestAgeMs'] // 1000} s old" if q.get("oldestAgeMs") is not None else ""),
        ),
    ]
    shadow = status.get("shadow") or {}
    domains = shadow.get("domains") or {}
    if domains:
        parts = [
            f"{name} {d['mismatched']}/{d['compared']} ({d['mismatchRate'] * 100:.2f}%)"
            for name, d in domains.items()
        ]
        rows.append(("shadow mismatches", "; ".join(parts)))
    else:
        rows.append(("shadow mismatches", f"none compared (sample rate {shadow.get('sampleRate', 0)})"))
    report = status.get("consistency") or {}
    rows.append(("consistency report", str(report.get("summary", "none"))))
    dead = int(q.get("deadLetters", 0))
    rows.append(("dead letters", f"{dead} (blocking read-switch and cutover)" if dead else "none"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.write(f"{k.ljust(width)}  {v}\n")
    print_dead_letters(status.get("deadLetters") or [], out)


def print_dead_letters(letters: list[dict[str, Any]], out: TextIO) -> None:
    """One line per dead letter: its number, entity, target, attempts and reason."""
    for d in letters:
        scope = f"{d.get('scope')}/" if d.get("scope") else ""
        out.write(
            f"  #{d['seq']}  {d['domain']} {scope}{d['id']} -> {d['target']}  "
            f"after {d['attempts']} attempts, {d['deadAt']}: {d['reason']}\n"
        )


def _usage_problem(args: argparse.Namespace, settings: Settings, token: str | None) -> str | None:
    if not token:
        return (
            "no admin token: pass --token, set migration.admin_token, or run on the gateway's machine "
            f"(the gateway writes {Path(settings.storage.data_dir) / TOKEN_FILE} at start-up)"
        )
    if args.phase_cmd in ("retry-dead", "drop-dead") and bool(args.seqs) == bool(args.all):
        return f"agent-coord phase {args.phase_cmd}: give dead-letter numbers or --all (not both)"
    return None


def _request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """The admin API call of a `phase` subcommand: method, path and body."""
    cmd = args.phase_cmd
    actor = getattr(args, "actor", None) or f"{getpass.getuser()}@{socket.gethostname()}"
    if cmd == "show":
        return "GET", "/admin/status", None
    if cmd == "history":
        return "GET", f"/admin/phase/history?limit={max(1, args.limit)}", None
    if cmd == "dead-letters":
        return "GET", f"/admin/repair/dead-letters?limit={max(1, args.limit)}", None
    if cmd in ("retry-dead", "drop-dead"):
        selection: dict[str, Any] = {"all": True} if args.all else {"seqs": args.seqs}
        action = "retry" if cmd == "retry-dead" else "drop"
        return "POST", "/admin/repair/dead-letters", {"action": action, **selection, "actor": actor}
    return (
        "POST",
        "/admin/phase",
        {"phase": args.phase, "reason": args.reason, "force": args.force, "actor": actor},
    )


def run_phase(
    args: argparse.Namespace, settings: Settings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Carry out `agent-coord phase ...`; returns the exit status."""
    token = _token(args, settings)
    problem = _usage_problem(args, settings, token)
    if problem or not token:
        err.write(f"{problem}\n")
        return EXIT_USAGE
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    client = AdminClient(url, token)
    try:
        status_code, body = client.request(*_request_for(args))
    except (urllib.error.URLError, OSError) as e:
        err.write(f"cannot reach the gateway at {url}: {e}\n")
        return EXIT_UNREACHABLE
    if status_code == HTTPStatus.UNAUTHORIZED:
        err.write(f"the gateway at {url} refused the admin token\n")
        return EXIT_UNREACHABLE
    if args.json:
        out.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    if status_code == HTTPStatus.CONFLICT:
        if not args.json:
            err.write(f"refused: {body.get('error')}\n")
            for reason in body.get("reasons", []):
                err.write(f"  - {reason}\n")
            err.write("use --force to override (recorded in the audit log)\n")
        return EXIT_REFUSED
    if status_code != HTTPStatus.OK:
        err.write(f"error {status_code}: {body.get('error') if isinstance(body, dict) else body}\n")
        return EXIT_USAGE if status_code < HTTPStatus.INTERNAL_SERVER_ERROR else EXIT_UNREACHABLE
    if not args.json:
        _print_human(args.phase_cmd, body, out)
    return EXIT_OK


def _print_human(cmd: str, body: dict[str, Any], out: TextIO) -> None:
    import time  # noqa: PLC0415 - only for the human form

    now_ms = int(time.time() * 1000)
    if cmd == "show":
        print_status(body, out, now_ms)
    elif cmd == "dead-letters":
        letters = body.get("deadLetters", [])
        out.write(f"{len(letters)} dead letters\n" if letters else "no dead letters\n")
        print_dead_letters(letters, out)
    elif cmd in ("retry-dead", "drop-dead"):
        verb = "put back in the repair queue" if body.get("action") == "retry" else "dropped"
        out.write(f"{body.get('count', 0)} dead letters {verb}\n")
    elif cmd == "history":
        changes = body.get("changes", [])
        if not changes:
            out.write("no phase changes recorded\n")
        for c in changes:
            forced = " (forced)" if c.get("forced") else ""
            out.write(
                f"{c['at']}  {c['from'] or '-':>13} -> {c['to']:<13}  {c['actor']}{forced}: {c['reason']}\n"
            )
    else:
        c = body["change"]
        forced = " (forced)" if c.get("forced") else ""
        out.write(f"phase changed: {c['from']} -> {c['to']}{forced} at {c['at']}\n")
