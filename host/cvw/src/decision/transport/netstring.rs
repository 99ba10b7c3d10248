//! Netstring framing (`<decimal length>:<payload>,`) as Kamailio's janssonrpcc and evapi
//! speak it: [`NetstringCodec`], a `tokio_util::codec` decoder/encoder pair. Owns only the
//! byte framing; what a payload means is the transports' business ([`super::jsonrpc`],
//! [`super::evapi`]).
//!
//! Kamailio drops a frame whose trailing `,` arrives in a later read, so the transports
//! encode every answer into one buffer and write it whole (see the frame rules in
//! `docs/evapi-answer.md`); [`encode`] builds one whole frame for a single write.

use std::fmt::Write as _;
use thiserror::Error;
use tokio_util::bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Frames larger than this are refused: Kamailio's readers stay well under 32 KB, and an
/// unbounded length prefix would let one peer make the host allocate at will.
pub const MAX_FRAME: usize = 1024 * 1024;

/// The digits of a length prefix that fits [`MAX_FRAME`], with room to spare.
const MAX_DIGITS: usize = 9;

/// Why a byte stream is not a sequence of netstrings. The stream cannot be resynchronised
/// after any of these, so the connection is answered with an error and closed.
#[derive(Debug, Error)]
pub enum NetstringError {
    #[error("netstring length prefix has a non-digit byte 0x{0:02x}")]
    BadLength(u8),
    #[error("netstring length prefix is empty")]
    EmptyLength,
    #[error("netstring of {0} bytes is longer than the limit of {MAX_FRAME}")]
    TooLong(usize),
    #[error("netstring payload is not followed by ',' (found 0x{0:02x})")]
    MissingComma(u8),
    /// What `tokio_util`'s framed readers report of the stream itself.
    #[error("netstring stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Netstrings in and out. Stateless: a partial frame stays in the caller's buffer and its
/// length prefix (at most [`MAX_DIGITS`] digits) is read again when more bytes come.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetstringCodec;

impl Decoder for NetstringCodec {
    type Item = BytesMut;
    type Error = NetstringError;

    /// The next whole payload, split off `src` without copying; `None` when more bytes are
    /// needed.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, NetstringError> {
        let Some((len, header)) = parse_prefix(src)? else {
            return Ok(None);
        };
        let total = header + len + 1;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let comma = src[total - 1];
        if comma != b',' {
            return Err(NetstringError::MissingComma(comma));
        }
        src.advance(header);
        let payload = src.split_to(len);
        src.advance(1);
        Ok(Some(payload))
    }
}

impl Encoder<&[u8]> for NetstringCodec {
    type Error = NetstringError;

    /// Appends the whole frame of `payload` to `dst`.
    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), NetstringError> {
        dst.reserve(MAX_DIGITS + payload.len() + 2);
        // Formatting into memory cannot fail; `write!` needs no allocation of its own.
        let _ = write!(dst, "{}:", payload.len());
        dst.put_slice(payload);
        dst.put_u8(b',');
        Ok(())
    }
}

/// One whole frame for `payload`, ready for a single write (a hello, a test's request).
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    // Appending to memory cannot fail.
    let _ = NetstringCodec.encode(payload, &mut out);
    out.into()
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

    fn decode_all(bytes: &mut BytesMut) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(f) = NetstringCodec.decode(bytes).unwrap() {
            frames.push(f.to_vec());
        }
        frames
    }

    #[test]
    fn round_trip_is_the_janssonrpcc_wire_form() {
        let frame = encode(br#"{"id":2}"#);
        assert_eq!(frame, b"8:{\"id\":2},");
        let mut bytes = BytesMut::from(&frame[..]);
        assert_eq!(decode_all(&mut bytes), [br#"{"id":2}"#.to_vec()]);
        assert!(bytes.is_empty());
        let mut out = BytesMut::new();
        NetstringCodec.encode(&b""[..], &mut out).unwrap();
        NetstringCodec.encode(&[b'x'; 12][..], &mut out).unwrap();
        assert_eq!(&out[..], b"0:,12:xxxxxxxxxxxx,");
    }

    #[test]
    fn frames_split_across_reads_and_packed_in_one_read() {
        let mut bytes = BytesMut::from(&b"3:ab"[..]);
        assert!(decode_all(&mut bytes).is_empty());
        bytes.extend_from_slice(b"c,0:,2:x");
        assert_eq!(decode_all(&mut bytes), [b"abc".to_vec(), b"".to_vec()]);
        assert_eq!(&bytes[..], b"2:x", "the partial frame stays buffered");
        bytes.extend_from_slice(b"y,");
        assert_eq!(decode_all(&mut bytes), [b"xy".to_vec()]);
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        let decode = |b: &[u8]| NetstringCodec.decode(&mut BytesMut::from(b));
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n"),
            Err(NetstringError::BadLength(b'G'))
        ));
        assert!(matches!(
            decode(b"3:abc;"),
            Err(NetstringError::MissingComma(b';'))
        ));
        assert!(matches!(decode(b":"), Err(NetstringError::EmptyLength)));
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let mut bytes = BytesMut::from(&b"99999999999:"[..]);
        assert!(matches!(
            NetstringCodec.decode(&mut bytes),
            Err(NetstringError::TooLong(_))
        ));
    }
}
