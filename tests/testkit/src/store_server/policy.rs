//! Access control like RBAC: allow rules (verbs × API groups × resources, optionally
//! limited to namespaces, object names and users); a request no rule allows is
//! forbidden, answered `403` with the Status the real API server sends.

use serde_json::{Value, json};

/// One allow rule. Empty lists never match; `"*"` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Verbs: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or `*`.
    pub verbs: Vec<String>,
    /// API groups (`""` for the core group), or `*`.
    pub groups: Vec<String>,
    /// Resources as RBAC names them: `services`, `services/status`, `*`.
    pub resources: Vec<String>,
    /// Namespaces the rule holds in; `None`: everywhere, cluster scope included (a
    /// ClusterRole). With `Some`, it never allows cluster-scoped or all-namespaces
    /// requests (a Role).
    pub namespaces: Option<Vec<String>>,
    /// Object names (RBAC `resourceNames`); `None`: any. Like RBAC, a rule with names
    /// never allows `list`, `watch` or `create`, which name no object.
    pub names: Option<Vec<String>>,
    /// Users (bearer tokens) the rule is for; `None`: everyone.
    pub users: Option<Vec<String>>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// Allows `verbs` on `resources` of API group `group`, everywhere, for everyone.
    pub fn allow(verbs: &[&str], group: &str, resources: &[&str]) -> Rule {
        Rule {
            verbs: strings(verbs),
            groups: vec![group.to_string()],
            resources: strings(resources),
            namespaces: None,
            names: None,
            users: None,
        }
    }

    /// Limits the rule to `namespace` (adds to the namespaces already given).
    pub fn in_namespace(mut self, namespace: &str) -> Rule {
        self.namespaces
            .get_or_insert_with(Vec::new)
            .push(namespace.to_string());
        self
    }

    /// Limits the rule to objects named `names`.
    pub fn named(mut self, names: &[&str]) -> Rule {
        self.names = Some(strings(names));
        self
    }

    /// Limits the rule to `user` (the bearer token a client sends).
    pub fn for_user(mut self, user: &str) -> Rule {
        self.users
            .get_or_insert_with(Vec::new)
            .push(user.to_string());
        self
    }

    fn allows(&self, request: &Attributes) -> bool {
        let any =
            |list: &[String], value: &str| list.iter().any(|item| item == "*" || item == value);
        let resource = match &request.subresource {
            Some(sub) => format!("{}/{sub}", request.resource),
            None => request.resource.clone(),
        };
        any(&self.verbs, &request.verb)
            && any(&self.groups, &request.group)
            && (any(&self.resources, &resource)
                || (request.subresource.is_some() && self.resources.iter().any(|r| r == "*/*")))
            && match &self.namespaces {
                None => true,
                Some(namespaces) => request
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| any(namespaces, ns)),
            }
            && match &self.names {
                None => true,
                Some(names) => request.name.as_ref().is_some_and(|n| any(names, n)),
            }
            && match &self.users {
                None => true,
                Some(users) => any(users, &request.user),
            }
    }
}

/// Who may do what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessPolicy {
    /// Everything is allowed (the default).
    #[default]
    AllowAll,
    /// Only what a rule allows.
    Rules(Vec<Rule>),
}

/// A request as the authorizer sees it.
#[derive(Debug, Clone)]
pub struct Attributes {
    /// The user (bearer token, or `system:anonymous`).
    pub user: String,
    /// The verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource.
    pub subresource: Option<String>,
    /// Namespace in the path.
    pub namespace: Option<String>,
    /// Object name in the path.
    pub name: Option<String>,
}

impl AccessPolicy {
    /// The rules of RBAC `Role` and `ClusterRole` objects (as JSON, e.g. read from the
    /// manifests a deployment applies): a Role's rules hold in its namespace, a
    /// ClusterRole's everywhere. Other objects (bindings, ...) are skipped, so a whole
    /// manifest can be given; the bindings' subjects are not checked: the rules hold
    /// for every user. `nonResourceURLs` rules are skipped.
    pub fn from_rbac(objects: &[Value]) -> AccessPolicy {
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut rules = Vec::new();
        for object in objects {
            let namespace = match object["kind"].as_str() {
                Some("Role") => Some(
                    object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default"),
                ),
                Some("ClusterRole") => None,
                _ => continue,
            };
            for rule in object["rules"].as_array().into_iter().flatten() {
                if rule.get("resources").is_none() {
                    continue;
                }
                rules.push(Rule {
                    verbs: strings(&rule["verbs"]),
                    groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    namespaces: namespace.map(|ns| vec![ns.to_string()]),
                    names: rule
                        .get("resourceNames")
                        .map(strings)
                        .filter(|n| !n.is_empty()),
                    users: None,
                });
            }
        }
        AccessPolicy::Rules(rules)
    }

    /// Whether the request is allowed.
    pub fn allows(&self, request: &Attributes) -> bool {
        match self {
            AccessPolicy::AllowAll => true,
            AccessPolicy::Rules(rules) => rules.iter().any(|rule| rule.allows(request)),
        }
    }
}

/// The `403` Status the API server answers a forbidden request with.
pub fn forbidden(request: &Attributes) -> Value {
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let qualified = if request.group.is_empty() {
        request.resource.clone()
    } else {
        format!("{}.{}", request.resource, request.group)
    };
    let subject = match &request.name {
        Some(name) => format!("{qualified} {name:?}"),
        None => qualified,
    };
    let scope = match &request.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut details = json!({"kind": request.resource});
    if let Some(name) = &request.name {
        details["name"] = json!(name);
    }
    if !request.group.is_empty() {
        details["group"] = json!(request.group);
    }
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure",
        "message": format!(
            "{subject} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            request.user, request.verb, request.group
        ),
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            user: "u".into(),
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(String::from),
            namespace: ns.map(String::from),
            name: name.map(String::from),
        }
    }

    #[test]
    fn rbac_objects() {
        let policy = AccessPolicy::from_rbac(&[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "proxy"},
                   "rules": [{"apiGroups": [""], "resources": ["services", "nodes"], "verbs": ["get", "list", "watch"]},
                             {"apiGroups": [""], "resources": ["services/status"], "verbs": ["patch"]},
                             {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "ipam", "namespace": "kube-system"},
                   "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "resourceNames": ["ipam"], "verbs": ["get", "update", "patch"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "x"}}),
        ]);
        assert!(policy.allows(&request("list", "", "services", None, None, None)));
        assert!(policy.allows(&request(
            "patch",
            "",
            "services",
            Some("status"),
            Some("default"),
            Some("web")
        )));
        assert!(!policy.allows(&request(
            "patch",
            "",
            "services",
            None,
            Some("default"),
            Some("web")
        )));
        let lease = |ns, name| {
            request(
                "patch",
                "coordination.k8s.io",
                "leases",
                None,
                Some(ns),
                Some(name),
            )
        };
        assert!(policy.allows(&lease("kube-system", "ipam")));
        assert!(!policy.allows(&lease("default", "ipam")));
        assert!(!policy.allows(&lease("kube-system", "other")));
        assert!(!policy.allows(&request(
            "create",
            "coordination.k8s.io",
            "leases",
            None,
            Some("kube-system"),
            None
        )));
    }
}
