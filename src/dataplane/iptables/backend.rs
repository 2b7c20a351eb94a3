//! Running `iptables-save` and `iptables-restore`: the only I/O of this module.
//!
//! Calls block until the program exits (milliseconds); async callers run them in
//! `spawn_blocking`. The programs act on the network namespace of the calling
//! thread.

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

use tracing::{debug, info, warn};

use super::{Family, IptablesError, RuleInputs, SavedRules, render, render_cleanup};

/// Which iptables implementation programs the host. Rules must be added with the
/// one the host already uses, or they are evaluated in a separate hook with no
/// ordering against the host's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft-*`: the iptables syntax over the nf_tables kernel API.
    Nft,
    /// `iptables-legacy-*`: the x_tables kernel API.
    Legacy,
    /// Plain `iptables-*` (a host without the split binaries, iptables < 1.8).
    Default,
}

/// Wait up to 5 s for the xtables lock another iptables-legacy program holds.
const LOCK_WAIT: &str = "--wait=5";

impl Backend {
    /// Picks the backend the host uses, like kube-proxy's iptables-wrapper: kubelet's
    /// marker chains decide first (nft, then legacy); otherwise the implementation
    /// holding more rules wins, and nft on a tie (an empty host).
    ///
    /// `nft` and `legacy` are the parsed dumps of both families of each
    /// implementation.
    pub fn choose(nft: &SavedRules, legacy: &SavedRules) -> Backend {
        let legacy_wins = !nft.has_kubelet_marker()
            && (legacy.has_kubelet_marker() || legacy.rule_count() > nft.rule_count());
        if legacy_wins {
            Backend::Legacy
        } else {
            Backend::Nft
        }
    }

    /// Detects the host's backend by dumping both implementations (errors count as
    /// empty dumps: a missing kernel module simply means no rules there). Falls back
    /// to [`Backend::Default`] when neither split binary is installed.
    pub fn detect() -> Backend {
        let nft = dump_both_families(Backend::Nft);
        let legacy = dump_both_families(Backend::Legacy);
        let backend = match (nft, legacy) {
            (None, None) => Backend::Default,
            (Some(_), None) => Backend::Nft,
            (None, Some(_)) => Backend::Legacy,
            (Some(nft), Some(legacy)) => {
                debug!(
                    nft_rules = nft.rule_count(),
                    legacy_rules = legacy.rule_count(),
                    "comparing iptables backends"
                );
                Backend::choose(&nft, &legacy)
            }
        };
        info!(?backend, "iptables backend detected");
        backend
    }

    /// The program name of `tool` (`save` or `restore`) for `family`.
    pub fn program(self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        match self {
            Backend::Nft => format!("{base}-nft-{tool}"),
            Backend::Legacy => format!("{base}-legacy-{tool}"),
            Backend::Default => format!("{base}-{tool}"),
        }
    }
}

/// Both families' dumps of `backend` merged, or `None` when its programs are not
/// installed.
fn dump_both_families(backend: Backend) -> Option<SavedRules> {
    let mut text = String::new();
    let mut installed = false;
    for family in [Family::V4, Family::V6] {
        let program = backend.program(family, "save");
        match Command::new(&program).stdin(Stdio::null()).output() {
            Ok(output) => {
                installed = true;
                text.push_str(&String::from_utf8_lossy(&output.stdout));
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => warn!(%program, %error, "could not run iptables save program"),
        }
    }
    installed.then(|| SavedRules::parse(&text))
}

/// One family's rules through one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iptables {
    backend: Backend,
    family: Family,
}

impl Iptables {
    /// Programs `family` through `backend`.
    pub fn new(backend: Backend, family: Family) -> Iptables {
        Iptables { backend, family }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The family programmed.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The current rules of every table.
    pub fn save(&self) -> Result<SavedRules, IptablesError> {
        let program = self.backend.program(self.family, "save");
        let output = Command::new(&program)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(IptablesError::Command {
                program,
                action: "reading the current rules",
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(SavedRules::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Makes our chains hold exactly what `inputs` call for and ensures each jump
    /// into them exists once; one atomic `iptables-restore --noflush`.
    pub fn sync(&self, inputs: &RuleInputs) -> Result<(), IptablesError> {
        inputs.validate()?;
        let current = self.save()?;
        let payload = render(inputs, &current);
        self.restore(&payload, "installing the service rules")?;
        debug!(family = %self.family, lines = payload.lines().count(), "iptables rules synced");
        Ok(())
    }

    /// Removes our jumps and chains, leaving every other rule as it is. Does nothing
    /// when none exist.
    pub fn cleanup(&self) -> Result<(), IptablesError> {
        let current = self.save()?;
        match render_cleanup(&current) {
            Some(payload) => {
                self.restore(&payload, "removing the service rules")?;
                info!(family = %self.family, "iptables chains removed");
            }
            None => debug!(family = %self.family, "no iptables chains to remove"),
        }
        Ok(())
    }

    /// Whether MASQUERADE accepts `--random-fully` (iptables 1.6.2 and later).
    pub fn supports_random_fully(&self) -> bool {
        let program = match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()
            .and_then(|output| parse_version(&String::from_utf8_lossy(&output.stdout)))
            .is_some_and(|version| version >= (1, 6, 2))
    }

    /// Feeds `payload` to `iptables-restore --noflush` on standard input.
    fn restore(&self, payload: &str, action: &'static str) -> Result<(), IptablesError> {
        let program = self.backend.program(self.family, "restore");
        let mut command = Command::new(&program);
        command.arg("--noflush");
        if self.backend != Backend::Nft {
            // x_tables has one global lock; nf_tables transactions need none.
            command.arg(LOCK_WAIT);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(payload.as_bytes()));
        let output = child
            .wait_with_output()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(IptablesError::Command {
                program,
                action,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        if let Some(Err(source)) = written {
            return Err(IptablesError::Spawn { program, source });
        }
        Ok(())
    }
}

/// `(major, minor, patch)` from `iptables v1.8.9 (nf_tables)`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_with_rules(count: usize) -> SavedRules {
        let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
        for i in 0..count {
            text.push_str(&format!("-A INPUT -s 10.0.0.{i}/32 -j ACCEPT\n"));
        }
        text.push_str("COMMIT\n");
        SavedRules::parse(&text)
    }

    #[test]
    fn the_backend_with_more_rules_wins_and_nft_wins_ties() {
        assert_eq!(
            Backend::choose(&dump_with_rules(1), &dump_with_rules(12)),
            Backend::Legacy
        );
        assert_eq!(
            Backend::choose(&dump_with_rules(3), &dump_with_rules(2)),
            Backend::Nft
        );
        assert_eq!(
            Backend::choose(&dump_with_rules(0), &dump_with_rules(0)),
            Backend::Nft
        );
    }

    #[test]
    fn kubelet_markers_beat_rule_counts() {
        let marker = SavedRules::parse("*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n");
        assert_eq!(Backend::choose(&marker, &dump_with_rules(50)), Backend::Nft);
        assert_eq!(
            Backend::choose(&dump_with_rules(50), &marker),
            Backend::Legacy
        );
    }

    #[test]
    fn program_names_follow_family_and_backend() {
        assert_eq!(
            Backend::Nft.program(Family::V4, "restore"),
            "iptables-nft-restore"
        );
        assert_eq!(
            Backend::Legacy.program(Family::V6, "save"),
            "ip6tables-legacy-save"
        );
        assert_eq!(
            Backend::Default.program(Family::V6, "restore"),
            "ip6tables-restore"
        );
    }

    #[test]
    fn parses_iptables_versions() {
        assert_eq!(
            parse_version("iptables v1.8.9 (nf_tables)\n"),
            Some((1, 8, 9))
        );
        assert_eq!(parse_version("iptables v1.6.2\n"), Some((1, 6, 2)));
        assert_eq!(parse_version("ip6tables v1.8\n"), Some((1, 8, 0)));
        assert_eq!(parse_version("garbage"), None);
    }
}
