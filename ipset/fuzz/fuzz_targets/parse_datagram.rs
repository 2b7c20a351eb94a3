//! Feeds arbitrary bytes to the reply parser and emits whatever parses: neither may panic.
#![no_main]

use ipset_netlink::{emit_datagram, parse_datagram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = parse_datagram(data) {
        let _ = emit_datagram(&messages);
    }
});
