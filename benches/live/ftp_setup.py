#!/usr/bin/env python3
"""FTP data-connection setup rate, for benches/live.sh.

    ftp_setup.py HOST FILE SIZE --procs N --duration S [--timeout S]

Starts N client processes. Each logs in once (anonymous, TYPE I) on its own control
connection; when all are logged in they start together and, until DURATION seconds have
passed, loop: PASV, connect the data connection, RETR FILE, read it to the end, close, read
the 226. A transfer counts only when it delivered exactly SIZE bytes and the server confirmed
it. A failure (time-out, refused connection, error reply, short file) is counted as an error;
the worker then logs in again and goes on.

The data connection goes to the control connection's peer, HOST, on the port the 227 reply
names, as curl does (ftplib's default: trust_server_pasv_ipv4_address is off); the addresses the
227 replies named are reported (pasv_hosts), so that behind a NAT router one can tell whether
the router's FTP helper rewrote them to its public address.

Prints one JSON object on stdout:
    {"completed": N, "errors": N, "elapsed": SECONDS, "rate": PER_SECOND,
     "per_proc": [N, ...], "first_error": TEXT|null, "pasv_hosts": [ADDRESS, ...]}
where elapsed runs from the common start to the end of the last transfer (transfers under
way at the deadline are finished and counted). Exit status 0 when at least one transfer
completed, 1 otherwise.

Run inside the client network namespace; talks only to HOST.
"""

import argparse
import ftplib
import json
import multiprocessing as mp
import socket
import sys
import time


class FTP(ftplib.FTP):
    """ftplib's client that remembers the address each 227 reply named (IPv4)."""

    def __init__(self, named):
        super().__init__()
        self.named = named

    def makepasv(self):
        if self.af != socket.AF_INET:
            return super().makepasv()
        host, port = ftplib.parse227(self.sendcmd("PASV"))
        self.named.add(host)
        if not self.trust_server_pasv_ipv4_address:
            host = self.sock.getpeername()[0]
        return host, port


def login(host, timeout, named):
    ftp = FTP(named)
    ftp.connect(host, 21, timeout=timeout)
    ftp.login()  # anonymous, password "anonymous@"
    ftp.voidcmd("TYPE I")
    return ftp


def worker(a, barrier, results, index):
    completed = errors = 0
    first_error = None
    ftp = None
    named = set()
    try:
        ftp = login(a.host, a.timeout, named)
    except Exception as e:  # noqa: BLE001 - reported, not fatal to the others
        first_error = "login: %r" % e
    try:
        barrier.wait(timeout=60)
    except Exception:  # noqa: BLE001 - a broken barrier: run anyway, the start is late
        pass
    start = time.monotonic()
    deadline = start + a.duration
    cmd = "RETR " + a.file
    while time.monotonic() < deadline:
        try:
            if ftp is None:
                ftp = login(a.host, a.timeout, named)
            # PASV, connect, RETR, expect 150 (ftplib.ntransfercmd does exactly this).
            conn, _ = ftp.ntransfercmd(cmd)
            got = 0
            with conn:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
            ftp.voidresp()  # 226
            if got != a.size:
                raise ValueError("got %d bytes of %d" % (got, a.size))
            completed += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted
            errors += 1
            if first_error is None:
                first_error = "%r" % e
            if ftp is not None:
                try:
                    ftp.close()
                except Exception:  # noqa: BLE001
                    pass
            ftp = None
            time.sleep(0.05)
    end = time.monotonic()
    if ftp is not None:
        try:
            ftp.quit()
        except Exception:  # noqa: BLE001
            ftp.close()
    results.put((index, completed, errors, first_error, end, sorted(named)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("file")
    p.add_argument("size", type=int)
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--timeout", type=float, default=5)
    a = p.parse_args()

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
    rows = [results.get(timeout=a.duration + 10 * a.timeout + 60) for _ in procs]
    for proc in procs:
        proc.join()
    rows.sort()
    completed = sum(r[1] for r in rows)
    errors = sum(r[2] for r in rows)
    first_error = next((r[3] for r in rows if r[3]), None)
    elapsed = max(r[4] for r in rows) - start
    print(json.dumps({
        "completed": completed,
        "errors": errors,
        "elapsed": round(elapsed, 3),
        "rate": round(completed / elapsed, 1) if elapsed > 0 else 0.0,
        "per_proc": [r[1] for r in rows],
        "first_error": first_error,
        "pasv_hosts": sorted(set(h for r in rows for h in r[5])),
    }))
    return 0 if completed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
