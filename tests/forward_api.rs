//! The forward proxy's API in-process, without root: `daemon::serve` with only the forward
//! proxy on, its HTTP (and HTTPS) listeners on loopback, the in-memory data plane, and clients
//! that write their requests byte for byte (as IBM's ascp 3.9 does, and as attackers do).
//!
//! What each test shows is the status and body a client gets, and what the daemon did to the
//! kernel (the entries the in-memory forwarder holds).

mod api_client;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api_client::{ibm_request, read_response, send_from};
use fasp_proxy::daemon::{self, ApiSetup, DaemonError, Setup};
use fasp_proxy::dataplane::memory::{MemoryForwarder, MemoryHandle};
use fasp_proxy::forward::api::{tls_acceptor, ApiLimits};
use fasp_proxy::forward::users::{users_path, NodeUsers};
use fasp_proxy::policy::penalties::{
    self, OffenceKind, Penalties, PenaltySettings, SharedPenalties,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

/// IBM ascp 3.9's open body for `ascp --proxy dnat://… -P 22 -O 33001 … 203.0.113.23:/`.
const IBM_OPEN: &str =
    r#"{"host_spec" : "IPv4", "host" : "203.0.113.23", "tcp_port" : 22, "udp_port" : 33001}"#;

struct Options {
    authentication: bool,
    range: (u16, u16),
    https: bool,
    max_per_source: usize,
    penalty_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            authentication: true,
            range: (5000, 5002),
            https: false,
            max_per_source: 0,
            penalty_max: Duration::from_millis(100),
        }
    }
}

struct Daemon {
    http: SocketAddr,
    https: Option<SocketAddr>,
    kernel: MemoryHandle,
    penalties: SharedPenalties,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DaemonError>>,
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
}

fn config_text(dir: &Path, o: &Options) -> String {
    format!(
        r#"<CONF version="2"><server>
  <proxy><enabled>true</enabled><authentication>{auth}</authentication>
    <bind_ip_address>127.0.0.1</bind_ip_address>
    <port_range_low>{low}</port_range_low><port_range_high>{high}</port_range_high>
    <allowed_destinations><cidr>203.0.113.0/24</cidr></allowed_destinations>
    <denied_destinations><cidr>203.0.113.128/25</cidr></denied_destinations>
    <session_timeout>5</session_timeout>
  </proxy>
  <enable_http>true</enable_http><enable_https>{https}</enable_https>
  <https_certificate>{dir}/api_cert.pem</https_certificate>
  <https_private_key>{dir}/api_key.pem</https_private_key>
</server></CONF>"#,
        auth = o.authentication,
        low = o.range.0,
        high = o.range.1,
        https = o.https,
        dir = dir.display()
    )
}

impl Daemon {
    async fn start(o: Options) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("aspera.conf");
        std::fs::write(&conf, config_text(dir.path(), &o)).unwrap();
        let config = fasp_proxy::config::load(&conf)
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let mut users = NodeUsers::default();
        users.set("alice", "alice's password").unwrap();
        users.save(&users_path(&conf)).unwrap();
        let (cert, key) =
            fasp_proxy::config::create::create_certificate(dir.path(), &["127.0.0.1".to_string()])
                .unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let (https, https_addr) = if o.https {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (Some((l, tls_acceptor(&cert, &key).unwrap())), Some(a))
        } else {
            (None, None)
        };
        let forwarder = MemoryForwarder::new();
        let kernel = forwarder.handle();
        let penalties = Penalties::shared(PenaltySettings {
            auth_failure: Duration::from_millis(20),
            source_cap: Duration::from_millis(20),
            max: o.penalty_max,
            ..PenaltySettings::default()
        });
        let setup = Setup {
            config: Arc::new(config),
            forwarder: Box::new(forwarder),
            ssh_listener: None,
            api: Some(ApiSetup {
                http: Some(http),
                https,
                users_path: users_path(&conf),
                limits: ApiLimits {
                    max_connections: 8,
                    header_timeout: Duration::from_millis(500),
                    connection_timeout: Duration::from_secs(3),
                    max_per_source: o.max_per_source,
                },
            }),
            control_listener: None,
            metrics_listener: None,
            handoff_listener: None,
            backend_known_hosts: dir.path().join("known_hosts"),
            penalties: Arc::clone(&penalties),
            reload: None,
        };
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::serve(setup, async {
            let _ = rx.await;
        }));
        Daemon {
            http: http_addr,
            https: https_addr,
            kernel,
            penalties,
            shutdown: Some(shutdown),
            task,
            _dir: dir,
            cert,
        }
    }

    async fn stop(&mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap()
    }

    fn entries(&self) -> usize {
        self.kernel.installed().len()
    }
}

async fn call(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
        .await
        .expect("an answer within 5 s")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn ibm_open_keepalive_close_program_and_remove_one_tcp_and_udp_forwarding() {
    let mut d = Daemon::start(Options::default()).await;
    let creds = "alice:alice's password";
    let (status, body) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    assert_eq!(reply["proxy_id"], "1");
    assert_eq!(reply["proxy_spec"], "IPv4");
    assert_eq!(reply["server_addr"], "203.0.113.23");
    assert_eq!(reply["proxy_addr"], "127.0.0.1");
    assert_eq!(reply["proxy_tcp_port"], 5000);
    assert_eq!(reply["proxy_udp_port"], 5000);
    assert_eq!(reply["proxy_keepalive"], 5);
    let entries = d.kernel.installed();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.client, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(e.client_port, None);
    assert_eq!(e.proxy_port, 5000);
    assert_eq!(e.backend, "203.0.113.23:33001".parse().unwrap());
    assert_eq!(e.tcp_backend, Some("203.0.113.23:22".parse().unwrap()));
    assert_eq!(e.snat, None);

    let id = r#"{"proxy_id" : "1"}"#;
    let (status, body) = call(d.http, &ibm_request("/proxy/keepalive", creds, id))
        .await
        .unwrap();
    assert_eq!((status, json(&body)["proxy_id"].as_str()), (200, Some("1")));
    let (status, body) = call(d.http, &ibm_request("/proxy/close", creds, id))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["proxy_id"], "1");
    assert_eq!(d.entries(), 0);
    // Closed twice: unknown.
    let (status, _) = call(d.http, &ibm_request("/proxy/close", creds, id))
        .await
        .unwrap();
    assert_eq!(status, 404);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_and_install_nothing() {
    let mut d = Daemon::start(Options::default()).await;
    for creds in ["alice:wrong", "mallory:alice's password", "alice:", ":"] {
        let (status, body) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
            .await
            .unwrap();
        assert_eq!(status, 401, "{creds}: {body}");
    }
    let no_auth = format!(
        "POST /proxy/open HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{IBM_OPEN}",
        IBM_OPEN.len()
    );
    let (status, _) = call(d.http, no_auth.as_bytes()).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(d.entries(), 0);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn failed_logins_put_the_address_under_a_penalty_and_other_addresses_go_on() {
    let mut d = Daemon::start(Options::default()).await;
    // Eight wrong passwords at once from 127.0.0.1: at most two are verified (two verifications
    // run at once) and answered 401 after the penalty; the others are refused at once (429).
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let request = ibm_request("/proxy/open", &format!("alice:wrong{i}"), IBM_OPEN);
            tokio::spawn(async move { send_from(None, d.http, &request).await })
        })
        .collect();
    let mut replies = Vec::new();
    for a in attempts {
        replies.push(a.await.unwrap().expect("an answer"));
    }
    let unauthorized = replies.iter().filter(|r| r.status == 401).count();
    let penalised: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert!((1..=2).contains(&unauthorized), "{replies:?}");
    assert_eq!(unauthorized + penalised.len(), 8, "{replies:?}");
    for r in &penalised {
        assert!(
            r.body.contains("too many failed logins from 127.0.0.1"),
            "{}",
            r.body
        );
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{}", r.head);
    }
    // Another address is not affected.
    let creds = "alice:alice's password";
    let other = "127.0.0.2".parse().ok();
    let r = send_from(other, d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // After its penalty (at most 100 ms here) the first address logs in again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.entries(), 2);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn one_source_s_connections_are_capped_and_the_ssh_front_end_s_penalties_hold_here_too() {
    let mut d = Daemon::start(Options {
        max_per_source: 2,
        penalty_max: Duration::from_secs(10),
        ..Options::default()
    })
    .await;
    // Two stalled connections from 127.0.0.1 take its share; a third is closed at accept.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(d.http).await.unwrap();
        s.write_all(b"POST /proxy/open HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let creds = "alice:alice's password";
    let third = send_from(None, d.http, &ibm_request("/proxy/open", creds, IBM_OPEN)).await;
    assert!(third.is_none(), "{third:?}");
    // Another source is served meanwhile.
    let other = "127.0.0.2".parse().ok();
    let r = send_from(other, d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // One penalty table for the daemon: a source the SSH front end penalised (here: it closed
    // a connection without logging in) gets 429 from the API too.
    let ssh_offender: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    penalties::lock(&d.penalties).offence(
        ssh_offender,
        OffenceKind::NoAuth,
        tokio::time::Instant::now(),
    );
    let r = send_from(
        Some(ssh_offender),
        d.http,
        &ibm_request("/proxy/open", creds, IBM_OPEN),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429, "{}", r.body);
    drop(stalled);
    assert_eq!(d.entries(), 1);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn without_authentication_any_user_name_is_accepted() {
    let mut d = Daemon::start(Options {
        authentication: false,
        ..Options::default()
    })
    .await;
    let (status, body) = call(d.http, &ibm_request("/proxy/open", "someone:", IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.entries(), 1);
    d.stop().await.unwrap();
    assert_eq!(d.entries(), 0, "shutdown removes every forwarding");
}

#[tokio::test]
async fn a_range_of_three_ports_refuses_the_fourth_open_with_503() {
    let mut d = Daemon::start(Options {
        range: (6000, 6002),
        ..Options::default()
    })
    .await;
    let creds = "alice:alice's password";
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (status, body) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        ports.push(json(&body)["proxy_tcp_port"].as_u64().unwrap());
    }
    assert_eq!(ports, [6000, 6001, 6002]);
    let (status, body) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("6000-6002"), "{body}");
    assert_eq!(d.entries(), 3);
    d.stop().await.unwrap();
    assert_eq!(d.entries(), 0);
}

#[tokio::test]
async fn destinations_outside_the_allow_list_or_denied_get_403() {
    let mut d = Daemon::start(Options::default()).await;
    let creds = "alice:alice's password";
    for (host, why) in [
        ("198.51.100.7", "not in <allowed_destinations>"),
        (
            "203.0.113.200",
            "denied by <denied_destinations> 203.0.113.128/25",
        ),
        ("127.0.0.1", "loopback"),
    ] {
        let body = IBM_OPEN.replace("203.0.113.23", host);
        let (status, reply) = call(d.http, &ibm_request("/proxy/open", creds, &body))
            .await
            .unwrap();
        assert_eq!(status, 403, "{host}: {reply}");
        assert!(reply.contains(why), "{host}: {reply}");
    }
    assert_eq!(d.entries(), 0);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_requests_get_a_clear_status_and_change_nothing() {
    let mut d = Daemon::start(Options::default()).await;
    let creds = "alice:alice's password";
    // The host copied unescaped, as IBM's client does with `srv"x\y`.
    let unescaped = IBM_OPEN.replace("203.0.113.23", "srv\"x\\y");
    let too_long = "x".repeat(5000);
    for (what, request, want) in [
        (
            "unescaped host",
            ibm_request("/proxy/open", creds, &unescaped),
            400,
        ),
        ("bad JSON", ibm_request("/proxy/open", creds, "{nope"), 400),
        (
            "IPv6 host_spec",
            ibm_request("/proxy/open", creds, &IBM_OPEN.replace("IPv4", "IPv6")),
            400,
        ),
        (
            "over-long body",
            ibm_request("/proxy/open", creds, &too_long),
            413,
        ),
        (
            "wrong method",
            b"GET /proxy/open HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            405,
        ),
        (
            "unknown call",
            ibm_request("/proxy/update", creds, "{}"),
            404,
        ),
        (
            "bad Authorization",
            b"POST /proxy/open HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %%%\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "declared huge body",
            b"POST /proxy/open HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
            413,
        ),
    ] {
        let (status, body) = call(d.http, &request)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(status, want, "{what}: {body}");
        assert!(body.contains("error"), "{what}: {body}");
    }
    // A chunked body that never stops is cut at the limit.
    let mut s = TcpStream::connect(d.http).await.unwrap();
    s.write_all(b"POST /proxy/open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("1000\r\n{}\r\n", "y".repeat(4096));
    let mut status = None;
    for _ in 0..4 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    if let Ok(Some((st, _))) =
        tokio::time::timeout(Duration::from_secs(5), read_response(&mut s)).await
    {
        status = Some(st);
    }
    assert_eq!(status, Some(413));
    // Headers over hyper's buffer: refused, not buffered without end.
    let mut s = TcpStream::connect(d.http).await.unwrap();
    let mut big = b"POST /proxy/open HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        big.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "z".repeat(20)).as_bytes());
    }
    let _ = s.write_all(&big).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
        .await
        .expect("closed or answered within 5 s");
    assert!(
        answer.is_none()
            || answer
                .as_ref()
                .is_some_and(|(st, _)| *st == 431 || *st == 400),
        "{answer:?}"
    );
    assert_eq!(d.entries(), 0);
    // Still serving.
    let (status, _) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(status, 200);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_and_do_not_block_others() {
    let mut d = Daemon::start(Options::default()).await;
    // Eight connections (the cap) that send half a request head and stall.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(d.http).await.unwrap();
        s.write_all(b"POST /proxy/open HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    // Each is closed by the header deadline (500 ms here), well within 5 s.
    for mut s in stalled {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled connection was kept open");
    }
    let creds = "alice:alice's password";
    let (status, _) = call(d.http, &ibm_request("/proxy/open", creds, IBM_OPEN))
        .await
        .unwrap();
    assert_eq!(status, 200, "served again once the stalled ones are gone");
    d.stop().await.unwrap();
}

#[derive(Debug)]
struct AnyServerCert;

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn https_serves_the_same_api_with_the_create_config_certificate() {
    let mut d = Daemon::start(Options {
        https: true,
        ..Options::default()
    })
    .await;
    // The certificate names 127.0.0.1 as an IP SAN (what IBM's client checks).
    let pem = std::fs::read_to_string(&d.cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(d.https.unwrap()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&ibm_request(
        "/proxy/open",
        "alice:alice's password",
        IBM_OPEN,
    ))
    .await
    .unwrap();
    let (status, body) = read_response(&mut tls).await.unwrap();
    assert_eq!(status, 200, "{body} (TLS 1.2, as IBM's client)");
    assert_eq!(d.entries(), 1);
    // A TLS client that never finishes its handshake is dropped by the deadline.
    let mut idle = TcpStream::connect(d.https.unwrap()).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    d.stop().await.unwrap();
    assert_eq!(d.entries(), 0);
}
