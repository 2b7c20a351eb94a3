//! The files under `manifests/` are what an operator applies: every object parses into
//! its k8s-openapi type with no field lost on the way (a misspelt field would be
//! dropped silently by the API server too), every kustomization names files that exist,
//! and the DaemonSet runs the agent unprivileged with what the agent's own code says it
//! needs: the capabilities `preflight::caps` checks, the probe paths and port of the
//! configuration, the membership key and restart marker where the configuration reads
//! them, the image named in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ipvs_proxy::preflight::caps::{Capability, Necessity};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// Every `.yaml` file below `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The non-empty YAML documents of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn is_kustomization(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "kustomization.yaml")
}

/// The kustomization files and the files they use as patches or generator inputs
/// (not objects of their own).
fn kustomize_inputs() -> BTreeSet<PathBuf> {
    let mut inputs = BTreeSet::new();
    for kustomization in yaml_files(&manifests_dir())
        .into_iter()
        .filter(|p| is_kustomization(p))
    {
        let dir = kustomization.parent().unwrap().to_path_buf();
        let document = &documents(&kustomization)[0];
        for patch in document["patches"].as_array().into_iter().flatten() {
            if let Some(path) = patch["path"].as_str() {
                inputs.insert(dir.join(path));
            }
        }
        for generator in document["configMapGenerator"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for file in generator["files"].as_array().into_iter().flatten() {
                let file = file.as_str().unwrap();
                // `key=path` names the key; the path is after the `=`.
                let path = file.split_once('=').map_or(file, |(_, path)| path);
                inputs.insert(dir.join(path));
            }
        }
        inputs.insert(kustomization);
    }
    inputs
}

/// Removes what a typed round trip legitimately changes: nulls and empty objects
/// written for readability.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Parses `object` as `T` and serializes it back: a field `T` does not know is lost,
/// which the comparison reports.
fn round_trip<T: DeserializeOwned + serde::Serialize>(object: &Value, place: &str) {
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{place}: not a {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        normalized(&back),
        normalized(object),
        "{place}: fields lost or changed when read as {}",
        std::any::type_name::<T>()
    );
}

/// Every object of the manifests (patches and generator inputs aside), with its file.
fn objects() -> Vec<(PathBuf, Value)> {
    let inputs = kustomize_inputs();
    yaml_files(&manifests_dir())
        .into_iter()
        .filter(|path| !inputs.contains(path))
        .flat_map(|path| {
            documents(&path)
                .into_iter()
                .map(move |object| (path.clone(), object))
        })
        .collect()
}

fn base_daemonset() -> DaemonSet {
    let path = manifests_dir().join("base/daemonset.yaml");
    let objects = documents(&path);
    assert_eq!(objects.len(), 1, "one DaemonSet in {}", path.display());
    serde_json::from_value(objects[0].clone()).unwrap()
}

/// The DaemonSet's Pod template spec.
fn pod_spec(daemonset: &DaemonSet) -> k8s_openapi::api::core::v1::PodSpec {
    daemonset.spec.template.spec.clone().expect("a Pod spec")
}

fn base_kustomization() -> Value {
    documents(&manifests_dir().join("base/kustomization.yaml"))
        .pop()
        .unwrap()
}

/// The base's configuration file (a generator input: two YAML documents).
fn base_config_text() -> String {
    std::fs::read_to_string(manifests_dir().join("base/config.yaml")).unwrap()
}

fn agent_container(daemonset: &DaemonSet) -> Container {
    let spec = pod_spec(daemonset);
    spec.containers
        .into_iter()
        .find(|c| {
            c.command
                .as_ref()
                .is_some_and(|cmd| cmd.len() > 1 && cmd[1] == "run")
        })
        .expect("a container runs `ipvs-proxy run`")
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type_without_losing_a_field() {
    let objects = objects();
    let mut kinds = BTreeMap::<String, usize>::new();
    for (path, object) in &objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let place = format!("{} ({kind} {})", path.display(), object["metadata"]["name"]);
        match kind.as_str() {
            "DaemonSet" => round_trip::<DaemonSet>(object, &place),
            "ServiceAccount" => round_trip::<ServiceAccount>(object, &place),
            "ClusterRole" => round_trip::<ClusterRole>(object, &place),
            "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(object, &place),
            "Role" => round_trip::<Role>(object, &place),
            "RoleBinding" => round_trip::<RoleBinding>(object, &place),
            "ConfigMap" => round_trip::<ConfigMap>(object, &place),
            "Service" => round_trip::<Service>(object, &place),
            "EndpointSlice" => round_trip::<EndpointSlice>(object, &place),
            other => panic!("{place}: kind {other:?} is not checked here; add it"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    for kind in [
        "DaemonSet",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} among {kinds:?}");
    }
}

#[test]
fn the_round_trip_catches_a_misspelt_field() {
    // The check above must be able to fail: a typo in a securityContext is lost.
    let mut object = serde_json::to_value(base_daemonset()).unwrap();
    object["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] =
        Value::Bool(true);
    let result = std::panic::catch_unwind(|| round_trip::<DaemonSet>(&object, "typo"));
    assert!(result.is_err());
}

#[test]
fn kustomizations_name_files_that_exist_and_every_file_is_used() {
    let dir = manifests_dir();
    let mut used = BTreeSet::new();
    let mut kustomizations = 0;
    for kustomization in yaml_files(&dir).into_iter().filter(|p| is_kustomization(p)) {
        kustomizations += 1;
        let here = kustomization.parent().unwrap();
        let document = &documents(&kustomization)[0];
        assert_eq!(
            document["kind"],
            "Kustomization",
            "{}",
            kustomization.display()
        );
        for resource in document["resources"].as_array().into_iter().flatten() {
            let path = here.join(resource.as_str().unwrap());
            if path.is_dir() {
                assert!(
                    path.join("kustomization.yaml").is_file(),
                    "{}: {} has no kustomization.yaml",
                    kustomization.display(),
                    path.display()
                );
            } else {
                assert!(
                    path.is_file(),
                    "{}: {} does not exist",
                    kustomization.display(),
                    path.display()
                );
                used.insert(path.canonicalize().unwrap());
            }
        }
        used.insert(kustomization.canonicalize().unwrap());
    }
    assert!(kustomizations >= 2, "a base and an overlay");
    for input in kustomize_inputs() {
        assert!(input.is_file(), "{} does not exist", input.display());
        used.insert(input.canonicalize().unwrap());
    }
    // Everything in a kustomize directory is used by its kustomization: a file left
    // out would silently not be applied. (The demo objects are for `--manifests`.)
    for file in yaml_files(&dir) {
        if file.starts_with(dir.join("demo")) {
            continue;
        }
        assert!(
            used.contains(&file.canonicalize().unwrap()),
            "{} is in no kustomization",
            file.display()
        );
    }
}

#[test]
fn objects_keep_their_namespaces_through_kustomize() {
    // A kustomization `namespace:` would move every object into one namespace, the
    // MetalLB Role included, where it would grant nothing.
    for kustomization in yaml_files(&manifests_dir())
        .into_iter()
        .filter(|p| is_kustomization(p))
    {
        assert!(
            documents(&kustomization)[0].get("namespace").is_none(),
            "{} sets a namespace for all objects",
            kustomization.display()
        );
    }
    let config: Value = serde_yaml_ng::Deserializer::from_str(&base_config_text())
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "IpvsProxyConfiguration")
        .unwrap();
    let metallb_namespace = config["loadBalancer"]["metallbNamespace"].as_str().unwrap();
    let lease_namespace = config["loadBalancer"]["ipamLeaseNamespace"]
        .as_str()
        .unwrap();
    let rbac = documents(&manifests_dir().join("base/rbac.yaml"));
    let role_for = |resource: &str| {
        rbac.iter()
            .find(|o| {
                o["kind"] == "Role"
                    && o["rules"].as_array().unwrap().iter().any(|r| {
                        r["resources"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x == resource)
                    })
            })
            .unwrap_or_else(|| panic!("no Role grants {resource}"))
    };
    assert_eq!(
        role_for("ipaddresspools")["metadata"]["namespace"],
        metallb_namespace
    );
    assert_eq!(
        role_for("secrets")["metadata"]["namespace"],
        metallb_namespace
    );
    assert_eq!(role_for("leases")["metadata"]["namespace"], lease_namespace);
    // Each Role is bound in its own namespace to the DaemonSet's ServiceAccount.
    let daemonset = base_daemonset();
    let account = pod_spec(&daemonset).service_account_name;
    for role in rbac.iter().filter(|o| o["kind"] == "Role") {
        let binding = rbac
            .iter()
            .find(|o| {
                o["kind"] == "RoleBinding" && o["roleRef"]["name"] == role["metadata"]["name"]
            })
            .unwrap_or_else(|| panic!("Role {} is not bound", role["metadata"]["name"]));
        assert_eq!(
            binding["metadata"]["namespace"],
            role["metadata"]["namespace"]
        );
        assert_eq!(binding["subjects"][0]["name"], account.as_deref().unwrap());
        assert_eq!(binding["subjects"][0]["namespace"], "kube-system");
    }
}

#[test]
fn the_daemonset_is_not_privileged_and_has_exactly_the_capabilities_the_agent_checks() {
    let daemonset = base_daemonset();
    let spec = pod_spec(&daemonset);
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    // kube-proxy's: every taint tolerated.
    let tolerations = spec.tolerations.unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "{tolerations:?}"
    );

    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    for container in &containers {
        let security = container.security_context.clone().unwrap_or_default();
        assert_ne!(
            security.privileged,
            Some(true),
            "{} is privileged",
            container.name
        );
        assert_eq!(
            security.allow_privilege_escalation,
            Some(false),
            "{}",
            container.name
        );
        assert_eq!(
            security.read_only_root_filesystem,
            Some(true),
            "{}",
            container.name
        );
        let capabilities = security.capabilities.unwrap_or_default();
        assert_eq!(
            capabilities.drop,
            Some(vec!["ALL".to_string()]),
            "{} keeps the runtime's default capabilities",
            container.name
        );
    }
    let added = |container: &Container| -> BTreeSet<String> {
        container
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone())
            .unwrap_or_default()
            .into_iter()
            .collect()
    };

    // The agent: what `ipvs-proxy run` checks it needs (required or for a feature),
    // plus binding ports below 1024 (BGP) when it declares any.
    let agent = agent_container(&base_daemonset());
    let mut wanted: BTreeSet<String> = Capability::ALL
        .into_iter()
        .filter(|c| c.necessity() != Necessity::Note)
        .map(|c| c.kubernetes_name().to_string())
        .collect();
    if agent
        .ports
        .iter()
        .flatten()
        .any(|p| p.container_port < 1024)
    {
        wanted.insert("NET_BIND_SERVICE".to_string());
    }
    assert_eq!(added(&agent), wanted);

    // SYS_MODULE only where modules are loaded, and such a container has nothing else.
    let sys_module = Capability::SysModule.kubernetes_name();
    for container in &containers {
        if added(container).contains(sys_module) {
            let command = container.command.clone().unwrap_or_default();
            assert_eq!(
                command.first().map(String::as_str),
                Some("modprobe"),
                "{} has {sys_module} but does not load modules",
                container.name
            );
            assert_eq!(added(container).len(), 1, "{}", container.name);
            assert!(
                spec.init_containers
                    .iter()
                    .flatten()
                    .any(|i| i.name == container.name),
                "{sys_module} in a long-running container"
            );
        }
    }
}

#[test]
fn the_daemonset_mounts_what_the_agent_reads_and_writes() {
    let daemonset = base_daemonset();
    let spec = pod_spec(&daemonset);
    let agent = agent_container(&daemonset);
    let volumes = spec.volumes.clone().unwrap_or_default();
    let mounts = agent.volume_mounts.clone().unwrap_or_default();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    // The mount holding `path`, and the volume behind it.
    let mount_of = |path: &str| {
        let mount = mounts
            .iter()
            .filter(|m| Path::new(path).starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
            .clone();
        let volume = volume(&mount.name);
        (mount, volume)
    };
    let host_path = |path: &str| {
        let (mount, volume) = mount_of(path);
        (
            volume
                .host_path
                .unwrap_or_else(|| panic!("{path} is not on the host"))
                .path,
            mount.read_only.unwrap_or(false),
        )
    };

    assert_eq!(
        host_path("/lib/modules"),
        ("/lib/modules".to_string(), true)
    );
    assert_eq!(
        host_path("/run/xtables.lock"),
        ("/run/xtables.lock".to_string(), false)
    );
    // The status socket `ipvs-proxy services` talks to, on the host so that the CLI in
    // the same container (kubectl exec) and the node find it.
    let socket = ipvs_proxy::observe::status::DEFAULT_SOCKET;
    assert!(!host_path(socket).1, "{socket} must be writable");

    // The configuration: --config is a key of the mounted ConfigMap, and the base
    // generates that key from config.yaml.
    let command = agent.command.clone().unwrap();
    let config_path = command
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config=");
    let (mount, config_volume) = mount_of(config_path);
    assert!(config_volume.config_map.is_some(), "{config_path}");
    let key = Path::new(config_path)
        .strip_prefix(&mount.mount_path)
        .unwrap()
        .to_str()
        .unwrap();
    let kustomization = base_kustomization();
    let generated: Vec<&str> = kustomization["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == config_volume.config_map.as_ref().unwrap().name)
        .flat_map(|g| g["files"].as_array().unwrap())
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        generated.iter().any(|f| f.starts_with(&format!("{key}="))),
        "the generated ConfigMap has no key {key}: {generated:?}"
    );
    let loaded = ipvs_proxy::config::parse(&base_config_text()).unwrap();

    // Probes on the healthz server the configuration sets up.
    let healthz = loaded.config.healthz_bind_address.unwrap();
    for (probe, path) in [
        (agent.liveness_probe.clone(), "/livez"),
        (agent.readiness_probe.clone(), "/healthz"),
    ] {
        let get = probe.and_then(|p| p.http_get).expect("an HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(
                healthz.port()
            ))
        );
    }

    // The base configuration is read without a single warning.
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);

    // The announcer: the membership key file is the Secret's item, the BGP restart
    // marker survives the container on the host, and the membership port is declared;
    // with the base's settings and with the defaults the kubeadm overlay runs with.
    let ports = agent.ports.clone().unwrap_or_default();
    let defaults = ipvs_proxy::config::Extensions::default().load_balancer;
    for settings in [&loaded.config.extensions.load_balancer, &defaults] {
        let key_file = settings.membership.key_file.to_str().unwrap();
        let (mount, secret_volume) = mount_of(key_file);
        let secret = secret_volume.secret.expect("the key comes from a Secret");
        let item = Path::new(key_file).strip_prefix(&mount.mount_path).unwrap();
        assert!(
            secret
                .items
                .iter()
                .flatten()
                .any(|i| Path::new(&i.path) == item),
            "{key_file}: no Secret item {}",
            item.display()
        );
        assert_eq!(mount.read_only, Some(true));
        let marker = settings.bgp.restart_marker.to_str().unwrap();
        assert!(!host_path(marker).1, "{marker} must be writable");
        let port = i32::from(settings.membership.port);
        assert!(
            ports
                .iter()
                .any(|p| p.container_port == port && p.protocol.as_deref() == Some("UDP")),
            "membership port {port}/UDP not declared: {ports:?}"
        );
    }
    for (port, protocol) in [(179, "TCP"), (3784, "UDP")] {
        assert!(
            ports
                .iter()
                .any(|p| p.container_port == port && p.protocol.as_deref() == Some(protocol)),
            "{port}/{protocol} not declared"
        );
    }

    // /proc/sys is read-only in the container: the node's /proc/sys/net is mounted
    // read-write elsewhere and named to the agent.
    let env = agent.env.clone().unwrap_or_default();
    let variable = ipvs_proxy::dataplane::sysctls::PROC_SYS_NET_ENV;
    let dir = env
        .iter()
        .find(|e| e.name == variable)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{variable} is not set"));
    assert_eq!(host_path(&dir), ("/proc/sys/net".to_string(), false));
}

#[test]
fn the_memory_limit_leaves_room_for_the_first_sync_peak() {
    // README's figure: 176 MiB at the peak of the first full sync with 10,000 Services
    // x 10 endpoints, 80-82 MiB once synced.
    const PEAK_MIB: i64 = 176;
    const SYNCED_MIB: i64 = 82;
    let mib = |quantity: &str| -> i64 {
        let number = quantity.strip_suffix("Mi").expect("memory in Mi");
        number.parse().unwrap()
    };
    let resources = agent_container(&base_daemonset()).resources.unwrap();
    let limit = mib(&resources.limits.unwrap()["memory"].0);
    let request = mib(&resources.requests.unwrap()["memory"].0);
    assert!(limit > PEAK_MIB, "limit {limit} Mi under the peak");
    assert!(
        request >= SYNCED_MIB,
        "request {request} Mi under the synced size"
    );
}

#[test]
fn the_image_is_named_in_one_place() {
    let kustomization = base_kustomization();
    let images = kustomization["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    let placeholder = images[0]["name"].as_str().unwrap();
    let real = images[0]["newName"].as_str().unwrap();
    let daemonset = base_daemonset();
    let spec = pod_spec(&daemonset);
    for container in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        assert_eq!(
            container.image.as_deref(),
            Some(placeholder),
            "{} names its image itself",
            container.name
        );
    }
    let naming: Vec<PathBuf> = yaml_files(&manifests_dir())
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(real))
        .collect();
    assert_eq!(
        naming,
        vec![manifests_dir().join("base/kustomization.yaml")],
        "{real}"
    );
}

#[test]
fn the_migration_overlay_runs_the_proxy_only_on_migrated_nodes() {
    let overlay = manifests_dir().join("overlays/migration");
    let text = std::fs::read_to_string(overlay.join("config.yaml")).unwrap();
    let loaded = ipvs_proxy::config::parse(&text).unwrap();
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    // MetalLB keeps allocating and announcing until phase 2.
    assert!(!loaded.config.extensions.load_balancer.enabled);
    let patch = &documents(&overlay.join("migrated-nodes.yaml"))[0];
    assert_eq!(
        patch["spec"]["template"]["spec"]["nodeSelector"]["ipvs-proxy.io/migrated"],
        "true"
    );
    // It replaces the base's generated configuration, keeping the key --config reads.
    let kustomization = &documents(&overlay.join("kustomization.yaml"))[0];
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["behavior"], "replace");
    assert_eq!(
        generator["files"],
        base_kustomization()["configMapGenerator"][0]["files"]
    );
}

#[test]
fn overlays_patch_the_base_objects_they_name() {
    for name in ["kubeadm", "migration"] {
        overlay_patches_base_objects(&manifests_dir().join("overlays").join(name));
    }
}

fn overlay_patches_base_objects(overlay: &Path) {
    let kustomization = &documents(&overlay.join("kustomization.yaml"))[0];
    let base = manifests_dir().join("base");
    let daemonset = base_daemonset();
    let base_kustomization = base_kustomization();
    for patch in kustomization["patches"].as_array().unwrap() {
        for object in documents(&overlay.join(patch["path"].as_str().unwrap())) {
            let name = object["metadata"]["name"].as_str().unwrap();
            match object["kind"].as_str().unwrap() {
                "DaemonSet" => {
                    assert_eq!(Some(name), daemonset.metadata.name.as_deref());
                    // Every volume the patch sets exists in the base (strategic merge
                    // by name would otherwise add one).
                    for volume in object["spec"]["template"]["spec"]["volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let base_volumes = pod_spec(&daemonset).volumes.unwrap();
                        assert!(
                            base_volumes.iter().any(|v| v.name == volume["name"]),
                            "{volume}"
                        );
                    }
                }
                "ConfigMap" => assert!(
                    base_kustomization["configMapGenerator"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|g| g["name"] == name),
                    "{name} is not generated by {}",
                    base.display()
                ),
                other => panic!("the overlay patches a {other}"),
            }
        }
    }
}
