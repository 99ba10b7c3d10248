//! The little SDP the controller itself writes (RFC 4566, RFC 3264): the Flow IV offer
//! without media lines, and the all-ports-zero answer that rejects every stream of an
//! offer it cannot use. The controller never looks into the media of the parties' SDP
//! otherwise; it relays it unchanged (RFC 3725 §4).

/// An offer with session lines only (RFC 3725 Flow IV step 1): it brings the first leg up
/// with no media until the callee's offer arrives.
pub fn media_less_offer(origin_ip: &str, session_id: u64) -> Vec<u8> {
    format!(
        "v=0\r\no=cvw {session_id} {session_id} IN IP4 {origin_ip}\r\ns=cvw\r\n\
         c=IN IP4 {origin_ip}\r\nt=0 0\r\n"
    )
    .into_bytes()
}

/// A valid answer to `offer` that declines every stream (RFC 3264 §6: port 0), used to
/// complete a 2xx that nobody wants any more before it is torn down with BYE.
pub fn reject_all(offer: &[u8], origin_ip: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(offer);
    let mut out = format!(
        "v=0\r\no=cvw 1 1 IN IP4 {origin_ip}\r\ns=cvw\r\nc=IN IP4 {origin_ip}\r\nt=0 0\r\n"
    );
    for line in text.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            let mut fields = media.split(' ');
            let kind = fields.next().unwrap_or("audio");
            let _port = fields.next();
            let rest: Vec<&str> = fields.collect();
            out.push_str(&format!("m={kind} 0 {}\r\n", rest.join(" ")));
        }
    }
    out.into_bytes()
}

/// The ports of the `m=` lines, in order (tests and logs).
pub fn media_ports(sdp: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(sdp)
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|m| m.split(' ').nth(1))
        .filter_map(|p| p.split('/').next()?.parse().ok())
        .collect()
}

/// Whether a body looks like SDP at all (has a `v=` line).
pub fn is_sdp(body: &[u8]) -> bool {
    body.starts_with(b"v=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_less_offer_has_no_media_lines() {
        let sdp = media_less_offer("127.0.0.1", 7);
        assert!(is_sdp(&sdp));
        assert!(media_ports(&sdp).is_empty());
        assert!(!String::from_utf8_lossy(&sdp).contains("m="));
    }

    #[test]
    fn reject_all_keeps_each_stream_in_order_with_port_zero() {
        let offer = b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
            m=video 40002 RTP/AVP 96\r\n";
        let answer = reject_all(offer, "127.0.0.1");
        assert_eq!(media_ports(&answer), vec![0, 0]);
        let text = String::from_utf8(answer).unwrap();
        assert!(text.contains("m=audio 0 RTP/AVP 0 101\r\n"));
        assert!(text.find("m=audio").unwrap() < text.find("m=video").unwrap());
    }
}
