//! The kernel adapter: reads the observed state (IPVS, kube-ipvs0 addresses, our
//! ipsets) and applies a [`Plan`] with as few system calls as possible.
//!
//! IPVS changes of one plan travel in batched `sendmsg` calls (the `ipvs-netlink`
//! crate pipelines them and collects one ack per change); ipset entries likewise
//! through `ipset-netlink`; addresses through batched rtnetlink requests. A change
//! the kernel refuses is reported on its own and never stops the others.
//!
//! The IPVS batch and every ipset call are blocking netlink round trips: they run on
//! blocking threads, so health, metrics and status answers never wait behind them on
//! the async workers. How a plan is cut into batches is [`super::apply`]; the
//! conversions are [`super::ipvs`] and [`super::ipset`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use ipset_netlink as ipset;
use ipvs_netlink as ipvs;

use super::apply::{AddPhases, Batches, EntryBatches, partition};
pub use super::apply::{ApplyReport, Failed, FailedChange};
use super::ipset::{destroy_sets, ensure_sets, read_members, write_entries};
use super::ipvs::{ipvs_key, observed_virtual_servers};
use crate::dataplane::netif::{DEFAULT_NAME, NetifError, ServiceInterface};
use crate::model::{Family, VirtualServerKey};
use crate::plan::{ObservedState, ObservedVirtualServer, Plan};

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The IPVS family failed (missing module, socket error).
    #[error(transparent)]
    Ipvs(#[from] ipvs::Error),
    /// The ipset subsystem failed.
    #[error(transparent)]
    Ipset(#[from] ipset::Error),
    /// kube-ipvs0 or its addresses failed.
    #[error(transparent)]
    Netif(#[from] NetifError),
    /// The blocking thread running the ipset calls panicked or was cancelled.
    #[error("the ipset task failed: {0}")]
    IpsetTask(#[from] tokio::task::JoinError),
}

/// Handles on every kernel subsystem the agent programs.
pub struct Kernel {
    ipvs: ipvs::AsyncIpvsHandle,
    /// A second IPVS socket for change batches, used from a blocking thread: the kernel
    /// does a batch's work inside `sendmsg`, which would hold a runtime worker (and the
    /// tasks queued on it) for as long as the kernel takes.
    ipvs_batches: Arc<Mutex<ipvs::IpvsHandle>>,
    /// The ipset socket, blocking, hence used from blocking threads only.
    ipset: Arc<Mutex<ipset::IpsetHandle>>,
    iface: ServiceInterface,
    families: BTreeSet<Family>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("interface", &self.iface.name())
            .field("families", &self.families)
            .finish_non_exhaustive()
    }
}

/// A lock whose holder panicked is still usable: the socket holds no half-done state
/// between calls.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Kernel {
    /// Opens the IPVS and ipset sockets and makes sure `kube-ipvs0` and kube-proxy's
    /// sets exist for `families` (missing sets are created; existing ones are adopted
    /// as they are). Fails with the subsystem's own advice when IPVS or ipset is
    /// missing from the kernel.
    pub async fn open(families: BTreeSet<Family>) -> Result<Kernel, KernelError> {
        let ipvs = ipvs::AsyncIpvsHandle::new().await?;
        let ipvs_batches = Arc::new(Mutex::new(ipvs::IpvsHandle::new()?));
        let ipset = Arc::new(Mutex::new(ipset::IpsetHandle::new()?));
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await?;
        let kernel = Kernel {
            ipvs,
            ipvs_batches,
            ipset,
            iface,
            families,
        };
        let families = kernel.families.clone();
        kernel
            .with_ipset(move |handle| ensure_sets(handle, &families))
            .await??;
        Ok(kernel)
    }

    /// Runs `work` with the ipset socket on a blocking thread.
    async fn with_ipset<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut ipset::IpsetHandle) -> R + Send + 'static,
    ) -> Result<R, tokio::task::JoinError> {
        let handle = self.ipset.clone();
        tokio::task::spawn_blocking(move || work(&mut lock(&handle))).await
    }

    /// Reads IPVS, the addresses on kube-ipvs0 and the members of our sets.
    pub async fn observe(&mut self) -> Result<ObservedState, KernelError> {
        // The sets are listed on a blocking thread while IPVS and the addresses are read.
        let families = self.families.clone();
        let handle = self.ipset.clone();
        let sets = tokio::task::spawn_blocking(move || read_members(&mut lock(&handle), &families));
        let table = self.ipvs.services_with_destinations().await?;
        let addresses = self.iface.addresses().await?;
        let ipsets = sets.await?;
        Ok(ObservedState {
            virtual_servers: observed_virtual_servers(table),
            addresses,
            ipsets,
        })
    }

    /// Reads only the given virtual servers with their real servers (two requests
    /// each), for an incremental sync. Returns those that exist and the number of
    /// netlink requests sent.
    pub async fn observe_virtual_servers(
        &mut self,
        keys: &BTreeSet<VirtualServerKey>,
    ) -> Result<(Vec<ObservedVirtualServer>, u64), KernelError> {
        let mut table = Vec::with_capacity(keys.len());
        let mut requests = 0;
        for key in keys {
            let key = ipvs_key(key);
            requests += 1;
            let service = match self.ipvs.service(&key).await {
                Ok(service) => service,
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error.into()),
            };
            requests += 1;
            let destinations = match self.ipvs.destinations(&key).await {
                Ok(destinations) => destinations,
                // Deleted by someone else between the two reads.
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error.into()),
            };
            table.push((service, destinations));
        }
        Ok((observed_virtual_servers(table), requests))
    }

    /// Adds or deletes set entries on a blocking thread. The error is the report of a
    /// thread that panicked: then it is unknown which entries went in.
    async fn write_entries(
        &self,
        batches: EntryBatches,
        add: bool,
    ) -> Result<ApplyReport, ApplyReport> {
        if batches.is_empty() {
            return Ok(ApplyReport::default());
        }
        let entries: usize = batches.values().map(Vec::len).sum();
        self.with_ipset(move |handle| write_entries(handle, &batches, add))
            .await
            .map_err(|error| ApplyReport {
                failed: vec![FailedChange {
                    change: Failed::Entries {
                        set: None,
                        entries,
                        add,
                    },
                    error: format!("the ipset task failed: {error}"),
                }],
                ..ApplyReport::default()
            })
    }

    /// Applies `plan`: the IPVS batch beside set entries and addresses (each address
    /// after its set entries), then removals of entries and addresses.
    pub async fn apply(&mut self, plan: &Plan) -> ApplyReport {
        let mut report = ApplyReport::default();
        let Batches {
            ipvs: ipvs_changes,
            ipvs_origin,
            add_addresses,
            remove_addresses,
            entry_adds,
            entry_dels,
        } = partition(plan);

        // IPVS, set entries and addresses are three independent kernel paths (IPVS
        // mutex, nfnetlink, rtnl), so they run at once: the IPVS batch on a blocking
        // thread from the start, set entries (on blocking threads too) and addresses
        // meanwhile. A VIP's address is bound only after its set entries are in, so the
        // filter and masquerade rules know a VIP before it carries traffic (until its
        // IPVS service is in too, a new VIP is simply not served yet).
        let started = Instant::now();
        let ipvs_count = ipvs_changes.len();
        let ipvs_task = (!ipvs_changes.is_empty()).then(|| {
            let handle = self.ipvs_batches.clone();
            tokio::task::spawn_blocking(move || {
                let result = lock(&handle).apply_batch(&ipvs_changes);
                (result, started.elapsed())
            })
        });
        let add_count = add_addresses.len();
        let phases = AddPhases::of(add_addresses, entry_adds);
        let first_in = self.write_entries(phases.first_entries, true).await;
        let (later_entries_in, later_entries_done) = tokio::sync::oneshot::channel::<()>();
        // The addresses run as their own task, which hands them to the batch binder's
        // blocking thread as they become ready while the remaining entries go in.
        // Batched rather than pipelined: on a small node the first sync's kernel work
        // (IPVS, ipset, addresses) competes for the same CPUs, and the batches spend
        // far less user time per address.
        let later_count = phases.later_addresses.len();
        let addresses = (add_count > 0).then(|| {
            let iface = self.iface.clone();
            // Without the first entries (their thread panicked) no address binds: a VIP
            // never goes before its entries. The next sync binds them.
            let (first, later) = match first_in {
                Ok(_) => (phases.first_addresses, phases.later_addresses),
                Err(_) => (Vec::new(), Vec::new()),
            };
            tokio::spawn(async move {
                let after_entries = async move {
                    // Without the signal (applying the entries panicked, so the sender
                    // was dropped unsent) the later addresses stay unbound, likewise.
                    let later = match later_entries_done.await {
                        Ok(()) => later,
                        Err(_) => Vec::new(),
                    };
                    stream::iter(later)
                };
                let ordered = stream::iter(first).chain(stream::once(after_entries).flatten());
                let result = iface.add_batched(ordered).await.map_err(|e| e.to_string());
                (result, started.elapsed())
            })
        });
        let later_in = self.write_entries(phases.later_entries, true).await;
        let ipset_done = started.elapsed();
        let entries_in = first_in.is_ok() && later_in.is_ok();
        // The addresses handed to the binder: none without the first entries, only the
        // first ones without the later entries.
        let handed = match (&first_in, entries_in) {
            (Err(_), _) => 0,
            (Ok(_), false) => add_count - later_count,
            (Ok(_), true) => add_count,
        };
        for part in [first_in, later_in] {
            report.merge(part.unwrap_or_else(|failed| failed));
        }
        if entries_in {
            let _ = later_entries_in.send(());
        }
        let ipvs_result = match ipvs_task {
            None => None,
            Some(task) => Some(match task.await {
                Ok((result, done)) => (result.map_err(|error| error.to_string()), done),
                Err(error) => (
                    Err(format!("the IPVS batch task failed: {error}")),
                    started.elapsed(),
                ),
            }),
        };
        let address_result = match addresses {
            None => None,
            Some(task) => Some(task.await.unwrap_or_else(|error| {
                let reason = format!("the address task failed: {error}");
                (Err(reason), started.elapsed())
            })),
        };
        if let Some((result, done)) = address_result {
            report.netlink_messages += handed as u64;
            tracing::debug!(
                addresses = handed,
                ms = done.as_millis() as u64,
                "addresses bound"
            );
            match result {
                Ok(_) => report.applied += handed,
                Err(error) => report.failed.push(FailedChange {
                    change: Failed::Addresses {
                        count: handed,
                        add: true,
                    },
                    error,
                }),
            }
            if handed < add_count {
                report.failed.push(FailedChange {
                    change: Failed::Addresses {
                        count: add_count - handed,
                        add: true,
                    },
                    error: "left for the next sync: their set entries may be missing".into(),
                });
            }
        }
        if let Some((result, done)) = ipvs_result {
            report.netlink_messages += ipvs_count as u64;
            tracing::debug!(
                changes = ipvs_count,
                ms = done.as_millis() as u64,
                ipset_ms = ipset_done.as_millis() as u64,
                "IPVS programmed"
            );
            match result {
                Ok(results) => {
                    for (index, result) in ipvs_origin.iter().zip(results) {
                        match result {
                            Ok(()) => report.applied += 1,
                            Err(error) => report.failed.push(FailedChange {
                                change: Failed::Change(plan.changes[*index].clone()),
                                error: error.to_string(),
                            }),
                        }
                    }
                }
                Err(error) => report.failed.push(FailedChange {
                    change: Failed::IpvsBatch {
                        changes: ipvs_count,
                    },
                    error,
                }),
            }
        }

        report.merge(
            self.write_entries(entry_dels, false)
                .await
                .unwrap_or_else(|failed| failed),
        );
        if !remove_addresses.is_empty() {
            report.netlink_messages += remove_addresses.len() as u64;
            match self.iface.remove(remove_addresses.iter().copied()).await {
                Ok(_) => report.applied += remove_addresses.len(),
                Err(error) => report.failed.push(FailedChange {
                    change: Failed::Addresses {
                        count: remove_addresses.len(),
                        add: false,
                    },
                    error: error.to_string(),
                }),
            }
        }
        report
    }

    /// Destroys every kube-proxy set (after the iptables rules that reference them are
    /// gone) and deletes kube-ipvs0 with its addresses. For `ipvs-proxy cleanup`.
    /// Returns the sets that could not be destroyed, with the reason.
    pub async fn teardown(self) -> Result<Vec<(String, String)>, KernelError> {
        let families = self.families.clone();
        let kept = self
            .with_ipset(move |handle| destroy_sets(handle, &families))
            .await?;
        self.iface.delete().await?;
        Ok(kept)
    }
}
