#!/usr/bin/env python3
"""TFTP transfer rate, for benches/live.sh.

    tftp_rate.py HOST FILE SIZE --procs N --duration S [--timeout S] [--ports LO-HI]

Starts N client processes that, together, until DURATION seconds have passed, each loop: a
fresh UDP socket (a new transfer ID), RRQ FILE in octet mode with no options (RFC 1350), read
the server's DATA 1 from its new port, check it is the whole file (SIZE bytes, so SIZE must be
below 512: one block, the last), ACK it, close. As in tests/e2e/tftp_probe.py, but a loop and
no retransmissions: a request with no answer within --timeout, an ERROR, or a wrong block is
counted as an error and the worker moves on with a new socket.

Prints one JSON object on stdout:
    {"completed": N, "errors": N, "elapsed": SECONDS, "rate": PER_SECOND,
     "per_proc": [N, ...], "first_error": TEXT|null}
Exit status 0 when at least one transfer completed, 1 otherwise.

Run inside the client network namespace; talks only to HOST.
"""

import argparse
import json
import multiprocessing as mp
import socket
import struct
import sys
import time

RRQ, DATA, ACK, ERROR = 1, 3, 4, 5


def worker(a, barrier, results, index):
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    rrq = struct.pack("!H", RRQ) + a.file.encode() + b"\0octet\0"
    ack1 = struct.pack("!HH", ACK, 1)
    completed = errors = 0
    first_error = None
    try:
        barrier.wait(timeout=60)
    except Exception:  # noqa: BLE001
        pass
    # With --ports LO-HI each worker takes its own slice of the range, in order, so that a
    # client port comes back only after the whole slice was used; otherwise the kernel picks
    # (and soon reuses) ephemeral ports, as real clients have it.
    ports = None
    if a.ports:
        lo, hi = (int(x) for x in a.ports.split("-"))
        span = (hi - lo + 1) // a.procs
        ports = range(lo + index * span, lo + (index + 1) * span)
    n = 0
    deadline = time.monotonic() + a.duration
    while time.monotonic() < deadline:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if ports:
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", ports[n % len(ports)]))
                n += 1
            s.settimeout(a.timeout)
            s.sendto(rrq, (a.host, 69))
            pkt, peer = s.recvfrom(2048)
            opcode, block = struct.unpack("!HH", pkt[:4])
            if opcode == ERROR:
                raise ValueError("ERROR %d %r" % (block, pkt[4:]))
            if opcode != DATA or block != 1:
                raise ValueError("opcode %d block %d" % (opcode, block))
            if len(pkt) - 4 != a.size:
                raise ValueError("DATA 1 has %d bytes, not %d" % (len(pkt) - 4, a.size))
            s.sendto(ack1, peer)
            completed += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted
            errors += 1
            if first_error is None:
                first_error = "%r" % e
        finally:
            s.close()
    results.put((index, completed, errors, first_error, time.monotonic()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("file")
    p.add_argument("size", type=int)
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--timeout", type=float, default=2)
    p.add_argument("--ports", help="LO-HI: client ports to cycle through (default: the kernel's)")
    a = p.parse_args()
    if not 0 <= a.size < 512:
        p.error("SIZE must be below 512 (one DATA block)")

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(a.procs + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(a, barrier, results, i)) for i in range(a.procs)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=60)
    except Exception:  # noqa: BLE001
        pass
    start = time.monotonic()
    rows = [results.get(timeout=a.duration + a.timeout + 60) for _ in procs]
    for proc in procs:
        proc.join()
    rows.sort()
    completed = sum(r[1] for r in rows)
    elapsed = max(r[4] for r in rows) - start
    print(json.dumps({
        "completed": completed,
        "errors": sum(r[2] for r in rows),
        "elapsed": round(elapsed, 3),
        "rate": round(completed / elapsed, 1) if elapsed > 0 else 0.0,
        "per_proc": [r[1] for r in rows],
        "first_error": next((r[3] for r in rows if r[3]), None),
    }))
    return 0 if completed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
