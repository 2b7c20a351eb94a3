//! Feeds arbitrary bytes to the IPVS message parser: it must never panic, and whatever it
//! accepts must emit to bytes that parse and emit identically, and convert to plain types
//! without panicking.
#![no_main]

use ipvs_netlink::convert;
use ipvs_netlink::packet::IpvsMessage;
use ipvs_netlink::types::AddressFamily;
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;

type Message = NetlinkMessage<GenlMessage<IpvsMessage>>;

fuzz_target!(|data: &[u8]| {
    let Ok(mut message) = Message::deserialize(data) else {
        return;
    };
    // A parsed header's length can disagree with what the payload re-emits to (trailing
    // bytes); netlink-packet-core's emit then panics, so make the header consistent first.
    message.finalize();
    let mut emitted = vec![0; message.buffer_len()];
    message.serialize(&mut emitted);
    let again = Message::deserialize(&emitted).expect("emitted bytes parse");
    let mut emitted_again = vec![0; again.buffer_len()];
    again.serialize(&mut emitted_again);
    assert_eq!(emitted, emitted_again);

    if let NetlinkPayload::InnerMessage(genl) = &message.payload {
        if let Some(attrs) = genl.payload.service() {
            let _ = convert::service_from_attributes(attrs);
        }
        if let Some(attrs) = genl.payload.destination() {
            let _ = convert::destination_from_attributes(attrs, AddressFamily::Inet);
        }
        let _ = convert::info_from_message(&genl.payload);
        let _ = convert::timeouts_from_message(&genl.payload);
    }
});
