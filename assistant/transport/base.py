"""The transport interface: a channel to ``git-upload-pack`` or ``git-receive-pack`` on a peer.

Rules every transport keeps: after any error the channel is failed and only ``abort`` and
``finish`` may follow; ``finish`` is idempotent and returns the service's exit status and its
stderr; ``abort`` may be called at any time, from anywhere.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from assistant.errors import AnnexsyncError


class TransportError(AnnexsyncError):
    """Talking to a peer failed; the message says how and what to do about it."""


@dataclass(frozen=True)
class ServiceExit:
    """How the peer's git service ended."""

    status: int | None
    stderr: str


class Channel(abc.ABC):
    """A byte stream to one git service process on a peer."""

    @abc.abstractmethod
    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; b'' at end of stream."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send ``data`` and wait until the transport has taken it."""

    @abc.abstractmethod
    def write_eof(self) -> None:
        """Nothing more will be sent."""

    @abc.abstractmethod
    async def finish(self) -> ServiceExit:
        """Wait for the service to exit."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Tear the channel down now."""


class Transport(abc.ABC):
    """Opens channels to one peer; implementations may cache connections across calls."""

    @abc.abstractmethod
    async def open(self, service: str, path: str) -> Channel:
        """Start ``service`` (git-upload-pack, git-receive-pack) on the repository at ``path``."""

    async def run(self, argv: list[str], timeout: float = 30.0) -> tuple[int | None, str, str]:
        """Run a short command on the peer; (exit status, stdout, stderr)."""
        raise NotImplementedError

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this transport goes, for messages."""
