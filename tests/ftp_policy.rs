//! The FTP command, user and path policy (refused commands defanged, never dropped) and the
//! transfer log's FTP records, on built conversations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, opened, violations};
use pinhole::event::{BytesSource, Event, Transfer, TransferDirection, TransferResult};
use pinhole::testkit::{TcpSession, flags, sock};
use pinhole::{Decision, Reason, Verdict};

const CLIENT: &str = "198.51.100.10:40000";
const SERVER: &str = "192.0.2.10:21";

/// A logged-in control connection under a rule with `[rule.ftp]` options.
struct Ftp {
    h: Harness,
    s: TcpSession,
}

impl Ftp {
    fn new(options: &str) -> Self {
        let policy = format!(
            "[[rule]]\nname = \"ftp-to-server\"\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\n{options}\n"
        );
        let mut h = Harness::new(&policy);
        let mut s = TcpSession::new(sock(CLIENT), sock(SERVER), 1_000_000, 7_000_000);
        for frame in s.handshake() {
            h.accept(&frame);
        }
        let mut f = Ftp { h, s };
        f.server("220 ready");
        f
    }

    fn client(&mut self, line: &str) -> Decision {
        let frame = self.s.client_data(format!("{line}\r\n").as_bytes());
        self.h.send(&frame)
    }

    fn server(&mut self, line: &str) -> Decision {
        let frame = self.s.server_data(format!("{line}\r\n").as_bytes());
        self.h.accept(&frame)
    }

    /// A client line that must pass defanged: accepted, its verb overwritten with `X`s, one
    /// violation for `reason` naming the rule and `setting`.
    fn defanged(&mut self, line: &str, reason: Reason, setting: &str) -> Decision {
        let d = self.client(line);
        assert_eq!(d.verdict, Verdict::Accept, "{line}: {d:?}");
        let verb = line.split(' ').next().unwrap();
        assert_eq!(d.rewrites.len(), 1, "{d:?}");
        assert_eq!(d.rewrites[0].offset, 0);
        assert_eq!(d.rewrites[0].bytes, vec![b'X'; verb.len()]);
        assert_eq!(violations(&d), vec![reason]);
        let detail = d
            .events
            .iter()
            .find_map(|e| match e {
                Event::Violation { detail, .. } => Some(detail.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            detail.contains(&format!("refused by rule \"ftp-to-server\" ({setting}")),
            "{detail}"
        );
        d
    }

    fn passive(&mut self, port: u16) -> TcpSession {
        self.client("PASV");
        let (hi, lo) = (port >> 8, port & 0xff);
        let d = self.server(&format!(
            "227 Entering Passive Mode (192,0,2,10,{hi},{lo})."
        ));
        assert_eq!(opened(&d).len(), 1, "{d:?}");
        let mut data = TcpSession::new(
            sock("198.51.100.10:45000"),
            sock(&format!("192.0.2.10:{port}")),
            5_000,
            9_000,
        );
        for frame in data.handshake() {
            self.h.accept(&frame);
        }
        data
    }
}

fn transfers(d: &Decision) -> Vec<Transfer> {
    d.events
        .iter()
        .filter_map(|e| match e {
            Event::Transfer(t) => Some((**t).clone()),
            _ => None,
        })
        .collect()
}

// ---- policy ------------------------------------------------------------------------------------

#[test]
fn a_denied_command_is_defanged_and_the_session_goes_on() {
    let mut f = Ftp::new("deny_commands = [\"STOR\", \"DELE\", \"MKD\"]");
    f.client("USER anonymous");
    f.server("331 Please specify the password.");
    f.client("PASS x");
    f.server("230 Login successful.");
    f.defanged("STOR ios.bin", Reason::FtpCommandDenied, "deny_commands");
    // The server answers the unknown verb; nothing is refused for that.
    let d = f.server("500 Unknown command.");
    assert!(violations(&d).is_empty(), "{d:?}");
    // An RFC 775 alias is the same command; case does not matter.
    f.defanged("xmkd dir", Reason::FtpCommandDenied, "deny_commands");
    f.server("500 Unknown command.");
    // The session goes on: a passive download works.
    let _data = f.passive(40001);
    let d = f.client("RETR image.bin");
    assert!(d.rewrites.is_empty() && violations(&d).is_empty(), "{d:?}");
}

#[test]
fn an_allow_list_refuses_every_other_verb() {
    let mut f = Ftp::new("allow_commands = [\"USER\", \"PASS\", \"RETR\", \"PASV\", \"QUIT\"]");
    f.client("USER anonymous");
    f.server("331 ok");
    f.defanged("LIST", Reason::FtpCommandDenied, "not in allow_commands");
    f.server("500 Unknown command.");
    f.defanged("EPSV", Reason::FtpCommandDenied, "not in allow_commands");
    f.server("500 Unknown command.");
    assert!(f.client("PASV").rewrites.is_empty());
}

#[test]
fn users_outside_the_patterns_are_refused_at_user() {
    let mut f = Ftp::new("allow_users = [\"anonymous\", \"ftp\"]\ndeny_users = [\"root\"]");
    f.defanged("USER root", Reason::FtpUserDenied, "deny_users \"root\"");
    f.server("500 Unknown command.");
    f.defanged("USER alice", Reason::FtpUserDenied, "not in allow_users");
    f.server("500 Unknown command.");
    let d = f.client("USER ANONYMOUS");
    assert!(d.rewrites.is_empty() && violations(&d).is_empty(), "{d:?}");
}

#[test]
fn paths_are_checked_as_the_server_resolves_them() {
    let mut f = Ftp::new("deny_paths = [\"/etc/*\", \"*.key\"]");
    f.client("CWD /pub/images");
    f.server("250 Directory successfully changed.");
    f.defanged(
        "RETR ../../etc/passwd",
        Reason::FtpPathDenied,
        "deny_paths \"/etc/*\"",
    );
    f.server("500 Unknown command.");
    f.defanged(
        "RNTO host.key",
        Reason::FtpPathDenied,
        "deny_paths \"*.key\"",
    );
    f.server("500 Unknown command.");
    // A CWD the server refuses changes nothing.
    f.client("CWD /etc");
    f.server("550 Failed to change directory.");
    assert!(f.client("RETR passwd").rewrites.is_empty());
}

#[test]
fn a_retransmitted_refused_command_is_defanged_again_until_acknowledged() {
    let mut f = Ftp::new("deny_commands = [\"DELE\"]");
    let line = b"DELE config.txt\r\n";
    let original = f.s.client_raw(flags::PSH | flags::ACK, 0, line);
    let first = f.h.send(&original);
    assert_eq!(first.rewrites.len(), 1);
    // The same bytes again (the server's ACK was lost): overwritten again, no new violation.
    let again = f.h.send(&original);
    assert_eq!(again.verdict, Verdict::Accept);
    assert_eq!(again.rewrites, first.rewrites);
    assert!(violations(&again).is_empty());
    // A retransmission that also carries the next command: the old verb is still overwritten
    // at its place, the new command goes through.
    let both =
        f.s.client_raw(flags::PSH | flags::ACK, 0, b"DELE config.txt\r\nNOOP\r\n");
    let d = f.h.send(&both);
    assert_eq!(d.rewrites, first.rewrites);
    let _ = f.s.client_data(b"DELE config.txt\r\nNOOP\r\n");
    f.server("500 Unknown command.");
    f.server("200 NOOP ok.");
    // Acknowledged now: a late duplicate is left alone (the server ignores it anyway).
    let late = f.h.send(&original);
    assert!(late.rewrites.is_empty(), "{late:?}");
}

#[test]
fn a_verb_already_forwarded_cannot_be_defanged_so_the_session_is_reset() {
    let mut f = Ftp::new("deny_commands = [\"STOR\"]");
    // A Telnet-style client: the verb leaves in its own segment, the line ends later.
    let d = f.h.send(&f.s.client_data(b"STOR "));
    assert_eq!(d.verdict, Verdict::Accept);
    let d = f.h.send(&f.s.client_data(b"ios.bin\r\n"));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Reject, Some(Reason::FtpCommandDenied))
    );
    // A verb split over two segments: the part still here is overwritten.
    let mut f = Ftp::new("deny_commands = [\"STOR\"]");
    f.h.accept(&f.s.client_data(b"ST"));
    let d = f.h.send(&f.s.client_data(b"OR ios.bin\r\n"));
    assert_eq!(d.verdict, Verdict::Accept, "{d:?}");
    assert_eq!(d.rewrites.len(), 1);
    assert_eq!(
        (d.rewrites[0].offset, d.rewrites[0].bytes.as_slice()),
        (0, &b"XX"[..])
    );
}

#[test]
fn a_password_is_never_shown() {
    let mut f = Ftp::new("deny_commands = [\"PASS\"]");
    let d = f.defanged("PASS hunter2", Reason::FtpCommandDenied, "deny_commands");
    let text = format!("{:?}", d.events);
    assert!(!text.contains("hunter2"), "{text}");
}

// ---- transfer log --------------------------------------------------------------------------------

#[test]
fn a_download_is_logged_with_user_path_codes_and_bytes() {
    let mut f = Ftp::new("");
    f.client("USER alice");
    f.server("331 ok");
    f.client("PASS secret");
    f.server("230 ok");
    f.client("PWD");
    f.server("257 \"/home/alice\" is the current directory");
    f.client("CWD images");
    f.server("250 ok");
    let mut data = f.passive(40002);
    f.client("RETR ios.bin");
    f.server("150 Opening BINARY mode data connection for ios.bin (3000 bytes).");
    // 3000 bytes down, one segment retransmitted (counted once).
    for _ in 0..3 {
        let frame = data.server_data(&[7u8; 1000]);
        f.h.accept(&frame);
    }
    f.h.accept(&data.server_raw(flags::ACK, -1000, &[7u8; 1000]));
    f.h.accept(&data.server_fin());
    f.h.accept(&data.client_fin());
    let d = f.server("226 Transfer complete.");
    let t = transfers(&d);
    assert_eq!(t.len(), 1, "{d:?}");
    let t = &t[0];
    assert_eq!(t.user.as_deref(), Some("alice"));
    assert_eq!(t.command, "RETR");
    assert_eq!(t.path.as_deref(), Some("/home/alice/images/ios.bin"));
    assert!(!t.path_guessed);
    assert_eq!(t.direction, TransferDirection::Download);
    assert_eq!((t.opened, t.closed), (Some(150), Some(226)));
    assert_eq!((t.bytes_up, t.bytes_down), (Some(0), Some(3000)));
    assert_eq!(t.bytes_source, BytesSource::Pinhole);
    assert_eq!(t.result, TransferResult::Complete);
    assert_eq!(t.data.unwrap().dport, 40002);
    assert!(!format!("{d:?}").contains("secret"));
    let counts = f.h.engine.counters().transfers.clone();
    assert_eq!(
        counts.get(
            pinhole::alg::Alg::Ftp,
            TransferDirection::Download,
            TransferResult::Complete
        ),
        1
    );
    assert_eq!(
        counts.bytes(pinhole::alg::Alg::Ftp, TransferDirection::Download),
        3000
    );
}

#[test]
fn failed_aborted_and_unfinished_transfers_are_logged_as_such() {
    let mut f = Ftp::new("");
    f.client("RETR missing.bin");
    let d = f.server("550 Failed to open file.");
    let t = transfers(&d);
    assert_eq!(t[0].result, TransferResult::Failed);
    assert_eq!((t[0].opened, t[0].closed), (None, Some(550)));
    assert!(
        t[0].path_guessed,
        "no PWD, no absolute CWD: the path is a guess"
    );
    assert_eq!(t[0].detail, "Failed to open file.");
    // ABOR mid-RETR: 426 for the transfer, 226 for the ABOR.
    let _data = f.passive(40003);
    f.client("STOR up.bin");
    f.server("150 Ok to send data.");
    f.client("ABOR");
    let d = f.server("426 Failure reading network stream.");
    let t = transfers(&d);
    assert_eq!(
        (t[0].command, t[0].direction, t[0].result),
        ("STOR", TransferDirection::Upload, TransferResult::Aborted)
    );
    assert!(transfers(&f.server("226 ABOR successful.")).is_empty());
    // A transfer the session never saw end.
    f.client("LIST");
    f.server("150 Here comes the directory listing.");
    let d = f.h.send(&f.s.client_rst());
    let t = transfers(&d);
    assert_eq!(
        t.len(),
        0,
        "the connection is still in the table after the RST"
    );
    let expired = f.h.advance(3600);
    let t: Vec<_> = expired
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Transfer(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(t.len(), 1, "{:?}", expired.events);
    assert_eq!(
        (t[0].command, t[0].result, t[0].path.as_deref()),
        ("LIST", TransferResult::Unfinished, Some("/"))
    );
}

#[test]
fn spaces_before_a_verb_and_words_that_are_no_verb_do_not_slip_past() {
    // A server that skips spaces before the verb would read DELE: spaces and verb go.
    let mut f = Ftp::new("deny_commands = [\"DELE\"]");
    let d = f.client("  dele config.txt");
    assert_eq!(violations(&d), vec![Reason::FtpCommandDenied], "{d:?}");
    assert_eq!(d.rewrites.len(), 1);
    assert_eq!((d.rewrites[0].offset, d.rewrites[0].bytes.len()), (0, 6));
    f.server("500 Unknown command.");
    // An allow list admits only verbs it names: a digit in the verb, a verb too long.
    let mut f = Ftp::new("allow_commands = [\"USER\", \"PASS\", \"RETR\"]");
    for line in ["ST0R x", "SITEXCHMOD 777 x"] {
        let d = f.client(line);
        assert_eq!(
            violations(&d),
            vec![Reason::FtpCommandDenied],
            "{line}: {d:?}"
        );
        let verb = line.split(' ').next().unwrap();
        assert_eq!(d.rewrites[0].bytes, vec![b'X'; verb.len()], "{line}");
        f.server("500 Unknown command.");
    }
    // Without an allow list, a word that is no verb is the server's to refuse.
    let mut f = Ftp::new("deny_commands = [\"DELE\"]");
    assert!(violations(&f.client("ST0R x")).is_empty());
}

#[test]
fn a_passive_reply_to_a_transfer_command_is_still_unexpected() {
    let mut f = Ftp::new("");
    f.client("RETR image.bin");
    let frame =
        f.s.server_data(b"227 Entering Passive Mode (192,0,2,10,156,65).\r\n");
    let d = f.h.send(&frame);
    assert_eq!(violations(&d), vec![Reason::FtpUnexpectedReply], "{d:?}");
    assert!(opened(&d).is_empty() && transfers(&d).is_empty(), "{d:?}");
}
