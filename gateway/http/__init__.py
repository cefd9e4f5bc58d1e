"""The DO HTTP and WebSocket API: raw-path routing, handlers over a `Store`, JSON responses."""
