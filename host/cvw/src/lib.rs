//! The cvw host: loads a Call-via-Work policy component and connects it to SIP proxies.
//!
//! Data flows one way: SIP in ([`message`]) → facts ([`policy::model`]) → policy
//! ([`policy`]) → decision → proxy action ([`adapters`], served by [`service`]).

pub mod adapters;
pub mod api;
pub mod calllog;
pub mod cli;
pub mod control;
pub mod directory;
pub mod message;
pub mod origination;
pub mod policy;
pub mod scenario;
pub mod serve;
pub mod service;
