//! The decision service the proxies ask: JSON-RPC over TCP (netstrings) and HTTP.
