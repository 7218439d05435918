# nfqueue-policy.sh - sourced by tests/e2e/nfqueue.sh: the checks of the FTP
# command, user and path policy (refused commands defanged: the client gets the
# server's error and keeps its session) and of the transfer log (one record
# per transfer, bytes equal to the file's size in both modes, failures logged
# as failed). Uses nfqueue.sh's helpers (client, ctl, pstat, events_has,
# lftp, curl, ftp_probe.py) and its test bed.

RULES_POLICY=""

# setup_policy_rules DIR: the shipped rules with a command, user and path
# policy on the rule to the FTP server.
setup_policy_rules() {
    RULES_POLICY=$1/policy.toml
    awk '{ print }
         /^name = "ftp-to-server"/ { f = 1 }
         f && /^inspect = "ftp"/ {
             print ""
             print "[rule.ftp]"
             print "deny_commands = [\"DELE\", \"MKD\", \"RMD\", \"SITE\"]"
             print "deny_users = [\"root\"]"
             print "deny_paths = [\"*.key\", \"/secret/*\"]"
             f = 0
         }' "$RULES_SHIPPED" > "$RULES_POLICY"
    grep -q '^deny_users = \["root"\]' "$RULES_POLICY" ||
        { echo "policy.toml: no [rule.ftp] added (rules/edge-router.toml changed?)"; return 1; }
    "$PINHOLE_BIN" check-rules "$RULES_POLICY"
}

# lftp, one session: commands that the policy refuses fail with the server's
# 500, and the session carries on with a download and an upload.
check_policy_lftp() {
    local script=$PH_WORKDIR/client/policy.lftp out=$PH_WORKDIR/client/policy-lftp.out
    local got=$PH_WORKDIR/client/policy-got.txt
    printf 'secret\n' > "$PH_WORKDIR/client/id.key"
    rm -f "$got"
    cat > "$script" <<EOF
set cmd:fail-exit no
set ftp:ssl-allow no
set ftp:passive-mode true
set net:max-retries 1
set net:timeout 5
set net:reconnect-interval-base 1
open ftp://$SV4
mkdir refused-dir
rm small.txt
put $PH_WORKDIR/client/id.key -o upload/id.key
get small.txt -o $got
put $PH_WORKDIR/client/upload-1m.bin -o upload/policy-$MODE.bin
quit
EOF
    (cd "$PH_WORKDIR/client" &&
        HOME=$PH_WORKDIR/client ph_in_client timeout 60 lftp -f "$script") > "$out" 2>&1
    echo "lftp exit $?:"
    cat "$out"
    local rc=0
    grep -Eq 'mkdir: .*500' "$out" || { echo "mkdir did not fail with 500"; rc=1; }
    grep -Eq 'rm: .*500' "$out" || { echo "rm did not fail with 500"; rc=1; }
    grep -Eq 'put: .*500' "$out" || { echo "put id.key did not fail with 500"; rc=1; }
    cmp "$PH_WORKDIR/ftp/small.txt" "$got" || { echo "get small.txt after the refusals failed"; rc=1; }
    cmp "$PH_WORKDIR/client/upload-1m.bin" "$PH_WORKDIR/ftp/upload/policy-$MODE.bin" ||
        { echo "the upload after the refusals failed"; rc=1; }
    [ ! -e "$PH_WORKDIR/ftp/refused-dir" ] || { echo "refused-dir was created"; rc=1; }
    [ ! -e "$PH_WORKDIR/ftp/upload/id.key" ] || { echo "upload/id.key was stored"; rc=1; }
    [ -e "$PH_WORKDIR/ftp/small.txt" ] || { echo "small.txt was deleted"; rc=1; }
    return $rc
}

# python ftplib: DELE and MKD answered 500 (error_perm), then a download on the
# same session; USER root refused at once, not after a time-out.
check_policy_ftplib() {
    client timeout 30 python3 - "$SV4" "$PH_WORKDIR/ftp/small.txt" <<'PY'
import ftplib, io, sys, time
host, original = sys.argv[1], open(sys.argv[2], "rb").read()
ftp = ftplib.FTP(host, timeout=10)
ftp.login()
for name, call in (("DELE", lambda: ftp.delete("small.txt")), ("MKD", lambda: ftp.mkd("x"))):
    try:
        call()
        sys.exit("%s was not refused" % name)
    except ftplib.error_perm as e:
        print("%s -> %s" % (name, e))
        assert str(e).startswith("500"), e
buf = io.BytesIO()
ftp.retrbinary("RETR small.txt", buf.write)
assert buf.getvalue() == original, "the download after the refusals differs"
print("RETR small.txt after the refusals: %d bytes, identical" % len(buf.getvalue()))
ftp.quit()
start = time.monotonic()
ftp = ftplib.FTP(host, timeout=10)
try:
    ftp.login("root", "x")
    sys.exit("USER root was not refused")
except ftplib.error_perm as e:
    took = time.monotonic() - start
    print("USER root -> %s after %.2f s" % (e, took))
    assert str(e).startswith("5") and took < 5, e  # 500, or 530 before a login
ftp.close()
PY
}

# curl: a quoted DELE fails (curl exit 21) and a login as root fails (67),
# both at once; vsftpd saw the defanged verbs; the violations name the rule.
check_policy_curl() {
    local rc t0=$SECONDS
    client "${CURL[@]}" -Q "DELE small.txt" -o /dev/null "ftp://$SV4/small.txt"
    rc=$?
    echo "curl -Q 'DELE small.txt': exit $rc"
    [ "$rc" = 21 ] || return 1
    client "${CURL[@]}" -o /dev/null "ftp://root:x@$SV4/small.txt"
    rc=$?
    echo "curl as root: exit $rc"
    [ "$rc" = 67 ] || return 1
    [ $((SECONDS - t0)) -lt 10 ] || { echo "took $((SECONDS - t0)) s"; return 1; }
    grep -E '"XXXX small.txt"|"XXXX root"' "$PH_WORKDIR/vsftpd-plain.log" | tail -n 2 ||
        { echo "vsftpd never saw a defanged verb"; return 1; }
    events_has "r['type'] == 'violation' and r['reason'] == 'ftp_command_denied' \
        and 'refused by rule \"ftp-to-server\" (deny_commands)' in r['detail']" &&
    events_has "r['type'] == 'violation' and r['reason'] == 'ftp_user_denied' \
        and 'deny_users \"root\"' in r['detail']" &&
    events_has "r['type'] == 'violation' and r['reason'] == 'ftp_path_denied' \
        and 'id.key' in r['detail']" &&
    counter_at_least queue.rewrite_verdicts 6 &&
    echo "queue.rewrite_verdicts $(pstat queue.rewrite_verdicts), rewrite_errors $(pstat queue.rewrite_errors)" &&
    [ "$(pstat queue.rewrite_errors)" = 0 ]
}

# The transfer log: a download, an upload and a TFTP read logged with the
# file's exact size (offload mode: from the kernel's accounting), a 550 and a
# TFTP error logged as failed, an ABOR mid-RETR as aborted.
check_transfer_log() {
    ftp_get "$SV4" medium.bin --ftp-pasv || return 1
    ftp_put "$SV4" upload-1m.bin "log-$MODE.bin" --ftp-port - || return 1
    tftp_get "$SV4" image.bin || return 1
    # (curl asks SIZE first and never sends RETR for a missing file: ftplib does.)
    client timeout 20 python3 -c '
import ftplib, sys
ftp = ftplib.FTP(sys.argv[1], timeout=10)
ftp.login()
try:
    ftp.retrbinary("RETR no-such-file.bin", lambda b: None)
    sys.exit("a missing file downloaded")
except ftplib.error_perm as e:
    print("RETR no-such-file.bin -> %s" % e)
ftp.quit()' "$SV4" || return 1
    local TFTP_WAIT=5
    client timeout 5 tftp -m octet "$SV4" -c get no-such-file.bin /dev/null
    check_abort ftplib || return 1
    local source
    source=$([ "$MODE" = offload ] && echo kernel || echo pinhole)
    events_has "r['type'] == 'transfer' and r['alg'] == 'ftp' and r['command'] == 'RETR' \
        and r['path'] == '/medium.bin' and r['user'] == 'anonymous' and r['result'] == 'complete' \
        and r['closed'] == 226 and r['bytes_down'] == 204800 and r['bytes_source'] == '$source' \
        and r['direction'] == 'download' and r['data'].startswith('tcp $CV4:')" &&
    events_has "r['type'] == 'transfer' and r['command'] == 'STOR' \
        and r['path'] == '/upload/log-$MODE.bin' and r['bytes_up'] == 1048576 \
        and r['bytes_source'] == '$source' and r['result'] == 'complete' \
        and r['data'].startswith('tcp $SV4:20 -> $CV4:')" &&
    events_has "r['type'] == 'transfer' and r['alg'] == 'tftp' and r['command'] == 'RRQ' \
        and r['path'] == 'image.bin' and r['bytes_down'] == 102400 and r['mode'] == 'octet' \
        and r['result'] == 'complete' and r['blocks'] == 201" &&
    events_has "r['type'] == 'transfer' and r['path'] == '/no-such-file.bin' \
        and r['result'] == 'failed' and r['closed'] == 550" &&
    events_has "r['type'] == 'transfer' and r['alg'] == 'tftp' \
        and r['path'] == 'no-such-file.bin' and r['result'] == 'failed' and 'error 1' in r['detail']" &&
    events_has "r['type'] == 'transfer' and r['path'] == '/big.bin' and r['result'] == 'aborted' \
        and r['closed'] == 426 and 0 < r['bytes_down'] < 8388608"
}

# UEFI's size probe, live (tftp_probe.py size-probe against tftpd-hpa): the probe
# ended by the client's ERROR 8 is a failed record of 0 bytes, the real read that
# follows from a new port a complete one of the file's size.
check_tftp_size_probe() {
    client timeout 30 python3 "$TFTP_PROBE" size-probe "$SV4" image.bin \
        "$PH_WORKDIR/tftp/image.bin" || return 1
    events_has "r['type'] == 'transfer' and r['alg'] == 'tftp' and r['path'] == 'image.bin' \
        and r['result'] == 'failed' and 'error 8' in r['detail'] and r['bytes_down'] == 0 \
        and 'tsize=102400' in r.get('options', [])" &&
    events_has "r['type'] == 'transfer' and r['alg'] == 'tftp' and r['path'] == 'image.bin' \
        and r['result'] == 'complete' and r['bytes_down'] == 102400 \
        and r.get('options') == ['blksize=1428']"
}

# The transfer metrics count what the log holds.
check_transfer_metrics() {
    ph_in_fw curl -sS --max-time 5 -o "$PH_WORKDIR/metrics.txt" "http://$METRICS_ADDR/metrics" ||
        return 1
    metric_at_least 'pinhole_transfers_total{alg="ftp",direction="download",result="complete"}' 2 &&
    metric_at_least 'pinhole_transfers_total{alg="tftp",direction="download",result="failed"}' 1 &&
    metric_at_least 'pinhole_transfer_bytes_total{alg="ftp",direction="upload"}' 1048576
}
