#!/usr/bin/env python3
"""The attackers of scripts/bench-flood.sh (the front end under flood); stdlib only.

Run inside the lab's client namespace (`ip netns exec fpk-<pid>-client python3 flood.py ...`); it
connects only to the --target it is given (a documentation address of the lab) from the source
addresses it is given (documentation addresses bound in that namespace).

Each of SOURCES x --per-source slots keeps one TCP connection to the target's SSH port open:
it connects, waits for the proxy's version line ("SSH-2.0-"); once that came (the connection was
admitted), an "idle" slot says nothing and a "stall" slot sends a version line of its own and then
nothing (slots alternate idle, stall, idle, ... with --mode mix). When the proxy closes the
connection (at accept: refused; later: a deadline), the slot connects again at once. All slots
together open at most --rate new connections a second (a token bucket), so the attacker's own
CPU on a small lab machine stays bounded; 0 = no limit.

Bounded: it stops when --stop-file appears or after --duration seconds, whichever is first,
closes every socket, and prints its figures as "key value" lines (read by the shell script), then
"tick T ATTEMPTS ADMITTED REFUSED HELD" once a second of the run. --ready-file is written once
every slot has made its first attempt (or after 5 s).

  flood.py --target 192.0.2.1:33001 --source 192.0.2.100 --per-source 400 ...
  flood.py --target [2001:db8:1::1]:33001 --v6-sources 2001:db8:1:1:: 1000 100 --per-source 10 ...
"""

import argparse
import asyncio
import errno
import ipaddress
import os
import resource
import signal
import socket
import statistics
import sys
import time

BANNER = b"SSH-2.0-"
# Linux: let connect() pick the local port (4-tuple aware) instead of bind(); many connections
# from one address then do not run out of ports.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Stats:
    def __init__(self):
        self.attempts = 0
        self.connect_failed = 0
        self.connect_errors = {}
        self.refused = 0  # closed or reset by the proxy before its version line
        self.no_banner = 0  # no version line within --banner-wait (still open: closed by us)
        self.admitted = 0
        self.closed_by_proxy = 0  # admitted, then closed by the proxy
        self.lifetimes = []  # seconds from connect to the proxy's close, of admitted ones
        self.held = 0
        self.peak_held = 0
        self.first_done = 0
        self.ticks = []
        self.stopping = False


class Limiter:
    """At most `rate` takes a second over all callers (0: no limit)."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def take(self):
        if not self.interval:
            await asyncio.sleep(0)
            return
        now = time.monotonic()
        t = max(self.next, now)
        self.next = t + self.interval
        if t > now:
            await asyncio.sleep(t - now)


def parse_target(text):
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return host, int(port)


async def read_banner(loop, sock):
    """Reads until the first 8 bytes are there -> True if they are the SSH banner's start;
    False when the proxy closed or reset the connection first."""
    data = b""
    while len(data) < len(BANNER):
        try:
            more = await loop.sock_recv(sock, 256)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return False
        if not more:
            return False
        data += more
    return data.startswith(BANNER)


async def wait_closed(loop, sock):
    """Reads (and discards) until the proxy closes the connection."""
    while True:
        try:
            more = await loop.sock_recv(sock, 4096)
        except OSError:
            return
        if not more:
            return


async def slot(source, target, stall, args, st, limiter):
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    first = True
    while not st.stopping:
        await limiter.take()
        if st.stopping:
            break
        st.attempts += 1
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        admitted = False
        t0 = time.monotonic()
        try:
            try:
                try:
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                except OSError:
                    pass
                sock.bind((source, 0))
                await asyncio.wait_for(loop.sock_connect(sock, target), args.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                st.connect_failed += 1
                name = errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)
                st.connect_errors[name] = st.connect_errors.get(name, 0) + 1
                if first:
                    first = False
                    st.first_done += 1
                # A local error (no port, no buffer): do not spin on it.
                await asyncio.sleep(0.05)
                continue
            try:
                ok = await asyncio.wait_for(read_banner(loop, sock), args.banner_wait)
            except asyncio.TimeoutError:
                st.no_banner += 1
                ok = None
            if first:
                first = False
                st.first_done += 1
            if ok is None:
                continue
            if not ok:
                st.refused += 1
                continue
            admitted = True
            st.admitted += 1
            st.held += 1
            st.peak_held = max(st.peak_held, st.held)
            if stall:
                try:
                    await loop.sock_sendall(sock, b"SSH-2.0-stall\r\n")
                except OSError:
                    pass
            await wait_closed(loop, sock)
            st.closed_by_proxy += 1
            st.lifetimes.append(time.monotonic() - t0)
        finally:
            if admitted:
                st.held -= 1
            sock.close()


async def ticker(st, start):
    while True:
        await asyncio.sleep(1.0)
        st.ticks.append((round(time.monotonic() - start), st.attempts, st.admitted, st.refused,
                         st.held))


async def main_async(args):
    host, port = parse_target(args.target)
    target = (host, port)
    sources = []
    if args.source:
        sources += args.source
    if args.v6_sources:
        base, first, count = args.v6_sources
        net = int(ipaddress.IPv6Address(base))
        sources += [str(ipaddress.IPv6Address(net + int(first) + i)) for i in range(int(count))]
    if not sources:
        sys.exit("flood.py: no source addresses (--source or --v6-sources)")
    st = Stats()
    limiter = Limiter(args.rate)
    start = time.monotonic()
    tasks = []
    n = 0
    for source in sources:
        for _ in range(args.per_source):
            stall = args.mode == "stall" or (args.mode == "mix" and n % 2 == 1)
            tasks.append(asyncio.ensure_future(slot(source, target, stall, args, st, limiter)))
            n += 1
    tick = asyncio.ensure_future(ticker(st, start))
    stop_now = asyncio.Event()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop_now.set)
    except (NotImplementedError, RuntimeError):
        pass
    ready_written = False
    deadline = start + args.duration
    while time.monotonic() < deadline:
        if stop_now.is_set() or (args.stop_file and os.path.exists(args.stop_file)):
            break
        if not ready_written and (st.first_done >= n or time.monotonic() - start > 5):
            ready_written = True
            if args.ready_file:
                with open(args.ready_file, "w") as f:
                    f.write("%.3f\n" % (time.monotonic() - start))
        await asyncio.sleep(0.1)
    held_at_stop = st.held
    ran = time.monotonic() - start
    st.stopping = True
    for t in tasks + [tick]:
        t.cancel()
    # Python before 3.12 may lose a cancellation inside wait_for(): do not wait for stragglers
    # (the flag ends their loop; the process exit below closes whatever is left).
    _, pending = await asyncio.wait(tasks + [tick], timeout=5)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    life = sorted(st.lifetimes)
    out = [
        ("sources", len(sources)),
        ("slots", n),
        ("duration", "%.1f" % ran),
        ("attempts", st.attempts),
        ("rate", "%.0f" % (st.attempts / ran if ran > 0 else 0)),
        ("admitted", st.admitted),
        ("refused", st.refused),
        ("no_banner", st.no_banner),
        ("connect_failed", st.connect_failed),
        ("connect_errors",
         ",".join("%s:%d" % kv for kv in sorted(st.connect_errors.items())) or "-"),
        ("closed_by_proxy", st.closed_by_proxy),
        ("lifetime_median", "%.1f" % statistics.median(life) if life else "-"),
        ("lifetime_max", "%.1f" % life[-1] if life else "-"),
        ("peak_held", st.peak_held),
        ("held_at_stop", held_at_stop),
        ("cpu", "%.2f" % (usage.ru_utime + usage.ru_stime)),
    ]
    out.append(("tasks_not_ended", len(pending)))
    for k, v in out:
        print(k, v)
    for t in st.ticks:
        print("tick", *t)
    sys.stdout.flush()
    # The kernel closes every socket still open; asyncio.run's own clean-up would wait for them.
    os._exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True,
                   help="HOST:PORT or [V6]:PORT of the proxy's SSH front end")
    p.add_argument("--source", action="append", help="a source address (repeatable)")
    p.add_argument("--v6-sources", nargs=3, metavar=("BASE", "FIRST", "COUNT"),
                   help="COUNT IPv6 sources BASE+FIRST, BASE+FIRST+1, ...")
    p.add_argument("--per-source", type=int, default=1, help="connections kept open per source")
    p.add_argument("--mode", choices=("idle", "stall", "mix"), default="mix")
    p.add_argument("--rate", type=float, default=1000,
                   help="most new connections a second over all slots (0: no limit)")
    p.add_argument("--duration", type=float, default=120, help="hard limit of the run, seconds")
    p.add_argument("--stop-file", help="stop once this file exists")
    p.add_argument("--ready-file", help="written once every slot made its first attempt")
    p.add_argument("--connect-timeout", type=float, default=10)
    p.add_argument("--banner-wait", type=float, default=15,
                   help="seconds to wait for the proxy's version line")
    args = p.parse_args()
    if args.per_source < 1 or args.per_source > 10000:
        sys.exit("flood.py: --per-source must be 1-10000")
    if args.duration <= 0 or args.duration > 3600:
        sys.exit("flood.py: --duration must be in (0, 3600]")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
