//! `cvw serve`: wiring of directory, policy, watchers, control API and decision service.
