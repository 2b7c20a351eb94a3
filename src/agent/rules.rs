//! When the iptables rules are installed: per family, the inputs last installed, so a
//! sync whose inputs are unchanged skips `iptables-restore` until the next full resync.
//! What the rules are is [`iptables::rule_inputs`]'s business.

use std::time::{Duration, Instant};

use tracing::error;

use crate::dataplane::iptables::{self, Iptables, IptablesError, RuleInputs};
use crate::observe::metrics::Metrics;

/// One family's rule set and what was last installed for it.
#[derive(Debug)]
struct FamilyRules {
    iptables: Iptables,
    /// `None` until installed, and after a failure (forces the next sync to install).
    installed: Option<RuleInputs>,
}

/// The iptables rule sets of this node, one per family.
#[derive(Debug)]
pub(crate) struct RuleSets {
    families: Vec<FamilyRules>,
}

/// One family's rules to install on the blocking thread.
#[derive(Debug)]
pub(crate) struct RuleJob {
    index: usize,
    iptables: Iptables,
    inputs: RuleInputs,
}

/// What one [`RuleJob`] did.
type RuleOutcome = (usize, RuleInputs, Result<(), IptablesError>);

/// `iptables-restore` for each family, running on a blocking thread.
pub(crate) struct RuleTask(tokio::task::JoinHandle<(Vec<RuleOutcome>, Duration)>);

impl RuleSets {
    /// Rule sets for these families, none installed yet.
    pub(crate) fn new(iptables: Vec<Iptables>) -> RuleSets {
        RuleSets {
            families: iptables
                .into_iter()
                .map(|iptables| FamilyRules {
                    iptables,
                    installed: None,
                })
                .collect(),
        }
    }

    /// The jobs for the families whose inputs (from `inputs_for`) differ from what is
    /// installed, or for every family when `full` (which repairs rules someone removed).
    pub(crate) fn jobs(
        &self,
        full: bool,
        mut inputs_for: impl FnMut(iptables::Family) -> RuleInputs,
    ) -> Vec<RuleJob> {
        self.families
            .iter()
            .enumerate()
            .filter_map(|(index, rules)| {
                let inputs = inputs_for(rules.iptables.family());
                (full || rules.installed.as_ref() != Some(&inputs)).then_some(RuleJob {
                    index,
                    iptables: rules.iptables,
                    inputs,
                })
            })
            .collect()
    }

    /// Installs `jobs` on a blocking thread; `None` when there is nothing to install.
    /// The rules depend only on the desired state, so this can run while the kernel
    /// takes a plan.
    pub(crate) fn spawn(jobs: Vec<RuleJob>) -> Option<RuleTask> {
        (!jobs.is_empty()).then(|| {
            RuleTask(tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let results = jobs
                    .into_iter()
                    .map(|job| {
                        let result = job.iptables.sync(&job.inputs);
                        (job.index, job.inputs, result)
                    })
                    .collect();
                (results, started.elapsed())
            }))
        })
    }

    /// Waits for the rules started by [`RuleSets::spawn`] and records the outcome;
    /// returns how long `iptables-restore` took, in milliseconds.
    pub(crate) async fn finish(&mut self, task: Option<RuleTask>, metrics: &Metrics) -> u64 {
        let Some(RuleTask(task)) = task else {
            return 0;
        };
        match task.await {
            Ok((results, elapsed)) => {
                for (index, inputs, result) in results {
                    let rules = &mut self.families[index];
                    match result {
                        Ok(()) => rules.installed = Some(inputs),
                        Err(err) => {
                            let family = rules.iptables.family();
                            error!(%family, "iptables rules not installed: {err}");
                            metrics.error("iptables");
                            rules.installed = None;
                        }
                    }
                }
                elapsed.as_millis() as u64
            }
            Err(err) => {
                error!("iptables rules not installed: the iptables task failed: {err}");
                metrics.error("iptables");
                self.families
                    .iter_mut()
                    .for_each(|rules| rules.installed = None);
                0
            }
        }
    }
}
