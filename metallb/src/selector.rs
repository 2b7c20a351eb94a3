//! Kubernetes label selectors, checked once and then matched cheaply.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A validated label selector: every `matchLabels` pair and every requirement must
/// hold. The empty selector matches everything, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// Labels that must be present with these values.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub requirements: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator with its values.
    pub operator: Operator,
}

/// A `matchExpressions` operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// The label's value is one of these.
    In(Vec<String>),
    /// The label is absent or its value is none of these.
    NotIn(Vec<String>),
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Selector {
    /// Checks a `LabelSelector` from an object: operators must be known, `In`/`NotIn`
    /// need values and `Exists`/`DoesNotExist` take none. The error says which.
    pub fn parse(selector: &LabelSelector) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for (index, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let values = expression.values.clone().unwrap_or_default();
            let operator = match expression.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{index}]: operator {} needs at least one value",
                        expression.operator
                    ));
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{index}]: operator {} takes no values",
                        expression.operator
                    ));
                }
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!(
                        "matchExpressions[{index}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    ));
                }
            };
            requirements.push(Requirement {
                key: expression.key.clone(),
                operator,
            });
        }
        Ok(Selector {
            match_labels: selector.match_labels.clone().unwrap_or_default(),
            requirements,
        })
    }

    /// Checks label keys and values as Kubernetes does: a key is an optional DNS
    /// subdomain prefix and `/`, then a name of 1 to 63 characters (letters, digits,
    /// `-`, `_`, `.`, beginning and ending with a letter or digit); a value is empty
    /// or such a name. The error names the key or value.
    pub fn check_syntax(&self) -> Result<(), String> {
        let keys = self
            .match_labels
            .keys()
            .map(|key| (key, "matchLabels"))
            .chain(
                self.requirements
                    .iter()
                    .map(|requirement| (&requirement.key, "matchExpressions")),
            );
        for (key, place) in keys {
            check_key(key).map_err(|why| format!("{place}: label key {key:?} {why}"))?;
        }
        let values = self
            .match_labels
            .values()
            .map(|value| (value, "matchLabels"))
            .chain(self.requirements.iter().flat_map(|requirement| {
                match &requirement.operator {
                    Operator::In(values) | Operator::NotIn(values) => values.as_slice(),
                    Operator::Exists | Operator::DoesNotExist => &[],
                }
                .iter()
                .map(|value| (value, "matchExpressions"))
            }));
        for (value, place) in values {
            if !value.is_empty() {
                check_name(value).map_err(|why| format!("{place}: label value {value:?} {why}"))?;
            }
        }
        Ok(())
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.requirements.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match &requirement.operator {
                    Operator::In(values) => value.is_some_and(|value| values.contains(value)),
                    Operator::NotIn(values) => !value.is_some_and(|value| values.contains(value)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let labels_ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !labels_ok {
                return Err(format!(
                    "has an invalid prefix {prefix:?}: it must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
                ));
            }
            name
        }
        None => key,
    };
    check_name(name)
}

fn check_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_alphanumeric();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err("must be 1 to 63 characters".to_string());
    }
    if !alphanumeric(&bytes[0]) || !alphanumeric(&bytes[bytes.len() - 1]) {
        return Err("must begin and end with a letter or digit".to_string());
    }
    if !bytes
        .iter()
        .all(|b| alphanumeric(b) || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may hold only letters, digits, '-', '_' and '.'".to_string());
    }
    Ok(())
}

/// Whether any of `selectors` matches; an empty list matches everything (MetalLB's
/// rule for node, pool and Service selector lists).
pub fn any_matches(selectors: &[Selector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|selector| selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let selector = Selector::parse(&LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            match_expressions: Some(vec![
                expression("rack", "In", &["1", "2"]),
                expression("drain", "DoesNotExist", &[]),
                expression("tier", "NotIn", &["edge"]),
            ]),
        })
        .unwrap();
        assert!(selector.matches(&labels(&[("zone", "a"), ("rack", "2")])));
        assert!(!selector.matches(&labels(&[("zone", "b"), ("rack", "2")])));
        assert!(!selector.matches(&labels(&[("zone", "a"), ("rack", "3")])));
        assert!(!selector.matches(&labels(&[("zone", "a"), ("rack", "1"), ("drain", "")])));
        assert!(!selector.matches(&labels(&[("zone", "a"), ("rack", "1"), ("tier", "edge")])));
        assert!(Selector::default().matches(&labels(&[])));
        assert!(any_matches(&[], &labels(&[])));
        assert!(!any_matches(&[selector], &labels(&[])));
    }

    #[test]
    fn bad_expressions_are_refused_with_their_index() {
        let bad = |operator: &str, values: &[&str]| {
            Selector::parse(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![expression("k", operator, values)]),
            })
            .unwrap_err()
        };
        assert!(bad("Equals", &["x"]).contains("unknown operator \"Equals\""));
        assert!(bad("In", &[]).contains("needs at least one value"));
        assert!(bad("Exists", &["x"]).contains("takes no values"));
    }
}
