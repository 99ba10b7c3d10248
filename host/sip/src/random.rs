//! Random tokens for Call-IDs, tags and Via branches (RFC 3261 §8.1.1.4, §19.3, §8.1.1.7).
//! Uniqueness, not secrecy, is the goal; the OS random source is read once per token.

/// `bytes` random bytes as lowercase hex.
pub(crate) fn token(bytes: usize) -> String {
    let mut buf = [0u8; 16];
    let n = bytes.min(buf.len());
    // A failing OS source would leave zeros; fall back to the clock so tokens still differ.
    if getrandom::getrandom(&mut buf[..n]).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        buf[..n].copy_from_slice(&nanos.to_le_bytes()[..n]);
    }
    buf[..n].iter().map(|b| format!("{b:02x}")).collect()
}

/// A Via branch with the RFC 3261 magic cookie.
pub(crate) fn branch() -> String {
    format!("z9hG4bK{}", token(10))
}

pub(crate) fn tag() -> String {
    token(6)
}

pub(crate) fn call_id() -> String {
    token(16)
}
