//! Observability for the live modes (`pinhole run`, `pinhole monitor`): the JSON event log,
//! the capture of dropped packets, and the Prometheus metrics endpoint.
//!
//! Workers never wait on a disk: each has a [`Tap`] that turns its decisions into
//! [`sink::Item`]s and hands them, without blocking, to one writer thread ([`Sink`]). The
//! writer applies the rate limit, writes the event log and the rotating drop capture, and
//! counts what it wrote, suppressed or lost ([`SinkStats`]). Metrics are rendered on demand
//! from the workers' counters ([`metrics`]) and served over HTTP ([`http`]).

pub mod dropcap;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod sink;
pub mod tap;

pub use sink::{Sink, SinkConfig, SinkStats};
pub use tap::Tap;

/// The log target of the daemons' lifecycle messages (start, stop, reloads, state saved and
/// restored, the event log reopened): shown at info level by default, when other info messages
/// are not, so an operator's journal says what the daemon did without -v.
pub const LIFECYCLE: &str = "pinhole::lifecycle";

use std::net::{SocketAddr, TcpListener};

use crate::output::Format;
use crate::wire::LinkType;

use self::dropcap::DropCaptureConfig;
use self::sink::EventTarget;

/// What a live mode was asked to report (`--events`, `--dump-drops`, `--metrics`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserveOptions {
    /// The event log.
    pub events: Option<EventTarget>,
    /// Its format.
    pub format: Format,
    /// With flow records.
    pub flows: bool,
    /// Records a second per class.
    pub rate: u32,
    /// The drop capture.
    pub drops: Option<DropCaptureConfig>,
    /// The metrics endpoint's address.
    pub metrics: Option<SocketAddr>,
}

impl ObserveOptions {
    /// The writer's configuration, or `None` when neither an event log nor a drop capture is
    /// asked for. `name` is the `file` of records that belong to no one worker; `link` frames
    /// the captured packets.
    pub fn sink_config(&self, name: &str, link: LinkType) -> Option<SinkConfig> {
        if self.events.is_none() && self.drops.is_none() {
            return None;
        }
        Some(SinkConfig {
            events: self.events.clone(),
            format: self.format,
            flows: self.flows,
            rate: self.rate,
            drops: self.drops.clone(),
            link,
            name: name.to_owned(),
        })
    }
}

/// Starts what `options` ask for: the writer (event log, drop capture) and the metrics
/// listener. Errors name the file or address and what went wrong.
pub fn start(
    options: &ObserveOptions,
    name: &str,
    link: LinkType,
) -> Result<(Option<Sink>, Option<TcpListener>), String> {
    let sink = match options.sink_config(name, link) {
        Some(config) => Some(Sink::start(config)?),
        None => None,
    };
    let listener = match options.metrics {
        Some(addr) => Some(http::bind(addr).map_err(|err| {
            format!("metrics endpoint {addr}: {err} (choose another --metrics address)")
        })?),
        None => None,
    };
    Ok((sink, listener))
}
