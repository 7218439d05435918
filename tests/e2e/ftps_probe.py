#!/usr/bin/env python3
"""FTPS probes and helper servers for pinhole's FTPS end-to-end test (tests/e2e/ftps.sh).

Each client subcommand runs one scenario against a real FTPS server in the test namespaces
(vsftpd, proftpd) or the fake server below, prints what happened, one line per step, and exits 0
when the outcome is the one asked for. Everything runs inside a network namespace (`ip netns exec
NS python3 ftps_probe.py ...`) and only ever talks to the addresses it is given. TLS certificates
are not verified: the servers use the test's throw-away self-signed certificate.

Clients:
  hold HOST STATEDIR [--port P] [--get REMOTE EXPECTED] [--lifetime S]
      One FTPS session (ftplib.FTP_TLS: AUTH TLS, anonymous login, PBSZ 0 / PROT P), optionally
      a download compared with the local file EXPECTED; then writes STATEDIR/ready (the control
      connection's local port) and holds the session until STATEDIR/quit exists, sends QUIT,
      closes, and writes STATEDIR/closed (the reply to QUIT).
  many HOST PORT N [--timeout S] [--expect-last timeout|refused|connected] [--source ADDR]
      Opens N-1 TCP connections to HOST:PORT and holds them (each must connect), then makes an
      Nth attempt while they are open. Exit 0 when the first N-1 connected and the last had the
      expected outcome.
  ccc-transfer HOST PORT REMOTE EXPECTED [--upload LOCAL NAME]
      FTPS login, PROT P, CCC (RFC 4217 section 12.3: the control connection goes back to
      cleartext, data connections stay TLS), a NOOP in cleartext, then REMOTE downloaded over a
      passive (PASV) and an active (PORT, to the client's own address) data connection, each
      compared with EXPECTED; with --upload, LOCAL stored as NAME over a passive one.
  ccc-bounce HOST PORT THIRD [--expect reset|reply] [--timeout S]
      FTPS login, CCC, then PORT naming THIRD (not the client's own address: an FTP bounce, RFC
      2577) in cleartext. --expect reset: exit 0 when no reply comes (reset, closed or timed out:
      the command never reached the server); --expect reply: exit 0 when the server answered.
  fake-auth HOST PORT [--expect reset|reply] [--timeout S]
      Against the fake server: read the 220, send AUTH TLS, read the 234, and then, instead of a
      TLS handshake, send cleartext "USER x" and a PORT. --expect reset: exit 0 when neither is
      answered; --expect reply: exit 0 when both are.

Servers (run in the server namespace, until killed):
  listen PORT LOG [--bind ADDR]
      A TCP listener that accepts every connection and holds it until the peer closes; one line
      per accept and close in LOG ("accept PEER_ADDR PEER_PORT LOCAL_ADDR LOCAL_PORT").
  fake-server PORT LOG
      A fake FTP server that answers 220, then "234" to AUTH TLS/SSL and carries on reading
      cleartext as if no TLS had been negotiated (331 to USER, 200 to PORT, 221 to QUIT, 500
      otherwise). Every line it receives is written to LOG ("recv PEER 'LINE'"), so a test can
      show that a command never reached it.
"""

import argparse
import ftplib
import os
import select
import socket
import ssl
import sys
import time


def log(*args):
    print(*args, flush=True)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect_outcome(host, port, timeout, source=None):
    """One TCP connection attempt: ('connected'|'refused'|'timeout'|'error: ...', socket)."""
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


def ftps_login(host, port, timeout=15):
    """An ftplib.FTP_TLS session: AUTH TLS, anonymous login, PBSZ 0, PROT P."""
    ftp = ftplib.FTP_TLS(context=tls_context(), timeout=timeout)
    log("connect:", ftp.connect(host, port).splitlines()[-1])
    log("auth:", ftp.auth())  # 234, then the TLS handshake
    log("login:", ftp.login().splitlines()[-1])  # anonymous
    log("prot:", ftp.prot_p())
    ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ftp


def retr(ftp, remote):
    data = bytearray()
    reply = ftp.retrbinary("RETR " + remote, data.extend)
    return bytes(data), reply


def no_reply(fn, what):
    """Runs fn (a command that must get no reply); returns None when none came, else the reply."""
    try:
        reply = fn()
    except (ftplib.error_reply, ftplib.error_temp, ftplib.error_perm) as e:
        return str(e)
    except socket.timeout:
        log("no reply to %s: timed out (it never reached the server)" % what)
        return None
    except (ConnectionResetError, BrokenPipeError):
        log("no reply to %s: connection reset" % what)
        return None
    except EOFError:
        log("no reply to %s: connection closed" % what)
        return None
    except OSError as e:
        log("no reply to %s: %s" % (what, e))
        return None
    return reply


# --------------------------------------------------------------------------------------------
def cmd_hold(a):
    deadline = time.monotonic() + a.lifetime
    ftp = ftps_login(a.host, a.port)
    if a.get:
        remote, expected = a.get
        data, reply = retr(ftp, remote)
        with open(expected, "rb") as f:
            if data != f.read():
                log("FAIL: %s differs from %s (%d bytes)" % (remote, expected, len(data)))
                return 1
        log("RETR %s over PROT P: %d bytes, identical (%s)" % (remote, len(data), reply))
    port = ftp.sock.getsockname()[1]
    with open(os.path.join(a.statedir, "ready.tmp"), "w") as f:
        f.write("%d\n" % port)
    os.rename(os.path.join(a.statedir, "ready.tmp"), os.path.join(a.statedir, "ready"))
    log("holding the session from local port %d" % port)
    while not os.path.exists(os.path.join(a.statedir, "quit")):
        if time.monotonic() > deadline:
            log("FAIL: lifetime over")
            return 1
        time.sleep(0.05)
    reply = ftp.quit()  # QUIT, then close
    log("quit:", reply)
    with open(os.path.join(a.statedir, "closed"), "w") as f:
        f.write(reply + "\n")
    return 0


def cmd_many(a):
    held = []
    rc = 0
    for i in range(a.n - 1):
        outcome, s = connect_outcome(a.host, a.port, a.timeout, a.source)
        log("connection %d to %s port %d: %s" % (i + 1, a.host, a.port, outcome))
        if s:
            held.append(s)
        else:
            rc = 1
    outcome, s = connect_outcome(a.host, a.port, a.timeout, a.source)
    log("connection %d to %s port %d while %d are open: %s"
        % (a.n, a.host, a.port, len(held), outcome))
    if s:
        s.close()
    for s in held:
        s.close()
    if outcome != a.expect_last:
        rc = 1
    return rc


def cmd_ccc_transfer(a):
    with open(a.expected, "rb") as f:
        expected = f.read()
    ftp = ftps_login(a.host, a.port)
    log("ccc:", ftp.ccc())  # 200, then the TLS shutdown: cleartext from here on
    if isinstance(ftp.sock, ssl.SSLSocket) and ftp.sock._sslobj is not None:
        log("FAIL: the control connection is still TLS after CCC")
        return 1
    log("noop (cleartext):", ftp.sendcmd("NOOP"))
    rc = 0
    for passive in (True, False):
        ftp.set_pasv(passive)
        data, reply = retr(ftp, a.remote)
        same = data == expected
        log("RETR %s, %s, PROT P: %d bytes, %s (%s)"
            % (a.remote, "passive" if passive else "active", len(data),
               "identical" if same else "DIFFERENT", reply))
        rc |= not same
    if a.upload:
        local, name = a.upload
        ftp.set_pasv(True)
        with open(local, "rb") as f:
            log("STOR %s, passive, PROT P: %s" % (name, ftp.storbinary("STOR " + name, f)))
    log("quit:", ftp.quit())
    return rc


def cmd_ccc_bounce(a):
    ftp = ftps_login(a.host, a.port, timeout=a.timeout)
    log("ccc:", ftp.ccc())
    log("noop (cleartext):", ftp.sendcmd("NOOP"))
    port = 40000
    cmd = "PORT %s,%d,%d" % (a.third.replace(".", ","), port >> 8, port & 0xFF)
    log("sending:", cmd)
    reply = no_reply(lambda: ftp.sendcmd(cmd), "PORT")
    if reply is None:
        return 0 if a.expect == "reset" else 1
    log("reply:", reply)
    return 0 if a.expect == "reply" else 1


def cmd_fake_auth(a):
    s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    f = s.makefile("rb")
    log("connect:", f.readline().decode().strip())
    s.sendall(b"AUTH TLS\r\n")
    log("AUTH TLS:", f.readline().decode().strip())
    own = s.getsockname()[0]
    replies = []
    for line in ("USER x", "PORT %s,156,64" % own.replace(".", ",")):
        log("sending in cleartext (no TLS handshake):", line)

        def send_and_read(line=line):
            s.sendall(line.encode() + b"\r\n")
            reply = f.readline()
            if not reply:
                raise EOFError
            return reply.decode().strip()

        reply = no_reply(send_and_read, line.split()[0])
        if reply is None:
            break
        log("reply:", reply)
        replies.append(reply)
    s.close()
    if a.expect == "reset":
        return 0 if not replies else 1
    return 0 if len(replies) == 2 else 1


# --------------------------------------------------------------------------------------------
def serve(a, on_accept, on_line=None):
    """A small select loop: accept on a.port, hand each received line to on_line."""
    out = open(a.log, "a", buffering=1)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((getattr(a, "bind", "0.0.0.0"), a.port))
    lsock.listen(64)
    conns = {}  # socket -> (peer, buffered bytes)
    while True:
        ready, _, _ = select.select([lsock] + list(conns), [], [])
        for s in ready:
            if s is lsock:
                c, peer = lsock.accept()
                local = c.getsockname()
                out.write("accept %s %d %s %d\n" % (peer[0], peer[1], local[0], local[1]))
                conns[c] = (peer, b"")
                on_accept(c)
                continue
            peer, buf = conns[s]
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                out.write("close %s %d\n" % peer)
                del conns[s]
                s.close()
                continue
            buf += data
            while on_line and b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                out.write("recv %s %r\n" % (peer[0], line.rstrip(b"\r").decode("latin-1")))
                if not on_line(s, line.strip().decode("latin-1")):
                    del conns[s]
                    s.close()
                    break
            else:
                if not on_line and len(buf) > 65536:
                    buf = b""
                conns[s] = (peer, buf)


def cmd_listen(a):
    serve(a, lambda c: None)


def cmd_fake_server(a):
    def reply(c, text):
        try:
            c.sendall(text.encode() + b"\r\n")
        except OSError:
            pass

    def on_line(c, line):
        verb = line.split(" ", 1)[0].upper()
        if verb == "AUTH":
            # What a server says before a TLS handshake -- and then it does not do one.
            reply(c, "234 AUTH TLS OK.")
        elif verb == "USER":
            reply(c, "331 Please specify the password.")
        elif verb == "PORT":
            reply(c, "200 PORT command successful.")
        elif verb == "QUIT":
            reply(c, "221 Goodbye.")
            return False
        else:
            reply(c, "500 Unknown command.")
        return True

    serve(a, lambda c: reply(c, "220 fake FTP server (answers 234, speaks no TLS)"), on_line)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    outcomes = ["timeout", "refused", "connected"]

    c = sub.add_parser("hold")
    c.add_argument("host")
    c.add_argument("statedir")
    c.add_argument("--port", type=int, default=21)
    c.add_argument("--get", nargs=2, metavar=("REMOTE", "EXPECTED"))
    c.add_argument("--lifetime", type=float, default=300)
    c.set_defaults(fn=cmd_hold)

    c = sub.add_parser("many")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("n", type=int)
    c.add_argument("--timeout", type=float, default=3)
    c.add_argument("--expect-last", choices=outcomes, default="timeout")
    c.add_argument("--source")
    c.set_defaults(fn=cmd_many)

    c = sub.add_parser("ccc-transfer")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("remote")
    c.add_argument("expected")
    c.add_argument("--upload", nargs=2, metavar=("LOCAL", "NAME"))
    c.set_defaults(fn=cmd_ccc_transfer)

    c = sub.add_parser("ccc-bounce")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("third")
    c.add_argument("--expect", choices=["reset", "reply"], default="reset")
    c.add_argument("--timeout", type=float, default=5)
    c.set_defaults(fn=cmd_ccc_bounce)

    c = sub.add_parser("fake-auth")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--expect", choices=["reset", "reply"], default="reset")
    c.add_argument("--timeout", type=float, default=5)
    c.set_defaults(fn=cmd_fake_auth)

    c = sub.add_parser("listen")
    c.add_argument("port", type=int)
    c.add_argument("log")
    c.add_argument("--bind", default="0.0.0.0")
    c.set_defaults(fn=cmd_listen)

    c = sub.add_parser("fake-server")
    c.add_argument("port", type=int)
    c.add_argument("log")
    c.set_defaults(fn=cmd_fake_server)

    a = p.parse_args()
    try:
        return a.fn(a)
    except Exception as e:  # noqa: BLE001 - any failure is a failed probe
        log("FAIL: %r" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
