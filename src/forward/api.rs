//! The forward proxy's HTTP API (hyper, HTTP/1.1; TLS by rustls for `dnats://`), as IBM's
//! `ascp --proxy dnat[s]://` calls it: `POST /proxy/open`, `/proxy/keepalive`, `/proxy/close`
//! with Basic credentials and a small body (see [`super::wire`]).
//!
//! Bounded everywhere, so no client can hold the daemon: at most [`ApiLimits::max_connections`]
//! connections at once (more are closed at accept), the TLS handshake and the request head each
//! within [`ApiLimits::header_timeout`], the whole connection within
//! [`ApiLimits::connection_timeout`], bodies of at most [`MAX_BODY`] bytes, request heads within
//! hyper's smallest buffer (8 KiB); failed logins put the client's address under a penalty
//! ([`crate::policy::penalties`], applied by [`ForwardService::authenticate`]): its 401 comes only
//! after the penalty, and its calls meanwhile get 429 with `Retry-After`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::service::{Caller, ForwardService, Refusal};
use super::wire::{error_reply, id_reply, IdRequest, OpenRequest, MAX_BODY};
use crate::metrics::Metrics;
use crate::policy::sources::{SourceCounts, SourceGuard};

/// The API's limits.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Most connections served at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Time for the TLS handshake, and for each request head.
    pub header_timeout: Duration,
    /// Time a connection may stay open at all.
    pub connection_timeout: Duration,
    /// Most connections from one source at once (`<per_source><max_api_connections>`); more
    /// are closed at accept, and the source is penalised. 0 = no limit.
    pub max_per_source: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(30),
            max_per_source: 32,
        }
    }
}

/// One API listener (HTTP, or HTTPS with `tls`) and what it serves.
pub struct Api {
    service: Arc<ForwardService>,
    limits: ApiLimits,
    connections: Arc<Semaphore>,
    per_source: Arc<SourceCounts>,
    /// Where each answer's status is counted.
    metrics: Arc<Metrics>,
}

impl Api {
    /// An API for `service`; HTTP and HTTPS listeners share its connection cap; each answer's
    /// status is counted in `metrics`.
    pub fn new(service: Arc<ForwardService>, limits: ApiLimits, metrics: Arc<Metrics>) -> Arc<Api> {
        Arc::new(Api {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            service,
            limits,
            per_source: SourceCounts::new(),
            metrics,
        })
    }

    /// Serves `listener` (TLS when `tls` is given) until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("forward proxy API: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let Some(source) = self.take_source(peer.ip()) else {
                drop(stream);
                continue;
            };
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                debug!(
                    "forward proxy API: {peer}: connection refused, {} already open",
                    self.limits.max_connections
                );
                drop(stream);
                continue;
            };
            let api = Arc::clone(&self);
            let tls = tls.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let limit = api.limits.connection_timeout;
                let served = tokio::time::timeout(limit, api.connection(stream, peer, tls, stop));
                if served.await.is_err() {
                    debug!(
                        "forward proxy API: {peer}: closed after {} s",
                        limit.as_secs()
                    );
                }
                drop(permit);
                drop(source);
            });
        }
    }

    /// Counts a connection of `addr`'s source, or refuses it when the source already has
    /// [`ApiLimits::max_per_source`] open: an offence, logged when it starts a penalty (not for
    /// each connection refused while the source serves it).
    fn take_source(&self, addr: IpAddr) -> Option<SourceGuard> {
        let key = self.service.source_key(addr);
        let (_, open) = self.per_source.counts(key);
        let max = self.limits.max_per_source;
        if max > 0 && open as usize >= max {
            let penalised = self.service.is_penalised(addr);
            if let Some(offence) = self.service.over_source_cap(addr) {
                if !penalised {
                    warn!(
                        "forward proxy API: connections from {addr} refused: {max} already open \
                         (<per_source><max_api_connections>); penalised for {} s",
                        offence.penalty.as_secs()
                    );
                }
            }
            return None;
        }
        Some(self.per_source.take(key))
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        mut stop: watch::Receiver<bool>,
    ) {
        let local = match stream.local_addr() {
            Ok(a) => a.ip(),
            Err(_) => return,
        };
        let _ = stream.set_nodelay(true);
        let api = Arc::clone(&self);
        let handler = hyper::service::service_fn(move |req| {
            let api = Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.handle(req, peer.ip(), local).await) }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(8192);
        match tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(stream), handler);
                tokio::select! {
                    r = conn => if let Err(e) = r { debug!("forward proxy API: {peer}: {e}") },
                    _ = stop.changed() => {}
                }
            }
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream));
                let stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!("forward proxy API: {peer}: TLS handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!("forward proxy API: {peer}: TLS handshake timed out");
                        return;
                    }
                };
                let conn = http.serve_connection(TokioIo::new(stream), handler);
                tokio::select! {
                    r = conn => if let Err(e) = r { debug!("forward proxy API: {peer}: {e}") },
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Answers one request (its status counted).
    async fn handle(
        &self,
        req: Request<Incoming>,
        client: IpAddr,
        local: IpAddr,
    ) -> Response<Full<Bytes>> {
        let response = self.respond(req, client, local).await;
        self.metrics.api_request(response.status().as_u16());
        response
    }

    async fn respond(
        &self,
        req: Request<Incoming>,
        client: IpAddr,
        local: IpAddr,
    ) -> Response<Full<Bytes>> {
        match self.answer(req, client, local).await {
            Ok(body) => reply(StatusCode::OK, body),
            Err(refusal) => {
                let status =
                    StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let mut response = reply(status, error_reply(&refusal.to_string()));
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"fasp-proxy\""),
                    );
                }
                if let HttpRefusal::Service(Refusal::Penalised { retry_after, .. }) = &refusal {
                    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                response
            }
        }
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        client: IpAddr,
        local: IpAddr,
    ) -> Result<String, HttpRefusal> {
        let path = req.uri().path().to_string();
        let call = match path.as_str() {
            "/proxy/open" => Call::Open,
            "/proxy/keepalive" => Call::Keepalive,
            "/proxy/close" => Call::Close,
            _ => {
                return Err(HttpRefusal::Status(
                    StatusCode::NOT_FOUND,
                    format!("no such API call: {path}"),
                ))
            }
        };
        if req.method() != Method::POST {
            return Err(HttpRefusal::Status(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes POST, not {}", req.method()),
            ));
        }
        let credentials = basic_credentials(req.headers().get(AUTHORIZATION))?;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        let caller = Caller {
            client,
            local,
            credentials,
        };
        let service = &self.service;
        let result = match call {
            Call::Open => {
                let request = OpenRequest::parse(&body).map_err(|e| bad_request(e.0))?;
                service
                    .open(&caller, &request)
                    .await
                    .map(|reply| reply.to_json())
            }
            Call::Keepalive => {
                let id = IdRequest::parse(&body).map_err(|e| bad_request(e.0))?;
                service
                    .keepalive(&caller, id.proxy_id)
                    .await
                    .map(|()| id_reply(id.proxy_id))
            }
            Call::Close => {
                let id = IdRequest::parse(&body).map_err(|e| bad_request(e.0))?;
                service
                    .close(&caller, id.proxy_id)
                    .await
                    .map(|()| id_reply(id.proxy_id))
            }
        };
        result.map_err(HttpRefusal::Service)
    }
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Open,
    Keepalive,
    Close,
}

/// A refusal from HTTP itself or from the service.
#[derive(Debug)]
enum HttpRefusal {
    Status(StatusCode, String),
    Service(Refusal),
}

impl HttpRefusal {
    fn status(&self) -> u16 {
        match self {
            HttpRefusal::Status(s, _) => s.as_u16(),
            HttpRefusal::Service(r) => r.status(),
        }
    }
}

impl std::fmt::Display for HttpRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpRefusal::Status(_, why) => f.write_str(why),
            HttpRefusal::Service(r) => write!(f, "{r}"),
        }
    }
}

fn too_large() -> HttpRefusal {
    HttpRefusal::Status(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over the limit of {MAX_BODY} bytes"),
    )
}

fn bad_request(why: String) -> HttpRefusal {
    HttpRefusal::Service(Refusal::BadRequest(why))
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `Authorization: Basic base64(user:password)`; absent = `None`, anything else = 400.
fn basic_credentials(
    header: Option<&HeaderValue>,
) -> Result<Option<(String, String)>, HttpRefusal> {
    let Some(header) = header else {
        return Ok(None);
    };
    let bad = || bad_request("the Authorization header is not Basic base64(user:password)".into());
    let text = header.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = text.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((user.to_string(), password.to_string())))
}

/// The TLS acceptor of the HTTPS API from PEM files: a certificate chain and its private key.
/// TLS 1.2 and 1.3 (rustls's safe defaults), no client certificates.
pub fn tls_acceptor(certificate: &Path, private_key: &Path) -> Result<TlsAcceptor, String> {
    use pki_types::pem::PemObject;
    use pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "HTTPS API certificate {}: {e} (`fasp-proxy create-config` makes a self-signed one)",
                certificate.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "HTTPS API certificate {}: no certificate in the file",
            certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|e| format!("HTTPS API private key {}: {e}", private_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("HTTPS API: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "HTTPS API: certificate {} and key {} do not make a usable pair: {e}",
                certificate.display(),
                private_key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_and_bad_ones_refused() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            basic_credentials(Some(&h("Basic YWxpY2U6czNjcjN0"))).unwrap(),
            Some(("alice".into(), "s3cr3t".into()))
        );
        // `$USER:` with an empty password, as IBM's client sends without credentials.
        assert_eq!(
            basic_credentials(Some(&h("basic Ym9iOg=="))).unwrap(),
            Some(("bob".into(), String::new()))
        );
        assert_eq!(basic_credentials(None).unwrap(), None);
        for bad in ["Bearer abc", "Basic !!!", "Basic", "Basic Ym9i"] {
            let err = basic_credentials(Some(&h(bad))).unwrap_err();
            assert_eq!(err.status(), 400, "{bad}: {err}");
        }
    }
}
