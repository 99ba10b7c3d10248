//! The transports of the decision service: each frames bytes, decodes them into a
//! [`HookCall`](super::HookCall), calls [`DecisionService::handle`] and writes the answer
//! back. Kamailio's evapi ([`evapi`], the host connects to Kamailio), JSON-RPC 2.0 in
//! netstring frames ([`jsonrpc`], Kamailio's janssonrpcc) and HTTP JSON ([`http`], OpenSIPS
//! rest_client, Kamailio http_client).
//!
//! Owns listening, connecting and stopping them together (on one [`Shutdown`]). Does not
//! own what a call means ([`super::request`]) nor how an answer reads ([`super::dialect`]).

pub mod evapi;
pub mod http;
pub mod jsonrpc;
pub mod netstring;

use super::DecisionService;
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// Both transports running on their own tasks; stopping closes every connection.
pub struct Running {
    /// Where the JSON-RPC (netstring) listener is bound.
    pub jsonrpc: std::net::SocketAddr,
    /// Where the HTTP listener is bound.
    pub http: std::net::SocketAddr,
    svc: DecisionService,
    shutdown: Shutdown,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Binds both listeners (port 0 picks a free port) and serves them until
    /// [`Running::stop`].
    pub(crate) async fn start(
        svc: DecisionService,
        jsonrpc: std::net::SocketAddr,
        http: std::net::SocketAddr,
    ) -> std::io::Result<Running> {
        let jl = tokio::net::TcpListener::bind(jsonrpc).await?;
        let hl = tokio::net::TcpListener::bind(http).await?;
        let (jsonrpc, http) = (jl.local_addr()?, hl.local_addr()?);
        let (trigger, shutdown) = Shutdown::new();
        let tasks = vec![
            tokio::spawn(jsonrpc::serve(jl, svc.clone(), shutdown.clone())),
            tokio::spawn(http::serve(hl, svc.clone(), shutdown.clone())),
        ];
        tracing::info!(%jsonrpc, %http, "decision service listening");
        Ok(Running {
            jsonrpc,
            http,
            svc,
            shutdown,
            trigger,
            tasks,
        })
    }

    /// Also answers the Kamailio evapi listener at `addr` (connecting, and reconnecting,
    /// until [`Running::stop`]).
    pub fn connect_evapi(&mut self, addr: std::net::SocketAddr) -> evapi::EvapiStatus {
        let (status, client) = evapi::client(addr, self.svc.clone(), self.shutdown.clone());
        self.tasks.push(tokio::spawn(client));
        status
    }

    /// Stops accepting, closes every connection and waits for the listeners to end.
    pub async fn stop(self) {
        self.trigger.fire();
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("decision service listener ended with {e}"),
                Err(e) => tracing::warn!("decision service task failed: {e}"),
            }
        }
    }
}

/// Binds a listener for `cvw serve` (which runs inside the runtime but wires synchronously).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Where the transports are: listeners for JSON-RPC and HTTP, Kamailio's evapi listener
/// to connect to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints {
    pub jsonrpc: Option<std::net::SocketAddr>,
    pub http: Option<std::net::SocketAddr>,
    pub evapi: Option<std::net::SocketAddr>,
}

/// `cvw serve`'s wiring: the transports configured in `[decision]`, as tasks in `tasks`,
/// stopped by `shutdown`. A listener that cannot bind is a start-up error naming the
/// address.
pub fn spawn_configured(
    svc: DecisionService,
    endpoints: Endpoints,
    shutdown: Shutdown,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Endpoints {
        jsonrpc,
        http,
        evapi,
    } = endpoints;
    if let Some(addr) = evapi {
        // Connects in the background: Kamailio may start after the host.
        let (_status, client) = evapi::client(addr, svc.clone(), shutdown.clone());
        tasks.spawn(async move { client.await.context("decision service (evapi)") });
        tracing::info!(%addr, "decision service: evapi client of Kamailio");
    }
    if let Some(addr) = jsonrpc {
        let listener =
            bind(addr).with_context(|| format!("[decision] jsonrpc: cannot listen on {addr}"))?;
        let (svc, shutdown) = (svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            jsonrpc::serve(listener, svc, shutdown)
                .await
                .context("decision service (JSON-RPC)")
        });
        tracing::info!(%addr, "decision service: JSON-RPC in netstrings (Kamailio janssonrpcc)");
    }
    if let Some(addr) = http {
        let listener =
            bind(addr).with_context(|| format!("[decision] http: cannot listen on {addr}"))?;
        tasks.spawn(async move {
            http::serve(listener, svc, shutdown)
                .await
                .context("decision service (HTTP)")
        });
        tracing::info!(%addr, "decision service: HTTP JSON (OpenSIPS rest_client, Kamailio http_client)");
    }
    Ok(())
}
