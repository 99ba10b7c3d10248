//! End-to-end: real Kamailio 5.6 with `examples/kamailio/kamailio.cfg`, the host's
//! decision service in-process (PolicyHost with the default policy), and SIP test phones
//! on loopback (UDP and TCP). Every check is on the wire: who receives which request.
//!
//! Fails, never skips, when `kamailio` is missing (`.ci/run` installs it).

use cvw_testkit as support;

use cvw::decision::transport::netstring::NetstringCodec;
use cvw::decision::{DecisionService, Running};
use cvw::directory::Directory;
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use cvw_sip::message::{Message, Method, Request};
use cvw_sip::testing::wire::{Call, Phone, unique};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::kamailio::{Kamailio, Setup};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder as _;

mod fail_open;
mod hooks;
mod per_branch;
mod ring;
mod sipp;
mod world;

use world::*;
