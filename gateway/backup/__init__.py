"""Backups of a data directory: a consistent snapshot (SQLite's online backup API) with a manifest,
taken through a running gateway or directly on a stopped one, and its verified restore."""
