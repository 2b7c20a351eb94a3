//! Reading `iptables-save` output: which chains exist and which rules they hold.

use std::collections::BTreeMap;

use super::{Jump, Table};

/// One table of an `iptables-save` dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TableDump {
    /// Chain name → policy (`ACCEPT`/`DROP` for built-in chains, `-` for user chains).
    chains: BTreeMap<String, String>,
    /// `(chain, rule specification after the chain name)` in order.
    rules: Vec<(String, String)>,
}

/// The rules currently installed, as printed by `iptables-save` (all tables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedRules {
    tables: BTreeMap<String, TableDump>,
}

impl SavedRules {
    /// Parses `iptables-save` / `ip6tables-save` output. Lines that are not part of
    /// the format (comments, warnings) are ignored.
    pub fn parse(text: &str) -> SavedRules {
        let mut tables: BTreeMap<String, TableDump> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim_end) {
            if let Some(name) = line.strip_prefix('*') {
                tables.entry(name.to_string()).or_default();
                current = Some(name.to_string());
                continue;
            }
            if line == "COMMIT" {
                current = None;
                continue;
            }
            let Some(table) = current.as_ref().and_then(|name| tables.get_mut(name)) else {
                continue;
            };
            if let Some(declaration) = line.strip_prefix(':') {
                let mut words = declaration.split_whitespace();
                if let Some(chain) = words.next() {
                    let policy = words.next().unwrap_or("-");
                    table.chains.insert(chain.to_string(), policy.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                table.rules.push((chain.to_string(), spec.to_string()));
            }
        }
        SavedRules { tables }
    }

    /// Whether `table` exists in the dump.
    pub fn has_table(&self, table: Table) -> bool {
        self.tables.contains_key(table.name())
    }

    /// Whether `chain` exists in `table`.
    pub fn has_chain(&self, table: Table, chain: &str) -> bool {
        self.table(table)
            .is_some_and(|dump| dump.chains.contains_key(chain))
    }

    /// Whether `chain` is a built-in chain of `table` (it has a policy).
    pub fn is_builtin(&self, table: Table, chain: &str) -> bool {
        self.table(table)
            .and_then(|dump| dump.chains.get(chain))
            .is_some_and(|policy| policy != "-")
    }

    /// Every chain name of `table`.
    pub fn chains(&self, table: Table) -> impl Iterator<Item = &str> {
        self.table(table)
            .into_iter()
            .flat_map(|dump| dump.chains.keys().map(String::as_str))
    }

    /// The rules of `chain` in `table`, as specifications after `-A CHAIN `.
    pub fn rules(&self, table: Table, chain: &str) -> Vec<&str> {
        self.table(table)
            .into_iter()
            .flat_map(|dump| dump.rules.iter())
            .filter(|(name, _)| name == chain)
            .map(|(_, spec)| spec.as_str())
            .collect()
    }

    /// All `(chain, spec)` rules of `table`, in order.
    pub fn all_rules(&self, table: Table) -> impl Iterator<Item = (&str, &str)> {
        self.table(table).into_iter().flat_map(|dump| {
            dump.rules
                .iter()
                .map(|(chain, spec)| (chain.as_str(), spec.as_str()))
        })
    }

    /// How many copies of `jump` are installed (0, 1, or more after an interrupted
    /// run of a tool that appended blindly).
    pub fn jump_count(&self, jump: &Jump) -> usize {
        let spec = jump.spec();
        self.rules(jump.table, jump.from)
            .into_iter()
            .filter(|rule| *rule == spec)
            .count()
    }

    /// The number of rules in every table: what iptables-wrapper compares to tell
    /// which backend a host uses.
    pub fn rule_count(&self) -> usize {
        self.tables.values().map(|dump| dump.rules.len()).sum()
    }

    /// Whether kubelet's marker chains (`KUBE-IPTABLES-HINT`, `KUBE-KUBELET-CANARY`)
    /// exist in any table: kubelet creates them with the backend the node uses.
    pub fn has_kubelet_marker(&self) -> bool {
        self.tables.values().any(|dump| {
            dump.chains
                .keys()
                .any(|chain| chain == "KUBE-IPTABLES-HINT" || chain == "KUBE-KUBELET-CANARY")
        })
    }

    fn table(&self, table: Table) -> Option<&TableDump> {
        self.tables.get(table.name())
    }
}

/// The target of a rule specification (`-j X` or `-g X`), honouring quoted
/// comments that might themselves contain " -j ".
pub(crate) fn rule_target(spec: &str) -> Option<&str> {
    let mut words = Words { rest: spec };
    while let Some(word) = words.next() {
        if word == "-j" || word == "-g" || word == "--jump" || word == "--goto" {
            return words.next();
        }
    }
    None
}

/// Splits a rule specification into words; a double-quoted word (with `\"` escapes)
/// is one word.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest.trim_start();
        if text.is_empty() {
            return None;
        }
        let end = if text.starts_with('"') {
            let mut escaped = false;
            let mut end = text.len();
            for (i, c) in text.char_indices().skip(1) {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = i + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            end
        } else {
            text.find(char::is_whitespace).unwrap_or(text.len())
        };
        let (word, rest) = text.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::iptables::JUMPS;

    // Output of iptables-nft-save 1.8.9 in a namespace with a foreign rule and one
    // of our jumps installed twice.
    const DUMP: &str = "\
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Nov 24 10:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FOREIGN - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES
-A PREROUTING -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES
-A PREROUTING -s 10.1.0.0/16 -m comment --comment \"not ours -j KUBE-SERVICES\" -j FOREIGN
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
COMMIT
# Completed on Tue Nov 24 10:00:00 2026
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
";

    #[test]
    fn parses_chains_policies_and_rules() {
        let saved = SavedRules::parse(DUMP);
        assert!(saved.has_table(Table::Nat));
        assert!(saved.has_table(Table::Filter));
        assert!(saved.has_chain(Table::Nat, "FOREIGN"));
        assert!(!saved.has_chain(Table::Filter, "FOREIGN"));
        assert!(saved.is_builtin(Table::Filter, "INPUT"));
        assert!(!saved.is_builtin(Table::Nat, "KUBE-SERVICES"));
        assert_eq!(
            saved.rules(Table::Nat, "KUBE-SERVICES"),
            ["-s 127.0.0.0/8 -j RETURN"]
        );
        assert_eq!(saved.rule_count(), 4);
        assert!(!saved.has_kubelet_marker());
    }

    #[test]
    fn counts_duplicated_jumps_exactly() {
        let saved = SavedRules::parse(DUMP);
        let prerouting = JUMPS.iter().find(|j| j.from == "PREROUTING").unwrap();
        let output = JUMPS.iter().find(|j| j.from == "OUTPUT").unwrap();
        assert_eq!(saved.jump_count(prerouting), 2);
        assert_eq!(saved.jump_count(output), 0);
    }

    #[test]
    fn finds_targets_outside_quoted_comments() {
        let specs = SavedRules::parse(DUMP);
        let targets: Vec<_> = specs
            .rules(Table::Nat, "PREROUTING")
            .into_iter()
            .map(rule_target)
            .collect();
        assert_eq!(
            targets,
            [
                Some("KUBE-SERVICES"),
                Some("KUBE-SERVICES"),
                Some("FOREIGN")
            ]
        );
        assert_eq!(rule_target("-s 1.2.3.4/32"), None);
        assert_eq!(rule_target("-g KUBE-X"), Some("KUBE-X"));
    }

    #[test]
    fn sees_kubelet_marker_chains() {
        let saved = SavedRules::parse("*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n");
        assert!(saved.has_kubelet_marker());
    }
}
