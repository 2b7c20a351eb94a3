//! `ipvs-proxy services`: the agent answers status requests from its own task, so a
//! report sees the model and the drain clock exactly as the next sync would.

use std::path::Path;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::warn;

use crate::observe::status::{self, StatusReply, StatusReport, StatusRequest};
use crate::plan;

use super::Agent;

/// Serves the status socket at `path`; `None` (with a warning) when it cannot.
pub(crate) fn spawn_server(
    path: &Path,
    requests: mpsc::Sender<StatusRequest>,
    bgp: Option<status::BgpAnswer>,
) -> Option<tokio::task::JoinHandle<()>> {
    match status::spawn_status_server_with_bgp(path.to_path_buf(), requests, bgp) {
        Ok(server) => Some(server),
        Err(err) => {
            warn!("`ipvs-proxy services` will not work: {err}");
            None
        }
    }
}

impl Agent {
    /// Answers one status request with the model, the kernel's state now and the
    /// changes the next sync would make.
    pub(crate) async fn answer_status(&mut self, request: StatusRequest) {
        let reply = match self.kernel.observe().await {
            Ok(observed) => {
                let desired = self.model.state();
                let options = self.diff_options();
                let now = Instant::now();
                let plan = plan::diff(desired, &observed, &options, &self.drain, now);
                let report = StatusReport::build(
                    &self.model,
                    desired,
                    &observed,
                    &plan.changes,
                    &plan.draining,
                    now,
                );
                let report = match &self.lb {
                    Some(lb) => report.with_load_balancers(&lb.announce),
                    None => report,
                };
                let report = match &self.announcers {
                    Some(announcers) => {
                        let answering = announcers.l2_status().unwrap_or_default().ips;
                        let live = announcers
                            .live_nodes()
                            .map(|live| live.into_iter().collect());
                        report.with_announcers(live, &answering)
                    }
                    None => report,
                };
                StatusReply::Report(Box::new(report))
            }
            Err(err) => StatusReply::Error(format!("cannot read the kernel state: {err}")),
        };
        let _ = request.reply.send(reply);
    }
}
