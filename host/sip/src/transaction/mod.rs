//! The transaction layer (RFC 3261 §17): INVITE and non-INVITE client and server
//! transactions, each a small task with the timers named as in the RFC. Retransmissions
//! happen over UDP only; over TCP the wait timers (D, I, J, K) are zero.
//!
//! It owns: matching responses to client transactions (§17.1.3) and requests to server
//! transactions (§17.2.3), the hop-by-hop ACK of a non-2xx final response, CANCEL of an
//! INVITE once a provisional response arrived (§9.1), answering CANCEL itself (§9.2), and
//! the 100 Trying of an INVITE server transaction. It does not own the 2xx of INVITE: its
//! retransmission and ACK belong to the transaction user (§13.3.1.4, §13.2.2.4), so a 2xx
//! terminates the INVITE transactions and later copies surface as [`Unmatched`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, trace};

use crate::message::{Headers, Message, Method, Request, Response};
use crate::transport::{Destination, Inbound, Transmit};

mod client;
mod server;
#[cfg(test)]
mod tests;

use client::{invite_client, non_invite_client};
use server::{invite_server, non_invite_server};

/// RFC 3261 §17.1.1.1 timer base values (Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H and J, and the 2xx retransmission window.
    pub fn sixty_four_t1(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer A: first INVITE retransmission interval (doubles each time).
    pub fn timer_a(&self) -> Duration {
        self.t1
    }
    /// Timer B: INVITE transaction timeout.
    pub fn timer_b(&self) -> Duration {
        self.sixty_four_t1()
    }
    /// Timer D: wait for response retransmissions after a non-2xx (≥ 32 s over UDP).
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.sixty_four_t1().max(Duration::from_secs(32))
        }
    }
    /// Timer E: first non-INVITE retransmission interval (doubles up to T2).
    pub fn timer_e(&self) -> Duration {
        self.t1
    }
    /// Timer F: non-INVITE transaction timeout.
    pub fn timer_f(&self) -> Duration {
        self.sixty_four_t1()
    }
    /// Timer G: first retransmission interval of a non-2xx INVITE response.
    pub fn timer_g(&self) -> Duration {
        self.t1
    }
    /// Timer H: wait for the ACK of a non-2xx INVITE response.
    pub fn timer_h(&self) -> Duration {
        self.sixty_four_t1()
    }
    /// Timer I: wait for ACK retransmissions.
    pub fn timer_i(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }
    /// Timer J: wait for non-INVITE request retransmissions.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.sixty_four_t1()
        }
    }
    /// Timer L (RFC 6026): how long an INVITE answered 2xx absorbs its retransmissions.
    pub fn timer_l(&self) -> Duration {
        self.sixty_four_t1()
    }
    /// Timer K: wait for non-INVITE response retransmissions.
    pub fn timer_k(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }
}

/// Where a client transaction hands its responses: provisional and final, including the
/// `408 Request Timeout` it makes up when Timer B or F fires (§8.1.3.1).
pub type ResponseSink = Box<dyn FnMut(Response) + Send>;

/// What the layer did not absorb and the transaction user must see.
#[derive(Debug)]
pub enum Unmatched {
    /// A new request, with the server transaction that answers it.
    Request(ServerRequest),
    /// A CANCEL, already answered (200 if it matched an INVITE transaction, else 481). One
    /// that came after the INVITE's 2xx is answered 200 and not surfaced: it has no effect.
    Cancel { request: Request, matched: bool },
    /// An ACK that matched no transaction: the ACK of a 2xx (§17.2.3).
    Ack(Request),
    /// A response that matched no transaction: a retransmitted or forked 2xx of INVITE.
    Response(Response),
}

#[derive(Debug)]
pub struct ServerRequest {
    pub request: Request,
    pub source: Destination,
    pub transaction: ServerTransaction,
}

type ClientKey = (String, Method);
type ServerKey = (String, Method);

/// A server transaction as the layer matches requests to it.
enum ServerEntry {
    /// Running: retransmissions (and the ACK of a non-2xx) go to its task.
    Running(mpsc::UnboundedSender<Request>),
    /// An INVITE answered 2xx, for Timer L (RFC 6026 "Accepted"): a retransmission of the
    /// INVITE is absorbed, since the TU resends its 2xx itself until the ACK (§13.3.1.4),
    /// and must not reach the TU as a new call or be answered again; an ACK goes to the TU.
    Accepted,
}

struct Shared {
    transmit: Arc<dyn Transmit>,
    timers: Timers,
    clients: Mutex<HashMap<ClientKey, mpsc::UnboundedSender<Response>>>,
    servers: Mutex<HashMap<ServerKey, ServerEntry>>,
}

impl Shared {
    fn running_server(&self, key: &ServerKey) -> Option<mpsc::UnboundedSender<Request>> {
        match guard(&self.servers).get(key) {
            Some(ServerEntry::Running(tx)) => Some(tx.clone()),
            _ => None,
        }
    }

    fn accepted_server(&self, key: &ServerKey) -> bool {
        matches!(guard(&self.servers).get(key), Some(ServerEntry::Accepted))
    }
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only plain inserts/removes happen under these locks; a poisoned map is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// All live transactions of one user agent.
#[derive(Clone)]
pub struct TransactionLayer {
    shared: Arc<Shared>,
}

/// The TU side of an INVITE client transaction.
#[derive(Debug)]
pub struct InviteClient {
    cancel: mpsc::UnboundedSender<Vec<(String, String)>>,
}

impl InviteClient {
    /// Asks for a CANCEL with these extra headers (e.g. Reason). It is sent at once if a
    /// provisional response came, later when one comes, never after a final (§9.1).
    pub fn cancel(&self, headers: Vec<(String, String)>) {
        let _ = self.cancel.send(headers);
    }
}

/// The TU side of a server transaction: the way to answer the request.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    responses: mpsc::UnboundedSender<Response>,
}

impl ServerTransaction {
    pub fn respond(&self, response: Response) {
        let _ = self.responses.send(response);
    }
}

fn server_method(method: &Method) -> Method {
    // An ACK belongs to the INVITE server transaction it acknowledges (§17.2.3).
    if *method == Method::Ack {
        Method::Invite
    } else {
        method.clone()
    }
}

impl TransactionLayer {
    pub fn new(transmit: Arc<dyn Transmit>, timers: Timers) -> Self {
        TransactionLayer {
            shared: Arc::new(Shared {
                transmit,
                timers,
                clients: Mutex::default(),
                servers: Mutex::default(),
            }),
        }
    }

    pub fn timers(&self) -> Timers {
        self.shared.timers
    }

    pub fn transmit(&self) -> &Arc<dyn Transmit> {
        &self.shared.transmit
    }

    /// Starts a non-INVITE client transaction (§17.1.2).
    pub fn send_request(&self, request: Request, to: Destination, sink: ResponseSink) {
        let Some(rx) = self.register_client(&request) else {
            return;
        };
        tokio::spawn(non_invite_client(
            self.shared.clone(),
            request,
            to,
            sink,
            rx,
        ));
    }

    /// Starts an INVITE client transaction (§17.1.1).
    pub fn send_invite(
        &self,
        request: Request,
        to: Destination,
        sink: ResponseSink,
    ) -> InviteClient {
        let (cancel, cancel_rx) = mpsc::unbounded_channel();
        if let Some(rx) = self.register_client(&request) {
            tokio::spawn(invite_client(
                self.shared.clone(),
                request,
                to,
                sink,
                rx,
                cancel_rx,
            ));
        }
        InviteClient { cancel }
    }

    /// Sends a message outside any transaction: ACK of a 2xx and 2xx retransmissions, which
    /// the transaction user owns.
    pub fn send_stateless(&self, message: &Message, to: Destination) {
        self.shared.transmit.send(message.to_bytes(), to);
    }

    fn register_client(&self, request: &Request) -> Option<mpsc::UnboundedReceiver<Response>> {
        let Some(branch) = request.headers.top_branch() else {
            debug!("request without a Via branch not sent");
            return None;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        guard(&self.shared.clients).insert((branch.to_owned(), request.method.clone()), tx);
        Some(rx)
    }

    /// Feeds one message from the transport through the matching rules of §17.1.3/§17.2.3.
    pub fn handle(&self, inbound: Inbound) -> Option<Unmatched> {
        match inbound.message {
            Message::Response(response) => self.handle_response(response),
            Message::Request(request) => self.handle_request(request, inbound.source),
        }
    }

    fn handle_response(&self, response: Response) -> Option<Unmatched> {
        let key = response
            .headers
            .top_branch()
            .zip(response.method())
            .map(|(b, m)| (b.to_owned(), m));
        let clients = guard(&self.shared.clients);
        match key.and_then(|k| clients.get(&k).cloned()) {
            Some(tx) => {
                drop(clients);
                match tx.send(response) {
                    Ok(()) => None,
                    Err(e) => Some(Unmatched::Response(e.0)),
                }
            }
            None => Some(Unmatched::Response(response)),
        }
    }

    fn handle_request(&self, request: Request, source: Destination) -> Option<Unmatched> {
        let Some(branch) = request.headers.top_branch().map(str::to_owned) else {
            debug!(
                call_id = request.headers.call_id(),
                "request without Via branch dropped"
            );
            return None;
        };
        let own_key = (branch.clone(), request.method.clone());
        if request.method == Method::Cancel {
            let invite_key = (branch, Method::Invite);
            if let Some(tx) = self.shared.running_server(&own_key) {
                let _ = tx.send(request);
                return None;
            }
            let matched = self.shared.running_server(&invite_key).is_some();
            // §9.2: a CANCEL that crosses the 2xx still matches the INVITE (kept for Timer
            // L): 200, and nothing for the TU, since a CANCEL after a final response has
            // no effect on the call. 481 would tell the peer its call is unknown.
            let answered = !matched && self.shared.accepted_server(&invite_key);
            let transaction = self.new_server(request.clone(), source);
            let (code, reason) = if matched || answered {
                (200, "OK")
            } else {
                (481, "Call/Transaction Does Not Exist")
            };
            transaction.respond(request.response(code, reason));
            return (!answered).then_some(Unmatched::Cancel { request, matched });
        }
        let invite_key = (branch, server_method(&request.method));
        if self.shared.accepted_server(&invite_key) {
            if request.method == Method::Ack {
                return Some(Unmatched::Ack(request));
            }
            trace!(
                call_id = request.headers.call_id(),
                "retransmitted INVITE absorbed"
            );
            return None;
        }
        if let Some(tx) = self.shared.running_server(&invite_key) {
            // A retransmission, or the ACK of a non-2xx: the transaction absorbs it.
            if let Err(e) = tx.send(request) {
                return (e.0.method == Method::Ack).then_some(Unmatched::Ack(e.0));
            }
            return None;
        }
        if request.method == Method::Ack {
            return Some(Unmatched::Ack(request));
        }
        let transaction = self.new_server(request.clone(), source);
        Some(Unmatched::Request(ServerRequest {
            request,
            source,
            transaction,
        }))
    }

    fn new_server(&self, request: Request, source: Destination) -> ServerTransaction {
        let (from_layer, layer_rx) = mpsc::unbounded_channel();
        let (responses, tu_rx) = mpsc::unbounded_channel();
        let key = (
            request.headers.top_branch().unwrap_or_default().to_owned(),
            request.method.clone(),
        );
        guard(&self.shared.servers).insert(key.clone(), ServerEntry::Running(from_layer));
        let shared = self.shared.clone();
        if request.method == Method::Invite {
            tokio::spawn(invite_server(shared, key, request, source, layer_rx, tu_rx));
        } else {
            tokio::spawn(non_invite_server(
                shared, key, request, source, layer_rx, tu_rx,
            ));
        }
        ServerTransaction { responses }
    }
}

/// Sleeps until `deadline`, or forever when there is none (a timer not running).
async fn timer(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn timeout_response(request: &Request) -> Response {
    request.response(408, "Request Timeout")
}

/// §8.1.3.1: a transport failure is reported to the TU as 503.
fn transport_error(request: &Request) -> Response {
    request.response(503, "Service Unavailable")
}

/// Sends the first copy of a request, learning if it surely did not leave.
fn send_watched(shared: &Shared, bytes: Vec<u8>, to: Destination) -> oneshot::Receiver<()> {
    let (failed, unsent) = oneshot::channel();
    shared.transmit.send_or(
        bytes,
        to,
        Box::new(move || {
            let _ = failed.send(());
        }),
    );
    unsent
}
