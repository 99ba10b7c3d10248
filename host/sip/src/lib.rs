//! SIP user agent (lands with issue 4).
