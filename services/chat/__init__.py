"""chat: serves the model (plus the current adapter) and logs every turn."""
