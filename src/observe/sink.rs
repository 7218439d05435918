//! The writer thread behind the event log and the drop capture.
//!
//! Workers send [`Item`]s with `try_send` on a bounded channel: a full channel loses the item
//! (counted in `events_lost` / `dropdump_lost`), it never stalls a packet. The writer turns
//! items into records of the replay contract with a `ts` field (see the README, "Event log"),
//! applies the per-class rate limit, and writes. SIGHUP makes it reopen the event log (for
//! logrotate); the drop capture rotates itself.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::conntrack::FlowTuple;
use crate::counters::Counters;
use crate::decision::Reason;
use crate::event::Event;
use crate::output::{Format, Record, event_record, write_text};
use crate::time::Instant;
use crate::wire::LinkType;

use super::dropcap::{DropCapture, DropCaptureConfig};
use super::ratelimit::{REPORT_EVERY, TokenBucket};

/// Items the channel holds before workers start losing them.
const CHANNEL: usize = 16_384;
/// Most bytes of dropped packets waiting for the writer.
const PACKET_BYTES_IN_FLIGHT: usize = 32 << 20;
/// How long the writer lets items gather after writing a batch (see `Writer::run`). The
/// channel holds 16k items: a pause this short cannot fill it below 16M items a second.
const WAKE_PAUSE: Duration = Duration::from_millis(1);
/// How often the writer flushes its files (so `tail -f` and tests see records promptly).
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where the event log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to, reopened on SIGHUP.
    File(PathBuf),
}

impl EventTarget {
    /// `-` is standard output, anything else a file.
    pub fn parse(text: &str) -> EventTarget {
        if text == "-" {
            EventTarget::Stdout
        } else {
            EventTarget::File(PathBuf::from(text))
        }
    }
}

/// What the sink writes.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// The event log, if any.
    pub events: Option<EventTarget>,
    /// Its format (JSON Lines, or readable lines).
    pub format: Format,
    /// Include `flow` open/close records.
    pub flows: bool,
    /// Records a second per class (drops, events).
    pub rate: u32,
    /// The drop capture, if any.
    pub drops: Option<DropCaptureConfig>,
    /// The framing of the captured packets.
    pub link: LinkType,
    /// The `file` of records that belong to no one source (`suppressed`).
    pub name: String,
}

/// The two rate-limited classes of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `verdict` records of dropped packets.
    Drops = 0,
    /// Everything else: pinholes, violations, notices, flows.
    Events = 1,
}

impl Class {
    /// Both, in index order.
    pub const ALL: [Class; 2] = [Class::Drops, Class::Events];

    /// Stable lower-case name (the `class` label and field).
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Drops => "drops",
            Class::Events => "events",
        }
    }
}

/// What a worker sends to the writer.
#[derive(Debug)]
pub enum Item {
    /// An engine event.
    Event {
        /// The source (`nfqueue:N`, `iface:NAME`).
        source: Arc<str>,
        /// The packet it came with.
        packet: u64,
        /// When.
        at: SystemTime,
        /// The event.
        event: Event,
    },
    /// A dropped packet's verdict.
    Drop {
        /// The source.
        source: Arc<str>,
        /// The packet.
        packet: u64,
        /// When.
        at: SystemTime,
        /// Why.
        reason: Option<Reason>,
        /// Its flow.
        flow: Option<FlowTuple>,
        /// The packet's own addresses and ports.
        tuple: Option<FlowTuple>,
        /// The sender was reset.
        reset: bool,
    },
    /// A dropped packet's bytes, for the capture.
    Packet {
        /// When.
        at: SystemTime,
        /// The frame.
        data: Vec<u8>,
    },
    /// The last record of a monitor run: its counters.
    Summary {
        /// The source.
        source: Arc<str>,
        /// When.
        at: SystemTime,
        /// The engine's counters (all workers').
        counters: Box<Counters>,
        /// The capture sockets' counters (all workers'), written as the record's `capture`
        /// object.
        capture: Option<super::metrics::CaptureCounters>,
    },
}

/// The writer's counters, shared with workers and the metrics endpoint.
#[derive(Debug, Default)]
pub struct SinkStats {
    written: [AtomicU64; 2],
    suppressed: [AtomicU64; 2],
    lost: AtomicU64,
    write_errors: AtomicU64,
    dump_packets: AtomicU64,
    dump_bytes: AtomicU64,
    dump_lost: AtomicU64,
    dump_rotations: AtomicU64,
}

/// A copy of [`SinkStats`] (the `observe` object of `pinhole stats --json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounters {
    /// Records written, by class.
    pub events_written: ClassCounts,
    /// Records left out by the rate limit, by class.
    pub events_suppressed: ClassCounts,
    /// Records lost because the writer fell behind (its queue was full).
    pub events_lost: u64,
    /// Writes to the event log or the capture that failed (a full disk).
    pub write_errors: u64,
    /// Packets written to the drop capture.
    pub dropdump_packets: u64,
    /// Bytes written to the drop capture.
    pub dropdump_bytes: u64,
    /// Dropped packets not captured because the writer fell behind.
    pub dropdump_lost: u64,
    /// Times the drop capture moved to a new file.
    pub dropdump_rotations: u64,
}

/// A count per [`Class`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    /// `verdict` records of drops.
    pub drops: u64,
    /// Other records.
    pub events: u64,
}

impl ClassCounts {
    /// The count of `class`.
    pub fn get(&self, class: Class) -> u64 {
        match class {
            Class::Drops => self.drops,
            Class::Events => self.events,
        }
    }
}

impl SinkStats {
    /// A copy of the counters.
    pub fn snapshot(&self) -> SinkCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let pair = |a: &[AtomicU64; 2]| ClassCounts {
            drops: get(&a[0]),
            events: get(&a[1]),
        };
        SinkCounters {
            events_written: pair(&self.written),
            events_suppressed: pair(&self.suppressed),
            events_lost: get(&self.lost),
            write_errors: get(&self.write_errors),
            dropdump_packets: get(&self.dump_packets),
            dropdump_bytes: get(&self.dump_bytes),
            dropdump_lost: get(&self.dump_lost),
            dropdump_rotations: get(&self.dump_rotations),
        }
    }
}

/// The sending side, one per worker.
#[derive(Clone, Debug)]
pub struct SinkHandle {
    tx: SyncSender<Item>,
    stats: Arc<SinkStats>,
    in_flight: Arc<AtomicUsize>,
    /// An event log is written.
    pub events: bool,
    /// It includes flow records.
    pub flows: bool,
    /// A drop capture is written.
    pub capture: bool,
}

impl SinkHandle {
    /// Sends a record item; a full channel loses it (counted).
    pub fn send(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a dropped packet's bytes for the capture, unless too many bytes wait already.
    pub fn send_packet(&self, at: SystemTime, data: &[u8]) {
        let len = data.len();
        if self.in_flight.fetch_add(len, Ordering::Relaxed) + len > PACKET_BYTES_IN_FLIGHT {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
            self.stats.dump_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let item = Item::Packet {
            at,
            data: data.to_vec(),
        };
        if self.tx.try_send(item).is_err() {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
            self.stats.dump_lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The event log and drop capture writer.
pub struct Sink {
    handle: SinkHandle,
    reopen: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Sink {
    /// Opens the files (an error names the file) and starts the writer thread.
    pub fn start(config: SinkConfig) -> Result<Sink, String> {
        let log = match &config.events {
            Some(target) => Some(EventLog::open(target)?),
            None => None,
        };
        let capture = match &config.drops {
            Some(drops) => Some(
                DropCapture::create(drops.clone(), config.link)
                    .map_err(|err| format!("drop capture {}: {err}", drops.path.display()))?,
            ),
            None => None,
        };
        let (tx, rx) = sync_channel(CHANNEL);
        let stats = Arc::new(SinkStats::default());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let handle = SinkHandle {
            tx,
            stats: stats.clone(),
            in_flight: in_flight.clone(),
            events: log.is_some(),
            flows: config.flows,
            capture: capture.is_some(),
        };
        let now = std::time::Instant::now();
        let writer = Writer {
            target: config.events.clone(),
            log,
            capture,
            format: config.format,
            name: config.name,
            buckets: [
                TokenBucket::new(config.rate, now),
                TokenBucket::new(config.rate, now),
            ],
            reported: [now, now],
            stats,
            in_flight,
            reopen: reopen.clone(),
        };
        let thread = thread::Builder::new()
            .name("pinhole-events".to_owned())
            .spawn(move || writer.run(&rx))
            .map_err(|err| format!("starting the event writer: {err}"))?;
        Ok(Sink {
            handle,
            reopen,
            thread,
        })
    }

    /// A sending side for a worker.
    pub fn handle(&self) -> SinkHandle {
        self.handle.clone()
    }

    /// The writer's counters, to read later from another thread.
    pub fn stats_handle(&self) -> Arc<SinkStats> {
        self.handle.stats.clone()
    }

    /// Asks the writer to reopen the event log file (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// The flag [`Sink::reopen`] sets, for a thread that does not own the sink.
    pub fn reopen_handle(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    /// Sends `item` (the monitor's summary).
    pub fn send(&self, item: Item) {
        self.handle.send(item);
    }

    /// Waits until every handle is dropped and everything sent is written.
    pub fn finish(self) {
        drop(self.handle);
        let _ = self.thread.join();
    }
}

/// The event log's file (or stdout).
struct EventLog {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl EventLog {
    fn open(target: &EventTarget) -> Result<EventLog, String> {
        let out: Box<dyn Write + Send> = match target {
            EventTarget::Stdout => Box::new(io::stdout()),
            EventTarget::File(path) => Box::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|err| format!("event log {}: {err}", path.display()))?,
            ),
        };
        Ok(EventLog {
            out: BufWriter::new(out),
        })
    }
}

struct Writer {
    /// Where the event log goes (kept apart from the open file, to reopen it).
    target: Option<EventTarget>,
    /// The open event log; `None` without one, or while a reopen failed.
    log: Option<EventLog>,
    capture: Option<DropCapture>,
    format: Format,
    name: String,
    buckets: [TokenBucket; 2],
    /// When each class's suppressed count was last reported.
    reported: [std::time::Instant; 2],
    stats: Arc<SinkStats>,
    in_flight: Arc<AtomicUsize>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Item>) {
        let mut flushed = std::time::Instant::now();
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(item) => {
                    self.item(item);
                    // Everything already waiting, then a pause before waiting again: a worker
                    // whose send finds the writer parked must wake it (a futex call on the
                    // packet path), and at a few records per hundred packets that was one
                    // wake-up per record. Pausing caps it at one per WAKE_PAUSE.
                    for item in rx.try_iter().take(CHANNEL) {
                        self.item(item);
                    }
                    thread::sleep(WAKE_PAUSE);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if flushed.elapsed() >= FLUSH_EVERY {
                self.tick(false);
                flushed = std::time::Instant::now();
            }
        }
        self.tick(true);
    }

    fn item(&mut self, item: Item) {
        match item {
            Item::Event {
                source,
                packet,
                at,
                event,
            } => {
                if self.admit(Class::Events) {
                    let record = event_record(&source, packet, &event);
                    self.write_record(Class::Events, &record, at, None);
                }
            }
            Item::Drop {
                source,
                packet,
                at,
                reason,
                flow,
                tuple,
                reset,
            } => {
                if self.admit(Class::Drops) {
                    let record = Record::Verdict {
                        file: &source,
                        packet,
                        verdict: "drop",
                        reason,
                        flow,
                        reset,
                        rewritten: false,
                        // The text line names the packet itself (`tuple`) instead.
                        reply: false,
                    };
                    let extra = tuple.map(|t| ("tuple", Value::String(t.to_string())));
                    self.write_record(Class::Drops, &record, at, extra);
                }
            }
            Item::Packet { at, data } => {
                self.in_flight.fetch_sub(data.len(), Ordering::Relaxed);
                self.capture_packet(at, &data);
            }
            Item::Summary {
                source,
                at,
                counters,
                capture,
            } => {
                self.report_suppressed(true);
                let record = Record::summary(&source, &counters, false);
                let extra = capture
                    .and_then(|c| serde_json::to_value(c).ok())
                    .map(|c| ("capture", c));
                self.write_record(Class::Events, &record, at, extra);
            }
        }
    }

    /// True when a record of `class` may be written now; reports what was suppressed before
    /// it first.
    fn admit(&mut self, class: Class) -> bool {
        let now = std::time::Instant::now();
        if self.buckets[class as usize].allow(now) {
            // What was left out since the last report comes first, at most once a second.
            self.report_class(class, now, false);
            true
        } else {
            self.stats.suppressed[class as usize].fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn report_suppressed(&mut self, force: bool) {
        let now = std::time::Instant::now();
        for class in Class::ALL {
            self.report_class(class, now, force);
        }
    }

    /// Writes a `suppressed` record for `class` when it has a count and one is due.
    fn report_class(&mut self, class: Class, now: std::time::Instant, force: bool) {
        let i = class as usize;
        if self.buckets[i].suppressed() == 0
            || (!force && now.saturating_duration_since(self.reported[i]) < REPORT_EVERY)
        {
            return;
        }
        self.reported[i] = now;
        let count = self.buckets[i].take_suppressed();
        let at = SystemTime::now();
        let Some(log) = self.log.as_mut() else {
            self.log_missing();
            return;
        };
        let line = match self.format {
            Format::Json => {
                let value = json!({
                    "type": "suppressed",
                    "ts": timestamp(at),
                    "file": self.name,
                    "class": class.as_str(),
                    "count": count,
                });
                value.to_string() + "\n"
            }
            Format::Text => format!(
                "{} suppressed {count} {} records (--events-rate)\n",
                timestamp(at),
                class.as_str()
            ),
        };
        let result = log.out.write_all(line.as_bytes());
        self.outcome(result, None);
    }

    /// Writes `record` with its `ts` and, in JSON, an `extra` field.
    fn write_record(
        &mut self,
        class: Class,
        record: &Record<'_>,
        at: SystemTime,
        extra: Option<(&str, Value)>,
    ) {
        let Some(log) = self.log.as_mut() else {
            self.log_missing();
            return;
        };
        let result = match self.format {
            Format::Json => match json_line(record, at, extra) {
                Ok(line) => log.out.write_all(line.as_bytes()),
                Err(err) => Err(io::Error::other(err)),
            },
            Format::Text => {
                let mut line = format!("{} ", timestamp(at)).into_bytes();
                write_text(&mut line, record).and_then(|()| {
                    if let Some((_, Value::String(tuple))) = &extra
                        && line.ends_with(b"\n")
                    {
                        // Name the packet when the record names no flow.
                        line.pop();
                        if !line.ends_with(b" ") {
                            line.push(b' ');
                        }
                        line.extend_from_slice(format!("[{tuple}]\n").as_bytes());
                    }
                    log.out.write_all(&line)
                })
            }
        };
        self.outcome(result, Some(class));
    }

    fn capture_packet(&mut self, at: SystemTime, data: &[u8]) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        let before = capture.rotations();
        match capture.write(engine_time(at), data) {
            Ok(bytes) => {
                self.stats.dump_packets.fetch_add(1, Ordering::Relaxed);
                self.stats.dump_bytes.fetch_add(bytes, Ordering::Relaxed);
                let rotated = capture.rotations() - before;
                self.stats
                    .dump_rotations
                    .fetch_add(rotated, Ordering::Relaxed);
            }
            Err(err) => {
                self.stats.dump_lost.fetch_add(1, Ordering::Relaxed);
                self.outcome(Err(err), None);
            }
        }
    }

    /// A record for an event log whose reopen failed is a write error (none is asked for: nothing).
    fn log_missing(&mut self) {
        if self.target.is_some() {
            self.outcome(Err(io::Error::other("the event log is not open")), None);
        }
    }

    /// Counts a write's outcome; failures are logged at the 1st, 2nd, 4th, 8th... time.
    fn outcome(&mut self, result: io::Result<()>, class: Option<Class>) {
        match result {
            Ok(()) => {
                if let Some(class) = class {
                    self.stats.written[class as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(err) => {
                let n = self.stats.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(%err, errors = n, "event log / drop capture write failed");
                }
            }
        }
    }

    fn tick(&mut self, last: bool) {
        self.report_suppressed(last);
        if let Some(log) = self.log.as_mut() {
            let result = log.out.flush();
            self.outcome(result, None);
        }
        if let Some(capture) = self.capture.as_mut() {
            let result = capture.flush();
            self.outcome(result, None);
        }
        if self.reopen.swap(false, Ordering::Relaxed)
            && let Some(target) = &self.target
        {
            // Close the old file first: logrotate may have moved it, or not.
            self.log = None;
            match EventLog::open(target) {
                Ok(reopened) => {
                    tracing::info!(target: super::LIFECYCLE, ?target, "event log reopened");
                    self.log = Some(reopened);
                }
                Err(err) => tracing::error!(
                    "{err}; retrying at the next SIGHUP, records are counted as write errors until then"
                ),
            }
        }
    }
}

/// One JSON line: the record's fields with `ts` after `type`, and `extra` last.
fn json_line(
    record: &Record<'_>,
    at: SystemTime,
    extra: Option<(&str, Value)>,
) -> serde_json::Result<String> {
    let Value::Object(fields) = serde_json::to_value(record)? else {
        return Ok(String::new());
    };
    let mut out = Map::with_capacity(fields.len() + 1);
    for (key, value) in fields {
        let is_type = key == "type";
        out.insert(key, value);
        if is_type {
            out.insert("ts".to_owned(), Value::String(timestamp(at)));
        }
    }
    if let Some((key, value)) = extra {
        out.insert(key.to_owned(), value);
    }
    let mut line = serde_json::to_string(&Value::Object(out))?;
    line.push('\n');
    Ok(line)
}

/// RFC 3339 UTC with microseconds: `2026-11-22T10:00:00.123456Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// Wall-clock time as the pcap writer's instant (nanoseconds since the Unix epoch).
fn engine_time(at: SystemTime) -> Instant {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Instant::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::Alg;
    use crate::io::pcap::read_capture;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pinhole-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(events: &std::path::Path, rate: u32) -> SinkConfig {
        SinkConfig {
            events: Some(EventTarget::File(events.to_owned())),
            format: Format::Json,
            flows: false,
            rate,
            drops: None,
            link: LinkType::RawIp,
            name: "nfqueue".to_owned(),
        }
    }

    fn tuple() -> FlowTuple {
        FlowTuple {
            proto: 6,
            src: "198.51.100.10".parse().unwrap(),
            sport: 40000,
            dst: "192.0.2.10".parse().unwrap(),
            dport: 21,
        }
    }

    fn drop_item(packet: u64) -> Item {
        Item::Drop {
            source: Arc::from("nfqueue:0"),
            packet,
            at: SystemTime::now(),
            reason: Some(Reason::DefaultDeny),
            flow: None,
            tuple: Some(tuple()),
            reset: false,
        }
    }

    fn lines(path: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_are_the_replay_records_with_a_timestamp() {
        let dir = temp_dir("records");
        let path = dir.join("events.jsonl");
        let sink = Sink::start(config(&path, 100)).unwrap();
        let handle = sink.handle();
        handle.send(Item::Event {
            source: Arc::from("nfqueue:1"),
            packet: 7,
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            event: Event::Violation {
                alg: Alg::Ftp,
                reason: Reason::FtpBounce,
                flow: Some(tuple()),
                detail: "PORT 10,0,0,5,0,25".to_owned(),
            },
        });
        handle.send(drop_item(8));
        drop(handle);
        sink.finish();
        let records = lines(&path);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].to_string(),
            r#"{"type":"violation","ts":"2026-11-18T11:06:40.123456Z","file":"nfqueue:1","alg":"ftp","reason":"ftp_bounce","packet":7,"flow":"tcp 198.51.100.10:40000 -> 192.0.2.10:21","detail":"PORT 10,0,0,5,0,25"}"#
        );
        assert_eq!(records[1]["type"], "verdict");
        assert_eq!(records[1]["verdict"], "drop");
        assert_eq!(records[1]["reason"], "default_deny");
        assert_eq!(records[1]["flow"], Value::Null);
        assert_eq!(
            records[1]["tuple"],
            "tcp 198.51.100.10:40000 -> 192.0.2.10:21"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_and_the_rest_is_reported_as_suppressed() {
        let dir = temp_dir("flood");
        let path = dir.join("events.jsonl");
        let sink = Sink::start(config(&path, 5)).unwrap();
        let handle = sink.handle();
        for packet in 0..1000 {
            handle.send(drop_item(packet));
        }
        drop(handle);
        let stats = sink.handle().stats.clone();
        sink.finish();
        let records = lines(&path);
        let written = records.iter().filter(|r| r["type"] == "verdict").count() as u64;
        let suppressed: u64 = records
            .iter()
            .filter(|r| r["type"] == "suppressed")
            .map(|r| {
                assert_eq!(r["class"], "drops");
                assert_eq!(r["file"], "nfqueue");
                r["count"].as_u64().unwrap()
            })
            .sum();
        // The burst (5) and whatever the bucket refilled while the test ran.
        assert!((5..=10).contains(&written), "{written} written");
        assert_eq!(written + suppressed, 1000);
        let counters = stats.snapshot();
        assert_eq!(counters.events_written.drops, written);
        assert_eq!(counters.events_suppressed.drops, suppressed);
        assert_eq!(counters.events_lost, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopen_starts_a_new_file_after_the_old_one_was_moved() {
        let dir = temp_dir("reopen");
        let path = dir.join("events.jsonl");
        let moved = dir.join("events.jsonl.1");
        let sink = Sink::start(config(&path, 100)).unwrap();
        sink.send(drop_item(1));
        thread::sleep(FLUSH_EVERY * 2);
        std::fs::rename(&path, &moved).unwrap();
        sink.reopen();
        thread::sleep(FLUSH_EVERY * 2);
        sink.send(drop_item(2));
        sink.finish();
        assert_eq!(lines(&moved).len(), 1);
        assert_eq!(lines(&moved)[0]["packet"], 1);
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(lines(&path)[0]["packet"], 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_reopen_counts_errors_and_the_next_sighup_retries() {
        let dir = temp_dir("reopen-fail");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let path = logs.join("events.jsonl");
        let sink = Sink::start(config(&path, 100)).unwrap();
        let stats = sink.stats_handle();
        // The directory goes away: the reopen fails, and records count as write errors.
        std::fs::remove_dir_all(&logs).unwrap();
        sink.reopen();
        thread::sleep(FLUSH_EVERY * 2);
        sink.send(drop_item(1));
        thread::sleep(FLUSH_EVERY * 2);
        assert!(stats.snapshot().write_errors >= 1);
        // It comes back: the next SIGHUP opens the log again.
        std::fs::create_dir_all(&logs).unwrap();
        sink.reopen();
        thread::sleep(FLUSH_EVERY * 2);
        sink.send(drop_item(2));
        sink.finish();
        let records = lines(&path);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["packet"], 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropped_packets_are_captured_and_read_back() {
        let dir = temp_dir("capture");
        let pcap = dir.join("drops.pcap");
        let sink = Sink::start(SinkConfig {
            events: None,
            drops: Some(DropCaptureConfig {
                path: pcap.clone(),
                max_bytes: 1 << 20,
                files: 2,
            }),
            ..config(&dir.join("unused"), 10)
        })
        .unwrap();
        let handle = sink.handle();
        assert!(!handle.events && handle.capture);
        let frame: Vec<u8> = (0..60u8).collect();
        handle.send_packet(SystemTime::now(), &frame);
        handle.send_packet(SystemTime::now(), &frame[..20]);
        drop(handle);
        let stats = sink.handle().stats.clone();
        sink.finish();
        let mut seen = Vec::new();
        read_capture(&pcap, |p| -> Result<(), ()> {
            seen.push(p.data.to_vec());
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, vec![frame.clone(), frame[..20].to_vec()]);
        let counters = stats.snapshot();
        assert_eq!(counters.dropdump_packets, 2);
        assert_eq!(counters.dropdump_bytes, 16 + 60 + 16 + 20);
        assert!(!dir.join("unused").exists(), "no event log was asked for");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
