"""Command-line clients: `circ` and `circ-chat`."""
