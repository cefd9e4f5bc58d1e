"""The consistency checker between the legacy Redis store and the actor store, and its reports (planned)."""
