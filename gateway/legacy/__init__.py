"""The legacy Redis store: key layout, tolerant codec, pooled client, `LegacyStore`, data generator.

Everything that talks to the legacy agent-coord Redis (legacy-redis.md) lives here; the mapping
between its values and the domain model is `gateway.legacy.mapping`.
"""
