//! Server transactions (RFC 3261 §17.2): the INVITE server (100 Trying, non-2xx
//! retransmission until the ACK) and the non-INVITE server (the last response again for
//! each retransmitted request); each a task between the layer and its transaction user.
//! Matching and CANCEL handling are the layer's ([`super`]).

use super::*;

/// The answer a server transaction gives when its TU dropped it without answering, so
/// that no request is left hanging.
fn abandoned(request: &Request) -> Response {
    request.response(500, "Server Internal Error")
}

pub(super) async fn invite_server(
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

pub(super) async fn non_invite_server(
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
