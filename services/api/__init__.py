"""The OpenAI-compatible HTTP API: a client of chat over ZeroMQ that owns no model."""
