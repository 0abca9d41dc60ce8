"""ingest: redact, route, embed and recall memories of chat turns."""
