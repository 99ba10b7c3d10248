//! Client transactions (RFC 3261 §17.1): the INVITE client with its hop-by-hop ACK of a
//! non-2xx and CANCEL once a provisional arrived, and the non-INVITE client; each a task
//! driven by the responses the layer matched to it and by its timers. Matching is the
//! layer's ([`super`]).

use super::*;

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

pub(super) async fn invite_client(
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

pub(super) async fn non_invite_client(
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
