//! The address allocation without an API server: with the static source every node
//! computes the same allocation from the same manifests (the allocation is a pure,
//! order-independent function), and writes it into the LoadBalancer Services'
//! `status.loadBalancer.ingress` before anything downstream sees them, just as the
//! cluster's allocator writes it through the API server. The proxy model and the
//! announce decision then read the addresses the same way in both cases.
//!
//! Only LoadBalancer Services of our class are touched, and only while at least one
//! `IPAddressPool` is configured: manifests that carry their own ingress addresses
//! and no MetalLB configuration keep them as written.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use metallb_config::LbConfig;
use tracing::{info, warn};

use super::ipam::allocate::{Allocation, NamespaceLabels, OurServices, allocate};
use super::service::LbService;
use crate::model::ServiceKey;
use crate::source::SourceEvent;

/// The LoadBalancer Services seen and the allocation last written into them.
#[derive(Debug, Default)]
pub struct StaticAllocator {
    class: Option<String>,
    config: LbConfig,
    namespaces: NamespaceLabels,
    /// Our LoadBalancer Services as the source sent them (few: kept whole so a changed
    /// allocation can be sent downstream again).
    services: BTreeMap<ServiceKey, Service>,
    /// The addresses written into each Service.
    written: BTreeMap<ServiceKey, Vec<IpAddr>>,
    /// The last allocation's refusals, to log each once.
    refused: BTreeMap<ServiceKey, String>,
    /// The last allocation, with its reasons (for `ipvs-proxy plan`).
    last: Allocation,
}

impl StaticAllocator {
    /// An allocator for Services of `class` (`None`: Services without a class).
    pub fn new(class: Option<String>) -> StaticAllocator {
        StaticAllocator {
            class,
            ..StaticAllocator::default()
        }
    }

    /// Whether it allocates at all (a pool is configured).
    pub fn is_active(&self) -> bool {
        !self.config.pools.is_empty()
    }

    /// The allocation's view of a source event: LoadBalancer Services get their
    /// addresses written in; other Services whose addresses moved because of this one
    /// (freed or taken) follow as extra `ServiceApplied` events.
    pub fn on_event(&mut self, event: SourceEvent) -> Vec<SourceEvent> {
        let mut event = event;
        match &mut event {
            SourceEvent::Snapshot { services, .. } | SourceEvent::ServicesRelisted(services) => {
                self.services.clear();
                for service in services.iter() {
                    self.remember(service);
                }
            }
            SourceEvent::Early { services, .. } => {
                for service in services.iter() {
                    self.remember(service);
                }
            }
            SourceEvent::ServiceApplied(service) => {
                let key = ServiceKey::of_service(service);
                if !self.remember(service) {
                    self.services.remove(&key);
                }
            }
            SourceEvent::ServiceDeleted(key) => {
                self.services.remove(key);
            }
            SourceEvent::SlicesRelisted(_)
            | SourceEvent::SliceApplied(_)
            | SourceEvent::SliceDeleted { .. } => return vec![event],
        }
        if !self.is_active() {
            return vec![event];
        }
        let changed = self.reallocate();
        // Rewrite the Services the event carries; the others that changed follow.
        let mut carried = Vec::new();
        match &mut event {
            SourceEvent::Snapshot { services, .. }
            | SourceEvent::ServicesRelisted(services)
            | SourceEvent::Early { services, .. } => {
                for service in services.iter_mut() {
                    carried.push(ServiceKey::of_service(service));
                    self.write(service);
                }
            }
            SourceEvent::ServiceApplied(service) => {
                carried.push(ServiceKey::of_service(service));
                self.write(service);
            }
            _ => {}
        }
        let mut events = vec![event];
        events.extend(self.followers(changed, &carried));
        events
    }

    /// A new configuration (pools) or new namespace labels: the changed Services are
    /// sent again with their new addresses.
    pub fn set_config(
        &mut self,
        config: LbConfig,
        namespaces: NamespaceLabels,
    ) -> Vec<SourceEvent> {
        if config == self.config && namespaces == self.namespaces {
            return Vec::new();
        }
        let was_active = self.is_active();
        self.config = config;
        self.namespaces = namespaces;
        if !self.is_active() {
            if was_active {
                warn!(
                    "no IPAddressPool is configured any more; LoadBalancer Services keep the \
                     addresses their manifests give"
                );
            }
            // Back to the manifests' own addresses.
            self.written.clear();
            return self
                .services
                .values()
                .cloned()
                .map(SourceEvent::ServiceApplied)
                .collect();
        }
        let changed = self.reallocate();
        self.followers(changed, &[])
    }

    /// The addresses currently written into `service`'s status, if it is ours.
    pub fn addresses(&self, service: &ServiceKey) -> Option<&[IpAddr]> {
        self.written.get(service).map(Vec::as_slice)
    }

    /// The last allocation computed, with each Service's outcome and reasons.
    pub fn allocation(&self) -> &Allocation {
        &self.last
    }

    /// Records `service` if it is a LoadBalancer Service of ours; returns whether.
    fn remember(&mut self, service: &Service) -> bool {
        let ours = LbService::from_service(service, self.class.as_deref()).is_some();
        if ours {
            self.services
                .insert(ServiceKey::of_service(service), service.clone());
        }
        ours
    }

    /// Recomputes the allocation; returns the Services whose addresses changed.
    fn reallocate(&mut self) -> Vec<ServiceKey> {
        let mut ours = OurServices::read(self.services.values(), self.class.as_deref());
        // The manifests' own status counts as what is held, so a manifest that names
        // its address (or a restart) keeps it when it is valid; what this allocator
        // wrote before is what the Service holds now.
        for service in &mut ours.readable {
            if let Some(ips) = self.written.get(&service.key) {
                service.ingress_ips = ips.clone();
            }
        }
        for service in &ours.unreadable {
            warn!(service = %service.key, "LoadBalancer Service request ignored: {}", service.error);
        }
        let allocation: Allocation = allocate(
            &self.config,
            &ours.readable,
            ours.frozen(),
            &self.namespaces,
        );
        let mut written = BTreeMap::new();
        let mut refused = BTreeMap::new();
        for (key, outcome) in &allocation.services {
            match &outcome.result {
                Ok(assignment) => {
                    written.insert(key.clone(), assignment.ips.clone());
                }
                Err(refusal) => {
                    let reason = refusal.to_string();
                    if self.refused.get(key) != Some(&reason) {
                        warn!(service = %key, "no LoadBalancer address: {reason}");
                    }
                    refused.insert(key.clone(), reason);
                    written.insert(key.clone(), Vec::new());
                }
            }
        }
        for service in ours.unreadable {
            written.insert(service.key, service.ips);
        }
        let mut changed: Vec<ServiceKey> = written
            .iter()
            .filter(|(key, ips)| self.written.get(*key) != Some(*ips))
            .map(|(key, _)| key.clone())
            .collect();
        changed.extend(
            self.written
                .keys()
                .filter(|key| !written.contains_key(*key))
                .cloned(),
        );
        for key in &changed {
            if let Some(ips) = written.get(key).filter(|ips| !ips.is_empty()) {
                info!(service = %key, addresses = ?ips, "LoadBalancer addresses allocated");
            }
        }
        self.written = written;
        self.refused = refused;
        self.last = allocation;
        changed
    }

    /// `ServiceApplied` events for the changed Services not carried by the event.
    fn followers(&self, changed: Vec<ServiceKey>, carried: &[ServiceKey]) -> Vec<SourceEvent> {
        changed
            .into_iter()
            .filter(|key| !carried.contains(key))
            .filter_map(|key| {
                let mut service = self.services.get(&key)?.clone();
                self.write(&mut service);
                Some(SourceEvent::ServiceApplied(service))
            })
            .collect()
    }

    /// Writes the allocation into a Service's status (a Service we do not allocate for
    /// is left as it is).
    fn write(&self, service: &mut Service) {
        let Some(ips) = self.written.get(&ServiceKey::of_service(service)) else {
            return;
        };
        let ingress: Vec<LoadBalancerIngress> = ips
            .iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            })
            .collect();
        let status = service.status.get_or_insert_with(ServiceStatus::default);
        status.load_balancer = Some(LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::service::ingress_ips;
    use metallb_config::Pool;
    use serde_json::json;

    fn config(range: &str) -> LbConfig {
        let pool = Pool {
            name: "lan".into(),
            labels: BTreeMap::new(),
            ranges: vec![range.parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        };
        LbConfig {
            pools: BTreeMap::from([("lan".to_string(), pool)]),
            ..LbConfig::default()
        }
    }

    fn service(name: &str, kind: &str, status_ip: Option<&str>) -> Service {
        let mut value = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "shop", "name": name},
            "spec": {"type": kind, "clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        });
        if let Some(ip) = status_ip {
            value["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        serde_json::from_value(value).unwrap()
    }

    fn addresses(event: &SourceEvent) -> Vec<(String, Vec<IpAddr>)> {
        let services = match event {
            SourceEvent::Snapshot { services, .. } => services.clone(),
            SourceEvent::ServiceApplied(service) => vec![service.clone()],
            _ => Vec::new(),
        };
        services
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), ingress_ips(s)))
            .collect()
    }

    #[test]
    fn without_pools_the_manifests_addresses_stay() {
        let mut allocator = StaticAllocator::new(None);
        let events = allocator.on_event(SourceEvent::Snapshot {
            services: vec![service("web", "LoadBalancer", Some("203.0.113.7"))],
            slices: vec![],
        });
        assert_eq!(
            addresses(&events[0]),
            [("web".into(), vec!["203.0.113.7".parse().unwrap()])]
        );
    }

    #[test]
    fn every_node_computes_the_same_addresses_and_changes_follow() {
        let mut allocator = StaticAllocator::new(None);
        assert!(
            allocator
                .set_config(config("10.0.0.10-10.0.0.11"), BTreeMap::new())
                .is_empty()
        );
        let snapshot = SourceEvent::Snapshot {
            services: vec![
                service("b", "LoadBalancer", None),
                service("a", "LoadBalancer", None),
                service("plain", "ClusterIP", None),
            ],
            slices: vec![],
        };
        let events = allocator.on_event(snapshot.clone());
        assert_eq!(events.len(), 1);
        let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
        assert_eq!(
            addresses(&events[0]),
            [
                ("b".into(), vec![ip("10.0.0.11")]),
                ("a".into(), vec![ip("10.0.0.10")]),
                ("plain".into(), vec![]),
            ]
        );
        // Another node reading the same manifests in another order gets the same.
        let mut other = StaticAllocator::new(None);
        other.set_config(config("10.0.0.10-10.0.0.11"), BTreeMap::new());
        let SourceEvent::Snapshot {
            mut services,
            slices,
        } = snapshot
        else {
            unreachable!()
        };
        services.reverse();
        other.on_event(SourceEvent::Snapshot { services, slices });
        assert_eq!(
            other.addresses(&ServiceKey::new("shop", "b")),
            Some(&[ip("10.0.0.11")][..])
        );

        // A third Service finds the pool exhausted; deleting `a` frees its address,
        // which `c` then gets in a follower event.
        let events = allocator.on_event(SourceEvent::ServiceApplied(service(
            "c",
            "LoadBalancer",
            None,
        )));
        assert_eq!(addresses(&events[0]), [("c".into(), vec![])]);
        let events = allocator.on_event(SourceEvent::ServiceDeleted(ServiceKey::new("shop", "a")));
        assert!(matches!(events[0], SourceEvent::ServiceDeleted(_)));
        assert_eq!(addresses(&events[1]), [("c".into(), vec![ip("10.0.0.10")])]);
        assert_eq!(events.len(), 2, "b keeps its address and is not sent again");

        // A Service that stops being a LoadBalancer loses its address.
        let events = allocator.on_event(SourceEvent::ServiceApplied(service(
            "b",
            "ClusterIP",
            Some("10.0.0.11"),
        )));
        assert_eq!(
            addresses(&events[0]),
            [("b".into(), vec![ip("10.0.0.11")])],
            "passed through untouched"
        );
        assert_eq!(allocator.addresses(&ServiceKey::new("shop", "b")), None);

        // A new pool moves nobody who still fits... and the old range's Services move.
        let events = allocator.set_config(config("10.0.1.0/30"), BTreeMap::new());
        assert_eq!(addresses(&events[0]), [("c".into(), vec![ip("10.0.1.0")])]);
    }
}
