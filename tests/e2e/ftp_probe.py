#!/usr/bin/env python3
"""FTP and TCP probes for pinhole's end-to-end test (tests/e2e/nfqueue.sh) and demo.

Each subcommand runs one client scenario against a real FTP server (vsftpd in the test
namespaces), prints what happened, one line per step, and exits 0 when the outcome is the one
asked for. They are run inside a network namespace (`ip netns exec NS python3 ftp_probe.py ...`)
and only ever talk to the addresses they are given.

  connect HOST PORT [--timeout S] [--expect timeout|refused|connected] [--source ADDR]
      One TCP connection attempt. A SYN that reaches a host where nothing listens is answered
      with a RST at once ("refused"); only a firewall that drops it makes it time out.
  abort HOST BIGFILE SMALLFILE EXPECTED [--style ftplib|rfc959]
      RETR BIGFILE, read a few KiB, abort it (ftplib: close the data connection, then ABOR as
      urgent data; rfc959: Telnet IP, IAC DM as urgent data, ABOR, data connection still open),
      then RETR SMALLFILE on the same control connection and compare it with the local file
      EXPECTED.
  bounce HOST THIRD_ADDR [--timeout S]
      Log in, then send PORT naming THIRD_ADDR (not the client's own address: an FTP bounce,
      RFC 2577). Exit 0 when no reply to it comes back (the command never reached the server);
      exit 1, printing the reply, when the server answered it.
  reuse HOST FILE SIZE [--timeout S] [--expect timeout|refused|connected]
      PASV, connect the data connection, RETR FILE, and while it runs open a second connection
      to the same server port from a new source port. Exit 0 when the second attempt has the
      expected outcome and the first transfer still completes with SIZE bytes.
  session HOST CMDFILE RESULTFILE [--lifetime S]
      Hold one logged-in control connection open and run the commands appended to CMDFILE, one
      per line, writing "N ok ..." or "N fail ..." to RESULTFILE for the Nth command (line 0 is
      the login: "0 ok connected LOCALPORT"). Commands:
        get REMOTE LOCAL [pasv|port]   download on this control connection
        pasv                           send PASV only and report the announced port
        pasv-hold                      send PASV, keep the announced address for retr-held
        retr-held REMOTE LOCAL         connect to the held address, RETR REMOTE into LOCAL
        connect-held [TIMEOUT]         one more connection attempt to the held address:
                                       "ok connected|refused|timeout" (the outcome is the text)
        port ADDR PORT                 send PORT naming ADDR:PORT, report the reply
        noop                           NOOP
        quit                           QUIT and exit
      Used to keep a session open across a rules reload, while `pinhole sessions` runs, and
      across a failover (tests/e2e/ha.sh).
"""

import argparse
import ftplib
import os
import socket
import sys
import time


def log(*args):
    print(*args, flush=True)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect_outcome(host, port, timeout, source=None):
    """One TCP connection attempt: 'connected', 'refused', 'timeout' or 'error: ...'."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        return "connected", s
    except socket.timeout:
        s.close()
        return "timeout", None
    except ConnectionRefusedError:
        s.close()
        return "refused", None
    except OSError as e:
        s.close()
        return "error: %s" % e, None


def login(host, timeout=15, source=None):
    ftp = ftplib.FTP(timeout=timeout, source_address=(source, 0) if source else None)
    log("connect:", ftp.connect(host, 21).splitlines()[-1])
    log("login:", ftp.login().splitlines()[-1])  # anonymous
    ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    log("type:", ftp.sendcmd("TYPE I"))
    return ftp


# --------------------------------------------------------------------------------------------
def cmd_connect(a):
    outcome, s = connect_outcome(a.host, a.port, a.timeout, a.source)
    if s:
        s.close()
    log("connect %s port %d: %s" % (a.host, a.port, outcome))
    return 0 if outcome == a.expect else 1


# --------------------------------------------------------------------------------------------
IAC, IP, DM = 255, 244, 242


def cmd_abort(a):
    with open(a.expected, "rb") as f:
        expected = f.read()
    ftp = login(a.host)
    conn = socket.socket(family_of(a.host), socket.SOCK_STREAM)
    # Small receive window: the server is blocked mid-file when the abort comes, instead of
    # having sent the whole file already.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(15)
    host, port = ftp.makepasv()
    conn.connect((host, port))
    log("RETR:", ftp.sendcmd("RETR " + a.bigfile))  # 150
    got = 0
    while got < 16384:
        chunk = conn.recv(16384 - got)
        if not chunk:
            break
        got += len(chunk)
    log("read %d bytes of %s, aborting (%s style)" % (got, a.bigfile, a.style))
    if a.style == "ftplib":
        # What Python's ftplib users do: close the data socket, then ftp.abort(), which sends
        # "ABOR\r\n" as urgent data and returns the first reply. (ftp.abort() while the
        # transfer still runs gets "500 Unknown command." from vsftpd, which expects the
        # Telnet IP/Synch of RFC 959 before an urgent ABOR, and the transfer goes on.)
        conn.close()
        time.sleep(0.3)  # let the server's write fail first: 426, then the ABOR's 225
        replies = [ftp.abort()]
    else:
        # RFC 959 section 4.1.3 with the data connection still open: Telnet IP, the Synch
        # (IAC DM, the DM as urgent data), then ABOR. vsftpd (async_abor_enable) takes SIGURG.
        ftp.sock.sendall(bytes([IAC, IP]))
        time.sleep(0.05)
        ftp.sock.send(bytes([IAC, DM]), socket.MSG_OOB)
        time.sleep(0.05)
        ftp.sock.sendall(b"ABOR\r\n")
        drained = 0
        try:
            while True:  # the server closes the data connection
                chunk = conn.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        conn.close()
        log("drained %d bytes after ABOR" % drained)
        replies = [ftp.getmultiline()]
    # An abort mid-transfer is answered 426 (transfer failed), then 226 (ABOR successful) or
    # 225 (no transfer left to abort).
    while replies[-1][:3] == "426":
        replies.append(ftp.getmultiline())
    log("abort replies:", replies)
    if replies[-1][:3] not in ("225", "226"):
        log("FAIL: abort not completed")
        return 1
    # A second transfer on the same control connection.
    data = bytearray()
    ftp.retrbinary("RETR " + a.smallfile, data.extend)
    log("second transfer: %d bytes of %s" % (len(data), a.smallfile))
    log("quit:", ftp.quit())
    if bytes(data) != expected:
        log("FAIL: %s differs from %s" % (a.smallfile, a.expected))
        return 1
    return 0


# --------------------------------------------------------------------------------------------
def cmd_bounce(a):
    ftp = login(a.host, timeout=a.timeout)
    log("noop:", ftp.sendcmd("NOOP"))
    port = 40000
    cmd = "PORT %s,%d,%d" % (a.third.replace(".", ","), port >> 8, port & 0xFF)
    log("sending:", cmd)
    try:
        reply = ftp.sendcmd(cmd)
    except ftplib.error_reply as e:  # 1xx/3xx
        reply = str(e)
    except ftplib.error_temp as e:  # 4xx
        reply = str(e)
    except ftplib.error_perm as e:  # 5xx
        reply = str(e)
    except socket.timeout:
        log("no reply: timed out after %ss (the command never reached the server)" % a.timeout)
        return 0
    except (ConnectionResetError, BrokenPipeError):
        log("no reply: connection reset")
        return 0
    except EOFError:
        log("no reply: connection closed")
        return 0
    except OSError as e:
        log("no reply: %s" % e)
        return 0
    log("reply:", reply)
    return 1


# --------------------------------------------------------------------------------------------
def cmd_reuse(a):
    ftp = login(a.host)
    host, port = ftp.makepasv()
    log("PASV: %s port %d" % (host, port))
    first = socket.socket(family_of(a.host), socket.SOCK_STREAM)
    # Small window: the transfer is still running while the second attempt is made.
    first.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    first.settimeout(15)
    first.connect((host, port))
    log("first data connection from port %d: connected" % first.getsockname()[1])
    log("RETR:", ftp.sendcmd("RETR " + a.file))  # 150: vsftpd accepted it, stopped listening
    total = len(first.recv(4096))
    # Same destination, new source port: the pinhole was for one connection only.
    outcome, s = connect_outcome(host, port, a.timeout)
    if s:
        s.close()
    log("second connection to port %d: %s" % (port, outcome))
    while True:
        chunk = first.recv(65536)
        if not chunk:
            break
        total += len(chunk)
    first.close()
    log("end of transfer:", ftp.voidresp())
    log("first transfer: %d bytes" % total)
    ftp.quit()
    ok = outcome == a.expect and total == a.size
    if total != a.size:
        log("FAIL: expected %d bytes" % a.size)
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
def cmd_session(a):
    deadline = time.monotonic() + a.lifetime
    results = open(a.resultfile, "a", buffering=1)

    def result(n, ok, text):
        results.write("%d %s %s\n" % (n, "ok" if ok else "fail", text))

    try:
        ftp = login(a.host)
    except Exception as e:  # noqa: BLE001 - reported to the driving script
        result(0, False, "login: %r" % e)
        return 1
    result(0, True, "connected %d" % ftp.sock.getsockname()[1])
    done = 0
    held = None
    while time.monotonic() < deadline:
        try:
            with open(a.cmdfile) as f:
                lines = [l.split() for l in f.read().splitlines() if l.strip()]
        except FileNotFoundError:
            lines = []
        if len(lines) <= done:
            time.sleep(0.05)
            continue
        words = lines[done]
        done += 1
        log("command %d: %s" % (done, " ".join(words)))
        try:
            if words[0] == "get":
                remote, local = words[1], words[2]
                mode = words[3] if len(words) > 3 else "pasv"
                ftp.set_pasv(mode != "port")
                with open(local, "wb") as out:
                    reply = ftp.retrbinary("RETR " + remote, out.write)
                result(done, True, "%d %s" % (os.path.getsize(local), reply))
            elif words[0] == "pasv":
                reply = ftp.sendcmd("PASV")
                result(done, True, "%d %s" % (ftplib.parse227(reply)[1], reply))
            elif words[0] == "pasv-hold":
                reply = ftp.sendcmd("PASV")
                held = ftplib.parse227(reply)
                result(done, True, "%d %s" % (held[1], reply))
            elif words[0] == "retr-held":
                remote, local = words[1], words[2]
                conn = socket.create_connection(held, timeout=15)
                try:
                    ftp.sendcmd("RETR " + remote)
                    with open(local, "wb") as out:
                        while True:
                            chunk = conn.recv(65536)
                            if not chunk:
                                break
                            out.write(chunk)
                finally:
                    conn.close()
                reply = ftp.voidresp()
                result(done, True, "%d %s" % (os.path.getsize(local), reply))
            elif words[0] == "connect-held":
                timeout = float(words[1]) if len(words) > 1 else 3
                outcome, s = connect_outcome(held[0], held[1], timeout)
                if s:
                    s.close()
                result(done, True, outcome)
            elif words[0] == "port":
                a, port = words[1].split("."), int(words[2])
                line = "PORT %s,%d,%d" % (",".join(a), port >> 8, port & 0xFF)
                result(done, True, ftp.sendcmd(line))
            elif words[0] == "noop":
                result(done, True, ftp.sendcmd("NOOP"))
            elif words[0] == "quit":
                result(done, True, ftp.quit())
                return 0
            else:
                result(done, False, "unknown command")
        except Exception as e:  # noqa: BLE001 - reported to the driving script
            result(done, False, repr(e).replace("\n", " "))
    log("lifetime over")
    return 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    outcomes = ["timeout", "refused", "connected"]

    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--timeout", type=float, default=3)
    c.add_argument("--expect", choices=outcomes, default="timeout")
    c.add_argument("--source", help="bind to this local address first (a third host)")
    c.set_defaults(fn=cmd_connect)

    c = sub.add_parser("abort")
    c.add_argument("host")
    c.add_argument("bigfile")
    c.add_argument("smallfile")
    c.add_argument("expected")
    c.add_argument("--style", choices=["ftplib", "rfc959"], default="ftplib")
    c.set_defaults(fn=cmd_abort)

    c = sub.add_parser("bounce")
    c.add_argument("host")
    c.add_argument("third")
    c.add_argument("--timeout", type=float, default=5)
    c.set_defaults(fn=cmd_bounce)

    c = sub.add_parser("reuse")
    c.add_argument("host")
    c.add_argument("file")
    c.add_argument("size", type=int)
    c.add_argument("--timeout", type=float, default=3)
    c.add_argument("--expect", choices=outcomes, default="timeout")
    c.set_defaults(fn=cmd_reuse)

    c = sub.add_parser("session")
    c.add_argument("host")
    c.add_argument("cmdfile")
    c.add_argument("resultfile")
    c.add_argument("--lifetime", type=float, default=300)
    c.set_defaults(fn=cmd_session)

    a = p.parse_args()
    try:
        return a.fn(a)
    except Exception as e:  # noqa: BLE001 - any failure is a failed probe
        log("FAIL: %r" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
