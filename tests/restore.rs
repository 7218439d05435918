//! Restart without loss: an engine's flows and pinholes saved, written to a state file and read
//! back, restored into a fresh engine, which carries the sessions on as if nothing happened;
//! and the state files it must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::{Harness, opened};
use pinhole::daemon::state_file::{FORMAT, StateError, StateFile, VERSION, WorkerState};
use pinhole::engine::EngineState;
use pinhole::event::{CloseCause, Event};
use pinhole::policy::Policy;
use pinhole::testkit::{TcpSession, sock, tftp, udp};
use pinhole::{Engine, Reason};

const CLIENT: &str = "198.51.100.10:40000";
const SERVER: &str = "192.0.2.10:21";

/// FTP and TFTP inspected, everything else refused (the embedded default's rules); with
/// `ftp_options`, a `[rule.ftp]` table.
fn policy(ftp_options: &str) -> String {
    format!(
        "default_action = \"deny\"
[[rule]]
name = \"ftp\"
inspect = \"ftp\"
action = \"allow\"
{ftp_options}
[[rule]]
name = \"tftp\"
inspect = \"tftp\"
action = \"allow\"
"
    )
}

/// Data connections close with their control connection.
const CHILDREN_CLOSE: &str = "[rule.ftp]\ndata_outlives_control = false";

/// A client PASV on `control`, the server's 227 naming port `port` of the server: the reply
/// must open one pinhole.
fn pasv(h: &mut Harness, control: &mut TcpSession, port: u16) {
    h.accept(&control.client_data(b"PASV\r\n"));
    let reply = format!(
        "227 Entering Passive Mode (192,0,2,10,{},{}).\r\n",
        port >> 8,
        port & 0xff
    );
    let d = h.accept(&control.server_data(reply.as_bytes()));
    assert_eq!(opened(&d).len(), 1, "{d:?}");
}

/// A fresh engine (a restarted daemon) on the same policy.
fn engine(ftp_options: &str) -> Engine {
    Engine::new(Arc::new(
        Policy::parse(&policy(ftp_options), "test").unwrap(),
    ))
}

/// An FTP client with an established control connection, a passive data connection in the
/// middle of a download, and a second PASV whose pinhole is still open.
struct Sessions {
    h: Harness,
    control: TcpSession,
    data: TcpSession,
    idle: TcpSession,
    /// The client end the open pinhole expects a connection from, and where to.
    pending: (SocketAddr, SocketAddr),
    tftp_client: SocketAddr,
    tftp_tid: SocketAddr,
    /// The policy's `[rule.ftp]` table, for the restarted engine.
    ftp_options: &'static str,
}

impl Sessions {
    fn start() -> Self {
        Sessions::start_with("")
    }

    fn start_with(ftp_options: &'static str) -> Self {
        let mut h = Harness::new(&policy(ftp_options));
        let mut control = TcpSession::new(sock(CLIENT), sock(SERVER), 1_000, 9_000);
        for frame in control.handshake() {
            h.accept(&frame);
        }
        h.accept(&control.server_data(b"220 ready\r\n"));
        pasv(&mut h, &mut control, 40_001);
        let mut data = TcpSession::new(
            sock("198.51.100.10:40001"),
            sock("192.0.2.10:40001"),
            50_000,
            80_000,
        );
        for frame in data.handshake() {
            h.accept(&frame);
        }
        h.accept(&control.client_data(b"RETR big.bin\r\n"));
        h.accept(&control.server_data(b"150 Opening BINARY mode data connection\r\n"));
        for _ in 0..20 {
            h.accept(&data.server_data(&[0x5a; 1400]));
            h.accept(&data.client_ack());
        }
        // A second, idle control connection whose PASV pinhole is still open.
        let mut idle = TcpSession::new(sock("198.51.100.10:40010"), sock(SERVER), 3_000, 11_000);
        for frame in idle.handshake() {
            h.accept(&frame);
        }
        h.accept(&idle.server_data(b"220 ready\r\n"));
        pasv(&mut h, &mut idle, 40_006);
        // A TFTP read in the middle of its blocks.
        let tftp_client = sock("198.51.100.20:50000");
        let tftp_tid = sock("192.0.2.10:41000");
        h.accept(&udp(
            tftp_client,
            sock("192.0.2.10:69"),
            &tftp::rrq("image.bin", "octet", &[]),
        ));
        for block in 1..=3 {
            h.accept(&udp(tftp_tid, tftp_client, &tftp::data(block, 512)));
            h.accept(&udp(tftp_client, tftp_tid, &tftp::ack(block)));
        }
        Sessions {
            h,
            control,
            data,
            idle,
            pending: (sock("198.51.100.10:40002"), sock("192.0.2.10:40006")),
            tftp_client,
            tftp_tid,
            ftp_options,
        }
    }

    /// Everything the sessions do next, which only works if their state is there.
    fn carry_on(&mut self) {
        let h = &mut self.h;
        // The download goes on where it was, sequence windows and all.
        for _ in 0..20 {
            h.accept(&self.data.server_data(&[0x5a; 1400]));
            h.accept(&self.data.client_ack());
        }
        // The pinhole opened before the restart admits its connection, once.
        let mut second = TcpSession::new(self.pending.0, self.pending.1, 60_000, 90_000);
        let d = h.accept(&second.syn());
        assert!(
            d.events.iter().any(|e| matches!(
                e,
                Event::FlowOpened {
                    via_pinhole: true,
                    ..
                }
            )),
            "{d:?}"
        );
        // The control connection is still inspected: a new PASV opens a new pinhole, and a
        // bounce is still refused.
        h.accept(&self.control.server_data(b"226 Transfer complete\r\n"));
        pasv(h, &mut self.control, 40_011);
        h.reject(
            &self.control.client_data(b"PORT 203,0,113,9,0,80\r\n"),
            Reason::FtpBounce,
        );
        // The idle session, its pinhole used, asks for another.
        pasv(h, &mut self.idle, 40_016);
        // The TFTP transfer goes on, and its transfer ID is still guarded.
        h.accept(&udp(self.tftp_tid, self.tftp_client, &tftp::data(4, 512)));
        h.accept(&udp(self.tftp_client, self.tftp_tid, &tftp::ack(4)));
        h.drop(
            &udp(
                sock("192.0.2.10:41001"),
                self.tftp_client,
                &tftp::data(5, 10),
            ),
            Reason::TftpUnknownTid,
        );
    }

    /// Saves the engine, puts the state through its file format, and restores it into a fresh
    /// engine on the same policy (a restart).
    fn restart(&mut self, dir: &TempDir) {
        let saved = self.h.engine.save_state();
        let path = dir.path("state.json");
        let file = StateFile::new(vec![WorkerState {
            queue: 0,
            engine: saved,
        }]);
        file.write(&path).unwrap();
        let mut read = StateFile::read(&path).unwrap();
        assert_eq!(read.workers.len(), 1);
        let state = std::mem::take(&mut read.workers[0].engine);
        self.h.engine = engine(self.ftp_options);
        let summary = self.h.engine.restore_state(state);
        assert_eq!((summary.flows, summary.pinholes), (5, 1), "{summary:?}");
        assert_eq!(summary.dropped_pinholes, 0);
    }
}

/// A directory of its own under the system's temporary directory, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pinhole-restore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sessions_carry_on_after_a_restart_through_the_state_file() {
    let dir = TempDir::new("carry-on");
    let mut s = Sessions::start();
    s.restart(&dir);
    s.carry_on();
    // Root only: it holds control-stream bytes in flight.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path("state.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Nothing but the state file is left in the directory (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
}

#[test]
fn without_the_state_a_restarted_engine_drops_the_sessions() {
    // The same restart with nothing restored: what the state file prevents.
    let mut s = Sessions::start();
    s.h.engine = engine(s.ftp_options);
    s.h.drop(&s.data.server_data(&[0x5a; 1400]), Reason::TcpNoHandshake);
    let mut second = TcpSession::new(s.pending.0, s.pending.1, 60_000, 90_000);
    s.h.drop(&second.syn(), Reason::DefaultDeny);
    s.h.drop(&s.control.client_data(b"PASV\r\n"), Reason::TcpNoHandshake);
}

#[test]
fn restored_children_still_close_with_their_control_connection() {
    let dir = TempDir::new("children");
    let mut s = Sessions::start_with(CHILDREN_CLOSE);
    s.restart(&dir);
    // The control connection ends with a RST and leaves at its closed timeout: the data
    // connection it admitted goes with it (data_outlives_control is off by default), found
    // through the rewritten child handles.
    s.h.accept(&s.control.client_rst());
    let d = s.h.advance(60);
    let closed: Vec<_> = d
        .events
        .iter()
        .filter_map(|e| match e {
            Event::FlowClosed { flow, cause, .. } => Some((flow.to_string(), *cause)),
            _ => None,
        })
        .collect();
    assert!(
        closed.contains(&(
            "tcp 198.51.100.10:40001 -> 192.0.2.10:40001".to_owned(),
            CloseCause::ParentClosed
        )),
        "{closed:?}"
    );
}

#[test]
fn restoring_into_a_busy_engine_skips_duplicates_and_respects_the_cap() {
    let s = Sessions::start();
    let saved = s.h.engine.save_state();
    // The same flows again: all duplicates, and pinholes of flows not restored are left out.
    let mut same = Sessions::start();
    let summary = same.h.engine.restore_state(saved.clone());
    assert_eq!(
        (summary.flows, summary.duplicate_flows),
        (0, 5),
        "{summary:?}"
    );
    assert_eq!(summary.dropped_pinholes, 1);
    // A table of two flows takes two and counts the rest.
    let small = Policy::parse(
        "[[rule]]\nproto = \"tcp\"\nports = [21]\naction = \"allow\"\ninspect = \"ftp\"\n[limits]\nmax_flows = 2\n",
        "small",
    )
    .unwrap();
    let mut engine = Engine::new(Arc::new(small));
    let summary = engine.restore_state(saved);
    assert_eq!(
        (summary.flows, summary.over_capacity),
        (2, 3),
        "{summary:?}"
    );
    assert_eq!(engine.flows().len(), 2);
}

#[test]
fn expired_pinholes_are_not_restored() {
    let mut s = Sessions::start();
    let saved = s.h.engine.save_state();
    s.h.engine = engine(s.ftp_options);
    // The daemon was down longer than the pinhole's timeout (30 s by default).
    s.h.advance(120);
    let summary = s.h.engine.restore_state(saved);
    assert_eq!(
        (summary.pinholes, summary.dropped_pinholes),
        (0, 1),
        "{summary:?}"
    );
    let mut second = TcpSession::new(s.pending.0, s.pending.1, 60_000, 90_000);
    s.h.drop(&second.syn(), Reason::DefaultDeny);
}

fn write_text(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn corrupt_and_incompatible_state_files_are_refused_with_a_clear_error() {
    let dir = TempDir::new("refused");
    let good = StateFile::new(vec![WorkerState {
        queue: 0,
        engine: EngineState::default(),
    }]);
    let path = dir.path("good.json");
    good.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();

    // Cut short (a disk filled up, a copy interrupted).
    let cut = write_text(&dir, "cut.json", &text[..text.len() / 2]);
    let err = StateFile::read(&cut).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{} is corrupt: EOF while parsing", cut.display())),
        "{err}"
    );

    // Not JSON at all.
    let junk = write_text(&dir, "junk.json", "\u{0}\u{1}garbage");
    assert!(matches!(
        StateFile::read(&junk).unwrap_err(),
        StateError::Corrupt { .. }
    ));

    // Right header, body of another shape.
    let body = text.replacen("\"workers\":[", "\"workers\":[7,", 1);
    let shape = write_text(&dir, "shape.json", &body);
    let err = StateFile::read(&shape).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");

    // A future layout version.
    let future = text.replacen(
        &format!("\"version\":{VERSION}"),
        &format!("\"version\":{}", VERSION + 1),
        1,
    );
    let future = write_text(&dir, "future.json", &future);
    let err = StateFile::read(&future).unwrap_err();
    assert!(matches!(err, StateError::Incompatible { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "is incompatible: format \"{FORMAT}\" version {}, but this pinhole",
            VERSION + 1
        )),
        "{err}"
    );

    // Some other JSON file.
    let other = write_text(&dir, "other.json", "{\"flows\": []}");
    let err = StateFile::read(&other).unwrap_err();
    assert!(err.to_string().contains("no format field"), "{err}");

    // Written before a reboot.
    let stale = text.replacen(
        &format!("\"boot_id\":\"{}\"", good.boot_id),
        "\"boot_id\":\"00000000-0000-0000-0000-000000000000\"",
        1,
    );
    let stale = write_text(&dir, "stale.json", &stale);
    let err = StateFile::read(&stale).unwrap_err();
    assert!(matches!(err, StateError::OtherBoot { .. }), "{err:?}");
    assert!(
        err.to_string().contains("its connections are gone"),
        "{err}"
    );

    // Missing.
    let err = StateFile::read(&dir.path("missing.json")).unwrap_err();
    assert!(matches!(err, StateError::Read { .. }), "{err:?}");

    // The good one still reads.
    assert_eq!(StateFile::read(&path).unwrap().workers.len(), 1);
}

/// An FTPS session whose passive range is open, mid-handshake on one side and with one range
/// connection open, survives a restart: the framing goes on where it was, the range still
/// admits its client (up to its maximum, counting the restored connection) and no one else.
#[test]
fn an_ftps_sessions_passive_range_survives_a_restart() {
    use pinhole::testkit::tls;
    let options = "[rule.ftp]\nftps = \"allow-passive-range\"\nftps_passive_ports = \"40000-40100\"\nftps_max_connections = 2";
    let mut h = Harness::new(&policy(options));
    let mut control = TcpSession::new(sock(CLIENT), sock(SERVER), 1_000, 9_000);
    for frame in control.handshake() {
        h.accept(&frame);
    }
    h.accept(&control.server_data(b"220 ready\r\n"));
    h.accept(&control.client_data(b"AUTH TLS\r\n"));
    h.accept(&control.server_data(b"234 Proceed.\r\n"));
    h.accept(&control.client_data(&tls::flight(1, 40)));
    let server = tls::flight(2, 40);
    h.accept(&control.server_data(&server[..7]));
    let mut data = TcpSession::new(sock("198.51.100.10:41001"), sock("192.0.2.10:40010"), 5, 9);
    for frame in data.handshake() {
        h.accept(&frame);
    }
    let saved = h.engine.save_state();
    h.engine = engine(options);
    let summary = h.engine.restore_state(saved);
    assert_eq!(summary.flows, 2, "{summary:?}");
    // The server's flight goes on from its eighth byte.
    h.accept(&control.server_data(&server[7..]));
    let syn = |from: &str, to: &str| TcpSession::new(sock(from), sock(to), 1, 0).syn();
    h.drop(
        &syn("198.51.100.11:41002", "192.0.2.10:40011"),
        Reason::DefaultDeny,
    );
    h.accept(&syn("198.51.100.10:41003", "192.0.2.10:40011"));
    h.drop(
        &syn("198.51.100.10:41004", "192.0.2.10:40012"),
        Reason::FtpsRangeLimit,
    );
    // The client's side ended its handshake before the restart: cleartext after it is a
    // CCC's, inspected again (a bounce refused).
    h.reject(
        &control.client_data(b"PORT 203,0,113,9,0,25\r\n"),
        Reason::FtpBounce,
    );
}
