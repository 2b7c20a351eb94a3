//! Leadership: the Lease (held through `kube-lease-manager`), its confirmation by
//! reading it back, and the loop that starts a session once this agent may write and
//! drops it the moment it may not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use metallb_config::LbConfig;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::options::{IpamError, IpamOptions};
use super::reporter::Reporter;
use super::session::{Session, next_event};
use crate::lb::ipam::metrics::IpamMetrics;
use crate::observe::k8s_events::EventReporter;
use crate::observe::metrics::Metrics;

pub(super) async fn run(
    client: Client,
    options: IpamOptions,
    mut config: watch::Receiver<Arc<LbConfig>>,
    metrics: Arc<Metrics>,
    pool_metrics: IpamMetrics,
    mut stop: oneshot::Receiver<()>,
    writing: watch::Sender<bool>,
) -> Result<(), IpamError> {
    let events = EventReporter::with_options(
        client.clone(),
        &options.identity,
        metrics.clone(),
        options.events,
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.lease_namespace);
    let lease = format!("{}/{}", options.lease_namespace, options.lease_name);

    // The Lease manager reads (and creates) the Lease first: retried until the API
    // server answers.
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
            .with_namespace(&options.lease_namespace)
            .with_parameters(LeaseParams::new(
                &options.identity,
                options.lease_duration.as_secs(),
                options.lease_grace.as_secs(),
            ))
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(error) => {
                warn!(%lease, "IPAM: cannot read the Lease yet: {error}");
                tokio::select! {
                    _ = tokio::time::sleep(options.retry) => {}
                    _ = &mut stop => {
                        events.shutdown().await;
                        return Ok(());
                    }
                }
            }
        }
    };
    let (mut held, lease_task) = manager.watch().await;

    let mut confirmed_until: Option<Instant> = None;
    let mut confirm = tokio::time::interval(options.confirm_interval);
    confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut session: Option<Session> = None;
    let mut reporter = Reporter {
        events,
        reported: HashMap::new(),
    };

    let mut config_open = true;
    let result = loop {
        let holding = *held.borrow();
        let due = session.as_ref().and_then(|session| session.due);
        tokio::select! {
            _ = &mut stop => break Ok(()),
            changed = held.changed() => {
                if changed.is_err() {
                    break Err(());
                }
                if *held.borrow_and_update() {
                    info!(%lease, identity = %options.identity, "IPAM: holding the Lease");
                    confirmed_until = confirm_lease(&leases, &options, confirmed_until).await;
                } else {
                    info!(%lease, identity = %options.identity, "IPAM: not holding the Lease");
                    confirmed_until = None;
                }
            }
            _ = confirm.tick(), if holding => {
                confirmed_until = confirm_lease(&leases, &options, confirmed_until).await;
            }
            _ = tokio::time::sleep_until(confirmed_until.unwrap_or_else(Instant::now)), if confirmed_until.is_some() => {
                warn!(%lease, "IPAM: the Lease could not be confirmed in time; writes stop");
                confirmed_until = None;
            }
            changed = config.changed(), if config_open => {
                if changed.is_err() {
                    // The source is gone (the agent is stopping): keep the last one.
                    config_open = false;
                    continue;
                }
                if let Some(session) = &mut session {
                    session.mark_dirty(options.settle);
                }
            }
            event = next_event(&mut session), if session.is_some() => {
                if let Some(session) = &mut session {
                    session.apply(event, &options);
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some(active) = &mut session {
                    let config = config.borrow().clone();
                    let still_confirmed = active
                        .reconcile(&client, &config, &options, &mut reporter, &metrics, confirmed_until)
                        .await;
                    if !still_confirmed {
                        confirmed_until = None;
                    }
                }
            }
        }

        let may_write =
            *held.borrow() && confirmed_until.is_some_and(|until| Instant::now() < until);
        writing.send_if_modified(|writing| std::mem::replace(writing, may_write) != may_write);
        match (&session, may_write) {
            (None, true) => {
                info!(%lease, "IPAM: confirmed holder; reading Services and Namespaces");
                session = Some(Session::start(
                    &client,
                    options.settle,
                    pool_metrics.clone(),
                ));
            }
            (Some(_), false) => {
                info!(%lease, "IPAM: writes stopped; the next leadership reads everything afresh");
                session = None;
                reporter.reported.clear();
            }
            _ => {}
        }
    };

    writing.send_replace(false);
    drop(session);
    // Closing the channel makes the Lease manager release the Lease.
    drop(held);
    let released = lease_task.await;
    reporter.events.shutdown().await;
    match (result, released) {
        (Ok(()), _) => Ok(()),
        (Err(_), Ok(Err(error))) => Err(IpamError::Lease(error)),
        (Err(_), Err(error)) => Err(IpamError::Task(error)),
        (Err(_), Ok(Ok(_))) => Ok(()),
    }
}

/// Reads the Lease back: until when this agent may write, or `None`. `before` is the
/// previous answer (a failure is logged as a warning only when it ends a
/// confirmation, not on every try of an outage).
pub(super) async fn confirm_lease(
    leases: &Api<Lease>,
    options: &IpamOptions,
    before: Option<Instant>,
) -> Option<Instant> {
    let lease = match leases.get(&options.lease_name).await {
        Ok(lease) => lease,
        Err(error) if before.is_some() => {
            warn!("IPAM: cannot read the Lease back: {error}; writes stop");
            return None;
        }
        Err(error) => {
            debug!("IPAM: cannot read the Lease back: {error}");
            return None;
        }
    };
    let spec = lease.spec?;
    if spec.holder_identity.as_deref() != Some(options.identity.as_str()) {
        return None;
    }
    let renewed: SystemTime = spec.renew_time?.0.into();
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let until = renewed + duration - options.lease_grace / 2;
    let left = until.duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left)
}
