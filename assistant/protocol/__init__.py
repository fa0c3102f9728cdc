"""git's smart protocol (v0/v1 pack protocol): framing, ref advertisements, push and fetch."""
