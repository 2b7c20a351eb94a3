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
