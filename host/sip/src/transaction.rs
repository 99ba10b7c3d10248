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
    /// A CANCEL, already answered (200 if it matched an INVITE transaction, else 481).
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
            // An INVITE already answered 2xx cannot be cancelled (§9.2): 481 as before.
            let matched = self.shared.running_server(&invite_key).is_some();
            let transaction = self.new_server(request.clone(), source);
            let (code, reason) = if matched {
                (200, "OK")
            } else {
                (481, "Call/Transaction Does Not Exist")
            };
            transaction.respond(request.response(code, reason));
            return Some(Unmatched::Cancel { request, matched });
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

/// The ACK of a non-2xx final response, built from the INVITE (§17.1.1.3).
fn non_2xx_ack(invite: &Request, response: &Response) -> Request {
    let mut headers = Headers::new();
    if let Some(via) = invite.headers.get_all("Via").next() {
        headers.push("Via", via);
    }
    for route in invite.headers.get_all("Route") {
        headers.push("Route", route);
    }
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            headers.push(name, v);
        }
    }
    if let Some(to) = response.headers.get("To") {
        headers.push("To", to);
    }
    let number = invite.headers.cseq().map_or(1, |c| c.number);
    headers.push("CSeq", format!("{number} ACK"));
    headers.push("Max-Forwards", "70");
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}

/// The CANCEL of an INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number,
/// top Via and Route set.
fn cancel_of(invite: &Request, extra: &[(String, String)]) -> Request {
    let mut headers = Headers::new();
    if let Some(via) = invite.headers.get_all("Via").next() {
        headers.push("Via", via);
    }
    for route in invite.headers.get_all("Route") {
        headers.push("Route", route);
    }
    for name in ["From", "To", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            headers.push(name, v);
        }
    }
    let number = invite.headers.cseq().map_or(1, |c| c.number);
    headers.push("CSeq", format!("{number} CANCEL"));
    headers.push("Max-Forwards", "70");
    for (name, value) in extra {
        headers.push(name.as_str(), value.as_str());
    }
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Completed,
}

async fn invite_client(
    shared: Arc<Shared>,
    request: Request,
    to: Destination,
    mut sink: ResponseSink,
    mut responses: mpsc::UnboundedReceiver<Response>,
    mut cancels: mpsc::UnboundedReceiver<Vec<(String, String)>>,
) {
    let t = shared.timers;
    let reliable = to.protocol.is_reliable();
    let bytes = request.to_bytes();
    let mut unsent = send_watched(&shared, bytes.clone(), to);
    let mut watching = true;
    let mut state = ClientState::Calling;
    let mut interval = t.timer_a();
    let mut timer_a = (!reliable).then(|| Instant::now() + interval);
    let mut timer_b = Some(Instant::now() + t.timer_b());
    let mut timer_d: Option<Instant> = None;
    let mut pending_cancel: Option<Vec<(String, String)>> = None;
    let mut ack: Option<Vec<u8>> = None;
    let mut cancels_open = true;
    let send_cancel = |extra: &[(String, String)]| {
        let cancel = cancel_of(&request, extra);
        let layer = TransactionLayer {
            shared: shared.clone(),
        };
        layer.send_request(cancel, to, Box::new(|_| {}));
    };
    loop {
        tokio::select! {
            r = responses.recv() => {
                let Some(response) = r else { break };
                match (state, response.code) {
                    (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                        state = ClientState::Proceeding;
                        timer_a = None;
                        if let Some(extra) = pending_cancel.take() {
                            send_cancel(&extra);
                            // §9.1: give up 64·T1 after the CANCEL if no final arrives.
                            timer_b = Some(Instant::now() + t.timer_b());
                        }
                        sink(response);
                    }
                    (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                        sink(response);
                        break;
                    }
                    (ClientState::Calling | ClientState::Proceeding, _) => {
                        let a = non_2xx_ack(&request, &response).to_bytes();
                        shared.transmit.send(a.clone(), to);
                        ack = Some(a);
                        state = ClientState::Completed;
                        timer_a = None;
                        timer_b = None;
                        timer_d = Some(Instant::now() + t.timer_d(reliable));
                        sink(response);
                    }
                    (ClientState::Completed, 300..) => {
                        if let Some(a) = &ack {
                            shared.transmit.send(a.clone(), to);
                        }
                    }
                    (ClientState::Completed, _) => {}
                }
            }
            c = cancels.recv(), if cancels_open => match c {
                Some(extra) => match state {
                    ClientState::Calling => pending_cancel = Some(extra),
                    ClientState::Proceeding => {
                        send_cancel(&extra);
                        timer_b = Some(Instant::now() + t.timer_b());
                    }
                    ClientState::Completed => {}
                },
                None => cancels_open = false,
            },
            _ = timer(timer_a) => {
                trace!(call_id = request.headers.call_id(), "Timer A: INVITE retransmitted");
                shared.transmit.send(bytes.clone(), to);
                interval *= 2;
                timer_a = Some(Instant::now() + interval);
            }
            _ = timer(timer_b) => {
                debug!(call_id = request.headers.call_id(), "Timer B: INVITE timed out");
                sink(timeout_response(&request));
                break;
            }
            r = &mut unsent, if watching && state == ClientState::Calling => match r {
                Ok(()) => {
                    sink(transport_error(&request));
                    break;
                }
                Err(_) => watching = false, // sent: the transport dropped the alarm
            },
            _ = timer(timer_d) => break,
        }
    }
    remove_client(&shared, &request);
}

fn remove_client(shared: &Shared, request: &Request) {
    if let Some(branch) = request.headers.top_branch() {
        guard(&shared.clients).remove(&(branch.to_owned(), request.method.clone()));
    }
}

async fn non_invite_client(
    shared: Arc<Shared>,
    request: Request,
    to: Destination,
    mut sink: ResponseSink,
    mut responses: mpsc::UnboundedReceiver<Response>,
) {
    let t = shared.timers;
    let reliable = to.protocol.is_reliable();
    let bytes = request.to_bytes();
    let mut unsent = send_watched(&shared, bytes.clone(), to);
    let mut watching = true;
    let mut state = ClientState::Calling; // "Trying" in §17.1.2
    let mut interval = t.timer_e();
    let mut timer_e = (!reliable).then(|| Instant::now() + interval);
    let mut timer_f = Some(Instant::now() + t.timer_f());
    let mut timer_k: Option<Instant> = None;
    loop {
        tokio::select! {
            r = responses.recv() => {
                let Some(response) = r else { break };
                if state == ClientState::Completed {
                    continue;
                }
                if response.is_provisional() {
                    state = ClientState::Proceeding;
                } else {
                    state = ClientState::Completed;
                    timer_e = None;
                    timer_f = None;
                    timer_k = Some(Instant::now() + t.timer_k(reliable));
                }
                sink(response);
            }
            _ = timer(timer_e) => {
                trace!(call_id = request.headers.call_id(), method = %request.method, "Timer E: retransmitted");
                shared.transmit.send(bytes.clone(), to);
                interval = if state == ClientState::Proceeding { t.t2 } else { (interval * 2).min(t.t2) };
                timer_e = Some(Instant::now() + interval);
            }
            _ = timer(timer_f) => {
                debug!(call_id = request.headers.call_id(), method = %request.method, "Timer F: timed out");
                sink(timeout_response(&request));
                break;
            }
            r = &mut unsent, if watching && state == ClientState::Calling => match r {
                Ok(()) => {
                    sink(transport_error(&request));
                    break;
                }
                Err(_) => watching = false, // sent: the transport dropped the alarm
            },
            _ = timer(timer_k) => break,
        }
    }
    remove_client(&shared, &request);
}

/// The answer a server transaction gives when its TU dropped it without answering, so
/// that no request is left hanging.
fn abandoned(request: &Request) -> Response {
    request.response(500, "Server Internal Error")
}

async fn invite_server(
    shared: Arc<Shared>,
    key: ServerKey,
    request: Request,
    to: Destination,
    mut from_layer: mpsc::UnboundedReceiver<Request>,
    mut from_tu: mpsc::UnboundedReceiver<Response>,
) {
    let t = shared.timers;
    let reliable = to.protocol.is_reliable();
    let mut last: Option<Vec<u8>> = None;
    let mut completed = false;
    let mut tu_open = true;
    // §17.2.1: 100 Trying unless the TU answers within 200 ms.
    let mut trying = Some(Instant::now() + Duration::from_millis(200));
    let mut interval = t.timer_g();
    let (mut timer_g, mut timer_h, mut timer_i): (
        Option<Instant>,
        Option<Instant>,
        Option<Instant>,
    ) = (None, None, None);
    let mut accepted = false;
    loop {
        let response = tokio::select! {
            r = from_tu.recv(), if tu_open => match r {
                Some(r) => Some(r),
                None => { tu_open = false; (!completed).then(|| abandoned(&request)) }
            },
            r = from_layer.recv() => {
                let Some(retransmission) = r else { break };
                if retransmission.method == Method::Ack {
                    if completed && timer_i.is_none() {
                        timer_g = None;
                        timer_h = None;
                        timer_i = Some(Instant::now() + t.timer_i(reliable));
                    }
                } else if let Some(bytes) = &last {
                    shared.transmit.send(bytes.clone(), to);
                }
                None
            }
            _ = timer(trying) => {
                trying = None;
                if last.is_none() {
                    Some(request.response(100, "Trying"))
                } else { None }
            }
            _ = timer(timer_g) => {
                if let Some(bytes) = &last { shared.transmit.send(bytes.clone(), to); }
                interval = (interval * 2).min(t.t2);
                timer_g = Some(Instant::now() + interval);
                None
            }
            _ = timer(timer_h) => {
                debug!(call_id = request.headers.call_id(), "Timer H: no ACK for a final response");
                break;
            }
            _ = timer(timer_i) => break,
        };
        let Some(response) = response else { continue };
        if completed {
            continue;
        }
        let bytes = response.to_bytes();
        shared.transmit.send(bytes.clone(), to);
        match response.code {
            100..=199 => last = Some(bytes),
            200..=299 => {
                // The TU retransmits 2xx until the ACK (§13.3.1.4).
                accepted = true;
                break;
            }
            _ => {
                last = Some(bytes);
                completed = true;
                trying = None;
                if !reliable {
                    timer_g = Some(Instant::now() + interval);
                }
                timer_h = Some(Instant::now() + t.timer_h());
            }
        }
    }
    if accepted {
        guard(&shared.servers).insert(key.clone(), ServerEntry::Accepted);
        // A task of its own for Timer L: only the key is needed while accepted, not this
        // task's state (~1.7 KB for 32 s per answered INVITE).
        tokio::spawn(forget_after(shared, key, t.timer_l()));
        return;
    }
    guard(&shared.servers).remove(&key);
}

async fn forget_after(shared: Arc<Shared>, key: ServerKey, after: Duration) {
    tokio::time::sleep(after).await;
    guard(&shared.servers).remove(&key);
}

async fn non_invite_server(
    shared: Arc<Shared>,
    key: ServerKey,
    request: Request,
    to: Destination,
    mut from_layer: mpsc::UnboundedReceiver<Request>,
    mut from_tu: mpsc::UnboundedReceiver<Response>,
) {
    let t = shared.timers;
    let reliable = to.protocol.is_reliable();
    let mut last: Option<Vec<u8>> = None;
    let mut timer_j: Option<Instant> = None;
    let mut tu_open = true;
    loop {
        tokio::select! {
            r = from_tu.recv(), if tu_open && timer_j.is_none() => {
                let response = match r {
                    Some(r) => r,
                    None => { tu_open = false; abandoned(&request) }
                };
                let bytes = response.to_bytes();
                shared.transmit.send(bytes.clone(), to);
                if !response.is_provisional() {
                    timer_j = Some(Instant::now() + t.timer_j(reliable));
                }
                last = Some(bytes);
            }
            r = from_layer.recv() => {
                if r.is_none() { break }
                if let Some(bytes) = &last { shared.transmit.send(bytes.clone(), to); }
            }
            _ = timer(timer_j) => break,
        }
    }
    guard(&shared.servers).remove(&key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Protocol;
    use std::net::SocketAddr;

    /// Records every send with its virtual time.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<(Duration, String)>>,
        start: Mutex<Option<Instant>>,
    }

    impl Transmit for Recorder {
        fn send(&self, bytes: Vec<u8>, _to: Destination) {
            let start = *guard(&self.start).get_or_insert_with(Instant::now);
            let first_line = String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            guard(&self.sent).push((start.elapsed(), first_line));
        }
        fn local_addr(&self, _: Protocol) -> SocketAddr {
            "127.0.0.1:5060".parse().unwrap()
        }
    }

    impl Recorder {
        fn times_of(&self, prefix: &str) -> Vec<f64> {
            guard(&self.sent)
                .iter()
                .filter(|(_, l)| l.starts_with(prefix))
                .map(|(t, _)| t.as_secs_f64())
                .collect()
        }
    }

    fn dest(protocol: Protocol) -> Destination {
        Destination {
            addr: "127.0.0.1:5070".parse().unwrap(),
            protocol,
        }
    }

    fn request(method: Method) -> Request {
        let mut headers = Headers::new();
        headers.push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtest");
        headers.push("From", "<sip:cvw@h>;tag=f1");
        headers.push("To", "<sip:a@h>");
        headers.push("Call-ID", "call-1");
        headers.push("CSeq", format!("1 {method}"));
        Request {
            method,
            uri: "sip:a@127.0.0.1:5070".into(),
            headers,
            body: Vec::new(),
        }
    }

    fn inbound(message: Message, protocol: Protocol) -> Inbound {
        Inbound {
            message,
            source: dest(protocol),
        }
    }

    fn layer() -> (TransactionLayer, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (TransactionLayer::new(rec.clone(), Timers::default()), rec)
    }

    fn channel_sink() -> (ResponseSink, mpsc::UnboundedReceiver<Response>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
            rx,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn invite_over_udp_doubles_timer_a_and_times_out_at_timer_b() {
        let (layer, rec) = layer();
        let (sink, mut rx) = channel_sink();
        let _c = layer.send_invite(request(Method::Invite), dest(Protocol::Udp), sink);
        let timeout = rx.recv().await.unwrap();
        assert_eq!(timeout.code, 408, "Timer B reports a timeout to the TU");
        assert_eq!(
            rec.times_of("INVITE"),
            vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn invite_over_tcp_is_sent_once() {
        let (layer, rec) = layer();
        let (sink, mut rx) = channel_sink();
        let _c = layer.send_invite(request(Method::Invite), dest(Protocol::Tcp), sink);
        assert_eq!(rx.recv().await.unwrap().code, 408);
        assert_eq!(rec.times_of("INVITE"), vec![0.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_caps_timer_e_at_t2_and_times_out_at_timer_f() {
        let (layer, rec) = layer();
        let (sink, mut rx) = channel_sink();
        layer.send_request(request(Method::Bye), dest(Protocol::Udp), sink);
        assert_eq!(rx.recv().await.unwrap().code, 408);
        assert_eq!(
            rec.times_of("BYE"),
            vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn provisional_stops_invite_retransmission_and_non_2xx_is_acked_hop_by_hop() {
        let (layer, rec) = layer();
        let (sink, mut rx) = channel_sink();
        let invite = request(Method::Invite);
        let _c = layer.send_invite(invite.clone(), dest(Protocol::Udp), sink);
        tokio::time::sleep(Duration::from_millis(600)).await; // one retransmission
        let mut ringing = invite.response(180, "Ringing");
        ringing.headers.set("To", "<sip:a@h>;tag=t1");
        assert!(
            layer
                .handle(inbound(Message::Response(ringing.clone()), Protocol::Udp))
                .is_none()
        );
        assert_eq!(rx.recv().await.unwrap().code, 180);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            rec.times_of("INVITE"),
            vec![0.0, 0.5],
            "no Timer A once proceeding"
        );
        let mut busy = invite.response(486, "Busy Here");
        busy.headers.set("To", "<sip:a@h>;tag=t1");
        layer.handle(inbound(Message::Response(busy.clone()), Protocol::Udp));
        assert_eq!(rx.recv().await.unwrap().code, 486);
        // A retransmitted 486 is absorbed and ACKed again, not passed up (Timer D running).
        assert!(
            layer
                .handle(inbound(Message::Response(busy.clone()), Protocol::Udp))
                .is_none()
        );
        tokio::task::yield_now().await;
        assert_eq!(rec.times_of("ACK").len(), 2);
        // After Timer D (32 s) the transaction is gone: a copy is unmatched.
        tokio::time::sleep(Duration::from_secs(33)).await;
        assert!(matches!(
            layer.handle(inbound(Message::Response(busy), Protocol::Udp)),
            Some(Unmatched::Response(_))
        ));
        assert!(
            rx.recv().await.is_none(),
            "sink dropped when the transaction ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timer_d_is_zero_over_tcp() {
        let (layer, _rec) = layer();
        let (sink, mut rx) = channel_sink();
        let invite = request(Method::Invite);
        let _c = layer.send_invite(invite.clone(), dest(Protocol::Tcp), sink);
        tokio::task::yield_now().await;
        let busy = invite.response(486, "Busy Here");
        layer.handle(inbound(Message::Response(busy.clone()), Protocol::Tcp));
        assert_eq!(rx.recv().await.unwrap().code, 486);
        assert!(rx.recv().await.is_none());
        assert!(
            layer
                .handle(inbound(Message::Response(busy), Protocol::Tcp))
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_waits_for_a_provisional_response() {
        let (layer, rec) = layer();
        let (sink, mut rx) = channel_sink();
        let invite = request(Method::Invite);
        let client = layer.send_invite(invite.clone(), dest(Protocol::Tcp), sink);
        client.cancel(vec![("Reason".into(), "SIP;cause=408".into())]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            rec.times_of("CANCEL").is_empty(),
            "§9.1: no CANCEL before a 1xx"
        );
        layer.handle(inbound(
            Message::Response(invite.response(180, "Ringing")),
            Protocol::Tcp,
        ));
        assert_eq!(rx.recv().await.unwrap().code, 180);
        tokio::task::yield_now().await;
        assert_eq!(rec.times_of("CANCEL").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_timer_k_absorbs_retransmitted_finals() {
        let (layer, _rec) = layer();
        let (sink, mut rx) = channel_sink();
        let bye = request(Method::Bye);
        layer.send_request(bye.clone(), dest(Protocol::Udp), sink);
        tokio::task::yield_now().await;
        let ok = bye.response(200, "OK");
        layer.handle(inbound(Message::Response(ok.clone()), Protocol::Udp));
        assert_eq!(rx.recv().await.unwrap().code, 200);
        assert!(
            layer
                .handle(inbound(Message::Response(ok.clone()), Protocol::Udp))
                .is_none()
        );
        tokio::time::sleep(Duration::from_secs(6)).await; // T4 = 5 s
        assert!(
            layer
                .handle(inbound(Message::Response(ok), Protocol::Udp))
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn invite_server_sends_trying_retransmits_non_2xx_with_timer_g_until_ack() {
        let (layer, rec) = layer();
        let invite = request(Method::Invite);
        let Some(Unmatched::Request(server)) =
            layer.handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
        else {
            panic!("new INVITE goes to the TU");
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            rec.times_of("SIP/2.0 100"),
            vec![0.0],
            "100 Trying after 200 ms"
        );
        // A retransmitted INVITE gets the last provisional again.
        assert!(
            layer
                .handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
                .is_none()
        );
        tokio::task::yield_now().await;
        assert_eq!(rec.times_of("SIP/2.0 100").len(), 2);
        server
            .transaction
            .respond(invite.response(486, "Busy Here"));
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(rec.times_of("SIP/2.0 486").len(), 3, "sent, +T1, +2T1");
        let mut ack = request(Method::Ack);
        ack.headers.set("CSeq", "1 ACK");
        assert!(
            layer
                .handle(inbound(Message::Request(ack.clone()), Protocol::Udp))
                .is_none()
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            rec.times_of("SIP/2.0 486").len(),
            3,
            "Timer G stops at the ACK"
        );
        // Timer I (T4) ends the transaction; a late ACK copy is then unmatched.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(matches!(
            layer.handle(inbound(Message::Request(ack), Protocol::Udp)),
            Some(Unmatched::Ack(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn invite_server_timer_h_gives_up_without_ack() {
        let (layer, rec) = layer();
        let invite = request(Method::Invite);
        let Some(Unmatched::Request(server)) =
            layer.handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
        else {
            panic!("new INVITE goes to the TU");
        };
        server.transaction.respond(invite.response(603, "Decline"));
        tokio::time::sleep(Duration::from_secs(40)).await;
        // 0, .5, 1.5, 3.5, 7.5, 11.5 ... 31.5 (capped at T2), nothing after Timer H at 32 s.
        assert_eq!(rec.times_of("SIP/2.0 603").len(), 11);
        assert!(
            layer
                .handle(inbound(Message::Request(invite), Protocol::Udp))
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_is_answered_by_the_layer() {
        let (layer, rec) = layer();
        let invite = request(Method::Invite);
        let _server = layer.handle(inbound(Message::Request(invite), Protocol::Udp));
        let cancel = request(Method::Cancel);
        let Some(Unmatched::Cancel { matched, .. }) =
            layer.handle(inbound(Message::Request(cancel), Protocol::Udp))
        else {
            panic!("CANCEL reaches the TU");
        };
        assert!(matched);
        tokio::task::yield_now().await;
        assert_eq!(rec.times_of("SIP/2.0 200").len(), 1);
        let mut stray = request(Method::Cancel);
        stray
            .headers
            .set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother");
        layer.handle(inbound(Message::Request(stray), Protocol::Udp));
        tokio::task::yield_now().await;
        assert_eq!(rec.times_of("SIP/2.0 481").len(), 1);
    }

    /// A transport that can never deliver (a TCP peer that refuses connections).
    struct Unreachable;

    impl Transmit for Unreachable {
        fn send(&self, _: Vec<u8>, _: Destination) {}
        fn send_or(&self, _: Vec<u8>, _: Destination, failed: crate::transport::OnFailure) {
            failed();
        }
        fn local_addr(&self, _: Protocol) -> SocketAddr {
            "127.0.0.1:5060".parse().unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transport_failure_ends_client_transactions_with_503_at_once() {
        let layer = TransactionLayer::new(Arc::new(Unreachable), Timers::default());
        let start = Instant::now();
        let (sink, mut rx) = channel_sink();
        let _c = layer.send_invite(request(Method::Invite), dest(Protocol::Tcp), sink);
        assert_eq!(rx.recv().await.unwrap().code, 503);
        let (sink, mut rx) = channel_sink();
        layer.send_request(request(Method::Bye), dest(Protocol::Tcp), sink);
        assert_eq!(rx.recv().await.unwrap().code, 503);
        assert_eq!(start.elapsed(), Duration::ZERO, "no timer involved");
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_server_transaction_answers_500() {
        let (layer, rec) = layer();
        let info = request(Method::Info);
        let server = layer.handle(inbound(Message::Request(info), Protocol::Udp));
        drop(server);
        tokio::task::yield_now().await;
        assert_eq!(rec.times_of("SIP/2.0 500").len(), 1);
    }
}
