//! The blocking HTTP client of the control API (`cvw policy swap`, `cvw status`), over
//! `ureq`. This module owns the control URL's form (`http://host:port[/path]`), the bearer
//! token and the mapping of transport failures to [`ClientError`]; what the answers mean
//! is the CLI's. No TLS (the control API listens on loopback), no proxy, no redirects.

use std::io::ErrorKind;
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
    agent: ureq::Agent,
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
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            // An error status is an answer the CLI reads (the body says why).
            .http_status_as_error(false)
            // The control API is reached directly, whatever HTTP_PROXY says.
            .proxy(None)
            .max_redirects(0)
            .build()
            .into();
        Ok(Control {
            address: address.to_string(),
            prefix: prefix.to_string(),
            token: token.to_string(),
            agent,
        })
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let answer = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.bearer())
            .call();
        self.read(answer)
    }

    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let answer = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.bearer())
            .content_type(content_type)
            .send(body);
        self.read(answer)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.address, self.prefix)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn read(
        &self,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, ClientError> {
        let mut answer = answer.map_err(|e| self.failure(e))?;
        let status = answer.status().as_u16();
        let body = answer
            .body_mut()
            .read_to_string()
            .map_err(|e| self.failure(e))?;
        Ok(Answer { status, body })
    }

    /// A transport failure as the CLI reports it: not reached, broken off, or not HTTP.
    fn failure(&self, e: ureq::Error) -> ClientError {
        let address = self.address.clone();
        match e {
            ureq::Error::Io(source)
                if matches!(
                    source.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::AddrNotAvailable
                        | ErrorKind::HostUnreachable
                        | ErrorKind::NetworkUnreachable
                ) =>
            {
                ClientError::Connect { address, source }
            }
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => ClientError::Connect {
                address,
                source: std::io::Error::new(ErrorKind::NotConnected, e),
            },
            ureq::Error::Io(source) => ClientError::Io { address, source },
            ureq::Error::Timeout(_) => ClientError::Io {
                address,
                source: std::io::Error::new(ErrorKind::TimedOut, e),
            },
            _ => ClientError::BadResponse { address },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn urls_need_http_host_and_port() {
        assert!(Control::new("http://127.0.0.1:8448", "t").is_ok());
        assert!(Control::new("http://127.0.0.1:8448/", "t").is_ok());
        assert!(Control::new("https://127.0.0.1:8448", "t").is_err());
        assert!(Control::new("127.0.0.1:8448", "t").is_err());
        assert!(Control::new("http://localhost", "t").is_err());
    }

    /// A server on loopback that answers one connection with `reply` and returns what it
    /// was sent.
    fn one_answer(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/prefix", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            stream.write_all(reply).unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (url, server)
    }

    #[test]
    fn an_answer_is_status_and_body() {
        let (url, server) = one_answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}");
        let answer = Control::new(&url, "secret")
            .unwrap()
            .get("/v1/status")
            .unwrap();
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body, "{}");
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /prefix/v1/status HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("authorization: Bearer secret\r\n")
                || request.contains("Authorization: Bearer secret\r\n"),
            "{request}"
        );
    }

    #[test]
    fn garbage_is_not_http() {
        let (url, server) = one_answer(b"garbage\r\n\r\n");
        let err = Control::new(&url, "t").unwrap().get("/").unwrap_err();
        assert!(matches!(err, ClientError::BadResponse { .. }), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn nobody_listening_is_not_reached() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let control = Control::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let err = control.get("/").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot reach the control API at 127.0.0.1:"),
            "{err}"
        );
    }
}
