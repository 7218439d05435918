//! The state file: every worker's flows and pinholes, written on SIGTERM/SIGINT and by
//! `pinhole snapshot`, read by `pinhole run --restore`, so sessions survive a restart or an
//! upgrade of pinhole itself.
//!
//! JSON, versioned ([`FORMAT`], [`VERSION`]), readable by root only (mode 0600), written
//! atomically: a temporary file beside the
//! target, flushed to disk, renamed over it, and the directory synced, so a crash leaves the
//! old file or the new one, never half of one. Reading checks the header first, so a file of
//! another format or version is refused with a clear error rather than a parse error deep in
//! the body. Engine deadlines are instants of the system's monotonic clock, which only means
//! something within one boot: a file from another boot is refused too (its connections are
//! gone anyway).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::EngineState;

/// The `format` field of every state file.
pub const FORMAT: &str = "pinhole-state";
/// The layout version this build writes and reads. Bump it when a saved type changes shape.
pub const VERSION: u32 = 1;
/// Default path: under /run, which is emptied at boot like the connections it describes.
pub const DEFAULT_PATH: &str = "/run/pinhole/state.json";

/// A whole state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The layout version ([`VERSION`]).
    pub version: u32,
    /// The pinhole version that wrote it (informative: the layout version decides).
    pub pinhole: String,
    /// `/proc/sys/kernel/random/boot_id` when it was written.
    pub boot_id: String,
    /// Wall-clock time it was written, seconds since the Unix epoch (informative).
    pub saved_unix: u64,
    /// One entry per worker.
    pub workers: Vec<WorkerState>,
}

/// One worker's part.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerState {
    /// Its queue number.
    pub queue: u16,
    /// Its engine's flows and pinholes.
    pub engine: EngineState,
}

/// The header read before the body.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
    boot_id: Option<String>,
}

/// Why a state file was not restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// It is not JSON, or not the state file layout.
    #[error("{path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        detail: String,
    },
    /// Another format or layout version.
    #[error(
        "{path} is incompatible: {found}, but this pinhole ({ours}) reads format {FORMAT:?} version {VERSION}"
    )]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What it says it is.
        found: String,
        /// This build's version.
        ours: &'static str,
    },
    /// Written before the last boot.
    #[error(
        "{path} was written before the last reboot (boot id {found}, now {now}): its connections are gone"
    )]
    OtherBoot {
        /// The file.
        path: PathBuf,
        /// Its boot id.
        found: String,
        /// This boot's.
        now: String,
    },
}

/// This boot's id (empty if the kernel does not say).
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl StateFile {
    /// A state file of this build for `workers`, stamped with this boot.
    pub fn new(workers: Vec<WorkerState>) -> Self {
        StateFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            pinhole: env!("CARGO_PKG_VERSION").to_owned(),
            boot_id: boot_id(),
            saved_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            workers,
        }
    }

    /// Flows in all workers.
    pub fn flows(&self) -> usize {
        self.workers.iter().map(|w| w.engine.flows.len()).sum()
    }

    /// Pinholes in all workers.
    pub fn pinholes(&self) -> usize {
        self.workers.iter().map(|w| w.engine.pinholes.len()).sum()
    }

    /// Writes it to `path` atomically (see the module docs); returns the bytes written.
    pub fn write(&self, path: &Path) -> io::Result<u64> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            // Root only, like the control socket: it holds control-stream bytes in flight.
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = BufWriter::new(file);
            serde_json::to_writer(&mut out, self).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()?;
            Ok(bytes)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads and checks `path`: format, version and boot first, then the body.
    pub fn read(path: &Path) -> Result<StateFile, StateError> {
        let text = fs::read_to_string(path).map_err(|source| StateError::Read {
            path: path.to_owned(),
            source,
        })?;
        let corrupt = |err: serde_json::Error| StateError::Corrupt {
            path: path.to_owned(),
            detail: err.to_string(),
        };
        let header: Header = serde_json::from_str(&text).map_err(corrupt)?;
        if header.format.as_deref() != Some(FORMAT) || header.version != Some(VERSION) {
            let found = match (header.format, header.version) {
                (Some(format), Some(version)) => format!("format {format:?} version {version}"),
                (Some(format), None) => format!("format {format:?} without a version"),
                (None, _) => "no format field".to_owned(),
            };
            return Err(StateError::Incompatible {
                path: path.to_owned(),
                found,
                ours: env!("CARGO_PKG_VERSION"),
            });
        }
        let now = boot_id();
        let found = header.boot_id.unwrap_or_default();
        if found != now {
            return Err(StateError::OtherBoot {
                path: path.to_owned(),
                found,
                now,
            });
        }
        serde_json::from_str(&text).map_err(corrupt)
    }
}
