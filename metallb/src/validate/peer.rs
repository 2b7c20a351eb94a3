//! `BGPPeer`: AS numbers, addresses, timers (MetalLB's derivation rules, and the few
//! stricter checks), password, BFD profile, and the one-session-per-endpoint rule.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::DEFAULT_BGP_PORT;
use super::LeftOut;
use super::report::{Report, Subject};
use super::selectors::selectors;
use crate::config::{LbConfig, Peer, PeerAsn, PeerPassword};
use crate::crd::BGPPeer;
use crate::duration;
use crate::selector::Selector;

/// A `metav1.Duration` field: `Ok(None)` when unset, the problem reported otherwise.
fn timer(
    subject: &Subject,
    field: &str,
    value: &Option<String>,
    report: &mut Report,
) -> Result<Option<Duration>, ()> {
    let Some(text) = value.as_deref() else {
        return Ok(None);
    };
    match duration::parse(text) {
        Ok(parsed) if parsed.negative => {
            subject.problem(
                report,
                field,
                format!("{text:?} is negative; the peer is left out: give a positive duration"),
            );
            Err(())
        }
        Ok(parsed) => Ok(Some(parsed.magnitude)),
        Err(message) => {
            subject.problem(report, field, format!("{message}; the peer is left out"));
            Err(())
        }
    }
}

fn ip_field(
    subject: &Subject,
    field: &str,
    value: Option<&str>,
    what: &str,
    report: &mut Report,
) -> Result<Option<IpAddr>, ()> {
    let Some(text) = value else {
        return Ok(None);
    };
    text.parse::<IpAddr>().map(Some).map_err(|_| {
        subject.problem(
            report,
            field,
            format!("{text:?} is not an IP address; the peer is left out: give the {what} as an IPv4 or IPv6 address"),
        );
    })
}

pub(super) fn peer(
    subject: &Subject,
    object: &BGPPeer,
    config: &LbConfig,
    left_out: &LeftOut,
    sessions: &mut BTreeMap<(String, String, Vec<Selector>), String>,
    report: &mut Report,
) -> Option<Peer> {
    let spec = &object.spec;
    let mut ok = true;
    let non_empty = |value: &Option<String>| value.clone().filter(|text| !text.is_empty());
    let mut fail = |report: &mut Report, field: &str, message: String| {
        subject.problem(report, field, message);
        ok = false;
    };

    if spec.my_asn == 0 {
        fail(
            report,
            "spec.myASN",
            "myASN is missing (or 0); the peer is left out: give this cluster's AS number".into(),
        );
    }
    let peer_asn = spec.peer_asn.filter(|asn| *asn != 0);
    let dynamic_asn = non_empty(&spec.dynamic_asn);
    let asn = match (peer_asn, dynamic_asn.as_deref()) {
        (Some(_), Some(_)) => {
            fail(
                report,
                "spec.peerASN",
                "both peerASN and dynamicASN are given; the peer is left out: keep only one".into(),
            );
            None
        }
        (None, None) => {
            fail(
                report,
                "spec.peerASN",
                "neither peerASN nor dynamicASN is given; the peer is left out: give the router's AS number, or dynamicASN: internal|external".into(),
            );
            None
        }
        (Some(asn), None) => Some(PeerAsn::Fixed(asn)),
        (None, Some("internal")) => Some(PeerAsn::Internal),
        (None, Some("external")) => Some(PeerAsn::External),
        (None, Some(other)) => {
            fail(
                report,
                "spec.dynamicASN",
                format!("{other:?} is neither \"internal\" nor \"external\"; the peer is left out"),
            );
            None
        }
    };
    let ebgp_multihop = spec.ebgp_multi_hop.unwrap_or(false);
    if ebgp_multihop && peer_asn.is_some() && peer_asn == Some(spec.my_asn) {
        fail(
            report,
            "spec.ebgpMultiHop",
            "ebgpMultiHop is set on an iBGP peer (peerASN equals myASN); the peer is left out: remove ebgpMultiHop".into(),
        );
    }

    let peer_address = non_empty(&spec.peer_address);
    let interface = non_empty(&spec.interface);
    match (&peer_address, &interface) {
        (None, None) => fail(
            report,
            "spec.peerAddress",
            "neither peerAddress nor interface is given; the peer is left out: give the router's address".into(),
        ),
        (Some(_), Some(_)) => fail(
            report,
            "spec.interface",
            "both peerAddress and interface are given; the peer is left out: keep only one".into(),
        ),
        _ => {}
    }
    let address = ip_field(
        subject,
        "spec.peerAddress",
        peer_address.as_deref(),
        "router's address",
        report,
    );
    let source_address = ip_field(
        subject,
        "spec.sourceAddress",
        non_empty(&spec.source_address).as_deref(),
        "source address",
        report,
    );
    let router_id = match non_empty(&spec.router_id) {
        None => Ok(None),
        Some(text) => text.parse::<Ipv4Addr>().map(Some).map_err(|_| {
            let message = if text.parse::<IpAddr>().is_ok() {
                format!("{text:?} is an IPv6 address, but a BGP router ID is four bytes; the peer is left out: give an IPv4 address")
            } else {
                format!("{text:?} is not an IPv4 address; the peer is left out: give the router ID as an IPv4 address")
            };
            subject.problem(report, "spec.routerID", message);
        }),
    };
    let (Ok(address), Ok(source_address), Ok(router_id)) = (address, source_address, router_id)
    else {
        return None;
    };

    // The CRD's bounds; 0 is Go's "unset", which the CRD defaults to 179.
    let port = match spec.peer_port {
        None | Some(0) => DEFAULT_BGP_PORT,
        Some(port) if port > 16384 => {
            fail(
                report,
                "spec.peerPort",
                format!(
                    "{port} is out of range; the peer is left out: give a port from 1 to 16384 (MetalLB's bound)"
                ),
            );
            port
        }
        Some(port) => port,
    };

    let (hold_time, keepalive_time) = {
        let hold = timer(subject, "spec.holdTime", &spec.hold_time, report);
        let keepalive = timer(subject, "spec.keepaliveTime", &spec.keepalive_time, report);
        match (hold, keepalive) {
            (Ok(hold), Ok(keepalive)) => match timers(subject, hold, keepalive, spec, report) {
                Ok(pair) => pair,
                Err(()) => return None,
            },
            _ => return None,
        }
    };
    let connect_time = match timer(subject, "spec.connectTime", &spec.connect_time, report) {
        Err(()) => return None,
        Ok(None) => None,
        Ok(Some(connect)) => {
            let text = spec.connect_time.as_deref().unwrap_or_default();
            if connect.subsec_nanos() != 0 {
                fail(
                    report,
                    "spec.connectTime",
                    format!("{text:?} is not a whole number of seconds; the peer is left out"),
                );
            } else if !(1..=65_535).contains(&connect.as_secs()) {
                fail(
                    report,
                    "spec.connectTime",
                    format!("{text:?} is out of range; the peer is left out: give 1s to 65535s"),
                );
            }
            Some(connect)
        }
    };

    let node_selectors = selectors(subject, "spec.nodeSelectors", &spec.node_selectors, report);

    let password = non_empty(&spec.password);
    let secret = spec.password_secret.as_ref().and_then(|secret| {
        secret
            .name
            .clone()
            .filter(|name| !name.is_empty())
            .map(|name| (secret.namespace.clone(), name))
    });
    let password = match (password, secret) {
        (Some(_), Some(_)) => {
            fail(
                report,
                "spec.passwordSecret",
                "both password and passwordSecret are given; the peer is left out: keep only one"
                    .into(),
            );
            None
        }
        (Some(password), None) => Some(PeerPassword::Inline(password)),
        (None, Some((namespace, name))) => Some(PeerPassword::Secret {
            namespace: namespace
                .filter(|namespace| !namespace.is_empty())
                .unwrap_or_else(|| subject.namespace.clone()),
            name,
        }),
        (None, None) => None,
    };

    let bfd_profile = non_empty(&spec.bfd_profile);
    if let Some(profile) = &bfd_profile
        && !config.bfd_profiles.contains_key(profile)
    {
        let message = if left_out.bfd_profiles.contains(profile) {
            format!(
                "BFDProfile {profile:?} is invalid and left out (see its own problem), so this peer is left out too: fix the profile"
            )
        } else {
            format!(
                "no BFDProfile named {profile:?}; the peer is left out: create the profile or fix the name"
            )
        };
        fail(report, "spec.bfdProfile", message);
    }

    let (Some(asn), Some(node_selectors), true) = (asn, node_selectors, ok) else {
        return None;
    };

    // Two peers for the same session from the same nodes would collide at the router.
    let endpoint = match (&address, &interface) {
        (Some(address), _) => address.to_string(),
        (None, Some(interface)) => format!("interface {interface}"),
        (None, None) => String::new(),
    };
    let vrf = non_empty(&spec.vrf).unwrap_or_default();
    let mut normalized = node_selectors.clone();
    normalized.sort();
    let session = (endpoint.clone(), vrf.clone(), normalized);
    if let Some(first) = sessions.get(&session) {
        let message = format!(
            "BGPPeer {first:?} already opens a session to {endpoint}{} from the same nodes and comes first by name; this one is left out: remove it or give the two peers different nodeSelectors",
            if vrf.is_empty() {
                String::new()
            } else {
                format!(" in VRF {vrf}")
            }
        );
        subject.problem(report, "spec.peerAddress", message);
        return None;
    }
    sessions.insert(session, subject.name.clone());

    if !vrf.is_empty() {
        subject.unsupported(
            report,
            "spec.vrf",
            "sessions in a VRF are not implemented: the session is opened in the default VRF",
        );
    }
    if spec.local_asn.is_some_and(|asn| asn != 0) {
        subject.unsupported(
            report,
            "spec.localASN",
            "local-as is not implemented: myASN is presented to the peer",
        );
    }
    if interface.is_some() {
        subject.unsupported(
            report,
            "spec.interface",
            "unnumbered BGP is not implemented: no session is opened for this peer",
        );
    }
    if spec.disable_mp == Some(true) {
        subject.unsupported(
            report,
            "spec.disableMP",
            "deprecated in MetalLB and without effect: one multiprotocol session is used",
        );
    }
    if bfd_profile.is_some() && ebgp_multihop {
        subject.unsupported(
            report,
            "spec.bfdProfile",
            "multihop BFD (RFC 5883) is not implemented: this multihop session runs without BFD",
        );
    }

    Some(Peer {
        name: subject.name.clone(),
        my_asn: spec.my_asn,
        peer_asn: asn,
        address,
        interface,
        source_address,
        port,
        hold_time,
        keepalive_time,
        connect_time,
        router_id,
        node_selectors,
        password,
        bfd_profile,
        graceful_restart: spec.enable_graceful_restart.unwrap_or(false),
        ebgp_multihop,
        dual_stack: spec.dual_stack_address_family.unwrap_or(false),
    })
}

/// MetalLB's timer rules: one given → the other derived (keepalive = hold / 3, hold =
/// keepalive × 3); the hold time, in whole seconds, is 0 or at least 3; keepalive
/// not above hold.
fn timers(
    subject: &Subject,
    hold: Option<Duration>,
    keepalive: Option<Duration>,
    spec: &crate::crd::BGPPeerSpec,
    report: &mut Report,
) -> Result<(Option<Duration>, Option<Duration>), ()> {
    let hold_text = spec.hold_time.as_deref().unwrap_or_default();
    let keepalive_text = spec.keepalive_time.as_deref().unwrap_or_default();
    let (hold, keepalive, derived_hold) = match (hold, keepalive) {
        (None, None) => return Ok((None, None)),
        (Some(hold), Some(keepalive)) => (hold, keepalive, false),
        (Some(hold), None) => (hold, hold / 3, false),
        (None, Some(keepalive)) => (keepalive.saturating_mul(3), keepalive, true),
    };
    if !hold.is_zero() && hold < Duration::from_secs(3) {
        let message = if derived_hold {
            format!(
                "keepaliveTime {keepalive_text:?} implies a hold time of 3 × that, below 3 s; the peer is left out: give a keepalive of at least 1s, or a holdTime"
            )
        } else if hold < Duration::from_secs(1) {
            format!(
                "{hold_text:?} is below 3 s (MetalLB would round it to 0, which turns keepalives off); the peer is left out: give 0s to turn them off, or at least 3s"
            )
        } else {
            format!("{hold_text:?} is below 3 s; the peer is left out: give 0s or at least 3s")
        };
        let field = if derived_hold {
            "spec.keepaliveTime"
        } else {
            "spec.holdTime"
        };
        subject.problem(report, field, message);
        return Err(());
    }
    if keepalive > hold {
        subject.problem(
            report,
            "spec.keepaliveTime",
            format!("{keepalive_text:?} is longer than holdTime {hold_text:?}; the peer is left out: give a keepalive not above the hold time (a third of it is usual)"),
        );
        return Err(());
    }
    Ok((Some(hold), Some(keepalive)))
}
