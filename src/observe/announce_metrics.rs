//! The announcers' metrics: their counters exist from the agent's start so the
//! registry can hold them, though the announcers start later (or never). The layer-2
//! and BGP counters register themselves under MetalLB's names; the membership's and the
//! BFD sessions' are read here on each scrape, once they run.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::announce::bfd::BfdManager;
use crate::announce::bgp::BgpMetrics;
use crate::announce::l2::L2Metrics;
use crate::announce::membership::MembershipMetrics;

/// The counters of the announcers, shared between them and the metrics registry.
#[derive(Debug, Default, Clone)]
pub struct AnnounceMetrics {
    /// The layer-2 announcer's (`metallb_layer2_*` and `ipvs_proxy_layer2_*`).
    pub l2: Arc<L2Metrics>,
    /// The BGP speaker's (`metallb_bgp_*`).
    pub bgp: Arc<BgpMetrics>,
    /// The membership's, set when it starts.
    pub membership: Arc<OnceLock<Arc<MembershipMetrics>>>,
    /// The BFD sessions, set with the first session.
    pub bfd: Arc<OnceLock<Arc<BfdManager>>>,
}

impl AnnounceMetrics {
    /// Registers every announcer metric with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.l2.register(registry);
        self.bgp.register(registry);
        registry.register_collector(Box::new(LateCollector {
            membership: self.membership.clone(),
            bfd: self.bfd.clone(),
        }));
    }
}

/// Reads the membership's counters and the BFD sessions' states on each scrape.
#[derive(Debug)]
struct LateCollector {
    membership: Arc<OnceLock<Arc<MembershipMetrics>>>,
    bfd: Arc<OnceLock<Arc<BfdManager>>>,
}

impl Collector for LateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(membership) = self.membership.get() {
            let get = MembershipMetrics::get;
            let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "ipvs_proxy_membership_members",
                "Live agents in the membership, this node included",
                None,
                MetricType::Gauge,
            )?;
            gauge(get(&membership.members)).encode(metric)?;
            let counters: [(&str, &str, &AtomicU64); 6] = [
                (
                    "ipvs_proxy_membership_datagrams_sent",
                    "Membership datagrams sent",
                    &membership.datagrams_sent,
                ),
                (
                    "ipvs_proxy_membership_bytes_sent",
                    "Membership bytes sent (sealed UDP payload)",
                    &membership.bytes_sent,
                ),
                (
                    "ipvs_proxy_membership_datagrams_received",
                    "Membership datagrams received and authenticated",
                    &membership.datagrams_received,
                ),
                (
                    "ipvs_proxy_membership_bytes_received",
                    "Membership bytes received in authenticated datagrams",
                    &membership.bytes_received,
                ),
                (
                    "ipvs_proxy_membership_member_ups",
                    "Agents that joined or came back",
                    &membership.member_ups,
                ),
                (
                    "ipvs_proxy_membership_member_downs",
                    "Agents that left or were declared down",
                    &membership.member_downs,
                ),
            ];
            for (name, help, counter) in counters {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(get(counter)).encode(metric)?;
            }
            let mut refused = encoder.encode_descriptor(
                "ipvs_proxy_membership_refused",
                "Membership datagrams refused, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, counter) in [
                ("malformed", &membership.refused_malformed),
                ("unauthenticated", &membership.refused_unauthenticated),
                ("stale", &membership.refused_stale),
                ("replayed", &membership.refused_replayed),
            ] {
                ConstCounter::new(get(counter))
                    .encode(refused.encode_family(&[("reason", reason)])?)?;
            }
        }
        if let Some(bfd) = self.bfd.get() {
            let mut up = encoder.encode_descriptor(
                "metallb_bfd_session_up",
                "BFD session state (1 is up, 0 is down)",
                None,
                MetricType::Gauge,
            )?;
            for (key, state) in bfd.sessions() {
                let labels = [("peer", key.peer.to_string())];
                ConstGauge::new(i64::from(state.is_up())).encode(up.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
