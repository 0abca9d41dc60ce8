"""The morning report: the last nights as one HTML page with its plots (`circ report`)."""
