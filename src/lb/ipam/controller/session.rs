//! One leadership's view of the cluster: Services and Namespaces listed afresh and
//! watched, each Service projected to what the allocation needs ([`Tracked`]), and
//! the reconcile that runs the pure allocation and writes the differences.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use metallb_config::LbConfig;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::options::IpamOptions;
use super::pool_status::{PoolStatus, Published};
use super::reporter::Reporter;
use super::writes::plan_writes;
use super::{REASON_BAD_REQUEST, REASON_FAILED, WRITE_ERROR_KIND};
use crate::lb::ipam::allocate::{NamespaceLabels, allocate};
use crate::lb::ipam::metrics::IpamMetrics;
use crate::lb::ipam::pool_usage::pool_usage;
use crate::lb::service::{
    ALLOCATED_FROM_POOL, ANNOTATION_PREFIX, LbService, LbServiceError, OLD_ANNOTATION_PREFIX,
    ingress_ips,
};
use crate::model::ServiceKey;
use crate::observe::metrics::Metrics;

pub(super) type EventStream<K> =
    Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

/// One watch event of either stream.
// One lives at a time, moved straight into the session: boxing would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub(super) enum Change {
    Service(Result<watcher::Event<Service>, watcher::Error>),
    Namespace(Result<watcher::Event<Namespace>, watcher::Error>),
}

pub(super) async fn next_event(session: &mut Option<Session>) -> Change {
    match session {
        Some(session) => tokio::select! {
            Some(event) = session.services.next() => Change::Service(event),
            Some(event) = session.namespaces.next() => Change::Namespace(event),
            else => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// What the controller knows of one Service.
// Nearly every entry is `Ours`: boxing it would add an allocation per Service to save
// space on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tracked {
    /// A LoadBalancer of ours.
    Ours(LbService),
    /// A LoadBalancer of ours whose requests cannot be read: it keeps what it holds.
    Unreadable {
        uid: Option<String>,
        ingress: Vec<IpAddr>,
        error: LbServiceError,
    },
    /// Not (or no longer) ours, but carrying a pool annotation: released when that
    /// pool is one of ours.
    Foreign {
        uid: Option<String>,
        ingress: Vec<IpAddr>,
        pool: String,
    },
}

impl Tracked {
    pub(super) fn of(service: &Service, class: Option<&str>) -> Option<Tracked> {
        match LbService::from_service(service, class) {
            Some(Ok(lb)) => Some(Tracked::Ours(lb)),
            Some(Err(error)) => Some(Tracked::Unreadable {
                uid: service.metadata.uid.clone(),
                ingress: ingress_ips(service),
                error,
            }),
            None => {
                let annotations = service.metadata.annotations.as_ref()?;
                let pool = annotations
                    .get(&format!("{ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"))
                    .or_else(|| {
                        annotations.get(&format!("{OLD_ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"))
                    })?;
                Some(Tracked::Foreign {
                    uid: service.metadata.uid.clone(),
                    ingress: ingress_ips(service),
                    pool: pool.clone(),
                })
            }
        }
    }
}

/// A leadership's view of the cluster, rebuilt each time the Lease is (re)confirmed.
pub(super) struct Session {
    pub(super) services: EventStream<Service>,
    pub(super) namespaces: EventStream<Namespace>,
    pub(super) tracked: BTreeMap<ServiceKey, Tracked>,
    /// Services seen since the (re)list began, swapped in when it ends.
    pub(super) listing: Option<BTreeMap<ServiceKey, Tracked>>,
    pub(super) services_listed: bool,
    pub(super) labels: NamespaceLabels,
    pub(super) labels_listing: Option<NamespaceLabels>,
    pub(super) namespaces_listed: bool,
    /// When to compute next.
    pub(super) due: Option<Instant>,
    pub(super) settle: Duration,
    /// The pools' status counters and metrics.
    pub(super) pools: PoolStatus,
}

impl Session {
    pub(super) fn start(client: &Client, settle: Duration, pool_metrics: IpamMetrics) -> Session {
        // Quorum reads (the default list semantic): what a previous leader wrote just
        // before it stopped is in the first list.
        let services = watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let namespaces = watcher::watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        Session {
            services,
            namespaces,
            tracked: BTreeMap::new(),
            listing: None,
            services_listed: false,
            labels: NamespaceLabels::new(),
            labels_listing: None,
            namespaces_listed: false,
            due: None,
            settle,
            pools: PoolStatus::new(pool_metrics),
        }
    }

    pub(super) fn mark_dirty(&mut self, settle: Duration) {
        // Sooner than a pending retry, never later than an earlier pending change.
        let at = Instant::now() + settle;
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    pub(super) fn apply(&mut self, change: Change, options: &IpamOptions) {
        let class = options.load_balancer_class.as_deref();
        let changed = match change {
            Change::Service(Ok(event)) => self.apply_service(event, class),
            Change::Namespace(Ok(event)) => self.apply_namespace(event),
            Change::Service(Err(error)) => {
                warn!("IPAM: watching Services: {error}");
                false
            }
            Change::Namespace(Err(error)) => {
                warn!("IPAM: watching Namespaces: {error}");
                false
            }
        };
        if changed {
            self.mark_dirty(self.settle);
        }
    }

    pub(super) fn apply_service(
        &mut self,
        event: watcher::Event<Service>,
        class: Option<&str>,
    ) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(service) => {
                if let (Some(listing), Some(tracked)) =
                    (&mut self.listing, Tracked::of(&service, class))
                {
                    listing.insert(ServiceKey::of_service(&service), tracked);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.tracked = listing;
                }
                self.services_listed = true;
                true
            }
            watcher::Event::Apply(service) => {
                let key = ServiceKey::of_service(&service);
                match Tracked::of(&service, class) {
                    Some(tracked) => self.tracked.insert(key, tracked.clone()) != Some(tracked),
                    None => self.tracked.remove(&key).is_some(),
                }
            }
            watcher::Event::Delete(service) => self
                .tracked
                .remove(&ServiceKey::of_service(&service))
                .is_some(),
        }
    }

    pub(super) fn apply_namespace(&mut self, event: watcher::Event<Namespace>) -> bool {
        let name_labels = |namespace: &Namespace| {
            (
                namespace.metadata.name.clone().unwrap_or_default(),
                namespace.metadata.labels.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Init => {
                self.labels_listing = Some(NamespaceLabels::new());
                false
            }
            watcher::Event::InitApply(namespace) => {
                if let Some(listing) = &mut self.labels_listing {
                    let (name, labels) = name_labels(&namespace);
                    listing.insert(name, labels);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.labels_listing.take() {
                    self.labels = listing;
                }
                self.namespaces_listed = true;
                true
            }
            watcher::Event::Apply(namespace) => {
                let (name, labels) = name_labels(&namespace);
                self.labels.insert(name, labels.clone()) != Some(labels)
            }
            watcher::Event::Delete(namespace) => {
                self.labels.remove(&name_labels(&namespace).0).is_some()
            }
        }
    }

    /// Computes the allocation and writes up to a batch of differences. Returns
    /// false when a write could not reach the API server (the Lease is then not
    /// confirmed any more).
    pub(super) async fn reconcile(
        &mut self,
        client: &Client,
        config: &LbConfig,
        options: &IpamOptions,
        reporter: &mut Reporter,
        metrics: &Metrics,
        confirmed_until: Option<Instant>,
    ) -> bool {
        self.due = None;
        if !self.services_listed || !self.namespaces_listed {
            return true;
        }
        if config.pools.is_empty() {
            debug!("IPAM: no IPAddressPool configured; nothing is written");
            self.pools.set_metrics(&BTreeMap::new());
            return true;
        }
        let ours = self.tracked.values().filter_map(|tracked| match tracked {
            Tracked::Ours(lb) => Some(lb),
            _ => None,
        });
        let frozen: Vec<(&ServiceKey, &[IpAddr])> = self
            .tracked
            .iter()
            .filter_map(|(key, tracked)| match tracked {
                Tracked::Unreadable { ingress, .. } => Some((key, ingress.as_slice())),
                _ => None,
            })
            .collect();
        let allocation = allocate(config, ours, frozen.iter().copied(), &self.labels);
        let writes = plan_writes(&self.tracked, &allocation, config);
        let usage = pool_usage(
            config,
            &allocation,
            frozen.iter().flat_map(|(_, ips)| ips.iter()),
        );
        self.pools.set_metrics(&usage);

        // Events that need no write.
        reporter
            .reported
            .retain(|key, _| self.tracked.contains_key(key));
        for (key, tracked) in &self.tracked {
            match tracked {
                Tracked::Unreadable { uid, error, .. } => reporter.once(
                    key,
                    uid,
                    EventType::Warning,
                    REASON_BAD_REQUEST,
                    &error.to_string(),
                ),
                Tracked::Ours(lb) => match allocation.services.get(key).map(|o| &o.result) {
                    Some(Err(refusal)) => reporter.once(
                        key,
                        &lb.uid,
                        EventType::Warning,
                        REASON_FAILED,
                        &format!("Failed to allocate IP for {key}: {refusal}"),
                    ),
                    _ => {
                        reporter.reported.remove(key);
                    }
                },
                Tracked::Foreign { .. } => {}
            }
        }

        let mut client_ok = true;
        let mut left = options.batch;
        let mut unfinished = false;
        for write in writes {
            if left == 0 {
                unfinished = true;
                break;
            }
            if confirmed_until.is_none_or(|until| Instant::now() >= until) {
                // The Lease ran out while writing: not one more write.
                return false;
            }
            left -= 1;
            match write.send(client).await {
                Ok(()) => {
                    write.record(&mut self.tracked);
                    write.report(reporter);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    debug!(service = %write.key, "IPAM: Service gone before the write");
                }
                Err(kube::Error::Api(status)) => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(service = %write.key, "IPAM: the API server refused {}: {} {}", write.what(), status.code, status.message);
                    self.due.get_or_insert(Instant::now() + options.retry);
                }
                Err(error) => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(service = %write.key, "IPAM: {} failed: {error}; writes stop until the Lease is confirmed again", write.what());
                    client_ok = false;
                    break;
                }
            }
        }
        if unfinished {
            self.due = Some(Instant::now());
            return client_ok;
        }
        if !client_ok {
            return false;
        }
        // Every Service written: the pools' counters say what they now hold.
        let published = self
            .pools
            .publish(
                client,
                &options.pool_namespace,
                &usage,
                confirmed_until,
                metrics,
            )
            .await;
        match published {
            Published::Done => true,
            Published::Retry => {
                self.due.get_or_insert(Instant::now() + options.retry);
                true
            }
            Published::Stop => false,
        }
    }
}
