//! The transport layer (RFC 3261 §18): one UDP socket and one TCP listener on the same
//! local IP, outgoing TCP connections reused per remote address, stream framing by
//! Content-Length, and parsing of everything that arrives. Bad input is logged and
//! dropped (a bad TCP stream is closed); nothing from the network can make it panic.
//!
//! It does not retransmit, match or route messages: the transaction layer does, through the
//! [`Transmit`] trait, which tests replace with a recorder.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::message::Message;

/// Largest message accepted (a UDP datagram's worth; SIP over TCP has no other limit).
pub const MAX_MESSAGE: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    /// Reliable transports get no retransmissions and zero-length wait timers (§17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::Tcp)
    }

    pub fn via_name(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
        }
    }

    /// The `transport=` URI parameter value for Contact/Route URIs.
    pub fn uri_param(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Where a message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

/// A parsed message and where it came from (responses to requests go back there).
#[derive(Debug)]
pub struct Inbound {
    pub message: Message,
    pub source: Destination,
}

/// Runs when a message could not be handed to the network.
pub type OnFailure = Box<dyn FnOnce() + Send>;

/// Sending, as the transaction layer needs it: fire and forget, never blocking.
pub trait Transmit: Send + Sync + 'static {
    fn send(&self, bytes: Vec<u8>, to: Destination);
    /// Like `send`; `failed` runs if the message surely did not leave (a TCP connection
    /// that cannot be opened or written), so that a transaction can end at once with a
    /// transport error (RFC 3261 §8.1.3.1). A UDP loss is never known.
    fn send_or(&self, bytes: Vec<u8>, to: Destination, failed: OnFailure) {
        drop(failed);
        self.send(bytes, to);
    }
    /// The sent-by address for Via and Contact.
    fn local_addr(&self, protocol: Protocol) -> SocketAddr;
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind the SIP UDP socket on {addr}: {source}")]
    Udp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the SIP TCP listener on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A message waiting for its TCP connection, with what to do if it cannot be written.
struct Outgoing {
    bytes: Vec<u8>,
    failed: Option<OnFailure>,
}

impl Outgoing {
    fn fail(self) {
        if let Some(failed) = self.failed {
            failed();
        }
    }
}

/// Fails every message still queued for a connection that is gone.
fn fail_queued(queue: &mut mpsc::UnboundedReceiver<Outgoing>) {
    queue.close();
    while let Ok(message) = queue.try_recv() {
        message.fail();
    }
}

type Connections = Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Outgoing>>>>;

/// Live sockets. Dropping it stops every socket task.
pub struct Transport {
    udp: Arc<UdpSocket>,
    udp_out: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    connections: Connections,
    inbound: mpsc::UnboundedSender<Inbound>,
    shutdown: watch::Receiver<()>,
    _stop: watch::Sender<()>,
}

fn lock(
    connections: &Connections,
) -> MutexGuard<'_, HashMap<SocketAddr, mpsc::UnboundedSender<Outgoing>>> {
    // A poisoned map only means a task panicked mid-insert; the map itself is still valid.
    connections.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport {
    /// Binds UDP and TCP on `ip` (port 0 picks free ports) and starts receiving.
    pub async fn bind(
        ip: IpAddr,
        port: u16,
    ) -> Result<(Arc<Transport>, mpsc::UnboundedReceiver<Inbound>), BindError> {
        let addr = SocketAddr::new(ip, port);
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| BindError::Udp { addr, source })?;
        let udp_addr = udp
            .local_addr()
            .map_err(|source| BindError::Udp { addr, source })?;
        // Same port for TCP when we can get it, so one Contact port serves both.
        let listener = match TcpListener::bind(udp_addr).await {
            Ok(l) => l,
            Err(_) => TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|source| BindError::Tcp { addr, source })?,
        };
        let tcp_addr = listener
            .local_addr()
            .map_err(|source| BindError::Tcp { addr, source })?;
        let (inbound, rx) = mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(());
        let (udp_out, udp_out_rx) = mpsc::unbounded_channel();
        let transport = Arc::new(Transport {
            udp: Arc::new(udp),
            udp_out,
            udp_addr,
            tcp_addr,
            connections: Arc::default(),
            inbound,
            shutdown,
            _stop: stop,
        });
        tokio::spawn(udp_loop(
            transport.udp.clone(),
            transport.inbound.clone(),
            transport.shutdown.clone(),
        ));
        tokio::spawn(udp_writer(
            transport.udp.clone(),
            udp_out_rx,
            transport.shutdown.clone(),
        ));
        tokio::spawn(accept_loop(
            listener,
            transport.connections.clone(),
            transport.inbound.clone(),
            transport.shutdown.clone(),
        ));
        Ok((transport, rx))
    }

    fn send_tcp(&self, outgoing: Outgoing, to: SocketAddr) {
        let mut map = lock(&self.connections);
        let outgoing = match map.get(&to) {
            Some(tx) => match tx.send(outgoing) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => outgoing,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Queue before connecting so that messages sent meanwhile share this connection.
        let _ = tx.send(outgoing);
        map.insert(to, tx);
        drop(map);
        let connections = self.connections.clone();
        let inbound = self.inbound.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => run_connection(stream, to, rx, connections, inbound, shutdown).await,
                Err(e) => {
                    warn!(%to, error = %e, "SIP TCP connect failed; messages dropped");
                    lock(&connections).remove(&to);
                    fail_queued(&mut rx);
                }
            }
        });
    }
}

impl Transmit for Transport {
    fn send(&self, bytes: Vec<u8>, to: Destination) {
        self.send_or(bytes, to, Box::new(|| {}));
    }

    fn send_or(&self, bytes: Vec<u8>, to: Destination, failed: OnFailure) {
        match to.protocol {
            Protocol::Udp => {
                let _ = self.udp_out.send((bytes, to.addr));
            }
            Protocol::Tcp => {
                let failed = Some(failed);
                self.send_tcp(Outgoing { bytes, failed }, to.addr);
            }
        }
    }

    fn local_addr(&self, protocol: Protocol) -> SocketAddr {
        match protocol {
            Protocol::Udp => self.udp_addr,
            Protocol::Tcp => self.tcp_addr,
        }
    }
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    inbound: mpsc::UnboundedSender<Inbound>,
    mut shutdown: watch::Receiver<()>,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (len, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => { debug!(error = %e, "UDP receive error"); continue; }
            },
            _ = shutdown.changed() => return,
        };
        let datagram = &buf[..len];
        if datagram.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keep-alive (RFC 5626 §3.5.1)
        }
        deliver(
            datagram,
            Destination {
                addr: from,
                protocol: Protocol::Udp,
            },
            &inbound,
        );
    }
}

/// One writer keeps datagrams in order; a failed send is a lost datagram that §17
/// retransmission covers.
async fn udp_writer(
    socket: Arc<UdpSocket>,
    mut outgoing: mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr)>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let (bytes, to) = tokio::select! {
            m = outgoing.recv() => match m { Some(m) => m, None => return },
            _ = shutdown.changed() => return,
        };
        if let Err(e) = socket.send_to(&bytes, to).await {
            debug!(%to, error = %e, "UDP send failed");
        }
    }
}

fn deliver(bytes: &[u8], source: Destination, inbound: &mpsc::UnboundedSender<Inbound>) {
    match Message::parse(bytes) {
        Ok(message) => {
            let _ = inbound.send(Inbound { message, source });
        }
        Err(e) => warn!(from = %source.addr, error = %e, "dropped unparsable SIP message"),
    }
}

async fn accept_loop(
    listener: TcpListener,
    connections: Connections,
    inbound: mpsc::UnboundedSender<Inbound>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => { debug!(error = %e, "TCP accept error"); continue; }
            },
            _ = shutdown.changed() => return,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&connections).insert(peer, tx);
        tokio::spawn(run_connection(
            stream,
            peer,
            rx,
            connections.clone(),
            inbound.clone(),
            shutdown.clone(),
        ));
    }
}

async fn run_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    connections: Connections,
    inbound: mpsc::UnboundedSender<Inbound>,
    mut shutdown: watch::Receiver<()>,
) {
    let source = Destination {
        addr: peer,
        protocol: Protocol::Tcp,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    'connection: loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match next_frame(&mut buf) {
                        Ok(Some(frame)) => deliver(&frame, source, &inbound),
                        Ok(None) => break,
                        Err(e) => {
                            warn!(%peer, error = %e, "closing SIP TCP connection");
                            break 'connection;
                        }
                    }
                }
            }
            Some(message) = outgoing.recv() => {
                if stream.write_all(&message.bytes).await.is_err() {
                    message.fail();
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    lock(&connections).remove(&peer);
    fail_queued(&mut outgoing);
}

/// Why a TCP stream cannot be framed into SIP messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("message over a stream without a valid Content-Length (RFC 3261 §18.3)")]
    NoContentLength,
}

/// Takes one complete message off the front of a stream buffer (RFC 3261 §18.3).
pub fn next_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, FrameError> {
    let leading = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    buf.drain(..leading);
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let length = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| {
            let name = name.trim();
            name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")
        })
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or(FrameError::NoContentLength)?;
    let total = head_end + 4 + length;
    if total > MAX_MESSAGE {
        return Err(FrameError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let rest = buf.split_off(total);
    Ok(Some(std::mem::replace(buf, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length_across_chunks_and_keepalives() {
        let msg = b"BYE sip:a SIP/2.0\r\nl: 3\r\n\r\nabc";
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(&msg[..10]);
        assert_eq!(next_frame(&mut buf), Ok(None));
        buf.extend_from_slice(&msg[10..]);
        buf.extend_from_slice(b"INFO");
        assert_eq!(next_frame(&mut buf), Ok(Some(msg.to_vec())));
        assert_eq!(buf, b"INFO");
    }

    #[test]
    fn stream_without_content_length_or_too_large_is_refused() {
        let mut buf = b"BYE sip:a SIP/2.0\r\nVia: x\r\n\r\n".to_vec();
        assert_eq!(next_frame(&mut buf), Err(FrameError::NoContentLength));
        let mut buf = b"BYE sip:a SIP/2.0\r\nContent-Length: 99999999\r\n\r\n".to_vec();
        assert_eq!(next_frame(&mut buf), Err(FrameError::TooLarge));
        let mut buf = vec![b'x'; MAX_MESSAGE + 1];
        assert_eq!(next_frame(&mut buf), Err(FrameError::TooLarge));
    }

    #[test]
    fn framing_mangled_streams_never_panics() {
        let msg =
            b"BYE sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcBYE sip:b SIP/2.0\r\nl: 0\r\n\r\n";
        for i in 0..msg.len() {
            for b in [b'\r', b'\n', b':', b'9', b'-', 0xff] {
                let mut buf = msg.to_vec();
                buf[i] = b;
                while let Ok(Some(_)) = next_frame(&mut buf) {}
            }
        }
    }

    const OPTIONS: &str = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\n\
        From: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[tokio::test]
    async fn udp_and_tcp_deliver_parsed_messages_and_survive_garbage() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let (a, _a_rx) = Transport::bind(ip, 0).await.unwrap();
        let (b, mut b_rx) = Transport::bind(ip, 0).await.unwrap();
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let to = Destination {
                addr: b.local_addr(protocol),
                protocol,
            };
            if protocol == Protocol::Udp {
                a.send(b"\x00garbage\r\n\r\n".to_vec(), to);
            }
            a.send(OPTIONS.as_bytes().to_vec(), to);
            let got = b_rx.recv().await.unwrap();
            assert_eq!(got.source.protocol, protocol);
            assert_eq!(got.message.headers().call_id(), "c1");
        }
    }
}
