//! The stateful in-process API server (`testkit::store_server`) against real kube-rs
//! clients: a watcher follows creates, patches and deletes; the status subresource
//! changes only status; a stale replace conflicts; the access policy forbids what it
//! does not allow; losing and regaining the server; watches resuming, bookmarks and
//! `410 Gone`; MetalLB objects; and two kube-lease-manager instances racing for one
//! Lease.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use serde_json::{Value, json};
use testkit::k8s::fixture;
use testkit::store_server::{AccessPolicy, Reachability, Rule, StoreServer};

const WEB: &str = "/api/v1/namespaces/default/services/web";

fn metallb_fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metallb")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path:?}: {e}"))
}

async fn serving(objects: Vec<Value>) -> StoreServer {
    let server = StoreServer::with_objects(objects);
    server.serve().await;
    server
}

/// The next watcher event that is not a bookmark-like init marker we do not care about.
async fn next<K>(
    stream: &mut (impl futures_util::Stream<Item = watcher::Result<Event<K>>> + Unpin),
) -> Event<K> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watcher event within 10 s")
        .expect("the watcher goes on")
        .expect("no watcher error")
}

fn name_of(event: &Event<Service>) -> (&'static str, String) {
    use kube::ResourceExt;
    match event {
        Event::Init => ("init", String::new()),
        Event::InitApply(s) => ("init-apply", s.name_any()),
        Event::InitDone => ("init-done", String::new()),
        Event::Apply(s) => ("apply", s.name_any()),
        Event::Delete(s) => ("delete", s.name_any()),
    }
}

#[tokio::test]
async fn watcher_follows_create_patch_and_delete() {
    let mut headless = fixture::<Value>("svc-headless.json");
    headless["metadata"]["labels"] = json!({"service.kubernetes.io/headless": ""});
    let server = serving(vec![fixture("svc-web.json"), headless]).await;
    let services: Api<Service> = Api::all(server.client());
    // kube-proxy's selector: headless Services are not its business.
    let config = watcher::Config::default().labels("!service.kubernetes.io/headless");
    let mut stream = watcher::watcher(services, config).boxed();
    assert_eq!(name_of(&next(&mut stream).await), ("init", String::new()));
    assert_eq!(
        name_of(&next(&mut stream).await),
        ("init-apply", "web".into())
    );
    assert_eq!(
        name_of(&next(&mut stream).await),
        ("init-done", String::new())
    );

    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let mut cache: Value = fixture("svc-cache-affinity-itp-local.json");
    cache["metadata"]["namespace"] = json!("default");
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cache).unwrap(),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let Event::Apply(seen) = next(&mut stream).await else {
        panic!("no Apply for the created Service")
    };
    assert_eq!(seen.metadata.resource_version, meta.resource_version);
    let created_name = created.metadata.name.clone().unwrap();

    // A second create of the same name: 409 AlreadyExists.
    let again = api
        .create(&PostParams::default(), &created)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{again:?}"
    );

    let patched = api
        .patch(
            &created_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sessionAffinity": "None"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let Event::Apply(seen) = next(&mut stream).await else {
        panic!("no Apply for the patch")
    };
    assert_eq!(seen.spec.unwrap().session_affinity.as_deref(), Some("None"));

    // A JSON patch (RFC 6902), with a failing `test` refused.
    let operations = json!([{"op": "add", "path": "/metadata/labels", "value": {"tier": "cache"}}]);
    api.patch(
        &created_name,
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(operations).unwrap()),
    )
    .await
    .unwrap();
    let Event::Apply(seen) = next(&mut stream).await else {
        panic!("no Apply for the JSON patch")
    };
    assert_eq!(seen.metadata.labels.unwrap()["tier"], "cache");
    let failing = json!([{"op": "test", "path": "/spec/type", "value": "NodePort"}, {"op": "remove", "path": "/spec"}]);
    let refused = api
        .patch(
            &created_name,
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(failing).unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 422),
        "{refused:?}"
    );

    // A change made by the test (a controller elsewhere) reaches the watcher too, and
    // a Service that gains the headless label leaves it.
    let mut web = server.get(WEB).unwrap();
    web["metadata"]["labels"] = json!({"service.kubernetes.io/headless": ""});
    server.apply(web);
    assert_eq!(name_of(&next(&mut stream).await), ("delete", "web".into()));

    api.delete(&created_name, &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        name_of(&next(&mut stream).await),
        ("delete", created_name.clone())
    );
    assert!(
        server
            .get(&format!(
                "/api/v1/namespaces/default/services/{created_name}"
            ))
            .is_none()
    );
    let missing = api.get(&created_name).await.unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn status_subresource_changes_status_only() {
    let server = serving(vec![fixture("svc-ingress-lb-local.json")]).await;
    let stored = server.list("/api/v1/services").remove(0);
    let name = stored["metadata"]["name"].as_str().unwrap().to_string();
    let namespace = stored["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/namespaces/{namespace}/services/{name}");
    let api: Api<Service> = Api::namespaced(server.client(), &namespace);

    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7", "ipMode": "VIP"}]}},
                        "spec": {"type": "ClusterIP"}});
    let after = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let ingress = after
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.7"));
    let now = server.get(&path).unwrap();
    assert_eq!(
        now["spec"], stored["spec"],
        "a status patch changed the spec"
    );
    assert_eq!(
        now["metadata"]["generation"],
        stored["metadata"]["generation"]
    );
    assert_ne!(
        now["metadata"]["resourceVersion"],
        stored["metadata"]["resourceVersion"]
    );

    // The main resource's patch keeps the stored status.
    let main = json!({"status": {"loadBalancer": {}}, "metadata": {"annotations": {"a": "b"}}});
    let after = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(main))
        .await
        .unwrap();
    assert_eq!(
        after
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(after.metadata.annotations.unwrap()["a"], "b");

    // replace_status with the current version; the spec in the body is ignored.
    let mut current = api.get_status(&name).await.unwrap();
    current.status.as_mut().unwrap().load_balancer = Some(Default::default());
    current.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let replaced = api
        .replace_status(&name, &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.unwrap().load_balancer.unwrap().ingress,
        None
    );
    assert_eq!(
        replaced.spec.unwrap().session_affinity,
        stored["spec"]["sessionAffinity"].as_str().map(String::from)
    );

    // A patch that changes nothing writes nothing (no new resourceVersion).
    let before = server.resource_version();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    assert_eq!(server.resource_version(), before);

    // A client's create drops the status; a Node has no namespace.
    let mut copy = stored.clone();
    copy["metadata"] = json!({"name": "copy", "namespace": namespace});
    copy["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}});
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(copy).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        created
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress),
        None
    );
}

#[tokio::test]
async fn stale_replace_conflicts() {
    let server = serving(vec![fixture("svc-web.json")]).await;
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let read = api.get("web").await.unwrap();
    let mut first = read.clone();
    first.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let replaced = api
        .replace("web", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        read.metadata.resource_version
    );

    let mut stale = read.clone();
    stale.metadata.labels = Some([("late".to_string(), "yes".to_string())].into());
    let error = api
        .replace("web", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{error:?}"
    );
    // A merge patch carrying the stale version conflicts the same way.
    let stale_patch = json!({"metadata": {"resourceVersion": read.metadata.resource_version, "labels": {"late": "yes"}}});
    let error = api
        .patch("web", &PatchParams::default(), &Patch::Merge(stale_patch))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 409),
        "{error:?}"
    );
    assert!(server.get(WEB).unwrap()["metadata"].get("labels").is_none());
}

#[tokio::test]
async fn access_policy_forbids_what_no_rule_allows() {
    let server = serving(vec![fixture("svc-web.json")]).await;
    server.set_policy(AccessPolicy::Rules(vec![
        Rule::allow(&["get", "list", "watch"], "", &["services"]),
        Rule::allow(&["update", "patch"], "", &["services/status"]).in_namespace("default"),
        Rule::allow(
            &["get", "update", "patch"],
            "coordination.k8s.io",
            &["leases"],
        )
        .in_namespace("kube-system")
        .named(&["ipvs-proxy-ipam"]),
    ]));
    let client = server.client_as("system:serviceaccount:kube-system:ipvs-proxy");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        services
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
    services
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();

    let error = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "NodePort"}})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = &error else {
        panic!("{error:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "services \"web\" is forbidden: User \"system:serviceaccount:kube-system:ipvs-proxy\" \
         cannot patch resource \"services\" in API group \"\" in the namespace \"default\""
    );
    let error = services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 403),
        "{error:?}"
    );

    // The Lease rule holds for its name only, and creating names no object.
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "ipvs-proxy-ipam"}})).unwrap();
    let error = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("cannot create resource \"leases\" in API group \"coordination.k8s.io\""),
        "{}",
        status.message
    );
    let error = leases.get("other").await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 403),
        "{error:?}"
    );
    let error = leases.get("ipvs-proxy-ipam").await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 404),
        "allowed, and missing: {error:?}"
    );

    let forbidden: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert_eq!(forbidden.len(), 4, "{forbidden:#?}");
    assert!(
        forbidden
            .iter()
            .all(|r| r.user == "system:serviceaccount:kube-system:ipvs-proxy")
    );
    let writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && r.status < 300)
        .collect();
    assert_eq!(writes.len(), 1, "only the status patch wrote: {writes:#?}");
    assert_eq!(
        writes[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
}

#[tokio::test]
async fn losing_and_regaining_the_server() {
    let server = serving(vec![fixture("svc-web.json")]).await;
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    for _ in 0..3 {
        next(&mut stream).await; // Init, InitApply(web), InitDone
    }

    server.set_reachability(Reachability::Refuse);
    let error = api.get("web").await.unwrap_err();
    assert!(
        !matches!(error, kube::Error::Api(_)),
        "a connection error, not an answer: {error:?}"
    );
    // The open watch is cut: the watcher reports it.
    let cut = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the cut is seen");
    assert!(matches!(cut, Some(Err(_))), "{cut:?}");

    // Hang: no answer at all.
    server.set_reachability(Reachability::Hang);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), api.get("web"))
            .await
            .is_err()
    );

    server.set_reachability(Reachability::Up);
    let mut web = server.get(WEB).unwrap();
    web["spec"]["sessionAffinity"] = json!("ClientIP");
    server.apply(web);
    // The watcher comes back (after its backoff) and catches up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the watcher recovers");
        if let Some(Ok(Event::Apply(s) | Event::InitApply(s))) = event
            && s.spec.unwrap().session_affinity.as_deref() == Some("ClientIP")
        {
            break;
        }
    }
    assert!(api.get("web").await.is_ok());

    // One client cut off while another keeps the server.
    server.set_reachability_for("node-a", Reachability::Refuse);
    let a: Api<Service> = Api::namespaced(server.client_as("node-a"), "default");
    let b: Api<Service> = Api::namespaced(server.client_as("node-b"), "default");
    assert!(a.get("web").await.is_err());
    assert!(b.get("web").await.is_ok());
    let dropped = server
        .requests()
        .into_iter()
        .filter(|r| r.user == "node-a")
        .collect::<Vec<_>>();
    assert!(
        !dropped.is_empty() && dropped.iter().all(|r| r.status == 0),
        "{dropped:#?}"
    );
    server.set_reachability_for("node-a", Reachability::Up);
    assert!(a.get("web").await.is_ok());
}

#[tokio::test]
async fn watches_resume_bookmark_and_expire() {
    let server = serving(vec![fixture("svc-web.json")]).await;
    server.set_bookmark_interval(Duration::from_millis(200));
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let listed = api.list(&ListParams::default()).await.unwrap();
    let from = listed.metadata.resource_version.unwrap();
    server.apply(fixture("svc-dns-dualstack.json")); // another namespace: not in this watch
    let mut web = server.get(WEB).unwrap();
    web["spec"]["sessionAffinity"] = json!("ClientIP");
    server.apply(web);

    // Resumed from the list's version: exactly the change since, then a bookmark.
    let params = WatchParams::default().timeout(5);
    let mut events = api.watch(&params, &from).await.unwrap().boxed();
    let first = events.try_next().await.unwrap().unwrap();
    let WatchEvent::Modified(s) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        s.spec.unwrap().session_affinity.as_deref(),
        Some("ClientIP")
    );
    let second = events.try_next().await.unwrap().unwrap();
    let WatchEvent::Bookmark(bookmark) = second else {
        panic!("{second:?}")
    };
    assert_eq!(
        bookmark.metadata.resource_version,
        server.resource_version().to_string()
    );

    // After a compaction, an old version is gone: 410 in the stream.
    server.compact();
    let mut events = api.watch(&params, &from).await.unwrap().boxed();
    let gone = events.try_next().await.unwrap().unwrap();
    assert!(
        matches!(&gone, WatchEvent::Error(e) if e.code == 410),
        "{gone:?}"
    );

    // timeoutSeconds ends the stream.
    let started = tokio::time::Instant::now();
    let quiet = WatchParams::default().disable_bookmarks().timeout(1);
    let mut events = api
        .watch(&quiet, &server.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn metallb_objects_and_server_side_apply() {
    let server = serving(vec![
        metallb_fixture("ipaddresspool-production.json"),
        metallb_fixture("l2advertisement-production.json"),
        metallb_fixture("bgppeer-tor.json"),
    ])
    .await;
    let resource = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    let pools: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "metallb-system",
        &resource("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools"),
    );
    let listed = pools.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data["spec"]["addresses"][0], "192.0.2.0/28");
    // BGPPeer is served at v1beta2 and v1beta1 from one store.
    for version in ["v1beta2", "v1beta1"] {
        let peers: Api<DynamicObject> = Api::namespaced_with(
            server.client(),
            "metallb-system",
            &resource("metallb.io", version, "BGPPeer", "bgppeers"),
        );
        let tor = peers.get("tor").await.unwrap();
        assert_eq!(
            tor.types.unwrap().api_version,
            format!("metallb.io/{version}")
        );
    }

    // Server-side apply creates, then merges; another manager's field conflicts.
    let manager = |name: &str| PatchParams::apply(name);
    let pool = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                      "spec": {"addresses": ["198.51.100.0/28"], "autoAssign": false}});
    let created = pools
        .patch("staging", &manager("ops"), &Patch::Apply(&pool))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["autoAssign"], false);
    let other = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "spec": {"autoAssign": true}});
    let error = pools
        .patch("staging", &manager("someone"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = &error else {
        panic!("{error:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status
            .message
            .contains("conflict with \"ops\": .spec.autoAssign"),
        "{}",
        status.message
    );
    let forced = pools
        .patch(
            "staging",
            &manager("someone").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["autoAssign"], true);
    assert_eq!(forced.data["spec"]["addresses"][0], "198.51.100.0/28");
    let owners = server
        .field_owners("/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/staging");
    assert!(
        owners
            .iter()
            .any(|(m, apply, fields)| m == "someone" && *apply && fields == &["/spec/autoAssign"]),
        "{owners:?}"
    );
    // An apply without a field manager is refused, as the API server refuses it.
    let error = pools
        .patch("staging", &PatchParams::default(), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 400),
        "{error:?}"
    );

    // generateName and an unknown resource.
    let generated = pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"generateName": "pool-"}, "spec": {"addresses": ["203.0.113.0/30"]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let name = generated.metadata.name.unwrap();
    assert!(name.starts_with("pool-") && name.len() == 10, "{name}");
    let unknown: Api<DynamicObject> = Api::all_with(
        server.client(),
        &resource("example.com", "v1", "Widget", "widgets"),
    );
    let error = unknown.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 404),
        "{error:?}"
    );
}

async fn lease_manager(server: &StoreServer, identity: &str) -> LeaseManager {
    LeaseManagerBuilder::new(server.client_as(identity), "ipvs-proxy-ipam")
        .with_namespace("kube-system")
        .with_identity(identity)
        .with_duration(3)
        .with_grace(1)
        .build()
        .await
        .unwrap()
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ipvs-proxy-ipam";

fn holder(server: &StoreServer) -> Option<String> {
    server.get(LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

/// Watches both managers' leadership for `period`: never both leaders, and the Lease
/// names the leader whenever one says it leads.
async fn exactly_one_leader(
    server: &StoreServer,
    a: &tokio::sync::watch::Receiver<bool>,
    b: &tokio::sync::watch::Receiver<bool>,
    period: Duration,
) -> &'static str {
    let deadline = tokio::time::Instant::now() + period;
    let mut leader = None;
    while tokio::time::Instant::now() < deadline {
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(!(la && lb), "both lead at once");
        if la || lb {
            let who = if la { "a" } else { "b" };
            assert_eq!(holder(server).as_deref(), Some(who));
            leader = Some(who);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    leader.expect("someone leads")
}

#[tokio::test]
async fn two_lease_managers_race_for_one_lease() {
    let server = serving(Vec::new()).await;
    // Both build (and create the Lease) at once.
    let (a, b) = tokio::join!(lease_manager(&server, "a"), lease_manager(&server, "b"));
    // Both find the Lease free and try to take it: their writes are held until both
    // are in, so both read the free Lease before either writes.
    server.hold_writes();
    let ((mut a_leads, a_task), (mut b_leads, b_task)) = tokio::join!(a.watch(), b.watch());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.held_writes() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both managers try to lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.release_writes();
    let leader = exactly_one_leader(&server, &a_leads, &b_leads, Duration::from_secs(5)).await;
    let lease = server.get(LEASE).unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);
    // The loser's server-side apply met the winner's fields: a 409, which is what
    // keeps kube-lease-manager from two leaders.
    let apply_conflicts = |server: &StoreServer| {
        server
            .requests()
            .into_iter()
            .filter(|r| {
                r.status == 409 && r.content_type.as_deref() == Some("application/apply-patch+yaml")
            })
            .count()
    };
    assert_eq!(apply_conflicts(&server), 1, "{:#?}", server.requests());
    let follower = if leader == "a" { "b" } else { "a" };

    // The leader loses the API server: it cannot renew, and the follower takes over
    // once the Lease expires; nothing the cut-off leader sends gets through.
    let cut_at = server.requests().len();
    server.set_reachability_for(leader, Reachability::Refuse);
    server
        .wait_for(LEASE, Duration::from_secs(15), |lease| {
            lease.and_then(|l| l["spec"]["holderIdentity"].as_str()) == Some(follower)
        })
        .await;
    let follower_leads = if follower == "a" {
        &mut a_leads
    } else {
        &mut b_leads
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        follower_leads.wait_for(|leads| *leads),
    )
    .await
    .expect("the follower knows it leads")
    .unwrap();
    let from_cut_leader: Vec<_> = server.requests()[cut_at..]
        .iter()
        .filter(|r| r.user == leader && r.status != 0)
        .cloned()
        .collect();
    assert!(from_cut_leader.is_empty(), "{from_cut_leader:#?}");

    // Back online, the old leader learns it lost, and one leader remains.
    server.set_reachability_for(leader, Reachability::Up);
    let old_leads = if leader == "a" {
        &mut a_leads
    } else {
        &mut b_leads
    };
    tokio::time::timeout(Duration::from_secs(15), old_leads.wait_for(|leads| !*leads))
        .await
        .expect("the old leader steps down")
        .unwrap();
    assert_eq!(
        exactly_one_leader(&server, &a_leads, &b_leads, Duration::from_secs(2)).await,
        follower
    );

    // The new leader releases the Lease (its channel closes): the other takes it back.
    let (new_leader_rx, new_leader_task, other_rx) = if follower == "a" {
        (a_leads, a_task, b_leads)
    } else {
        (b_leads, b_task, a_leads)
    };
    drop(new_leader_rx);
    new_leader_task.await.unwrap().expect("a clean release");
    let mut other_rx = other_rx;
    tokio::time::timeout(Duration::from_secs(15), other_rx.wait_for(|leads| *leads))
        .await
        .expect("the other takes over after the release")
        .unwrap();
    assert_eq!(holder(&server).as_deref(), Some(leader));
    let lease = server.get(LEASE).unwrap();
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 2,
        "{lease}"
    );
    let patch_types: std::collections::BTreeSet<_> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.content_type.filter(|_| r.verb == "patch"))
        .collect();
    assert_eq!(
        patch_types,
        [
            "application/apply-patch+yaml",
            "application/strategic-merge-patch+json"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        apply_conflicts(&server),
        1,
        "only the first race conflicted"
    );
    drop(other_rx);
}

#[tokio::test]
async fn lists_paginate_select_and_stream() {
    let services: Vec<Value> = (0..7)
        .map(|i| {
            let mut s = testkit::k8s::cluster_ip_service(
                "default",
                &format!("svc-{i}"),
                &format!("10.96.0.{i}"),
            );
            s["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
            s
        })
        .collect();
    let server = serving(services).await;
    let api: Api<Service> = Api::namespaced(server.client(), "default");

    // Pages of 3 with a continue token, all at the first page's version.
    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    let third = api
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(&second.metadata.continue_.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!((second.items.len(), third.items.len()), (3, 1));
    assert_eq!(third.metadata.continue_, None);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );

    // Across namespaces, one object a page, in the store's (namespace, name) order:
    // `a/z` comes before `a-b/c` although `a-b/c` sorts first as a string.
    server.apply(testkit::k8s::cluster_ip_service("a", "z", "10.96.1.1"));
    server.apply(testkit::k8s::cluster_ip_service("a-b", "c", "10.96.1.2"));
    let all: Api<Service> = Api::all(server.client());
    let (mut paged, mut token) = (Vec::new(), None::<String>);
    loop {
        let mut params = ListParams::default().limit(1);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = all.list(&params).await.unwrap();
        paged.extend(page.items.into_iter().map(|s| s.metadata.name.unwrap()));
        token = page.metadata.continue_;
        if token.is_none() {
            break;
        }
    }
    let whole: Vec<String> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(paged, whole);
    assert_eq!(whole.len(), 9);
    server.delete("/api/v1/namespaces/a/services/z").unwrap();
    server.delete("/api/v1/namespaces/a-b/services/c").unwrap();

    let odd = api
        .list(&ListParams::default().labels("parity=odd"))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 3);
    let not_even = api
        .list(&ListParams::default().labels("parity!=even,parity"))
        .await
        .unwrap();
    assert_eq!(not_even.items.len(), 3);
    let one = api
        .list(&ListParams::default().fields("metadata.name=svc-4"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    let bad = api
        .list(&ListParams::default().labels("a b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, kube::Error::Api(s) if s.code == 400),
        "{bad:?}"
    );

    // A watcher paging its list, and one using streaming lists (sendInitialEvents),
    // both see every object, then a change.
    for config in [
        watcher::Config::default().page_size(2),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut stream = watcher::watcher(api.clone(), config).boxed();
        let mut initial = 0;
        loop {
            match next(&mut stream).await {
                Event::InitApply(_) => initial += 1,
                Event::InitDone => break,
                _ => {}
            }
        }
        assert_eq!(initial, 7);
        let patch = Patch::Merge(json!({"metadata": {"labels": {"parity": "none"}}}));
        api.patch("svc-0", &PatchParams::default(), &patch)
            .await
            .unwrap();
        let Event::Apply(s) = next(&mut stream).await else {
            panic!("no Apply")
        };
        assert_eq!(s.metadata.labels.unwrap()["parity"], "none");
        api.patch(
            "svc-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"parity": "even"}}})),
        )
        .await
        .unwrap();
        next(&mut stream).await;
    }
    let streamed = server
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("sendInitialEvents=true"))
        .count();
    assert_eq!(streamed, 1);
}

#[tokio::test]
async fn finalizers_dry_run_and_delete_collection() {
    let server = serving(vec![fixture("svc-web.json"), fixture("eps-web.json")]).await;
    let api: Api<Service> = Api::namespaced(server.client(), "default");

    // A dry run answers as if it wrote, and writes nothing.
    let before = server.resource_version();
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let answered = api
        .patch(
            "web",
            &dry,
            &Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        answered.spec.unwrap().session_affinity.as_deref(),
        Some("ClientIP")
    );
    assert_eq!(server.resource_version(), before);
    assert_eq!(server.get(WEB).unwrap()["spec"]["sessionAffinity"], "None");

    // A finalizer holds the deletion until it is removed.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    api.delete("web", &DeleteParams::default()).await.unwrap();
    let held = api.get("web").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(server.get(WEB).is_none());

    // Preconditions, then a delete of a whole collection by label.
    let slices: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"),
            "endpointslices",
        ),
    );
    let slice = slices
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let name = slice.metadata.name.clone().unwrap();
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let error = slices.delete(&name, &wrong).await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 409),
        "{error:?}"
    );
    slices
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("kubernetes.io/service-name=web"),
        )
        .await
        .unwrap();
    assert!(
        server
            .list("/apis/discovery.k8s.io/v1/endpointslices")
            .is_empty()
    );
}

#[tokio::test]
async fn discovery_finds_the_metallb_resources() {
    let server = serving(Vec::new()).await;
    let discovery = kube::Discovery::new(server.client()).run().await.unwrap();
    let group = discovery.get("metallb.io").expect("the metallb.io group");
    let (peers, capabilities) = group.recommended_kind("BGPPeer").expect("BGPPeer");
    assert_eq!(
        (peers.version.as_str(), peers.plural.as_str()),
        ("v1beta2", "bgppeers")
    );
    assert!(
        capabilities
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "bgppeers/status" || sub.plural == "status")
    );
    let (leases, _) = discovery
        .get("coordination.k8s.io")
        .unwrap()
        .recommended_kind("Lease")
        .unwrap();
    assert_eq!(leases.plural, "leases");
    assert!(
        discovery
            .get("")
            .unwrap()
            .recommended_kind("Service")
            .is_some()
    );
}

/// The agent's own Kubernetes source against the stateful server, allowed only what
/// it needs to read (everything else is forbidden): the early read of the API
/// server's Service, the snapshot, changes made by "the cluster", and a relist after
/// its watch was cut and the history compacted.
#[tokio::test]
async fn the_agents_source_follows_the_store_with_read_only_access() {
    use ipvs_proxy::source::SourceEvent;
    use ipvs_proxy::source::kubernetes::spawn_with_client;
    use kube::ResourceExt;

    let server = serving(vec![
        fixture("svc-kubernetes.json"),
        fixture("eps-kubernetes.json"),
        fixture("svc-web.json"),
        fixture("eps-web.json"),
        fixture("svc-headless.json"),
    ])
    .await;
    server.set_policy(AccessPolicy::Rules(vec![
        Rule::allow(&["get", "list", "watch"], "", &["services"]),
        Rule::allow(
            &["get", "list", "watch"],
            "discovery.k8s.io",
            &["endpointslices"],
        ),
    ]));
    let (tx, mut events) = tokio::sync::mpsc::channel(64);
    let task = spawn_with_client(
        server.client_as("system:serviceaccount:kube-system:ipvs-proxy"),
        tx,
    );
    let mut next_event = async || {
        tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("a source event within 20 s")
            .expect("the source goes on")
    };
    let SourceEvent::Early { services, .. } = next_event().await else {
        panic!("the early event first")
    };
    assert_eq!(services[0].name_any(), "kubernetes");
    let SourceEvent::Snapshot { services, slices } = next_event().await else {
        panic!("then the snapshot")
    };
    let mut names: Vec<String> = services.iter().map(|s| s.name_any()).collect();
    names.sort();
    let expected_services = server
        .list("/api/v1/services")
        .iter()
        .filter(|s| {
            s["metadata"]["labels"]
                .get("service.kubernetes.io/headless")
                .is_none()
        })
        .count();
    assert_eq!(names.len(), expected_services, "{names:?}");
    assert!(names.contains(&"web".to_string()));
    assert_eq!(slices.len(), 2);

    let mut web = server.get(WEB).unwrap();
    web["spec"]["sessionAffinity"] = json!("ClientIP");
    server.apply(web);
    let SourceEvent::ServiceApplied(applied) = next_event().await else {
        panic!("the change")
    };
    assert_eq!(
        applied.spec.unwrap().session_affinity.as_deref(),
        Some("ClientIP")
    );

    // Cut, changed and compacted while away: the watch cannot resume, so the source
    // lists again and hands over the whole new view.
    server.set_reachability(Reachability::Refuse);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.delete(WEB).unwrap();
    server.compact();
    server.set_reachability(Reachability::Up);
    loop {
        match next_event().await {
            SourceEvent::ServicesRelisted(services) => {
                assert!(services.iter().all(|s| s.name_any() != "web"));
                break;
            }
            SourceEvent::ServiceDeleted(key) => panic!("resumed past a compaction: {key:?}"),
            _ => {}
        }
    }
    let forbidden = server
        .requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .count();
    assert_eq!(
        forbidden, 0,
        "the source needs nothing beyond reading Services and slices"
    );
    assert!(server.requests().iter().all(|r| !r.is_write()));
    task.abort();
}
