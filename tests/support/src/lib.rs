//! Shared helpers of the end-to-end tests and the load tool: a Kamailio runner
//! ([`kamailio`]) that generates a config from `examples/kamailio/` on free loopback ports
//! and kills the proxy on drop, and a small HTTP client ([`http`]). SIP messages and the
//! test phones are `cvw-sip`'s (`cvw_sip::message`, `cvw_sip::testing`).

pub mod http;
pub mod kamailio;
