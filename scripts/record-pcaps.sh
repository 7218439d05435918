#!/usr/bin/env bash
#
# record-pcaps.sh - record reference packet captures for pinhole.
#
# Builds the 3-namespace test bed from scripts/netns-lib.sh
# (client <-> fw <-> server), runs REAL servers (vsftpd, tftpd-hpa, python
# http.server, a python UDP echo server) in the server namespace and REAL
# clients (curl, lftp, tftp-hpa, atftp, python ftplib, ping) in the client
# namespace, and captures on the firewall's inside interface (lan0) into
# pcaps/<scenario>.pcap (or .pcapng / .pcap.gz where noted).
#
# Usage:
#   scripts/record-pcaps.sh                 # all scenarios
#   scripts/record-pcaps.sh NAME...         # selected scenarios
#   scripts/record-pcaps.sh --list          # list scenarios
#   scripts/record-pcaps.sh --force ...     # first remove stale namespaces
#                                           # with our names (crashed run)
# Environment:
#   PH_PREFIX=ph-      namespace name prefix (see netns-lib.sh)
#   PCAP_DIR=<repo>/pcaps   output directory
#   PH_VERBOSE=1       more logging
#   PH_KEEP_WORKDIR=1  keep the temporary work dir (configs, logs, files)
#
# Must run as root.  Traffic only flows between the namespaces the script
# creates; everything (servers, captures, namespaces) is torn down on exit,
# including on failure or Ctrl-C.
#
# After each scenario the capture is checked with tshark
# against a few display filters (CHECKS below) and the result printed.
# pcaps/manifest.toml is regenerated at the end from the whole scenario
# table (not only the scenarios run), one entry for every capture present.

set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
PCAP_DIR=${PCAP_DIR:-$REPO_DIR/pcaps}

# shellcheck source=scripts/netns-lib.sh
. "$SCRIPT_DIR/netns-lib.sh"

# Captures larger than this are gzip-compressed (only tftp-rollover can be).
GZIP_THRESHOLD=$((12 * 1024 * 1024))

# --------------------------------------------------------------------------
# Scenario table
# --------------------------------------------------------------------------
# SCENARIOS: ordered names.  For each NAME:
#   DESC[NAME]   one-sentence description (also used for manifest.toml)
#   FILE[NAME]   capture file name (default NAME.pcap)
#   ENCAP[NAME]  substring expected in `capinfos -E` (default Ethernet)
#   CHECKS[NAME] newline-separated "<op><count> <display filter>" lines; the
#                number of packets matching the filter must satisfy op/count
#                (ops: >= == <=).  Verified with tshark after recording.
#   scn_NAME (dashes -> underscores) is the function that runs it; it starts
#   the servers it needs, calls cap_start, runs the clients, calls cap_stop.
SCENARIOS=()
declare -A DESC FILE ENCAP CHECKS

scenario() {   # scenario NAME DESCRIPTION [FILE]
    SCENARIOS+=("$1")
    DESC[$1]=$2
    FILE[$1]=${3:-$1.pcap}
    ENCAP[$1]=Ethernet
    CHECKS[$1]=""
}
check() {      # check NAME "<op><n> <filter>"
    CHECKS[$1]+="$2"$'\n'
}

# vsftpd's fixed passive port range (netns-lib.sh), e.g. "40000-40100".
PASV_RANGE="$PH_PASV_MIN-$PH_PASV_MAX"

# check_pasv NAME: every 227/229 reply announces a port in the passive range
# and every data connection (a client SYN not to port 21) goes to such a
# port.  The SYN checks also cover FTPS, where the replies are encrypted.
check_pasv() {
    local lo=$PH_PASV_MIN hi=$PH_PASV_MAX
    local syn='tcp.flags.syn==1 && tcp.flags.ack==0'
    check "$1" "==0 ftp.passive.port<$lo || ftp.passive.port>$hi || ftp.epsv.port<$lo || ftp.epsv.port>$hi"
    check "$1" ">=1 $syn && tcp.dstport>=$lo && tcp.dstport<=$hi"
    check "$1" "==0 $syn && tcp.dstport!=21 && (tcp.dstport<$lo || tcp.dstport>$hi)"
}

# --- core TCP / UDP / ICMP -------------------------------------------------
scenario tcp-http-v4 "curl GET http://192.0.2.10/small.txt from the outside client to python http.server on the inside server over IPv4, captured on the firewall's lan0"
check tcp-http-v4 '==1 tcp.flags.syn==1 && tcp.flags.ack==0'
check tcp-http-v4 '==1 http.request.method=="GET"'
check tcp-http-v4 '==1 http.response.code==200'
check tcp-http-v4 '>=2 tcp.flags.fin==1'

scenario tcp-http-v6 "curl GET http://[2001:db8:2::10]/small.txt from the outside client to python http.server on the inside server over IPv6, captured on the firewall's lan0"
check tcp-http-v6 '==1 ipv6 && tcp.flags.syn==1 && tcp.flags.ack==0'
check tcp-http-v6 '==1 ipv6 && http.request.method=="GET"'
check tcp-http-v6 '==1 http.response.code==200'
check tcp-http-v6 '==0 ip'

scenario udp-echo-v4 "A python client sends three UDP datagrams from one socket to the python echo server 192.0.2.10:5353 on the inside server and receives the three echoes (Wireshark dissects port 5353 as mDNS and calls the payload malformed), IPv4, captured on lan0"
check udp-echo-v4 '==3 udp.dstport==5353'
check udp-echo-v4 '==3 udp.srcport==5353'

scenario tcp-refused-v4 "curl connects from the outside client to 192.0.2.10:81 where nothing listens and the inside server answers the SYN with RST/ACK, IPv4, captured on lan0"
check tcp-refused-v4 '==1 tcp.flags.syn==1 && tcp.dstport==81'
check tcp-refused-v4 '==1 tcp.flags.reset==1 && tcp.flags.ack==1 && tcp.srcport==81'

scenario icmp-port-unreachable-v4 "The outside client sends one UDP datagram to closed port 192.0.2.10:5999 and the inside server answers ICMP port unreachable (quoting the datagram), followed by ping -c 2 echo request/replies, IPv4, captured on lan0"
check icmp-port-unreachable-v4 '==1 icmp.type==3 && icmp.code==3'
check icmp-port-unreachable-v4 '==2 icmp.type==8'
check icmp-port-unreachable-v4 '==2 icmp.type==0'

scenario tcp-http-v4-any-sll2 "curl GET http://192.0.2.10/small.txt from the outside client to python http.server on the inside server, captured in the firewall namespace with tcpdump -i any -y LINUX_SLL2 so every packet appears twice (in on wan0/lan0, out on the other)"
ENCAP[tcp-http-v4-any-sll2]="cooked-mode capture v2"
check tcp-http-v4-any-sll2 '==2 tcp.flags.syn==1 && tcp.flags.ack==0'
check tcp-http-v4-any-sll2 '==2 frame contains "GET /small.txt"'

scenario tcp-http-v4-pcapng "curl GET http://192.0.2.10/small.txt from the outside client to python http.server on the inside server, IPv4, captured on lan0 with dumpcap in pcapng format" tcp-http-v4-pcapng.pcapng
check tcp-http-v4-pcapng '==1 http.request.method=="GET"'
check tcp-http-v4-pcapng '==1 http.response.code==200'

# --- FTP (vsftpd) --------------------------------------------------------
scenario ftp-pasv-curl "curl --disable-epsv downloads small.txt anonymously from vsftpd on the inside server using PASV (227 reply announcing 192.0.2.10 and a port in vsftpd's passive range $PASV_RANGE) over IPv4, captured on lan0"
check ftp-pasv-curl '==1 ftp.request.command=="PASV"'
check ftp-pasv-curl '==1 ftp.response.code==227'
check ftp-pasv-curl '==1 ftp.request.command=="RETR"'
check ftp-pasv-curl '>=1 ftp-data'
check ftp-pasv-curl '==2 tcp.flags.syn==1 && tcp.flags.ack==0'
check_pasv ftp-pasv-curl

scenario ftp-epsv-curl "curl downloads small.txt anonymously from vsftpd on the inside server using EPSV (229 reply with a port in vsftpd's passive range $PASV_RANGE) over IPv4, captured on lan0"
check ftp-epsv-curl '==1 ftp.request.command=="EPSV"'
check ftp-epsv-curl '==1 ftp.response.code==229'
check ftp-epsv-curl '>=1 ftp-data'
check ftp-epsv-curl '==2 tcp.flags.syn==1 && tcp.flags.ack==0'
check_pasv ftp-epsv-curl

scenario ftp-port-curl "curl -P - --disable-eprt downloads small.txt anonymously from vsftpd on the inside server in active mode (PORT 198,51,100,10,...; the server connects back from port 20; vsftpd's passive range $PASV_RANGE is not used) over IPv4, captured on lan0"
check ftp-port-curl '==1 ftp.request.command=="PORT"'
check ftp-port-curl '==1 ftp.active.cip==198.51.100.10'
check ftp-port-curl '==1 tcp.srcport==20 && tcp.flags.syn==1 && tcp.flags.ack==0'
check ftp-port-curl '>=1 ftp-data'

scenario ftp-eprt-curl "curl -P - downloads small.txt anonymously from vsftpd on the inside server in active mode using EPRT |1|198.51.100.10|port| (the server connects back from port 20; vsftpd's passive range $PASV_RANGE is not used) over IPv4, captured on lan0"
check ftp-eprt-curl '==1 ftp.request.command=="EPRT"'
check ftp-eprt-curl '==1 ftp.eprt.ip==198.51.100.10'
check ftp-eprt-curl '==1 tcp.srcport==20 && tcp.flags.syn==1 && tcp.flags.ack==0'
check ftp-eprt-curl '>=1 ftp-data'

scenario ftp-epsv-v6-curl "curl downloads small.txt anonymously from vsftpd on the inside server ftp://[2001:db8:2::10] using EPSV (229 reply with a port in vsftpd's passive range $PASV_RANGE) over IPv6, captured on lan0"
check ftp-epsv-v6-curl '==1 ipv6 && ftp.request.command=="EPSV"'
check ftp-epsv-v6-curl '==1 ftp.response.code==229'
check ftp-epsv-v6-curl '>=1 ftp-data'
check ftp-epsv-v6-curl '==0 ip'
check_pasv ftp-epsv-v6-curl

scenario ftp-eprt-v6-curl "curl -P - downloads small.txt anonymously from vsftpd on the inside server ftp://[2001:db8:2::10] in active mode using EPRT |2|2001:db8:100::10|port| (the server connects back from port 20; vsftpd's passive range $PASV_RANGE is not used) over IPv6, captured on lan0"
check ftp-eprt-v6-curl '==1 ipv6 && ftp.request.command=="EPRT"'
check ftp-eprt-v6-curl '==1 ftp.eprt.ipv6==2001:db8:100::10'
check ftp-eprt-v6-curl '==1 tcp.srcport==20 && tcp.flags.syn==1 && tcp.flags.ack==0'
check ftp-eprt-v6-curl '>=1 ftp-data'

scenario ftp-lftp-session "lftp runs one passive-mode session against vsftpd on the inside server with several data connections (ls, cls, nlist, get small.txt, get medium.bin, put into upload/, ls upload), each to a port in vsftpd's passive range $PASV_RANGE, over IPv4, captured on lan0"
check ftp-lftp-session '>=5 ftp.request.command=="PASV"'
check ftp-lftp-session '>=2 ftp.request.command=="LIST"'
check ftp-lftp-session '>=1 ftp.request.command=="NLST"'
check ftp-lftp-session '==2 ftp.request.command=="RETR"'
check ftp-lftp-session '==1 ftp.request.command=="STOR"'
check ftp-lftp-session '==1 tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.dstport==21'
check_pasv ftp-lftp-session

scenario ftp-lftp-active "lftp with ftp:passive-mode false runs ls and get small.txt against vsftpd on the inside server using PORT (active mode, the server connects back from port 20; vsftpd's passive range $PASV_RANGE is not used) over IPv4, captured on lan0"
check ftp-lftp-active '==2 ftp.request.command=="PORT"'
check ftp-lftp-active '==1 ftp.request.command=="LIST"'
check ftp-lftp-active '==1 ftp.request.command=="RETR"'
check ftp-lftp-active '==2 tcp.srcport==20 && tcp.flags.syn==1 && tcp.flags.ack==0'

scenario ftp-abort-restart "A python ftplib client logs in to vsftpd on the inside server, starts PASV RETR medium.bin, reads a little, aborts per RFC 959 4.1.3 (Telnet IAC IP, then IAC DM sent as TCP urgent data, then ABOR; replies 426 and 226) and then downloads medium.bin completely over a new PASV data connection (both data ports in vsftpd's passive range $PASV_RANGE), IPv4, captured on lan0"
check ftp-abort-restart '>=1 tcp.flags.urg==1 && tcp.dstport==21'
check ftp-abort-restart '==2 ftp.request.command=="RETR"'
check ftp-abort-restart '==1 ftp.response.code==426'
check ftp-abort-restart '==2 ftp.response.code==226'
check ftp-abort-restart '==3 tcp.flags.syn==1 && tcp.flags.ack==0'
check_pasv ftp-abort-restart

# curl 7.88 has no command-line switch for CURLOPT_FTPSSLAUTH and by default
# tries "AUTH SSL" first (vsftpd accepts it); ftp-auth-tls-lftp below shows
# the literal "AUTH TLS".
scenario ftp-auth-tls "curl --ssl-reqd -k downloads small.txt from the TLS-enabled vsftpd on the inside server: explicit FTPS where curl sends AUTH SSL (234), then login, PBSZ/PROT P, EPSV and RETR all run inside TLS and the data connection is TLS too, so the data port is invisible in the payload (it is in vsftpd's passive range $PASV_RANGE), IPv4, captured on lan0"
check ftp-auth-tls '==1 ftp.request.command=="AUTH" && ftp.request.arg=="SSL"'
check ftp-auth-tls '==1 ftp.response.code==234'
check ftp-auth-tls '==2 tcp.flags.syn==1 && tcp.flags.ack==0'
check ftp-auth-tls '>=1 tls.handshake.type==1'
check_pasv ftp-auth-tls

scenario ftp-auth-tls-lftp "lftp with ftp:ssl-force downloads small.txt from the TLS-enabled vsftpd on the inside server: AUTH TLS (234), then the encrypted control channel negotiates PBSZ/PROT P and a passive TLS data connection to a port in vsftpd's passive range $PASV_RANGE, IPv4, captured on lan0"
check ftp-auth-tls-lftp '==1 ftp.request.command=="AUTH" && ftp.request.arg=="TLS"'
check ftp-auth-tls-lftp '==1 ftp.response.code==234'
check ftp-auth-tls-lftp '==2 tcp.flags.syn==1 && tcp.flags.ack==0'
check ftp-auth-tls-lftp '>=1 tls.handshake.type==1'
check_pasv ftp-auth-tls-lftp

# --- TFTP (tftpd-hpa) ----------------------------------------------------
scenario tftp-read-hpa "The tftp-hpa client reads small.txt (netascii, no options) from tftpd-hpa on the inside server, which answers from a new ephemeral port, IPv4, captured on lan0"
check tftp-read-hpa '==1 tftp.opcode==1'
check tftp-read-hpa '>=1 tftp.opcode==3'
check tftp-read-hpa '>=1 tftp.opcode==4'

scenario tftp-read-port-range "The tftp-hpa client reads image.bin (octet) from tftpd-hpa on the inside server started with --port-range 30000:30009, so the data flows from a server port in 30000-30009, IPv4, captured on lan0"
check tftp-read-port-range '==1 tftp.opcode==1'
check tftp-read-port-range '>=200 tftp.opcode==3 && udp.srcport>=30000 && udp.srcport<=30009'

scenario tftp-write-hpa "The tftp-hpa client writes (WRQ) a local file to tftpd-hpa on the inside server, which was started with --create, IPv4, captured on lan0"
check tftp-write-hpa '==1 tftp.opcode==2'
check tftp-write-hpa '>=1 tftp.opcode==3'
check tftp-write-hpa '>=2 tftp.opcode==4'

# tftp-hpa's client ACKs the ERROR ("ok to ack, since user has seen err
# msg"); whether that stray ACK reaches the server's transfer socket before
# it closes (silently dropped) or after (ICMP port unreachable) is timing.
scenario tftp-missing-file "The tftp-hpa client asks tftpd-hpa on the inside server for a file that does not exist and gets ERROR code 1 (file not found) from the server's new port, then sends a stray ACK to that port, which may draw an ICMP port unreachable, IPv4, captured on lan0"
check tftp-missing-file '==1 tftp.opcode==1'
check tftp-missing-file '==1 tftp.opcode==5 && tftp.error.code==1'
check tftp-missing-file '<=1 icmp.type==3 && icmp.code==3'

scenario tftp-options-curl "curl reads image.bin from tftpd-hpa on the inside server twice, first with its default options and then with --tftp-blksize 1024, each RRQ carrying tsize/blksize/timeout options that the server answers with OACK, IPv4, captured on lan0"
check tftp-options-curl '==2 tftp.opcode==1'
check tftp-options-curl '==2 tftp.opcode==6'
check tftp-options-curl '>=2 tftp.option.name=="tsize"'
check tftp-options-curl '>=1 tftp.option.name=="blksize" && tftp.option.value=="1024"'

scenario tftp-read-atftp "atftp reads config.txt from tftpd-hpa on the inside server without options and then reads image.bin with --option 'blksize 1428' and --option 'windowsize 4' (tftpd-hpa acknowledges only blksize in its OACK), IPv4, captured on lan0"
check tftp-read-atftp '==2 tftp.opcode==1'
check tftp-read-atftp '==1 tftp.opcode==6'
check tftp-read-atftp '>=1 tftp.option.name=="windowsize"'

scenario tftp-read-v6 "The tftp-hpa client reads small.txt from tftpd-hpa on the inside server at 2001:db8:2::10 over IPv6, captured on lan0"
check tftp-read-v6 '==1 ipv6 && tftp.opcode==1'
check tftp-read-v6 '>=1 ipv6 && tftp.opcode==3'
check tftp-read-v6 '==0 ip'

scenario tftp-rollover "curl --tftp-blksize 8 reads a 524388-byte file from tftpd-hpa on the inside server, so the 65549 DATA blocks wrap the 16-bit block number from 65535 back to 0, IPv4, captured on lan0 (large)"
check tftp-rollover '==1 tftp.opcode==1'
check tftp-rollover '==1 tftp.opcode==6'
check tftp-rollover '==65549 tftp.opcode==3'
check tftp-rollover '==1 tftp.opcode==3 && tftp.block==0'

# --------------------------------------------------------------------------
# Helpers used by scenarios
# --------------------------------------------------------------------------
SV4=$PH_SERVER_V4
SV6=$PH_SERVER_V6
CUR_OUT=""          # temp capture path of the running scenario

# cap_start [ph_capture_start options]: capture into the scenario's file.
cap_start() { ph_capture_start "$@" -w "$CUR_OUT"; }
cap_stop()  { ph_capture_stop; }

# Run a command in the client namespace, in the client work dir.
client() { (cd "$PH_WORKDIR/client" && ph_in_client "$@"); }

# Common curl flags: never use a proxy, fail on HTTP errors, bounded time.
CURL=(curl -sS --noproxy '*' --max-time 30)

# same_file A B: compare a downloaded file with the original.
same_file() {
    if cmp -s "$1" "$2"; then
        return 0
    fi
    ph_warn "downloaded $2 differs from $1"
    return 1
}

# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------
http_get_small_v4() {
    client "${CURL[@]}" -o http-small.txt "http://$SV4/small.txt" &&
        same_file "$PH_WORKDIR/www/small.txt" "$PH_WORKDIR/client/http-small.txt"
}

scn_tcp_http_v4() {
    ph_start_http || return 1
    cap_start || return 1
    http_get_small_v4; local rc=$?
    cap_stop; return $rc
}

scn_tcp_http_v6() {
    ph_start_http || return 1
    cap_start || return 1
    client "${CURL[@]}" -o http-small6.txt "http://[$SV6]/small.txt" &&
        same_file "$PH_WORKDIR/www/small.txt" "$PH_WORKDIR/client/http-small6.txt"
    local rc=$?
    cap_stop; return $rc
}

scn_udp_echo_v4() {
    ph_start_udp_echo 5353 || return 1
    cap_start || return 1
    client python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 5353))
for i in range(3):
    msg = b"pinhole udp echo %d" % i
    s.send(msg)
    assert s.recv(2048) == msg
print("3 echoes received")
' "$SV4"
    local rc=$?
    cap_stop; return $rc
}

scn_tcp_refused_v4() {
    cap_start || return 1
    local rc=0
    # curl exit code 7 = "Failed to connect" is the expected outcome.
    client "${CURL[@]}" -o /dev/null "http://$SV4:81/" 2>/dev/null
    [ $? -eq 7 ] || { ph_warn "expected curl exit 7"; rc=1; }
    cap_stop; return $rc
}

scn_icmp_port_unreachable_v4() {
    cap_start || return 1
    client python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 5999))
s.send(b"anyone listening on 5999?")
try:
    s.recv(2048)
    sys.exit("unexpected answer")
except ConnectionRefusedError:
    print("ICMP port unreachable -> ECONNREFUSED, as expected")
' "$SV4"
    local rc=$?
    sleep 0.5
    client ping -c 2 -i 0.5 -W 2 "$SV4" >/dev/null || rc=1
    cap_stop; return $rc
}

scn_tcp_http_v4_any_sll2() {
    ph_start_http || return 1
    cap_start -i any -y LINUX_SLL2 || return 1
    http_get_small_v4; local rc=$?
    cap_stop; return $rc
}

scn_tcp_http_v4_pcapng() {
    ph_start_http || return 1
    cap_start -t dumpcap || return 1
    http_get_small_v4; local rc=$?
    cap_stop; return $rc
}

# curl FTP download of small.txt with extra curl args; $1 = URL host part.
ftp_curl_small() {
    local host=$1; shift
    client "${CURL[@]}" "$@" -o ftp-small.txt "ftp://$host/small.txt" &&
        same_file "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/ftp-small.txt"
}

ftp_curl_scenario() {
    ph_start_vsftpd || return 1
    cap_start || return 1
    ftp_curl_small "$@"; local rc=$?
    cap_stop; return $rc
}

scn_ftp_pasv_curl()    { ftp_curl_scenario "$SV4" --disable-epsv; }
scn_ftp_epsv_curl()    { ftp_curl_scenario "$SV4"; }
scn_ftp_port_curl()    { ftp_curl_scenario "$SV4" -P - --disable-eprt; }
scn_ftp_eprt_curl()    { ftp_curl_scenario "$SV4" -P -; }
scn_ftp_epsv_v6_curl() { ftp_curl_scenario "[$SV6]"; }
scn_ftp_eprt_v6_curl() { ftp_curl_scenario "[$SV6]" -P -; }

# lftp in batch mode.  HOME points into the work dir so lftp does not write
# history/bookmarks into root's home; TLS is disabled (plain vsftpd).
lftp_run() {
    local script=$PH_WORKDIR/client/lftp-$1.lftp
    cat > "$script"
    (cd "$PH_WORKDIR/client" &&
        HOME=$PH_WORKDIR/client ph_in_client lftp -f "$script") \
        > "$PH_WORKDIR/client/lftp-$1.out" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || { ph_warn "lftp failed:"; cat "$PH_WORKDIR/client/lftp-$1.out" >&2; }
    return $rc
}

scn_ftp_lftp_session() {
    ph_start_vsftpd || return 1
    cap_start || return 1
    lftp_run session <<EOF
set cmd:fail-exit yes
set ftp:ssl-allow no
set ftp:passive-mode true
set net:max-retries 1
set net:timeout 10
set xfer:clobber yes
open ftp://$SV4
ls
cls -l
nlist
get small.txt -o $PH_WORKDIR/client/lftp-small.txt
get medium.bin -o $PH_WORKDIR/client/lftp-medium.bin
put $PH_WORKDIR/client/upload.txt -o upload/lftp-upload.txt
ls upload
quit
EOF
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/lftp-small.txt" || rc=1
    same_file "$PH_WORKDIR/ftp/medium.bin" "$PH_WORKDIR/client/lftp-medium.bin" || rc=1
    same_file "$PH_WORKDIR/client/upload.txt" "$PH_WORKDIR/ftp/upload/lftp-upload.txt" || rc=1
    return $rc
}

scn_ftp_lftp_active() {
    ph_start_vsftpd || return 1
    cap_start || return 1
    lftp_run active <<EOF
set cmd:fail-exit yes
set ftp:ssl-allow no
set ftp:passive-mode false
set net:max-retries 1
set net:timeout 10
set xfer:clobber yes
open ftp://$SV4
ls
get small.txt -o $PH_WORKDIR/client/lftp-active-small.txt
quit
EOF
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/lftp-active-small.txt" || rc=1
    return $rc
}

# The "field note" client: check the file is readable, abort, restart.
# RFC 959 4.1.3: the user system (1) inserts Telnet IP (IAC IP) in the
# stream, (2) sends the Telnet Synch -- per RFC 854 "sent via the TCP send
# operation with the Urgent flag set and the DM as the last (or only) data
# octet", i.e. IAC DM sent as urgent data -- and (3) sends ABOR.  vsftpd
# (async_abor_enable=YES, SO_OOBINLINE on the control socket) takes SIGURG,
# reads "IAC IP IAC DM ABOR" and strips the first four bytes.
# TCP_NODELAY + short pauses keep the three writes in separate segments.
FTP_ABORT_CLIENT=$(cat <<'PY'
import ftplib, socket, sys, time

HOST, EXPECTED = sys.argv[1], int(sys.argv[2])
IAC, IP, DM = 255, 244, 242

ftp = ftplib.FTP()
print(ftp.connect(HOST, 21, timeout=20))
print(ftp.login())                         # anonymous
ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(ftp.sendcmd("TYPE I"))

def open_data(rcvbuf=None):
    host, port = ftp.makepasv()            # PASV / 227
    d = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Small window: the server blocks mid-file instead of having the
        # whole file in flight before we abort.
        d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    d.settimeout(20)
    d.connect((host, port))
    return d

# 1) "can I read it?" -- start the transfer and read a little.
d = open_data(rcvbuf=4096)
print(ftp.sendcmd("RETR medium.bin"))      # 150
got = 0
while got < 4096:
    chunk = d.recv(4096 - got)
    if not chunk:
        break
    got += len(chunk)
print("read", got, "bytes, aborting")

# 2) abort the RFC 959 way.
ftp.sock.sendall(bytes([IAC, IP]))              # Telnet IP, normal data
time.sleep(0.05)
ftp.sock.send(bytes([IAC, DM]), socket.MSG_OOB) # Synch: urgent, ends with DM
time.sleep(0.05)
ftp.sock.sendall(b"ABOR\r\n")
# Drain the data connection until the server closes it (like BSD ftp).
drained = 0
try:
    while True:
        chunk = d.recv(65536)
        if not chunk:
            break
        drained += len(chunk)
except socket.timeout:
    print("data connection did not close")
d.close()
print("drained", drained, "bytes after ABOR")
replies = [ftp.getmultiline(), ftp.getmultiline()]   # 426 then 226
print(replies)
if not (replies[0].startswith("426") and replies[1].startswith("226")):
    sys.exit("unexpected abort replies: %r" % replies)

# 3) restart the transfer and read the whole file.
d = open_data()
print(ftp.sendcmd("RETR medium.bin"))      # 150
total = 0
while True:
    chunk = d.recv(65536)
    if not chunk:
        break
    total += len(chunk)
d.close()
print(ftp.voidresp())                      # 226
print("second transfer:", total, "bytes")
print(ftp.quit())
if total != EXPECTED:
    sys.exit("second transfer incomplete: %d != %d" % (total, EXPECTED))
PY
)

scn_ftp_abort_restart() {
    ph_start_vsftpd || return 1
    cap_start || return 1
    client python3 -c "$FTP_ABORT_CLIENT" "$SV4" \
        "$(stat -c %s "$PH_WORKDIR/ftp/medium.bin")"
    local rc=$?
    cap_stop; return $rc
}

scn_ftp_auth_tls() {
    ph_start_vsftpd tls || return 1
    cap_start || return 1
    ftp_curl_small "$SV4" --ssl-reqd -k; local rc=$?
    cap_stop; return $rc
}

scn_ftp_auth_tls_lftp() {
    ph_start_vsftpd tls || return 1
    cap_start || return 1
    lftp_run tls <<EOF
set cmd:fail-exit yes
set ftp:ssl-allow yes
set ftp:ssl-force yes
set ftp:ssl-allow-anonymous yes
set ftp:ssl-auth TLS
set ftp:ssl-protect-data yes
set ftp:ssl-protect-list yes
set ssl:verify-certificate no
set ftp:passive-mode true
set net:max-retries 1
set net:timeout 10
set xfer:clobber yes
open ftp://$SV4
get small.txt -o $PH_WORKDIR/client/lftp-tls-small.txt
quit
EOF
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/lftp-tls-small.txt" || rc=1
    return $rc
}

tftp_scenario_start() {   # [tftpd args]
    ph_start_tftpd "$@" || return 1
    cap_start
}

scn_tftp_read_hpa() {
    tftp_scenario_start || return 1
    client tftp "$SV4" -c get small.txt hpa-small.txt
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/tftp/small.txt" "$PH_WORKDIR/client/hpa-small.txt" || rc=1
    return $rc
}

scn_tftp_read_port_range() {
    tftp_scenario_start --port-range 30000:30009 || return 1
    client tftp -m octet "$SV4" -c get image.bin hpa-image.bin
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/tftp/image.bin" "$PH_WORKDIR/client/hpa-image.bin" || rc=1
    return $rc
}

scn_tftp_write_hpa() {
    tftp_scenario_start || return 1
    client tftp -m octet "$SV4" -c put upload.bin hpa-upload.bin
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/client/upload.bin" "$PH_WORKDIR/tftp/hpa-upload.bin" || rc=1
    return $rc
}

scn_tftp_missing_file() {
    tftp_scenario_start || return 1
    local out
    out=$(client tftp "$SV4" -c get no-such-file.txt /dev/null 2>&1)
    cap_stop
    printf '%s\n' "$out"
    # tftp-hpa prints "Error code 1: File not found".
    grep -q 'Error code 1' <<<"$out"
}

scn_tftp_options_curl() {
    tftp_scenario_start || return 1
    client "${CURL[@]}" -o curl-image.bin "tftp://$SV4/image.bin" &&
        same_file "$PH_WORKDIR/tftp/image.bin" "$PH_WORKDIR/client/curl-image.bin"
    local rc=$?
    client "${CURL[@]}" --tftp-blksize 1024 -o curl-image-1024.bin \
        "tftp://$SV4/image.bin" &&
        same_file "$PH_WORKDIR/tftp/image.bin" "$PH_WORKDIR/client/curl-image-1024.bin" ||
        rc=1
    cap_stop; return $rc
}

scn_tftp_read_atftp() {
    tftp_scenario_start || return 1
    client atftp --get -r config.txt -l "$PH_WORKDIR/client/atftp-config.txt" "$SV4" &&
        same_file "$PH_WORKDIR/tftp/config.txt" "$PH_WORKDIR/client/atftp-config.txt"
    local rc=$?
    # atftp 0.8 supports RFC 7440 windowsize; tftpd-hpa 5.2 does not and
    # simply leaves it out of the OACK, so the transfer runs lock-step.
    client atftp --option "blksize 1428" --option "windowsize 4" \
        --get -r image.bin -l "$PH_WORKDIR/client/atftp-image.bin" "$SV4" &&
        same_file "$PH_WORKDIR/tftp/image.bin" "$PH_WORKDIR/client/atftp-image.bin" ||
        rc=1
    cap_stop; return $rc
}

scn_tftp_read_v6() {
    tftp_scenario_start || return 1
    client tftp -6 "$SV6" -c get small.txt hpa-small6.txt
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/tftp/small.txt" "$PH_WORKDIR/client/hpa-small6.txt" || rc=1
    return $rc
}

scn_tftp_rollover() {
    # 65536 * 8 + 100 bytes with blksize 8 -> 65549 blocks; block numbers
    # run 1..65535, 0, 1..13.  tftpd-hpa accepts blksize >= 8.
    ph_gen_bytes $((65536 * 8 + 100)) 4 > "$PH_WORKDIR/tftp/rollover.bin"
    chmod 0644 "$PH_WORKDIR/tftp/rollover.bin"
    tftp_scenario_start || return 1
    client "${CURL[@]}" --max-time 300 --tftp-blksize 8 -o curl-rollover.bin \
        "tftp://$SV4/rollover.bin"
    local rc=$?
    cap_stop
    same_file "$PH_WORKDIR/tftp/rollover.bin" "$PH_WORKDIR/client/curl-rollover.bin" || rc=1
    return $rc
}

# --------------------------------------------------------------------------
# Verification with tshark
# --------------------------------------------------------------------------
# verify NAME PATH: print a capinfos summary and evaluate CHECKS[NAME].
verify() {
    local name=$1 path=$2 ok=0 line op want filter n encap
    encap=$(capinfos -E "$path" 2>/dev/null | sed -n 's/^File encapsulation: *//p')
    printf '    %s, %s packets, %s bytes, encapsulation: %s\n' \
        "$(capinfos -t "$path" | sed -n 's/^File type: *//p')" \
        "$(capinfos -c -M "$path" | sed -n 's/^Number of packets: *//p')" \
        "$(stat -c %s "$path")" "$encap"
    if [[ "$encap" != *"${ENCAP[$name]}"* ]]; then
        ph_warn "$name: encapsulation '$encap' does not contain '${ENCAP[$name]}'"
        ok=1
    fi
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        op=${line%% *}
        filter=${line#* }
        want=${op#[<>=]=}
        op=${op%"$want"}
        n=$(tshark -n -r "$path" -Y "$filter" 2>/dev/null | wc -l)
        local pass=1
        case $op in
            '>=') [ "$n" -ge "$want" ] && pass=0 ;;
            '==') [ "$n" -eq "$want" ] && pass=0 ;;
            '<=') [ "$n" -le "$want" ] && pass=0 ;;
        esac
        if [ $pass -eq 0 ]; then
            printf '    ok    %-4s %6s  %s\n' "$op$want" "$n" "$filter"
        else
            printf '    FAIL  %-4s %6s  %s\n' "$op$want" "$n" "$filter"
            ok=1
        fi
    done <<<"${CHECKS[$name]}"
    return $ok
}

# --------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------
toml_escape() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' <<<"$1"; }

write_manifest() {
    local m=$PCAP_DIR/manifest.toml name f
    {
        echo "# Reference captures recorded by scripts/record-pcaps.sh (real servers and"
        echo "# clients in network namespaces: client 198.51.100.10 / 2001:db8:100::10,"
        echo "# firewall wan0 198.51.100.1 + lan0 192.0.2.1, server 192.0.2.10 /"
        echo "# 2001:db8:2::10; vsftpd passive ports $PASV_RANGE).  Regenerated by every"
        echo "# run from the full scenario table; do not edit by hand."
        for name in "${SCENARIOS[@]}"; do
            for f in "${FILE[$name]}" "${FILE[$name]}.gz"; do
                [ -f "$PCAP_DIR/$f" ] || continue
                echo
                echo "[[capture]]"
                echo "file = \"$f\""
                echo "made_by = \"scripts/record-pcaps.sh $name\""
                echo "description = \"$(toml_escape "${DESC[$name]}")\""
            done
        done
    } > "$m.tmp" && mv "$m.tmp" "$m"
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
usage() {
    sed -n '3,/^$/{s/^# \{0,1\}//;p}' "$0" | sed -n '/^Usage:/,/^Must/p' | sed '$d'
}

run_one() {
    local name=$1 fn final rc
    fn="scn_${name//-/_}"
    final="$PCAP_DIR/${FILE[$name]}"
    CUR_OUT="$PH_WORKDIR/cap/${FILE[$name]}"
    mkdir -p "$PH_WORKDIR/cap"
    ph_log "=== $name"
    "$fn"; rc=$?
    ph_stop_all      # servers of this scenario (and a capture left running)
    PH_CAPTURE_PID=""
    if [ ! -s "$CUR_OUT" ]; then
        ph_warn "$name: no capture produced"
        return 1
    fi
    rm -f -- "$final" "$final.gz"
    mv -- "$CUR_OUT" "$final"
    chmod 0644 "$final"
    [ $rc -eq 0 ] || ph_warn "$name: client/server step failed (rc=$rc)"
    verify "$name" "$final" || rc=1
    if [ "$(stat -c %s "$final")" -gt "$GZIP_THRESHOLD" ]; then
        ph_log "$name: $(stat -c %s "$final") bytes > $GZIP_THRESHOLD, gzip -9"
        gzip -9 -f -- "$final"
        printf '    gzip: %s bytes\n' "$(stat -c %s "$final.gz")"
    fi
    return $rc
}

main() {
    local force=0 name
    local -a selected=()
    while [ $# -gt 0 ]; do
        case $1 in
            --list)
                for name in "${SCENARIOS[@]}"; do
                    printf '%-28s %s\n' "$name" "${DESC[$name]}"
                done
                return 0 ;;
            -h|--help) usage; return 0 ;;
            --force) force=1 ;;
            -*) echo "unknown option $1" >&2; usage >&2; return 2 ;;
            *)
                if [ -z "${DESC[$1]+x}" ]; then
                    echo "unknown scenario '$1' (see --list)" >&2
                    return 2
                fi
                selected+=("$1") ;;
        esac
        shift
    done
    [ ${#selected[@]} -gt 0 ] || selected=("${SCENARIOS[@]}")

    ph_ensure_tools record || return 1
    ph_init || return 1
    if [ $force = 1 ]; then
        ph_topology_down      # only namespaces with our (prefixed) names
    fi
    ph_topology_up || { ph_warn "topology setup failed"; return 1; }
    ph_content_init || return 1
    mkdir -p "$PCAP_DIR"

    local -a failed=()
    for name in "${selected[@]}"; do
        run_one "$name" || failed+=("$name")
    done
    write_manifest
    ph_log "versions:"
    ph_versions | sed 's/^/    /' >&2
    if [ ${#failed[@]} -gt 0 ]; then
        ph_warn "FAILED scenarios: ${failed[*]}"
        return 1
    fi
    ph_log "all ${#selected[@]} scenario(s) recorded into $PCAP_DIR"
}

main "$@"
