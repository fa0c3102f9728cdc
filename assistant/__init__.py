"""annexsync: keep a git working tree replicated between machines."""

__version__ = "0.1.0"
