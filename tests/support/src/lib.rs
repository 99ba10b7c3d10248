//! Shared helpers of the end-to-end tests and the load tool: a Kamailio runner
//! ([`kamailio`]) that generates a config from `examples/kamailio/` on free loopback ports
//! and kills the proxy on drop, a small HTTP client ([`http`]), and the load tool's raw SIP
//! message kit ([`sip`]). The test phones are `cvw_sip::testing`'s.

pub mod http;
pub mod kamailio;
pub mod sip;
