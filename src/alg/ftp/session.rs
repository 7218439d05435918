//! What an FTP control connection remembers beyond the dialogue's checks: the user, the
//! working directory, the data connection a transfer uses, and the verbs it defanged. Feeds
//! the transfer log ([`crate::event::Transfer`]) and the command policy ([`super::policy`]).

use serde::{Deserialize, Serialize};

use super::policy::{self, Verb};
use super::{Pending, shown};
use crate::alg::{Alg, PayloadRewrite};
use crate::conntrack::FlowHandle;
use crate::conntrack::key::FlowTuple;
use crate::event::{BytesSource, Event, Transfer, TransferDirection, TransferResult};
use crate::time::Instant;
use crate::wire::transport::SynHeaders;

/// Refused commands whose verbs may still need overwriting in a retransmission.
const MAX_DEFANGED: usize = 16;
/// Longest user name kept.
const MAX_USER: usize = 64;
/// Longest path kept (a longer one is cut, and the cut is marked).
const MAX_PATH: usize = 1024;

/// A transfer command waiting for its final reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TransferStart {
    /// RETR, STOR, ...
    command: String,
    /// The path it names (or the directory listed), resolved.
    path: Option<String>,
    /// The working directory it was resolved from was never confirmed.
    guessed: bool,
    /// The preliminary reply (150/125).
    pub(super) opened: Option<u16>,
    /// When the command was seen.
    started: Instant,
}

/// A data connection admitted through one of the connection's pinholes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DataConn {
    handle: Option<FlowHandle>,
    /// The shape of its SYN's headers.
    #[serde(default)]
    headers: Option<SynHeaders>,
    /// Once it ended: its tuple and the file bytes it carried (up, down). Not saved.
    #[serde(skip)]
    ended: Option<(FlowTuple, Option<(u64, u64)>)>,
}

/// A refused command's verb: its stream offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Defanged {
    offset: u64,
    len: u8,
    /// Not yet overwritten in any segment.
    fresh: bool,
}

/// The session state of one control connection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Session {
    user: Option<String>,
    /// The working directory (empty: the login directory, taken as `/`).
    cwd: String,
    /// A 257 reply or an absolute CWD confirmed `cwd`.
    cwd_known: bool,
    /// The latest data connection not yet claimed by a transfer record.
    data: Option<DataConn>,
    defanged: Vec<Defanged>,
    /// The time of the segment being inspected.
    #[serde(skip)]
    pub(super) now: Instant,
}

impl Session {
    /// `arg` resolved from the working directory.
    pub(super) fn resolve(&self, arg: &str) -> String {
        let cwd = if self.cwd.is_empty() { "/" } else { &self.cwd };
        let mut path = policy::resolve(cwd, arg);
        if path.len() > MAX_PATH {
            let mut cut = MAX_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
            path.push('…');
        }
        path
    }

    /// The working directory changed to `dir` (absolute); `confirmed` when the server or the
    /// client named it absolutely.
    pub(super) fn changed_directory(&mut self, dir: String, confirmed: bool) {
        self.cwd = dir;
        self.cwd_known |= confirmed;
    }

    /// What a command the inspector has no other use for waits for: a directory change, a
    /// transfer, nothing. USER's name is kept as given.
    pub(super) fn pending_for(&mut self, line: &[u8]) -> Pending {
        let Some(verb) = Verb::of_line(line) else {
            return Pending::Other;
        };
        let (_, arg) = crate::wire::ftp::split_command(line);
        let arg = String::from_utf8_lossy(arg.trim_ascii());
        match verb.as_str() {
            "USER" => {
                self.user = Some(arg.chars().take(MAX_USER).collect());
                Pending::Other
            }
            "CWD" => Pending::Cwd(self.resolve(&arg), arg.starts_with('/')),
            "CDUP" => Pending::Cdup,
            "PWD" => Pending::Pwd,
            "RETR" | "STOR" | "STOU" | "APPE" | "LIST" | "NLST" | "MLSD" => {
                let listing = matches!(verb.as_str(), "LIST" | "NLST" | "MLSD");
                // A listing's argument may be ls options (`LIST -la`): then the directory
                // listed is the working one.
                let path = if listing && (arg.is_empty() || arg.starts_with('-')) {
                    Some(self.resolve("."))
                } else if arg.is_empty() {
                    None // STOU without a name: the server picks one
                } else {
                    Some(self.resolve(&arg))
                };
                Pending::Transfer(Box::new(TransferStart {
                    command: verb.as_str().to_owned(),
                    guessed: path.is_some() && !self.cwd_known && !arg.starts_with('/'),
                    path,
                    opened: None,
                    started: self.now,
                }))
            }
            _ => Pending::Other,
        }
    }

    /// A data connection was admitted through a pinhole of this connection.
    pub(super) fn data_admitted(&mut self, handle: FlowHandle) {
        self.data = Some(DataConn {
            handle: Some(handle),
            headers: None,
            ended: None,
        });
    }

    /// The latest data connection's SYN had these headers.
    pub(super) fn data_syn(&mut self, headers: SynHeaders) {
        if let Some(data) = self.data.as_mut() {
            data.headers = Some(headers);
        }
    }

    /// A data connection ended with `bytes` (up, down) carried.
    pub(super) fn data_ended(
        &mut self,
        handle: FlowHandle,
        tuple: FlowTuple,
        bytes: Option<(u64, u64)>,
    ) {
        if let Some(data) = self.data.as_mut()
            && data.handle == Some(handle)
        {
            data.ended = Some((tuple, bytes));
        }
    }

    /// The transfer record of `start`, ended by the final reply `code` (`None`: the session
    /// ended first). It claims the latest data connection.
    pub(super) fn finish(
        &mut self,
        session: &FlowTuple,
        start: TransferStart,
        code: Option<u16>,
        now: Instant,
        text: &[u8],
    ) -> Event {
        let result = match code {
            Some(200..=299) => TransferResult::Complete,
            Some(426) => TransferResult::Aborted,
            Some(_) => TransferResult::Failed,
            None => TransferResult::Unfinished,
        };
        let command = match start.command.as_str() {
            "RETR" => "RETR",
            "STOR" => "STOR",
            "STOU" => "STOU",
            "APPE" => "APPE",
            "LIST" => "LIST",
            "NLST" => "NLST",
            _ => "MLSD",
        };
        let direction = match command {
            "RETR" => TransferDirection::Download,
            "STOR" | "STOU" | "APPE" => TransferDirection::Upload,
            _ => TransferDirection::Listing,
        };
        let data = self.data.take().unwrap_or_default();
        let (tuple, bytes) = match data.ended {
            Some((tuple, bytes)) => (Some(tuple), bytes),
            None => (None, None),
        };
        Event::Transfer(Box::new(Transfer {
            alg: Alg::Ftp,
            session: *session,
            user: self.user.clone(),
            command,
            path: start.path,
            path_guessed: start.guessed,
            direction,
            opened: start.opened,
            closed: code,
            mode: None,
            options: Vec::new(),
            blocks: None,
            data: tuple,
            data_handle: data.handle.filter(|_| data.ended.is_none()),
            data_headers: data.headers,
            data_offloaded: false,
            data_nat: None,
            bytes_up: bytes.map(|b| b.0),
            bytes_down: bytes.map(|b| b.1),
            bytes_source: counted_by(bytes),
            started: start.started,
            ended: now,
            result,
            detail: shown(text),
        }))
    }

    /// The transfer record of a data connection an FTPS session's passive range admitted:
    /// the command, file and replies were encrypted, so it holds the session, the data
    /// connection, its bytes and how it ended. The direction is the way most bytes went.
    pub(super) fn range_transfer(
        &self,
        session: &FlowTuple,
        data: FlowTuple,
        bytes: Option<(u64, u64)>,
        (started, ended): (Instant, Instant),
        result: TransferResult,
    ) -> Event {
        let direction = match bytes {
            Some((up, down)) if up > down => TransferDirection::Upload,
            Some(_) => TransferDirection::Download,
            None => TransferDirection::Unknown,
        };
        Event::Transfer(Box::new(Transfer {
            alg: Alg::Ftp,
            session: *session,
            user: self.user.clone(),
            command: "FTPS",
            path: None,
            path_guessed: false,
            direction,
            opened: None,
            closed: None,
            mode: None,
            options: Vec::new(),
            blocks: None,
            data: Some(data),
            data_handle: None,
            data_headers: None,
            data_offloaded: false,
            data_nat: None,
            bytes_up: bytes.map(|b| b.0),
            bytes_down: bytes.map(|b| b.1),
            bytes_source: counted_by(bytes),
            started,
            ended,
            result,
            detail: format!(
                "a data connection of an encrypted session, admitted by its passive range (the command, file name and replies were encrypted): {}",
                match result {
                    TransferResult::Complete => "it ended with FINs",
                    TransferResult::Aborted => {
                        "it ended with a reset, which some servers send after a complete transfer too (vsftpd after a TLS upload); only the encrypted final reply would tell"
                    }
                    _ => "it timed out, or its session ended first",
                }
            ),
        }))
    }

    /// Notes a refused command whose verb (`len` bytes) starts at stream offset `offset`, to
    /// be overwritten; `Err` (with `detail` extended) when too many are in flight.
    pub(super) fn refuse(&mut self, offset: u64, len: usize, detail: &str) -> Result<(), String> {
        if self.defanged.len() >= MAX_DEFANGED {
            return Err(format!(
                "{detail}; {MAX_DEFANGED} refused commands unacknowledged: the session is reset"
            ));
        }
        self.defanged.push(Defanged {
            offset,
            len: u8::try_from(len).unwrap_or(u8::MAX),
            fresh: true,
        });
        Ok(())
    }

    /// The overwrites the client's segment at stream offset `start` needs: every refused verb
    /// it carries becomes `X`s. `Err` when a refused verb can no longer be overwritten (it was
    /// wholly in segments already forwarded, or Telnet bytes sit inside it).
    pub(super) fn rewrites_for(
        &mut self,
        start: i128,
        payload: &[u8],
    ) -> Result<Vec<PayloadRewrite>, String> {
        let mut rewrites = Vec::new();
        let end = start + payload.len() as i128;
        let mut failed = None;
        for verb in &mut self.defanged {
            let from = i128::from(verb.offset).max(start);
            let to = (i128::from(verb.offset) + i128::from(verb.len)).min(end);
            if from >= to {
                if verb.fresh {
                    failed = Some(*verb);
                }
                continue;
            }
            let at = usize::try_from(from - start).unwrap_or(0);
            let len = usize::try_from(to - from).unwrap_or(0);
            // Letters and the spaces before them; anything else (Telnet bytes) would not be the
            // verb the server reads.
            if !payload[at..at + len].iter().all(|b| {
                b.is_ascii_alphanumeric() || b.is_ascii_punctuation() || *b == b' ' || *b == b'\t'
            }) {
                failed = Some(*verb);
                continue;
            }
            verb.fresh = false;
            rewrites.push(PayloadRewrite {
                offset: at,
                bytes: vec![b'X'; len],
            });
        }
        if let Some(verb) = failed {
            self.defanged.retain(|v| *v != verb);
            return Err(
                "a refused command's verb was already forwarded, or is broken by Telnet bytes: it cannot be defanged, so the session is reset".to_owned(),
            );
        }
        Ok(rewrites)
    }

    /// The server acknowledged the client's stream up to `offset`: verbs before it will not be
    /// retransmitted.
    pub(super) fn defanged_acknowledged(&mut self, offset: u64) {
        self.defanged
            .retain(|v| v.fresh || v.offset + u64::from(v.len) > offset);
    }
}

/// Where a record's bytes (up, down) come from: pinhole's own count of the data connection,
/// or nowhere yet (an adapter may fill them from the kernel's).
fn counted_by(bytes: Option<(u64, u64)>) -> BytesSource {
    if bytes.is_some() {
        BytesSource::Pinhole
    } else {
        BytesSource::None
    }
}
