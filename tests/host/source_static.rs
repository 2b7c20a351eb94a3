//! The static source: a directory of manifests, multi-document YAML, List kinds,
//! reloaded when files change.

use std::path::Path;
use std::time::Duration;

use ipvs_proxy::source::SourceEvent;
use ipvs_proxy::source::static_dir::{load_dir, parse_manifests, spawn_static_every};
use tokio::sync::mpsc;

/// A fixture file's text: the static source parses it itself.
fn fixture(name: &str) -> String {
    let path = testkit::k8s::fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

const MULTI_DOC: &str = r#"
# kubectl get svc,endpointslices -o yaml, trimmed
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: demo
spec:
  clusterIP: 10.96.33.3
  clusterIPs: [10.96.33.3]
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-service
data: {}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
metadata:
  resourceVersion: "812"
items:
- addressType: IPv4
  metadata:
    name: echo-abcde
    namespace: demo
    labels:
      kubernetes.io/service-name: echo
  endpoints:
  - addresses: [10.244.1.7]
    conditions: {ready: true}
    nodeName: node-a
  ports:
  - name: http
    port: 8080
    protocol: TCP
---
"#;

#[test]
fn multi_document_yaml_with_typed_list() {
    let parsed = parse_manifests("demo.yaml", MULTI_DOC).unwrap();
    assert_eq!(parsed.services.len(), 1);
    assert_eq!(parsed.services[0].metadata.name.as_deref(), Some("echo"));
    assert_eq!(parsed.slices.len(), 1);
    assert_eq!(
        parsed.slices[0].endpoints.as_ref().unwrap()[0].addresses,
        vec!["10.244.1.7"]
    );
    assert_eq!(
        parsed.warnings,
        vec![
            "demo.yaml: document 2: ConfigMap \"not-a-service\" ignored: not a MetalLB configuration object"
        ]
    );
}

#[test]
fn generic_list_json() {
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","metadata":{{"resourceVersion":""}},"items":[{},{}]}}"#,
        fixture("svc-web.json"),
        fixture("eps-web.json")
    );
    let parsed = parse_manifests("web.json", &list).unwrap();
    assert_eq!(parsed.services.len(), 1);
    assert_eq!(parsed.slices.len(), 1);
}

#[test]
fn bad_documents_name_file_document_and_object() {
    let bad_field = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: y}\nspec:\n  ports: 80\n";
    let error = parse_manifests("bad.yaml", bad_field)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("bad.yaml: document 2: Service \"y\": "),
        "{error}"
    );
    let error = parse_manifests("bad.yaml", "a: [1,\n")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("bad.yaml: document 1: "), "{error}");
    let error = parse_manifests("bad.yaml", "metadata: {name: z}\n")
        .unwrap_err()
        .to_string();
    assert_eq!(error, "bad.yaml: document 1: the object has no kind");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn load_dir_reads_manifest_files_only() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.json", &fixture("svc-web.json"));
    write(dir.path(), "web-eps.json", &fixture("eps-web.json"));
    write(dir.path(), "demo.yml", MULTI_DOC);
    write(dir.path(), "README.md", "not yaml: [");
    // A ConfigMap volume's hidden data directory is skipped.
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    write(
        &dir.path().join("..data"),
        "web.json",
        &fixture("svc-web.json"),
    );
    let loaded = load_dir(dir.path()).unwrap();
    assert_eq!(loaded.services.len(), 2);
    assert_eq!(loaded.slices.len(), 2);
    let error = load_dir(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("cannot read "), "{error}");
}

async fn next(events: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no event within 10 s")
        .expect("source ended")
}

fn counts(event: &SourceEvent) -> (usize, usize) {
    match event {
        SourceEvent::Snapshot { services, slices } => (services.len(), slices.len()),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// The events of one reload, described as `kind namespace/name`.
async fn reload_events(events: &mut mpsc::Receiver<SourceEvent>) -> Vec<String> {
    let mut seen = vec![describe(&next(events).await)];
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(300), events.recv()).await
    {
        seen.push(describe(&event));
    }
    seen.sort();
    seen
}

fn describe(event: &SourceEvent) -> String {
    let id = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    };
    match event {
        SourceEvent::Snapshot { .. } => "snapshot".to_string(),
        SourceEvent::Early { .. } => "early".to_string(),
        SourceEvent::ServicesRelisted(_) => "services-relisted".to_string(),
        SourceEvent::SlicesRelisted(_) => "slices-relisted".to_string(),
        SourceEvent::ServiceApplied(service) => format!("service {}", id(&service.metadata)),
        SourceEvent::ServiceDeleted(key) => format!("service-deleted {key}"),
        SourceEvent::SliceApplied(slice) => format!("slice {}", id(&slice.metadata)),
        SourceEvent::SliceDeleted { namespace, name } => {
            format!("slice-deleted {namespace}/{name}")
        }
    }
}

#[tokio::test]
async fn reloads_on_change_and_keeps_the_last_good_view() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.json", &fixture("svc-web.json"));
    let (tx, mut events) = mpsc::channel(16);
    let task = spawn_static_every(dir.path().to_path_buf(), Duration::from_millis(50), tx);

    assert_eq!(counts(&next(&mut events).await), (1, 0));

    // After the first snapshot, one event per object that changed.
    write(dir.path(), "web-eps.json", &fixture("eps-web.json"));
    let slice_event = reload_events(&mut events).await;
    assert_eq!(slice_event.len(), 1, "{slice_event:?}");
    assert!(
        slice_event[0].starts_with("slice default/"),
        "{slice_event:?}"
    );

    // Unchanged files produce no event.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );

    // A broken file: nothing is sent, the previous view stays.
    write(
        dir.path(),
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nspec: [\n",
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(400), events.recv())
            .await
            .is_err()
    );
    // Fixed: only its objects are new.
    write(dir.path(), "broken.yaml", MULTI_DOC);
    let added = reload_events(&mut events).await;
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(
        added
            .iter()
            .any(|e| e.starts_with("service ") && e.ends_with("/echo")),
        "{added:?}"
    );
    assert!(added.iter().any(|e| e.starts_with("slice ")), "{added:?}");

    // A changed Service in a file of its own: that Service only.
    let changed = fixture("svc-web.json").replace("\"ClusterIP\"", "\"NodePort\"");
    assert_ne!(changed, fixture("svc-web.json"));
    write(dir.path(), "web.json", &changed);
    assert_eq!(
        reload_events(&mut events).await,
        vec!["service default/web"]
    );

    std::fs::remove_file(dir.path().join("web.json")).unwrap();
    assert_eq!(
        reload_events(&mut events).await,
        vec!["service-deleted default/web"]
    );
    task.abort();
}

#[tokio::test]
async fn an_object_in_two_files_follows_the_later_file_until_both_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let web = fixture("svc-web.json");
    let web_nodeport = web.replace("\"ClusterIP\"", "\"NodePort\"");
    assert_ne!(web, web_nodeport);
    write(dir.path(), "a-web.json", &web);
    let (tx, mut events) = mpsc::channel(16);
    let task = spawn_static_every(dir.path().to_path_buf(), Duration::from_millis(50), tx);
    assert_eq!(counts(&next(&mut events).await), (1, 0));

    // A later file (by name) defines the same Service differently: it wins.
    write(dir.path(), "b-web.json", &web_nodeport);
    let changed = next(&mut events).await;
    match &changed {
        SourceEvent::ServiceApplied(service) => assert_eq!(
            service.spec.as_ref().and_then(|spec| spec.type_.as_deref()),
            Some("NodePort")
        ),
        other => panic!("expected the later definition, got {other:?}"),
    }

    // The later file goes: the earlier definition applies again, nothing is deleted.
    std::fs::remove_file(dir.path().join("b-web.json")).unwrap();
    match next(&mut events).await {
        SourceEvent::ServiceApplied(service) => assert_eq!(
            service.spec.as_ref().and_then(|spec| spec.type_.as_deref()),
            Some("ClusterIP")
        ),
        other => panic!("expected the earlier definition, got {other:?}"),
    }

    // The earlier file goes too: now the Service is deleted.
    std::fs::remove_file(dir.path().join("a-web.json")).unwrap();
    assert_eq!(
        reload_events(&mut events).await,
        vec!["service-deleted default/web"]
    );
    task.abort();
}

#[tokio::test]
async fn metallb_objects_nodes_and_namespaces_are_published_whole_when_they_change() {
    use ipvs_proxy::source::static_dir::spawn_static_with_cluster;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-cluster.yaml",
        &fixture("../metallb/l2-cluster.yaml"),
    );
    write(dir.path(), "20-services.yaml", MULTI_DOC);
    let (events_tx, mut events) = mpsc::channel(16);
    let (_task, mut cluster) =
        spawn_static_with_cluster(dir.path().into(), Duration::from_millis(50), events_tx);
    assert!(matches!(
        next(&mut events).await,
        SourceEvent::Snapshot { .. }
    ));
    let objects = cluster
        .borrow_and_update()
        .clone()
        .expect("published with the snapshot");
    assert_eq!(objects.metallb.pools.len(), 1);
    assert_eq!(objects.metallb.pools[0].spec.addresses.len(), 2);
    assert_eq!(
        objects.metallb.l2_advertisements[0].spec.interfaces,
        ["eth1"]
    );
    let names: Vec<_> = objects
        .nodes
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["node-a", "node-b"]);
    // Slimmed: the image list and heartbeat times are not kept.
    let status = objects.nodes[0].status.as_ref().unwrap();
    assert!(status.images.is_none());
    assert!(
        status.conditions.as_ref().unwrap()[0]
            .last_heartbeat_time
            .is_none()
    );
    assert_eq!(objects.namespaces[0].metadata.name.as_deref(), Some("shop"));

    // A Service change alone publishes nothing new for the cluster objects.
    write(
        dir.path(),
        "20-services.yaml",
        &MULTI_DOC.replace("10.96.33.3", "10.96.33.4"),
    );
    let _ = next(&mut events).await;
    assert!(!cluster.has_changed().unwrap());

    // The legacy ConfigMap in a file of its own is published with the rest.
    write(
        dir.path(),
        "30-legacy.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\n\
         data:\n  config: |\n    address-pools:\n    - {name: old, protocol: layer2, addresses: [10.9.0.0/28]}\n",
    );
    tokio::time::timeout(Duration::from_secs(5), cluster.changed())
        .await
        .expect("the new file is published")
        .unwrap();
    let objects = cluster.borrow_and_update().clone().unwrap();
    assert!(objects.metallb.legacy.is_some());
    assert_eq!(objects.metallb.pools.len(), 1);

    // Removing the file takes its objects away again.
    std::fs::remove_file(dir.path().join("10-cluster.yaml")).unwrap();
    tokio::time::timeout(Duration::from_secs(5), cluster.changed())
        .await
        .expect("the removal is published")
        .unwrap();
    let objects = cluster.borrow_and_update().clone().unwrap();
    assert!(objects.metallb.pools.is_empty() && objects.nodes.is_empty());
    assert!(objects.metallb.legacy.is_some());
}
