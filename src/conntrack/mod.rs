//! Connection tracking: flow identity, the flow table, TCP state, and the pinhole table.

pub mod flow;
mod flow_timers;
pub mod kernel;
pub mod key;
pub mod pinhole;
pub mod table;
pub mod tcp;

pub use flow::{Flow, FlowOrigin, FlowState};
pub use kernel::{KernelConn, SeqAdjust, Translation};
pub use key::{Direction, FlowKey, FlowTuple};
pub use pinhole::{
    OpenOutcome, Opening, ParentRef, Pinhole, PinholeError, PinholeId, PinholeMatch, PinholeSpec,
    PinholeTable, PortMatch,
};
pub use table::{FlowHandle, FlowTable};
pub use tcp::{TcpState, TcpTracker, TcpVerdict};
