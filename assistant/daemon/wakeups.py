"""Wake-ups: a resume from sleep, a wall-clock step, or a network change.

Any of them may have brought an offline peer back, so the assistant retries offline peers at
once instead of waiting out their backoff (``PeerStatus.on_retry_now``). Both watchers call
``on_wake(reason)`` with a one-line reason, on the loop.

- Clock: every ``tick`` seconds the wall clock, CLOCK_MONOTONIC and CLOCK_BOOTTIME are sampled.
  Monotonic time stops while the machine sleeps and boot time does not, so a gap between the
  two is a suspend; a gap between wall and boot time is the wall clock being set. A tick that
  is merely late (a busy or stopped process) moves all three alike and is no wake-up.
- Network: a NETLINK_ROUTE socket subscribed to link, IPv4/IPv6 address and route changes,
  read on the loop. Messages update a model of links (up or down), addresses and routes
  seeded by a dump at start; only messages that change it count, so a Wi-Fi driver's
  wireless events or an IPv6 router advertisement refreshing lifetimes wake nobody. A burst
  is one wake-up once ``quiet`` seconds pass without another change (at most ``max_delay``
  after its first). Where netlink cannot be opened, a fingerprint of /proc's routes and
  addresses and /sys's link states is compared every ``poll_interval`` seconds instead.

The decisions (``clock_jump``, ``NetworkModel``, ``describe_change``) are plain functions and
classes fed with samples and message bytes, so they are table-tested without a clock or a
network.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.peerstate import format_duration, one_line

log = logging.getLogger("annexsync.wakeups")

DEFAULT_TICK = 2.0
DEFAULT_TOLERANCE = 1.0
"""Seconds of disagreement between clocks over one tick that count as a jump; NTP slews at
most 0.5 ms per second, so only a suspend or a step gets near it."""
DEFAULT_QUIET = 0.3
DEFAULT_MAX_DELAY = 2.0
DEFAULT_POLL_INTERVAL = 5.0


def _call(on_wake: Callable[[str], None], reason: str) -> None:
    """Deliver a wake-up; a failing callback is one logged line, and watching goes on."""
    try:
        on_wake(reason)
    except Exception as exc:
        log.error("on_wake failed: %s", one_line(exc))


# --- the clock ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockSample:
    """The three clocks read together (seconds); ``boottime`` is None where there is none."""

    wall: float
    monotonic: float
    boottime: float | None


def sample_clocks() -> ClockSample:
    """Read the wall clock, CLOCK_MONOTONIC and CLOCK_BOOTTIME now."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    return ClockSample(
        time.time(),
        time.monotonic(),
        time.clock_gettime(boot) if boot is not None else None,
    )


def clock_jump(
    before: ClockSample, after: ClockSample, tolerance: float = DEFAULT_TOLERANCE
) -> str | None:
    """Why the interval between two samples is a wake-up, or None: the machine slept
    (boot time ran ahead of monotonic time), or the wall clock was set (it moved unlike boot
    time). Without a boot clock a suspend and a forward step look alike and are one reason."""
    mono = after.monotonic - before.monotonic
    wall = after.wall - before.wall
    if before.boottime is not None and after.boottime is not None:
        boot = after.boottime - before.boottime
        asleep = boot - mono
        if asleep > tolerance:
            return f"resume from sleep (asleep for {format_duration(asleep)})"
        step = wall - boot
        kind = "wall clock set"
    else:
        step = wall - mono
        kind = "resume from sleep or wall clock set"
    if abs(step) > tolerance:
        direction = "forward" if step > 0 else "back"
        return f"{kind} {direction} by {format_duration(abs(step))}"
    return None


class ClockWatch:
    """Samples the clocks every ``tick`` seconds and calls ``on_wake`` on a jump."""

    def __init__(
        self,
        on_wake: Callable[[str], None],
        *,
        tick: float = DEFAULT_TICK,
        tolerance: float = DEFAULT_TOLERANCE,
        sample: Callable[[], ClockSample] = sample_clocks,
    ) -> None:
        self.on_wake = on_wake
        self.tick = tick
        self.tolerance = tolerance
        self.sample = sample

    async def run(self) -> None:
        """Watch until cancelled."""
        previous = self.sample()
        while True:
            await asyncio.sleep(self.tick)
            current = self.sample()
            reason = clock_jump(previous, current, self.tolerance)
            previous = current
            if reason is not None:
                _call(self.on_wake, reason)


# --- netlink messages -----------------------------------------------------------------------

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300

IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
LINK_FLAGS = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTM_F_CLONED = 0x200

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
RTATTR = struct.Struct("=HH")  # length, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def split_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(type, payload)`` of each netlink message in one datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        yield kind, data[offset + NLMSGHDR.size : offset + length]
        offset += _align(length)


def attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    """The route attributes after a fixed header (the first of each type)."""
    attrs: dict[int, bytes] = {}
    while offset + RTATTR.size <= len(payload):
        length, kind = RTATTR.unpack_from(payload, offset)
        if length < RTATTR.size:
            break
        attrs.setdefault(kind & 0x3FFF, payload[offset + RTATTR.size : offset + length])
        offset += _align(length)
    return attrs


def _address(family: int, raw: bytes | None) -> str:
    if not raw:
        return ""
    try:
        return socket.inet_ntop(family, raw)
    except (ValueError, OSError):
        return raw.hex()


def _u32(raw: bytes | None, default: int = 0) -> int:
    return struct.unpack("=I", raw[:4])[0] if raw and len(raw) >= 4 else default


Key = tuple[Any, ...]


class NetworkModel:
    """What the machine's network looks like, as far as reaching a peer goes: each link's
    name and up/carrier flags, each address (and whether it is still tentative), each route.
    Fed netlink messages (a dump, then notifications); no I/O of its own."""

    def __init__(self) -> None:
        self.links: dict[int, tuple[str, int]] = {}
        self.addresses: dict[Key, int] = {}
        self.routes: set[Key] = set()

    def snapshot(self) -> tuple[dict[int, tuple[str, int]], dict[Key, int], frozenset[Key]]:
        return dict(self.links), dict(self.addresses), frozenset(self.routes)

    def apply(self, kind: int, payload: bytes) -> bool:
        """Take one message into account; True if the model changed."""
        before = self.snapshot() if kind in (RTM_NEWLINK, RTM_DELLINK) else None
        if kind in (RTM_NEWLINK, RTM_DELLINK) and len(payload) >= IFINFOMSG.size:
            self._link(kind, payload)
            return self.snapshot() != before
        if kind in (RTM_NEWADDR, RTM_DELADDR) and len(payload) >= IFADDRMSG.size:
            return self._addr(kind, payload)
        if kind in (RTM_NEWROUTE, RTM_DELROUTE) and len(payload) >= RTMSG.size:
            return self._route(kind, payload)
        return False

    def _link(self, kind: int, payload: bytes) -> None:
        _family, _type, index, flags, _change = IFINFOMSG.unpack_from(payload)
        if kind == RTM_DELLINK:
            self.links.pop(index, None)
            self._forget(index)
            return
        name_raw = attributes(payload, IFINFOMSG.size).get(IFLA_IFNAME)
        name = name_raw.rstrip(b"\0").decode(errors="replace") if name_raw else str(index)
        flags &= LINK_FLAGS
        self.links[index] = (name, flags)
        if not flags & IFF_UP:
            # the kernel drops a downed link's routes without a message for each one
            self.routes = {r for r in self.routes if r[6] != index}

    def _forget(self, index: int) -> None:
        self.addresses = {k: v for k, v in self.addresses.items() if k[1] != index}
        self.routes = {r for r in self.routes if r[6] != index}

    def _addr(self, kind: int, payload: bytes) -> bool:
        family, prefixlen, flags, _scope, index = IFADDRMSG.unpack_from(payload)
        attrs = attributes(payload, IFADDRMSG.size)
        address = _address(family, attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS))
        key = (family, index, address, prefixlen)
        if kind == RTM_DELADDR:
            return self.addresses.pop(key, None) is not None
        state = _u32(attrs.get(IFA_FLAGS), flags) & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
        if self.addresses.get(key) == state:
            return False  # a lifetime refresh
        self.addresses[key] = state
        return True

    def _route(self, kind: int, payload: bytes) -> bool:
        family, dst_len, _src, _tos, table, _proto, _scope, rtype, flags = RTMSG.unpack_from(
            payload
        )
        if flags & RTM_F_CLONED:
            return False  # a cache entry (a path MTU learned), not a route
        attrs = attributes(payload, RTMSG.size)
        key = (
            family,
            _u32(attrs.get(RTA_TABLE), table),
            rtype,
            _address(family, attrs.get(RTA_DST)),
            dst_len,
            _address(family, attrs.get(RTA_GATEWAY)),
            _u32(attrs.get(RTA_OIF)),
            _u32(attrs.get(RTA_PRIORITY)),
        )
        if kind == RTM_DELROUTE:
            if key not in self.routes:
                return False
            self.routes.discard(key)
            return True
        if key in self.routes:
            return False
        self.routes.add(key)
        return True


Snapshot = tuple[dict[int, tuple[str, int]], dict[Key, int], frozenset[Key]]


def _link_word(flags: int) -> str:
    if flags & IFF_RUNNING:
        return "up"
    return "up, no carrier" if flags & IFF_UP else "down"


def describe_change(before: Snapshot, after: Snapshot, limit: int = 4) -> str:
    """One line saying what changed between two snapshots of a NetworkModel."""
    links_b, addrs_b, routes_b = before
    links_a, addrs_a, routes_a = after
    names = {**{i: n for i, (n, _f) in links_b.items()}, **{i: n for i, (n, _f) in links_a.items()}}
    parts: list[str] = []
    for index in sorted(links_b.keys() | links_a.keys()):
        old, new = links_b.get(index), links_a.get(index)
        if old is None and new is not None:
            parts.append(f"link {new[0]} added ({_link_word(new[1])})")
        elif new is None and old is not None:
            parts.append(f"link {old[0]} removed")
        elif old is not None and new is not None and old[1] != new[1]:
            parts.append(f"link {new[0]} {_link_word(new[1])}")
    for key in sorted(addrs_a.keys() - addrs_b.keys(), key=str):
        parts.append(f"address {key[2]}/{key[3]} added on {names.get(key[1], key[1])}")
    for key in sorted(addrs_b.keys() - addrs_a.keys(), key=str):
        parts.append(f"address {key[2]}/{key[3]} removed from {names.get(key[1], key[1])}")
    for key in sorted(addrs_a.keys() & addrs_b.keys(), key=str):
        if addrs_a[key] != addrs_b[key] and not addrs_a[key]:
            parts.append(f"address {key[2]}/{key[3]} ready")
    added, removed = len(routes_a - routes_b), len(routes_b - routes_a)
    if added:
        parts.append(f"{added} route{'s' if added > 1 else ''} added")
    if removed:
        parts.append(f"{removed} route{'s' if removed > 1 else ''} removed")
    if not parts:
        return "network change (back as it was)"
    if len(parts) > limit:
        parts = [*parts[:limit], f"{len(parts) - limit} more"]
    return "network change: " + ", ".join(parts)


# --- netlink I/O ----------------------------------------------------------------------------


def open_netlink(groups: int = GROUPS) -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket; subscribed to ``groups`` (0: for requests)."""
    sock = socket.socket(
        socket.AF_NETLINK,
        socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        socket.NETLINK_ROUTE,
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


_DUMPS = (
    (RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
    (RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
    (RTM_GETROUTE, RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)),
)


async def dump(model: NetworkModel, timeout: float = 5.0) -> None:
    """Fill ``model`` with every link, address and route, asked of the kernel."""
    loop = asyncio.get_running_loop()
    with open_netlink(0) as sock:
        for seq, (kind, body) in enumerate(_DUMPS, start=1):
            header = NLMSGHDR.pack(
                NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
            )
            await loop.sock_sendall(sock, header + body)
            done = False
            async with asyncio.timeout(timeout):
                while not done:
                    data = await loop.sock_recv(sock, 1 << 16)
                    for msg_kind, payload in split_messages(data):
                        if msg_kind == NLMSG_DONE:
                            done = True
                        elif msg_kind == NLMSG_ERROR:
                            code = -struct.unpack_from("=i", payload)[0] if payload else 0
                            if code:
                                raise OSError(code, f"netlink dump: {os.strerror(code)}")
                            done = True
                        else:
                            model.apply(msg_kind, payload)


# --- polling, where there is no netlink -----------------------------------------------------


def _columns(path: str, keep: tuple[int, ...], skip_header: bool) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines[1 if skip_header else 0 :]:
        fields = line.split()
        out.append(f"{path}:" + " ".join(fields[i] for i in keep if i < len(fields)))
    return out


def fingerprint() -> frozenset[str]:
    """A cheap picture of the network to compare over time: routes (without their use
    counters), IPv6 addresses, and each link's operational state."""
    items = set(_columns("/proc/net/route", (0, 1, 2, 3, 6, 7), True))
    items.update(_columns("/proc/net/ipv6_route", (0, 1, 2, 3, 4, 5, 8, 9), False))
    items.update(_columns("/proc/net/if_inet6", (0, 1, 2, 3, 4, 5), False))
    with contextlib.suppress(OSError):
        items.update(f"link:{i}:{n}" for i, n in socket.if_nameindex())
    with contextlib.suppress(OSError):
        for entry in os.scandir("/sys/class/net"):
            with contextlib.suppress(OSError):
                state = Path(entry.path, "operstate").read_text().strip()
                items.add(f"operstate:{entry.name}:{state}")
    return frozenset(items)


# --- the network actor ----------------------------------------------------------------------


class NetworkWatch:
    """Calls ``on_wake`` once per settled burst of network changes."""

    def __init__(
        self,
        on_wake: Callable[[str], None],
        *,
        quiet: float = DEFAULT_QUIET,
        max_delay: float = DEFAULT_MAX_DELAY,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        netlink: bool = True,
    ) -> None:
        self.on_wake = on_wake
        self.quiet = quiet
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self.use_netlink = netlink
        self.mode = "starting"
        self.started = asyncio.Event()
        self.messages = 0  # netlink messages read so far
        self.model = NetworkModel()
        self._reported: Snapshot = self.model.snapshot()
        self._burst_start: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resync: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """A wake-up is scheduled (a burst has not settled yet)."""
        return self._timer is not None or self._resync is not None

    async def run(self) -> None:
        """Watch until cancelled: netlink where it can be opened, polling otherwise."""
        sock: socket.socket | None = None
        if self.use_netlink:
            try:
                sock = open_netlink()
                await dump(self.model)
            except (OSError, TimeoutError, AttributeError) as exc:
                if sock is not None:
                    sock.close()
                    sock = None
                self.model = NetworkModel()
                reason = one_line(exc) if not isinstance(exc, TimeoutError) else "no answer"
                log.info("netlink unavailable (%s); polling the network state", reason)
                self.mode = f"polling every {self.poll_interval:g}s (netlink: {reason})"
        if sock is None:
            if self.mode == "starting":
                self.mode = f"polling every {self.poll_interval:g}s"
            await self._poll()
            return
        loop = asyncio.get_running_loop()
        self._reported = self.model.snapshot()
        self.mode = "netlink"
        try:
            loop.add_reader(sock.fileno(), self._readable, sock)
            self.started.set()
            await asyncio.Future()  # until cancelled
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._resync is not None:
                self._resync.cancel()
                self._resync = None

    def _readable(self, sock: socket.socket) -> None:
        changed = False
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS and self._resync is None:
                    # the kernel dropped messages: read the whole state again
                    self._resync = asyncio.ensure_future(self._redump())
                    continue
                if exc.errno == errno.ENOBUFS:
                    continue
                log.error("reading netlink failed: %s", one_line(exc))
                break
            for kind, payload in split_messages(data):
                self.messages += 1
                changed |= self.model.apply(kind, payload)
        if changed:
            self._arm()

    async def _redump(self) -> None:
        try:
            model = NetworkModel()
            await dump(model)
            self.model = model
        except (OSError, TimeoutError) as exc:
            log.info("netlink resync failed: %s", one_line(exc))
        finally:
            self._resync = None
        self._arm()

    def _arm(self) -> None:
        """(Re)start the quiet window, never past ``max_delay`` after the burst began."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._burst_start is None:
            self._burst_start = now
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(
            min(now + self.quiet, self._burst_start + self.max_delay), self._fire
        )

    def _fire(self) -> None:
        self._timer = None
        self._burst_start = None
        current = self.model.snapshot()
        reason = describe_change(self._reported, current)
        self._reported = current
        _call(self.on_wake, reason)

    async def _poll(self) -> None:
        previous = fingerprint()
        self.started.set()
        while True:
            await asyncio.sleep(self.poll_interval)
            current = fingerprint()
            if current != previous:
                _call(self.on_wake, "network change (addresses, routes or links differ)")
            previous = current


# --- both -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WakeupStatus:
    """For ``annexsync status``: how each watcher works, and the latest wake-up."""

    network: str
    clock: str
    last_reason: str | None
    last_at: float | None  # wall-clock epoch seconds
    wakes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "clock": self.clock,
            "last_reason": self.last_reason,
            "last_at": self.last_at,
            "wakes": self.wakes,
        }


class Wakeups:
    """The clock and network watchers together, one ``on_wake(reason)`` for both."""

    def __init__(
        self,
        on_wake: Callable[[str], None],
        *,
        tick: float = DEFAULT_TICK,
        tolerance: float = DEFAULT_TOLERANCE,
        quiet: float = DEFAULT_QUIET,
        max_delay: float = DEFAULT_MAX_DELAY,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        netlink: bool = True,
        sample: Callable[[], ClockSample] = sample_clocks,
    ) -> None:
        self.on_wake = on_wake
        self.clock = ClockWatch(self._wake, tick=tick, tolerance=tolerance, sample=sample)
        self.network = NetworkWatch(
            self._wake,
            quiet=quiet,
            max_delay=max_delay,
            poll_interval=poll_interval,
            netlink=netlink,
        )
        self._last: tuple[str, float] | None = None
        self._wakes = 0
        self._task: asyncio.Task[None] | None = None

    def status(self) -> WakeupStatus:
        return WakeupStatus(
            network=self.network.mode,
            clock=f"every {self.clock.tick:g}s",
            last_reason=self._last[0] if self._last else None,
            last_at=self._last[1] if self._last else None,
            wakes=self._wakes,
        )

    def start(self) -> None:
        """Run both watchers as a task of the running loop (``run`` is the same, awaited)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="wakeups")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Both watchers until cancelled; the first to fail ends both."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.clock.run(), name="clock watch")
            group.create_task(self.network.run(), name="network watch")

    def _wake(self, reason: str) -> None:
        self._wakes += 1
        self._last = (reason, time.time())
        log.info("wake-up: %s", reason)
        _call(self.on_wake, reason)
