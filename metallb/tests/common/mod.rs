//! Helpers shared by the integration tests: objects from real YAML, problems by object.

#![allow(dead_code)]

use metallb_config::{ConfigProblem, MetalLbObjects, Validated};

/// Every MetalLB object of a multi-document YAML text.
pub fn objects(yaml: &str) -> MetalLbObjects {
    let mut objects = MetalLbObjects::default();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        assert!(
            objects.add_document(&value, "metallb-system").unwrap(),
            "not a MetalLB object: {value}"
        );
    }
    objects
}

/// Validates a multi-document YAML text.
pub fn validate(yaml: &str) -> Validated {
    metallb_config::validate(&objects(yaml))
}

/// The problems about one object.
pub fn problems<'a>(validated: &'a Validated, kind: &str, name: &str) -> Vec<&'a ConfigProblem> {
    validated
        .problems
        .iter()
        .filter(|problem| problem.kind == kind && problem.name == name)
        .collect()
}

/// Asserts that exactly one problem is about `kind name`, on `field`, with a message
/// holding every one of `words`; returns it.
pub fn only_problem<'a>(
    validated: &'a Validated,
    kind: &str,
    name: &str,
    field: &str,
    words: &[&str],
) -> &'a ConfigProblem {
    let found = problems(validated, kind, name);
    assert_eq!(
        found.len(),
        1,
        "{kind} {name}: want one problem, got {:#?}",
        validated.problems
    );
    let problem = found[0];
    assert_eq!(problem.field, field, "{problem}");
    for word in words {
        assert!(problem.message.contains(word), "{word:?} not in: {problem}");
    }
    problem
}

/// A pool object.
pub fn pool(name: &str, addresses: &[&str]) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec:\n  addresses: {}\n---\n",
        serde_json::to_string(addresses).unwrap()
    )
}

/// A v1beta2 BGPPeer with `spec` given as a YAML flow mapping's inside.
pub fn peer(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec: {{{spec}}}\n---\n"
    )
}

/// An object of `kind` (v1beta1) with `spec` given as a YAML flow mapping's inside.
pub fn object(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: {kind}\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec: {{{spec}}}\n---\n"
    )
}
