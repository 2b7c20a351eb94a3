//! OPEN checks (RFC 4271 §6.2, RFC 6793, RFC 6286) and what two OPENs negotiate.

use std::net::Ipv4Addr;

use super::Config;
use crate::packet::notification::{ErrorCode, Notification, OpenError};
use crate::packet::open::{BGP_VERSION, GracefulRestart, Open, OptionalParameter};
use crate::packet::{AS_TRANS, Family, SessionCaps};

/// Which AS the peer may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAs {
    /// Exactly this AS.
    Exact(u32),
    /// Our own AS (MetalLB's `dynamicASN: internal`).
    Internal,
    /// Any AS but ours (`dynamicASN: external`).
    External,
}

/// What the OPEN exchange settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS.
    pub peer_as: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Same AS as ours.
    pub internal: bool,
    /// The hold time in seconds: the smaller of both proposals; 0 means none.
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs; 0 means none are sent.
    pub keepalive: u16,
    /// What the codec needs (4-octet AS when both sides have it).
    pub caps: SessionCaps,
    /// The families both sides announced (IPv4 unicast when the peer announced none,
    /// RFC 4760 §8).
    pub families: Vec<Family>,
    /// The peer can refresh routes.
    pub peer_route_refresh: bool,
    /// The peer's graceful restart capability.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Both sides advertised graceful restart: End-of-RIB markers are due after the
    /// initial table, and the peer keeps our routes across our restart.
    pub graceful_restart: bool,
    /// We advertised the restart state (R bit).
    pub local_restarting: bool,
    /// The peer's OPEN.
    pub peer_open: Open,
}

fn reject(subcode: OpenError, data: Vec<u8>) -> Notification {
    Notification {
        code: ErrorCode::Open(subcode),
        data,
    }
}

/// Checks the peer's OPEN against our configuration; on success what was negotiated,
/// otherwise the NOTIFICATION to send.
pub fn check_open(config: &Config, open: &Open) -> Result<Negotiated, Notification> {
    if open.version != BGP_VERSION {
        // The data is the largest version we support, as 2 octets (RFC 4271 §6.2).
        return Err(reject(
            OpenError::UnsupportedVersionNumber,
            u16::from(BGP_VERSION).to_be_bytes().to_vec(),
        ));
    }
    if let Some(OptionalParameter::Unknown { kind, .. }) = open
        .params
        .iter()
        .find(|p| matches!(p, OptionalParameter::Unknown { .. }))
    {
        return Err(reject(OpenError::UnsupportedOptionalParameter, vec![*kind]));
    }
    let peer_as = open.asn();
    let as_ok = match config.peer_as {
        PeerAs::Exact(asn) => peer_as == asn,
        PeerAs::Internal => peer_as == config.local_as,
        PeerAs::External => peer_as != config.local_as,
    };
    // With the 4-octet capability, My AS must be the ASN itself or AS_TRANS.
    let my_as_ok = open.four_octet_as().is_none_or(|asn| {
        u32::from(open.my_as) == asn || (open.my_as == AS_TRANS && asn > u32::from(u16::MAX))
    });
    if !as_ok || !my_as_ok || peer_as == 0 {
        return Err(reject(
            OpenError::BadPeerAs,
            open.my_as.to_be_bytes().to_vec(),
        ));
    }
    let internal = peer_as == config.local_as;
    // RFC 6286: any non-zero identifier, unique within the AS (for eBGP two routers may
    // share one, but not with us on the same session).
    if open.bgp_id.is_unspecified() || open.bgp_id == config.router_id {
        return Err(reject(
            OpenError::BadBgpIdentifier,
            open.bgp_id.octets().to_vec(),
        ));
    }
    if matches!(open.hold_time, 1 | 2) {
        return Err(reject(OpenError::UnacceptableHoldTime, Vec::new()));
    }
    let hold_time = open.hold_time.min(config.hold_time);
    let keepalive = match hold_time {
        0 => 0,
        hold => config
            .keepalive_time
            .filter(|&k| k > 0 && k < hold)
            .unwrap_or(hold / 3)
            .max(1),
    };
    let peer_families: Vec<Family> = open.families().collect();
    let peer_families = if peer_families.is_empty() {
        vec![Family::IPV4_UNICAST]
    } else {
        peer_families
    };
    let families: Vec<Family> = config
        .families
        .iter()
        .copied()
        .filter(|f| peer_families.contains(f))
        .collect();
    if families.is_empty() && !config.families.is_empty() {
        // We need at least one common family: name ours (RFC 5492 §3).
        let mut data = Vec::new();
        for f in &config.families {
            data.extend_from_slice(&[1, 4]);
            data.extend_from_slice(&f.afi.to_be_bytes());
            data.extend_from_slice(&[0, f.safi]);
        }
        return Err(reject(OpenError::UnsupportedCapability, data));
    }
    let peer_graceful_restart = open.graceful_restart().cloned();
    Ok(Negotiated {
        peer_as,
        peer_id: open.bgp_id,
        internal,
        hold_time,
        keepalive,
        caps: SessionCaps {
            four_octet_as: open.four_octet_as().is_some(),
        },
        families,
        peer_route_refresh: open.route_refresh(),
        graceful_restart: peer_graceful_restart.is_some() && config.graceful_restart.is_some(),
        peer_graceful_restart,
        local_restarting: config.graceful_restart.is_some_and(|g| g.restarting),
        peer_open: open.clone(),
    })
}
