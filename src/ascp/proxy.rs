//! `ascp --proxy dnat[s]://[user[:password]@]host[:port]`: the client side of a forward proxy's
//! node API, as IBM's ascp speaks it (so it works with IBM's proxy and with fasp-proxy's). One
//! fresh HTTP/1.1 connection per call (TLS for `dnats://`): `POST /proxy/open` before SSH,
//! `/proxy/keepalive` every `proxy_keepalive` seconds, `/proxy/close` at the end.
//!
//! Through a forwarding, the SSH session goes to `proxy_addr:proxy_tcp_port` and the UDP data to
//! `proxy_addr:proxy_udp_port` (the client never contacts the server itself); host keys are
//! still checked against the server's name.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::forward::wire::{IdRequest, OpenReply, OpenRequest, MAX_BODY, SPEC_IPV4};

/// Time limit for one API call (connect, TLS, request, reply).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Default API port of `dnat://`.
pub const HTTP_PORT: u16 = 9091;
/// Default API port of `dnats://`.
pub const HTTPS_PORT: u16 = 9092;

/// A parsed `--proxy` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// `dnats://`: TLS.
    pub secure: bool,
    /// The proxy's host name or address.
    pub host: String,
    /// The API port.
    pub port: u16,
    /// The node-API user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for ProxyUrl {
    /// The URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.secure { "dnats" } else { "dnat" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{}@{host}:{}", self.user, self.port)
    }
}

impl ProxyUrl {
    /// Parses `dnat[s]://[user[:password]@]host[:port]`. A URL without a password takes
    /// `password_env` (`ASPERA_PROXY_PASS`); without a user, `local_user` with an empty password
    /// (as IBM's client does).
    pub fn parse(
        url: &str,
        local_user: &str,
        password_env: Option<String>,
    ) -> Result<ProxyUrl, String> {
        let bad = |why: &str| {
            format!("--proxy {url:?}: {why}; expected dnat[s]://[user[:password]@]host[:port]")
        };
        let (secure, rest) = if let Some(r) = url.strip_prefix("dnats://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("dnat://") {
            (false, r)
        } else {
            return Err(bad("the scheme must be dnat:// or dnats://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("a proxy URL has no path"));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("no host"));
        }
        let port = match port {
            None => {
                if secure {
                    HTTPS_PORT
                } else {
                    HTTP_PORT
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be 1-65535"))?,
        };
        let (user, password) = match credentials {
            None => (local_user.to_string(), password_env.unwrap_or_default()),
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (percent_decode(u), percent_decode(p)),
                None => (percent_decode(c), password_env.unwrap_or_default()),
            },
        };
        Ok(ProxyUrl {
            secure,
            host: host.to_string(),
            port,
            user,
            password,
        })
    }
}

/// `%XX` escapes in the user and password of a URL (`@`, `:` and `%` itself).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A forwarding the proxy opened for this transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The `proxy_id`.
    pub id: u64,
    /// Where the SSH session goes.
    pub tcp: SocketAddr,
    /// Where the UDP data goes.
    pub udp: SocketAddr,
    /// The server's address as the proxy resolved it.
    pub server: IpAddr,
    /// Seconds between keepalives.
    pub keepalive: Duration,
}

/// Talks to one forward proxy's API.
#[derive(Clone)]
pub struct ProxyClient {
    url: ProxyUrl,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl ProxyClient {
    /// A client for `url`; for `dnats://`, the proxy's certificate is checked against
    /// `trust` (a PEM file of the proxy's certificate or its CA) when given, else, as IBM's
    /// client does, only for the URL's host name or address (self-signed certificates pass).
    pub fn new(url: ProxyUrl, trust: Option<&Path>) -> Result<ProxyClient, String> {
        let tls = if url.secure {
            Some(connector(trust)?)
        } else {
            None
        };
        Ok(ProxyClient { url, tls })
    }

    /// The proxy URL (without its password).
    pub fn url(&self) -> &ProxyUrl {
        &self.url
    }

    /// One call: a fresh connection, `POST path` with `body`; returns (status, reply body).
    async fn call(&self, path: &str, body: String) -> Result<(u16, String), String> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(path, body))
            .await
            .map_err(|_| {
                format!(
                    "proxy {}: no answer to {path} within {} s",
                    self.url,
                    CALL_TIMEOUT.as_secs()
                )
            })?
    }

    async fn call_inner(&self, path: &str, body: String) -> Result<(u16, String), String> {
        let url = &self.url;
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("proxy {url}: {what}: {e}");
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| fail("cannot connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", url.user, url.password));
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, format!("{}:{}", url.host, url.port))
            .header(AUTHORIZATION, format!("Basic {credentials}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail("building the request", &e))?;
        let response = match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some(tls) => {
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|e| fail("not a TLS server name", &e))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| fail("TLS", &e))?;
                send(TokioIo::new(stream), request).await
            }
        }
        .map_err(|e| fail(path, &e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail("reading the reply", &e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `POST /proxy/open` for the server `host` (as typed) and its ports.
    pub async fn open(&self, host: &str, tcp_port: u16, udp_port: u16) -> Result<Opened, String> {
        let body = OpenRequest {
            host_spec: SPEC_IPV4.into(),
            host: host.to_string(),
            tcp_port,
            udp_port,
        }
        .to_body()
        .map_err(|e| format!("{host}: {e}"))?;
        let (status, reply) = self.call("/proxy/open", body).await?;
        if status != 200 {
            let why = serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| reply.trim().to_string());
            return Err(format!(
                "request rejected by proxy {} (HTTP {status}): {why}",
                self.url
            ));
        }
        let bad = |e: &dyn std::fmt::Display| format!("proxy {}: bad open reply: {e}", self.url);
        let reply = OpenReply::parse(reply.as_bytes()).map_err(|e| bad(&e))?;
        let id = reply.proxy_id().map_err(|e| bad(&e))?;
        let server = IpAddr::V4(reply.server_addr().map_err(|e| bad(&e))?);
        let proxy_ip = match reply.proxy_addr().map_err(|e| bad(&e))? {
            Some(a) => IpAddr::V4(a),
            None => resolve(&self.url.host, self.url.port).await?,
        };
        Ok(Opened {
            id,
            tcp: SocketAddr::new(proxy_ip, reply.proxy_tcp_port),
            udp: SocketAddr::new(proxy_ip, reply.proxy_udp_port),
            server,
            keepalive: Duration::from_secs(reply.keepalive_secs()),
        })
    }

    /// `POST /proxy/keepalive`; the reply is not needed (IBM's client ignores it too).
    pub async fn keepalive(&self, id: u64) -> Result<(), String> {
        let (status, reply) = self
            .call("/proxy/keepalive", IdRequest { proxy_id: id }.to_body())
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!(
                "proxy {}: keepalive of forwarding {id}: HTTP {status} {}",
                self.url,
                reply.trim()
            ))
        }
    }

    /// `POST /proxy/close`.
    pub async fn close(&self, id: u64) -> Result<(), String> {
        let (status, reply) = self
            .call("/proxy/close", IdRequest { proxy_id: id }.to_body())
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!(
                "proxy {}: closing forwarding {id}: HTTP {status} {}",
                self.url,
                reply.trim()
            ))
        }
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // The connection task ends once the reply is read (one call per connection).
    drop(tokio::spawn(conn));
    sender.send_request(request).await
}

async fn resolve(host: &str, port: u16) -> Result<IpAddr, String> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("proxy {host}: cannot resolve: {e}"))?
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| format!("proxy {host}: no IPv4 address"))
}

fn connector(trust: Option<&Path>) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match trust {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("--proxy-ca {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("--proxy-ca {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameOnly { provider }))
            .with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// IBM's client's check: the certificate must name the URL's host (IP SAN or DNS name) and the
/// handshake must be signed by its key; the chain and dates are not checked, so the proxy's
/// self-signed certificate passes. `--proxy-ca` checks the chain too.
#[derive(Debug)]
struct NameOnly {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for NameOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&cert, server_name)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, env: Option<&str>) -> Result<ProxyUrl, String> {
        ProxyUrl::parse(url, "localuser", env.map(str::to_string))
    }

    #[test]
    fn urls_as_ibm_ascp_takes_them() {
        let u = parse("dnat://alice:s3cr%40t@proxy.example:9191", None).unwrap();
        assert_eq!(
            (
                u.secure,
                u.host.as_str(),
                u.port,
                u.user.as_str(),
                u.password.as_str()
            ),
            (false, "proxy.example", 9191, "alice", "s3cr@t")
        );
        assert_eq!(u.to_string(), "dnat://alice@proxy.example:9191");
        let u = parse("dnats://bob@192.0.2.1", Some("from env")).unwrap();
        assert_eq!(
            (u.secure, u.port, u.password.as_str()),
            (true, 9092, "from env")
        );
        let u = parse("dnat://192.0.2.1", None).unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.port),
            ("localuser", "", 9091)
        );
        let u = parse("dnat://[2001:db8::1]:1234/", None).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 1234));
        for bad in [
            "http://proxy",
            "dnat://",
            "dnat://proxy:0",
            "dnat://proxy:99999",
            "dnat://proxy/path",
            "dnat://user@",
        ] {
            assert!(parse(bad, None).is_err(), "{bad}");
        }
    }
}
