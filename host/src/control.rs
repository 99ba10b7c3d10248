//! Control API: running policy version, swaps, directory reloads (admin token).
