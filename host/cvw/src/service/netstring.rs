//! Netstring framing (`<decimal length>:<payload>,`) as Kamailio's janssonrpcc and evapi
//! speak it. Owns only the byte framing; what the payload means is [`super::jsonrpc`]'s
//! business.
//!
//! Kamailio drops a frame whose trailing `,` arrives in a later read, so [`encode`] builds
//! a whole frame for one `write_all`.

use thiserror::Error;

/// Frames larger than this are refused: Kamailio's readers stay well under 32 KB, and an
/// unbounded length prefix would let one peer make the host allocate at will.
pub const MAX_FRAME: usize = 1024 * 1024;

/// The digits of a length prefix that fits [`MAX_FRAME`], with room to spare.
const MAX_DIGITS: usize = 9;

/// Why a byte stream is not a sequence of netstrings. The stream cannot be resynchronised
/// after any of these, so the connection is answered with an error and closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetstringError {
    #[error("netstring length prefix has a non-digit byte 0x{0:02x}")]
    BadLength(u8),
    #[error("netstring length prefix is empty")]
    EmptyLength,
    #[error("netstring of {0} bytes is longer than the limit of {MAX_FRAME}")]
    TooLong(usize),
    #[error("netstring payload is not followed by ',' (found 0x{0:02x})")]
    MissingComma(u8),
}

/// One whole frame for `payload`, ready for a single write.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let len = payload.len().to_string();
    let mut out = Vec::with_capacity(len.len() + payload.len() + 2);
    out.extend_from_slice(len.as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(b',');
    out
}

/// Accumulates bytes as they are read and yields whole payloads.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes just read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes of a frame that is not complete yet are buffered.
    pub fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }

    /// The next complete payload, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, NetstringError> {
        let pending = &self.buf[self.start..];
        let Some((len, header)) = parse_prefix(pending)? else {
            return Ok(None);
        };
        let total = header + len + 1;
        if pending.len() < total {
            return Ok(None);
        }
        let comma = pending[total - 1];
        if comma != b',' {
            return Err(NetstringError::MissingComma(comma));
        }
        let payload = pending[header..header + len].to_vec();
        self.start += total;
        if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(payload))
    }
}

/// `(payload length, bytes of "<len>:")`, or `None` when the prefix is still incomplete.
fn parse_prefix(bytes: &[u8]) -> Result<Option<(usize, usize)>, NetstringError> {
    let mut len: usize = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b':' if i == 0 => return Err(NetstringError::EmptyLength),
            b':' => return Ok(Some((len, i + 1))),
            b'0'..=b'9' if i < MAX_DIGITS => {
                len = len * 10 + usize::from(b - b'0');
                if len > MAX_FRAME {
                    return Err(NetstringError::TooLong(len));
                }
            }
            b'0'..=b'9' => return Err(NetstringError::TooLong(len)),
            other => return Err(NetstringError::BadLength(other)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_the_janssonrpcc_wire_form() {
        let frame = encode(br#"{"id":2}"#);
        assert_eq!(frame, b"8:{\"id\":2},");
        let mut d = Decoder::new();
        d.extend(&frame);
        assert_eq!(
            d.next_frame().unwrap().as_deref(),
            Some(&br#"{"id":2}"#[..])
        );
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn frames_split_across_reads_and_packed_in_one_read() {
        let mut d = Decoder::new();
        d.extend(b"3:ab");
        assert_eq!(d.next_frame().unwrap(), None);
        d.extend(b"c,0:,2:x");
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(d.next_frame().unwrap(), None);
        d.extend(b"y,");
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"xy"[..]));
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        let mut d = Decoder::new();
        d.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(d.next_frame(), Err(NetstringError::BadLength(b'G')));

        let mut d = Decoder::new();
        d.extend(b"3:abc;");
        assert_eq!(d.next_frame(), Err(NetstringError::MissingComma(b';')));

        let mut d = Decoder::new();
        d.extend(b":");
        assert_eq!(d.next_frame(), Err(NetstringError::EmptyLength));
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let mut d = Decoder::new();
        d.extend(b"99999999999:");
        assert!(matches!(d.next_frame(), Err(NetstringError::TooLong(_))));
    }
}
