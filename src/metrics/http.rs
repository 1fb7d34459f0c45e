//! The metrics listener (`<enable_metrics>` on `<metrics_bind_address>`:`<metrics_port>`):
//! HTTP/1.1 by hyper, `GET /metrics` (and `HEAD`) answered with a scrape, everything else 404.
//!
//! Bounded as the forward proxy's API is, so no client can hold the daemon: at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed at accept), each request head
//! within [`HEADER_TIMEOUT`] and hyper's smallest buffer (8 KiB), each connection closed after
//! [`CONNECTION_TIMEOUT`] whatever it does; request bodies are never read. A scrape's size is
//! bounded by the configuration (one series per internal server) and the fixed label sets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, info, warn};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::live::Live;
use super::{Format, Metrics};
use crate::forward::service::ForwardService;
use crate::session::Shared;

/// The one path served.
pub const PATH: &str = "/metrics";
/// Most connections open at once; more are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// Time for each request head, from the connection's start or the previous answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open at all (a scraper reconnects).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head read (hyper's smallest buffer).
pub const MAX_HEAD: usize = 8192;

/// What every connection of the listener reads from.
struct Sources {
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    forward: Option<Arc<ForwardService>>,
}

/// Serves `listener` until `stop` turns true (or its sender is dropped): scrapes of `metrics`
/// and of the live state of `shared` (sessions, internal servers) and `forward` (forwardings,
/// when the forward proxy runs).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    forward: Option<Arc<ForwardService>>,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!("metrics served on http://{addr}{PATH}");
    }
    let sources = Arc::new(Sources {
        metrics,
        shared,
        forward,
    });
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            debug!("metrics: {peer}: connection refused, {MAX_CONNECTIONS} already open");
            drop(stream);
            continue;
        };
        let sources = Arc::clone(&sources);
        let stop = stop.clone();
        tokio::spawn(async move {
            let served =
                tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, peer, sources, stop));
            if served.await.is_err() {
                debug!(
                    "metrics: {peer}: closed after {} s",
                    CONNECTION_TIMEOUT.as_secs()
                );
            }
            drop(permit);
        });
    }
}

/// One connection, until it closes, fails, or the listener stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    sources: Arc<Sources>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let handler = hyper::service::service_fn(move |req| {
        let sources = Arc::clone(&sources);
        async move { Ok::<_, Infallible>(answer(&sources, &req)) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let conn = http.serve_connection(TokioIo::new(stream), handler);
    tokio::select! {
        r = conn => if let Err(e) = r { debug!("metrics: {peer}: {e}") },
        _ = stop.changed() => {}
    }
}

/// Answers one request: a scrape for `GET`/`HEAD` [`PATH`], 404 for anything else.
fn answer(sources: &Sources, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return plain(
            StatusCode::NOT_FOUND,
            format!("not found; try GET {PATH}\n"),
        );
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let live = Live::read(
        &sources.metrics,
        &sources.shared,
        sources.forward.as_deref(),
    );
    match sources.metrics.encode(live, format) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n".into(),
        ),
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::memory::MemoryForwarder;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn shared(metrics: &Arc<Metrics>) -> Arc<Shared> {
        let text = r#"<CONF><server><rproxy><enabled>true</enabled><rules>
<rule><hosts><host>198.51.100.2</host><host>198.51.100.3:2222</host></hosts><keyfile>/k</keyfile></rule>
</rules></rproxy></server></CONF>"#;
        let config = crate::config::parse_str(text, Path::new("t"))
            .unwrap()
            .config;
        Arc::new(Shared::new(
            Arc::new(config),
            Box::new(MemoryForwarder::new()),
            "known_hosts".into(),
            Arc::clone(metrics),
        ))
    }

    /// Sends `request` on a new connection and reads until the server closes.
    async fn send(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn metrics_are_served_at_one_path_and_everything_else_is_404() {
        let metrics = Arc::new(Metrics::new());
        let shared = shared(&metrics);
        shared.balancer.lock().unwrap().mark_faulty(
            "198.51.100.3:2222".parse().unwrap(),
            tokio::time::Instant::now(),
        );
        metrics.session_started();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(serve(listener, metrics, shared, None, stop));

        let ok = send(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        for line in [
            "\nfasp_proxy_sessions_started_total 1\n",
            "\nfasp_proxy_live_sessions 0\n",
            "\nfasp_proxy_backend_up{host=\"198.51.100.2:22\"} 1\n",
            "\nfasp_proxy_backend_up{host=\"198.51.100.3:2222\"} 0\n",
            "\nfasp_proxy_backend_faulty_marks_total{host=\"198.51.100.3:2222\"} 1\n",
        ] {
            assert!(ok.contains(line), "no {line:?} in:\n{ok}");
        }
        let om = send(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            om.contains("content-type: application/openmetrics-text"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
        for request in [
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /metrics/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            "PUT /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ] {
            let answer = send(addr, request).await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{request:?}: {answer}");
        }
        let bad = send(addr, "\x16\x03\x01 not http\r\n\r\n").await;
        assert!(bad.is_empty() || bad.starts_with("HTTP/1.1 400"), "{bad}");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the listener stops")
            .unwrap();
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_accept() {
        let metrics = Arc::new(Metrics::new());
        let shared = shared(&metrics);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(serve(listener, metrics, shared, None, stop));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Each held connection has been accepted once one more is answered... by being closed.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // Freed places are taken again.
        held.clear();
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let a = send(addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
                if !a.is_empty() {
                    break a;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
