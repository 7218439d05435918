//! `pinhole run`: the inline firewall on NFQUEUE.
//!
//! Threads: one [`worker`] per queue (each with its own engine; `--queue-balance` hashes both
//! directions of an address pair to the same queue, so an FTP control connection and its data
//! connections meet on one worker), one for the [`control`] socket, and the main thread,
//! which waits for signals: SIGHUP reloads the rules file, SIGINT and SIGTERM stop.
//!
//! Start: policy, then queues and the control socket, then kernel rules (`--install-rules`); a
//! failure at any step undoes the earlier ones. Stop: workers unbind their queues, the rules
//! come out, the control socket is removed.

pub mod control;
pub mod ifnames;
pub mod kernel_ct;
pub mod monitor;
pub mod notify;
pub mod overflow_log;
pub mod snapshot;
pub mod state_file;
pub mod transfer_bytes;
pub mod worker;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::engine::EngineState;
use crate::io::iptables::{Flavour, Installer, Mode, OffloadEnds, RulesConfig};
use crate::io::nfqueue::{QueueConfig, QueueSocket};
use crate::observe::metrics::{self, MetricsInput};
use crate::observe::{LIFECYCLE, ObserveOptions, Sink, SinkStats, http};
use crate::policy::{KernelHelpers, Policy};
use crate::time::Instant;
use crate::wire::LinkType;

use self::notify::Notifier;
use self::state_file::{StateFile, WorkerState};
use self::worker::{Query, VerdictMarks, Worker};

/// Everything `pinhole run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The rules file (re-read on SIGHUP).
    pub rules: PathBuf,
    /// Queues (one worker each), mode, fail-open and marks: what the kernel rules say.
    pub kernel: RulesConfig,
    /// Install the kernel rules at start, remove them at exit.
    pub install_rules: bool,
    /// Attach the kernel's FTP/TFTP helpers to the inspected ports (`kernel.helpers` is filled
    /// from the policy at start) and read the kernel's connection tracking for their packets.
    pub kernel_helpers: bool,
    /// Which iptables installs them.
    pub flavour: Flavour,
    /// Enforce the rules without inspectors.
    pub no_inspect: bool,
    /// The control socket's path.
    pub control: PathBuf,
    /// Socket and queue settings (its `fail_open` follows `kernel.fail_open`).
    pub queue: QueueConfig,
    /// Where flows and pinholes are saved at stop and by `pinhole snapshot`.
    pub state_file: PathBuf,
    /// Load the state file at start.
    pub restore: bool,
    /// Event log, drop capture, metrics endpoint.
    pub observe: ObserveOptions,
}

/// Outcome of the last reloads, for `pinhole status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    /// Successful reloads.
    pub reloads: u64,
    /// Reloads refused because the file was invalid (the old policy stayed).
    pub reload_failures: u64,
    /// The errors of the last refused reload, until the next successful one.
    pub last_reload_error: Option<String>,
}

/// State the threads share.
pub struct Shared {
    /// Set to stop every thread.
    pub stop: AtomicBool,
    policy: Mutex<(Arc<Policy>, u64)>,
    /// The policy's generation, readable without the lock (workers check it every loop).
    generation: AtomicU64,
    reload: Mutex<ReloadStatus>,
    started: std::time::Instant,
    started_wall: std::time::SystemTime,
    options: RunOptions,
    workers: Vec<(u16, Sender<Query>)>,
    sink: Option<Arc<SinkStats>>,
    /// Set to have the event writer reopen the event log (SIGHUP, `pinhole reload`).
    reopen: Option<Arc<AtomicBool>>,
    /// sd_notify: ready, reloading, stopping.
    notifier: Notifier,
    /// The kernel helpers attached now (the policy's inspected ports), when pinhole attaches
    /// them; a reload that changes the ports re-attaches them.
    helpers: Mutex<KernelHelpers>,
}

impl Shared {
    /// The policy in force and its generation (bumped by every reload).
    pub fn policy(&self) -> (Arc<Policy>, u64) {
        let guard = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        (guard.0.clone(), guard.1)
    }

    /// The policy's generation, without taking the lock.
    pub fn policy_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The engines' clock: the system's monotonic clock (time since boot, not counting
    /// suspend), so deadlines in a state file mean the same to the next daemon of this boot.
    pub fn now(&self) -> Instant {
        monotonic_now()
    }

    /// The event writer's counters, when it runs.
    pub fn sink_stats(&self) -> Option<crate::observe::sink::SinkCounters> {
        self.sink.as_ref().map(|s| s.snapshot())
    }

    /// The Prometheus exposition of every worker's counters, the kernel's queue statistics,
    /// the event writer's counters and the reloads.
    pub fn metrics(&self) -> String {
        let stats = control::ask(self, Query::Stats);
        let (policy, _) = self.policy();
        let reload = self.reload_status();
        let kernel = crate::io::nfqueue::kernel_queue_stats(&self.options.kernel.queues);
        metrics::render(&MetricsInput {
            mode: self.options.kernel.mode.as_str(),
            started: self.started_wall,
            workers: self.workers.len(),
            stats: &stats,
            limits: (policy.limits.max_flows, policy.limits.max_pinholes),
            kernel_queues: &kernel,
            capture: None,
            sink: self.sink_stats(),
            reloads: (reload.reloads, reload.reload_failures),
        })
    }

    /// One line for `systemctl status`: what runs, and the last reload's outcome.
    pub fn status_line(&self) -> String {
        let reload = self.reload_status();
        let queues = &self.options.kernel.queues;
        let mut line = format!(
            "inspecting queues {}-{} ({}), rules {}",
            queues.start(),
            queues.end(),
            self.options.kernel.mode.as_str(),
            self.options.rules.display()
        );
        if reload.last_reload_error.is_some() {
            line.push_str("; the last reload failed, the previous rules stay in force");
        }
        line
    }

    /// The reload outcomes so far.
    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the rules file and returns how many rules it has. An invalid file keeps the
    /// old policy; its errors (file, line, fix) are logged, kept for `pinhole status` and
    /// returned.
    pub fn reload(&self) -> Result<usize, String> {
        let path = &self.options.rules;
        let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
        match load_policy(path, self.options.no_inspect) {
            Ok(policy) => {
                let rules = policy.rules.len();
                // The helpers first, so a worker that sees the new generation reads the ports
                // attached for it.
                self.follow_helpers(&policy);
                let mut guard = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
                guard.0 = Arc::new(policy);
                guard.1 += 1;
                self.generation.store(guard.1, Ordering::Release);
                status.reloads += 1;
                status.last_reload_error = None;
                tracing::info!(target: LIFECYCLE, file = %path.display(), rules, "rules reloaded");
                Ok(rules)
            }
            Err(errors) => {
                status.reload_failures += 1;
                status.last_reload_error = Some(errors.clone());
                tracing::error!(
                    file = %path.display(),
                    "rules reload failed; the old policy stays in force:\n{errors}"
                );
                Err(errors)
            }
        }
    }

    /// The kernel helpers attached now, by port: the packets whose conntrack entries workers
    /// read.
    pub fn attached_helpers(&self) -> KernelHelpers {
        self.helpers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// On a reload to `policy`: when pinhole installed the kernel rules and the inspected
    /// ports changed, the helper chain is rewritten to the new ports (its jump and the PINHOLE
    /// chain stay).
    fn follow_helpers(&self, policy: &Policy) {
        if !self.options.install_rules || !self.options.kernel_helpers {
            return;
        }
        let wanted = KernelHelpers::for_router(policy, self.options.kernel.ha.is_some());
        let mut attached = self.helpers.lock().unwrap_or_else(PoisonError::into_inner);
        if *attached == wanted {
            return;
        }
        match Installer::new(self.options.flavour).replace_helpers(&wanted) {
            Ok(()) => {
                tracing::info!(
                    target: LIFECYCLE,
                    ftp = ?wanted.ftp,
                    tftp = ?wanted.tftp,
                    "kernel helpers re-attached to the inspected ports"
                );
                *attached = wanted;
            }
            Err(err) => tracing::error!(
                %err,
                "the kernel helpers could not follow the new rules' ports; the old ones stay attached"
            ),
        }
    }

    /// What SIGHUP does: re-reads the rules ([`Shared::reload`]) and has the event log
    /// reopened (after logrotate moved it).
    pub fn reload_and_reopen(&self) -> Result<usize, String> {
        let result = self.reload();
        if let Some(reopen) = &self.reopen {
            reopen.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// The thread of one worker: it returns the engine's state for the state file with its outcome.
type WorkerThread = thread::JoinHandle<(WorkerState, Result<(), RunError>)>;

fn spawn_worker(
    worker: Worker,
    queries: mpsc::Receiver<Query>,
    shared: &Arc<Shared>,
) -> Result<WorkerThread, RunError> {
    let queue = worker.queue();
    let shared = shared.clone();
    thread::Builder::new()
        .name(format!("pinhole-q{queue}"))
        .spawn(move || {
            let _stop_on_exit = StopOnExit(shared.clone());
            let (result, state) = worker.run(&shared, &queries);
            if let Err(err) = &result {
                tracing::error!(queue, %err, "worker failed; stopping");
                shared.stop.store(true, Ordering::Relaxed);
            }
            (
                WorkerState {
                    queue,
                    engine: state,
                },
                result.map_err(|source| RunError::Worker { queue, source }),
            )
        })
        .map_err(RunError::Signals)
}

/// Gives a worker its part of the state file, logging what was restored.
fn restore_worker(worker: &mut Worker, file: &mut StateFile, queues: &[u16], shared: &Shared) {
    let queue = worker.queue();
    for state in states_for(file, queue, queues) {
        let summary = worker.restore(state, shared.now());
        tracing::info!(
            target: LIFECYCLE,
            queue,
            flows = summary.flows,
            pinholes = summary.pinholes,
            duplicate_flows = summary.duplicate_flows,
            over_capacity = summary.over_capacity,
            dropped_pinholes = summary.dropped_pinholes,
            "state restored"
        );
    }
}

/// Reads the state file for `--restore`. A file that cannot be used is refused with the
/// reason in the log, and the daemon starts empty; a used file is removed, so that a later
/// crash does not bring back stale state.
fn load_state(path: &std::path::Path) -> Option<StateFile> {
    if !path.exists() {
        // The first start, or one after a stop that could not save: nothing to restore.
        tracing::info!(target: LIFECYCLE, file = %path.display(), "no state file to restore; starting empty");
        return None;
    }
    match StateFile::read(path) {
        Ok(file) => {
            tracing::info!(
                target: LIFECYCLE,
                file = %path.display(),
                flows = file.flows(),
                pinholes = file.pinholes(),
                written_by = file.pinhole,
                "restoring state"
            );
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), %err, "could not remove the state file after reading it");
            }
            Some(file)
        }
        Err(err) => {
            tracing::error!("state not restored, starting empty: {err}");
            None
        }
    }
}

/// The saved engine states a worker of `queue` takes. With the same queues as when saved,
/// each worker takes its own queue's state: the kernel's `--queue-balance` hash is the same
/// within a boot, so each address pair comes back to the same queue. With other queues, every
/// worker takes every state: the copies on workers the kernel does not send a flow to are
/// never used and leave at their timeouts.
fn states_for(file: &mut StateFile, queue: u16, queues: &[u16]) -> Vec<EngineState> {
    let mut saved: Vec<u16> = file.workers.iter().map(|w| w.queue).collect();
    saved.sort_unstable();
    let mut current = queues.to_vec();
    current.sort_unstable();
    if saved == current {
        file.workers
            .iter_mut()
            .filter(|w| w.queue == queue)
            .map(|w| std::mem::take(&mut w.engine))
            .collect()
    } else {
        file.workers.iter().map(|w| w.engine.clone()).collect()
    }
}

/// Writes the workers' states to the state file (at stop), logging the outcome.
fn save_state(path: &std::path::Path, workers: Vec<WorkerState>) {
    let file = StateFile::new(workers);
    match file.write(path) {
        Ok(bytes) => tracing::info!(
            target: LIFECYCLE,
            file = %path.display(),
            flows = file.flows(),
            pinholes = file.pinholes(),
            bytes,
            "state saved"
        ),
        Err(err) => tracing::error!(file = %path.display(), %err, "could not save the state"),
    }
}

/// The system's monotonic clock as an engine instant.
pub fn monotonic_now() -> Instant {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            Instant::from_nanos(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
        }
        // CLOCK_MONOTONIC cannot fail on Linux; an engine clock stuck at zero would only
        // delay timers until the next reading.
        Err(_) => Instant::ZERO,
    }
}

/// Reads the rules file, without inspectors when asked.
pub fn load_policy(path: &std::path::Path, no_inspect: bool) -> Result<Policy, String> {
    let policy = Policy::from_file(path).map_err(|errors| errors.to_string())?;
    Ok(if no_inspect {
        policy.without_inspection()
    } else {
        policy
    })
}

/// Why `pinhole run` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The rules file is invalid.
    #[error("{0}")]
    Policy(String),
    /// The kernel rules could not be installed.
    #[error("installing the kernel rules: {0}")]
    Rules(String),
    /// A queue could not be bound.
    #[error("binding NFQUEUE queue {queue}: {source}{hint}")]
    Queue {
        /// The queue.
        queue: u16,
        /// The kernel's error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The control socket could not be created.
    #[error("control socket {path}: {source}")]
    Control {
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    /// The monitor's capture socket failed.
    #[error("capturing on {iface}: {source}")]
    Capture {
        /// The interface.
        iface: String,
        /// The error.
        source: std::io::Error,
    },
    /// The event log, the drop capture or the metrics endpoint could not be set up.
    #[error("{0}")]
    Observe(String),
    /// A worker failed.
    #[error("worker for queue {queue}: {source}")]
    Worker {
        /// Its queue.
        queue: u16,
        /// The error.
        source: std::io::Error,
    },
}

fn queue_hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        // The kernel answers EPERM both without CAP_NET_ADMIN and when another socket holds
        // the queue.
        Some(nix::libc::EPERM) => {
            " (run as root or with CAP_NET_ADMIN; or another program, perhaps another pinhole, holds this queue)"
        }
        _ => "",
    }
}

/// Waits for signals: SIGHUP reloads the rules and has the event log reopened (`reopen`),
/// SIGINT and SIGTERM stop.
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
                    // Errors are logged and kept for `pinhole status`.
                    let _ = shared.reload_and_reopen();
                    shared.notifier.ready(&shared.status_line());
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

/// Serves `pinhole run`'s metrics on `listener` until the stop flag is set.
fn spawn_metrics(
    listener: std::net::TcpListener,
    shared: &Arc<Shared>,
) -> Result<thread::JoinHandle<()>, RunError> {
    let shared = shared.clone();
    thread::Builder::new()
        .name("pinhole-metrics".to_owned())
        .spawn(move || http::serve(&listener, &shared.stop, &|| shared.metrics()))
        .map_err(RunError::Signals)
}

/// Sets the stop flag when dropped: a worker that ends for any reason, a panic included,
/// stops the daemon rather than leave its queue unserved.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// The queues and the control socket are taken before the kernel rules are touched, so a
/// second daemon started by mistake fails there and leaves the running one's rules alone.
pub fn run(options: &RunOptions) -> Result<(), RunError> {
    let policy = load_policy(&options.rules, options.no_inspect).map_err(RunError::Policy)?;
    let mut options = options.clone();
    if options.kernel_helpers {
        options.kernel.helpers = KernelHelpers::for_router(&policy, options.kernel.ha.is_some());
        kernel_ct::warn_missing_nat_modules(&options.kernel.helpers);
    }
    if options.kernel.mode == Mode::Offload && options.kernel.offload_ends == OffloadEnds::Events {
        follow_ends_by_segments_unless_events_work(&mut options);
    }
    if options.kernel.mode == Mode::Offload {
        transfer_bytes::enable_accounting();
    }
    let options = &options;
    let signals = Signals::new([SIGHUP, SIGINT, SIGTERM]).map_err(RunError::Signals)?;
    let mut sockets = Vec::new();
    let queue_config = QueueConfig {
        fail_open: options.kernel.fail_open,
        ..options.queue
    };
    for queue in options.kernel.queues.clone() {
        let socket = QueueSocket::open(queue, &queue_config).map_err(|source| RunError::Queue {
            queue,
            hint: queue_hint(&source),
            source,
        })?;
        sockets.push(socket);
    }
    let listener = control::bind(&options.control).map_err(|source| RunError::Control {
        path: options.control.clone(),
        source,
    })?;
    let installer = Installer::new(options.flavour);
    if options.install_rules
        && let Err(err) = installer.install(&options.kernel)
    {
        let _ = std::fs::remove_file(&options.control);
        return Err(RunError::Rules(err));
    }
    let result = serve(options.clone(), policy, signals, sockets, &listener);
    if options.install_rules {
        installer.remove();
        tracing::info!(target: LIFECYCLE, "kernel rules removed");
    }
    let _ = std::fs::remove_file(&options.control);
    result
}

/// Offload mode learns that offloaded connections ended from the kernel's destroy events.
/// When this process cannot subscribe to them (a kernel without
/// `CONFIG_NF_CONNTRACK_EVENTS`), or the kernel sends none (`nf_conntrack_events = 0`), the
/// rules pinhole installs queue those connections' FIN and RST segments instead; rules loaded
/// by hand must then be `pinhole rules --offload-ends segments`.
fn follow_ends_by_segments_unless_events_work(options: &mut RunOptions) {
    let disabled = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_events")
        .is_ok_and(|v| v.trim() == "0");
    let why = match crate::io::ct_events::DestroyEvents::open(4096) {
        Ok(_) if disabled => "net.netfilter.nf_conntrack_events is 0".to_owned(),
        Ok(_) => {
            tracing::info!(
                target: LIFECYCLE,
                "offloaded connections end by the kernel's conntrack destroy events"
            );
            return;
        }
        Err(err) => format!("cannot subscribe to conntrack destroy events: {err}"),
    };
    if options.install_rules {
        options.kernel.offload_ends = OffloadEnds::Segments;
        tracing::warn!(
            target: LIFECYCLE,
            "{why}; offloaded connections' FIN and RST segments are queued instead (set net.netfilter.nf_conntrack_events=2, or pass --offload-ends segments to say so)"
        );
    } else {
        tracing::warn!(
            target: LIFECYCLE,
            "{why}; offloaded connections leave pinhole's table only at their idle timeout unless the loaded rules are `pinhole rules --offload-ends segments` and pinhole runs with --offload-ends segments"
        );
    }
}

fn serve(
    options: RunOptions,
    policy: Policy,
    signals: Signals,
    sockets: Vec<QueueSocket>,
    listener: &UnixListener,
) -> Result<(), RunError> {
    let mut receivers = Vec::new();
    let mut workers = Vec::new();
    for socket in &sockets {
        let (tx, rx) = mpsc::channel();
        workers.push((socket.queue(), tx));
        receivers.push(rx);
    }
    let marks = VerdictMarks::from(&options.kernel);
    let (sink, metrics_listener) =
        crate::observe::start(&options.observe, "nfqueue", LinkType::RawIp)
            .map_err(RunError::Observe)?;
    let helpers = Mutex::new(options.kernel.helpers.clone());
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        policy: Mutex::new((Arc::new(policy), 0)),
        generation: AtomicU64::new(0),
        reload: Mutex::new(ReloadStatus::default()),
        started: std::time::Instant::now(),
        started_wall: std::time::SystemTime::now(),
        options,
        workers,
        sink: sink.as_ref().map(Sink::stats_handle),
        reopen: sink.as_ref().map(Sink::reopen_handle),
        notifier: Notifier::from_env(),
        helpers,
    });
    let mut restored = if shared.options.restore {
        load_state(&shared.options.state_file)
    } else {
        None
    };
    let queues: Vec<u16> = sockets.iter().map(QueueSocket::queue).collect();
    let mut handles = Vec::new();
    for (socket, queries) in sockets.into_iter().zip(receivers) {
        let tap = crate::observe::Tap::new(
            sink.as_ref().map(Sink::handle),
            &format!("nfqueue:{}", socket.queue()),
            LinkType::RawIp,
        );
        let mut worker = Worker::new(socket, &shared, marks, tap);
        if let Some(file) = restored.as_mut() {
            restore_worker(&mut worker, file, &queues, &shared);
        }
        handles.push(spawn_worker(worker, queries, &shared)?);
    }
    drop(restored);
    let control_thread = {
        let shared = shared.clone();
        let listener = listener.try_clone().map_err(RunError::Signals)?;
        thread::Builder::new()
            .name("pinhole-control".to_owned())
            .spawn(move || control::serve(&listener, &shared))
            .map_err(RunError::Signals)?
    };
    let metrics_thread = metrics_listener
        .map(|listener| spawn_metrics(listener, &shared))
        .transpose()?;
    tracing::info!(
        target: LIFECYCLE,
        mode = shared.options.kernel.mode.as_str(),
        queues = ?shared.options.kernel.queues,
        rules = %shared.options.rules.display(),
        control = %shared.options.control.display(),
        "pinhole running"
    );
    shared.notifier.ready(&shared.status_line());
    let signal_handle = signals.handle();
    let stopper = spawn_signals(signals, &shared)?;
    let mut result = Ok(());
    let mut saved = Vec::new();
    for handle in handles {
        let Ok((state, outcome)) = handle.join() else {
            tracing::error!("a worker thread panicked; its flows are not saved");
            continue;
        };
        saved.push(state);
        if let Err(err) = outcome {
            result = Err(err);
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    save_state(&shared.options.state_file, saved);
    signal_handle.close();
    let _ = stopper.join();
    let _ = control_thread.join();
    if let Some(thread) = metrics_thread {
        let _ = thread.join();
    }
    if let Some(sink) = sink {
        sink.finish();
    }
    result
}
