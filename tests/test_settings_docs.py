"""The configuration reference and config/agent-coord.toml are generated from the settings
definition, and the committed copies are what the generator prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway import settings_docs
from gateway.settings import setting_names

REPO = Path(__file__).resolve().parents[1]


def test_every_setting_has_a_description() -> None:
    """gateway/settings_docs.py describes exactly the settings there are."""
    assert set(settings_docs.DOCS) == set(setting_names())


def test_the_committed_config_file_is_the_generated_one() -> None:
    """config/agent-coord.toml is what `agent-coord docs config-toml` prints."""
    assert (REPO / "config" / "agent-coord.toml").read_text(encoding="utf-8") == settings_docs.config_toml()


def test_the_reference_in_operations_md_is_the_generated_one() -> None:
    """docs/operations.md holds what `agent-coord docs config` prints, between its markers."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert settings_docs.reference_markdown() in text
    assert settings_docs.splice_reference(text) == text


def test_the_generator_command_splices_the_reference(tmp_path: Path) -> None:
    """`agent-coord docs config --splice FILE` replaces an outdated reference in FILE."""
    stale = tmp_path / "ops.md"
    stale.write_text(
        f"# Ops\n\n{settings_docs.REFERENCE_BEGIN}\nold\n{settings_docs.REFERENCE_END}\n\nafter\n",
        encoding="utf-8",
    )
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway.cli", "docs", "config", "--splice", str(stale)],
        check=True,
        timeout=60,
    )
    text = stale.read_text(encoding="utf-8")
    assert text == f"# Ops\n\n{settings_docs.reference_markdown()}\nafter\n"
