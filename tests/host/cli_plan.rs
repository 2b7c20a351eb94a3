//! `ipvs-proxy plan`: the real binary on exported directories (tests/fixtures/plan/,
//! described in its README), as an unprivileged user when the tests run as root, on a
//! host without IPVS: it must need neither the kernel nor an API server.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plan")
        .join(name)
}

/// Runs `ipvs-proxy plan` with `args`, as user `nobody` when the tests run as root,
/// with no kubeconfig or API server to find.
fn plan(args: &[&str]) -> Output {
    let binary = env!("CARGO_BIN_EXE_ipvs-proxy");
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let mut command = if root {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
        command
    } else {
        Command::new(binary)
    };
    command
        .arg("plan")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent");
    let output = command.output().expect("run ipvs-proxy plan");
    // Nothing goes wrong quietly: no log line, no kernel or API error.
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "stderr of plan {args:?}"
    );
    output
}

fn text(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("plan --json prints JSON")
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn layer2_owners_are_the_smallest_sha256_of_node_and_ip() {
    let dir = fixture("layer2");
    let output = plan(&["--manifests", path(&dir)]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output),
        concat!(
            "Plan for every node (loadBalancerClass none, metallbNamespace metallb-system)\n",
            "Problems: none\n",
            "Pools:\n",
            "  Pool  InUse  AutoAssign  AvoidBuggyIPs  Ranges\n",
            "  lan   3      yes         no             192.168.1.240-192.168.1.250\n",
            "LoadBalancer Services:\n",
            "  Service   Addresses      Pool  Allocation  Reason\n",
            "  shop/api  192.168.1.241  lan   assigned\n",
            "  shop/db   192.168.1.245  lan   kept\n",
            "  shop/web  192.168.1.240  lan   assigned\n",
            "Layer 2 (owner answers ARP/NDP):\n",
            "  Address        Service   Owner   Interfaces  Eligible (election order)\n",
            "  192.168.1.240  shop/web  node-a  eth1        node-a,node-c,node-b\n",
            "  192.168.1.241  shop/api  node-b  eth1        node-b\n",
            "  192.168.1.245  shop/db   node-c  eth1        node-c,node-a,node-b\n",
            "Result: valid\n",
        )
    );

    let report = json_of(&plan(&["--manifests", path(&dir), "--json"]));
    assert_eq!(report["valid"], true);
    assert_eq!(report["node"], Value::Null);
    // Hand-checked: sha256("node-a#192.168.1.240") = 0905ce28… < node-c's a6530f9d…
    // < node-b's c5db6995…; for .245 node-c's 1f06f2fa… is the smallest.
    let owners: Vec<(Value, Value)> = report["layer2"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l2| (l2["ip"].clone(), l2["owner"].clone()))
        .collect();
    assert_eq!(
        owners,
        [
            (json!("192.168.1.240"), json!("node-a")),
            (json!("192.168.1.241"), json!("node-b")),
            (json!("192.168.1.245"), json!("node-c")),
        ]
    );
    assert_eq!(
        report["layer2"][0]["candidates"],
        json!([
            {"node": "node-a", "score": 0},
            {"node": "node-c", "score": 0},
            {"node": "node-b", "score": 0},
        ])
    );
    assert_eq!(report["layer2"][0]["interfaces"], json!(["eth1"]));
    assert_eq!(report["layer2"][0]["advertisements"], json!(["lan"]));
    assert_eq!(
        report["services"][1],
        json!({
            "namespace": "shop", "name": "db", "addresses": ["192.168.1.245"],
            "pool": "lan", "outcome": "kept", "reason": null,
        })
    );
    assert_eq!(report["bgp"], json!([]));
    assert_eq!(report["problems"], json!([]));
}

#[test]
fn with_a_node_only_its_announcements_show_but_every_allocation() {
    let dir = fixture("layer2");
    let report = json_of(&plan(&[
        "--manifests",
        path(&dir),
        "--node",
        "node-b",
        "--json",
    ]));
    assert_eq!(report["node"], "node-b");
    let layer2 = report["layer2"].as_array().unwrap();
    assert_eq!(layer2.len(), 1, "{layer2:?}");
    assert_eq!(layer2[0]["ip"], "192.168.1.241");
    assert_eq!(report["services"].as_array().unwrap().len(), 3);

    let output = plan(&["--manifests", path(&dir), "--node", "node-b"]);
    let text = text(&output);
    assert!(text.starts_with("Plan for node node-b "), "{text}");
    assert!(!text.contains("node-a,node-c,node-b"), "{text}");

    // A node the manifests do not know announces nothing, and says so.
    let report = json_of(&plan(&[
        "--manifests",
        path(&dir),
        "--node",
        "node-x",
        "--json",
    ]));
    assert_eq!(report["layer2"], json!([]));
    assert_eq!(report["valid"], true);
    assert_eq!(
        report["warnings"],
        json!(["node \"node-x\" is not among the Nodes of the manifests: it announces nothing"])
    );
}

#[test]
fn bgp_routes_per_node_and_peer_with_aggregation_communities_and_local_pref() {
    let dir = fixture("bgp");
    let output = plan(&["--manifests", path(&dir)]);
    assert_eq!(output.status.code(), Some(0));
    let text = text(&output);
    let section = text
        .split_once("BGP:\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no BGP section in\n{text}"));
    assert_eq!(
        section,
        concat!(
            "  Node      Peer          PeerAddress  PeerASN  Prefix          Communities            LocalPref  Services\n",
            "  edge-1    tor-r1        10.0.1.1     64512    203.0.113.0/28  large:64512:1:1        100        shop/api,shop/web\n",
            "  edge-1    transit       10.0.0.254   65000    203.0.113.1/32  64512:300,65535:65281  -          shop/api\n",
            "  edge-1    transit       10.0.0.254   65000    203.0.113.5/32  64512:300,65535:65281  -          shop/web\n",
            "  edge-2    tor-r2        10.0.2.1     64512    203.0.113.0/28  large:64512:1:1        100        shop/api,shop/web\n",
            "  edge-2    transit       10.0.0.254   65000    203.0.113.1/32  64512:300,65535:65281  -          shop/api\n",
            "  edge-2    transit       10.0.0.254   65000    203.0.113.5/32  64512:300,65535:65281  -          shop/web\n",
            "  worker-1  (no session)  -            -        203.0.113.0/28  large:64512:1:1        100        shop/api,shop/web\n",
            "Not announced:\n",
            "  shop/idle 203.0.113.2: BGP: no eligible node of 3: 3 without a ready or serving endpoint\n",
            "Result: valid\n",
        )
    );
    // avoidBuggyIPs: the first address handed out is .1, not .0.
    assert!(
        text.contains("  shop/api   203.0.113.1  public  assigned\n"),
        "{text}"
    );

    let report = json_of(&plan(&[
        "--manifests",
        path(&dir),
        "--node",
        "edge-2",
        "--json",
    ]));
    let routes = report["bgp"].as_array().unwrap();
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert_eq!(
        routes[0],
        json!({
            "node": "edge-2", "peer": "tor-r2", "peerAddress": "10.0.2.1", "peerAsn": "64512",
            "prefix": "203.0.113.0/28", "communities": ["large:64512:1:1"], "localPref": 100,
            "advertisements": ["aggregate"], "services": ["shop/api", "shop/web"],
        })
    );
    // LOCAL_PREF is never sent to the eBGP peer.
    assert_eq!(routes[1]["peer"], "transit");
    assert_eq!(routes[1]["localPref"], Value::Null);
    assert!(routes.iter().all(|route| route["node"] == "edge-2"));
    assert_eq!(report["layer2"], json!([]));
}

#[test]
fn the_legacy_configmap_is_planned_like_the_custom_resources() {
    let dir = fixture("legacy");
    let output = plan(&["--manifests", path(&dir), "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let report = json_of(&output);
    assert_eq!(
        report["pools"],
        json!([
            {"name": "lan", "ranges": ["192.168.20.10-192.168.20.20"], "autoAssign": false,
             "avoidBuggyIps": false, "inUse": 1},
            {"name": "routed", "ranges": ["10.50.0.0/24"], "autoAssign": true,
             "avoidBuggyIps": false, "inUse": 1},
        ])
    );
    // The old annotation prefix picks the layer-2 pool; sha256("n1#192.168.20.10") =
    // 5fbee35f… < n2's 7feeb7f6…, and a legacy pool announces on every interface.
    let l2 = &report["layer2"][0];
    assert_eq!(
        (&l2["ip"], &l2["service"], &l2["owner"], &l2["interfaces"]),
        (
            &json!("192.168.20.10"),
            &json!("office/printer"),
            &json!("n1"),
            &Value::Null
        )
    );
    let routes = report["bgp"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    for (route, node) in routes.iter().zip(["n1", "n2"]) {
        assert_eq!(route["node"], node);
        assert_eq!(route["prefix"], "10.50.0.0/32");
        assert_eq!(route["communities"], json!(["64512:7", "65535:65281"]));
        assert_eq!(route["localPref"], 50);
        assert_eq!(route["peerAddress"], "10.0.0.1");
    }
}

#[test]
fn invalid_objects_are_named_by_object_and_field_and_fail_the_run() {
    let dir = fixture("invalid");
    let output = plan(&["--manifests", path(&dir), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["valid"], false);
    let problems: Vec<(&str, &str, &str)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
                p["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            ("IPAddressPool", "green", "spec.addresses[0]"),
            ("BGPAdvertisement", "premium", "spec.communities[0]"),
            (
                "Service",
                "broken",
                "metadata.annotations[metallb.io/loadBalancerIPs]"
            ),
        ]
    );
    let message = |index: usize| report["problems"][index]["message"].as_str().unwrap();
    assert!(message(0).contains("overlaps"), "{}", message(0));
    assert!(message(1).contains("\"gold\""), "{}", message(1));
    assert!(message(2).contains("\"10.20.0.300\""), "{}", message(2));

    let outcomes: Vec<(&str, &str)> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("broken", "frozen"),
            ("lost", "refused"),
            ("web", "assigned")
        ]
    );
    // The unreadable Service keeps its address: web does not get 10.20.0.9.
    assert_eq!(report["services"][0]["addresses"], json!(["10.20.0.9"]));
    assert_eq!(
        report["services"][1]["reason"],
        "metallb.io/address-pool: no IPAddressPool named \"red\""
    );
    assert_eq!(
        report["warnings"],
        json!([
            "IPAddressPool default/stray: ignored: MetalLB's objects are read in namespace metallb-system (metallbNamespace)",
            "Service shop/cloud: loadBalancerClass \"example.com/cloud-lb\" is not ours (ours: none); left alone",
        ])
    );

    let output = plan(&["--manifests", path(&dir)]);
    assert_eq!(output.status.code(), Some(1));
    let text = text(&output);
    assert!(
        text.contains("Problems (these objects are left out):\n  Kind              Object                  Field  "),
        "{text}"
    );
    assert!(
        text.ends_with("Result: INVALID: 3 problem(s); the objects named are left out\n"),
        "{text}"
    );
}

/// A world-readable temporary directory (the plan may run as `nobody`).
fn readable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn the_agents_configuration_names_the_class_and_metallbs_namespace() {
    let dir = readable_tempdir();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n---\n\
         apiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
         loadBalancer:\n  loadBalancerClass: example.com/cloud-lb\n  metallbNamespace: default\n",
    )
    .unwrap();
    let output = plan(&[
        "--manifests",
        path(&fixture("invalid")),
        "--config",
        path(&config),
        "--json",
    ]);
    let report = json_of(&output);
    assert_eq!(report["loadBalancerClass"], "example.com/cloud-lb");
    assert_eq!(report["metallbNamespace"], "default");
    // Only the stray pool is read now, and only the cloud Service is ours.
    assert_eq!(report["pools"][0]["name"], "stray");
    assert_eq!(report["pools"].as_array().unwrap().len(), 1);
    assert_eq!(
        report["services"],
        json!([{
            "namespace": "shop", "name": "cloud", "addresses": ["10.99.0.0"], "pool": "stray",
            "outcome": "assigned", "reason": null,
        }])
    );
    // The other namespace's objects are ignored, so nothing is invalid.
    assert_eq!(report["problems"], json!([]));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn a_document_that_does_not_parse_is_reported_with_every_other_one() {
    let dir = readable_tempdir();
    std::fs::copy(
        fixture("layer2/metallb.yaml"),
        dir.path().join("a-metallb.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b-broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\nkind: [unclosed\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c-pool.json"),
        r#"{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": 7}}"#,
    )
    .unwrap();
    for name in ["a-metallb.yaml", "b-broken.yaml", "c-pool.json"] {
        std::fs::set_permissions(
            dir.path().join(name),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let output = plan(&["--manifests", path(dir.path()), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    let unreadable = report["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(
        unreadable[0]
            .as_str()
            .unwrap()
            .contains("b-broken.yaml: document 2:"),
        "{unreadable:?}"
    );
    assert!(
        unreadable[1]
            .as_str()
            .unwrap()
            .contains("c-pool.json: document 1: IPAddressPool p:"),
        "{unreadable:?}"
    );
    assert_eq!(report["services"], json!([]));

    let output = plan(&["--manifests", path(dir.path())]);
    assert_eq!(output.status.code(), Some(1));
    let text = text(&output);
    assert!(text.contains("Unreadable documents:\n"), "{text}");
    assert!(
        text.ends_with(
            "Result: INVALID: 2 unreadable document(s); the agent would not load this directory\n"
        ),
        "{text}"
    );
}
