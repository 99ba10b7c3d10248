//! End-to-end: a real proxy with its example config — Kamailio 5.6
//! (`examples/kamailio/kamailio.cfg`, over evapi and over JSON-RPC) and OpenSIPS 3.6
//! (`examples/opensips/opensips.cfg`, over HTTP) — the host's decision service in-process
//! (PolicyHost with the default policy), and SIP test phones on loopback (UDP and TCP).
//! Every check is on the wire: who receives which request. Each test body takes the
//! proxy kind and runs once per proxy (`per_proxy!`), with the same assertions.
//!
//! And Kamailio deciding by itself with `cvw.so` (`examples/kamailio/cvw-module.cfg`), the
//! same bodies; `module.rs` has what only the module has.
//!
//! Fails, never skips, when `kamailio` is missing or OpenSIPS or `cvw.so` is not built
//! (`scripts/setup` installs the one and builds the others).

use cvw_testkit as support;

use cvw::calllog::JsonLinesFile;
use cvw::decision::transport::netstring::NetstringCodec;
use cvw::decision::{Decider, DecisionService, Running};
use cvw::directory::Directory;
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use cvw_sip::message::{Message, Method, Request};
use cvw_sip::testing::wire::{Call, Phone, unique};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::kamailio::{Kamailio, ModuleFiles, Setup};
use support::opensips::OpenSips;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder as _;

/// One `#[tokio::test]` per proxy kind for the test body `async fn $body(proxy: Proxy)`:
/// tests `$body::kamailio_evapi`, `$body::kamailio_jsonrpc`, `$body::opensips`,
/// `$body::kamailio_module`, `$body::opensips_module`; or only the kinds listed (`per_proxy!(body, [opensips])`),
/// for a body about the host as a separate process. A new kind of proxy is a variant of
/// [`world::Proxy`] and one line here.
macro_rules! per_proxy {
    ($body:ident) => {
        per_proxy!(
            $body,
            [kamailio_evapi, kamailio_jsonrpc, opensips, kamailio_module, opensips_module]
        );
    };
    ($body:ident, [$($kind:ident),+]) => {
        mod $body {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $kind() {
                    $body(proxy_kind(stringify!($kind))).await
                }
            )+
        }
    };
}

/// The proxy kind a `per_proxy!` test is named for.
fn proxy_kind(name: &str) -> Proxy {
    match name {
        "kamailio_evapi" => Proxy::KamailioEvapi,
        "kamailio_jsonrpc" => Proxy::KamailioJsonRpc,
        "opensips" => Proxy::OpenSips,
        "kamailio_module" => Proxy::KamailioModule,
        "opensips_module" => Proxy::OpenSipsModule,
        other => panic!("no proxy kind {other}"),
    }
}

mod click_to_call;
mod config_check;
mod fail_open;
mod hooks;
mod module;
mod per_branch;
mod ring;
mod sipp;
mod world;

use world::*;
