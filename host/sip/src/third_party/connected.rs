//! A connected two-leg call (phase 4, CVW-12): BYE from either leg ends the other,
//! INFO, re-INVITE and UPDATE are relayed between the legs, session refresh and the
//! maximum duration run here. Setting the call up is [`super`]'s.

use super::*;

impl Call {
    /// Phase 4: connected (CVW-12). Either BYE ends the other leg; INFO, re-INVITE and
    /// UPDATE are relayed; the maximum duration clears both.
    pub(super) async fn connected(&mut self) -> Ended {
        let deadline = Instant::now() + self.settings.max_duration;
        let mut refresh_at = self.settings.session_refresh.map(|i| Instant::now() + i);
        loop {
            let wake = refresh_at.map_or(deadline, |r| r.min(deadline));
            let ending = match self.step(Some(wake)).await {
                Step::A(event) => self.on_connected(Side::Callback, event),
                Step::B(event) => self.on_connected(Side::Callee, event),
                Step::Timer if Instant::now() < deadline => {
                    refresh_at = self.settings.session_refresh.map(|i| Instant::now() + i);
                    self.refresh_sessions();
                    None
                }
                Step::Timer => Some(Ending {
                    from: Side::Host,
                    reason: reason(408, "Maximum call duration"),
                    ended: end(EndReason::MaxDuration, None, Side::Host),
                }),
                Step::Hangup => Some(Ending {
                    from: Side::Host,
                    reason: "Q.850;cause=16;text=\"Normal call clearing\"".into(),
                    ended: end(EndReason::HungUp, None, Side::Host),
                }),
            };
            if let Some(ending) = ending {
                return self.end_connected(ending).await;
            }
        }
    }

    /// Clears what is left of a connected call: the other leg when one hung up (no Reason:
    /// it is a normal clearing), both when the host ends it.
    async fn end_connected(&mut self, ending: Ending) -> Ended {
        let lost = matches!(
            ending.ended.reason,
            EndReason::CallbackLost | EndReason::CalleeLost
        );
        if lost && ending.ended.code != Some(481) {
            // RFC 4028 §10: the silent leg gets a BYE too, in case only our refreshes were
            // lost; not waited for, since a leg that is really gone answers nothing and
            // the other party must not wait 64·T1 to be hung up.
            let _ = self.legs(ending.from).0.bye(Some(&ending.reason));
        }
        match ending.from {
            Side::Host => self.clear_both(&ending.reason).await,
            from if ending.reason.is_empty() => self.legs(from).1.clear(None).await,
            from => self.legs(from).1.clear(Some(&ending.reason)).await,
        }
        ending.ended
    }

    fn legs(&mut self, from: Side) -> (&mut Leg, &mut Leg) {
        match from {
            Side::Callee => (&mut self.b, &mut self.a),
            _ => (&mut self.a, &mut self.b),
        }
    }

    /// Not async: a held call's task then never keeps an event (and its message) while
    /// it waits for the other leg to clear.
    fn on_connected(&mut self, from: Side, event: LegEvent) -> Option<Ending> {
        let to_side = if from == Side::Callee {
            Side::Callback
        } else {
            Side::Callee
        };
        match event {
            LegEvent::Request(incoming) => match incoming.request.method {
                Method::Bye => {
                    ok(incoming);
                    return Some(Ending {
                        from,
                        reason: String::new(),
                        ended: end(hung_up(from), None, from),
                    });
                }
                Method::Info | Method::Invite | Method::Update => {
                    self.relay(from, to_side, incoming)
                }
                Method::Options => ok(incoming),
                _ => incoming
                    .transaction
                    .respond(incoming.request.response(501, "Not Implemented")),
            },
            LegEvent::Response(r) if !r.is_provisional() => {
                if self.refresh_failed(from, &r) {
                    return Some(Ending {
                        from,
                        reason: reason(r.code, "Session refresh failed"),
                        ended: end(lost(from), Some(r.code), from),
                    });
                }
                self.relay_response(from, r)
            }
            _ => {}
        }
        None
    }

    /// Session refresh (RFC 4028 style, by UPDATE without a body, so no offer/answer):
    /// keeps each leg's dialog alive at the PBX and proves the far end is still there.
    fn refresh_sessions(&mut self) {
        let Some(interval) = self.settings.session_refresh else {
            return;
        };
        // Not cleared: a refresh still waiting (Timer F can outlast a short interval) must
        // still end the call when it fails; each entry goes with its final response.
        for side in [Side::Callback, Side::Callee] {
            let (leg, _) = self.legs(side);
            // A leg whose INVITE got a 422 refreshes with its Min-SE and a Session-Expires
            // no shorter (RFC 4028 §7.4), or the PBX would refuse the refresh too; the pace
            // (this interval) stays below half of either.
            let min_se = leg.min_se();
            let seconds = session_expires(interval).max(min_se.map_or(0, u64::from));
            let mut expires = vec![
                (
                    "Session-Expires".to_owned(),
                    format!("{seconds};refresher=uac"),
                ),
                ("Supported".to_owned(), "timer".to_owned()),
            ];
            if let Some(min_se) = min_se {
                expires.push(("Min-SE".to_owned(), min_se.to_string()));
            }
            if let Ok(cseq) = leg.request(Method::Update, None, &expires) {
                self.refreshes.push((side, cseq));
            }
        }
    }

    /// A refresh answered 481 or 408: that leg's dialog is gone (RFC 4028 §10).
    fn refresh_failed(&mut self, on: Side, response: &Response) -> bool {
        let Some(number) = self.legs(on).0.asked_cseq(response) else {
            return false;
        };
        let Some(at) = self.refreshes.iter().position(|k| *k == (on, number)) else {
            return false;
        };
        self.refreshes.swap_remove(at);
        matches!(response.code, 408 | 481)
    }

    /// Sends a copy of a request to the other leg, body and type unchanged (CVW-22).
    fn relay(&mut self, from: Side, to_side: Side, incoming: IncomingRequest) {
        let req = &incoming.request;
        if req.method == Method::Invite {
            if self
                .relays
                .values()
                .any(|r| r.incoming.request.method == Method::Invite)
            {
                // One offer/answer at a time (RFC 3261 §14.2).
                incoming
                    .transaction
                    .respond(req.response(491, "Request Pending"));
                return;
            }
            if req.body.is_empty() {
                // Its answer would come in the ACK, after the other leg's 2xx needed one:
                // offerless re-INVITEs are not relayed.
                incoming
                    .transaction
                    .respond(req.response(488, "Not Acceptable Here"));
                return;
            }
        }
        let body = Body::of(&req.headers, &req.body);
        let extra: Vec<(String, String)> = ["Info-Package", "Event"]
            .iter()
            .filter_map(|n| req.headers.get(n).map(|v| ((*n).to_owned(), v.to_owned())))
            .collect();
        let method = req.method.clone();
        let (_, other) = self.legs(from);
        match other.request(method, body, &extra) {
            Ok(cseq) => {
                self.relays.insert((to_side, cseq), Relay { incoming });
            }
            Err(_) => incoming
                .transaction
                .respond(incoming.request.response(500, "Server Internal Error")),
        }
    }

    /// The other leg answered a relayed request: pass the answer back (and ACK a 2xx).
    fn relay_response(&mut self, on: Side, response: Response) {
        let Some(number) = self.legs(on).0.asked_cseq(&response) else {
            return;
        };
        let Some(relay) = self.relays.remove(&(on, number)) else {
            return;
        };
        let is_invite = relay.incoming.request.method == Method::Invite;
        if is_invite && response.is_success() {
            let (leg, _) = self.legs(on);
            let _ = leg.ack(None);
        }
        let from = if on == Side::Callee {
            Side::Callback
        } else {
            Side::Callee
        };
        let body = Body::of(&response.headers, &response.body);
        let (origin, _) = self.legs(from);
        let _ = origin.respond(&relay.incoming, response.code, &response.reason, body);
    }
}
