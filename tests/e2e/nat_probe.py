#!/usr/bin/env python3
"""FTP probes for pinhole's NAT router test (tests/e2e/nat.sh).

Each subcommand runs one client scenario against a real FTP server (vsftpd in the test
namespaces), prints what happened, one line per step, and exits 0 when the outcome is the one
asked for. Run inside a network namespace (`ip netns exec NS python3 nat_probe.py ...`); it only
talks to the addresses it is given.

  session HOST FILE EXPECTED [--mode pasv|port] [--trust-pasv] [--count N] [--more]
          [--timeout S]
      One logged-in control connection, N (default 1) RETRs of FILE in the given data mode,
      each compared with the local file EXPECTED. `pasv` is PASV over IPv4 (EPSV over IPv6);
      with --trust-pasv, ftplib connects to the address the 227 names (by default it uses the
      control connection's peer). `port` is active mode: PORT over IPv4 (EPRT over IPv6) naming
      this host's address on the control connection. With --more, then PWD, NOOP, SYST, LIST
      (must name FILE), NOOP and a last RETR on the same connection, and QUIT. Prints how many
      transfers completed, the first and the last data command with its reply, and how many 227
      replies named each address ("227 replies naming A: N"); exit 0 when every transfer
      completed intact and every reply came in time.
  port HOST ADDR DATAPORT [--eprt] [--timeout S] [--then-retr FILE]
      Log in, then send PORT (or EPRT) naming ADDR:DATAPORT. Prints the outcome: the server's
      reply, or no reply (the connection reset, closed or timed out). With --then-retr and a 2xx
      reply, sends RETR FILE so that the server tries the data connection. Exit 0 when the
      command was refused (an error reply or no reply), 1 when the server accepted it (2xx).
  listen ADDR PORT LOGFILE [--seconds S]
      Accept TCP connections on ADDR:PORT for S seconds (default 600), one line per connection
      to LOGFILE ("connection from HOST PORT"): the target of a bounce, which must stay empty.
"""

import argparse
import collections
import ftplib
import socket
import sys
import time


def log(*args):
    print(*args, flush=True)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Recorder(ftplib.FTP):
    """ftplib.FTP that keeps the data-connection commands it sent and the replies to them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []  # (command, reply)

    def _record(self, cmd, reply):
        if cmd.split(" ", 1)[0] in ("PASV", "EPSV", "PORT", "EPRT"):
            self.sent.append((cmd, reply))
        return reply

    def sendcmd(self, cmd):  # PASV, EPSV
        return self._record(cmd, super().sendcmd(cmd))

    def voidcmd(self, cmd):  # PORT, EPRT (ftplib.sendport)
        return self._record(cmd, super().voidcmd(cmd))


def login(host, timeout, cls=ftplib.FTP):
    ftp = cls(timeout=timeout)
    log("connect:", ftp.connect(host, 21).splitlines()[-1])
    log("login:", ftp.login().splitlines()[-1])  # anonymous
    ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    log("type:", ftp.sendcmd("TYPE I"))
    log("control connection: %s port %d -> %s port %d" % (
        ftp.sock.getsockname()[:2] + ftp.sock.getpeername()[:2]))
    return ftp


def retr(ftp, name):
    data = bytearray()
    reply = ftp.retrbinary("RETR " + name, data.extend)
    return bytes(data), reply


# --------------------------------------------------------------------------------------------
def cmd_session(a):
    with open(a.expected, "rb") as f:
        expected = f.read()
    ftp = login(a.host, a.timeout, Recorder)
    ftp.set_pasv(a.mode == "pasv")
    ftp.trust_server_pasv_ipv4_address = a.trust_pasv
    done = 0
    failed = None
    t0 = time.monotonic()
    try:
        for i in range(a.count):
            data, reply = retr(ftp, a.file)
            if data != expected:
                failed = "RETR %d: %d bytes, not the %d expected" % (i + 1, len(data), len(expected))
                break
            done += 1
            if i == 0:
                log("RETR 1: %d bytes, identical: %s" % (len(data), reply))
        log("%d of %d RETRs of %s complete and identical (%.2f s)" % (
            done, a.count, a.file, time.monotonic() - t0))
        if failed is None and a.more:
            log("PWD:", ftp.sendcmd("PWD"))
            log("NOOP:", ftp.sendcmd("NOOP"))
            log("SYST:", ftp.sendcmd("SYST"))
            names = []
            log("LIST:", ftp.retrlines("LIST", names.append))
            log("LIST: %d lines" % len(names))
            if not any(line.endswith(" " + a.file) for line in names):
                failed = "LIST does not name %s" % a.file
            else:
                log("NOOP:", ftp.sendcmd("NOOP"))
                data, reply = retr(ftp, a.file)
                if data != expected:
                    failed = "last RETR: %d bytes, not the %d expected" % (len(data), len(expected))
                else:
                    log("last RETR: %d bytes, identical: %s" % (len(data), reply))
        if failed is None and a.pause:
            # Idle before QUIT, for the test to look at the daemon's tables meanwhile.
            log("idle for %.1f s" % a.pause)
            time.sleep(a.pause)
        if failed is None:
            log("QUIT:", ftp.quit())
    except Exception as e:  # noqa: BLE001 - any failure is a failed probe
        failed = "after %d RETRs: %r" % (done, e)
    if ftp.sent:
        log("first data command: %s -> %s" % ftp.sent[0])
        log("last data command:  %s -> %s" % ftp.sent[-1])
        log("%d data commands on this control connection" % len(ftp.sent))
        named = collections.Counter()
        for _, reply in ftp.sent:
            if reply.startswith("227"):
                named[ftplib.parse227(reply)[0]] += 1
        for addr, n in sorted(named.items()):
            log("227 replies naming %s: %d" % (addr, n))
    if failed:
        log("FAIL:", failed)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
def cmd_port(a):
    ftp = login(a.host, a.timeout)
    log("noop:", ftp.sendcmd("NOOP"))
    if a.eprt:
        fam = 2 if ":" in a.addr else 1
        cmd = "EPRT |%d|%s|%d|" % (fam, a.addr, a.dataport)
    else:
        cmd = "PORT %s,%d,%d" % (a.addr.replace(".", ","), a.dataport >> 8, a.dataport & 0xFF)
    log("sending:", cmd)
    try:
        reply = ftp.sendcmd(cmd)
    except (ftplib.error_reply, ftplib.error_temp, ftplib.error_perm) as e:
        log("refused: the server answered %s" % e)
        return 0
    except socket.timeout:
        log("refused: no reply within %ss (the command never reached the server)" % a.timeout)
        return 0
    except (ConnectionResetError, BrokenPipeError):
        log("refused: no reply, the connection was reset")
        return 0
    except EOFError:
        log("refused: no reply, the connection was closed")
        return 0
    except OSError as e:
        log("refused: no reply: %s" % e)
        return 0
    log("accepted: the server answered %s" % reply)
    if a.then_retr:
        try:
            log("RETR %s: %s" % (a.then_retr, ftp.sendcmd("RETR " + a.then_retr)))
            log("end of transfer:", ftp.getmultiline())
        except Exception as e:  # noqa: BLE001 - what the server did is all we report
            log("RETR %s: %r" % (a.then_retr, e))
    return 1


# --------------------------------------------------------------------------------------------
def cmd_listen(a):
    s = socket.socket(family_of(a.addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.addr, a.port))
    s.listen(16)
    s.settimeout(0.5)
    out = open(a.logfile, "a", buffering=1)
    log("listening on %s port %d" % (a.addr, a.port))
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        try:
            conn, peer = s.accept()
        except socket.timeout:
            continue
        out.write("connection from %s %d\n" % peer[:2])
        log("connection from %s %d" % peer[:2])
        conn.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("session")
    c.add_argument("host")
    c.add_argument("file")
    c.add_argument("expected")
    c.add_argument("--mode", choices=["pasv", "port"], default="pasv")
    c.add_argument("--trust-pasv", action="store_true")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--more", action="store_true")
    c.add_argument("--pause", type=float, default=0)
    c.add_argument("--timeout", type=float, default=10)
    c.set_defaults(fn=cmd_session)

    c = sub.add_parser("port")
    c.add_argument("host")
    c.add_argument("addr")
    c.add_argument("dataport", type=int)
    c.add_argument("--eprt", action="store_true")
    c.add_argument("--timeout", type=float, default=5)
    c.add_argument("--then-retr")
    c.set_defaults(fn=cmd_port)

    c = sub.add_parser("listen")
    c.add_argument("addr")
    c.add_argument("port", type=int)
    c.add_argument("logfile")
    c.add_argument("--seconds", type=float, default=600)
    c.set_defaults(fn=cmd_listen)

    a = p.parse_args()
    try:
        return a.fn(a)
    except Exception as e:  # noqa: BLE001 - any failure is a failed probe
        log("FAIL: %r" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
