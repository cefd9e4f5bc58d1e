"""Actor names and where their databases live.

An actor is named by its kind and a free-text name: the coordinator `main`, an agent id, or a
resource path such as `src/a.ts` or `../../etc/passwd`. File names must never be derived from
the name's text, so the mapping is a hash: `<data_dir>/<kind>/<h[:2]>/<h>.sqlite` with
`h = sha256(kind NUL name)`. It is injective for all practical purposes (a collision would need
a SHA-256 collision) and always stays inside the data directory. The name itself is recorded in
the actor's own database and in the host index, so the host can list the names it holds, and an
activation checks that the file it opens belongs to the name it was asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import InvalidActorName

MAX_NAME_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class ActorRef:
    """The address of one actor: its kind and its name (DO: `idFromName(name)` in a namespace)."""

    kind: str
    name: str
    # refs are dict keys on every turn (open actors, the alarm index): hash the strings once
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.kind, self.name)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def name_digest(ref: ActorRef) -> str:
    """The hex digest that names the actor's files."""
    try:
        raw = ref.kind.encode("utf-8") + b"\0" + ref.name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidActorName(f"actor name is not valid text: {e}") from e
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidActorName(f"actor name longer than {MAX_NAME_BYTES} bytes")
    return hashlib.sha256(raw).hexdigest()


def actor_path(data_dir: Path, ref: ActorRef) -> Path:
    """The SQLite file of an actor; always inside `data_dir/<kind>/`."""
    digest = name_digest(ref)
    return data_dir / ref.kind / digest[:2] / f"{digest}.sqlite"
