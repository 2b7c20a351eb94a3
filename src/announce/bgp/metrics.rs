//! MetalLB's BGP metric names, so existing dashboards and alerts keep working: the
//! native speaker's (`session_up`, `updates_total`, `announced_prefixes_total`,
//! `pending_prefixes_total`) and the message counters of its FRR mode, all labelled
//! with `peer` = `address:port` as MetalLB's native speaker labels them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `peer` label: `address:port` (IPv6 addresses in brackets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// `address:port`.
    pub peer: String,
}

/// The speaker's metrics. MetalLB's FRR-mode message counts (`opens_sent`, ...) are
/// gauges here because their names lack the `_total` suffix a counter gets.
#[derive(Debug, Default)]
pub struct BgpMetrics {
    /// `metallb_bgp_session_up`: 1 while Established.
    pub session_up: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_updates_total`: UPDATE messages sent.
    pub updates: Family<PeerLabel, Counter>,
    /// `metallb_bgp_announced_prefixes_total`: prefixes announced now.
    pub announced_prefixes: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_pending_prefixes_total`: prefixes waiting for the session.
    pub pending_prefixes: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_opens_sent`.
    pub opens_sent: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_opens_received`.
    pub opens_received: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_notifications_sent`.
    pub notifications_sent: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_updates_total_received`.
    pub updates_received: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_keepalives_sent`.
    pub keepalives_sent: Family<PeerLabel, Gauge>,
    /// `metallb_bgp_keepalives_received`.
    pub keepalives_received: Family<PeerLabel, Gauge>,
}

impl BgpMetrics {
    /// Registers every metric into `registry` under MetalLB's names.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("metallb_bgp");
        r.register(
            "session_up",
            "BGP session state (1 is up, 0 is down)",
            self.session_up.clone(),
        );
        // A counter gets `_total` appended: this is `metallb_bgp_updates_total`.
        r.register(
            "updates",
            "Number of BGP UPDATE messages sent",
            self.updates.clone(),
        );
        r.register(
            "announced_prefixes_total",
            "Number of prefixes currently being advertised on the BGP session",
            self.announced_prefixes.clone(),
        );
        r.register(
            "pending_prefixes_total",
            "Number of prefixes that should be advertised on the BGP session",
            self.pending_prefixes.clone(),
        );
        r.register(
            "opens_sent",
            "Number of BGP open messages sent",
            self.opens_sent.clone(),
        );
        r.register(
            "opens_received",
            "Number of BGP open messages received",
            self.opens_received.clone(),
        );
        r.register(
            "notifications_sent",
            "Number of BGP notification messages sent",
            self.notifications_sent.clone(),
        );
        r.register(
            "updates_total_received",
            "Number of BGP UPDATE messages received",
            self.updates_received.clone(),
        );
        r.register(
            "keepalives_sent",
            "Number of BGP keepalive messages sent",
            self.keepalives_sent.clone(),
        );
        r.register(
            "keepalives_received",
            "Number of BGP keepalive messages received",
            self.keepalives_received.clone(),
        );
    }

    /// Forgets a peer's series (its session was removed).
    pub fn remove(&self, peer: &str) {
        let label = PeerLabel { peer: peer.into() };
        for family in [
            &self.session_up,
            &self.announced_prefixes,
            &self.pending_prefixes,
            &self.opens_sent,
            &self.opens_received,
            &self.notifications_sent,
            &self.updates_received,
            &self.keepalives_sent,
            &self.keepalives_received,
        ] {
            family.remove(&label);
        }
        self.updates.remove(&label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_metallbs_names() {
        let metrics = BgpMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let peer = PeerLabel {
            peer: "10.0.0.1:179".into(),
        };
        metrics.session_up.get_or_create(&peer).set(1);
        metrics.updates.get_or_create(&peer).inc_by(3);
        metrics.announced_prefixes.get_or_create(&peer).set(2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("metallb_bgp_session_up{peer=\"10.0.0.1:179\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("metallb_bgp_updates_total{peer=\"10.0.0.1:179\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("metallb_bgp_announced_prefixes_total{peer=\"10.0.0.1:179\"} 2"),
            "{text}"
        );
        metrics.remove("10.0.0.1:179");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("10.0.0.1:179"), "{text}");
    }
}
