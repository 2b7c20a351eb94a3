//! The problems found so far and the object each is about: a [`Subject`] words a
//! problem the same way for every kind (and says when the object came from the legacy
//! ConfigMap), and [`ordered`] puts each kind's objects in the one order every rule
//! relies on ("the first by name is kept").

use kube::Resource;

use super::UnsupportedField;
use crate::error::ConfigProblem;

#[derive(Default)]
pub(super) struct Report {
    pub(super) problems: Vec<ConfigProblem>,
    pub(super) unsupported: Vec<UnsupportedField>,
}
/// The object a problem is about.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    pub(super) kind: &'static str,
    pub(super) namespace: String,
    pub(super) name: String,
    /// `namespace/name` of the legacy ConfigMap it was converted from.
    pub(super) legacy: Option<String>,
}

impl Subject {
    pub(super) fn problem(
        &self,
        report: &mut Report,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let mut message = message.into();
        if let Some(config_map) = &self.legacy {
            message.push_str(&format!(
                " (converted from the legacy ConfigMap {config_map})"
            ));
        }
        report.problems.push(ConfigProblem {
            kind: self.kind.to_string(),
            // The legacy ConfigMap's parts have no namespace of their own.
            namespace: if self.legacy.is_some() {
                String::new()
            } else {
                self.namespace.clone()
            },
            name: self.name.clone(),
            field: field.into(),
            message,
        });
    }

    pub(super) fn unsupported(&self, report: &mut Report, field: &str, reason: &str) {
        let object = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        report.unsupported.push(UnsupportedField {
            kind: self.kind.to_string(),
            object,
            field: field.to_string(),
            reason: reason.to_string(),
        });
    }

    pub(super) fn describe(&self) -> String {
        match &self.legacy {
            Some(config_map) => format!(
                "{} {} (legacy ConfigMap {config_map})",
                self.kind, self.name
            ),
            None if self.namespace.is_empty() => format!("{} {}", self.kind, self.name),
            None => format!("{} {}/{}", self.kind, self.namespace, self.name),
        }
    }
}

/// The objects of one kind in the order they are validated: by name, custom
/// resources before legacy ones of the same name; nameless and same-named objects
/// after the first are reported and dropped.
pub(super) fn ordered<'a, T: Resource>(
    kind: &'static str,
    resources: &'a [T],
    legacy_objects: &'a [T],
    legacy: Option<&str>,
    report: &mut Report,
) -> Vec<(Subject, &'a T)> {
    let mut all: Vec<(Subject, &'a T)> = Vec::new();
    let sources = [(resources, None), (legacy_objects, legacy)];
    for (objects, origin) in sources {
        for object in objects {
            let meta = object.meta();
            let subject = Subject {
                kind,
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                legacy: origin.map(str::to_string),
            };
            if subject.name.is_empty() {
                subject.problem(
                    report,
                    "metadata.name",
                    "the object has no name and is left out: give it a name",
                );
                continue;
            }
            all.push((subject, object));
        }
    }
    // Stable: a custom resource stays before a legacy object of the same name.
    all.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
    let mut kept: Vec<(Subject, &'a T)> = Vec::with_capacity(all.len());
    for (subject, object) in all {
        if let Some((first, _)) = kept.last().filter(|(last, _)| last.name == subject.name) {
            let message = format!(
                "{} has the same name and comes first; this one is left out: rename one of them",
                first.describe()
            );
            subject.problem(report, "metadata.name", message);
            continue;
        }
        kept.push((subject, object));
    }
    kept
}

pub(super) fn duplicate_names(
    subject: &Subject,
    field: &str,
    names: &[String],
    what: &str,
    report: &mut Report,
) -> bool {
    let mut found = false;
    for (index, name) in names.iter().enumerate() {
        if let Some(first) = names[..index].iter().position(|earlier| earlier == name) {
            subject.problem(
                report,
                format!("{field}[{index}]"),
                format!(
                    "{what} {name:?} is already listed at {field}[{first}]; the object is left out: remove the repeat"
                ),
            );
            found = true;
        }
    }
    found
}
