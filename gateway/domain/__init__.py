"""The domain layer shared by every store: the model, commands, rules, entity keys, phases, frames.

`model` (entities and their DO JSON shapes), `commands` (validated requests, ids made before a
store runs), `rules` (what each command does to the records it finds), `entities` (`EntityKey`
and which actor holds each domain), `phase` (the migration phases), `frames` (the WebSocket
frames), `ids`, `jscompat` (JS dates, numbers, parseInt). Nothing here knows SQL, Redis or
aiohttp; the stores map their rows and values to and from `model`.
"""
