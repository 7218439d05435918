//! Prometheus text exposition (format 0.0.4) of the counters: what `--metrics ADDR` serves and
//! `pinhole stats --prometheus` prints.
//!
//! Names follow the Prometheus conventions: `pinhole_` prefix, `_total` for counters, labels
//! for the dimensions (`reason`, `alg`, `outcome`, `worker`, `queue`, `class`). Every known drop
//! reason and pinhole outcome is exported from the start, zeros included, so that `rate()` and
//! alerts work before the first occurrence.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::alg::Alg;
use crate::counters::{Counters, PinholeOutcome};
use crate::daemon::snapshot::WorkerStats;
use crate::decision::Reason;
use crate::io::nfqueue::KernelQueueStats;

use super::sink::{Class, SinkCounters};

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Packets the kernel handed to a monitor's capture socket, and those it dropped because the
/// monitor fell behind (`PACKET_STATISTICS`): one worker's, or the sum of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureCounters {
    /// Packets the kernel passed to the socket (delivered or dropped).
    pub kernel_packets: u64,
    /// Packets it dropped because the socket's buffer or ring was full.
    pub kernel_drops: u64,
    /// Frames that carry no IP (ARP, LLDP, STP): skipped, as an inline pinhole never sees them.
    pub not_ip: u64,
    /// Times the memory-mapped ring froze: every block was still being read when a frame came
    /// (`tp_freeze_q_cnt`); the frames lost then are in `kernel_drops`.
    pub ring_freezes: u64,
}

impl CaptureCounters {
    /// Adds `other` into `self` (destructured, so a new counter cannot be forgotten here).
    pub fn add(&mut self, other: &CaptureCounters) {
        let CaptureCounters {
            kernel_packets,
            kernel_drops,
            not_ip,
            ring_freezes,
        } = other;
        self.kernel_packets += kernel_packets;
        self.kernel_drops += kernel_drops;
        self.not_ip += not_ip;
        self.ring_freezes += ring_freezes;
    }

    /// The sum of `workers`.
    pub fn sum(workers: &[CaptureCounters]) -> CaptureCounters {
        let mut total = CaptureCounters::default();
        for worker in workers {
            total.add(worker);
        }
        total
    }
}

/// A per-queue series: name, help, and how to read it from a worker's stats.
type WorkerSeries = (&'static str, &'static str, fn(&WorkerStats) -> u64);
/// A kernel queue series: name, type, help, and how to read it.
type KernelSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&KernelQueueStats) -> u64,
);

/// Everything the exposition is made from.
#[derive(Clone, Debug)]
pub struct MetricsInput<'a> {
    /// `offload`, `inspect-all` or `monitor`.
    pub mode: &'a str,
    /// When the process started.
    pub started: SystemTime,
    /// Workers configured.
    pub workers: usize,
    /// Each answering worker's counters and table sizes.
    pub stats: &'a [WorkerStats],
    /// The policy's table limits (per worker): flows, pinholes.
    pub limits: (usize, usize),
    /// The kernel's view of pinhole's queues (`/proc/net/netfilter/nfnetlink_queue`).
    pub kernel_queues: &'a [KernelQueueStats],
    /// The monitor's capture sockets, one per worker (in worker order, as `stats`).
    pub capture: Option<&'a [CaptureCounters]>,
    /// The event log and drop capture writer.
    pub sink: Option<SinkCounters>,
    /// Successful and failed reloads.
    pub reloads: (u64, u64),
}

/// Renders the exposition.
pub fn render(input: &MetricsInput<'_>) -> String {
    let mut out = Exposition::default();
    let mut total = Counters::default();
    for worker in input.stats {
        total.add(&worker.engine);
    }
    out.family("pinhole_up", "gauge", "1 while pinhole answers.");
    out.sample("pinhole_up", &[], 1);
    out.family(
        "pinhole_info",
        "gauge",
        "Version and mode of the running pinhole.",
    );
    out.sample(
        "pinhole_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("mode", input.mode)],
        1,
    );
    out.family(
        "pinhole_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
    );
    let started = input
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.sample("pinhole_start_time_seconds", &[], started);
    out.family(
        "pinhole_workers",
        "gauge",
        "Worker threads (one engine each).",
    );
    out.sample("pinhole_workers", &[], input.workers as u64);
    out.family(
        "pinhole_workers_answered",
        "gauge",
        "Workers that answered for this scrape (fewer: a worker is stuck).",
    );
    out.sample("pinhole_workers_answered", &[], input.stats.len() as u64);

    engine_metrics(&mut out, input, &total);
    table_metrics(&mut out, input);
    queue_metrics(&mut out, input);
    if let Some(sink) = &input.sink {
        sink_metrics(&mut out, sink);
    }
    out.family(
        "pinhole_reloads_total",
        "counter",
        "Rules reloads that took effect.",
    );
    out.sample("pinhole_reloads_total", &[], input.reloads.0);
    out.family(
        "pinhole_reload_failures_total",
        "counter",
        "Rules reloads refused because the file was invalid (the old policy stayed).",
    );
    out.sample("pinhole_reload_failures_total", &[], input.reloads.1);
    out.0
}

fn engine_metrics(out: &mut Exposition, input: &MetricsInput<'_>, total: &Counters) {
    out.family(
        "pinhole_packets_total",
        "counter",
        "Packets judged by the engine, by worker.",
    );
    for worker in input.stats {
        out.sample(
            "pinhole_packets_total",
            &[("worker", &worker.queue.to_string())],
            worker.engine.packets,
        );
    }
    out.family(
        "pinhole_verdicts_total",
        "counter",
        "Verdicts (in monitor mode: the verdicts inline mode would have given).",
    );
    out.sample(
        "pinhole_verdicts_total",
        &[("verdict", "accept")],
        total.accepted,
    );
    out.sample(
        "pinhole_verdicts_total",
        &[("verdict", "drop")],
        total.dropped,
    );
    out.family(
        "pinhole_drops_total",
        "counter",
        "Dropped packets by reason.",
    );
    for reason in Reason::ALL {
        out.sample(
            "pinhole_drops_total",
            &[("reason", reason.as_str())],
            total.drops.get(*reason),
        );
    }
    flow_metrics(out, total);
    out.family(
        "pinhole_pinholes_total",
        "counter",
        "Pinholes by inspector and outcome (opened, used, expired, closed unused, refused).",
    );
    for alg in Alg::ALL {
        for outcome in PinholeOutcome::ALL {
            out.sample(
                "pinhole_pinholes_total",
                &[("alg", alg.as_str()), ("outcome", outcome.as_str())],
                total.pinholes_by_alg.get(alg, outcome),
            );
        }
    }
    out.family(
        "pinhole_violations_total",
        "counter",
        "Protocol violations reported by the inspectors, by inspector and reason (nonzero only).",
    );
    for (alg, reason, count) in total.violations_by_reason.nonzero() {
        out.sample(
            "pinhole_violations_total",
            &[("alg", alg.as_str()), ("reason", reason.as_str())],
            count,
        );
    }
    out.family(
        "pinhole_transfers_total",
        "counter",
        "Transfer records by inspector, direction and result.",
    );
    for (alg, direction, result, count) in total.transfers.all() {
        out.sample(
            "pinhole_transfers_total",
            &[
                ("alg", alg.as_str()),
                ("direction", direction.as_str()),
                ("result", result.as_str()),
            ],
            count,
        );
    }
    out.family(
        "pinhole_transfer_bytes_total",
        "counter",
        "File bytes of the transfer records pinhole counted itself, by inspector and direction.",
    );
    for (alg, direction, bytes) in total.transfers.all_bytes() {
        out.sample(
            "pinhole_transfer_bytes_total",
            &[("alg", alg.as_str()), ("direction", direction.as_str())],
            bytes,
        );
    }
}

/// The flow counters' totals.
fn flow_metrics(out: &mut Exposition, total: &Counters) {
    for (name, help, value) in [
        (
            "pinhole_flows_opened_total",
            "Flows created.",
            total.flows_opened,
        ),
        (
            "pinhole_flows_closed_total",
            "Flows ended (any cause).",
            total.flows_closed,
        ),
        (
            "pinhole_flows_evicted_total",
            "Flows evicted because the flow table was full.",
            total.flows_evicted,
        ),
        (
            "pinhole_flows_offloaded_total",
            "Flows handed to the kernel (offload mode).",
            total.flows_offloaded,
        ),
        (
            "pinhole_flows_translated_total",
            "Inspected flows (FTP control connections, TFTP requests) the kernel translates (NAT).",
            total.flows_translated,
        ),
        (
            "pinhole_flows_ended_in_kernel_total",
            "Offloaded flows ended by the kernel's conntrack destroy event.",
            total.flows_ended_in_kernel,
        ),
        (
            "pinhole_flows_taken_over_total",
            "Flows taken over from the kernel's entries of connections a pinhole admitted (HA).",
            total.flows_taken_over,
        ),
        (
            "pinhole_datagrams_reassembled_total",
            "IP datagrams reassembled from fragments.",
            total.datagrams_reassembled,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }
}

fn table_metrics(out: &mut Exposition, input: &MetricsInput<'_>) {
    out.family("pinhole_flows", "gauge", "Flows tracked now, by worker.");
    for worker in input.stats {
        out.sample(
            "pinhole_flows",
            &[("worker", &worker.queue.to_string())],
            worker.flows as u64,
        );
    }
    out.family("pinhole_pinholes", "gauge", "Pinholes open now, by worker.");
    for worker in input.stats {
        out.sample(
            "pinhole_pinholes",
            &[("worker", &worker.queue.to_string())],
            worker.pinholes as u64,
        );
    }
    out.family(
        "pinhole_flows_limit",
        "gauge",
        "Flow table size of each worker (limits.max_flows).",
    );
    out.sample("pinhole_flows_limit", &[], input.limits.0 as u64);
    out.family(
        "pinhole_pinholes_limit",
        "gauge",
        "Pinhole table size of each worker (limits.max_pinholes).",
    );
    out.sample("pinhole_pinholes_limit", &[], input.limits.1 as u64);
}

fn queue_metrics(out: &mut Exposition, input: &MetricsInput<'_>) {
    // NFQUEUE's counters; the monitor has a capture socket instead.
    if input.capture.is_none() {
        let per_queue: [WorkerSeries; 7] = [
            (
                "pinhole_queue_received_total",
                "Packets received from the kernel queue.",
                |w| w.queue_counters.received,
            ),
            (
                "pinhole_queue_enobufs_total",
                "Netlink socket overruns: the kernel dropped (or, fail-open, accepted) queued packets.",
                |w| w.queue_counters.enobufs,
            ),
            (
                "pinhole_queue_verdict_errors_total",
                "Verdict batches the kernel refused or that failed to send.",
                |w| w.queue_counters.verdict_errors,
            ),
            (
                "pinhole_queue_held",
                "Packets held for reassembly now.",
                |w| w.queue_counters.held,
            ),
            (
                "pinhole_queue_conntrack_queries_total",
                "Connection tracking entries asked for over ctnetlink (NAT; kernels without NFQA_CT).",
                |w| w.queue_counters.conntrack_queries,
            ),
            (
                "pinhole_queue_conntrack_query_errors_total",
                "Such queries that failed.",
                |w| w.queue_counters.conntrack_query_errors,
            ),
            (
                "pinhole_queue_conntrack_event_overruns_total",
                "Conntrack destroy-event socket overruns: ends of offloaded connections were lost.",
                |w| w.queue_counters.conntrack_event_overruns,
            ),
        ];
        for (name, help, get) in per_queue {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            out.family(name, kind, help);
            for worker in input.stats {
                out.sample(name, &[("queue", &worker.queue.to_string())], get(worker));
            }
        }
    }
    if !input.kernel_queues.is_empty() {
        let kernel: [KernelSeries; 3] = [
            (
                "pinhole_queue_kernel_dropped_total",
                "counter",
                "Packets the kernel dropped because the queue was full (queue_dropped).",
                |q| q.queue_dropped,
            ),
            (
                "pinhole_queue_user_dropped_total",
                "counter",
                "Packets the kernel could not deliver to pinhole's socket (user_dropped).",
                |q| q.user_dropped,
            ),
            (
                "pinhole_queue_waiting",
                "gauge",
                "Packets waiting in the kernel queue for a verdict (queue_total).",
                |q| q.queue_total,
            ),
        ];
        for (name, kind, help, get) in kernel {
            out.family(name, kind, help);
            for queue in input.kernel_queues {
                out.sample(name, &[("queue", &queue.queue.to_string())], get(queue));
            }
        }
    }
    if let Some(workers) = input.capture {
        capture_metrics(out, workers);
    }
}

/// A monitor's per-worker capture series: name, help, and how to read it.
type CaptureSeries = (&'static str, &'static str, fn(&CaptureCounters) -> u64);

/// The monitor's capture sockets: totals under the names of the one-socket monitor, and each
/// worker's share.
fn capture_metrics(out: &mut Exposition, workers: &[CaptureCounters]) {
    {
        let total = CaptureCounters::sum(workers);
        let totals: [(&str, &str, u64); 4] = [
            (
                "pinhole_capture_kernel_packets_total",
                "Packets the kernel passed to the monitor's capture sockets (delivered or dropped).",
                total.kernel_packets,
            ),
            (
                "pinhole_capture_kernel_drops_total",
                "Packets the kernel dropped because the monitor fell behind (socket queue or ring full).",
                total.kernel_drops,
            ),
            (
                "pinhole_capture_ring_freezes_total",
                "Times a capture ring froze: every block was still being read when a packet came.",
                total.ring_freezes,
            ),
            (
                "pinhole_capture_not_ip_total",
                "Frames without IP (ARP, LLDP, STP): skipped, as inline pinhole never sees them.",
                total.not_ip,
            ),
        ];
        for (name, help, value) in totals {
            out.family(name, "counter", help);
            out.sample(name, &[], value);
        }
        let per_worker: [CaptureSeries; 3] = [
            (
                "pinhole_capture_worker_kernel_packets_total",
                "Packets the kernel passed to a worker's capture socket (its share of the fanout).",
                |c| c.kernel_packets,
            ),
            (
                "pinhole_capture_worker_kernel_drops_total",
                "Packets the kernel dropped because this worker fell behind.",
                |c| c.kernel_drops,
            ),
            (
                "pinhole_capture_worker_ring_freezes_total",
                "Times this worker's ring froze.",
                |c| c.ring_freezes,
            ),
        ];
        for (name, help, get) in per_worker {
            out.family(name, "counter", help);
            for (worker, counters) in workers.iter().enumerate() {
                out.sample(name, &[("worker", &worker.to_string())], get(counters));
            }
        }
    }
}

fn sink_metrics(out: &mut Exposition, sink: &SinkCounters) {
    out.family(
        "pinhole_events_written_total",
        "counter",
        "Event log records written, by class (drops: verdict records; events: the rest).",
    );
    for class in Class::ALL {
        out.sample(
            "pinhole_events_written_total",
            &[("class", class.as_str())],
            sink.events_written.get(class),
        );
    }
    out.family(
        "pinhole_events_suppressed_total",
        "counter",
        "Event log records left out by the rate limit (--events-rate), by class.",
    );
    for class in Class::ALL {
        out.sample(
            "pinhole_events_suppressed_total",
            &[("class", class.as_str())],
            sink.events_suppressed.get(class),
        );
    }
    for (name, help, value) in [
        (
            "pinhole_events_lost_total",
            "Event log records lost because the writer fell behind.",
            sink.events_lost,
        ),
        (
            "pinhole_output_write_errors_total",
            "Failed writes to the event log or the drop capture.",
            sink.write_errors,
        ),
        (
            "pinhole_dropdump_packets_total",
            "Dropped packets written to the drop capture.",
            sink.dropdump_packets,
        ),
        (
            "pinhole_dropdump_bytes_total",
            "Bytes written to the drop capture.",
            sink.dropdump_bytes,
        ),
        (
            "pinhole_dropdump_lost_total",
            "Dropped packets not captured because the writer fell behind.",
            sink.dropdump_lost,
        ),
        (
            "pinhole_dropdump_rotations_total",
            "Times the drop capture moved on to a new file.",
            sink.dropdump_rotations,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }
}

/// The text being built.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::snapshot::QueueCounters;
    use crate::decision::Verdict;

    fn input_text() -> String {
        let mut engine = Counters {
            packets: 10,
            ..Counters::default()
        };
        engine.verdict(Verdict::Accept, None);
        engine.verdict(Verdict::Drop, Some(Reason::DefaultDeny));
        engine.pinhole(Alg::Ftp, PinholeOutcome::Opened);
        engine.pinhole(Alg::Ftp, PinholeOutcome::Used);
        engine.pinhole(Alg::Tftp, PinholeOutcome::Refused);
        engine.violation(Alg::Ftp, Reason::FtpBounce);
        let stats = [WorkerStats {
            queue: 3,
            engine,
            queue_counters: QueueCounters {
                received: 10,
                enobufs: 1,
                ..QueueCounters::default()
            },
            flows: 2,
            pinholes: 1,
        }];
        let kernel = [KernelQueueStats {
            queue: 3,
            queue_total: 4,
            queue_dropped: 5,
            user_dropped: 6,
        }];
        render(&MetricsInput {
            mode: "offload",
            started: UNIX_EPOCH + std::time::Duration::from_secs(1000),
            workers: 1,
            stats: &stats,
            limits: (262_144, 65_536),
            kernel_queues: &kernel,
            capture: None,
            sink: Some(SinkCounters::default()),
            reloads: (2, 1),
        })
    }

    #[test]
    fn counters_appear_with_their_labels() {
        let text = input_text();
        for line in [
            "pinhole_up 1",
            "pinhole_info{version=\"0.1.0\",mode=\"offload\"} 1",
            "pinhole_start_time_seconds 1000",
            "pinhole_packets_total{worker=\"3\"} 10",
            "pinhole_verdicts_total{verdict=\"accept\"} 1",
            "pinhole_verdicts_total{verdict=\"drop\"} 1",
            "pinhole_drops_total{reason=\"default_deny\"} 1",
            "pinhole_drops_total{reason=\"ftp_bounce\"} 0",
            "pinhole_pinholes_total{alg=\"ftp\",outcome=\"opened\"} 1",
            "pinhole_pinholes_total{alg=\"ftp\",outcome=\"used\"} 1",
            "pinhole_pinholes_total{alg=\"tftp\",outcome=\"refused\"} 1",
            "pinhole_pinholes_total{alg=\"tftp\",outcome=\"expired\"} 0",
            "pinhole_violations_total{alg=\"ftp\",reason=\"ftp_bounce\"} 1",
            "pinhole_flows{worker=\"3\"} 2",
            "pinhole_pinholes{worker=\"3\"} 1",
            "pinhole_flows_limit 262144",
            "pinhole_queue_received_total{queue=\"3\"} 10",
            "pinhole_queue_enobufs_total{queue=\"3\"} 1",
            "pinhole_queue_kernel_dropped_total{queue=\"3\"} 5",
            "pinhole_queue_user_dropped_total{queue=\"3\"} 6",
            "pinhole_queue_waiting{queue=\"3\"} 4",
            "pinhole_events_suppressed_total{class=\"drops\"} 0",
            "pinhole_reloads_total 2",
            "pinhole_reload_failures_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("pinhole_violations_total{alg=\"tftp\""),
            "zeros are left out"
        );
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family_once() {
        let text = input_text();
        let mut declared = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                assert_eq!(
                    name.ends_with("_total"),
                    kind == "counter",
                    "counters and only counters end in _total: {line}"
                );
                current = name.to_owned();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample outside its family: {line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn a_monitor_reports_its_capture_sockets_in_all_and_per_worker() {
        let worker = |n: u16, packets: u64| WorkerStats {
            queue: n,
            engine: Counters {
                packets,
                ..Counters::default()
            },
            queue_counters: QueueCounters::default(),
            flows: 0,
            pinholes: 0,
        };
        let stats = [worker(0, 70), worker(1, 30)];
        let capture = [
            CaptureCounters {
                kernel_packets: 100,
                kernel_drops: 7,
                not_ip: 2,
                ring_freezes: 1,
            },
            CaptureCounters {
                kernel_packets: 40,
                kernel_drops: 0,
                not_ip: 1,
                ring_freezes: 0,
            },
        ];
        let text = render(&MetricsInput {
            mode: "monitor",
            started: UNIX_EPOCH,
            workers: 2,
            stats: &stats,
            limits: (1, 1),
            kernel_queues: &[],
            capture: Some(&capture),
            sink: None,
            reloads: (0, 0),
        });
        for line in [
            "pinhole_workers 2",
            "pinhole_packets_total{worker=\"0\"} 70",
            "pinhole_packets_total{worker=\"1\"} 30",
            "pinhole_capture_kernel_packets_total 140",
            "pinhole_capture_kernel_drops_total 7",
            "pinhole_capture_ring_freezes_total 1",
            "pinhole_capture_not_ip_total 3",
            "pinhole_capture_worker_kernel_packets_total{worker=\"1\"} 40",
            "pinhole_capture_worker_kernel_drops_total{worker=\"0\"} 7",
            "pinhole_capture_worker_ring_freezes_total{worker=\"0\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // No NFQUEUE series in a monitor.
        assert!(!text.contains("pinhole_queue_"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
