//! The layer-2 announcer's counters: MetalLB's layer-2 metrics under their names (so
//! existing dashboards keep working), plus `ipvs_proxy_l2_*` ones.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `metallb_layer2_requests_received` | counter¹ | `ip` | ARP requests and Neighbor Solicitations received for owned IPs |
//! | `metallb_layer2_responses_sent` | counter¹ | `ip` | replies sent to them |
//! | `metallb_layer2_gratuitous_sent` | counter¹ | `ip` | gratuitous ARP frames and unsolicited advertisements sent on takeover |
//! | `ipvs_proxy_l2_requests_answered_total` | counter | `protocol` (`arp`, `ndp`) | replies sent |
//! | `ipvs_proxy_l2_gratuitous_sent_total` | counter | `protocol` | takeover frames sent |
//! | `ipvs_proxy_l2_ips_acquired_total` | counter | | an IP started being answered on an interface |
//! | `ipvs_proxy_l2_ips_released_total` | counter | | an IP stopped being answered on an interface |
//! | `ipvs_proxy_l2_invalid_frames_total` | counter | | malformed or invalid requests dropped |
//! | `ipvs_proxy_l2_socket_errors_total` | counter | | failed sends and receives |
//! | `ipvs_proxy_l2_interface_rescans_total` | counter | | link, address and route re-reads after netlink events |
//! | `ipvs_proxy_l2_owned_ips` | gauge | | IPs this node owns (the announcer's input) |
//! | `ipvs_proxy_l2_unplaced_ips` | gauge | | owned IPs without any usable interface |
//! | `ipvs_proxy_l2_interfaces` | gauge | | interfaces with a running responder |
//!
//! ¹ MetalLB's Go client exposes them as counters without the `_total` suffix that
//! OpenMetrics counters must carry here, so they are exposed with type `unknown`,
//! which keeps the exact names (PromQL's `rate()` does not look at the type).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// MetalLB's per-IP counts of one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpCounts {
    /// Requests received for it (`metallb_layer2_requests_received`).
    pub requests_received: u64,
    /// Replies sent (`metallb_layer2_responses_sent`).
    pub responses_sent: u64,
    /// Gratuitous frames sent (`metallb_layer2_gratuitous_sent`).
    pub gratuitous_sent: u64,
}

/// The protocol of a frame, for the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// ARP (IPv4).
    Arp,
    /// Neighbor Discovery (IPv6).
    Ndp,
}

impl Protocol {
    /// The protocol that resolves `ip`.
    pub fn of(ip: IpAddr) -> Protocol {
        match ip {
            IpAddr::V4(_) => Protocol::Arp,
            IpAddr::V6(_) => Protocol::Ndp,
        }
    }
}

/// The announcer's counters. Shared (`Arc`) between the announcer, which counts, and
/// the metrics registry, which renders them on each scrape ([`L2Metrics::register`]).
#[derive(Debug, Default)]
pub struct L2Metrics {
    /// Per IP; an address keeps its entry once counted, as MetalLB's do.
    per_ip: Mutex<BTreeMap<IpAddr, IpCounts>>,
    answered_arp: AtomicU64,
    answered_ndp: AtomicU64,
    gratuitous_arp: AtomicU64,
    gratuitous_ndp: AtomicU64,
    acquired: AtomicU64,
    released: AtomicU64,
    invalid_frames: AtomicU64,
    socket_errors: AtomicU64,
    rescans: AtomicU64,
    owned: AtomicI64,
    unplaced: AtomicI64,
    interfaces: AtomicI64,
}

impl L2Metrics {
    /// Registers the counters with `registry`, which reads them on each scrape.
    pub fn register(self: &std::sync::Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(std::sync::Arc::clone(self)));
    }

    fn per_ip(&self) -> std::sync::MutexGuard<'_, BTreeMap<IpAddr, IpCounts>> {
        // Counts stay consistent under a panic (each update is one addition).
        self.per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The per-IP counts of `ip` (zero when never counted).
    pub fn ip(&self, ip: IpAddr) -> IpCounts {
        self.per_ip().get(&ip).copied().unwrap_or_default()
    }

    /// The gratuitous frames sent for all IPs together.
    pub fn gratuitous_total(&self) -> u64 {
        self.gratuitous_arp.load(Ordering::Relaxed) + self.gratuitous_ndp.load(Ordering::Relaxed)
    }

    /// The malformed or invalid requests dropped.
    pub fn invalid_frames(&self) -> u64 {
        self.invalid_frames.load(Ordering::Relaxed)
    }

    /// The link re-reads after netlink events.
    pub fn rescans(&self) -> u64 {
        self.rescans.load(Ordering::Relaxed)
    }

    pub(crate) fn request_received(&self, ip: IpAddr) {
        self.per_ip().entry(ip).or_default().requests_received += 1;
    }

    pub(crate) fn response_sent(&self, ip: IpAddr) {
        self.per_ip().entry(ip).or_default().responses_sent += 1;
        match Protocol::of(ip) {
            Protocol::Arp => &self.answered_arp,
            Protocol::Ndp => &self.answered_ndp,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn gratuitous_sent(&self, ip: IpAddr) {
        self.per_ip().entry(ip).or_default().gratuitous_sent += 1;
        match Protocol::of(ip) {
            Protocol::Arp => &self.gratuitous_arp,
            Protocol::Ndp => &self.gratuitous_ndp,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn acquired(&self) {
        self.acquired.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn released(&self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn invalid_frame(&self) {
        self.invalid_frames.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn socket_error(&self) {
        self.socket_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rescanned(&self) {
        self.rescans.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_state(&self, owned: usize, unplaced: usize, interfaces: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.owned.store(gauge(owned), Ordering::Relaxed);
        self.unplaced.store(gauge(unplaced), Ordering::Relaxed);
        self.interfaces.store(gauge(interfaces), Ordering::Relaxed);
    }
}

impl Collector for L2Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_ip = self.per_ip().clone();
        type Field = fn(&IpCounts) -> u64;
        let metallb: [(&str, &str, Field); 3] = [
            (
                "metallb_layer2_requests_received",
                "Number of layer2 requests received for owned IPs",
                |c| c.requests_received,
            ),
            (
                "metallb_layer2_responses_sent",
                "Number of layer2 responses sent for owned IPs in response to requests",
                |c| c.responses_sent,
            ),
            (
                "metallb_layer2_gratuitous_sent",
                "Number of gratuitous layer2 packets sent for owned IPs as a result of failovers",
                |c| c.gratuitous_sent,
            ),
        ];
        for (name, help, field) in metallb {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Unknown)?;
            for (ip, counts) in &per_ip {
                let labels = [("ip", ip.to_string())];
                let value = i64::try_from(field(counts)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }

        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let by_protocol: [(&str, &str, &AtomicU64, &AtomicU64); 2] = [
            (
                "ipvs_proxy_l2_requests_answered",
                "ARP requests and Neighbor Solicitations answered, by protocol",
                &self.answered_arp,
                &self.answered_ndp,
            ),
            (
                "ipvs_proxy_l2_gratuitous_sent",
                "Gratuitous ARP frames and unsolicited Neighbor Advertisements sent, by protocol",
                &self.gratuitous_arp,
                &self.gratuitous_ndp,
            ),
        ];
        for (name, help, arp, ndp) in by_protocol {
            let counter = ConstCounter::new(0u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (protocol, value) in [("arp", arp), ("ndp", ndp)] {
                let labels = [("protocol", protocol)];
                ConstCounter::new(load(value)).encode(metric.encode_family(&labels)?)?;
            }
        }

        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "ipvs_proxy_l2_ips_acquired",
                "Times an IP started being answered on an interface",
                &self.acquired,
            ),
            (
                "ipvs_proxy_l2_ips_released",
                "Times an IP stopped being answered on an interface",
                &self.released,
            ),
            (
                "ipvs_proxy_l2_invalid_frames",
                "Malformed or invalid ARP requests and Neighbor Solicitations dropped",
                &self.invalid_frames,
            ),
            (
                "ipvs_proxy_l2_socket_errors",
                "Failed sends and receives on the layer-2 sockets",
                &self.socket_errors,
            ),
            (
                "ipvs_proxy_l2_interface_rescans",
                "Re-reads of links, addresses and default routes after netlink events",
                &self.rescans,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(load(value));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }

        let gauges: [(&str, &str, &AtomicI64); 3] = [
            (
                "ipvs_proxy_l2_owned_ips",
                "LoadBalancer IPs this node owns in layer-2 mode",
                &self.owned,
            ),
            (
                "ipvs_proxy_l2_unplaced_ips",
                "Owned layer-2 IPs without any usable interface to answer on",
                &self.unplaced,
            ),
            (
                "ipvs_proxy_l2_interfaces",
                "Interfaces with a running ARP/NDP responder",
                &self.interfaces,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value.load(Ordering::Relaxed));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn metallb_names_and_ours_are_rendered() {
        let metrics = Arc::new(L2Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let ip6: IpAddr = "2001:db8::10".parse().unwrap();
        metrics.request_received(ip);
        metrics.response_sent(ip);
        metrics.gratuitous_sent(ip);
        metrics.gratuitous_sent(ip);
        metrics.gratuitous_sent(ip6);
        metrics.set_state(2, 1, 3);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE metallb_layer2_requests_received unknown",
            "metallb_layer2_requests_received{ip=\"192.0.2.10\"} 1",
            "metallb_layer2_responses_sent{ip=\"192.0.2.10\"} 1",
            "metallb_layer2_gratuitous_sent{ip=\"192.0.2.10\"} 2",
            "metallb_layer2_gratuitous_sent{ip=\"2001:db8::10\"} 1",
            "ipvs_proxy_l2_requests_answered_total{protocol=\"arp\"} 1",
            "ipvs_proxy_l2_gratuitous_sent_total{protocol=\"ndp\"} 1",
            "ipvs_proxy_l2_owned_ips 2",
            "ipvs_proxy_l2_unplaced_ips 1",
            "ipvs_proxy_l2_interfaces 3",
            "ipvs_proxy_l2_ips_acquired_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert_eq!(metrics.gratuitous_total(), 3);
        assert_eq!(metrics.ip(ip).gratuitous_sent, 2);
    }
}
