//! The Prometheus metrics of a real `fasp-proxy run` daemon in the namespace lab, scraped over
//! HTTP as Prometheus would (the daemon in the proxy namespace, `<metrics_bind_address>`
//! 127.0.0.1 there), and every scrape read by a real exposition-format parser: Python's
//! `prometheus_client` (Debian's python3-prometheus-client), in both the Prometheus text
//! format and OpenMetrics.
//!
//! Covered: sessions started and ended by reason (completed, closed by `fasp-proxy sessions
//! close`, failed), refusals by reason, live sessions, forwarded packets and bytes during a
//! transfer (equal to `fasp-proxy sessions` and to the kernel's conntrack counters while the
//! client is stopped, between them while it runs) and after it (never backwards), kernel
//! install/remove latency histograms, an internal server marked faulty; the forward proxy's API answers by status and its live forwardings; every metric
//! documented in docs/operations.md; the listener off by default, 404 for anything but
//! `GET /metrics`, and hostile clients (idle, slow, oversized, endless bodies, more connections
//! than allowed) neither hanging it nor growing the daemon.

mod lab;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::daemon::{Daemon, ASCP_SERVER, NO_PENALTIES, SSH_PORT};
use lab::{text, Sshd, Topology};

const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
/// The Debian Python, which has python3-prometheus-client (a pyenv shim may shadow it).
const PYTHON: &str = "/usr/bin/python3";
/// Where the daemon serves metrics, inside the proxy namespace.
const METRICS_PORT: u16 = 9094;
/// The forward proxy's HTTP API port (the default).
const API_PORT: u16 = 9091;
const API_USER: &str = "alice";
const API_PASS: &str = "alice-api-pass";

/// Parses a scrape with prometheus_client and prints every family as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
text = open(sys.argv[1]).read()
parse = openmetrics if sys.argv[2] == "openmetrics" else prometheus
out = {}
for family in parse(text):
    out[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(out))
"#;

/// The lab: one internal server (real sshd running our `ascp --server`), the daemon under test.
struct MetricsLab {
    topo: Topology,
    server: Sshd,
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl MetricsLab {
    fn new() -> MetricsLab {
        let topo = Topology::new(1);
        let server = lab::daemon::internal_server(&topo, 0, ASCP_SERVER);
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(&topo.proxy, dir.path());
        MetricsLab {
            topo,
            server,
            dir,
            daemon,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the configuration: one default rule to the server, no penalties (the tests
    /// provoke refusals from one address), `server_extra` in `<server>`. The proxy user's keys,
    /// the internal server's host key (strict host keys) and the client's known_hosts too.
    fn configure(&self, server_extra: &str) -> PathBuf {
        self.daemon.create_config(&[]);
        self.daemon
            .authorize("root", &self.server.client_key.with_extension("pub"));
        // The daemon trusts the internal server's host key from the start.
        lab::seed_known_hosts(&self.daemon.etc().join("known_hosts"), &[&self.server]);
        let conf = self.daemon.write_conf(&format!(
            "<CONF><server><rproxy>\n{basics}\
             <rules><rule><host>{server}:22</host><keyfile>{key}</keyfile></rule></rules>\n\
             </rproxy>\n{NO_PENALTIES}\n{server_extra}\n</server></CONF>\n",
            basics = self.daemon.rproxy_basics(1),
            server = lab::server_v4(0),
            key = self.server.client_key.display(),
        ));
        self.daemon.write_client_known_hosts(
            &self.path("proxy_known_hosts"),
            &[lab::PROXY_CLIENT_V4.to_string()],
            SSH_PORT,
        );
        conf
    }

    /// `<server>` settings that turn the metrics on at 127.0.0.1:[`METRICS_PORT`].
    fn metrics_on() -> String {
        format!(
            "<enable_metrics>true</enable_metrics>\
             <metrics_bind_address>127.0.0.1</metrics_bind_address>\
             <metrics_port>{METRICS_PORT}</metrics_port>"
        )
    }

    /// A TCP connection to the metrics port, made in the proxy namespace.
    fn connect_metrics(&self) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
        self.topo
            .proxy
            .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
    }

    /// Sends `request` to the metrics port; the answer's status, head and body.
    fn http(&self, request: &str) -> Reply {
        let mut s = self
            .connect_metrics()
            .unwrap_or_else(|e| panic!("metrics port: {e}\n{}", self.daemon.log()));
        exchange(&mut s, request.as_bytes())
            .unwrap_or_else(|| panic!("no answer to {request:?}\n{}", self.daemon.log()))
    }

    /// `GET /metrics` in `format` ("prometheus" or "openmetrics"), parsed by Python's
    /// prometheus_client.
    fn scrape_as(&self, format: &str) -> Scrape {
        let accept = match format {
            "openmetrics" => {
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            }
            _ => "text/plain",
        };
        let reply = self.http(&format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(reply.status, 200, "{reply:?}");
        let content_type = reply.header("content-type").unwrap_or_default().to_string();
        let expected = match format {
            "openmetrics" => "application/openmetrics-text",
            _ => "text/plain; version=0.0.4",
        };
        assert!(content_type.starts_with(expected), "{content_type}");
        Scrape::parse(&reply.body, format, &self.dir)
    }

    fn scrape(&self) -> Scrape {
        self.scrape_as("prometheus")
    }

    fn ascp_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args =
            lab::daemon::ascp_login(&self.server.client_key, &self.path("proxy_known_hosts"));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `fasp-proxy sessions` in the proxy namespace: the live session's (packets, bytes) and
    /// the number of live sessions it reports.
    fn sessions_table(&self) -> (Option<(u64, u64)>, String) {
        let out = self.topo.proxy.exec(&[FASP_PROXY, "sessions"]);
        let row = out
            .lines()
            .find(|l| l.contains(&format!("{}:", lab::CLIENT_V4)));
        let counters = row.and_then(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let n = fields.len();
            Some((fields[n - 2].parse().ok()?, fields[n - 1].parse().ok()?))
        });
        (counters, out)
    }

    /// The kernel's counters of the client's UDP flows (conntrack, original direction).
    fn kernel_counters(&self) -> (u64, u64) {
        let out = text(
            &self
                .topo
                .proxy
                .try_exec(&[
                    "conntrack",
                    "-L",
                    "-p",
                    "udp",
                    "--orig-src",
                    &lab::CLIENT_V4.to_string(),
                ])
                .stdout,
        );
        let field = |line: &str, key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
                .unwrap_or(0)
        };
        out.lines()
            .map(|l| (field(l, "packets="), field(l, "bytes=")))
            .fold((0, 0), |(p, b), (lp, lb)| (p + lp, b + lb))
    }

    /// The daemon's resident memory (kB) and thread count.
    fn daemon_size(&self) -> (u64, u64) {
        let pid = self.daemon.process().pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("Threads:"))
    }
}

/// An HTTP answer as read off the wire.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `request` and reads one answer (its body by Content-Length); `None` if the server
/// closed or said nothing within 10 s.
fn exchange(s: &mut TcpStream, request: &[u8]) -> Option<Reply> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut reply = Reply {
        status,
        head,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    reply.body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some(reply)
}

/// Whether the server closes `s` within `limit` (EOF or reset), reading whatever comes.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    lab::tcp_closed_by(s, Instant::now() + limit)
}

/// One sample: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A scrape as prometheus_client parsed it.
#[derive(Debug)]
struct Scrape {
    /// Family name → (type, help).
    families: BTreeMap<String, (String, String)>,
    samples: Vec<Sample>,
    text: String,
}

impl Scrape {
    /// Runs Python's parser over `body`; panics with its error if it refuses the text.
    fn parse(body: &str, format: &str, dir: &tempfile::TempDir) -> Scrape {
        let file = dir.path().join(format!("scrape.{format}"));
        std::fs::write(&file, body).unwrap();
        let out = std::process::Command::new(PYTHON)
            .args(["-c", PARSER, file.to_str().unwrap(), format])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON} ({e}); install python3-prometheus-client")
            });
        assert!(
            out.status.success(),
            "prometheus_client ({format}) refused the scrape: {}\n{body}",
            text(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut families = BTreeMap::new();
        let mut samples = Vec::new();
        for (name, family) in json.as_object().unwrap() {
            families.insert(
                name.clone(),
                (
                    family["type"].as_str().unwrap().to_string(),
                    family["help"].as_str().unwrap().to_string(),
                ),
            );
            for s in family["samples"].as_array().unwrap() {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                samples.push((
                    s[0].as_str().unwrap().to_string(),
                    labels,
                    s[2].as_f64().unwrap(),
                ));
            }
        }
        Scrape {
            families,
            samples,
            text: body.to_string(),
        }
    }

    /// The value of sample `name` with exactly `labels`; panics if there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}:\n{}", self.text))
    }

    fn try_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    fn int(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels) as u64
    }

    fn ended(&self, reason: &str) -> u64 {
        self.int("fasp_proxy_sessions_ended_total", &[("reason", reason)])
    }

    fn refused(&self, reason: &str) -> u64 {
        self.int("fasp_proxy_refused_total", &[("reason", reason)])
    }

    fn forwarded(&self) -> (u64, u64) {
        (
            self.int("fasp_proxy_forwarded_packets_total", &[]),
            self.int("fasp_proxy_forwarded_bytes_total", &[]),
        )
    }
}

/// The documented metrics: the names in the table of docs/operations.md's `## Metrics`.
fn documented_metrics() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let start = doc
        .find("\n## Metrics")
        .expect("docs/operations.md has a ## Metrics section");
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

#[test]
fn scrapes_during_and_after_a_transfer_match_the_sessions_table_and_the_kernel() {
    let mut lab = MetricsLab::new();
    let conf = lab.configure(&MetricsLab::metrics_on());
    lab.daemon.start(&conf);
    let backend = format!("{}:22", lab::server_v4(0));
    let host = [("host", backend.as_str())];

    // Before any session: every counter at zero, every documented name, both formats parse.
    let first = lab.scrape();
    assert_eq!(first.int("fasp_proxy_sessions_started_total", &[]), 0);
    assert_eq!(first.int("fasp_proxy_live_sessions", &[]), 0);
    assert_eq!(first.forwarded(), (0, 0));
    assert_eq!(first.int("fasp_proxy_backend_up", &host), 1);
    assert_eq!(first.int("fasp_proxy_backend_faulty_marks_total", &host), 0);
    let om = lab.scrape_as("openmetrics");
    assert!(om.text.ends_with("# EOF\n"));
    assert_eq!(
        first.families.keys().collect::<Vec<_>>(),
        om.families.keys().collect::<Vec<_>>(),
        "both formats carry the same families"
    );
    let doc = documented_metrics();
    for (name, (kind, help)) in &first.families {
        let shown = if kind == "counter" {
            format!("`{name}_total`")
        } else {
            format!("`{name}`")
        };
        assert!(
            doc.contains(&shown),
            "{shown} ({kind}: {help}) is not in the docs' table"
        );
        assert!(!help.is_empty(), "{name} has no help text");
    }
    for kind in ["counter", "gauge", "histogram"] {
        assert!(
            first.families.values().any(|(k, _)| k == kind),
            "no {kind} parsed: {:?}",
            first.families
        );
    }

    // A 20 MB upload at 40 Mbit/s (about 4 s).
    let src = lab.path("payload.bin");
    std::fs::write(&src, lab::content(20_000_000, 7)).unwrap();
    let dst = lab.path("server_in");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!("root@{}:{}", lab::PROXY_CLIENT_V4, dst.display());
    let args = lab.ascp_args(&["-q", "-l", "40m", src.to_str().unwrap(), &remote]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = lab.topo.client.spawn(&refs);
    let mut table = String::new();
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        let (counters, out) = lab.sessions_table();
        table = out;
        counters.is_some_and(|(_, bytes)| bytes > 1_000_000)
    });
    assert!(
        flowing,
        "no counters in `fasp-proxy sessions`:\n{table}\n{}\n{}",
        running.log(),
        lab.daemon.log()
    );

    // While it runs: the table's reading ≤ the scrape ≤ the kernel's, read in that order.
    let (listed, table) = lab.sessions_table();
    let listed = listed.expect("the session's counters");
    let during = lab.scrape();
    let kernel = lab.kernel_counters();
    assert!(table.contains("1 live session"), "{table}");
    assert_eq!(during.int("fasp_proxy_live_sessions", &[]), 1);
    assert_eq!(during.int("fasp_proxy_sessions_started_total", &[]), 1);
    let scraped = during.forwarded();
    assert!(
        listed.0 <= scraped.0 && scraped.0 <= kernel.0,
        "packets: table {listed:?}, scrape {scraped:?}, kernel {kernel:?}"
    );
    assert!(
        listed.1 <= scraped.1 && scraped.1 <= kernel.1,
        "bytes: table {listed:?}, scrape {scraped:?}, kernel {kernel:?}"
    );
    assert_eq!(
        during.int(
            "fasp_proxy_dataplane_operation_seconds_count",
            &[("operation", "install")]
        ),
        1
    );

    // The client stopped (SIGSTOP), nothing in flight: the three agree exactly.
    let pid = running.pid().to_string();
    lab.topo.client.exec(&["kill", "-STOP", &pid]);
    std::thread::sleep(Duration::from_millis(700));
    let (listed, table) = lab.sessions_table();
    let still = lab.scrape();
    let kernel = lab.kernel_counters();
    lab.topo.client.exec(&["kill", "-CONT", &pid]);
    assert_eq!(listed, Some(kernel), "table vs kernel:\n{table}");
    assert_eq!(still.forwarded(), kernel, "scrape vs kernel");
    assert!(still.forwarded() >= scraped, "went backwards");

    let status = running.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the upload failed: {}\n{}",
        running.log(),
        lab.daemon.log()
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("payload.bin")).unwrap()
    );

    // After it: ended as completed, not live, its bytes kept (read a last time at its end).
    let mut after = lab.scrape();
    lab::wait_until(Duration::from_secs(10), || {
        after = lab.scrape();
        after.int("fasp_proxy_live_sessions", &[]) == 0
    });
    assert_eq!(
        after.int("fasp_proxy_live_sessions", &[]),
        0,
        "{}",
        after.text
    );
    assert_eq!(after.ended("completed"), 1);
    let total = after.forwarded();
    assert!(total >= kernel, "after {total:?} < during {kernel:?}");
    assert!(
        total.1 >= 20_000_000 && total.1 < 40_000_000,
        "20 MB uploaded, {} bytes counted",
        total.1
    );
    for op in ["install", "remove"] {
        let labels = [("operation", op)];
        assert_eq!(
            after.int("fasp_proxy_dataplane_operation_seconds_count", &labels),
            1,
            "{op}"
        );
        let sum = after.value("fasp_proxy_dataplane_operation_seconds_sum", &labels);
        assert!(sum > 0.0 && sum < 5.0, "{op} took {sum} s");
        assert_eq!(
            after.int(
                "fasp_proxy_dataplane_operation_seconds_bucket",
                &[("operation", op), ("le", "+Inf")]
            ),
            1
        );
    }

    // A download: the client sends little, the totals still only grow.
    let back = lab.path("back.bin");
    let remote_file = format!(
        "root@{}:{}",
        lab::PROXY_CLIENT_V4,
        dst.join("payload.bin").display()
    );
    let mut args = vec!["timeout".to_string(), "60".to_string()];
    args.extend(lab.ascp_args(&["-q", "-l", "500m", &remote_file, back.to_str().unwrap()]));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    lab::ok(&lab.topo.client.try_exec(&refs));
    let mut second = lab.scrape();
    lab::wait_until(Duration::from_secs(10), || {
        second = lab.scrape();
        second.ended("completed") == 2
    });
    assert_eq!(second.ended("completed"), 2, "{}", second.text);
    let grown = second.forwarded();
    assert!(
        grown.0 > total.0 && grown.1 > total.1,
        "{grown:?} vs {total:?}"
    );

    // The administrator closes a running transfer.
    let args = lab.ascp_args(&["-q", "-l", "10m", src.to_str().unwrap(), &remote]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut closing = lab.topo.client.spawn(&refs);
    let mut id = None;
    lab::wait_until(Duration::from_secs(20), || {
        let (counters, out) = lab.sessions_table();
        id = counters.and_then(|_| {
            let row = out
                .lines()
                .find(|l| l.contains(&format!("{}:", lab::CLIENT_V4)))?;
            Some(row.split_whitespace().next()?.to_string())
        });
        id.is_some()
    });
    let id = id.unwrap_or_else(|| panic!("no live session to close:\n{}", lab.daemon.log()));
    lab.topo.proxy.exec(&[FASP_PROXY, "sessions", "close", &id]);
    let status = closing.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "a closed transfer succeeded: {}",
        closing.log()
    );
    let mut closed = lab.scrape();
    lab::wait_until(Duration::from_secs(10), || {
        closed = lab.scrape();
        closed.ended("closed_by_administrator") == 1
    });
    assert_eq!(
        closed.ended("closed_by_administrator"),
        1,
        "{}",
        closed.text
    );
    assert_eq!(closed.int("fasp_proxy_live_sessions", &[]), 0);
    let grown = closed.forwarded();

    // Refusals, each counted under its reason: a shell, a wrong key.
    let ssh = |key: &Path, command: Option<&str>| {
        let mut args: Vec<String> = vec!["timeout".into(), "30".into()];
        args.extend(lab::daemon::ssh_login(key, &lab.path("proxy_known_hosts")));
        args.push(format!("root@{}", lab::PROXY_CLIENT_V4));
        args.extend(command.map(String::from));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.topo.client.try_exec(&refs)
    };
    let shell = ssh(&lab.server.client_key, None);
    assert!(!shell.status.success(), "{}", lab::describe(&shell));
    let stranger = lab.path("stranger");
    lab::ssh_keygen(&stranger);
    let denied = ssh(&stranger, Some("ascp --server"));
    assert!(!denied.status.success(), "{}", lab::describe(&denied));
    let mut refused = lab.scrape();
    lab::wait_until(Duration::from_secs(10), || {
        refused = lab.scrape();
        refused.refused("auth_failure") == 1
    });
    assert_eq!(
        refused.refused("command_not_allowed"),
        1,
        "{}",
        refused.text
    );
    assert_eq!(refused.refused("auth_failure"), 1, "{}", refused.text);
    assert_eq!(refused.refused("allowed_clients"), 0);
    assert_eq!(
        refused.int("fasp_proxy_sessions_started_total", &[]),
        3,
        "a refused shell starts no session"
    );

    // The internal server dies: the next session fails and the server is marked faulty.
    let sshd_pid = lab.server.process.pid().to_string();
    lab.topo.servers[0].exec(&["kill", "-KILL", &sshd_pid]);
    let process = &mut lab.server.process;
    assert!(lab::wait_until(Duration::from_secs(10), || process
        .try_wait()
        .is_some()));
    let mut args = vec!["timeout".to_string(), "60".to_string()];
    args.extend(lab.ascp_args(&["-q", src.to_str().unwrap(), &remote]));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed = lab.topo.client.try_exec(&refs);
    assert!(!failed.status.success(), "{}", lab::describe(&failed));
    let mut marked = lab.scrape();
    lab::wait_until(Duration::from_secs(10), || {
        marked = lab.scrape();
        marked.ended("failed") == 1
    });
    assert_eq!(marked.ended("failed"), 1, "{}", marked.text);
    assert_eq!(
        marked.int("fasp_proxy_backend_up", &host),
        0,
        "{}",
        marked.text
    );
    assert_eq!(
        marked.int("fasp_proxy_backend_faulty_marks_total", &host),
        1
    );
    assert_eq!(marked.int("fasp_proxy_sessions_started_total", &[]), 4);
    // Every session started has ended, each under one reason.
    let ended: u64 = [
        "completed",
        "failed",
        "refused",
        "idle_timeout",
        "shutdown",
        "closed_by_administrator",
    ]
    .iter()
    .map(|r| marked.ended(r))
    .sum();
    assert_eq!(ended, 4, "{}", marked.text);
    assert!(marked.forwarded() >= grown);
    lab.daemon.stop();
}

#[test]
fn forward_proxy_api_answers_and_forwardings_are_counted() {
    let mut lab = MetricsLab::new();
    let conf = lab.configure(&format!(
        "<proxy><enabled>true</enabled><authentication>true</authentication>\
         <bind_ip_address>{inside}</bind_ip_address>\
         <port_range_low>5000</port_range_low><port_range_high>5010</port_range_high>\
         <allowed_destinations><cidr>198.51.100.0/24</cidr></allowed_destinations></proxy>\
         <enable_http>true</enable_http><http_port>{API_PORT}</http_port>{}",
        MetricsLab::metrics_on(),
        inside = lab::PROXY_CLIENT_V4,
    ));
    lab::daemon::add_node_user(&conf, API_USER, API_PASS);
    lab.daemon.start(&conf);
    assert!(
        lab::wait_until(Duration::from_secs(10), || lab
            .daemon
            .log()
            .contains("Started on port(s)")),
        "{}",
        lab.daemon.log()
    );

    let api = SocketAddr::new(lab::PROXY_CLIENT_V4.into(), API_PORT);
    let call = |request: String| -> Reply {
        let mut s = lab
            .topo
            .client
            .run_in(|| TcpStream::connect_timeout(&api, Duration::from_secs(5)))
            .unwrap();
        exchange(&mut s, request.as_bytes()).expect("an API answer")
    };
    let post = |path: &str, credentials: &str, body: &str| -> Reply {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(credentials);
        call(format!(
            "POST {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    let credentials = format!("{API_USER}:{API_PASS}");
    let open = format!(
        r#"{{"host_spec" : "IPv4", "host" : "{}", "tcp_port" : 22, "udp_port" : 33001}}"#,
        lab::server_v4(0)
    );
    let opened = post("/proxy/open", &credentials, &open);
    assert_eq!(opened.status, 200, "{opened:?}\n{}", lab.daemon.log());
    let live = lab.scrape();
    assert_eq!(
        live.int("fasp_proxy_live_forwardings", &[]),
        1,
        "{}",
        live.text
    );
    let reply: serde_json::Value = serde_json::from_str(&opened.body).unwrap();
    let id = reply["proxy_id"].as_str().unwrap().to_string();
    let closed = post(
        "/proxy/close",
        &credentials,
        &format!(r#"{{"proxy_id" : "{id}"}}"#),
    );
    assert_eq!(closed.status, 200, "{closed:?}");
    assert_eq!(
        call(format!(
            "GET /nothing HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
        ))
        .status,
        404
    );
    assert_eq!(
        call(format!(
            "GET /proxy/open HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
        ))
        .status,
        405
    );
    assert_eq!(
        post("/proxy/open", &format!("{API_USER}:wrong"), &open).status,
        401
    );

    let after = lab.scrape();
    assert_eq!(after.int("fasp_proxy_live_forwardings", &[]), 0);
    for (status, n) in [("200", 2), ("401", 1), ("404", 1), ("405", 1)] {
        assert_eq!(
            after.int("fasp_proxy_api_requests_total", &[("status", status)]),
            n,
            "status {status}:\n{}",
            after.text
        );
    }
    // Forwardings are not reverse-proxy sessions.
    assert_eq!(after.int("fasp_proxy_sessions_started_total", &[]), 0);
    lab.daemon.stop();
}

#[test]
fn the_metrics_port_is_off_by_default_and_hostile_clients_neither_hang_nor_bloat_it() {
    let mut lab = MetricsLab::new();
    // Off by default: nothing listens.
    let conf = lab.configure("");
    lab.daemon.start(&conf);
    assert!(
        lab.connect_metrics().is_err(),
        "a metrics listener without <enable_metrics>"
    );
    lab.daemon.stop();

    let conf = lab.configure(&MetricsLab::metrics_on());
    lab.daemon.start(&conf);
    assert!(
        lab.daemon.log().contains(&format!(
            "metrics served on http://127.0.0.1:{METRICS_PORT}/metrics"
        )),
        "{}",
        lab.daemon.log()
    );

    // Only GET (and HEAD) /metrics.
    for request in [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /../metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let reply = lab.http(request);
        assert_eq!(reply.status, 404, "{request:?}: {reply:?}");
        assert!(
            !reply.body.contains("fasp_proxy_"),
            "{request:?}: {reply:?}"
        );
    }
    let head = lab.http("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(head.status, 200);
    let query = lab.http("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(query.status, 200);
    assert!(
        query.body.contains("fasp_proxy_live_sessions 0"),
        "{query:?}"
    );

    let (rss_before, threads_before) = lab.daemon_size();
    let started = Instant::now();

    // More idle connections than the listener serves at once: the extra ones are closed at
    // once, the others when their request head does not come in time.
    let mut idle: Vec<TcpStream> = (0..24).map(|_| lab.connect_metrics().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut shut_at_once = 0;
    for s in idle.iter_mut() {
        shut_at_once += usize::from(closed_within(s, Duration::from_millis(200)));
    }
    assert!(
        shut_at_once >= 24 - 16,
        "{shut_at_once} of 24 closed at accept"
    );
    for s in idle.iter_mut() {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "an idle connection stayed open"
        );
    }
    // A slow client: a head trickling in, a byte a second.
    let mut slow = lab.connect_metrics().unwrap();
    let slow_start = Instant::now();
    let mut slow_closed = false;
    for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*b]).is_err() || closed_within(&mut slow, Duration::from_secs(1)) {
            slow_closed = true;
            break;
        }
    }
    let slow_took = slow_start.elapsed();
    assert!(
        slow_closed,
        "a trickling head kept its connection for {slow_took:?}"
    );
    assert!(
        slow_took > Duration::from_secs(5) && slow_took < Duration::from_secs(15),
        "a trickling head was closed after {slow_took:?}"
    );

    // An oversized head: refused without reading it all.
    let mut big = lab.connect_metrics().unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = big.write_all(huge.as_bytes());
    assert!(
        closed_within(&mut big, Duration::from_secs(5)),
        "an oversized head kept open"
    );
    // A long URI.
    let mut long = lab.connect_metrics().unwrap();
    let _ = long.write_all(format!("GET /{} HTTP/1.1\r\n\r\n", "m".repeat(64 << 10)).as_bytes());
    assert!(
        closed_within(&mut long, Duration::from_secs(5)),
        "a long URI kept open"
    );
    // A body that never ends: the scrape is answered, the body not read, the connection closed.
    let mut endless = lab.connect_metrics().unwrap();
    let reply = exchange(
        &mut endless,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    )
    .expect("an answer before the body");
    assert_eq!(reply.status, 200);
    let chunk = vec![b'z'; 64 << 10];
    let mut sent = 0usize;
    let _ = endless.set_write_timeout(Some(Duration::from_secs(2)));
    while sent < 64 << 20 {
        if endless.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    assert!(
        sent < 64 << 20,
        "the daemon read a 64 MiB body it never needed"
    );
    assert!(
        closed_within(&mut endless, Duration::from_secs(5)),
        "an endless body kept its connection"
    );
    // Not HTTP at all.
    let mut garbage = lab.connect_metrics().unwrap();
    let _ = garbage.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n',
    ]);
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)),
        "garbage kept open"
    );
    // Many requests in a row, each on its own connection, and many on one.
    for _ in 0..200 {
        let mut s = lab.connect_metrics().unwrap();
        let _ = s.write_all(
            format!(
                "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
                "q".repeat(2000),
                "p".repeat(4000)
            )
            .as_bytes(),
        );
        let _ = closed_within(&mut s, Duration::from_secs(5));
    }
    let mut kept = lab.connect_metrics().unwrap();
    let scrapes = Instant::now();
    let mut size = 0;
    for _ in 0..200 {
        let reply =
            exchange(&mut kept, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("keep-alive");
        assert_eq!(reply.status, 200);
        size = reply.body.len();
    }
    eprintln!(
        "200 scrapes on one connection: {:?} each, {size} bytes",
        scrapes.elapsed() / 200
    );
    drop(kept);

    // Still serving, no bigger than before.
    let after = lab.scrape();
    assert_eq!(after.int("fasp_proxy_live_sessions", &[]), 0);
    let (rss_after, threads_after) = lab.daemon_size();
    eprintln!(
        "metrics port under hostile clients for {:?}: RSS {rss_before} -> {rss_after} kB, threads {threads_before} -> {threads_after}",
        started.elapsed()
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} -> {rss_after} kB"
    );
    assert!(
        threads_after <= threads_before + 8,
        "threads {threads_before} -> {threads_after}"
    );
    assert!(
        lab.daemon.process_mut().try_wait().is_none(),
        "the daemon died:\n{}",
        lab.daemon.log()
    );
    lab.daemon.stop();
}
