"""The domain layer shared by every store: JS-compatible formatting, ids, the model, commands.

Nothing here knows SQL or Redis; the stores map their rows to and from `gateway.domain.model`.
"""
