"""`agent-coord migrate`: the one-shot copy between the legacy Redis store and the actor store.

* `fileformat`: the portable NDJSON export file (docs/migrate.md);
* `engine`: one run: read a source in batches, quarantine what cannot be read, write the rest
  to a sink in batches, count, checkpoint, honour the rate limit;
* `checkpoint`: the state an interrupted run resumes from;
* `cli`: the command line; `run`: the commands carried out on the real stores.
"""
