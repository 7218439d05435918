//! `pinhole monitor`: the engine on a live interface, passively. Frames come from `AF_PACKET`
//! sockets ([`crate::io::packet`]), through a memory-mapped `TPACKET_V3` ring
//! ([`crate::io::packet_ring`]) or, where it cannot be had, one `recvmsg` per frame; every
//! frame is judged as the inline firewall would, and what it would have dropped goes to the
//! event log, the drop capture and the metrics. Nothing is ever sent back: the traffic is not
//! touched.
//!
//! Threads: one worker per `--workers` (its own socket, ring and engine), the signal thread
//! (SIGHUP re-reads the rules, which every worker then takes, and reopens the event log;
//! SIGINT/SIGTERM stop), the metrics endpoint if asked for (it asks every worker for its
//! counters and sums them, as `pinhole run` does), and the event writer. With more than one
//! worker the sockets form a `PACKET_FANOUT_CBPF` group whose program
//! ([`crate::io::fanout`]) sends both directions of an address pair to the same worker, so an
//! FTP session's control and data connections, and a TFTP request and its transfer, meet on
//! one engine. At a clean stop the last event-log record is the run's `summary`, all workers
//! summed, with the capture counters.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::counters::Counters;
use crate::decision::Reason;
use crate::engine::{Engine, PacketInfo};
use crate::io::fanout;
use crate::io::packet::{CaptureConfig, Frame, PacketSocket, Reader};
use crate::observe::metrics::{self, CaptureCounters, MetricsInput};
use crate::observe::sink::Item;
use crate::observe::{LIFECYCLE, ObserveOptions, Sink, Tap, http};
use crate::output::{Format, Record, RecordWriter};
use crate::policy::Policy;
use crate::time::Instant;
use crate::wire::{LinkType, link};

use super::notify::Notifier;
use super::snapshot::{QueueCounters, WorkerStats};
use super::{RunError, monotonic_now};

/// Longest wait between two looks at the stop flag, reloads and metrics requests.
const TICK: Duration = Duration::from_millis(100);
/// Most frames read through `recvmsg` in one turn, before the timers and requests get theirs.
const BATCH: usize = 256;
/// Most ring blocks read in one turn.
const BLOCKS: usize = 8;
/// How often a worker reads its socket's kernel counters.
const STATS_EVERY: Duration = Duration::from_millis(100);
/// Most workers (threads with an engine each).
pub const MAX_WORKERS: usize = fanout::MAX_WORKERS as usize;

/// Everything `pinhole monitor` was asked to do.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// The interface to watch.
    pub iface: String,
    /// The rules file; `None`: the embedded default policy.
    pub rules: Option<PathBuf>,
    /// Socket settings (each worker's socket gets them: the ring size is per worker).
    pub capture: CaptureConfig,
    /// Workers, 1 to [`MAX_WORKERS`]: sockets in one fanout group, a thread and an engine each.
    pub workers: usize,
    /// Verify TCP/UDP checksums.
    pub verify_checksums: bool,
    /// Event log, drop capture, metrics.
    pub observe: ObserveOptions,
}

/// What a monitor run leaves: the engines' counters and the capture sockets', per worker.
#[derive(Clone, Debug, Default)]
pub struct MonitorSummary {
    /// Every worker's engine counters, summed.
    pub counters: Counters,
    /// Each worker's capture counters, in worker order.
    pub capture: Vec<CaptureCounters>,
}

impl MonitorSummary {
    /// The capture counters of all workers.
    pub fn capture_total(&self) -> CaptureCounters {
        CaptureCounters::sum(&self.capture)
    }
}

/// A question from the metrics endpoint to a worker.
type StatsRequest = Sender<(WorkerStats, CaptureCounters)>;

fn load(rules: Option<&Path>) -> Result<Policy, String> {
    match rules {
        None => Ok(Policy::embedded_default()),
        Some(path) => Policy::from_file(path).map_err(|errors| errors.to_string()),
    }
}

/// What the threads share.
#[derive(Debug)]
struct Shared {
    /// SIGINT or SIGTERM came, or a worker failed.
    stop: AtomicBool,
    /// The policy in force and its generation (bumped by every reload).
    policy: Mutex<(Arc<Policy>, u64)>,
    /// The generation, readable without the lock (workers look every turn).
    generation: AtomicU64,
    /// Successful and failed reloads.
    reloads: Mutex<(u64, u64)>,
    /// sd_notify.
    notifier: Notifier,
    /// Set to have the event writer reopen the event log.
    reopen: Option<Arc<AtomicBool>>,
    iface: String,
    rules: Option<PathBuf>,
}

impl Shared {
    fn policy(&self) -> (Arc<Policy>, u64) {
        let guard = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        (guard.0.clone(), guard.1)
    }

    /// SIGHUP: re-reads the rules file (workers take the new policy at their next turn) and
    /// has the event log reopened.
    fn reload(&self) {
        if let Some(reopen) = &self.reopen {
            reopen.store(true, Ordering::Relaxed);
        }
        let Some(path) = self.rules.as_deref() else {
            tracing::info!(
                target: LIFECYCLE,
                "SIGHUP: no rules file to re-read (embedded default policy)"
            );
            return;
        };
        let mut reloads = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        match load(Some(path)) {
            Ok(policy) => {
                let mut guard = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
                guard.0 = Arc::new(policy);
                guard.1 += 1;
                self.generation.store(guard.1, Ordering::Release);
                reloads.0 += 1;
                tracing::info!(target: LIFECYCLE, file = %path.display(), "rules reloaded");
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
}

/// Opens the workers' sockets: one, or `workers` in a new fanout group.
fn open_sockets(options: &MonitorOptions) -> Result<(Vec<PacketSocket>, Option<u16>), RunError> {
    let failed = |source: std::io::Error| RunError::Capture {
        iface: options.iface.clone(),
        source,
    };
    let workers = options.workers.clamp(1, MAX_WORKERS);
    let mut sockets = Vec::with_capacity(workers);
    let mut group = None;
    for i in 0..workers {
        let socket = PacketSocket::open(&options.iface, options.capture).map_err(failed)?;
        if workers > 1 {
            if i == 0 {
                let program = fanout::symmetric_program(workers as u32);
                let id = socket.create_fanout(&program).map_err(|err| {
                    failed(std::io::Error::new(
                        err.kind(),
                        format!(
                            "creating the fanout group of {workers} workers: {err} (a kernel without PACKET_FANOUT_CBPF, before 4.2? run with --workers 1)"
                        ),
                    ))
                })?;
                group = Some(id);
            } else if let Some(id) = group {
                socket.join_fanout(id).map_err(|err| {
                    failed(std::io::Error::new(
                        err.kind(),
                        format!("joining fanout group {id}: {err}"),
                    ))
                })?;
            }
        }
        sockets.push(socket);
    }
    Ok((sockets, group))
}

/// Says how the capture reads: the ring (info), or `recvmsg` because it was asked for (info)
/// or because the ring could not be set up (a warning with the reason).
fn log_reader(options: &MonitorOptions, sockets: &[PacketSocket], group: Option<u16>) {
    let workers = sockets.len();
    let group = group.map_or_else(|| "none".to_owned(), |g| g.to_string());
    for (worker, socket) in sockets.iter().enumerate() {
        match socket.reader() {
            Reader::Ring(ring) => {
                if worker == 0 {
                    let c = ring.config();
                    tracing::info!(
                        target: LIFECYCLE,
                        iface = options.iface,
                        workers,
                        fanout_group = group,
                        ring_mib = c.bytes() >> 20,
                        blocks = c.blocks,
                        block_kib = c.block_size >> 10,
                        retire_ms = c.retire_ms,
                        "capture: TPACKET_V3 ring per worker"
                    );
                }
            }
            Reader::Recvmsg { why: None } => {
                if worker == 0 {
                    tracing::info!(
                        target: LIFECYCLE,
                        iface = options.iface,
                        workers,
                        fanout_group = group,
                        "capture: recvmsg, one frame per call (--no-ring)"
                    );
                }
            }
            Reader::Recvmsg { why: Some(why) } => tracing::warn!(
                iface = options.iface,
                worker,
                "capture: the TPACKET_V3 ring could not be set up ({why}); this worker reads one frame per recvmsg instead (slower; --ring-mib sets the ring's size)"
            ),
        }
    }
}

/// Runs the monitor until SIGINT or SIGTERM; returns the final counters.
pub fn run(options: &MonitorOptions) -> Result<MonitorSummary, RunError> {
    let policy = load(options.rules.as_deref()).map_err(RunError::Policy)?;
    let signals = Signals::new([SIGHUP, SIGINT, SIGTERM]).map_err(RunError::Signals)?;
    let (sockets, group) = open_sockets(options)?;
    let link = sockets
        .first()
        .map_or(LinkType::Ethernet, PacketSocket::link);
    let source = format!("iface:{}", options.iface);
    let (sink, metrics_listener) =
        crate::observe::start(&options.observe, &source, link).map_err(RunError::Observe)?;
    log_reader(options, &sockets, group);

    let limits = (policy.limits.max_flows, policy.limits.max_pinholes);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        policy: Mutex::new((Arc::new(policy), 0)),
        generation: AtomicU64::new(0),
        reloads: Mutex::new((0, 0)),
        notifier: Notifier::from_env(),
        reopen: sink.as_ref().map(Sink::reopen_handle),
        iface: options.iface.clone(),
        rules: options.rules.clone(),
    });
    let workers = sockets.len();
    let (handles, queries) = spawn_workers(sockets, &shared, sink.as_ref(), &source, options)?;
    let metrics_thread = metrics_listener
        .map(|listener| {
            spawn_metrics(
                listener,
                MetricsSources {
                    shared: shared.clone(),
                    workers: queries,
                    sink: sink.as_ref().map(Sink::stats_handle),
                    limits,
                    started: SystemTime::now(),
                },
            )
        })
        .transpose()?;
    let signal_handle = signals.handle();
    let signal_thread = spawn_signals(signals, &shared)?;

    tracing::info!(
        target: LIFECYCLE,
        iface = options.iface,
        workers,
        rules = %options.rules.as_ref().map_or_else(|| "(embedded default)".to_owned(), |p| p.display().to_string()),
        "pinhole monitoring (passive: traffic is not touched)"
    );
    shared.notifier.ready(&monitoring(&options.iface));

    let (summary, result) = join_workers(handles);
    shared.stop.store(true, Ordering::Relaxed);
    signal_handle.close();
    let _ = signal_thread.join();
    if let Some(thread) = metrics_thread {
        let _ = thread.join();
    }
    log_capture(&options.iface, &summary);
    if let Some(sink) = sink {
        sink.send(Item::Summary {
            source: Arc::from(source.as_str()),
            at: SystemTime::now(),
            counters: Box::new(summary.counters.clone()),
            capture: Some(summary.capture_total()),
        });
        sink.finish();
    }
    result.map(|()| summary)
}

/// A worker's thread.
type WorkerThread = thread::JoinHandle<WorkerOutcome>;

/// Starts a thread per socket; returns them with the senders that ask each for its counters.
fn spawn_workers(
    sockets: Vec<PacketSocket>,
    shared: &Arc<Shared>,
    sink: Option<&Sink>,
    source: &str,
    options: &MonitorOptions,
) -> Result<(Vec<WorkerThread>, Vec<Sender<StatsRequest>>), RunError> {
    let workers = sockets.len();
    let mut handles = Vec::with_capacity(workers);
    let mut queries = Vec::with_capacity(workers);
    for (index, socket) in sockets.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<StatsRequest>();
        queries.push(tx);
        let tap = Tap::new(sink.map(Sink::handle), source, socket.link());
        let worker = Worker::new(
            index,
            workers,
            socket,
            tap,
            shared,
            options.verify_checksums,
        );
        let for_thread = shared.clone();
        let handle = thread::Builder::new()
            .name(format!("pinhole-mon{index}"))
            .spawn(move || worker.run(&for_thread, &rx))
            .map_err(|err| {
                // The workers already started must not wait for a stop that never comes.
                shared.stop.store(true, Ordering::Relaxed);
                RunError::Signals(err)
            })?;
        handles.push(handle);
    }
    Ok((handles, queries))
}

/// Waits for every worker; sums their counters; the first error, if any.
fn join_workers(handles: Vec<WorkerThread>) -> (MonitorSummary, Result<(), RunError>) {
    let mut summary = MonitorSummary::default();
    let mut result = Ok(());
    for (index, handle) in handles.into_iter().enumerate() {
        let Ok(outcome) = handle.join() else {
            tracing::error!(
                worker = index,
                "a monitor worker panicked; its counters are lost"
            );
            summary.capture.push(CaptureCounters::default());
            continue;
        };
        summary.counters.add(&outcome.counters);
        summary.capture.push(outcome.capture);
        if let Err(err) = outcome.result
            && result.is_ok()
        {
            result = Err(err);
        }
    }
    (summary, result)
}

/// The capture's counters at the stop, per worker and in all, in the log.
fn log_capture(iface: &str, summary: &MonitorSummary) {
    let total = summary.capture_total();
    for (worker, c) in summary.capture.iter().enumerate() {
        tracing::info!(
            target: LIFECYCLE,
            iface,
            worker,
            kernel_packets = c.kernel_packets,
            kernel_drops = c.kernel_drops,
            ring_freezes = c.ring_freezes,
            not_ip = c.not_ip,
            "capture counters"
        );
    }
    if total.kernel_drops > 0 || total.ring_freezes > 0 {
        tracing::warn!(
            iface,
            kernel_drops = total.kernel_drops,
            ring_freezes = total.ring_freezes,
            kernel_packets = total.kernel_packets,
            "the kernel dropped captured frames during this run: the monitor fell behind (raise --ring-mib, add --workers)"
        );
    }
}

fn spawn_signals(
    mut signals: Signals,
    shared: &Arc<Shared>,
) -> Result<thread::JoinHandle<()>, RunError> {
    let shared = shared.clone();
    thread::Builder::new()
        .name("pinhole-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    shared.notifier.reloading();
                    shared.reload();
                    shared.notifier.ready(&monitoring(&shared.iface));
                } else {
                    tracing::info!(target: LIFECYCLE, signal, "stopping");
                    shared.notifier.stopping();
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        })
        .map_err(RunError::Signals)
}

/// What the metrics endpoint reads.
struct MetricsSources {
    shared: Arc<Shared>,
    workers: Vec<Sender<StatsRequest>>,
    sink: Option<Arc<crate::observe::SinkStats>>,
    limits: (usize, usize),
    started: SystemTime,
}

impl MetricsSources {
    /// Asks every worker for its counters (all questions first, then the answers: one slow
    /// worker costs one wait, not one per worker) and renders the exposition.
    fn render(&self) -> String {
        let pending: Vec<_> = self
            .workers
            .iter()
            .map(|worker| {
                let (tx, rx) = mpsc::channel();
                worker.send(tx).ok().map(|()| rx)
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut stats = Vec::with_capacity(pending.len());
        let mut capture = Vec::with_capacity(pending.len());
        for (index, rx) in pending.into_iter().enumerate() {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            if let Some((s, c)) = rx.and_then(|rx| rx.recv_timeout(wait).ok()) {
                stats.push(s);
                capture.push(c);
            } else {
                // A worker that does not answer: its capture series read 0 this time.
                tracing::debug!(worker = index, "no answer for the metrics");
                capture.push(CaptureCounters::default());
            }
        }
        let reloads = *self
            .shared
            .reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        metrics::render(&MetricsInput {
            mode: "monitor",
            started: self.started,
            workers: self.workers.len(),
            stats: &stats,
            limits: self.limits,
            kernel_queues: &[],
            capture: Some(&capture),
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
        .spawn(move || http::serve(&listener, &sources.shared.stop, &|| sources.render()))
        .map_err(RunError::Signals)
}

/// The status line systemd shows.
fn monitoring(iface: &str) -> String {
    format!("monitoring {iface}")
}

/// What a worker thread returns.
struct WorkerOutcome {
    counters: Counters,
    capture: CaptureCounters,
    result: Result<(), RunError>,
}

/// One worker: a socket, an engine, a thread.
struct Worker {
    index: usize,
    socket: PacketSocket,
    judge: Judge,
    capture: CaptureCounters,
    policy_generation: u64,
    stats_read: std::time::Instant,
    /// When the last drop warning was logged, and the drops since.
    warned: Option<std::time::Instant>,
    unwarned_drops: u64,
}

/// The engine and what judging a frame needs (apart from the socket, which lends the frames).
struct Judge {
    engine: Engine,
    tap: Tap,
    link: LinkType,
    verify_checksums: bool,
    /// The id of the next frame judged: worker `w` of `n` numbers its frames `w`, `w + n`,
    /// `w + 2n`..., so ids stay unique across workers.
    next_id: u64,
    stride: u64,
    /// The id of the last frame judged (events of timers are reported with it).
    last_id: u64,
    not_ip: u64,
}

impl Judge {
    fn frame(&mut self, now: Instant, frame: &Frame<'_>) {
        if link::ip_bytes(self.link, frame.data) == Err(Reason::NotIp) {
            // ARP, LLDP, STP...: never forwarded as IP, so never queued to an inline
            // pinhole either. Counted, not judged.
            self.not_ip += 1;
            return;
        }
        let id = self.next_id;
        self.next_id += self.stride;
        self.last_id = id;
        let mut info = PacketInfo::new(id, self.link);
        info.verify_checksums = self.verify_checksums && !frame.checksum_not_ready;
        if frame.len > frame.data.len() {
            tracing::debug!(
                len = frame.len,
                kept = frame.data.len(),
                "frame cut to the capture buffer"
            );
        }
        let decision = self.engine.process(now, &info, frame.data);
        self.tap.decision(id, frame.data, &decision);
    }
}

impl Worker {
    fn new(
        index: usize,
        workers: usize,
        socket: PacketSocket,
        tap: Tap,
        shared: &Shared,
        verify_checksums: bool,
    ) -> Worker {
        let (policy, generation) = shared.policy();
        let link = socket.link();
        Worker {
            index,
            socket,
            judge: Judge {
                engine: Engine::new(policy),
                tap,
                link,
                verify_checksums,
                next_id: index as u64,
                stride: workers.max(1) as u64,
                last_id: index as u64,
                not_ip: 0,
            },
            capture: CaptureCounters::default(),
            policy_generation: generation,
            stats_read: std::time::Instant::now(),
            warned: None,
            unwarned_drops: 0,
        }
    }

    fn run(mut self, shared: &Shared, queries: &Receiver<StatsRequest>) -> WorkerOutcome {
        let result = self.serve(shared, queries);
        if let Err(err) = &result {
            tracing::error!(worker = self.index, %err, "monitor worker failed; stopping");
            shared.stop.store(true, Ordering::Relaxed);
        }
        self.read_statistics(shared);
        self.capture.not_ip = self.judge.not_ip;
        WorkerOutcome {
            counters: self.judge.engine.counters().clone(),
            capture: self.capture,
            result,
        }
    }

    fn serve(&mut self, shared: &Shared, queries: &Receiver<StatsRequest>) -> Result<(), RunError> {
        while !shared.stop.load(Ordering::Relaxed) {
            self.follow_policy(shared);
            if self.stats_read.elapsed() >= STATS_EVERY {
                self.read_statistics(shared);
            }
            while let Ok(reply) = queries.try_recv() {
                let stats = WorkerStats::of(
                    u16::try_from(self.index).unwrap_or(u16::MAX),
                    &self.judge.engine,
                    QueueCounters::default(),
                );
                let capture = CaptureCounters {
                    not_ip: self.judge.not_ip,
                    ..self.capture
                };
                let _ = reply.send((stats, capture));
            }
            let now = monotonic_now();
            let wait = self
                .judge
                .engine
                .next_timeout()
                .map_or(TICK, |deadline| deadline.saturating_since(now).min(TICK));
            let readable = self
                .socket
                .wait_readable(wait)
                .map_err(|source| RunError::Capture {
                    iface: shared.iface.clone(),
                    source,
                })?;
            if readable {
                self.drain(shared)?;
            }
            let now = monotonic_now();
            if self.judge.engine.next_timeout().is_some_and(|t| t <= now) {
                let expired = self.judge.engine.expire(now);
                self.judge.tap.expired(self.judge.last_id, &expired);
            }
        }
        Ok(())
    }

    /// Judges what is waiting: up to [`BLOCKS`] ring blocks (one clock reading each), or
    /// [`BATCH`] frames through `recvmsg`.
    fn drain(&mut self, shared: &Shared) -> Result<(), RunError> {
        let turns = match self.socket.reader() {
            Reader::Ring(_) => BLOCKS,
            Reader::Recvmsg { .. } => 1,
        };
        for _ in 0..turns {
            let now = monotonic_now();
            let judge = &mut self.judge;
            let n = self
                .socket
                .read(1, BATCH, |frame| judge.frame(now, &frame))
                .map_err(|source| RunError::Capture {
                    iface: shared.iface.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Takes a new policy after a reload.
    fn follow_policy(&mut self, shared: &Shared) {
        if shared.generation.load(Ordering::Acquire) == self.policy_generation {
            return;
        }
        let (policy, generation) = shared.policy();
        self.policy_generation = generation;
        let events = self.judge.engine.set_policy(policy);
        self.judge
            .tap
            .events(self.judge.last_id, &events, SystemTime::now());
    }

    /// Adds the kernel's counts since the last reading; warns about drops at most once a
    /// second per worker (with the drops since the last warning).
    fn read_statistics(&mut self, shared: &Shared) {
        self.stats_read = std::time::Instant::now();
        let Ok(stats) = self.socket.statistics() else {
            return;
        };
        self.capture.kernel_packets += stats.packets;
        self.capture.kernel_drops += stats.drops;
        self.capture.ring_freezes += stats.freezes;
        self.unwarned_drops += stats.drops;
        if self.unwarned_drops > 0
            && self
                .warned
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                iface = shared.iface,
                worker = self.index,
                drops = self.unwarned_drops,
                ring_freezes = self.capture.ring_freezes,
                "the kernel dropped captured frames: the monitor falls behind (raise --ring-mib, add --workers)"
            );
            self.warned = Some(std::time::Instant::now());
            self.unwarned_drops = 0;
        }
    }
}

/// Writes the final counters for people (standard error at the end of `pinhole monitor`):
/// the summary, then the capture's counters.
pub fn write_summary(
    out: &mut dyn std::io::Write,
    source: &str,
    summary: &MonitorSummary,
) -> std::io::Result<()> {
    RecordWriter::new(out, Format::Text).write(&Record::summary(
        source,
        &summary.counters,
        false,
    ))?;
    let c = summary.capture_total();
    writeln!(
        out,
        "capture: {} workers, kernel packets {}, kernel drops {}, ring freezes {}, not IP {}",
        summary.capture.len(),
        c.kernel_packets,
        c.kernel_drops,
        c.ring_freezes,
        c.not_ip
    )
}
