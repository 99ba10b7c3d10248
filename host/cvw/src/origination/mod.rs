//! Two-leg origination as the rest of the host sees it: a plan goes in, a stream of call
//! states comes out, and the call can be hung up. The SIP work (RFC 3725 flows,
//! transactions, dialogs) lives in the `cvw-sip` crate, behind this seam, so that the API
//! and the call log can be tested without a network.

pub mod sip;

use std::future::poll_fn;
use std::task::{Context, Poll};

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
    /// States in order; the last one is always [`CallState::Ended`], then the stream ends.
    pub states: CallStates,
    /// Send to hang up both legs; dropping it does not end the call.
    pub hangup: Hangup,
}

/// Where a call's states come from. An originator reads them straight from its own call
/// rather than forwarding them into a channel: a forwarding task and a tokio channel of
/// `CallState`s cost ~3 KB per call for as long as it lasts (issue 4).
pub trait StateSource: Send + 'static {
    fn poll_state(&mut self, cx: &mut Context<'_>) -> Poll<Option<CallState>>;
}

impl StateSource for mpsc::Receiver<CallState> {
    fn poll_state(&mut self, cx: &mut Context<'_>) -> Poll<Option<CallState>> {
        self.poll_recv(cx)
    }
}

/// The states of one call, in order.
pub struct CallStates(Box<dyn StateSource>);

impl CallStates {
    pub fn new(source: impl StateSource) -> Self {
        CallStates(Box::new(source))
    }

    /// The next state; `None` after the last.
    pub async fn recv(&mut self) -> Option<CallState> {
        poll_fn(|cx| self.0.poll_state(cx)).await
    }
}

impl From<mpsc::Receiver<CallState>> for CallStates {
    fn from(rx: mpsc::Receiver<CallState>) -> Self {
        CallStates::new(rx)
    }
}

/// Ends a call once; dropping it unused does not.
pub struct Hangup(Box<dyn FnOnce() + Send>);

impl Hangup {
    pub fn new(hang_up: impl FnOnce() + Send + 'static) -> Self {
        Hangup(Box::new(hang_up))
    }

    pub fn send(self) {
        (self.0)()
    }
}

impl From<oneshot::Sender<()>> for Hangup {
    fn from(tx: oneshot::Sender<()>) -> Self {
        Hangup::new(move || {
            let _ = tx.send(());
        })
    }
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
