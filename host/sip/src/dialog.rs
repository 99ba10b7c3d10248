//! Dialog state (RFC 3261 §12): Call-ID, tags, local and remote CSeq, the route set from
//! Record-Route and the remote target from Contact, and the construction of requests
//! inside a dialog (§12.2.1.1) with loose or strict routing (§16.12.1.2).
//!
//! It does not send anything, add Via or Contact, or run timers: the `ua` module does.

use std::sync::Arc;

use crate::message::{Headers, Method, Request, Response, addr_uri, param};

/// One established (or early) dialog. Kept small: a few short strings per leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Shared: a leg keeps its dialog's Call-ID as its own (`ua`).
    pub call_id: Arc<str>,
    /// The From (UAC) or To (UAS) header value we send, our tag included.
    local: String,
    /// The header value naming the peer, its tag included once known.
    remote: String,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    /// Route URIs in the order requests must visit them.
    pub route_set: Vec<String>,
    pub remote_target: String,
}

/// Why a message cannot create a dialog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DialogError {
    #[error("the {0} header is missing or has no tag")]
    NoTag(&'static str),
    #[error("the message has no Contact to address in-dialog requests to")]
    NoContact,
}

impl Dialog {
    /// The UAC side, from a 1xx/2xx with a To tag to our INVITE (§12.1.2). The response
    /// carries our From, Call-ID and CSeq, so it is all that is needed.
    pub fn as_uac(response: &Response) -> Result<Dialog, DialogError> {
        response.headers.to_tag().ok_or(DialogError::NoTag("To"))?;
        let remote_target = contact_uri(&response.headers).ok_or(DialogError::NoContact)?;
        let mut route_set: Vec<String> = response
            .headers
            .get_all("Record-Route")
            .map(|r| addr_uri(r).to_owned())
            .collect();
        route_set.reverse();
        Ok(Dialog {
            call_id: response.headers.call_id().into(),
            local: response.headers.get("From").unwrap_or_default().to_owned(),
            remote: response.headers.get("To").unwrap_or_default().to_owned(),
            local_cseq: response.headers.cseq().map_or(1, |c| c.number),
            remote_cseq: None,
            route_set,
            remote_target,
        })
    }

    /// The UAS side, from a received INVITE and the tag we put in our To (§12.1.1).
    pub fn as_uas(request: &Request, local_tag: &str) -> Result<Dialog, DialogError> {
        request
            .headers
            .from_tag()
            .ok_or(DialogError::NoTag("From"))?;
        let remote_target = contact_uri(&request.headers).ok_or(DialogError::NoContact)?;
        let to = request.headers.get("To").unwrap_or_default();
        Ok(Dialog {
            call_id: request.headers.call_id().into(),
            local: format!("{to};tag={local_tag}"),
            remote: request.headers.get("From").unwrap_or_default().to_owned(),
            local_cseq: 0,
            remote_cseq: request.headers.cseq().map(|c| c.number),
            route_set: request
                .headers
                .get_all("Record-Route")
                .map(|r| addr_uri(r).to_owned())
                .collect(),
            remote_target,
        })
    }

    pub fn local_tag(&self) -> &str {
        param(&self.local, "tag").unwrap_or_default()
    }

    pub fn remote_tag(&self) -> &str {
        param(&self.remote, "tag").unwrap_or_default()
    }

    /// Our own header value (From for requests we send; To for our responses as UAS).
    pub fn local_header(&self) -> &str {
        &self.local
    }

    /// A target refresh (re-INVITE, UPDATE, or their 2xx) may move the peer (§12.2.1.2).
    pub fn refresh_target(&mut self, headers: &Headers) {
        if let Some(target) = contact_uri(headers) {
            self.remote_target = target;
        }
    }

    /// Checks a request's CSeq against the remote sequence (§12.2.2): lower is refused.
    pub fn accept_remote_cseq(&mut self, request: &Request) -> bool {
        let Some(cseq) = request.headers.cseq() else {
            return false;
        };
        if request.method == Method::Ack || request.method == Method::Cancel {
            return true;
        }
        match self.remote_cseq {
            Some(last) if cseq.number < last => false,
            _ => {
                self.remote_cseq = Some(cseq.number);
                true
            }
        }
    }

    /// A new request in this dialog, without Via/Contact (§12.2.1.1). ACK reuses the INVITE's
    /// CSeq number (`ack_of`); every other method takes the next local number.
    pub fn request(&mut self, method: Method, ack_of: Option<u32>) -> Request {
        let number = match (&method, ack_of) {
            (Method::Ack, Some(n)) => n,
            _ => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        let mut headers = Headers::new();
        let (uri, routes) = self.request_uri_and_routes();
        for route in routes {
            headers.push("Route", format!("<{route}>"));
        }
        headers.push("From", self.local.clone());
        headers.push("To", self.remote.clone());
        headers.push("Call-ID", &*self.call_id);
        headers.push("CSeq", format!("{number} {method}"));
        headers.push("Max-Forwards", "70");
        Request {
            method,
            uri,
            headers,
            body: Vec::new(),
        }
    }

    /// Loose routing when the first route has `;lr`, else strict routing (§12.2.1.1).
    fn request_uri_and_routes(&self) -> (String, Vec<String>) {
        match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if is_loose(first) => (self.remote_target.clone(), self.route_set.clone()),
            Some(first) => {
                let mut routes: Vec<String> = self.route_set.iter().skip(1).cloned().collect();
                routes.push(self.remote_target.clone());
                (first.clone(), routes)
            }
        }
    }

    /// The URI the next hop is taken from: the first route, else the remote target.
    pub fn next_hop(&self) -> &str {
        self.route_set.first().unwrap_or(&self.remote_target)
    }
}

fn is_loose(uri: &str) -> bool {
    uri.split(';').skip(1).any(|p| {
        p.trim().eq_ignore_ascii_case("lr") || p.trim().to_ascii_lowercase().starts_with("lr=")
    })
}

fn contact_uri(headers: &Headers) -> Option<String> {
    headers
        .get_all("Contact")
        .next()
        .map(|c| addr_uri(c).to_owned())
        .filter(|u| !u.is_empty() && u != "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn invite() -> Request {
        let raw = "INVITE sip:a@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
            From: \"Cvw\" <sip:+1425@cvw>;tag=local1\r\nTo: <sip:a@pbx>\r\nCall-ID: c1\r\n\
            CSeq: 1 INVITE\r\nContact: <sip:cvw@127.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n";
        match Message::parse(raw.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    fn ok(rr: &[&str]) -> Response {
        let mut r = invite().response(200, "OK");
        r.headers.set("To", "<sip:a@pbx>;tag=remote1");
        r.headers
            .push("Contact", "<sip:a@10.0.0.5:5062;transport=tcp>");
        for route in rr {
            r.headers.push("Record-Route", *route);
        }
        r
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_targets_contact() {
        let d = Dialog::as_uac(&ok(&["<sip:p2;lr>", "<sip:p1;lr>"])).unwrap();
        assert_eq!(d.local_tag(), "local1");
        assert_eq!(d.remote_tag(), "remote1");
        assert_eq!(d.route_set, vec!["sip:p1;lr", "sip:p2;lr"]);
        assert_eq!(d.next_hop(), "sip:p1;lr");
        assert_eq!(d.remote_target, "sip:a@10.0.0.5:5062;transport=tcp");
    }

    #[test]
    fn in_dialog_requests_use_loose_routes_and_increment_cseq_except_ack() {
        let mut d = Dialog::as_uac(&ok(&["<sip:p1;lr>"])).unwrap();
        let ack = d.request(Method::Ack, Some(1));
        assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
        let bye = d.request(Method::Bye, None);
        assert_eq!(bye.uri, "sip:a@10.0.0.5:5062;transport=tcp");
        assert_eq!(bye.headers.get("Route"), Some("<sip:p1;lr>"));
        assert_eq!(bye.headers.get("CSeq"), Some("2 BYE"));
        assert_eq!(bye.headers.to_tag(), Some("remote1"));
        assert_eq!(bye.headers.from_tag(), Some("local1"));
    }

    #[test]
    fn strict_route_goes_into_the_request_uri() {
        let mut d = Dialog::as_uac(&ok(&["<sip:strict@p1>"])).unwrap();
        let bye = d.request(Method::Bye, None);
        assert_eq!(bye.uri, "sip:strict@p1");
        assert_eq!(
            bye.headers.get("Route"),
            Some("<sip:a@10.0.0.5:5062;transport=tcp>")
        );
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_refuses_old_cseq() {
        let mut req = invite();
        req.headers.push("Record-Route", "<sip:p1;lr>, <sip:p2;lr>");
        let mut d = Dialog::as_uas(&req, "mine").unwrap();
        assert_eq!(d.route_set, vec!["sip:p1;lr", "sip:p2;lr"]);
        assert_eq!(d.local_tag(), "mine");
        assert_eq!(d.remote_tag(), "local1");
        assert_eq!(d.remote_target, "sip:cvw@127.0.0.1:5060");
        let mut bye = d.request(Method::Bye, None);
        assert_eq!(bye.headers.get("CSeq"), Some("1 BYE"));
        bye.headers.set("CSeq", "0 BYE");
        assert!(!d.accept_remote_cseq(&bye), "CSeq lower than the INVITE's");
        bye.headers.set("CSeq", "2 BYE");
        assert!(d.accept_remote_cseq(&bye));
    }

    #[test]
    fn a_response_without_tag_or_contact_makes_no_dialog() {
        let mut r = ok(&[]);
        r.headers.set("To", "<sip:a@pbx>");
        assert_eq!(Dialog::as_uac(&r), Err(DialogError::NoTag("To")));
        let mut r = ok(&[]);
        r.headers.remove("Contact");
        assert_eq!(Dialog::as_uac(&r), Err(DialogError::NoContact));
    }
}
