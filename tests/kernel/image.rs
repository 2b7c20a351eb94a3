//! The agent's OCI image (`scripts/image`) run as a container runtime would run it: the
//! archive's layers unpacked into a root, that root mounted read-only with /proc, /sys,
//! /dev and a tmpfs /run over it, and the image's own entrypoint and environment started
//! in it (chroot) on the lab's node. The agent from the image programs a Service (IPVS,
//! a client's request answered) and its iptables-restore works (the image's iptables-save
//! shows the KUBE- chains); the legacy flavour of the image's iptables works too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netns_lab::wait_until;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::cluster::{Backend, Cluster, NODE_NAME};
use testkit::k8s::{http_port, ready_endpoints};

/// Where `scripts/image` writes the archive.
fn archive() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/ipvs-proxy.oci.tar")
}

/// The blob `digest` (`sha256:<hex>`) of the OCI layout at `layout`, checked against its
/// digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let actual = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(actual, hex, "blob {digest} does not match its digest");
    bytes
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest))
        .unwrap_or_else(|e| panic!("blob {digest} is not JSON: {e}"))
}

fn run(cmd: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image unpacked: its root directory and its configuration's `config`.
struct Unpacked {
    root: PathBuf,
    config: Value,
}

/// Unpacks the archive into `dir`: the layout in `dir/oci`, every layer of the image's
/// manifest, in order, into `dir/rootfs`.
fn unpack(dir: &Path) -> Unpacked {
    let archive = archive();
    assert!(
        archive.exists(),
        "{} does not exist: run scripts/image first (scripts/test builds it before the \
         kernel suite)",
        archive.display()
    );
    let layout = dir.join("oci");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&layout).expect("mkdir oci");
    std::fs::create_dir_all(&root).expect("mkdir rootfs");
    run(&format!(
        "tar -xf {} -C {}",
        archive.display(),
        layout.display()
    ));
    let index: Value = serde_json::from_slice(
        &std::fs::read(layout.join("index.json")).expect("the archive has an index.json"),
    )
    .expect("index.json parses");
    let manifests = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest = json_blob(&layout, manifests[0]["digest"].as_str().unwrap());
    let config = json_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    for layer in manifest["layers"].as_array().expect("manifest.layers") {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{layer}"
        );
        let digest = layer["digest"].as_str().unwrap();
        blob(&layout, digest);
        let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
        // As root, tar keeps the layer's owners and modes; the layers hold no whiteouts
        // (each adds files only), so extracting in order is the image's root.
        run(&format!(
            "tar -xzf {} -C {}",
            path.display(),
            root.display()
        ));
    }
    Unpacked {
        root,
        config: config["config"].clone(),
    }
}

impl Unpacked {
    /// A shell script that mounts the root as a container runtime does (read-only, with
    /// /proc, /sys, /dev, a tmpfs /run, and `inputs` on /tmp) and runs `args` there with
    /// the image's environment. Run under `ip netns exec`, which gives it a mount
    /// namespace of its own: the mounts go with it.
    fn script(&self, inputs: &Path, args: &str) -> String {
        let root = self.root.display();
        let env: Vec<String> = self.config["Env"]
            .as_array()
            .map(|env| {
                env.iter()
                    .map(|e| shell_quote(e.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "set -e\n\
             mount --bind {root} {root}\n\
             mount -o remount,bind,ro {root}\n\
             mount -t proc proc {root}/proc\n\
             mount -t sysfs sysfs {root}/sys\n\
             mount --rbind /dev {root}/dev\n\
             mount -t tmpfs run {root}/run\n\
             mount --bind {inputs} {root}/tmp\n\
             exec env -i {env} chroot {root} {args}\n",
            inputs = inputs.display(),
            env = env.join(" "),
        )
    }

    /// The image's entrypoint, quoted for a shell.
    fn entrypoint(&self) -> String {
        self.config["Entrypoint"]
            .as_array()
            .expect("the image has an entrypoint")
            .iter()
            .map(|arg| shell_quote(arg.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[test]
#[ignore = "needs the kernel lab"]
fn the_agent_from_the_image_programs_a_service_and_its_iptables_rules() {
    let cluster = Cluster::new("img", 2, Backend::Named);
    let image = unpack(cluster.dir());

    // No shell in the image: iptables-restore needs none, and nothing else runs there.
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/dash"] {
        assert!(
            image.root.join(shell).symlink_metadata().is_err(),
            "the image has a shell: /{shell}"
        );
    }
    assert_eq!(image.entrypoint(), "'/ipvs-proxy'");
    // What the manifests run: `ipvs-proxy` on PATH, and the init container's modprobe
    // (kmod, which reads modules from the node's /lib/modules).
    assert_eq!(
        std::fs::read_link(image.root.join("usr/local/bin/ipvs-proxy")).ok(),
        Some(PathBuf::from("/ipvs-proxy")),
        "ipvs-proxy is not on the image's PATH"
    );
    let modprobe = image.root.join("usr/sbin/modprobe");
    assert!(
        modprobe.symlink_metadata().is_ok(),
        "the image has no modprobe for the init container"
    );

    let ips = cluster.ips();
    cluster.write(
        "web.json",
        &[
            testkit::k8s::service(
                "img",
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "ports": [http_port(Some(30080))], "type": "NodePort"}),
            ),
            testkit::k8s::slice("img", "web-1", "web", ready_endpoints(&ips, NODE_NAME)),
        ],
    );
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");

    // The cluster's directory (configuration, manifests) is the container's /tmp.
    let run = cluster.dir().join("run-agent.sh");
    std::fs::write(
        &run,
        image.script(
            cluster.dir(),
            &format!(
                "{} run --config /tmp/config.yaml --manifests /tmp/manifests \
                 --hostname-override {NODE_NAME}",
                image.entrypoint()
            ),
        ),
    )
    .expect("write run-agent.sh");
    let _agent = cluster.node().spawn(&format!(
        "sh {} >> {} 2>&1",
        run.display(),
        cluster.log_path().display()
    ));

    for url in ["http://10.96.0.10/", "http://192.168.50.1:30080/"] {
        assert!(
            cluster.wait_for(url, Duration::from_secs(60)),
            "{url} never answered; IPVS:\n{}",
            cluster.ipvs()
        );
    }
    assert!(
        cluster.ipvs().contains("10.96.0.10:80"),
        "{}",
        cluster.ipvs()
    );

    // The image's own iptables-save (iptables-nft through Debian's alternatives) reads
    // what the agent's iptables-restore wrote.
    let save = cluster.dir().join("save.sh");
    std::fs::write(&save, image.script(cluster.dir(), "iptables-save")).expect("write save.sh");
    let mut rules = String::new();
    let restored = wait_until(Duration::from_secs(30), || {
        rules = cluster.node().sh(&format!("sh {}", save.display()));
        rules.contains(":KUBE-POSTROUTING") && rules.contains(":KUBE-SERVICES")
    });
    assert!(
        restored,
        "no KUBE- chains in the image's iptables-save:\n{rules}"
    );
    assert!(
        cluster.log().contains("backend=Nft"),
        "the agent did not pick iptables-nft on an empty node:\n{}",
        cluster.log()
    );

    // The legacy flavour works from the image too (for hosts whose kubelet uses it).
    let legacy = cluster.dir().join("legacy.sh");
    std::fs::write(
        &legacy,
        image.script(
            cluster.dir(),
            "iptables-legacy-restore --noflush /tmp/legacy.rules",
        ),
    )
    .expect("write legacy.sh");
    std::fs::write(
        cluster.dir().join("legacy.rules"),
        "*filter\n:IMAGE-LEGACY - [0:0]\n-A IMAGE-LEGACY -j RETURN\nCOMMIT\n",
    )
    .expect("write legacy.rules");
    cluster.node().sh(&format!("sh {}", legacy.display()));
    let legacy_rules = cluster.node().sh("iptables-legacy-save -t filter");
    assert!(
        legacy_rules.contains("-A IMAGE-LEGACY -j RETURN"),
        "{legacy_rules}"
    );
}
