//! BGP passwords: the peers selecting this node, their `passwordSecret` read by name
//! (from the API server or the manifests), published for the speaker.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use metallb_config::{Peer, PeerPassword};
use tokio::sync::watch;
use tracing::warn;

use crate::announce::bgp::PeerConfig;

/// How often passwords that could not be read are tried again.
const PASSWORD_RETRY: Duration = Duration::from_secs(30);

/// Where BGP passwords are read.
pub(crate) enum SecretSource {
    /// Secret objects of the manifests directory.
    Static(watch::Receiver<Arc<Vec<Secret>>>),
    /// The API server (the Secret's `password` key, read with `get`).
    Kubernetes(kube::Client),
}

/// Reads the peers' passwords and publishes the peers for the speaker; a peer whose
/// Secret cannot be read is left out (logged) and tried again later.
pub(super) async fn resolve_passwords(
    mut wanted: watch::Receiver<Vec<Peer>>,
    mut secrets: SecretSource,
    metallb_namespace: String,
    peers: watch::Sender<Vec<PeerConfig>>,
) {
    let mut reported = BTreeSet::new();
    loop {
        let current = wanted.borrow_and_update().clone();
        let mut resolved = Vec::new();
        let mut missing = false;
        for peer in &current {
            let password = match &peer.password {
                None => Ok(None),
                Some(PeerPassword::Inline(password)) => Ok(Some(password.clone())),
                Some(PeerPassword::Secret { namespace, name }) => {
                    let namespace = if namespace.is_empty() {
                        &metallb_namespace
                    } else {
                        namespace
                    };
                    read_password(&secrets, namespace, name).await.map(Some)
                }
            };
            match password {
                Ok(password) => match PeerConfig::from_metallb(peer, password) {
                    Some(config) => resolved.push(config),
                    None => {
                        if reported.insert(format!("{}: unnumbered", peer.name)) {
                            warn!(peer = %peer.name, "BGPPeer without an address (an interface only) is not supported: skipped");
                        }
                    }
                },
                Err(why) => {
                    missing = true;
                    if reported.insert(why.clone()) {
                        warn!(peer = %peer.name, "BGPPeer skipped until its password can be read: {why}");
                    }
                }
            }
        }
        super::send_if_changed(&peers, resolved);
        let retry = async {
            if missing {
                tokio::time::sleep(PASSWORD_RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let static_change = async {
            match &mut secrets {
                SecretSource::Static(secrets) => {
                    if secrets.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                SecretSource::Kubernetes(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            () = retry => {}
            () = static_change => {}
        }
    }
}

/// The `password` key of a Secret.
async fn read_password(
    source: &SecretSource,
    namespace: &str,
    name: &str,
) -> Result<String, String> {
    let secret = match source {
        SecretSource::Static(secrets) => secrets
            .borrow()
            .iter()
            .find(|secret| {
                secret.metadata.name.as_deref() == Some(name)
                    && secret.metadata.namespace.as_deref().unwrap_or(namespace) == namespace
            })
            .cloned()
            .ok_or_else(|| format!("Secret {namespace}/{name} not found in the manifests"))?,
        SecretSource::Kubernetes(client) => {
            kube::Api::<Secret>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(|error| format!("cannot read Secret {namespace}/{name}: {error}"))?
        }
    };
    if let Some(password) = secret.data.as_ref().and_then(|data| data.get("password")) {
        return String::from_utf8(password.0.clone())
            .map_err(|_| format!("Secret {namespace}/{name}: the password is not UTF-8"));
    }
    if let Some(password) = secret
        .string_data
        .as_ref()
        .and_then(|data| data.get("password"))
    {
        return Ok(password.clone());
    }
    Err(format!("Secret {namespace}/{name} has no `password` key"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use testkit::store_server::StoreServer;

    use super::*;

    fn secret(name: &str, data: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": name, "namespace": "metallb-system"}, "data": data})
    }

    /// The password is the Secret's `password` key, read from the API server with
    /// `get` or from the manifests; a missing Secret or key says which.
    #[tokio::test]
    async fn passwords_come_from_the_secrets_password_key() {
        // "s3cret" and "other" in base64.
        let objects = [
            secret("bgp-auth", json!({"password": "czNjcmV0"})),
            secret("no-key", json!({"username": "b3RoZXI="})),
        ];
        let server = StoreServer::with_objects(objects.clone());
        server.serve().await;
        let api = SecretSource::Kubernetes(server.client());
        assert_eq!(
            read_password(&api, "metallb-system", "bgp-auth").await,
            Ok("s3cret".to_string())
        );
        let missing = read_password(&api, "metallb-system", "absent")
            .await
            .unwrap_err();
        assert!(
            missing.contains("Secret metallb-system/absent"),
            "{missing}"
        );
        let no_key = read_password(&api, "metallb-system", "no-key")
            .await
            .unwrap_err();
        assert!(no_key.contains("has no `password` key"), "{no_key}");

        let parsed: Vec<Secret> = objects
            .iter()
            .map(|object| serde_json::from_value(object.clone()).unwrap())
            .collect();
        let (_tx, rx) = watch::channel(Arc::new(parsed));
        let manifests = SecretSource::Static(rx);
        assert_eq!(
            read_password(&manifests, "metallb-system", "bgp-auth").await,
            Ok("s3cret".to_string())
        );
        // Another namespace's Secret of the same name is not the one named.
        assert!(
            read_password(&manifests, "default", "bgp-auth")
                .await
                .is_err()
        );
    }

    /// The speaker gets the peers selecting this node with their passwords; a peer
    /// whose Secret cannot be read is left out, the others are not held back.
    #[tokio::test]
    async fn peers_are_published_with_passwords_and_unreadable_ones_wait() {
        let peer = |name: &str, password: Option<PeerPassword>| Peer {
            name: name.into(),
            my_asn: 64512,
            peer_asn: metallb_config::PeerAsn::Fixed(64513),
            address: Some("10.0.0.254".parse().unwrap()),
            interface: None,
            source_address: None,
            port: 179,
            hold_time: None,
            keepalive_time: None,
            connect_time: None,
            router_id: None,
            node_selectors: Vec::new(),
            password,
            bfd_profile: None,
            graceful_restart: true,
            ebgp_multihop: false,
            dual_stack: false,
        };
        let secret_ref = |name: &str| PeerPassword::Secret {
            namespace: String::new(),
            name: name.into(),
        };
        let parsed: Vec<Secret> = vec![
            serde_json::from_value(secret("bgp-auth", json!({"password": "czNjcmV0"}))).unwrap(),
        ];
        let (_secrets_tx, secrets_rx) = watch::channel(Arc::new(parsed));
        let (wanted_tx, wanted_rx) = watch::channel(Vec::new());
        let (peers_tx, mut peers) = watch::channel(Vec::new());
        let task = tokio::spawn(resolve_passwords(
            wanted_rx,
            SecretSource::Static(secrets_rx),
            "metallb-system".into(),
            peers_tx,
        ));
        wanted_tx.send_replace(vec![
            peer("open", None),
            peer("inline", Some(PeerPassword::Inline("pw".into()))),
            peer("from-secret", Some(secret_ref("bgp-auth"))),
            peer("unreadable", Some(secret_ref("absent"))),
        ]);
        let published = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                peers.changed().await.unwrap();
                let now = peers.borrow_and_update().clone();
                if !now.is_empty() {
                    return now;
                }
            }
        })
        .await
        .unwrap();
        let by_name: BTreeMap<&str, Option<&str>> = published
            .iter()
            .map(|p| (p.name.as_str(), p.password.as_ref().map(|pw| pw.0.as_str())))
            .collect();
        assert_eq!(
            by_name,
            BTreeMap::from([
                ("from-secret", Some("s3cret")),
                ("inline", Some("pw")),
                ("open", None),
            ])
        );
        task.abort();
    }
}
