//! Saving and restoring an engine's flows and pinholes, so a restart (or an upgrade of pinhole
//! itself) loses no session it admitted.
//!
//! [`Engine::save_state`] copies every flow (its tuple, TCP tracker, inspector state with the
//! bytes it holds, counters, parent) with its deadline, and every pending pinhole.
//! [`Engine::restore_state`] puts them into a running engine: flows get new places in its
//! table, so parent links, FTP children and pinhole parents are rewritten through a map from
//! the saved handles to the new ones. Deadlines are absolute engine instants: the adapter must
//! run its clock on the same time base before and after (the daemon uses the system's
//! monotonic clock and refuses state from another boot). What has expired meanwhile goes at
//! the next [`Engine::expire`]. Held fragments and counters are not saved.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::alg::AlgState;
use crate::conntrack::{Flow, FlowHandle, ParentRef, Pinhole};
use crate::time::Instant;

use super::Engine;

/// One engine's flows and pending pinholes, as saved.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EngineState {
    /// The engine's clock when it was saved.
    pub saved_at: Instant,
    /// Every flow with the handle it had and its deadline.
    pub flows: Vec<SavedFlow>,
    /// Every pending pinhole (parents by the saved handles).
    pub pinholes: Vec<Pinhole>,
}

/// A flow as saved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedFlow {
    /// Its handle in the engine that saved it (what parents and children refer to).
    pub handle: FlowHandle,
    /// When it expires without traffic.
    pub deadline: Instant,
    /// The flow.
    pub flow: Flow,
}

/// What [`Engine::restore_state`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    /// Flows put into the table.
    pub flows: usize,
    /// Pinholes put into the table.
    pub pinholes: usize,
    /// Saved flows already tracked here (same key), left out.
    pub duplicate_flows: usize,
    /// Flows left out because the table was at its cap (`limits.max_flows`).
    pub over_capacity: usize,
    /// Pinholes whose parent flow was not restored, or that had already expired, left out.
    pub dropped_pinholes: usize,
}

impl Engine {
    /// A copy of every flow and pending pinhole, to restore after a restart.
    pub fn save_state(&self) -> EngineState {
        EngineState {
            saved_at: self.now,
            flows: self
                .flows
                .iter_with_deadlines()
                .map(|(handle, flow, deadline)| SavedFlow {
                    handle,
                    deadline,
                    flow: flow.clone(),
                })
                .collect(),
            pinholes: self.pinholes.iter().cloned().collect(),
        }
    }

    /// Adds saved flows and pinholes to this engine (see the module docs). Flows whose key is
    /// already tracked are skipped, and so are flows beyond the table's cap (nothing is evicted).
    pub fn restore_state(&mut self, state: EngineState) -> RestoreSummary {
        let mut summary = RestoreSummary::default();
        if state.saved_at > self.now {
            self.now = state.saved_at;
        }
        let mut map: HashMap<FlowHandle, FlowHandle> = HashMap::new();
        for saved in state.flows {
            if self.flows.lookup(&saved.flow.tuple.key()).is_some() {
                summary.duplicate_flows += 1;
                continue;
            }
            // No eviction for a restored flow: saved handles inside the flows are not
            // rewritten yet, so removing one now could close the wrong children.
            if self.flows.len() >= self.flows.capacity() {
                summary.over_capacity += 1;
                continue;
            }
            if let Ok(inserted) = self.flows.insert(saved.flow, saved.deadline) {
                map.insert(saved.handle, inserted.handle);
                summary.flows += 1;
            }
        }
        // Links between restored flows, through the map.
        for &new in map.values() {
            let Some(flow) = self.flows.get_mut(new) else {
                continue;
            };
            flow.parent = flow.parent.and_then(|p| map.get(&p).copied());
            match flow.alg.as_mut() {
                Some(AlgState::Ftp(ftp)) => {
                    ftp.remap_children(|h| map.get(&h).copied());
                    self.stream_bytes += ftp.buffered();
                }
                Some(AlgState::TftpTransfer(_)) => {
                    let end = (flow.tuple.dst, flow.tuple.dport);
                    self.tftp_transfers.insert(end, new);
                }
                Some(AlgState::TftpRequests(_)) | None => {}
            }
        }
        self.rebuild_passive_ranges();
        for pinhole in state.pinholes {
            let parent = pinhole.spec.parent.map(|parent| {
                map.get(&parent.handle)
                    .map(|&handle| ParentRef { handle, ..parent })
            });
            if parent == Some(None) {
                // Its control flow was not restored: nothing could use or close it.
                summary.dropped_pinholes += 1;
                continue;
            }
            let parent = parent.flatten();
            if pinhole.spec.expires <= self.now || self.pinholes.is_full() {
                summary.dropped_pinholes += 1;
                continue;
            }
            let mut spec = pinhole.spec;
            spec.parent = parent;
            self.pinholes.adopt(spec, pinhole.opened);
            summary.pinholes += 1;
        }
        summary
    }
}
