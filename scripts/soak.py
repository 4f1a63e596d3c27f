#!/usr/bin/env python3
"""The soak: `weir serve` on Redis state and broker at a steady rate for a long time, with a
mix of steps that succeed, succeed after a retry, and fail for good. Every minute it records
weir's resident memory (RSS), its open file descriptors, Redis's used memory and the number of
keys, and prints the series; with --plot it draws them into a PNG (matplotlib). Finished runs
and events are deleted after a short retention, so that a store that does not leak stops
growing once the retention is reached.

  scripts/soak.py --weir target/release/weir --redis redis://127.0.0.1:6379/9 --minutes 12
  scripts/soak.py --plot-from series.json --plot soak.png   # draw a saved series again

The Redis database given is flushed first: use one of its own. Standard library only (the
plot needs matplotlib).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

FUNCTION = {
    "id": "soak",
    "triggers": [{"event": "soak/tick"}],
    "retries": {"attempts": 2},
    "steps": {
        "ok": {"path": "file://./steps/ok", "timeout": "10s"},
        "flaky": {"path": "file://./steps/flaky", "timeout": "10s", "after": [{"step": "ok"}]},
        "doomed": {"path": "file://./steps/doomed", "timeout": "10s",
                   "after": [{"step": "ok", "if": "event.data.n % 10 == 0"}]},
    },
}

STEPS = {
    "ok": "cat > /dev/null\necho '{\"ok\": true}'",
    # Fails its first attempt, succeeds on the retry.
    "flaky": "cat > /dev/null\nif [ \"$WEIR_ATTEMPT\" = 1 ]; then echo 'not yet' >&2; exit 1; fi\necho '{\"ok\": true}'",
    # Fails every attempt: one run in ten ends failed.
    "doomed": "cat > /dev/null\necho 'doomed' >&2\nexit 1",
}


def redis_command(host, port, db, *args):
    """One Redis command over a raw socket (no client library needed); the reply, parsed."""
    with socket.create_connection((host, port)) as s:
        def send(parts):
            out = b"*%d\r\n" % len(parts)
            for p in parts:
                p = p if isinstance(p, bytes) else str(p).encode()
                out += b"$%d\r\n%s\r\n" % (len(p), p)
            s.sendall(out)
        f = s.makefile("rb")

        def read():
            line = f.readline()
            kind, rest = line[:1], line[1:-2]
            if kind in (b"+", b"-"):
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data.decode(errors="replace")
            if kind == b"*":
                return [read() for _ in range(int(rest))]
            raise ValueError(line)
        send([b"SELECT", str(db).encode()])
        read()
        send([a if isinstance(a, bytes) else str(a).encode() for a in args])
        return read()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--rate", type=float, default=50, help="events per second")
    ap.add_argument("--retention", default="2m", help="run and event retention")
    ap.add_argument("--port", type=int, default=8297)
    ap.add_argument("--plot", help="write the series as a PNG here")
    ap.add_argument("--json", help="write the series as JSON here")
    ap.add_argument("--plot-from", help="only draw --plot from a series --json wrote earlier")
    args = ap.parse_args()
    if args.plot_from:
        with open(args.plot_from) as f:
            saved = json.load(f)
        plot(saved["series"], saved["rate"], saved["retention"], args.plot or "soak.png")
        return

    rest = args.redis.split("://", 1)[1]
    hostport, _, db = rest.partition("/")
    host, _, port = hostport.partition(":")
    port, db = int(port or 6379), int(db or 0)
    redis_command(host, port, db, "FLUSHDB")

    work = tempfile.mkdtemp(prefix="weir-soak-")
    fn = os.path.join(work, "soak")
    os.makedirs(os.path.join(fn, "steps"))
    with open(os.path.join(fn, "weir.json"), "w") as f:
        json.dump(FUNCTION, f)
    for name, body in STEPS.items():
        path = os.path.join(fn, "steps", name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(path, 0o755)

    url = f"redis://{host}:{port}/{db}"
    state = f"{url}?prefix=soak&retention={args.retention}"
    broker = f"{url}?prefix=soak"
    log = open(os.path.join(work, "weir.log"), "w")
    node = subprocess.Popen(
        [args.weir, "serve", "--functions", work, "--state", state, "--broker", broker,
         "--event-key", "soak", "--listen", f"127.0.0.1:{args.port}",
         "--run-retention", args.retention],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"weir serve did not start; see {log.name}")

    sent = [0, 0]  # accepted, refused
    stop = threading.Event()

    def send():
        interval = 1.0 / args.rate
        due = time.monotonic()
        n = 0
        while not stop.is_set():
            body = json.dumps({"name": "soak/tick", "data": {"n": n}}).encode()
            try:
                req = urllib.request.Request(base + "/e/soak", body, {"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=20)
                sent[0] += 1
            except OSError:
                sent[1] += 1
            n += 1
            due += interval
            time.sleep(max(0, due - time.monotonic()))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    series = []
    started = time.monotonic()
    print("minute  rss_mib  fds  redis_mib  keys  events_sent  refused", flush=True)
    minute = 0
    while minute < args.minutes:
        minute += 1
        time.sleep(max(0, started + 60 * minute - time.monotonic()))
        fds = len(os.listdir(f"/proc/{node.pid}/fd"))
        info = redis_command(host, port, db, "INFO", "memory")
        used = int(next(l.split(":")[1] for l in info.splitlines() if l.startswith("used_memory:")))
        keys = redis_command(host, port, db, "DBSIZE")
        row = {"minute": minute, "rss_mib": rss_kib(node.pid) / 1024, "fds": fds,
               "redis_mib": used / 2**20, "keys": keys, "sent": sent[0], "refused": sent[1]}
        series.append(row)
        print(f"{minute:6d}  {row['rss_mib']:7.1f}  {fds:3d}  {row['redis_mib']:9.1f}  {keys:5d}  {sent[0]:11d}  {sent[1]:7d}", flush=True)
    stop.set()
    sender.join(timeout=30)
    runs = json.load(urllib.request.urlopen(base + "/v1/runs?limit=10000"))
    by_status = {}
    for r in runs:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    node.terminate()
    node.wait(timeout=60)
    print(f"runs listed at the end (the last {args.retention}, by status): {by_status}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"series": series, "runs_at_end": by_status, "rate": args.rate,
                       "retention": args.retention}, f, indent=1)
    if args.plot:
        plot(series, args.rate, args.retention, args.plot)


def plot(series, rate, retention, path):
    """Draws the series into a PNG at `path` (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    xs = [r["minute"] for r in series]
    for ax, key, title in [(axes[0][0], "rss_mib", "weir RSS (MiB)"),
                           (axes[0][1], "fds", "weir open file descriptors"),
                           (axes[1][0], "redis_mib", "Redis used memory (MiB)"),
                           (axes[1][1], "keys", "Redis keys")]:
        ax.plot(xs, [r[key] for r in series], marker="o" if len(xs) <= 20 else None)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("minute")
    fig.suptitle(f"weir soak: {rate:g} events/s on Redis, retention {retention}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
