//! Two-leg origination as the rest of the host sees it: a plan goes in, a stream of call
//! states comes out, and the call can be hung up. The SIP work (RFC 3725 flows,
//! transactions, dialogs) lives in the `cvw-sip` crate, behind this seam, so that the API
//! and the call log can be tested without a network.

pub mod sip;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::policy::model::OriginationPlan;

/// Which side of a two-leg call something happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The user's callback number (the first leg, usually the desk phone).
    Callback,
    /// The party the user asked to call (or the conference).
    Callee,
    /// The requester, through the API.
    Requester,
    /// The host itself (limits, shutdown).
    Host,
}

/// The states a requester follows (CVW-14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum CallState {
    RingingCallback,
    CallbackAnswered,
    RingingCallee,
    Connected,
    /// Final: the call is over, with why (CVW-13).
    Ended {
        /// Short machine-readable outcome, e.g. `callback-busy`, `callee-failed`,
        /// `completed`.
        result: String,
        /// A sentence for the person.
        reason: String,
        /// The SIP status behind the outcome, if any.
        sip_code: Option<u16>,
        /// The side that ended the call or failed.
        side: Side,
    },
}

impl CallState {
    pub fn is_final(&self) -> bool {
        matches!(self, CallState::Ended { .. })
    }
}

/// A running two-leg call: its states and the way to end it.
pub struct CallControl {
    /// States in order; the last one is always [`CallState::Ended`], then the channel closes.
    pub states: mpsc::Receiver<CallState>,
    /// Send to hang up both legs; dropping it does not end the call.
    pub hangup: oneshot::Sender<()>,
}

/// Why a call could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum OriginateError {
    #[error("the plan's {leg} URI {uri:?} is not a SIP URI the host can call")]
    BadUri { leg: &'static str, uri: String },
    #[error("the SIP user agent is not running: {0}")]
    Unavailable(#[source] std::io::Error),
}

/// Places two-leg calls.
pub trait Originator: Send + Sync + 'static {
    /// Start ringing the callback leg. Returns at once; progress arrives on `states`.
    fn start(&self, call_id: &str, plan: &OriginationPlan) -> Result<CallControl, OriginateError>;
}
