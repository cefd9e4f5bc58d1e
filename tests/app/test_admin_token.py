"""The admin token the gateway creates in its data directory, and how the tools find it."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import build_parser
from gateway.http.admin import admin_token
from gateway.http.token_file import TOKEN_FILE, cli_token


def test_a_created_token_can_be_given_to_every_tool_as_an_argument(tmp_path: Path) -> None:
    """No created token starts with "-", which `--token <token>` would take for an option
    (exit 2, bad usage); each is a private file of the data directory and long enough."""
    for i in range(256):
        data_dir = tmp_path / str(i)
        token = admin_token(None, data_dir)
        assert not token.startswith("-")
        assert len(token) >= 43  # at least 256 bits
        assert (data_dir / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
        assert admin_token(None, data_dir) == token  # kept, not made again
    for command in (
        ["phase", "show"],
        ["check"],
        ["migrate", "export", "--from", "actors", "--out", "x.jsonl"],
        ["backup", "--out", "x.tar"],
    ):
        ns = build_parser().parse_args([*command, "--token", token])
        assert ns.token == token


def test_the_tools_take_the_given_token_then_the_configured_one_then_the_file(tmp_path: Path) -> None:
    """`--token` wins over `migration.admin_token`, which wins over the data directory's file;
    with none of them there is no token."""
    assert cli_token(None, None, tmp_path) is None
    (tmp_path / TOKEN_FILE).write_text("from-file\n", encoding="utf-8")
    assert cli_token(None, None, tmp_path) == "from-file"
    assert cli_token(None, "configured", tmp_path) == "configured"
    assert cli_token("given", "configured", tmp_path) == "given"
