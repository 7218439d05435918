//! The command line as users run it: exit codes, error messages, output formats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn pinhole(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn check_rules_accepts_the_shipped_rules() {
    let out = pinhole(&[
        "check-rules",
        "rules/edge-router.toml",
        "rules/default.toml",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "rules/edge-router.toml: ok (3 zones, 6 rules, default deny)\nrules/default.toml: ok (0 zones, 2 rules, default deny)\n"
    );
}

#[test]
fn check_rules_names_file_line_and_fix() {
    let path = temp_file(
        "bad.toml",
        "[zones.outside]\ninterfaces = [\"wan0\"]\n\n[[rule]]\nname = \"ftp-in\"\nfrom = \"outsde\"\naction = \"allow\"\ninspect = \"ftp\"\n",
    );
    let out = pinhole(&["check-rules", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "{}:6:8: error: rule \"ftp-in\": zone \"outsde\" is not defined\n  help: define it under [zones.outsde], or use one of: any, outside\n",
            path.display()
        )
    );
}

/// Every error of a file in one run, in file order, each with its place and fix: a misspelt
/// key, misspelt zones, a timeout out of range and one written with a unit; a bad prefix in a
/// zone the rules use (reported once, not as undefined zones).
#[test]
fn check_rules_reports_every_error_with_its_fix() {
    let path = temp_file(
        "several.toml",
        r#"[zones.inside]
networks = ["192.0.2.0/33"]

[zones.outside]
interfaces = ["wan0"]

[[rule]]
name = "ftp-in"
from = "outsde"
to = "inside"
actoin = "allow"
inspect = "ftp"

[[rule]]
name = "tftp-in"
from = "outside"
to = "inside"
action = "allow"
inspect = "tftp"

[timeouts]
tcp_established = 3600s
udp_replied = 0
"#,
    );
    let out = pinhole(&["check-rules", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let p = path.display();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "{p}:2:13: error: zone \"inside\": \"192.0.2.0/33\" is not an address prefix
  help: write an address and prefix length, such as 192.0.2.0/24 or 2001:db8::/32
{p}:9:8: error: rule \"ftp-in\": zone \"outsde\" is not defined
  help: define it under [zones.outsde], or use one of: any, inside, outside
{p}:11:1: error: rule \"ftp-in\": unknown key \"actoin\"
  help: did you mean \"action\"? [[rule]] takes: name, from, to, proto, ports, action, inspect, ftp, tftp
{p}:22:19: error: timeouts.tcp_established = 3600s is not a number
  help: timeouts are whole seconds written as a bare number: tcp_established = 3600
{p}:23:15: error: timeouts.udp_replied = 0 is out of range
  help: timeouts.udp_replied is a whole number of seconds from 1 to 2592000
"
        )
    );
}

#[test]
fn check_rules_reports_a_missing_file() {
    let out = pinhole(&["check-rules", "no/such/rules.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("no/such/rules.toml: error: cannot read the rules file:"),
        "{stderr}"
    );
}

#[test]
fn default_rules_prints_the_embedded_policy() {
    let out = pinhole(&["default-rules"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.toml"))
            .unwrap()
    );
    // It says what uses it, and that `run` does not.
    assert!(
        text.contains("what `pinhole replay` and `pinhole monitor` use when no --rules"),
        "{text}"
    );
    assert!(text.contains("`pinhole run` always needs one"), "{text}");
}

#[test]
fn replay_writes_json_lines_when_piped() {
    let out = pinhole(&["replay", "pcaps/tcp-refused-v4.pcap"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["packets"], 2);
    assert_eq!(last["dropped"], 2);
}

#[test]
fn replay_text_format_is_a_table() {
    let out = pinhole(&[
        "replay",
        "--format",
        "text",
        "--verdicts",
        "pcaps/crafted/invalid-flags.pcap",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("== pcaps/crafted/invalid-flags.pcap\n#0      DROP   tcp_invalid_flags"),
        "{text}"
    );
    assert!(
        text.contains("pcaps/crafted/invalid-flags.pcap: 4 packets, 0 accepted, 4 dropped"),
        "{text}"
    );
}

#[test]
fn replay_of_several_files_uses_a_fresh_engine_each() {
    let out = pinhole(&[
        "replay",
        "pcaps/crafted/handshake-timeout.pcap",
        "pcaps/crafted/handshake-timeout.pcap",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let summaries: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"type\":\"summary\""))
        .collect();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0], summaries[1]);
}

#[test]
fn replay_reports_unreadable_captures_and_continues() {
    let garbage = temp_file("garbage.pcap", "this is not a capture");
    let out = pinhole(&[
        "replay",
        garbage.to_str().unwrap(),
        "pcaps/tcp-refused-v4.pcap",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not a pcap or pcapng capture"), "{stderr}");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("tcp-refused-v4.pcap\",\"packets\":2")
    );
}

#[test]
fn replay_refuses_a_bad_rules_file() {
    let bad = temp_file("typo.toml", "[[rule]]\naction = \"alow\"\n");
    let out = pinhole(&[
        "replay",
        "--rules",
        bad.to_str().unwrap(),
        "pcaps/tcp-refused-v4.pcap",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains(":2:10: error: action \"alow\" is not allow or deny")
    );
}

#[test]
fn readme_documents_every_drop_reason() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for reason in pinhole::Reason::ALL {
        assert!(
            readme.contains(&format!("| `{}` |", reason.as_str())),
            "README.md lacks drop reason {}",
            reason.as_str()
        );
    }
}

#[test]
fn rules_prints_the_iptables_restore_script_for_each_mode() {
    let out = pinhole(&["rules", "--queues", "0-3", "--mode", "inspect-all"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("*filter\n:PINHOLE - [0:0]\n-I FORWARD 1 -j PINHOLE\n"));
    assert!(script.contains("-A PINHOLE -j NFQUEUE --queue-balance 0:3\nCOMMIT\n"));
    assert!(!script.contains("connmark"), "inspect-all offloads nothing");

    let out = pinhole(&["rules", "--fail-open", "--offload-mark", "0x100"]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("-A PINHOLE -m connmark --mark 0x100/0x100 -j ACCEPT\n"));
    assert!(
        !script.contains("--tcp-flags"),
        "the kernel forwards FIN and RST too"
    );
    assert!(script.contains("-A PINHOLE -j NFQUEUE --queue-num 0 --queue-bypass\n"));

    let out = pinhole(&["rules", "--offload-ends", "segments"]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains(
        "-A PINHOLE -m connmark --mark 0x10000000/0x10000000 -p tcp --tcp-flags FIN,RST NONE -j ACCEPT\n"
    ));
}

#[test]
fn rules_attach_the_kernel_helpers_to_the_inspected_ports() {
    // The embedded default inspects FTP on 21 and TFTP on 69.
    let out = pinhole(&["rules"]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains(
            "*raw\n:PINHOLE_HELPERS - [0:0]\n-I PREROUTING 1 -j PINHOLE_HELPERS\n\
             -A PINHOLE_HELPERS -p tcp --dport 21 -j CT --helper ftp\n\
             -A PINHOLE_HELPERS -p udp --dport 69 -j CT --helper tftp\nCOMMIT\n"
        ),
        "{script}"
    );
    let out = pinhole(&["rules", "--no-kernel-helpers"]);
    assert!(!String::from_utf8(out.stdout).unwrap().contains("*raw"));
    // A rules file's own ports.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-rules");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("r.toml");
    std::fs::write(
        &file,
        "[[rule]]\nproto = \"tcp\"\nports = [2121]\naction = \"allow\"\ninspect = \"ftp\"\n",
    )
    .unwrap();
    let out = pinhole(&["rules", "--rules", file.to_str().unwrap()]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("-A PINHOLE_HELPERS -p tcp --dport 2121 -j CT --helper ftp\n"));
    assert!(!script.contains("--helper tftp"));
    // A broken rules file is an error naming it.
    std::fs::write(&file, "[[rule]]\nactoin = 1\n").unwrap();
    let out = pinhole(&["rules", "--rules", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("r.toml:2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rules_refuses_bad_queues_and_marks() {
    for args in [
        &["rules", "--queues", "3-1"][..],
        &["rules", "--queues", "0-99"],
        &["rules", "--reject-mark", "0x3"],
    ] {
        let out = pinhole(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = pinhole(&["rules", "--offload-mark", "0x4", "--reject-mark", "0x4"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "pinhole rules: --offload-mark and --reject-mark must be different bits\n"
    );
    let out = pinhole(&["rules", "--ha", "--admitted-mark", "0x10000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "pinhole rules: --offload-mark, --reject-mark, --admitted-mark and --synced-mark must be four different bits\n"
    );
}

#[test]
fn rules_for_a_failover_pair_carry_the_admitted_mark() {
    let out = pinhole(&["rules", "--ha"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains(
        "-A PINHOLE -m mark --mark 0x40000000/0x40000000 -m connmark ! --mark 0x40000000/0x40000000 -j CONNMARK --set-xmark 0x40000000/0x40000000\n"
    ));
    assert!(script.contains(
        "-A PINHOLE -m connmark --mark 0x40000000/0x40000000 -m conntrack --ctstatus CONFIRMED -j MARK --set-xmark 0x8000000/0x8000000\n"
    ));
    // The FTP helper (its expectations carry pending pinholes over), not the TFTP helper
    // (a transfer tied to its request's entry could not be carried over once that is gone).
    assert!(script.contains("-A PINHOLE_HELPERS -p tcp --dport 21 -j CT --helper ftp\n"));
    assert!(!script.contains("--helper tftp"), "{script}");
    let single = String::from_utf8(pinhole(&["rules"]).stdout).unwrap();
    assert!(!single.contains("0x40000000"), "{single}");
}

#[test]
fn queries_without_a_daemon_say_what_to_check() {
    let socket = std::env::temp_dir().join(format!("pinhole-none-{}.sock", std::process::id()));
    for command in [
        "status", "sessions", "pinholes", "stats", "snapshot", "reload",
    ] {
        let out = pinhole(&[command, "--control", socket.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("cannot reach the pinhole daemon at") && stderr.contains("--control"),
            "{stderr}"
        );
    }
}

#[test]
fn run_refuses_a_bad_rules_file_before_touching_the_kernel() {
    let rules = temp_file("run-bad.toml", "[[rule]]\naction = \"maybe\"\n");
    let socket = rules.with_extension("sock");
    let out = pinhole(&[
        "run",
        "--install-rules",
        "--rules",
        rules.to_str().unwrap(),
        "--control",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("pinhole run: {}:2:", rules.display())),
        "{stderr}"
    );
    assert!(!socket.exists());
}

/// The text report of one capture, replayed with `rules` (None: the embedded default).
fn text_report(capture: &str, rules: Option<&str>) -> String {
    let mut args = vec!["replay", "--format", "text"];
    if let Some(rules) = rules {
        args.extend(["--rules", rules]);
    }
    args.push(capture);
    let out = pinhole(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn text_report_shows_what_each_ftp_session_negotiated_and_what_used_it() {
    let passive = text_report("pcaps/ftp-pasv-curl.pcap", None);
    let lines: Vec<&str> = passive.lines().collect();
    assert_eq!(lines[0], "== pcaps/ftp-pasv-curl.pcap", "{passive}");
    assert!(
        lines[1]
            .starts_with("FTP  tcp 198.51.100.10:33650 -> 192.0.2.10:21  rule ftp-control  #0-"),
        "{passive}"
    );
    assert!(
        lines[2].starts_with("  passive data   tcp 198.51.100.10:* -> 192.0.2.10:40073  opened #13, used #14 by tcp 198.51.100.10:45830 -> 192.0.2.10:40073"),
        "{passive}"
    );
    let active = text_report("pcaps/ftp-port-curl.pcap", None);
    assert!(
        active.contains("  active data    tcp 192.0.2.10:* -> 198.51.100.10:59765  opened #13, used #19 by tcp 192.0.2.10:20 -> 198.51.100.10:59765"),
        "{active}"
    );
}

#[test]
fn text_report_shows_refusals_with_reason_and_detail_in_their_session() {
    let bounce = text_report("pcaps/crafted/ftp-bounce.pcap", None);
    let sessions = bounce.lines().filter(|l| l.starts_with("FTP ")).count();
    assert_eq!(sessions, 3, "{bounce}");
    assert!(
        bounce.contains("  refused #8  ftp_bounce: FTP PORT/EPRT/LPRT names an address other than the client's (\"PORT 10,0,0,5,0,25\" names 10.0.0.5, not the client 198.51.100.10)"),
        "{bounce}"
    );
    assert!(
        bounce.contains("  drops: 2 x tcp_after_reset, 1 x ftp_bounce"),
        "{bounce}"
    );
    // A refused write is a session that was never tracked, with its refusal and its drop.
    let write = text_report("pcaps/tftp-write-hpa.pcap", Some("rules/edge-router.toml"));
    assert!(
        write.contains("TFTP udp 198.51.100.10:52273 -> 192.0.2.10:69  refused, not tracked\n  refused #0  tftp_write_denied"),
        "{write}"
    );
    assert!(!write.contains("drops outside"), "{write}");
}

#[test]
fn text_report_follows_pinholes_to_their_end_and_names_stray_packets() {
    let read = text_report("pcaps/tftp-read-port-range.pcap", None);
    assert!(
        read.contains("  read transfer  udp 192.0.2.10:* -> 198.51.100.10:58363  opened #0, used #1 by udp 192.0.2.10:30002 -> 198.51.100.10:58363 (open at the end, 402 packets,"),
        "{read}"
    );
    // An unused pinhole expires; a connection from the wrong peer and the reuse attempts
    // count as drops of the session whose pinhole they aimed at.
    let misuse = text_report("pcaps/crafted/ftp-pinhole-misuse.pcap", None);
    assert!(
        misuse.contains("opened #21, expired unused #22"),
        "{misuse}"
    );
    assert!(
        misuse.contains("  drops: 1 x pinhole_wrong_peer, 2 x default_deny"),
        "{misuse}"
    );
    // Drops outside any session name their first packet.
    let refused = text_report("pcaps/tcp-refused-v4.pcap", None);
    assert!(refused.contains("no FTP or TFTP sessions"), "{refused}");
    assert!(
        refused.contains("default_deny                  new flow matched no rule (default deny) (first #0 tcp 198.51.100.10:56866 -> 192.0.2.10:81)"),
        "{refused}"
    );
}

#[test]
fn text_report_counts_alike_sessions_instead_of_listing_them() {
    // 64 SYNs from 64 clients: one shown, the other 63 counted on one line.
    let flood = text_report("pcaps/crafted/syn-flood.pcap", None);
    let lines: Vec<&str> = flood.lines().collect();
    assert_eq!(lines.len(), 5, "{flood}");
    assert_eq!(
        lines[2],
        "FTP  tcp 203.0.113.1:1024 -> 192.0.2.10:21  rule ftp-control  #5-  open at the end, 1 packet, 28 B",
        "{flood}"
    );
    assert_eq!(
        lines[3], "  + 63 more like it, #6-#68, from 203.0.113.2:1025 ... 203.0.113.64:1087",
        "{flood}"
    );
    // Sessions that negotiated something are never folded: each has its own block.
    let session = text_report("pcaps/ftp-lftp-session.pcap", None);
    assert!(!session.contains("more like it"), "{session}");
}

#[test]
fn text_counts_read_in_the_singular_and_plural() {
    let flood = text_report("pcaps/crafted/syn-flood.pcap", None);
    assert!(
        flood.ends_with("pcaps/crafted/syn-flood.pcap: 71 packets, 71 accepted, 0 dropped, 65 flows, 0 pinholes opened, 0 used, 0 violations\n"),
        "{flood}"
    );
    let passive = text_report(
        "pcaps/crafted/ftp-passive-address.pcap",
        Some("tests/rules/ftp-passive-refuse.toml"),
    );
    assert!(
        passive.contains(
            ": 18 packets, 9 accepted, 9 dropped, 1 flow, 0 pinholes opened, 0 used, 1 violation\n"
        ),
        "{passive}"
    );
    let refused = text_report("pcaps/tcp-refused-v4.pcap", None);
    assert!(
        refused.contains(", 0 flows, 0 pinholes opened, "),
        "{refused}"
    );
}

#[test]
fn text_reason_columns_fit_the_longest_reason() {
    // The help text starts in the same column whatever the reason's length, the longest
    // (ftp_passive_address_mismatch) included.
    let out = text_report(
        "pcaps/crafted/ftp-passive-address.pcap",
        Some("tests/rules/ftp-passive-refuse.toml"),
    );
    let short = out
        .lines()
        .find(|l| l.starts_with("           7  tcp_no_handshake "))
        .unwrap();
    let long = out
        .lines()
        .find(|l| l.starts_with("           1  ftp_passive_address_mismatch "))
        .unwrap();
    assert_eq!(
        short.find("TCP segment without a handshake"),
        long.find("FTP passive reply names"),
        "{out}"
    );
    assert!(long.contains("ftp_passive_address_mismatch  FTP"), "{out}");
}

#[test]
fn text_verdicts_draw_the_packet_direction() {
    let out = pinhole(&[
        "replay",
        "--format",
        "text",
        "--verdicts",
        "--flows",
        "pcaps/crafted/ftp-bounce.pcap",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // The client's SYN, the server's SYN-ACK: the flow keeps its name, the arrow turns.
    assert!(
        text.contains(
            "#0      accept                              tcp 198.51.100.10:40001 -> 192.0.2.10:21\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "#1      accept                              tcp 198.51.100.10:40001 <- 192.0.2.10:21\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "#9      DROP   tcp_after_reset              tcp 198.51.100.10:40001 <- 192.0.2.10:21\n"
        ),
        "{text}"
    );
}

/// Text with every run of whitespace made one space (clap wraps help at the terminal's width).
fn flat(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn run_needs_a_rules_file_and_default_rules_says_so() {
    // Inline, pinhole enforces only a policy the operator chose: no silent built-in default.
    let out = pinhole(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--rules <FILE>"), "{err}");
    let help = flat(pinhole(&["help", "default-rules"]).stdout);
    assert!(
        help.contains(
            "what `replay` and `monitor` use when no --rules file is given (`run` always needs one)"
        ),
        "{help}"
    );
    let run_help = flat(pinhole(&["run", "--help"]).stdout);
    assert!(run_help.contains("Rules file (required"), "{run_help}");
}

#[test]
fn monitor_help_says_how_the_format_is_chosen() {
    let help = flat(pinhole(&["monitor", "--help"]).stdout);
    let format = help
        .split("--format <FORMAT>")
        .nth(1)
        .and_then(|rest| rest.split(" --verify-checksums").next())
        .unwrap();
    // No "[default: json]" beside a sentence saying text on a terminal.
    assert!(!format.contains("[default:"), "{format}");
    assert!(
        format.contains("text when the event log is standard output and that is a terminal"),
        "{format}"
    );
    let metrics = help.split("--metrics <ADDR>").nth(1).unwrap();
    assert!(
        metrics.contains("at ADDR: a port (on 127.0.0.1, e.g. 9464), IP:PORT or [IPv6]:PORT"),
        "{metrics}"
    );
    assert!(!help.contains("ADDR: PORT"), "{help}");
}

#[test]
fn monitor_workers_and_ring_size_are_bounded_and_documented() {
    for (flag, value) in [
        ("--workers", "0"),
        ("--workers", "65"),
        ("--ring-mib", "1"),
        ("--ring-mib", "5000"),
    ] {
        let out = pinhole(&["monitor", "--iface", "lo", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("not in"), "{err}");
    }
    let help = flat(pinhole(&["monitor", "--help"]).stdout);
    for needle in [
        "--workers <N>",
        "both directions of an address pair on one worker",
        "--ring-mib <MIB>",
        "TPACKET_V3",
        "[default: 16]",
        "--no-ring",
    ] {
        assert!(help.contains(needle), "{needle} missing from: {help}");
    }
}
