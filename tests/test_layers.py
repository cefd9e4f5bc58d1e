"""The import layers of docs/architecture.md, checked: each part of `gateway` imports only the
parts its row of the table allows, so the layers cannot drift unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"

BASE = frozenset(
    {
        "clock",
        "errors",
        "settings",
        "settings_docs",
        "logs",
        "retry",
        "metrics",
        "keyed_locks",
        "loop_watch",
        "__version__",
    }
)
"""The base modules (and the package's version), which every part may import."""

ALLOWED: dict[str, frozenset[str]] = {
    # the base modules import each other only; settings takes the phase names from the domain
    **dict.fromkeys(BASE, BASE),
    "settings": BASE | {"domain"},
    "domain": frozenset({"errors"}),
    "actors": BASE,
    "store": frozenset({"domain", "actors"}),
    "do": BASE | {"domain", "actors", "store"},
    "legacy": BASE | {"domain", "store"},
    "phases": BASE | {"domain", "actors", "store"},
    "http": BASE | {"domain", "store", "phases"},
    "bulk": BASE | {"domain", "actors", "store", "do", "legacy"},
    "backup": BASE | {"domain", "actors", "phases"},
}
"""part -> the parts it may import (besides itself). Entry modules and test helpers are free."""

ENTRY = ("cli.py", "app.py", "__main__.py")


def part_of(module: str) -> str | None:
    """`gateway.legacy.store` -> `legacy`; `gateway.settings` -> `settings`."""
    parts = module.split(".")
    return parts[1] if parts[0] == "gateway" and len(parts) > 1 else None


def is_free(path: Path) -> bool:
    """Entry points (`cli.py`, `*_cli.py`, `app.py`) and `gateway/testing` may import any part."""
    rel = path.relative_to(GATEWAY)
    return rel.parts[0] == "testing" or path.name in ENTRY or path.name.endswith("_cli.py")


def imports_of(path: Path) -> set[str]:
    """Every `gateway.*` module the file imports, at any depth (lazy and TYPE_CHECKING ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("gateway.")}


MODULES = sorted(p for p in GATEWAY.rglob("*.py") if not is_free(p) and p != GATEWAY / "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(GATEWAY)) for p in MODULES])
def test_each_module_imports_only_what_its_layer_allows(path: Path) -> None:
    """No import runs against the layers: the domain knows no store, the stores do not know each
    other, the phases and the HTTP layer reach the stores only through the seams of store.py."""
    rel = path.relative_to(GATEWAY)
    part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    allowed = ALLOWED[part] | {part}
    wrong = sorted(m for m in imports_of(path) if (p := part_of(m)) is not None and p not in allowed)
    assert wrong == [], f"{rel} ({part}) may import only {sorted(allowed)}"


def test_every_part_has_a_row() -> None:
    """A new folder or top-level module gets a row in the table (and in docs/architecture.md)."""
    parts = {
        (p.relative_to(GATEWAY).parts[0] if len(p.relative_to(GATEWAY).parts) > 1 else p.stem)
        for p in MODULES
    }
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The parser finds plain, from-, lazy and TYPE_CHECKING imports alike."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import gateway.legacy.keys\n"
        "from gateway.do import COORDINATOR\n"
        "if TYPE_CHECKING:\n    from gateway.http.handlers import Gateway\n"
        "def f():\n    from gateway.phases import router\n",
        encoding="utf-8",
    )
    assert {part_of(m) for m in imports_of(src)} == {"legacy", "do", "http", "phases"}
