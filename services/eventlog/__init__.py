"""eventlog: the single writer of the append-only event log."""
