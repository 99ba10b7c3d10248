//! The user directory (CVW-1, CVW-3): users and named policies from a TOML file.
