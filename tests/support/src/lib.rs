//! Shared helpers of the end-to-end tests: SIP test phones ([`phone`]), the SIP message
//! type they use ([`sip`]) and a Kamailio runner ([`kamailio`]) that generates a config
//! from `examples/kamailio/` on free loopback ports and kills the proxy on drop.

pub mod http;
pub mod kamailio;
pub mod phone;
pub mod sip;
