"""Wake-ups: clock samples and netlink messages as tables, then the network watcher for real
inside a network namespace of the test's own (created and deleted here; nothing outside it is
touched).

The watcher runs as a child process under ``ip netns exec``, printing one line per wake-up
and answering ``status`` on its stdin with how many netlink messages it has read and whether
a wake-up is pending. "No wake-up" is shown by ordering: once the watcher has read a change's
messages and has nothing pending, a later marker change must produce the very next wake-up.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from conftest import ROOT, wait_until

from assistant.daemon.wakeups import (
    IFA_ADDRESS,
    IFA_F_TENTATIVE,
    IFA_FLAGS,
    IFADDRMSG,
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    IFINFOMSG,
    IFLA_IFNAME,
    NLMSGHDR,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTATTR,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_F_CLONED,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMSG,
    ClockSample,
    ClockWatch,
    NetworkModel,
    clock_jump,
    describe_change,
    split_messages,
)

WAIT = 10.0

# --- the clock ------------------------------------------------------------------------------


def at(wall: float, mono: float, boot: float | None) -> ClockSample:
    return ClockSample(wall, mono, boot)


BASE = at(1_700_000_000.0, 5_000.0, 5_100.0)


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # a normal tick: all three clocks moved 2 s
        (at(BASE.wall + 2, 5_002.0, 5_102.0), None),
        # a late tick (the process was stopped for a minute): all three moved alike
        (at(BASE.wall + 62, 5_062.0, 5_162.0), None),
        # NTP slewing and sampling jitter stay within the tolerance
        (at(BASE.wall + 2.4, 5_002.0, 5_102.0), None),
        (at(BASE.wall + 2, 5_002.0, 5_102.9), None),
        # suspended for an hour: boot time and wall time ran on, monotonic did not
        (at(BASE.wall + 3602, 5_002.0, 8_702.0), "resume from sleep (asleep for 1h00m)"),
        # a suspend while the wall clock was also corrected: the suspend is the news
        (at(BASE.wall + 30, 5_002.0, 5_122.0), "resume from sleep (asleep for 20s)"),
        # the wall clock set forward or back, no sleep
        (at(BASE.wall + 302, 5_002.0, 5_102.0), "wall clock set forward by 5m00s"),
        (at(BASE.wall - 58, 5_002.0, 5_102.0), "wall clock set back by 1m00s"),
    ],
)
def test_clock_jump(after: ClockSample, expected: str | None) -> None:
    assert clock_jump(BASE, after, tolerance=1.0) == expected


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (at(BASE.wall + 2, 5_002.0, None), None),
        (
            at(BASE.wall + 602, 5_002.0, None),
            "resume from sleep or wall clock set forward by 10m00s",
        ),
        (at(BASE.wall - 8, 5_002.0, None), "resume from sleep or wall clock set back by 10s"),
    ],
)
def test_clock_jump_without_boot_clock(after: ClockSample, expected: str | None) -> None:
    before = at(BASE.wall, BASE.monotonic, None)
    assert clock_jump(before, after, tolerance=1.0) == expected


def test_clock_watch_reports_each_jump_once() -> None:
    """Fed a sequence of samples (a suspend, then normal ticks, then a clock step), the
    watcher reports exactly the two jumps, in order."""
    samples = [
        BASE,
        at(BASE.wall + 2, 5_002.0, 5_102.0),
        at(BASE.wall + 602, 5_004.0, 5_704.0),  # slept 10 minutes
        at(BASE.wall + 604, 5_006.0, 5_706.0),
        at(BASE.wall + 9_999, 5_008.0, 5_708.0),  # set forward
        at(BASE.wall + 10_001, 5_010.0, 5_710.0),
    ]
    feed = iter(samples)
    reasons: list[str] = []
    used: list[ClockSample] = []

    def sample() -> ClockSample:
        value = next(feed, samples[-1])
        used.append(value)
        return value

    async def scenario() -> None:
        watch = ClockWatch(reasons.append, tick=0.001, tolerance=1.0, sample=sample)
        task = asyncio.create_task(watch.run())
        try:
            async with asyncio.timeout(WAIT):
                while len(used) < len(samples) + 1:
                    await asyncio.sleep(0.001)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert reasons == [
        "resume from sleep (asleep for 10m00s)",
        "wall clock set forward by 2h36m",
    ]


# --- netlink messages, built by hand --------------------------------------------------------


def attr(kind: int, value: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def link(index: int, name: str, flags: int) -> bytes:
    return IFINFOMSG.pack(socket.AF_UNSPEC, 1, index, flags, 0) + attr(
        IFLA_IFNAME, name.encode() + b"\0"
    )


def addr(address: str, prefix: int, index: int, flags: int = 0) -> bytes:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    return (
        IFADDRMSG.pack(family, prefix, flags & 0xFF, 0, index)
        + attr(IFA_ADDRESS, raw)
        + attr(IFA_FLAGS, struct.pack("=I", flags))
    )


def route(dst: str, prefix: int, oif: int, gateway: str | None = None, flags: int = 0) -> bytes:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    body = RTMSG.pack(family, prefix, 0, 0, 254, 3, 0, 1, flags)
    body += attr(RTA_DST, socket.inet_pton(family, dst)) + attr(RTA_OIF, struct.pack("=I", oif))
    if gateway is not None:
        body += attr(RTA_GATEWAY, socket.inet_pton(family, gateway))
    return body


UP = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
ETH = link(2, "eth0", UP)


def model_with(*messages: tuple[int, bytes]) -> NetworkModel:
    model = NetworkModel()
    for kind, payload in messages:
        model.apply(kind, payload)
    return model


BASE_STATE = (
    (RTM_NEWLINK, ETH),
    (RTM_NEWADDR, addr("192.168.1.20", 24, 2)),
    (RTM_NEWROUTE, route("0.0.0.0", 0, 2, gateway="192.168.1.1")),
)


@pytest.mark.parametrize(
    ("message", "changes"),
    [
        # the same things again (a dump overlapping a notification, an RA refreshing an
        # address's lifetimes, a default route re-announced): no change
        ((RTM_NEWLINK, ETH), False),
        ((RTM_NEWADDR, addr("192.168.1.20", 24, 2)), False),
        ((RTM_NEWROUTE, route("0.0.0.0", 0, 2, gateway="192.168.1.1")), False),
        # a link message that changes no up/carrier flag (wireless events, an MTU change)
        ((RTM_NEWLINK, link(2, "eth0", UP | 0x1000)), False),
        # a route cache entry is not a route
        ((RTM_NEWROUTE, route("10.0.0.7", 32, 2, flags=RTM_F_CLONED)), False),
        # removing what is not there
        ((RTM_DELADDR, addr("10.9.9.9", 8, 2)), False),
        ((RTM_DELROUTE, route("10.0.0.0", 8, 2)), False),
        # real changes
        ((RTM_NEWLINK, link(2, "eth0", IFF_UP)), True),  # carrier lost
        ((RTM_NEWLINK, link(3, "wlan0", IFF_UP)), True),  # a new link
        ((RTM_DELLINK, ETH), True),
        ((RTM_NEWADDR, addr("192.168.1.21", 24, 2)), True),
        ((RTM_NEWADDR, addr("192.168.1.20", 16, 2)), True),  # another prefix length
        ((RTM_NEWADDR, addr("fd00::20", 64, 2)), True),
        ((RTM_DELADDR, addr("192.168.1.20", 24, 2)), True),
        ((RTM_NEWROUTE, route("0.0.0.0", 0, 2, gateway="192.168.1.254")), True),
        ((RTM_DELROUTE, route("0.0.0.0", 0, 2, gateway="192.168.1.1")), True),
        # unrelated message types
        ((99, b"\0" * 32), False),
        ((RTM_NEWLINK, b"\0" * 4), False),  # truncated
    ],
)
def test_model_change(message: tuple[int, bytes], changes: bool) -> None:
    model = model_with(*BASE_STATE)
    before = model.snapshot()
    assert model.apply(*message) is changes
    assert (model.snapshot() != before) is changes


def test_address_becoming_usable_is_a_change() -> None:
    """DAD finishing (tentative flag cleared) makes an IPv6 address usable."""
    model = model_with(*BASE_STATE, (RTM_NEWADDR, addr("fd00::20", 64, 2, IFA_F_TENTATIVE)))
    before = model.snapshot()
    assert model.apply(RTM_NEWADDR, addr("fd00::20", 64, 2))
    assert describe_change(before, model.snapshot()) == "network change: address fd00::20/64 ready"


def test_link_down_drops_its_routes_and_removal_its_addresses() -> None:
    model = model_with(*BASE_STATE)
    model.apply(RTM_NEWLINK, link(2, "eth0", 0))
    assert model.routes == set()
    assert len(model.addresses) == 1
    model.apply(RTM_DELLINK, link(2, "eth0", 0))
    assert model.addresses == {}
    assert model.links == {}


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([(RTM_NEWLINK, link(2, "eth0", IFF_UP))], "network change: link eth0 up, no carrier"),
        (
            [(RTM_NEWLINK, link(2, "eth0", 0))],
            "network change: link eth0 down, 1 route removed",
        ),
        (
            [
                (RTM_NEWLINK, link(3, "wlan0", UP)),
                (RTM_NEWADDR, addr("10.1.2.3", 24, 3)),
                (RTM_NEWROUTE, route("10.1.2.0", 24, 3)),
                (RTM_NEWROUTE, route("0.0.0.0", 0, 3, gateway="10.1.2.1")),
            ],
            "network change: link wlan0 added (up), address 10.1.2.3/24 added on wlan0, "
            "2 routes added",
        ),
        (
            [(RTM_DELADDR, addr("192.168.1.20", 24, 2))],
            "network change: address 192.168.1.20/24 removed from eth0",
        ),
        (
            [(RTM_NEWLINK, link(2, "eth0", IFF_UP)), (RTM_NEWLINK, ETH)],
            "network change (back as it was)",
        ),
        (
            [(RTM_NEWADDR, addr(f"10.0.0.{i}", 32, 2)) for i in range(1, 8)],
            "network change: address 10.0.0.1/32 added on eth0, address 10.0.0.2/32 added on "
            "eth0, address 10.0.0.3/32 added on eth0, address 10.0.0.4/32 added on eth0, "
            "3 more",
        ),
    ],
)
def test_describe_change(messages: list[tuple[int, bytes]], expected: str) -> None:
    model = model_with(*BASE_STATE)
    before = model.snapshot()
    for kind, payload in messages:
        model.apply(kind, payload)
    assert describe_change(before, model.snapshot()) == expected


def test_split_messages() -> None:
    """Several messages in one datagram, each padded to 4 bytes; a truncated tail is
    ignored."""
    one = link(2, "eth0", UP)
    two = addr("10.0.0.1", 8, 2)
    odd = b"\1\2\3"  # a payload whose length is not a multiple of 4

    def msg(kind: int, payload: bytes) -> bytes:
        raw = NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, 0, 0, 0) + payload
        return raw + b"\0" * (-len(raw) % 4)

    data = msg(RTM_NEWLINK, one) + msg(99, odd) + msg(RTM_NEWADDR, two)
    assert list(split_messages(data)) == [(RTM_NEWLINK, one), (99, odd), (RTM_NEWADDR, two)]
    assert list(split_messages(data + msg(RTM_NEWADDR, two)[:20])) == list(split_messages(data))


# --- the network watcher in a namespace of our own ------------------------------------------

CHILD = """
import asyncio, sys
from assistant.daemon.wakeups import Wakeups

async def main() -> None:
    wakeups = Wakeups(
        lambda reason: print("wake", reason, flush=True),
        tick=0.5,
        quiet=0.2,
        poll_interval=0.2,
        netlink=sys.argv[1] == "netlink",
    )
    wakeups.start()
    await wakeups.network.started.wait()
    print("ready", wakeups.status().network, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"status":
            net = wakeups.network
            print("status", net.messages, int(net.pending), wakeups.status().wakes, flush=True)
    await wakeups.stop()

asyncio.run(main())
"""


class Watcher:
    """The wake-up watcher running inside the namespace; its lines sorted by kind."""

    def __init__(self, netns: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", CHILD, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.lines: dict[str, queue.Queue[str]] = {
            k: queue.Queue() for k in ("ready", "wake", "status")
        }
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            self.lines.setdefault(kind, queue.Queue()).put(rest)

    def next(self, kind: str, timeout: float = WAIT) -> str:
        try:
            return self.lines[kind].get(timeout=timeout)
        except queue.Empty:
            stderr = ""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                stderr = self.proc.stderr.read()
            raise AssertionError(f"no {kind!r} line within {timeout}s {stderr}") from None

    def status(self) -> tuple[int, bool, int]:
        """(netlink messages read, wake-up pending, wake-ups so far)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        messages, pending, wakes = self.next("status").split()
        return int(messages), pending == "1", int(wakes)

    def settled_after(self, messages: int) -> Callable[[], bool]:
        """More than ``messages`` read and nothing pending."""

        def check() -> bool:
            seen, pending, _wakes = self.status()
            return seen > messages and not pending

        return check

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def ip(netns: str, *commands: str) -> None:
    """Run ``ip`` commands in the namespace, in one batch (one burst of changes)."""
    proc = subprocess.run(
        ["ip", "-n", netns, "-batch", "-"],
        input="".join(c + "\n" for c in commands),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of this test's own, with IPv6 link-local addresses and duplicate
    address detection off (so the kernel adds nothing by itself later); deleted at the end."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) is not installed")
    name = f"annexsync-test-{uuid.uuid4().hex[:12]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        quiet_ipv6 = (
            "echo 1 > /proc/sys/net/ipv6/conf/default/addr_gen_mode; "
            "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; "
            "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad"
        )
        subprocess.run(["ip", "netns", "exec", name, "sh", "-c", quiet_ipv6], check=False)
        probe = subprocess.run(
            ["ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"cannot create veth links: {probe.stderr.strip()}")
        subprocess.run(["ip", "-n", name, "link", "del", "probe0"], check=False)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


@pytest.fixture
def watcher(netns: str) -> Iterator[Callable[[str], Watcher]]:
    """Starts watchers in the namespace; each is killed by its own PID at the end."""
    started: list[Watcher] = []

    def make(mode: str) -> Watcher:
        w = Watcher(netns, mode)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


LINKS_UP = (
    "link add d0 type veth peer name d1",
    "addr add 10.99.0.1/24 dev d0",
    "addr add 10.99.0.2/24 dev d0",
    "addr add fd00:99::1/64 dev d0",
    "link set d0 up",
    "link set d1 up",
)


def test_a_burst_of_network_changes_is_one_wake(
    netns: str, watcher: Callable[[str], Watcher]
) -> None:
    w = watcher("netlink")
    assert w.next("ready") == "netlink"
    ip(netns, *LINKS_UP)
    first = w.next("wake")
    assert first.startswith("network change: ")
    assert "link d0 added (up)" in first and "link d1 added (up)" in first
    ip(netns, "addr add 10.98.0.1/24 dev d0")
    # the next wake-up is the marker's alone: the burst made exactly one
    assert w.next("wake") == "network change: address 10.98.0.1/24 added on d0, 3 routes added"


def test_link_down_and_address_removal_wake(netns: str, watcher: Callable[[str], Watcher]) -> None:
    w = watcher("netlink")
    w.next("ready")
    ip(netns, *LINKS_UP)
    w.next("wake")
    ip(netns, "addr del fd00:99::1/64 dev d0")
    assert "address fd00:99::1/64 removed from d0" in w.next("wake")
    ip(netns, "link set d0 down")
    assert w.next("wake").startswith("network change: link d1 up, no carrier, link d0 down")


def test_messages_that_change_nothing_do_not_wake(
    netns: str, watcher: Callable[[str], Watcher]
) -> None:
    """A lifetime refresh of an address (what every IPv6 router advertisement does) and an
    MTU change reach the watcher as netlink messages, but are no network change."""
    w = watcher("netlink")
    w.next("ready")
    ip(netns, *LINKS_UP)
    w.next("wake")
    wait_until(w.settled_after(0), timeout=WAIT)
    seen, _pending, wakes = w.status()
    ip(
        netns,
        "addr change 10.99.0.1/24 dev d0 valid_lft 1000 preferred_lft 1000",
        "addr change fd00:99::1/64 dev d0 valid_lft 2000 preferred_lft 1000",
        "link set d0 mtu 1400",
    )
    wait_until(w.settled_after(seen), timeout=WAIT)
    assert w.status()[2] == wakes
    ip(netns, "link set d1 down")
    assert w.next("wake").startswith("network change: link d1 down, link d0 up, no carrier")


def test_polling_sees_a_new_address_without_netlink(
    netns: str, watcher: Callable[[str], Watcher]
) -> None:
    w = watcher("poll")
    assert w.next("ready") == "polling every 0.2s"
    ip(netns, *LINKS_UP)
    assert w.next("wake") == "network change (addresses, routes or links differ)"
    assert w.status()[0] == 0  # no netlink message was read


def test_nothing_happens_in_a_quiet_namespace(
    netns: str, watcher: Callable[[str], Watcher]
) -> None:
    """Starting (the initial dump) is no wake-up; the first one is the first change."""
    w = watcher("netlink")
    w.next("ready")
    seen, pending, wakes = w.status()
    assert (pending, wakes) == (False, 0)
    ip(netns, "link add q0 type veth peer name q1")
    assert w.next("wake") == "network change: link q1 added (down), link q0 added (down)"
    assert w.status()[0] > seen
