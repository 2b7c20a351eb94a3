//! The small HTTP/1.1 server behind the proxy health, service health and metrics
//! listeners: each answers every request from its path alone, so a route is a plain
//! function from the path to an [`Answer`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// `Content-Type` of kube-proxy's health bodies.
pub(crate) const JSON: &str = "application/json";
/// `Content-Type` Go's `http.Error` and kube-proxy's plain-text handlers set.
pub(crate) const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// A plain HTTP answer: status, headers and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// HTTP status code.
    pub(crate) status: StatusCode,
    /// Headers (name, value), in the order they are sent.
    pub(crate) headers: Vec<(&'static str, String)>,
    /// Response body.
    pub(crate) body: String,
}

impl Answer {
    /// An answer with `content_type` and `X-Content-Type-Options: nosniff`, the two
    /// headers every kube-proxy handler sets.
    pub(crate) fn new(status: StatusCode, content_type: &str, body: String) -> Answer {
        Answer {
            status,
            headers: vec![
                ("Content-Type", content_type.to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
            ],
            body,
        }
    }

    /// Go's `http.NotFound`, which kube-proxy's `ServeMux` answers for other paths.
    pub(crate) fn not_found() -> Answer {
        Answer::new(
            StatusCode::NOT_FOUND,
            PLAIN_TEXT,
            "404 page not found\n".to_string(),
        )
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() = self.status;
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Serves HTTP/1.1 on `listener` until the task is aborted, answering every request
/// with `route(path)`. `what` names the server in the log.
pub(crate) async fn serve<F>(listener: TcpListener, what: &'static str, route: F)
where
    F: Fn(&str) -> Answer + Send + Sync + 'static,
{
    let route = Arc::new(route);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning on the error.
                tracing::warn!(%error, "{what} server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let answer = route(request.uri().path());
                async move { Ok::<_, Infallible>(answer.into_response()) }
            });
            // A client that goes away mid-request is not worth a log line.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// One request over a real connection: the route sees the path without the
    /// query, and the answer's status, headers and body arrive as given.
    #[test]
    fn serve_answers_from_the_path() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let address = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(serve(listener, "test", |path| {
                let mut answer =
                    Answer::new(StatusCode::OK, JSON, format!("{{\"path\":{path:?}}}"));
                answer.headers.push(("X-Test", "1".to_string()));
                answer
            }));
            address
        });
        let thread = std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /livez?verbose HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        });
        let response = runtime.block_on(async {
            loop {
                if thread.is_finished() {
                    break thread.join().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let head = head.to_ascii_lowercase();
        for header in [
            "content-type: application/json",
            "x-content-type-options: nosniff",
            "x-test: 1",
            "content-length: 17",
        ] {
            assert!(head.contains(header), "{header} missing in {head}");
        }
        assert_eq!(body, r#"{"path":"/livez"}"#);
    }
}
