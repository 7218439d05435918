//! `pinhole monitor`: the engine on a live interface, passively. Frames come from an
//! `AF_PACKET` socket ([`crate::io::packet`]); every one is judged as the inline firewall
//! would, and what it would have dropped goes to the event log, the drop capture and the
//! metrics. Nothing is ever sent back: the traffic is not touched.
//!
//! Threads: the capture loop (this thread, one engine), the signal thread (SIGHUP reloads the
//! rules and reopens the event log; SIGINT/SIGTERM stop), the metrics endpoint if asked for, and
//! the event writer. At a clean stop the last event-log record is the run's `summary`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::counters::Counters;
use crate::decision::Reason;
use crate::engine::{Engine, PacketInfo};
use crate::io::packet::{CaptureConfig, PacketSocket};
use crate::observe::metrics::{self, CaptureCounters, MetricsInput};
use crate::observe::sink::Item;
use crate::observe::{ObserveOptions, Sink, Tap, http};
use crate::output::{Format, Record, RecordWriter};
use crate::policy::Policy;
use crate::wire::link;

use super::notify::Notifier;

use super::snapshot::{QueueCounters, WorkerStats};
use super::{RunError, monotonic_now};

/// Longest wait between two looks at the stop flag, reloads and metrics requests.
const TICK: Duration = Duration::from_millis(100);
/// Most frames read before the timers and requests get a turn.
const BATCH: usize = 256;
/// The capture buffer: GRO can hand over aggregated frames of up to 64 KiB and more.
const FRAME_BUFFER: usize = 256 << 10;

/// Everything `pinhole monitor` was asked to do.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// The interface to watch.
    pub iface: String,
    /// The rules file; `None`: the embedded default policy.
    pub rules: Option<PathBuf>,
    /// Socket settings.
    pub capture: CaptureConfig,
    /// Verify TCP/UDP checksums.
    pub verify_checksums: bool,
    /// Event log, drop capture, metrics.
    pub observe: ObserveOptions,
}

/// A question from the metrics endpoint to the capture loop.
type StatsRequest = Sender<(WorkerStats, CaptureCounters)>;

fn load(rules: Option<&std::path::Path>) -> Result<Policy, String> {
    match rules {
        None => Ok(Policy::embedded_default()),
        Some(path) => Policy::from_file(path).map_err(|errors| errors.to_string()),
    }
}

/// Runs the monitor until SIGINT or SIGTERM; returns the engine's final counters.
pub fn run(options: &MonitorOptions) -> Result<Counters, RunError> {
    let policy = load(options.rules.as_deref()).map_err(RunError::Policy)?;
    let signals = Signals::new([SIGHUP, SIGINT, SIGTERM]).map_err(RunError::Signals)?;
    let socket = PacketSocket::open(&options.iface, options.capture).map_err(|source| {
        RunError::Capture {
            iface: options.iface.clone(),
            source,
        }
    })?;
    let source = format!("iface:{}", options.iface);
    let (sink, metrics_listener) = crate::observe::start(&options.observe, &source, socket.link())
        .map_err(RunError::Observe)?;

    let flags = Arc::new(Flags {
        notifier: Notifier::from_env(),
        ..Flags::default()
    });
    let reloads = Arc::new(Mutex::new((0u64, 0u64)));
    let (stats_tx, stats_rx) = mpsc::channel::<StatsRequest>();
    let metrics_thread = match metrics_listener {
        Some(listener) => Some(spawn_metrics(
            listener,
            MetricsSources {
                flags: flags.clone(),
                stats: stats_tx,
                sink: sink.as_ref().map(Sink::stats_handle),
                reloads: reloads.clone(),
                limits: (policy.limits.max_flows, policy.limits.max_pinholes),
                started: SystemTime::now(),
            },
        )?),
        None => None,
    };
    let signal_handle = signals.handle();
    let signal_thread = spawn_signals(signals, &flags)?;

    tracing::info!(
        target: crate::observe::LIFECYCLE,
        iface = options.iface,
        rules = %options.rules.as_ref().map_or_else(|| "(embedded default)".to_owned(), |p| p.display().to_string()),
        "pinhole monitoring (passive: traffic is not touched)"
    );
    flags.notifier.ready(&monitoring(&options.iface));
    let mut capture = Capture {
        engine: Engine::new(Arc::new(policy)),
        tap: Tap::new(sink.as_ref().map(Sink::handle), &source, socket.link()),
        socket,
        options,
        counters: CaptureCounters::default(),
        packets: 0,
        reloads: &reloads,
    };
    let result = capture.serve(&flags, sink.as_ref(), &stats_rx);
    // Hang up on the metrics endpoint: a render waiting for the capture loop's counters gets
    // none at once instead of waiting out its 3 s, so the metrics thread joins promptly.
    drop(stats_rx);
    let counters = capture.engine.counters().clone();
    flags.stop.store(true, Ordering::Relaxed);
    signal_handle.close();
    let _ = signal_thread.join();
    if let Some(thread) = metrics_thread {
        let _ = thread.join();
    }
    drop(capture);
    if let Some(sink) = sink {
        sink.send(Item::Summary {
            source: Arc::from(source.as_str()),
            at: SystemTime::now(),
            counters: Box::new(counters.clone()),
        });
        sink.finish();
    }
    result.map(|()| counters)
}

/// What the signal thread tells the capture loop, and how both tell systemd.
#[derive(Debug, Default)]
struct Flags {
    /// SIGINT or SIGTERM came.
    stop: AtomicBool,
    /// SIGHUP came: re-read the rules, reopen the event log.
    reload: AtomicBool,
    /// sd_notify, for both threads.
    notifier: Notifier,
}

fn spawn_signals(
    mut signals: Signals,
    flags: &Arc<Flags>,
) -> Result<thread::JoinHandle<()>, RunError> {
    let flags = flags.clone();
    thread::Builder::new()
        .name("pinhole-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    flags.reload.store(true, Ordering::Relaxed);
                } else {
                    tracing::info!(target: crate::observe::LIFECYCLE, signal, "stopping");
                    flags.notifier.stopping();
                    flags.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        })
        .map_err(RunError::Signals)
}

/// What the metrics endpoint reads.
struct MetricsSources {
    flags: Arc<Flags>,
    stats: Sender<StatsRequest>,
    sink: Option<Arc<crate::observe::SinkStats>>,
    reloads: Arc<Mutex<(u64, u64)>>,
    limits: (usize, usize),
    started: SystemTime,
}

impl MetricsSources {
    /// Asks the capture loop for its counters and renders the exposition.
    fn render(&self) -> String {
        let (tx, rx) = mpsc::channel();
        let answer = self
            .stats
            .send(tx)
            .ok()
            .and_then(|()| rx.recv_timeout(Duration::from_secs(3)).ok());
        let (stats, capture) = match answer {
            Some((stats, capture)) => (vec![stats], capture),
            None => (Vec::new(), CaptureCounters::default()),
        };
        let reloads = *self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        metrics::render(&MetricsInput {
            mode: "monitor",
            started: self.started,
            workers: 1,
            stats: &stats,
            limits: self.limits,
            kernel_queues: &[],
            capture: Some(capture),
            sink: self.sink.as_ref().map(|s| s.snapshot()),
            reloads,
        })
    }
}

fn spawn_metrics(
    listener: std::net::TcpListener,
    sources: MetricsSources,
) -> Result<thread::JoinHandle<()>, RunError> {
    thread::Builder::new()
        .name("pinhole-metrics".to_owned())
        .spawn(move || http::serve(&listener, &sources.flags.stop, &|| sources.render()))
        .map_err(RunError::Signals)
}

/// The status line systemd shows.
fn monitoring(iface: &str) -> String {
    format!("monitoring {iface}")
}

struct Capture<'a> {
    engine: Engine,
    tap: Tap,
    socket: PacketSocket,
    options: &'a MonitorOptions,
    counters: CaptureCounters,
    packets: u64,
    reloads: &'a Mutex<(u64, u64)>,
}

impl Capture<'_> {
    fn serve(
        &mut self,
        flags: &Flags,
        sink: Option<&Sink>,
        stats: &Receiver<StatsRequest>,
    ) -> Result<(), RunError> {
        let mut buf = vec![0u8; FRAME_BUFFER];
        while !flags.stop.load(Ordering::Relaxed) {
            if flags.reload.swap(false, Ordering::Relaxed) {
                flags.notifier.reloading();
                self.reload();
                if let Some(sink) = sink {
                    sink.reopen();
                }
                flags.notifier.ready(&monitoring(&self.options.iface));
            }
            self.read_statistics();
            while let Ok(reply) = stats.try_recv() {
                let stats = WorkerStats::of(0, &self.engine, QueueCounters::default());
                let _ = reply.send((stats, self.counters));
            }
            let now = monotonic_now();
            let wait = self
                .engine
                .next_timeout()
                .map_or(TICK, |deadline| deadline.saturating_since(now).min(TICK));
            let readable = self
                .socket
                .wait_readable(wait)
                .map_err(|source| RunError::Capture {
                    iface: self.options.iface.clone(),
                    source,
                })?;
            if readable {
                self.drain(&mut buf)?;
            }
            let now = monotonic_now();
            if self.engine.next_timeout().is_some_and(|t| t <= now) {
                let expired = self.engine.expire(now);
                self.tap.expired(self.packets, &expired);
            }
        }
        self.read_statistics();
        Ok(())
    }

    fn drain(&mut self, buf: &mut [u8]) -> Result<(), RunError> {
        for _ in 0..BATCH {
            let frame = match self.socket.recv(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(source) => {
                    return Err(RunError::Capture {
                        iface: self.options.iface.clone(),
                        source,
                    });
                }
            };
            if link::ip_bytes(self.socket.link(), frame.data) == Err(Reason::NotIp) {
                // ARP, LLDP, STP...: never forwarded as IP, so never queued to an inline
                // pinhole either. Counted, not judged.
                self.counters.not_ip += 1;
                continue;
            }
            let mut info = PacketInfo::new(self.packets, self.socket.link());
            info.verify_checksums = self.options.verify_checksums;
            if frame.len > frame.data.len() {
                tracing::debug!(
                    len = frame.len,
                    kept = frame.data.len(),
                    "frame cut to the capture buffer"
                );
            }
            let decision = self.engine.process(monotonic_now(), &info, frame.data);
            self.tap.decision(self.packets, frame.data, &decision);
            self.packets += 1;
        }
        Ok(())
    }

    fn reload(&mut self) {
        let mut reloads = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = self.options.rules.as_deref() else {
            tracing::info!(
                target: crate::observe::LIFECYCLE,
                "SIGHUP: no rules file to re-read (embedded default policy)"
            );
            return;
        };
        match load(Some(path)) {
            Ok(policy) => {
                let events = self.engine.set_policy(Arc::new(policy));
                self.tap.events(self.packets, &events, SystemTime::now());
                reloads.0 += 1;
                tracing::info!(target: crate::observe::LIFECYCLE, file = %path.display(), "rules reloaded");
            }
            Err(errors) => {
                reloads.1 += 1;
                tracing::error!(
                    file = %path.display(),
                    "rules reload failed; the old policy stays in force:\n{errors}"
                );
            }
        }
    }

    fn read_statistics(&mut self) {
        if let Ok((packets, drops)) = self.socket.statistics() {
            self.counters.kernel_packets += packets;
            self.counters.kernel_drops += drops;
            if drops > 0 {
                tracing::warn!(
                    iface = self.options.iface,
                    drops,
                    "the kernel dropped captured frames: the monitor falls behind (raise --rcvbuf)"
                );
            }
        }
    }
}

/// Writes the final counters for people (standard error at the end of `pinhole monitor`).
pub fn write_summary(
    out: &mut dyn std::io::Write,
    source: &str,
    counters: &Counters,
) -> std::io::Result<()> {
    RecordWriter::new(out, Format::Text).write(&Record::summary(source, counters, false))
}
