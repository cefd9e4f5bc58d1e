"""agent-coord gateway: the Durable-Objects API of agent-coord served from an embedded SQLite
actor store (one database per actor), in front of the legacy Redis store during the migration."""

__version__ = "0.1.0"
