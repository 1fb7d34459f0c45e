#!/usr/bin/env python3
"""Client side of scripts/bench-forward.sh (the forward proxy benchmark); stdlib only.

Run inside the lab's client namespace (`ip netns exec fpf-<pid>-client python3 fwd_bench.py ...`);
it talks only to the addresses it is given (the lab's documentation addresses). The node-API
password comes from the environment (FWD_BENCH_PASS), never from the command line. Every loop is
bounded in count and in time (--deadline).

  latency  --api A:P --user U --server IP --runs N    open -> first SSH banner byte vs direct
  open     --api A:P --user U --server IP --count N --threads T --ids FILE
  close    --api A:P --user U --ids FILE --threads T
  nftcount                                           element counts of `nft -j list table` (stdin)

Output: one "key value..." line per figure (read by the shell script), samples prefixed "run".
"""

import argparse
import base64
import http.client
import json
import os
import socket
import sys
import threading
import time

BANNER = b"SSH-2.0-"


def now():
    return time.perf_counter()


class Api:
    def __init__(self, api, user, password, timeout):
        host, port = api.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, path, body):
        """One POST on a fresh connection (as IBM's client and ours do) -> (status, text)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body.encode(), headers=self.headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def open(self, server, tcp_port=22, udp_port=33001):
        # IBM's exact shape (spaces around the colons, this order).
        body = ('{"host_spec" : "IPv4", "host" : "%s", "tcp_port" : %d, "udp_port" : %d}'
                % (server, tcp_port, udp_port))
        status, text = self.call("/proxy/open", body)
        if status != 200:
            raise RuntimeError(f"open: HTTP {status}: {text.strip()[:200]}")
        return json.loads(text)

    def close(self, proxy_id):
        status, text = self.call("/proxy/close", '{"proxy_id" : "%s"}' % proxy_id)
        if status != 200:
            raise RuntimeError(f"close {proxy_id}: HTTP {status}: {text.strip()[:200]}")


def first_banner_byte(addr, port, timeout):
    """Connects and waits for the first byte -> (start, connected, first byte) as perf_counter
    times; then reads on until the banner's first 8 bytes are there and checks them."""
    t0 = now()
    sock = socket.create_connection((addr, port), timeout=timeout)
    try:
        t_conn = now()
        data = sock.recv(256)
        t1 = now()
        for _ in range(8):
            if len(data) >= len(BANNER) or not data:
                break
            more = sock.recv(256)
            if not more:
                break
            data += more
        if not data.startswith(BANNER):
            raise RuntimeError(f"{addr}:{port} answered {data[:40]!r}, not an SSH-2.0 banner")
        return t0, t_conn, t1
    finally:
        sock.close()


def cmd_latency(a, api):
    deadline = now() + a.deadline
    fails = 0
    for i in range(a.runs):
        if now() > deadline:
            print(f"note deadline of {a.deadline} s reached after {i} runs", flush=True)
            break
        order = ("forward", "direct") if i % 2 == 0 else ("direct", "forward")
        for path in order:
            try:
                if path == "direct":
                    t0, t_conn, t1 = first_banner_byte(a.server, 22, a.timeout)
                    print(f"run direct {t1 - t0:.6f} {t_conn - t0:.6f}", flush=True)
                else:
                    t0 = now()
                    reply = api.open(a.server)
                    t_open = now()
                    addr = reply.get("proxy_addr") or a.api.rsplit(":", 1)[0]
                    t_c0, t_conn, t1 = first_banner_byte(addr, int(reply["proxy_tcp_port"]), a.timeout)
                    t2 = now()
                    api.close(reply["proxy_id"])
                    t_close = now() - t2
                    # total (open start -> first byte), the open call, open end -> first byte,
                    # the TCP connect, the close call
                    print(f"run forward {t1 - t0:.6f} {t_open - t0:.6f} {t1 - t_open:.6f} "
                          f"{t_conn - t_c0:.6f} {t_close:.6f}", flush=True)
            except Exception as e:  # noqa: BLE001 - reported, counted, the run goes on
                fails += 1
                print(f"error {path} run {i}: {e}", flush=True)
                if fails > 5:
                    print("note more than 5 errors: stopped", flush=True)
                    return 1
    return 0


def run_threads(n_threads, work, deadline):
    """Runs work(k) in n_threads threads; each returns (ok, errors list)."""
    results = [None] * n_threads

    def body(k):
        results[k] = work(k, deadline)

    threads = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(n_threads)]
    t0 = now()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - now()) + 5)
    return now() - t0, [r or (0, ["thread did not finish"]) for r in results]


def cmd_open(a, api):
    deadline = now() + a.deadline
    lock = threading.Lock()
    ids, latencies, finished = [], [], []
    next_index = [0]

    def work(_k, dl):
        ok, errors = 0, []
        while now() < dl and len(errors) < 20:
            with lock:
                if next_index[0] >= a.count:
                    break
                next_index[0] += 1
            t0 = now()
            try:
                reply = api.open(a.server)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
                continue
            with lock:
                ids.append(reply["proxy_id"])
                latencies.append(now() - t0)
                finished.append(now())
            ok += 1
        return ok, errors

    t_start = now()
    secs, results = run_threads(a.threads, work, deadline)
    with open(a.ids, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    report("open", secs, results, latencies, finished, t_start)
    return 0 if len(ids) == a.count else 1


def cmd_close(a, api):
    deadline = now() + a.deadline
    with open(a.ids) as f:
        ids = [line.strip() for line in f if line.strip()]
    lock = threading.Lock()
    latencies, finished = [], []
    queue = list(ids)

    def work(_k, dl):
        ok, errors = 0, []
        while now() < dl and len(errors) < 20:
            with lock:
                if not queue:
                    break
                proxy_id = queue.pop()
            t0 = now()
            try:
                api.close(proxy_id)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
                continue
            with lock:
                latencies.append(now() - t0)
                finished.append(now())
            ok += 1
        return ok, errors

    t_start = now()
    secs, results = run_threads(a.threads, work, deadline)
    report("close", secs, results, latencies, finished, t_start)
    return 0 if sum(r[0] for r in results) == len(ids) else 1


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def tenth_rates(finished, t_start):
    """Rates (per second) over the first and the last tenth of the calls, by completion time."""
    f = sorted(finished)
    k = len(f) // 10
    if k < 2:
        return float("nan"), float("nan")
    first = k / (f[k - 1] - t_start) if f[k - 1] > t_start else float("nan")
    last = (k - 1) / (f[-1] - f[-k]) if f[-1] > f[-k] else float("nan")
    return first, last


def report(what, secs, results, latencies, finished, t_start):
    ok = sum(r[0] for r in results)
    errors = [e for r in results for e in r[1]]
    rate = ok / secs if secs > 0 else 0.0
    first, last = tenth_rates(finished, t_start)
    print(f"{what} ok {ok} failed {len(errors)} secs {secs:.3f} rate {rate:.1f} "
          f"call_median {pct(latencies, 50):.4f} call_p90 {pct(latencies, 90):.4f} "
          f"call_max {max(latencies) if latencies else float('nan'):.4f} "
          f"rate_first_tenth {first:.1f} rate_last_tenth {last:.1f}", flush=True)
    for e in errors[:3]:
        print(f"error {what}: {e}", flush=True)


def cmd_nftcount(_a):
    """Element counts of every set and map of `nft -j list table ...` read from stdin."""
    text = sys.stdin.read()
    if not text.strip():
        print("total 0")
        return 0
    doc = json.loads(text)
    total = 0
    for obj in doc.get("nftables", []):
        for kind in ("set", "map"):
            if kind in obj:
                n = len(obj[kind].get("elem", []))
                total += n
                print(f"{obj[kind]['name']} {n}")
    print(f"total {total}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("latency", "open", "close"):
        s = sub.add_parser(name)
        s.add_argument("--api", required=True, help="the API's address:port")
        s.add_argument("--user", required=True)
        s.add_argument("--timeout", type=float, default=15.0, help="per call / connection, s")
        s.add_argument("--deadline", type=float, default=300.0, help="the whole command, s")
        if name in ("latency", "open"):
            s.add_argument("--server", required=True, help="the outside server's address")
        if name == "latency":
            s.add_argument("--runs", type=int, default=50)
        if name in ("open", "close"):
            s.add_argument("--threads", type=int, default=8)
            s.add_argument("--ids", required=True, help="file of proxy ids (written by open)")
        if name == "open":
            s.add_argument("--count", type=int, default=1000)
    sub.add_parser("nftcount")
    a = p.parse_args()
    if a.cmd == "nftcount":
        return cmd_nftcount(a)
    api = Api(a.api, a.user, os.environ.get("FWD_BENCH_PASS", ""), a.timeout)
    return {"latency": cmd_latency, "open": cmd_open, "close": cmd_close}[a.cmd](a, api)


if __name__ == "__main__":
    sys.exit(main())
