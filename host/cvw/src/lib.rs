//! The cvw host: loads a Call-via-Work policy component and connects it to SIP proxies.
//!
//! Data flows one way: SIP in ([`message`]) → facts ([`policy::model`]) → policy
//! ([`policy`]) → decision → proxy action ([`decision`]: transports, one handle, dialects).
//! Calls the host places itself go click to call ([`click_to_call`]) → policy →
//! [`origination`]. `cvw serve` runs as a [`daemon`]; what it publishes is the
//! [`deployment`]'s, changed through the operator's [`admin`] API.

pub mod admin;
pub mod calllog;
pub mod cli;
pub mod click_to_call;
pub mod daemon;
pub mod decision;
pub mod deployment;
pub mod directory;
pub mod message;
pub mod origination;
pub mod policy;
pub mod scenario;
pub mod shutdown;
