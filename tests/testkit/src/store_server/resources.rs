//! The resources the store server knows: for each, its API group, the versions it is
//! served at, its plural (the path segment), kind, scope and whether it has a status
//! subresource. Versions of one resource share one store (like `bgppeers` v1beta1 and
//! v1beta2): objects are relabelled with the version asked for, not converted.

/// One resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// The versions it is served at; the first is the one objects are stored at.
    pub versions: &'static [&'static str],
    /// The path segment, e.g. `services`.
    pub plural: &'static str,
    /// The kind, e.g. `Service` (lists are `<kind>List`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether `/status` is a subresource: then the main resource's writes keep the
    /// stored `.status` and `/status` writes change only `.status`.
    pub status: bool,
}

impl ResourceType {
    /// `apiVersion` for `version`: `v1` in the core group, `group/version` elsewhere.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The group and plural as RBAC and `Status` details name them
    /// (`leases.coordination.k8s.io`, `services`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn core(
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: "",
        versions: &["v1"],
        plural,
        kind,
        namespaced,
        status,
    }
}

const fn metallb(plural: &'static str, kind: &'static str) -> ResourceType {
    // Every MetalLB CRD declares a status subresource.
    ResourceType {
        group: "metallb.io",
        versions: &["v1beta1"],
        plural,
        kind,
        namespaced: true,
        status: true,
    }
}

/// Every resource served.
pub const RESOURCES: &[ResourceType] = &[
    core("services", "Service", true, true),
    core("endpoints", "Endpoints", true, false),
    core("nodes", "Node", false, true),
    core("namespaces", "Namespace", false, true),
    core("pods", "Pod", true, true),
    core("events", "Event", true, false),
    core("secrets", "Secret", true, false),
    core("configmaps", "ConfigMap", true, false),
    core("serviceaccounts", "ServiceAccount", true, false),
    ResourceType {
        group: "discovery.k8s.io",
        versions: &["v1"],
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        status: false,
    },
    // Real API servers keep core and events.k8s.io Events in one storage and convert;
    // here they are two stores (nothing reads one through the other).
    ResourceType {
        group: "events.k8s.io",
        versions: &["v1"],
        plural: "events",
        kind: "Event",
        namespaced: true,
        status: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        versions: &["v1"],
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status: false,
    },
    metallb("ipaddresspools", "IPAddressPool"),
    metallb("l2advertisements", "L2Advertisement"),
    metallb("bgpadvertisements", "BGPAdvertisement"),
    metallb("bfdprofiles", "BFDProfile"),
    metallb("communities", "Community"),
    metallb("servicel2statuses", "ServiceL2Status"),
    metallb("servicebgpstatuses", "ServiceBGPStatus"),
    metallb("configurationstates", "ConfigurationState"),
    ResourceType {
        group: "metallb.io",
        versions: &["v1beta2", "v1beta1"],
        plural: "bgppeers",
        kind: "BGPPeer",
        namespaced: true,
        status: true,
    },
];

/// The resource at `group`/`version`/`plural`.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}

/// The resource of an object's `apiVersion` and `kind`, with the version.
pub fn by_kind(api_version: &str, kind: &str) -> Option<(&'static ResourceType, String)> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind && r.versions.contains(&version))
        .map(|r| (r, version.to_string()))
}
