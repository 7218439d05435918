//! The control socket: `pinhole status|sessions|pinholes|stats` ask the running daemon.
//!
//! A Unix stream socket (default `/run/pinhole/pinhole.sock`, mode 0600, and only uid 0 is
//! answered, checked with `SO_PEERCRED`). The client writes one word and a newline
//! (`status`, `sessions`, `pinholes`, `stats`, `snapshot`, `metrics` or `reload`); the daemon
//! answers with one JSON document and closes. The JSON shapes are those of `--json` (see the
//! README); the tables for people are rendered by the client from the same JSON.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use serde::Serialize;
use serde_json::{Value, json};

use super::Shared;
use super::snapshot::{QueueCounters, WorkerStats};
use super::state_file::{StateFile, WorkerState};
use super::worker::Query;
use crate::counters::Counters;

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/pinhole/pinhole.sock";

/// How long a worker may take to answer, and a client to ask.
const TIMEOUT: Duration = Duration::from_secs(3);

/// What can be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Question {
    /// Daemon, policy and table sizes.
    Status,
    /// Tracked flows.
    Sessions,
    /// Open pinholes.
    Pinholes,
    /// Counters.
    Stats,
    /// Write the state file now.
    Snapshot,
    /// The counters in the Prometheus text format.
    Metrics,
    /// Re-read the rules file and reopen the event log, as SIGHUP does, and say how it went:
    /// an invalid file is an error answer (the old policy stays).
    Reload,
}

impl Question {
    fn as_str(self) -> &'static str {
        match self {
            Question::Status => "status",
            Question::Sessions => "sessions",
            Question::Pinholes => "pinholes",
            Question::Stats => "stats",
            Question::Snapshot => "snapshot",
            Question::Metrics => "metrics",
            Question::Reload => "reload",
        }
    }

    fn parse(word: &str) -> Option<Question> {
        [
            Question::Status,
            Question::Sessions,
            Question::Pinholes,
            Question::Stats,
            Question::Snapshot,
            Question::Metrics,
            Question::Reload,
        ]
        .into_iter()
        .find(|q| q.as_str() == word)
    }
}

/// Creates the socket (and its directory), replacing a stale one, readable by root only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another pinhole daemon answers on this socket",
        ));
    }
    match std::fs::symlink_metadata(path) {
        // A stale socket from a daemon that was killed.
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; choose another --control path",
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answers clients, one at a time, until the stop flag is set (checked every 50 ms: the
/// listener does not block, so a stop never waits on a client that does not come).
pub fn serve(listener: &UnixListener, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(err) = stream
                    .set_nonblocking(false)
                    .and_then(|()| answer(stream, shared))
                {
                    tracing::debug!(%err, "control client");
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => {
                tracing::warn!(%err, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn answer(mut stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let uid = getsockopt(&stream, sockopt::PeerCredentials).map(|c| c.uid());
    let mut line = String::new();
    BufReader::new((&stream).take(64)).read_line(&mut line)?;
    let reply = match (uid, Question::parse(line.trim())) {
        (Ok(0), Some(question)) => respond(question, shared),
        (Ok(0), None) => json!({ "error": format!("unknown question {:?}", line.trim()) }),
        _ => json!({ "error": "the control socket answers root only" }),
    };
    serde_json::to_writer(&mut stream, &reply)?;
    stream.write_all(b"\n")
}

/// Asks every worker and gathers the answers (a worker that does not answer in time is left
/// out, and `workers_answered` says so).
pub(crate) fn ask<T: Send + 'static>(
    shared: &Shared,
    make: impl Fn(mpsc::Sender<T>) -> Query,
) -> Vec<T> {
    let mut pending = Vec::new();
    for (_, worker) in &shared.workers {
        let (tx, rx) = mpsc::channel();
        if worker.send(make(tx)).is_ok() {
            pending.push(rx);
        }
    }
    pending
        .into_iter()
        .filter_map(|rx| rx.recv_timeout(TIMEOUT).ok())
        .collect()
}

fn respond(question: Question, shared: &Shared) -> Value {
    match question {
        Question::Status => status(shared),
        Question::Stats => stats(shared),
        Question::Sessions => {
            let mut rows: Vec<_> = ask(shared, Query::Sessions).into_iter().flatten().collect();
            rows.sort_by_key(|r| (r.proto.to_string(), r.src, r.sport));
            to_value(&rows)
        }
        Question::Pinholes => {
            let rows: Vec<_> = ask(shared, Query::Pinholes).into_iter().flatten().collect();
            to_value(&rows)
        }
        Question::Snapshot => snapshot(shared),
        Question::Metrics => json!({ "prometheus": shared.metrics() }),
        Question::Reload => match shared.reload_and_reopen() {
            Ok(rules) => {
                let status = shared.reload_status();
                json!({
                    "rules_file": shared.options.rules.display().to_string(),
                    "rules": rules,
                    "reloads": status.reloads,
                    "reload_failures": status.reload_failures,
                })
            }
            Err(errors) => json!({
                "error": format!("the rules were not reloaded; the old policy stays in force:\n{errors}")
            }),
        },
    }
}

/// Writes the state file from every worker's copy of its flows and pinholes.
fn snapshot(shared: &Shared) -> Value {
    let workers: Vec<WorkerState> = ask(shared, Query::SaveState)
        .into_iter()
        .map(|(queue, engine)| WorkerState { queue, engine })
        .collect();
    let answered = workers.len();
    let file = StateFile::new(workers);
    let path = &shared.options.state_file;
    match file.write(path) {
        Ok(bytes) => {
            tracing::info!(target: crate::observe::LIFECYCLE, file = %path.display(), flows = file.flows(), pinholes = file.pinholes(), bytes, "state saved (snapshot)");
            json!({
                "state_file": path.display().to_string(),
                "workers": shared.workers.len(),
                "workers_answered": answered,
                "flows": file.flows(),
                "pinholes": file.pinholes(),
                "bytes": bytes,
            })
        }
        Err(err) => json!({ "error": format!("writing {}: {err}", path.display()) }),
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|err| json!({ "error": err.to_string() }))
}

fn totals(workers: &[WorkerStats]) -> (Counters, QueueCounters, usize, usize) {
    let mut engine = Counters::default();
    let mut queue = QueueCounters::default();
    let (mut flows, mut pinholes) = (0, 0);
    for w in workers {
        engine.add(&w.engine);
        queue.add(&w.queue_counters);
        flows += w.flows;
        pinholes += w.pinholes;
    }
    (engine, queue, flows, pinholes)
}

fn status(shared: &Shared) -> Value {
    let workers = ask(shared, Query::Stats);
    let (_, _, flows, pinholes) = totals(&workers);
    let (policy, _) = shared.policy();
    let options = &shared.options;
    let reload = shared.reload_status();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_secs": shared.started.elapsed().as_secs(),
        "mode": options.kernel.mode.as_str(),
        "fail_open": options.kernel.fail_open,
        "ha": options.kernel.ha.is_some(),
        "inspection": !options.no_inspect,
        "queues": options.kernel.queues.clone().collect::<Vec<u16>>(),
        "workers": shared.workers.len(),
        "workers_answered": workers.len(),
        "rules_file": options.rules.display().to_string(),
        "rules": policy.rules.len(),
        "zones": policy.zones.len(),
        "reloads": reload.reloads,
        "reload_failures": reload.reload_failures,
        "last_reload_error": reload.last_reload_error,
        "flows": flows,
        "pinholes": pinholes,
    })
}

fn stats(shared: &Shared) -> Value {
    let workers = ask(shared, Query::Stats);
    let (engine, queue, flows, pinholes) = totals(&workers);
    json!({
        "uptime_secs": shared.started.elapsed().as_secs(),
        "mode": shared.options.kernel.mode.as_str(),
        "workers": shared.workers.len(),
        "workers_answered": workers.len(),
        "flows": flows,
        "pinholes": pinholes,
        "engine": to_value(&engine),
        "queue": to_value(&queue),
        "kernel_queues": to_value(&crate::io::nfqueue::kernel_queue_stats(&shared.options.kernel.queues)),
        "observe": to_value(&shared.sink_stats()),
        "per_worker": to_value(&workers),
    })
}

// ---- client ---------------------------------------------------------------------------------

/// Asks the daemon listening on `path`.
pub fn query(path: &Path, question: Question) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path).map_err(|err| {
        format!(
            "cannot reach the pinhole daemon at {}: {err} (is `pinhole run` running? as root? pass --control if it uses another socket)",
            path.display()
        )
    })?;
    let io_err = |err: io::Error| format!("talking to the daemon at {}: {err}", path.display());
    stream.set_read_timeout(Some(TIMEOUT * 2)).map_err(io_err)?;
    stream
        .write_all(format!("{}\n", question.as_str()).as_bytes())
        .map_err(io_err)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(io_err)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|err| format!("the daemon's answer is not JSON: {err}"))?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(format!("the daemon refused: {error}"));
    }
    Ok(value)
}

/// Renders an answer for people.
pub fn render(question: Question, value: &Value) -> String {
    match question {
        Question::Status | Question::Stats | Question::Snapshot | Question::Reload => {
            render_object(value, "")
        }
        Question::Metrics => value
            .get("prometheus")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        Question::Sessions => render_table(
            value,
            &[
                ("PROTO", "proto"),
                ("SOURCE", "src:sport"),
                ("DESTINATION", "dst:dport"),
                ("STATE", "state"),
                ("ALG", "alg"),
                ("ORIGIN", "origin"),
                ("OFFLOADED", "offloaded"),
                ("NAT CLIENT", "nat.client"),
                ("NAT SERVER", "nat.server"),
                ("AGE", "age_secs"),
                ("IDLE", "idle_secs"),
                ("PACKETS", "packets"),
                ("BYTES", "bytes"),
                ("Q", "worker"),
            ],
            "no sessions",
        ),
        Question::Pinholes => render_table(
            value,
            &[
                ("ID", "id"),
                ("ALG", "alg"),
                ("PROTO", "proto"),
                ("PEER", "src:sport"),
                ("DESTINATION", "dst:dport"),
                ("PARENT", "parent"),
                ("EXPIRES", "expires_in_secs"),
                ("Q", "worker"),
            ],
            "no pinholes",
        ),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_object(value: &Value, indent: &str) -> String {
    let mut out = String::new();
    let Some(map) = value.as_object() else {
        return scalar(value);
    };
    for (key, v) in map {
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                let _ = writeln!(out, "{indent}{key}:");
                out.push_str(&render_object(v, &format!("{indent}  ")));
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                let _ = writeln!(out, "{indent}{key}: ({} entries, see --json)", items.len());
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(scalar).collect();
                let _ = writeln!(out, "{indent}{key}: {}", items.join(", "));
            }
            other => {
                let _ = writeln!(out, "{indent}{key}: {}", scalar(other));
            }
        }
    }
    out
}

/// A column spec: a field, or `addr:port` joined as a socket address.
fn cell(row: &Value, spec: &str) -> String {
    match spec.split_once(':') {
        Some((addr, port)) => {
            let addr = scalar(&row[addr]);
            let port = match &row[port] {
                Value::Null => row
                    .get("sport_range")
                    .and_then(Value::as_array)
                    .map_or_else(
                        || "*".to_owned(),
                        |r| format!("{}-{}", scalar(&r[0]), scalar(&r[1])),
                    ),
                p => scalar(p),
            };
            if addr.contains(':') {
                format!("[{addr}]:{port}")
            } else {
                format!("{addr}:{port}")
            }
        }
        None => match spec.split_once('.') {
            Some((object, field)) => scalar(&row[object][field]),
            None => scalar(&row[spec]),
        },
    }
}

fn render_table(value: &Value, columns: &[(&str, &str)], empty: &str) -> String {
    let rows = value.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut cells: Vec<Vec<String>> = vec![columns.iter().map(|(h, _)| (*h).to_owned()).collect()];
    for row in rows {
        cells.push(columns.iter().map(|(_, spec)| cell(row, spec)).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| cells.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out, "{} total", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_render_as_a_table_with_socket_addresses() {
        let rows = json!([{
            "worker": 0, "proto": "tcp", "src": "198.51.100.10", "sport": 40000,
            "dst": "2001:db8:2::10", "dport": 21, "state": "established", "alg": "ftp",
            "origin": "rule ftp-to-server", "offloaded": false, "age_secs": 5,
            "idle_secs": 1, "packets": 12, "bytes": 900
        }]);
        let text = render(Question::Sessions, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PROTO  SOURCE"), "{text}");
        assert!(lines[1].contains("198.51.100.10:40000  [2001:db8:2::10]:21  established  ftp"));
        assert_eq!(lines[2], "1 total");
        assert_eq!(render(Question::Pinholes, &json!([])), "no pinholes\n");
    }

    #[test]
    fn translated_sessions_show_both_addresses() {
        let rows = json!([{
            "worker": 0, "proto": "tcp", "src": "198.51.100.10", "sport": 40000,
            "dst": "10.0.1.10", "dport": 21, "state": "established", "alg": "ftp",
            "origin": "rule ftp-control", "offloaded": false, "age_secs": 5,
            "idle_secs": 1, "packets": 12, "bytes": 900,
            "nat": {"client": "198.51.100.10:40000", "server": "203.0.113.1:21"}
        }]);
        let text = render(Question::Sessions, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("OFFLOADED  NAT CLIENT"), "{text}");
        assert!(
            lines[1].contains("198.51.100.10:40000  10.0.1.10:21")
                && lines[1].contains("false      198.51.100.10:40000  203.0.113.1:21"),
            "{text}"
        );
    }

    #[test]
    fn pinholes_show_any_port_and_port_ranges() {
        let rows = json!([
            {"id": 1, "alg": "ftp", "proto": "tcp", "src": "198.51.100.10", "sport": null,
             "sport_range": null, "dst": "192.0.2.10", "dport": 40001, "parent": null,
             "expires_in_secs": 29, "worker": 1},
            {"id": 2, "alg": "tftp", "proto": "udp", "src": "192.0.2.10", "sport": null,
             "sport_range": [30000, 30009], "dst": "198.51.100.10", "dport": 5000,
             "parent": null, "expires_in_secs": 9, "worker": 0}
        ]);
        let text = render(Question::Pinholes, &rows);
        assert!(text.contains("198.51.100.10:*"), "{text}");
        assert!(text.contains("192.0.2.10:30000-30009"), "{text}");
    }

    #[test]
    fn status_renders_nested_objects_indented() {
        let text = render(
            Question::Stats,
            &json!({"mode": "offload", "engine": {"packets": 3, "drops": {"default_deny": 1}}}),
        );
        assert_eq!(
            text,
            "mode: offload\nengine:\n  packets: 3\n  drops:\n    default_deny: 1\n"
        );
    }
}
