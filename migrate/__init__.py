"""The one-shot export / import tool between the legacy Redis store and the actor store (planned)."""
