//! This host's own addresses: the ones NodePorts are served on.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{NetifError, is_ipv6_link_local, message_address};

/// Every address of this host that may serve NodePorts: all addresses except those
/// on `service_interface`, loopback addresses and IPv6 link-local ones (kube-proxy's
/// default when `nodePortAddresses` is unset).
pub async fn host_addresses(service_interface: &str) -> Result<Vec<IpAddr>, NetifError> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::link::LinkAttribute;

    let failed = |reason: String| NetifError::List {
        name: "all interfaces".to_string(),
        reason,
    };
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| failed(e.to_string()))?;
    let connection = tokio::spawn(connection);
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let skip: BTreeSet<u32> = links
        .iter()
        .filter(|link| {
            link.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(name) if name == service_interface))
        })
        .map(|link| link.header.index)
        .collect();
    let messages: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed(e.to_string()))?;
    connection.abort();
    let mut addresses: Vec<IpAddr> = messages
        .iter()
        .filter(|message| !skip.contains(&message.header.index))
        .filter_map(message_address)
        .filter(|ip| !ip.is_loopback() && !is_ipv6_link_local(ip))
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}
