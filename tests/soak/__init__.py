"""The soak suite: three real nodes under random edits and injected faults (see README.md)."""
