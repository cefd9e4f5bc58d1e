"""The actor-only domains as entities for the bulk tools (`gateway.bulk`: migrate, check).

Each entity is the agent actor's rows of one soul, trace (with its steps and escalations),
heartbeat, shadow monitor, goal or credential, table by table, exactly as stored: the migration
tool carries them between data directories unchanged (a credential's value stays ciphertext),
and the checker lists them as actor-only. `to_json` is what a report shows: the rows, with every
credential value replaced by a marker, so a report never holds even the ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["HIDDEN", "CredentialRecord", "ProgressRecord"]

HIDDEN: Final = "<encrypted>"

Rows = dict[str, list[dict[str, Any]]]


@dataclass(slots=True)
class ProgressRecord:
    """A soul, trace, heartbeat, shadow monitor or goal: table -> its rows (column -> value)."""

    rows: Rows
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows}


@dataclass(slots=True)
class CredentialRecord:
    """One stored credential (its `value` column is ciphertext)."""

    rows: Rows
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The rows with each value hidden."""
        return {
            "rows": {
                table: [{k: (HIDDEN if k == "value" else v) for k, v in row.items()} for row in rows]
                for table, rows in self.rows.items()
            }
        }
