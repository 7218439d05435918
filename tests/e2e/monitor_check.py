#!/usr/bin/env python3
"""Readers and a traffic source for pinhole's monitor end-to-end test (tests/e2e/monitor.sh).

  events FILE [--skip N] [--min K] PRED
      Print the records of the JSON Lines file FILE (after its first N lines) for which the
      Python expression PRED is true (the record is `r`; see the helpers below); exit 0 when at
      least K (default 1) matched. A last line without its newline (still being written) is
      ignored.
  jl FILE [-t] EXPR
      Evaluate EXPR over all records (`recs`, a list); print the result, or with -t exit 0 when
      it is true. Every line must be JSON (exit 2 otherwise).
  used FILE --alg A --proto P --src ADDR --dst ADDR [--skip N] [--dport LO-HI]
       [--child-sport P] [--exclude ID,...]
      Find, after line N, a pinhole `use` record of that alg and protocol whose pinhole lets
      SRC connect to DST (port in LO-HI), whose id is not excluded, whose `child` flow is the
      pinhole's (protocol, addresses, destination port, source port when the pinhole names one
      or a range), and an `open` record with the same id and the same pinhole before it. Print
      both and, last, "id N"; exit 0 when found.
  format FILE --file NAME [--no-flows]
      The event-log contract: every line a JSON object with a known type, "file" = NAME, an
      RFC 3339 UTC "ts", a "packet" index on per-packet records, verdict records for drops
      only, (--no-flows) no flow records.
  prom FILE [-t] EXPR
      Parse Prometheus text (FILE) and evaluate EXPR with m(NAME, **LABELS) (the sum of the
      samples of NAME whose labels include LABELS, None when there is none), series(NAME)
      (a list of (labels, value)), types and helps (dicts by family name).
  prom-format FILE NAME...
      Every NAME has "# HELP" and "# TYPE" lines and at least one sample; every sample line
      parses and belongs to a family with a TYPE line.
  prom-delta FILE0 FILE1 [-t] EXPR
      As prom, with m() the change of the sum from the scrape FILE0 to the scrape FILE1.
  prom-same A0 A1 B0 B1 ...
      Pairs of scrapes (before, after) of monitors that watched the same traffic: the change of
      every judging counter (packets in all, verdicts, drops by reason, pinholes opened, used
      and refused by alg, violations, flows opened) must be the same for each; print a table,
      exit 1 at the first difference.
  events-same FILE_A SKIP_A FILE_B SKIP_B
      The event logs of two monitors that watched the same traffic, after their first SKIP
      lines: the same pinhole open/use, violation, notice and drop-verdict records (compared
      without packet, id, ts, child ids: what happened to which flow), as multisets.
  pcap FILE [-t] EXPR
      Read a classic pcap file (either byte order, micro- or nanosecond magic) and evaluate
      EXPR with hdr (magic, linktype, version, nanos) and pk (the decoded packets: dicts with
      ip 4|6, src, dst, proto tcp|udp|icmp|icmp6|N, sport, dport, flags ("S", "SA", "R", ...),
      payload bytes, len), or print one line per packet without EXPR.
  tftp-put HOST REMOTE --bind ADDR [--size N] [--timeout S]
      Write N bytes (octet mode, RFC 1350, blocks of 512) to the TFTP server HOST as REMOTE
      from the local address ADDR (tftp-hpa cannot choose its address); exit 0 when every
      block was acknowledged.
  flood HOST PORT COUNT [--size N] [--burst N] [--gap S] [--sport P]
      Send COUNT UDP datagrams of N bytes to HOST:PORT from one source port, in bursts of
      --burst datagrams --gap seconds apart.

Run inside a network namespace (flood) or anywhere (readers); talks only to the address given.
"""

import argparse
import ipaddress
import json
import re
import signal
import socket
import struct
import sys
import time

KNOWN_TYPES = {"pinhole", "violation", "notice", "verdict", "flow", "suppressed", "summary",
               "transfer"}
PER_PACKET = {"pinhole", "violation", "notice", "verdict", "flow", "transfer"}
TRANSFER_RESULTS = {"complete", "failed", "aborted", "unfinished"}
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
FLOW_RE = re.compile(r"^(\w+) (\[[^\]]+\]|[^ :\[\]]+):(\d+) -> (\[[^\]]+\]|[^ :\[\]]+):(\d+)$")


def addr(text):
    """An address (brackets allowed), or None."""
    if text is None:
        return None
    try:
        return ipaddress.ip_address(str(text).strip("[]"))
    except ValueError:
        return None


def flow(text):
    """A TCP/UDP flow string as a dict (proto, src, sport, dst, dport), or None."""
    if not isinstance(text, str):
        return None
    m = FLOW_RE.match(text)
    if not m:
        return None
    return {
        "proto": m.group(1),
        "src": addr(m.group(2)),
        "sport": int(m.group(3)),
        "dst": addr(m.group(4)),
        "dport": int(m.group(5)),
    }


def fl(text, **want):
    """True when the flow string `text` has every given field (addresses compared as addresses)."""
    f = flow(text)
    if f is None:
        return False
    for key, value in want.items():
        if key in ("src", "dst"):
            if f[key] != addr(value):
                return False
        elif f[key] != value:
            return False
    return True


def load(path, strict=False):
    """The records of a JSON Lines file. Not strict: a last line without newline is skipped."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail and strict:
        raise ValueError("last line has no newline: %r" % tail[:200])
    recs = []
    for n, line in enumerate(lines, 1):
        try:
            recs.append(json.loads(line))
        except ValueError as e:
            raise ValueError("line %d is not JSON (%s): %r" % (n, e, line[:200])) from None
    return recs


def dump(rec):
    return json.dumps(rec, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
def cmd_events(a):
    try:
        recs = load(a.file)[a.skip:]
    except (OSError, ValueError) as e:
        print("events: %s" % e)
        return 2
    env = {"fl": fl, "flow": flow, "addr": addr}
    hits = []
    for r in recs:
        env["r"] = r
        try:
            ok = eval(a.pred, env)  # noqa: S307 - test-only helper
        except Exception:  # noqa: BLE001 - a record without the field does not match
            ok = False
        if ok:
            hits.append(r)
    for r in hits:
        print(dump(r))
    print("# %d of %d records matched" % (len(hits), len(recs)))
    return 0 if len(hits) >= a.min else 1


def cmd_jl(a):
    try:
        recs = load(a.file, strict=True)
    except (OSError, ValueError) as e:
        print("jl: %s" % e)
        return 2
    try:
        result = eval(a.expr, {"recs": recs, "fl": fl, "flow": flow, "addr": addr})  # noqa: S307
    except Exception as e:  # noqa: BLE001
        print("jl: %r" % e)
        return 2 if not a.t else 1
    if a.t:
        return 0 if result else 1
    print(json.dumps(result) if isinstance(result, (dict, list)) else result)
    return 0


def port_range(text):
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def same_pinhole(x, y):
    keys = ("alg", "proto", "src", "sport", "dst", "dport")
    return all(
        (addr(x.get(k)) == addr(y.get(k))) if k in ("src", "dst") else x.get(k) == y.get(k)
        for k in keys
    )


def child_fits(rec):
    """Why the use record's child flow does not fit its pinhole, or None when it does."""
    child = flow(rec.get("child"))
    if child is None:
        return "child %r is not a flow" % rec.get("child")
    if child["proto"] != rec.get("proto"):
        return "child protocol %s, pinhole %s" % (child["proto"], rec.get("proto"))
    if child["src"] != addr(rec.get("src")) or child["dst"] != addr(rec.get("dst")):
        return "child addresses %s -> %s, pinhole %s -> %s" % (
            child["src"], child["dst"], rec.get("src"), rec.get("dst"))
    if child["dport"] != rec.get("dport"):
        return "child dport %d, pinhole %s" % (child["dport"], rec.get("dport"))
    if rec.get("sport") is not None and child["sport"] != rec["sport"]:
        return "child sport %d, pinhole %s" % (child["sport"], rec["sport"])
    rng = rec.get("sport_range")
    if rng and not rng[0] <= child["sport"] <= rng[1]:
        return "child sport %d outside %s" % (child["sport"], rng)
    return None


def cmd_used(a):
    try:
        allrecs = load(a.file)
    except (OSError, ValueError) as e:
        print("used: %s" % e)
        return 2
    exclude = {int(x) for x in a.exclude.split(",") if x.strip()} if a.exclude else set()
    lo, hi = port_range(a.dport) if a.dport else (0, 65535)
    src, dst = addr(a.src), addr(a.dst)
    problems = []
    for i in range(a.skip, len(allrecs)):
        r = allrecs[i]
        if r.get("type") != "pinhole" or r.get("event") != "use":
            continue
        if r.get("alg") != a.alg or r.get("proto") != a.proto or r.get("id") in exclude:
            continue
        if addr(r.get("src")) != src or addr(r.get("dst")) != dst:
            continue
        if not isinstance(r.get("dport"), int) or not lo <= r["dport"] <= hi:
            problems.append("dport outside %s: %s" % (a.dport, dump(r)))
            continue
        why = child_fits(r)
        if why:
            problems.append("%s: %s" % (why, dump(r)))
            continue
        child = flow(r["child"])
        if a.child_sport is not None and child["sport"] != a.child_sport:
            problems.append("child sport %d, expected %d: %s" % (child["sport"], a.child_sport,
                                                                 dump(r)))
            continue
        opens = [o for o in allrecs[:i]
                 if o.get("type") == "pinhole" and o.get("event") == "open"
                 and o.get("id") == r.get("id")]
        if not opens:
            problems.append("no open record with id %s before: %s" % (r.get("id"), dump(r)))
            continue
        if not same_pinhole(opens[-1], r):
            problems.append("open and use differ:\n  %s\n  %s" % (dump(opens[-1]), dump(r)))
            continue
        print("open: %s" % dump(opens[-1]))
        print("use:  %s" % dump(r))
        print("id %d" % r["id"])
        return 0
    for p in problems:
        print("not it: %s" % p)
    print("no matching use record after line %d; pinhole records there:" % a.skip)
    for r in allrecs[a.skip:]:
        if r.get("type") == "pinhole":
            print("  " + dump(r))
    return 1


def cmd_format(a):
    try:
        recs = load(a.file, strict=True)
    except (OSError, ValueError) as e:
        print("format: %s" % e)
        return 1
    bad = []
    counts = {}
    for n, r in enumerate(recs, 1):
        if not isinstance(r, dict):
            bad.append("line %d: not an object" % n)
            continue
        t = r.get("type")
        counts[t] = counts.get(t, 0) + 1
        why = []
        if t not in KNOWN_TYPES:
            why.append("unknown type %r" % t)
        if r.get("file") != a.file_name:
            why.append("file %r" % r.get("file"))
        if not isinstance(r.get("ts"), str) or not TS_RE.match(r["ts"]):
            why.append("ts %r is not RFC 3339 UTC" % r.get("ts"))
        if t in PER_PACKET and (not isinstance(r.get("packet"), int) or r["packet"] < 0):
            why.append("packet %r" % r.get("packet"))
        if t == "verdict" and r.get("verdict") != "drop":
            why.append("a verdict record that is not a drop")
        if t == "flow" and a.no_flows:
            why.append("a flow record without --events-flows")
        if t == "transfer" and (r.get("result") not in TRANSFER_RESULTS
                                or r.get("bytes_source") not in ("pinhole", "none")):
            # (The monitor has no kernel to ask: its counts are its own or none.)
            why.append("a transfer record without a result, or counted by a kernel")
        if why:
            bad.append("line %d: %s: %s" % (n, "; ".join(why), dump(r)[:300]))
    print("%d records: %s" % (len(recs), ", ".join("%s %d" % kv for kv in sorted(
        counts.items(), key=lambda kv: str(kv[0])))))
    for b in bad[:20]:
        print(b)
    if len(bad) > 20:
        print("... and %d more" % (len(bad) - 20))
    return 1 if bad or not recs else 0


# --------------------------------------------------------------------------------------------
PROM_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
PROM_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = PROM_LABEL.match(text, pos)
        if not m:
            raise ValueError("bad labels %r" % text)
        labels[m.group(1)] = m.group(2).replace('\\"', '"').replace("\\n", "\n").replace(
            "\\\\", "\\")
        pos = m.end()
    return labels


def parse_prom(path):
    types, helps, samples, errors = {}, {}, [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3] if len(parts) > 3 else ""
                elif len(parts) >= 3 and parts[1] == "HELP":
                    helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            m = PROM_SAMPLE.match(line)
            if not m:
                errors.append("line %d does not parse: %r" % (n, line))
                continue
            try:
                labels = parse_labels(m.group(3) or "")
                value = float(m.group(4))
            except ValueError as e:
                errors.append("line %d: %s" % (n, e))
                continue
            samples.append((m.group(1), labels, value))
    return types, helps, samples, errors


def family(name, types):
    """The family a sample belongs to: its own name (text format 0.0.4 names counters with
    their _total), or a histogram's or summary's name for its _bucket/_sum/_count samples."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return None


def cmd_prom(a):
    types, helps, samples, errors = parse_prom(a.file)
    for e in errors:
        print("prom: %s" % e)

    def series(name):
        return [(lb, v) for n, lb, v in samples if n == name]

    def m(name, **labels):
        vals = [v for lb, v in series(name) if all(lb.get(k) == str(x) for k, x in labels.items())]
        return sum(vals) if vals else None

    env = {"m": m, "series": series, "types": types, "helps": helps, "samples": samples}
    try:
        result = eval(a.expr, env)  # noqa: S307 - test-only helper
    except Exception as e:  # noqa: BLE001
        print("prom: %r" % e)
        return 1 if a.t else 2
    if a.t:
        return 0 if result and not errors else 1
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    print(json.dumps(result) if isinstance(result, (dict, list)) else result)
    return 0


def cmd_prom_format(a):
    types, helps, samples, errors = parse_prom(a.file)
    problems = list(errors)
    for n, _, _ in samples:
        if family(n, types) is None:
            problems.append("sample %s has no # TYPE line" % n)
    for name in a.names:
        if name not in helps:
            problems.append("%s: no # HELP line" % name)
        if name not in types:
            problems.append("%s: no # TYPE line" % name)
        if not any(n == name or family(n, types) == name for n, _, _ in samples):
            problems.append("%s: no sample" % name)
    print("%d families, %d samples" % (len(types), len(samples)))
    for p in sorted(set(problems)):
        print(p)
    return 1 if problems else 0


# --------------------------------------------------------------------------------------------
TCP_FLAGS = "FSRPAUEC"


def decode(frame, linktype):
    p = {"len": len(frame), "ip": None, "proto": None, "src": None, "dst": None,
         "sport": None, "dport": None, "flags": "", "payload": b""}
    if linktype == 1:
        if len(frame) < 14:
            return p
        etype = struct.unpack("!H", frame[12:14])[0]
        off = 14
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = struct.unpack("!H", frame[off + 2:off + 4])[0]
            off += 4
        p["ethertype"] = etype
        ip = frame[off:]
    elif linktype in (101, 228, 229):
        ip = frame
    else:
        return p
    if len(ip) < 1:
        return p
    ver = ip[0] >> 4
    if ver == 4 and len(ip) >= 20:
        ihl = (ip[0] & 15) * 4
        proto = ip[9]
        p.update(ip=4, src=str(ipaddress.IPv4Address(ip[12:16])),
                 dst=str(ipaddress.IPv4Address(ip[16:20])))
        frag = struct.unpack("!H", ip[6:8])[0] & 0x1FFF
        total = struct.unpack("!H", ip[2:4])[0]
        l4 = ip[ihl:total] if frag == 0 else b""
    elif ver == 6 and len(ip) >= 40:
        proto = ip[6]
        p.update(ip=6, src=str(ipaddress.IPv6Address(ip[8:24])),
                 dst=str(ipaddress.IPv6Address(ip[24:40])))
        l4 = ip[40:]
        # Skip the simple extension headers (hop-by-hop, routing, destination options).
        while proto in (0, 43, 60) and len(l4) >= 8:
            proto, hlen = l4[0], (l4[1] + 1) * 8
            l4 = l4[hlen:]
    else:
        return p
    p["proto"] = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(proto, proto)
    if proto == 6 and len(l4) >= 20:
        sport, dport, _, _, off_flags = struct.unpack("!HHIIH", l4[:14])
        doff = (off_flags >> 12) * 4
        p.update(sport=sport, dport=dport, payload=bytes(l4[doff:]),
                 flags="".join(c for i, c in enumerate(TCP_FLAGS) if off_flags & (1 << i)))
    elif proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        p.update(sport=sport, dport=dport, payload=bytes(l4[8:]))
    return p


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError("%s: %d bytes, no pcap header" % (path, len(data)))
    magic_le = struct.unpack("<I", data[:4])[0]
    if magic_le in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif struct.unpack(">I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D):
        endian = ">"
    else:
        raise ValueError("%s: not a classic pcap (magic %s)" % (path, data[:4].hex()))
    magic, vmaj, vmin, _, _, snaplen, linktype = struct.unpack(endian + "IHHiIII", data[:24])
    hdr = {"magic": magic, "endian": "little" if endian == "<" else "big",
           "version": "%d.%d" % (vmaj, vmin), "snaplen": snaplen, "linktype": linktype,
           "nanos": magic == 0xA1B23C4D}
    pk, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        if len(frame) < incl:
            hdr["truncated"] = True
            break
        p = decode(frame, linktype)
        p["ts"] = sec + frac / (1e9 if hdr["nanos"] else 1e6)
        p["orig_len"] = orig
        pk.append(p)
        off += 16 + incl
    if off != len(data):
        hdr["trailing"] = len(data) - off
    return hdr, pk


def show(p):
    ports = ("%s:%s -> %s:%s" % (p["src"], p["sport"], p["dst"], p["dport"])
             if p["sport"] is not None else "%s -> %s" % (p["src"], p["dst"]))
    text = p["payload"][:60].decode("ascii", "replace").replace("\r", "\\r").replace("\n", "\\n")
    return "%.6f %s %s [%s] len %d %s" % (p["ts"], p["proto"], ports, p["flags"], p["len"], text)


def cmd_pcap(a):
    try:
        hdr, pk = read_pcap(a.file)
    except (OSError, ValueError) as e:
        print("pcap: %s" % e)
        return 2
    if a.expr is None:
        print("# %s: %s, %d packets" % (a.file, json.dumps(hdr), len(pk)))
        for p in pk:
            print(show(p))
        return 0
    try:
        result = eval(a.expr, {"hdr": hdr, "pk": pk, "show": show})  # noqa: S307
    except Exception as e:  # noqa: BLE001
        print("pcap: %r" % e)
        return 1 if a.t else 2
    if a.t:
        return 0 if result else 1
    print(json.dumps(result) if isinstance(result, (dict, list)) else result)
    return 0


# --------------------------------------------------------------------------------------------
def cmd_flood(a):
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", a.sport))
    payload = (b"pinhole monitor flood " * (a.size // 22 + 1))[: a.size]
    t0 = time.monotonic()
    sent = errors = 0
    while sent < a.count:
        for _ in range(min(a.burst, a.count - sent)):
            try:
                s.sendto(payload, (a.host, a.port))
            except OSError:  # e.g. ENOBUFS; ECONNREFUSED needs a connected socket
                errors += 1
                if errors > a.count:
                    print("FAIL: %d send errors, giving up" % errors)
                    return 1
                continue
            sent += 1
        if sent < a.count:
            time.sleep(a.gap)
    print("sent %d datagrams of %d bytes to %s:%d from port %d in %.2f s (%d send errors)"
          % (sent, a.size, a.host, a.port, s.getsockname()[1], time.monotonic() - t0, errors))
    return 0


def sums(path):
    """Samples of a scrape summed by (name, labels other than worker)."""
    _, _, samples, errors = parse_prom(path)
    if errors:
        raise ValueError("%s: %s" % (path, errors[0]))
    out = {}
    for n, lb, v in samples:
        key = (n, tuple(sorted((k, x) for k, x in lb.items() if k != "worker")))
        out[key] = out.get(key, 0) + v
    return out


def cmd_prom_delta(a):
    _, _, before, e0 = parse_prom(a.file0)
    _, _, after, e1 = parse_prom(a.file1)
    for e in e0 + e1:
        print("prom-delta: %s" % e)

    def total(samples, name, labels):
        return sum(v for n, lb, v in samples
                   if n == name and all(lb.get(k) == str(x) for k, x in labels.items()))

    def m(name, **labels):
        return total(after, name, labels) - total(before, name, labels)

    try:
        result = eval(a.expr, {"m": m})  # noqa: S307 - test-only helper
    except Exception as e:  # noqa: BLE001
        print("prom-delta: %r" % e)
        return 1 if a.t else 2
    if a.t:
        return 0 if result else 1
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    print(result)
    return 0


JUDGING = ("pinhole_packets_total", "pinhole_verdicts_total", "pinhole_drops_total",
           "pinhole_violations_total", "pinhole_flows_opened_total")


def judging(key):
    name, labels = key
    if name in JUDGING:
        return True
    return name == "pinhole_pinholes_total" and dict(labels).get("outcome") in (
        "opened", "used", "refused")


def cmd_prom_same(a):
    if len(a.files) < 4 or len(a.files) % 2:
        print("prom-same: give pairs of scrapes (before after), at least two pairs")
        return 2
    deltas = []
    for before, after in zip(a.files[::2], a.files[1::2]):
        s0, s1 = sums(before), sums(after)
        deltas.append({k: s1.get(k, 0) - s0.get(k, 0) for k in s1 if judging(k)})
    keys = sorted(set().union(*deltas))
    bad = 0
    for k in keys:
        vals = [int(d.get(k, 0)) for d in deltas]
        if any(vals):
            label = k[0] + ("{%s}" % ",".join("%s=%s" % kv for kv in k[1]) if k[1] else "")
            same = len(set(vals)) == 1
            bad += not same
            print("%s %s %s" % ("  " if same else "!=", label, " ".join(str(v) for v in vals)))
    print("# %d counters, %d differ" % (len(keys), bad))
    return 1 if bad else 0


def event_key(r):
    """What a record says happened, without the numbering that differs between monitors."""
    t = r.get("type")
    if t == "pinhole" and r.get("event") in ("open", "use"):
        return (t, r["event"], r.get("alg"), r.get("proto"), r.get("src"), r.get("sport"),
                r.get("dst"), r.get("dport"), r.get("parent"), r.get("child"))
    if t == "violation":
        return (t, r.get("alg"), r.get("reason"), r.get("flow"))
    if t == "notice":
        return (t, r.get("alg"), r.get("event"), r.get("flow"))
    if t == "verdict":
        return (t, r.get("verdict"), r.get("reason"), r.get("flow") or r.get("tuple"))
    if t == "transfer":
        return (t, r.get("alg"), r.get("command"), r.get("path"), r.get("result"),
                r.get("bytes_up"), r.get("bytes_down"), r.get("data"))
    return None


def cmd_events_same(a):
    counts = []
    for path, skip in ((a.file_a, a.skip_a), (a.file_b, a.skip_b)):
        c = {}
        for r in load(path)[skip:]:
            k = event_key(r)
            if k is not None:
                c[k] = c.get(k, 0) + 1
        counts.append(c)
    ca, cb = counts
    diff = [(k, ca.get(k, 0), cb.get(k, 0)) for k in set(ca) | set(cb)
            if ca.get(k, 0) != cb.get(k, 0)]
    kinds = {}
    for k, n in ca.items():
        kinds[k[0]] = kinds.get(k[0], 0) + n
    print("# %s" % ", ".join("%d %s" % (n, t) for t, n in sorted(kinds.items())))
    for k, na, nb in sorted(diff, key=str)[:20]:
        print("!= %s: %d vs %d" % (json.dumps(k), na, nb))
    print("# %d kinds of record, %d differ" % (len(set(ca) | set(cb)), len(diff)))
    return 1 if diff or not ca else 0


def cmd_tftp_put(a):
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a.bind, 0))
    s.settimeout(1.0)
    data = bytes((i * 7 + 3) % 251 for i in range(a.size))
    deadline = time.monotonic() + a.timeout
    request = struct.pack("!H", 2) + a.remote.encode() + b"\0octet\0"
    peer, block, msg = (a.host, 69), 0, request
    while time.monotonic() < deadline:
        s.sendto(msg, peer)
        try:
            reply, frm = s.recvfrom(1024)
        except socket.timeout:
            continue  # resend
        if len(reply) < 4:
            continue
        op, num = struct.unpack("!HH", reply[:4])
        if op == 5:
            print("tftp-put: error %d %r" % (num, reply[4:].rstrip(b"\0")))
            return 1
        if op != 4 or num != block:
            continue
        peer = frm  # the server's transfer port
        if block > 0 and len(msg) - 4 < 512:
            print("tftp-put: %d bytes written as %s from %s" % (a.size, a.remote, a.bind))
            return 0
        block += 1
        chunk = data[(block - 1) * 512: block * 512]
        msg = struct.pack("!HH", 3, block & 0xffff) + chunk
    print("tftp-put: timed out at block %d" % block)
    return 1


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` is no error
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("events")
    c.add_argument("file")
    c.add_argument("pred")
    c.add_argument("--skip", type=int, default=0)
    c.add_argument("--min", type=int, default=1)
    c.set_defaults(fn=cmd_events)

    c = sub.add_parser("jl")
    c.add_argument("file")
    c.add_argument("-t", action="store_true")
    c.add_argument("expr")
    c.set_defaults(fn=cmd_jl)

    c = sub.add_parser("used")
    c.add_argument("file")
    c.add_argument("--alg", required=True)
    c.add_argument("--proto", required=True)
    c.add_argument("--src", required=True)
    c.add_argument("--dst", required=True)
    c.add_argument("--skip", type=int, default=0)
    c.add_argument("--dport")
    c.add_argument("--child-sport", type=int)
    c.add_argument("--exclude", default="")
    c.set_defaults(fn=cmd_used)

    c = sub.add_parser("format")
    c.add_argument("file")
    c.add_argument("--file", dest="file_name", required=True)
    c.add_argument("--no-flows", action="store_true")
    c.set_defaults(fn=cmd_format)

    c = sub.add_parser("prom")
    c.add_argument("file")
    c.add_argument("-t", action="store_true")
    c.add_argument("expr")
    c.set_defaults(fn=cmd_prom)

    c = sub.add_parser("prom-format")
    c.add_argument("file")
    c.add_argument("names", nargs="*")
    c.set_defaults(fn=cmd_prom_format)

    c = sub.add_parser("prom-delta")
    c.add_argument("file0")
    c.add_argument("file1")
    c.add_argument("-t", action="store_true")
    c.add_argument("expr")
    c.set_defaults(fn=cmd_prom_delta)

    c = sub.add_parser("prom-same")
    c.add_argument("files", nargs="+")
    c.set_defaults(fn=cmd_prom_same)

    c = sub.add_parser("events-same")
    c.add_argument("file_a")
    c.add_argument("skip_a", type=int)
    c.add_argument("file_b")
    c.add_argument("skip_b", type=int)
    c.set_defaults(fn=cmd_events_same)

    c = sub.add_parser("pcap")
    c.add_argument("file")
    c.add_argument("-t", action="store_true")
    c.add_argument("expr", nargs="?")
    c.set_defaults(fn=cmd_pcap)

    c = sub.add_parser("tftp-put")
    c.add_argument("host")
    c.add_argument("remote")
    c.add_argument("--bind", required=True)
    c.add_argument("--size", type=int, default=3000)
    c.add_argument("--timeout", type=float, default=10)
    c.set_defaults(fn=cmd_tftp_put)

    c = sub.add_parser("flood")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("count", type=int)
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--burst", type=int, default=50)
    c.add_argument("--gap", type=float, default=0.02)
    c.add_argument("--sport", type=int, default=0)
    c.set_defaults(fn=cmd_flood)

    a = p.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
