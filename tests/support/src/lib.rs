//! Shared helpers of the end-to-end tests and the load tool: runners of Kamailio
//! ([`kamailio`]) and OpenSIPS ([`opensips`]) that generate a config from the example in
//! `examples/` on free loopback ports and kill the proxy on drop ([`process`]), and a small
//! HTTP client ([`http`]). SIP messages and the
//! test phones are `cvw-sip`'s (`cvw_sip::message`, `cvw_sip::testing`).

pub mod http;
pub mod kamailio;
pub mod opensips;
pub mod process;
