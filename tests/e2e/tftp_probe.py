#!/usr/bin/env python3
"""TFTP probes for pinhole's end-to-end test (tests/e2e/nfqueue.sh).

  read HOST FILE EXPECTED --state-dir DIR [--third ADDR] [--pause S] [--ack-delay S]
       [--retries N]
      A minimal RFC 1350 client (octet mode, no options) that reads FILE from HOST and compares
      it with the local file EXPECTED. After the server's first DATA block it stops, writes
      DIR/tid.json ({"client_port": P, "server_port": T}) and waits (at most --pause seconds)
      for DIR/go, so that the driving script can inject datagrams from other hosts or ports;
      with --third it also sends, itself, a forged ERROR from ADDR (a second address of this
      namespace) to the server's transfer port. Then it watches its own socket for a second:
      any datagram not from (HOST, T) means a forged packet reached the client. Then it
      finishes the transfer, waiting --ack-delay seconds before each ACK (a slow transfer, to
      span a failover) and re-sending an ACK up to --retries times (one a second) before it
      gives up. Exit 0 when the file is intact and nothing foreign arrived.
  inject SRC_ADDR SRC_PORT DST_ADDR DST_PORT
      Send one forged TFTP DATA block 2 ("forged") from SRC_ADDR:SRC_PORT.
  size-probe HOST FILE EXPECTED [--blksize N]
      What UEFI firmware does before it loads a file: an RRQ with tsize=0 and blksize, the
      server's OACK with the size, an ERROR 8 ("terminate due to option negotiation", RFC
      2347) from the client; then the real read of FILE with blksize from a new port (OACK,
      ACK 0, the blocks), compared with EXPECTED. Exit 0 when the OACK's tsize is the file's
      size and the file is intact.

Run inside a network namespace; talks only to the addresses it is given.
"""

import argparse
import json
import os
import socket
import struct
import sys
import time

RRQ, DATA, ACK, ERROR = 1, 3, 4, 5


def log(*args):
    print(*args, flush=True)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def cmd_read(a):
    with open(a.expected, "rb") as f:
        expected = f.read()
    fam = family_of(a.host)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
    rrq = struct.pack("!H", RRQ) + a.file.encode() + b"\0octet\0"
    server = None
    for _ in range(5):  # the RRQ, retransmitted once a second
        s.sendto(rrq, (a.host, 69))
        s.settimeout(1)
        try:
            pkt, peer = s.recvfrom(65536)
        except socket.timeout:
            continue
        if peer[0] == a.host or peer[0].split("%")[0] == a.host:
            server = peer[:2]
            break
    if server is None:
        log("FAIL: no reply to the RRQ")
        return 1
    opcode, block = struct.unpack("!HH", pkt[:4])
    if opcode != DATA or block != 1:
        log("FAIL: first reply is opcode %d block %d: %r" % (opcode, block, pkt[4:80]))
        return 1
    data = {1: pkt[4:]}
    client_port = s.getsockname()[1]
    log("transfer: client port %d, server TID %d" % (client_port, server[1]))

    # Hand the ports to the driving script and wait for it to inject its datagrams.
    tmp = os.path.join(a.state_dir, "tid.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"client_port": client_port, "server_port": server[1]}, f)
    os.rename(tmp, os.path.join(a.state_dir, "tid.json"))
    if a.third:
        t = socket.socket(fam, socket.SOCK_DGRAM)
        t.bind((a.third, 0))
        t.sendto(struct.pack("!HH", ERROR, 0) + b"forged by a third host\0", server)
        log("sent a forged ERROR from %s:%d to %s:%d" % (a.third, t.getsockname()[1], *server))
        t.close()
    deadline = time.monotonic() + a.pause
    go = os.path.join(a.state_dir, "go")
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)

    # Anything already queued or arriving within a second: only (server, TID) may speak.
    foreign = []
    s.settimeout(0.2)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        try:
            pkt, peer = s.recvfrom(65536)
        except socket.timeout:
            continue
        if peer[:2] != server:
            foreign.append((peer[:2], pkt[:16]))
        # else: the server's retransmitted DATA 1 (we paused), harmless
    for peer, head in foreign:
        log("FAIL: datagram from %s:%d reached the client: %r" % (peer[0], peer[1], head))

    # Finish the transfer lock-step: ACK each new block, re-ACK only after a silence.
    block = 1
    s.settimeout(1)
    tries = 0
    s.sendto(struct.pack("!HH", ACK, block), server)
    while len(data[block]) == 512:
        try:
            pkt, peer = s.recvfrom(65536)
        except socket.timeout:
            tries += 1
            if tries > a.retries:
                log("FAIL: transfer stalled after block %d" % block)
                return 1
            s.sendto(struct.pack("!HH", ACK, block), server)
            continue
        if peer[:2] != server:
            foreign.append((peer[:2], pkt[:16]))
            log("FAIL: datagram from %s:%d reached the client" % peer[:2])
            continue
        opcode, num = struct.unpack("!HH", pkt[:4])
        if opcode == ERROR:
            log("FAIL: server sent ERROR %d %r" % (num, pkt[4:]))
            return 1
        if opcode == DATA and num == (block + 1) & 0xFFFF:
            block += 1
            data[block] = pkt[4:]
            tries = 0
            if a.ack_delay:
                time.sleep(a.ack_delay)
            s.sendto(struct.pack("!HH", ACK, num), server)
    got = b"".join(data[i] for i in sorted(data))
    log("received %d bytes in %d blocks" % (len(got), block))
    if got != expected:
        log("FAIL: %s differs from %s" % (a.file, a.expected))
        return 1
    return 1 if foreign else 0


OACK = 6


def options(**kv):
    return b"".join(k.encode() + b"\0" + str(v).encode() + b"\0" for k, v in kv.items())


def parse_oack(pkt):
    fields = pkt[2:].split(b"\0")
    return {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}


def request(host, file, opts):
    """A new socket, an RRQ with `opts` (retransmitted), the first reply and its sender."""
    fam = family_of(host)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
    s.settimeout(1)
    rrq = struct.pack("!H", RRQ) + file.encode() + b"\0octet\0" + opts
    for _ in range(5):
        s.sendto(rrq, (host, 69))
        try:
            pkt, peer = s.recvfrom(65536)
            return s, pkt, peer[:2]
        except socket.timeout:
            continue
    raise RuntimeError("no reply to the RRQ")


def cmd_size_probe(a):
    with open(a.expected, "rb") as f:
        expected = f.read()
    s, pkt, server = request(a.host, a.file, options(tsize=0, blksize=a.blksize))
    if struct.unpack("!H", pkt[:2])[0] != OACK:
        log("FAIL: the probe's reply is not an OACK: %r" % pkt[:40])
        return 1
    acked = parse_oack(pkt)
    log("probe: OACK %s from port %d" % (acked, server[1]))
    s.sendto(struct.pack("!HH", ERROR, 8) + b"User aborted the transfer\0", server)
    s.close()
    if int(acked.get("tsize", -1)) != len(expected):
        log("FAIL: tsize %s, the file has %d bytes" % (acked.get("tsize"), len(expected)))
        return 1
    s, pkt, server = request(a.host, a.file, options(blksize=a.blksize))
    if struct.unpack("!H", pkt[:2])[0] != OACK:
        log("FAIL: the read's reply is not an OACK: %r" % pkt[:40])
        return 1
    blksize = int(parse_oack(pkt).get("blksize", 512))
    s.sendto(struct.pack("!HH", ACK, 0), server)
    got, block, tries = [], 0, 0
    while True:
        try:
            pkt, peer = s.recvfrom(65536)
        except socket.timeout:
            tries += 1
            if tries > 5:
                log("FAIL: the read stalled after block %d" % block)
                return 1
            s.sendto(struct.pack("!HH", ACK, block), server)
            continue
        opcode, num = struct.unpack("!HH", pkt[:4])
        if peer[:2] != server or opcode != DATA:
            continue
        if num == (block + 1) & 0xFFFF:
            block += 1
            got.append(pkt[4:])
            tries = 0
        s.sendto(struct.pack("!HH", ACK, num), server)
        if num == block and len(pkt) - 4 < blksize:
            break
    data = b"".join(got)
    log("read: %d bytes in %d blocks of %d" % (len(data), block, blksize))
    return 0 if data == expected else 1


def cmd_inject(a):
    fam = family_of(a.dst)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a.src, a.sport))
    s.sendto(struct.pack("!HH", DATA, 2) + b"forged", (a.dst, a.dport))
    log("sent a forged DATA 2 from %s:%d to %s:%d" % (a.src, a.sport, a.dst, a.dport))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("read")
    c.add_argument("host")
    c.add_argument("file")
    c.add_argument("expected")
    c.add_argument("--state-dir", required=True)
    c.add_argument("--third")
    c.add_argument("--pause", type=float, default=5)
    c.add_argument("--ack-delay", type=float, default=0)
    c.add_argument("--retries", type=int, default=5)
    c.set_defaults(fn=cmd_read)
    c = sub.add_parser("inject")
    c.add_argument("src")
    c.add_argument("sport", type=int)
    c.add_argument("dst")
    c.add_argument("dport", type=int)
    c.set_defaults(fn=cmd_inject)
    c = sub.add_parser("size-probe")
    c.add_argument("host")
    c.add_argument("file")
    c.add_argument("expected")
    c.add_argument("--blksize", type=int, default=1428)
    c.set_defaults(fn=cmd_size_probe)
    a = p.parse_args()
    try:
        return a.fn(a)
    except Exception as e:  # noqa: BLE001 - any failure is a failed probe
        log("FAIL: %r" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
