//! Pure-Rust nfnetlink client for Linux ipsets.
