"""Transports: ways to run git's service programs on a peer and talk to them."""
