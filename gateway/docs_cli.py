"""`agent-coord docs ...`: print the documents generated from the code, to regenerate the
committed copies (the tests check that each committed copy is what these print).

    agent-coord docs openapi       docs/openapi.json        (gateway/http/openapi.py)
    agent-coord docs config        the configuration reference, spliced into docs/operations.md
                                   with --splice docs/operations.md
    agent-coord docs config-toml   config/agent-coord.toml  (gateway/settings_docs.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_docs_parser"]


def _run(args: argparse.Namespace) -> int:
    # Imported here: `agent-coord --help` does not load the HTTP layer.
    from gateway import settings_docs  # noqa: PLC0415
    from gateway.http import openapi  # noqa: PLC0415

    if args.what == "openapi":
        sys.stdout.write(openapi.render().decode("utf-8"))
    elif args.what == "config-toml":
        sys.stdout.write(settings_docs.config_toml())
    elif args.splice is not None:
        path: Path = args.splice
        path.write_text(settings_docs.splice_reference(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(settings_docs.reference_markdown())
    return 0


def add_docs_parser(commands: Any) -> None:
    """Add `docs` to the `agent-coord` subcommands."""
    docs = commands.add_parser(
        "docs",
        help="print a document generated from the code (OpenAPI, configuration reference)",
        description="Print a document generated from the code, to regenerate its committed copy.",
    )
    docs.add_argument("what", choices=["openapi", "config", "config-toml"])
    docs.add_argument(
        "--splice",
        type=Path,
        metavar="FILE",
        help="config: replace the reference between its markers in FILE instead of printing it",
    )
    docs.set_defaults(handler=_run)
