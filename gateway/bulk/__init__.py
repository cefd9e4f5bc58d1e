"""The entity I/O layer shared by the migration tool and the consistency checker.

Every entity of either store, streamed in one deterministic order (domain, scope, id), in
bounded memory, resumable by cursor, read and written in batches:

* `items`: `Item`, `Selection`, cursors, `WriteResult`, the `EntitySource`/`EntitySink` protocols;
* `legacy_side`: the legacy Redis layout (`LegacySource`, and its writes);
* `actor_side`: the actors through the host's APIs (`ActorSide`);
* `remote`: the actors of a running gateway through its admin API (`RemoteActorSide`);
* `admin_service`: the server side of those admin routes;
* `sides`: `open_actor_side` / `open_legacy_side`, which choose and open them;
* `wire`: entities as JSON lines, losslessly; `versions`: which copy of an entity is newer.
"""
