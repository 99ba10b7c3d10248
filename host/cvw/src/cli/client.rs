//! A small blocking HTTP/1.1 client for the control API (`cvw policy swap`, `cvw status`).
//! The control API listens on loopback and answers small JSON bodies with a
//! Content-Length, so one request per connection (`Connection: close`) is all it needs;
//! no TLS, no redirects, no chunked uploads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Longest a swap may take: the server compiles the module before it answers.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control URL {url:?} is not http://host:port[/path]")]
    BadUrl { url: String },
    #[error("cannot reach the control API at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("the control API at {address} broke off: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("the control API at {address} sent something that is not HTTP")]
    BadResponse { address: String },
}

/// A control API endpoint: `http://127.0.0.1:8448`.
#[derive(Debug, Clone)]
pub struct Control {
    address: String,
    prefix: String,
    token: String,
}

/// Status code and body of an answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Control {
    pub fn new(url: &str, token: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl {
            url: url.to_string(),
        };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (address, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if address.is_empty() || !address.contains(':') {
            return Err(bad());
        }
        Ok(Control {
            address: address.to_string(),
            prefix: prefix.to_string(),
            token: token.to_string(),
        })
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send("GET", path, None)
    }

    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.send("POST", path, Some((content_type, body)))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, ClientError> {
        let io = |source| ClientError::Io {
            address: self.address.clone(),
            source,
        };
        let mut stream =
            TcpStream::connect(&self.address).map_err(|source| ClientError::Connect {
                address: self.address.clone(),
                source,
            })?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.prefix, self.address, self.token
        );
        let payload = match body {
            Some((content_type, bytes)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    bytes.len()
                ));
                bytes
            }
            None => &[],
        };
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(payload).map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        parse_answer(&raw).ok_or_else(|| ClientError::BadResponse {
            address: self.address.clone(),
        })
    }
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_http_host_and_port() {
        assert!(Control::new("http://127.0.0.1:8448", "t").is_ok());
        assert!(Control::new("http://127.0.0.1:8448/", "t").is_ok());
        assert!(Control::new("https://127.0.0.1:8448", "t").is_err());
        assert!(Control::new("127.0.0.1:8448", "t").is_err());
        assert!(Control::new("http://localhost", "t").is_err());
    }

    #[test]
    fn an_answer_is_status_and_body() {
        let answer =
            parse_answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body, "{}");
        assert!(parse_answer(b"garbage").is_none());
    }
}
