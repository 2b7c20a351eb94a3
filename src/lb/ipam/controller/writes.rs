//! The writes that bring the Services to the allocation: per Service only what
//! differs (the status subresource's ingress, the pool annotation), as JSON merge
//! patches, with the Event each one earns.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use metallb_config::LbConfig;
use serde_json::{Value, json};

use super::reporter::Reporter;
use super::session::Tracked;
use super::{FIELD_MANAGER, REASON_ALLOCATED, REASON_CLEARED};
use crate::lb::ipam::allocate::Allocation;
use crate::lb::service::{ALLOCATED_FROM_POOL, ANNOTATION_PREFIX, OLD_ANNOTATION_PREFIX};
use crate::model::ServiceKey;

/// One Service's writes.
#[derive(Debug)]
pub(super) struct Write {
    pub(super) key: ServiceKey,
    pub(super) uid: Option<String>,
    /// The new ingress (`Some(empty)` clears it), if it changes.
    pub(super) ingress: Option<Vec<IpAddr>>,
    /// The new pool annotation (`Some(None)` removes it), if it changes.
    pub(super) pool: Option<Option<String>>,
    /// The Event once written.
    pub(super) event: Option<(EventType, &'static str, String)>,
}

impl Write {
    pub(super) fn what(&self) -> &'static str {
        if self.ingress.is_some() {
            "the status write"
        } else {
            "the annotation write"
        }
    }

    pub(super) async fn send(&self, client: &Client) -> Result<(), kube::Error> {
        let api: Api<Service> = Api::namespaced(client.clone(), &self.key.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        if let Some(ips) = &self.ingress {
            let ingress: Value = if ips.is_empty() {
                Value::Null
            } else {
                ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect()
            };
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            api.patch_status(&self.key.name, &params, &Patch::Merge(&patch))
                .await?;
        }
        if let Some(pool) = &self.pool {
            let mut annotations = serde_json::Map::new();
            annotations.insert(
                format!("{ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"),
                pool.as_ref().map_or(Value::Null, |pool| json!(pool)),
            );
            if pool.is_none() {
                annotations.insert(
                    format!("{OLD_ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"),
                    Value::Null,
                );
            }
            let patch = json!({"metadata": {"annotations": annotations}});
            api.patch(&self.key.name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    /// What the Service holds now that the write went through (the watch will say
    /// the same a moment later; until then nothing is written twice).
    pub(super) fn record(&self, tracked: &mut BTreeMap<ServiceKey, Tracked>) {
        match tracked.get_mut(&self.key) {
            Some(Tracked::Ours(lb)) => {
                if let Some(ips) = &self.ingress {
                    lb.ingress_ips = ips.clone();
                }
                if let Some(pool) = &self.pool {
                    lb.allocated_from_pool = pool.clone();
                }
            }
            Some(Tracked::Foreign { .. }) => {
                tracked.remove(&self.key);
            }
            _ => {}
        }
    }

    pub(super) fn report(&self, reporter: &mut Reporter) {
        if let Some((type_, reason, note)) = &self.event {
            reporter.now(&self.key, &self.uid, *type_, reason, note);
        }
    }
}

/// The writes that bring the Services to `allocation`, in Service order.
pub(super) fn plan_writes(
    tracked: &BTreeMap<ServiceKey, Tracked>,
    allocation: &Allocation,
    config: &LbConfig,
) -> Vec<Write> {
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut writes = Vec::new();
    for (key, tracked) in tracked {
        match tracked {
            Tracked::Ours(lb) => {
                let Some(outcome) = allocation.services.get(key) else {
                    continue;
                };
                let (ips, pool): (&[IpAddr], Option<&str>) = match &outcome.result {
                    Ok(assignment) => (&assignment.ips, Some(&assignment.pool)),
                    Err(_) => (&[], None),
                };
                let ingress = (lb.ingress_ips != ips).then(|| ips.to_vec());
                let pool_change =
                    (lb.allocated_from_pool.as_deref() != pool).then(|| pool.map(String::from));
                if ingress.is_none() && pool_change.is_none() {
                    continue;
                }
                let event = match (&outcome.result, &outcome.dropped) {
                    (Ok(assignment), _) if ingress.is_some() => Some((
                        EventType::Normal,
                        REASON_ALLOCATED,
                        format!(
                            "Assigned IP [{}] from pool {}",
                            list(&assignment.ips),
                            assignment.pool
                        ),
                    )),
                    (Err(_), Some(dropped)) => Some((
                        EventType::Warning,
                        REASON_CLEARED,
                        format!("Released [{}]: {}", list(&dropped.ips), dropped.reason),
                    )),
                    _ => None,
                };
                writes.push(Write {
                    key: key.clone(),
                    uid: lb.uid.clone(),
                    ingress,
                    pool: pool_change,
                    event,
                });
            }
            Tracked::Foreign { uid, ingress, pool } => {
                // Ours to release only when the pool is one of ours and holds the
                // addresses (another load balancer's Service is left alone).
                let Some(ours) = config.pools.get(pool) else {
                    continue;
                };
                if !ingress.iter().all(|ip| ours.contains(*ip)) {
                    continue;
                }
                writes.push(Write {
                    key: key.clone(),
                    uid: uid.clone(),
                    ingress: (!ingress.is_empty()).then(Vec::new),
                    pool: Some(None),
                    event: Some((
                        EventType::Normal,
                        REASON_CLEARED,
                        format!(
                            "Released [{}]: no longer a LoadBalancer Service of ours",
                            list(ingress)
                        ),
                    )),
                });
            }
            Tracked::Unreadable { .. } => {}
        }
    }
    writes
}
