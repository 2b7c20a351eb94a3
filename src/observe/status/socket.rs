//! The status socket: the agent's server, which hands each request to the run loop,
//! and the blocking client `ipvs-proxy services` uses.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::schema::{StatusError, StatusReply, StatusReport};

/// Where the agent listens unless `run --status-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ipvs-proxy/ipvs-proxy.sock";

/// The request line for the report of `ipvs-proxy services`.
const STATUS_REQUEST: &str = "status";

/// The request line for the BGP neighbours (`ipvs-proxy bgp`).
const BGP_REQUEST: &str = "bgp";

/// Answers the `bgp` request: one JSON line (`BgpReply`), newline included.
pub type BgpAnswer = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// How long the client waits for the agent's answer; the agent answers between
/// syncs, and a sync of thousands of Services takes seconds in a slow VM.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A request from the socket server to the agent's run loop.
#[derive(Debug)]
pub struct StatusRequest {
    /// Where the run loop sends its answer.
    pub reply: oneshot::Sender<StatusReply>,
}

/// Listens on `path` and forwards each `status` request to the run loop through
/// `requests`; the run loop answers on the request's oneshot channel. A stale socket
/// file from a previous run is replaced; a live one is an error. The socket is
/// created with mode 0600 (the report names every Service and pod of the node).
///
/// Must be called inside a tokio runtime.
pub fn spawn_status_server(
    path: PathBuf,
    requests: mpsc::Sender<StatusRequest>,
) -> Result<tokio::task::JoinHandle<()>, StatusError> {
    spawn_status_server_with_bgp(path, requests, None)
}

/// [`spawn_status_server`], also answering `bgp` with `bgp` (an agent without the
/// BGP speaker answers that request with an error).
pub fn spawn_status_server_with_bgp(
    path: PathBuf,
    requests: mpsc::Sender<StatusRequest>,
    bgp: Option<BgpAnswer>,
) -> Result<tokio::task::JoinHandle<()>, StatusError> {
    let bind_error = |source| StatusError::Bind {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(bind_error)?;
    }
    if let Ok(metadata) = std::fs::symlink_metadata(&path) {
        if !metadata.file_type().is_socket() {
            return Err(bind_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(StatusError::InUse { path });
        }
        std::fs::remove_file(&path).map_err(bind_error)?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(bind_error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, requests.clone(), bgp.clone()));
                }
                Err(err) => {
                    warn!(path = %path.display(), "status socket: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// The longest request line accepted.
const MAX_REQUEST: u64 = 1024;

async fn serve_connection(
    stream: tokio::net::UnixStream,
    requests: mpsc::Sender<StatusRequest>,
    bgp: Option<BgpAnswer>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    if matches!(read, Ok(Ok(_))) && line.trim() == BGP_REQUEST {
        let text = match &bgp {
            Some(answer) => answer(),
            None => "{\"error\":\"this agent runs no BGP speaker (loadBalancer is disabled)\"}\n"
                .to_string(),
        };
        if let Err(err) = write.write_all(text.as_bytes()).await {
            debug!("status socket: the client left before the answer: {err}");
        }
        let _ = write.shutdown().await;
        return;
    }
    let reply = match read {
        Err(_) => StatusReply::Error("no request line within 5 seconds".to_string()),
        Ok(Err(err)) => StatusReply::Error(format!("cannot read the request: {err}")),
        Ok(Ok(_)) if line.trim() == STATUS_REQUEST => ask_run_loop(&requests).await,
        Ok(Ok(_)) => StatusReply::Error(format!(
            "unknown request {:?}; this socket answers {STATUS_REQUEST:?} and {BGP_REQUEST:?}",
            line.trim()
        )),
    };
    let mut text = serde_json::to_string(&reply)
        .unwrap_or_else(|err| format!("{{\"error\":\"cannot encode the report: {err}\"}}"));
    text.push('\n');
    if let Err(err) = write.write_all(text.as_bytes()).await {
        debug!("status socket: the client left before the answer: {err}");
    }
    let _ = write.shutdown().await;
}

async fn ask_run_loop(requests: &mpsc::Sender<StatusRequest>) -> StatusReply {
    let (reply, answer) = oneshot::channel();
    if requests.send(StatusRequest { reply }).await.is_err() {
        return StatusReply::Error("the agent's run loop has stopped".to_string());
    }
    match tokio::time::timeout(CLIENT_TIMEOUT, answer).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => StatusReply::Error("the run loop dropped the request".to_string()),
        Err(_) => StatusReply::Error(format!(
            "the run loop did not answer within {} seconds",
            CLIENT_TIMEOUT.as_secs()
        )),
    }
}

/// Asks the agent listening on `path` for its report (blocking).
pub fn query(path: &Path, timeout: Duration) -> Result<StatusReport, StatusError> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        StatusError::Unreachable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let io = |source| StatusError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(format!("{STATUS_REQUEST}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    parse_reply(path, &answer)
}

fn parse_reply(path: &Path, answer: &str) -> Result<StatusReport, StatusError> {
    let reply: StatusReply =
        serde_json::from_str(answer.trim()).map_err(|err| StatusError::Protocol {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    match reply {
        StatusReply::Report(report) => Ok(*report),
        StatusReply::Error(message) => Err(StatusError::Agent(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::fixtures::{model_with, observed_from, report};
    use crate::plan::DrainStarts;

    #[test]
    fn the_json_reply_round_trips_and_errors_are_clear() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let observed = observed_from(&model.desired());
        let report = report(&model, &observed, &DrainStarts::new());
        let wire = serde_json::to_string(&StatusReply::Report(Box::new(report.clone()))).unwrap();
        let path = Path::new("/run/test.sock");
        assert_eq!(parse_reply(path, &wire).unwrap(), report);
        let value: serde_json::Value = serde_json::from_str(&wire).unwrap();
        let rs = &value["report"]["services"][0]["virtual_servers"][0]["real_servers"][0];
        assert_eq!(rs["state"], "ready");
        assert_eq!(rs["pod"], "pod-10-244-1-10");
        assert_eq!(rs["kernel"]["active_connections"], 3);
        assert_eq!(value["report"]["services"][0]["type"], "ClusterIP");

        let err = parse_reply(path, r#"{"error":"cannot read the kernel state: x"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the agent could not report its state: cannot read the kernel state: x"
        );
        let err = parse_reply(path, "HTTP/1.1 400 Bad Request").unwrap_err();
        assert!(err.to_string().contains("not a status report"), "{err}");

        let nowhere = std::env::temp_dir().join(format!("no-agent-{}.sock", std::process::id()));
        let err = query(&nowhere, Duration::from_secs(1)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach the agent at {}: ",
                nowhere.display()
            )) && text.ends_with("; is `ipvs-proxy run` running on this node?"),
            "{text}"
        );
    }

    #[test]
    fn the_socket_answers_status_refuses_other_requests_and_is_private() {
        let dir = std::env::temp_dir().join(format!("status-test-{}", std::process::id()));
        let path = dir.join("agent.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let expected = StatusReport {
            node: "node-a".into(),
            ..StatusReport::default()
        };
        let (tx, mut rx) = mpsc::channel::<StatusRequest>(1);
        let server = {
            let _inside = runtime.enter();
            let answer = expected.clone();
            runtime.spawn(async move {
                while let Some(request) = rx.recv().await {
                    let _ = request
                        .reply
                        .send(StatusReply::Report(Box::new(answer.clone())));
                }
            });
            spawn_status_server(path.clone(), tx).unwrap()
        };
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(query(&path, Duration::from_secs(10)).unwrap(), expected);

        let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
        stream.write_all(b"delete everything\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("unknown request"), "{answer}");

        // A second agent on the same path is refused while the first answers.
        let (other, _rx) = mpsc::channel::<StatusRequest>(1);
        let err = {
            let _inside = runtime.enter();
            spawn_status_server(path.clone(), other).unwrap_err()
        };
        assert!(matches!(err, StatusError::InUse { .. }), "{err}");

        // After the agent stops, the left-over socket file is replaced on restart.
        server.abort();
        drop(runtime);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (again, _rx) = mpsc::channel::<StatusRequest>(1);
        {
            let _inside = runtime.enter();
            spawn_status_server(path.clone(), again).unwrap();
        }
        drop(runtime);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
