//! Prometheus metrics (the `prometheus-client` crate; nothing of the exposition format is
//! written here by hand).
//!
//! Two halves, at two layers:
//! - [`Metrics`] (this file, beside [`crate::config`] at the bottom): what the other layers
//!   record as things happen: sessions started and ended (by [`EndReason`]), refusals (by
//!   [`RefusalReason`]), the latency of kernel entry installs and removals ([`DataplaneOp`],
//!   through [`crate::dataplane::timed`]), forward-proxy API answers by HTTP status, and the
//!   bookkeeping that turns per-session kernel counters into totals that never go backwards.
//!   It knows nothing of sessions, SSH or HTTP.
//! - [`live`] and [`http`] (beside [`crate::daemon`], at the top): what is read at each scrape
//!   (live sessions and forwardings, forwarded bytes and packets, each internal server's
//!   health), and the HTTP listener that serves `GET /metrics`.
//!
//! Every metric is named `fasp_proxy_*` and documented in `docs/operations.md` (`## Metrics`).

pub mod http;
pub mod live;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use uuid::Uuid;

/// How a session ended: the `reason` label of `fasp_proxy_sessions_ended_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The transfer ran to its end (the internal server's side ended the control channel).
    Completed,
    /// It could not be set up, the internal server refused it, or a side broke off.
    Failed,
    /// Refused by policy after it started (no rule matched, ...): see
    /// `fasp_proxy_refused_total`.
    Refused,
    /// Ended by `<session_idle_timeout>`.
    IdleTimeout,
    /// Ended because the daemon stopped.
    Shutdown,
    /// Ended by `fasp-proxy sessions close`.
    ClosedByAdministrator,
}

impl EndReason {
    /// Every reason, in the order they are listed.
    pub const ALL: [EndReason; 6] = [
        EndReason::Completed,
        EndReason::Failed,
        EndReason::Refused,
        EndReason::IdleTimeout,
        EndReason::Shutdown,
        EndReason::ClosedByAdministrator,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Failed => "failed",
            EndReason::Refused => "refused",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::ClosedByAdministrator => "closed_by_administrator",
        }
    }
}

/// Why the SSH front end or the session layer refused a connection, a login, a command or a
/// session: the `reason` label of `fasp_proxy_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The client's address is not in `<allowed_clients>` (at TCP accept).
    AllowedClients,
    /// The client's address is under a penalty (at TCP accept).
    Penalty,
    /// `<per_source><max_startups>` connections of that source are already logging in.
    SourceCap,
    /// Random early drop under `<max_startups>`.
    MaxStartups,
    /// The connection tried to log in and closed without succeeding.
    AuthFailure,
    /// A login step passed its deadline (`<banner_timeout>`, `<kex_timeout>`,
    /// `<login_grace_time>`).
    LoginTimeout,
    /// A shell, a subsystem or a command other than the transfer commands.
    CommandNotAllowed,
    /// `<max_sessions>` sessions were live.
    TooManySessions,
    /// The daemon was stopping.
    ShuttingDown,
    /// No rule matched the session.
    NoRule,
    /// The user name cannot be put into the rule's key file path.
    UserName,
    /// Another session holds the client-facing UDP port in a way this one cannot share.
    PortConflict,
}

impl RefusalReason {
    /// Every reason, in the order they are listed.
    pub const ALL: [RefusalReason; 12] = [
        RefusalReason::AllowedClients,
        RefusalReason::Penalty,
        RefusalReason::SourceCap,
        RefusalReason::MaxStartups,
        RefusalReason::AuthFailure,
        RefusalReason::LoginTimeout,
        RefusalReason::CommandNotAllowed,
        RefusalReason::TooManySessions,
        RefusalReason::ShuttingDown,
        RefusalReason::NoRule,
        RefusalReason::UserName,
        RefusalReason::PortConflict,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::AllowedClients => "allowed_clients",
            RefusalReason::Penalty => "penalty",
            RefusalReason::SourceCap => "source_cap",
            RefusalReason::MaxStartups => "max_startups",
            RefusalReason::AuthFailure => "auth_failure",
            RefusalReason::LoginTimeout => "login_timeout",
            RefusalReason::CommandNotAllowed => "command_not_allowed",
            RefusalReason::TooManySessions => "too_many_sessions",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::NoRule => "no_rule",
            RefusalReason::UserName => "user_name",
            RefusalReason::PortConflict => "port_conflict",
        }
    }
}

/// A kernel data plane call whose latency is measured: the `operation` label of
/// `fasp_proxy_dataplane_operation_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataplaneOp {
    /// [`crate::dataplane::Forwarder::install`].
    Install,
    /// [`crate::dataplane::Forwarder::remove`].
    Remove,
}

impl DataplaneOp {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DataplaneOp::Install => "install",
            DataplaneOp::Remove => "remove",
        }
    }
}

/// Which text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`), ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a scrape in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format a scraper asked for in its `Accept` header: OpenMetrics when it names it
    /// (Prometheus itself does), else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

/// A label set of one fixed label.
type OneLabel = [(&'static str, &'static str); 1];
/// The label set of an API answer: its status code.
type StatusLabel = [(&'static str, u16); 1];

/// Upper bounds of the latency buckets of kernel entry installs and removals: 100 µs
/// doubling up to about 3.3 s (an nftables element takes well under a millisecond, an
/// `iptables-restore` batch some milliseconds).
fn dataplane_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// What the daemon records as things happen, and the registry they are encoded from.
/// Shared (`Arc<Metrics>`) by every layer that records; recording is a few atomic operations.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_started: Counter,
    sessions_ended: Family<OneLabel, Counter>,
    refused: Family<OneLabel, Counter>,
    dataplane: Family<OneLabel, Histogram, fn() -> Histogram>,
    api_requests: Family<StatusLabel, Counter>,
    forwarded: Mutex<Forwarded>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every recorded metric at zero (each fixed label value present, so rates start at once).
    pub fn new() -> Metrics {
        let sessions_started = Counter::default();
        let sessions_ended = Family::<OneLabel, Counter>::default();
        for reason in EndReason::ALL {
            drop(sessions_ended.get_or_create(&[("reason", reason.label())]));
        }
        let refused = Family::<OneLabel, Counter>::default();
        for reason in RefusalReason::ALL {
            drop(refused.get_or_create(&[("reason", reason.label())]));
        }
        let dataplane: Family<OneLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(dataplane_buckets);
        for op in [DataplaneOp::Install, DataplaneOp::Remove] {
            drop(dataplane.get_or_create(&[("operation", op.label())]));
        }
        let api_requests = Family::<StatusLabel, Counter>::default();

        let mut registry = Registry::default();
        registry.register(
            "fasp_proxy_sessions_started",
            "Reverse-proxy sessions started (a transfer command accepted by the SSH front end or handed over by aspshell)",
            sessions_started.clone(),
        );
        registry.register(
            "fasp_proxy_sessions_ended",
            "Reverse-proxy sessions ended, by reason",
            sessions_ended.clone(),
        );
        registry.register(
            "fasp_proxy_refused",
            "Connections, logins, commands and sessions refused by the SSH front end or the session layer, by reason",
            refused.clone(),
        );
        registry.register_with_unit(
            "fasp_proxy_dataplane_operation",
            "Time the kernel took to install or remove one session's forwarding entries",
            Unit::Seconds,
            dataplane.clone(),
        );
        registry.register(
            "fasp_proxy_api_requests",
            "Forward-proxy API requests answered, by HTTP status",
            api_requests.clone(),
        );
        Metrics {
            registry,
            sessions_started,
            sessions_ended,
            refused,
            dataplane,
            api_requests,
            forwarded: Mutex::new(Forwarded::default()),
        }
    }

    /// A reverse-proxy session started.
    pub fn session_started(&self) {
        self.sessions_started.inc();
    }

    /// Session `id` ended for `reason`, its kernel counters last read as `last` (packets,
    /// bytes), if ever. Called once the session is out of the registry, so no later scrape
    /// counts it as live.
    pub fn session_ended(&self, id: Uuid, reason: EndReason, last: Option<(u64, u64)>) {
        self.sessions_ended
            .get_or_create(&[("reason", reason.label())])
            .inc();
        let mut forwarded = self.forwarded();
        if let Some(reading) = last {
            forwarded.add(id, reading);
        }
        forwarded.seen.remove(&id);
    }

    /// Something was refused for `reason`.
    pub fn refused(&self, reason: RefusalReason) {
        self.refused
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    /// A kernel data plane call took `took`.
    pub fn dataplane_latency(&self, op: DataplaneOp, took: Duration) {
        self.dataplane
            .get_or_create(&[("operation", op.label())])
            .observe(took.as_secs_f64());
    }

    /// The forward-proxy API answered a request with `status`.
    pub fn api_request(&self, status: u16) {
        self.api_requests.get_or_create(&[("status", status)]).inc();
    }

    /// Packets and bytes forwarded so far, over every session, ended or live: `live` is called
    /// under this bookkeeping's lock and gives each live session's last kernel reading. A
    /// session's reading adds what it grew by since the one before (all of it when it shrank:
    /// its flow was created anew), so the totals never go backwards.
    pub fn forwarded_totals(&self, live: impl FnOnce() -> Vec<(Uuid, (u64, u64))>) -> (u64, u64) {
        let mut forwarded = self.forwarded();
        for (id, reading) in live() {
            forwarded.add(id, reading);
        }
        (forwarded.packets, forwarded.bytes)
    }

    fn forwarded(&self) -> std::sync::MutexGuard<'_, Forwarded> {
        self.forwarded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metrics recorded here and those of `live` (read at this scrape), in `format`.
    pub fn encode(&self, live: impl Collector, format: Format) -> Result<String, std::fmt::Error> {
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(live));
        let mut out = String::with_capacity(8192);
        match format {
            Format::Prometheus => {
                prometheus_text::encode(&mut out, &self.registry)?;
                prometheus_text::encode(&mut out, &scraped)?;
            }
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.registry)?;
                text::encode_registry(&mut out, &scraped)?;
                text::encode_eof(&mut out)?;
            }
        }
        Ok(out)
    }
}

/// The forwarded totals' bookkeeping: the last reading of each session seen live.
#[derive(Debug, Default)]
struct Forwarded {
    seen: HashMap<Uuid, (u64, u64)>,
    packets: u64,
    bytes: u64,
}

impl Forwarded {
    /// Adds what session `id`'s counters grew by since its last reading.
    fn add(&mut self, id: Uuid, (packets, bytes): (u64, u64)) {
        let (p0, b0) = self.seen.insert(id, (packets, bytes)).unwrap_or((0, 0));
        let (dp, db) = if packets >= p0 && bytes >= b0 {
            (packets - p0, bytes - b0)
        } else {
            (packets, bytes)
        };
        self.packets = self.packets.saturating_add(dp);
        self.bytes = self.bytes.saturating_add(db);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::DescriptorEncoder;

    /// No live part.
    #[derive(Debug)]
    struct Nothing;

    impl Collector for Nothing {
        fn encode(&self, _: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            Ok(())
        }
    }

    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_fixed_label_is_there_from_the_start_and_counts() {
        let m = Metrics::new();
        let text = m.encode(Nothing, Format::Prometheus).unwrap();
        for reason in EndReason::ALL {
            let series = format!(
                "fasp_proxy_sessions_ended_total{{reason=\"{}\"}}",
                reason.label()
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        }
        for reason in RefusalReason::ALL {
            let series = format!("fasp_proxy_refused_total{{reason=\"{}\"}}", reason.label());
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        }
        assert!(
            text.contains("# TYPE fasp_proxy_sessions_started_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE fasp_proxy_dataplane_operation_seconds histogram"));

        m.session_started();
        m.session_started();
        m.session_ended(Uuid::new_v4(), EndReason::Completed, None);
        m.refused(RefusalReason::NoRule);
        m.api_request(200);
        m.api_request(200);
        m.api_request(401);
        m.dataplane_latency(DataplaneOp::Install, Duration::from_micros(300));
        m.dataplane_latency(DataplaneOp::Remove, Duration::from_secs(10));
        let text = m.encode(Nothing, Format::Prometheus).unwrap();
        assert_eq!(
            sample(&text, "fasp_proxy_sessions_started_total"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "fasp_proxy_sessions_ended_total{reason=\"completed\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "fasp_proxy_refused_total{reason=\"no_rule\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "fasp_proxy_api_requests_total{status=\"200\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "fasp_proxy_api_requests_total{status=\"401\"}"),
            Some(1.0)
        );
        // 300 µs: not in the 200 µs bucket, in the 400 µs one; 10 s only in +Inf.
        let bucket = |op: &str, le: &str| {
            sample(
                &text,
                &format!("fasp_proxy_dataplane_operation_seconds_bucket{{le=\"{le}\",operation=\"{op}\"}}"),
            )
            .or_else(|| {
                sample(
                    &text,
                    &format!("fasp_proxy_dataplane_operation_seconds_bucket{{operation=\"{op}\",le=\"{le}\"}}"),
                )
            })
        };
        assert_eq!(bucket("install", "0.0002"), Some(0.0), "{text}");
        assert_eq!(bucket("install", "0.0004"), Some(1.0), "{text}");
        assert_eq!(bucket("remove", "3.2768"), Some(0.0), "{text}");
        assert_eq!(bucket("remove", "+Inf"), Some(1.0), "{text}");
    }

    #[test]
    fn openmetrics_is_offered_to_who_asks_and_ends_in_eof() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        let m = Metrics::new();
        let om = m.encode(Nothing, Format::OpenMetrics).unwrap();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# UNIT fasp_proxy_dataplane_operation_seconds seconds"));
        let text = m.encode(Nothing, Format::Prometheus).unwrap();
        assert!(!text.contains("# EOF"));
        assert!(Format::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn forwarded_totals_never_go_backwards() {
        let m = Metrics::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(m.forwarded_totals(Vec::new), (0, 0));
        assert_eq!(m.forwarded_totals(|| vec![(a, (10, 1000))]), (10, 1000));
        // The same reading again adds nothing; growth adds the growth.
        assert_eq!(m.forwarded_totals(|| vec![(a, (10, 1000))]), (10, 1000));
        assert_eq!(
            m.forwarded_totals(|| vec![(a, (15, 1500)), (b, (1, 100))]),
            (16, 1600)
        );
        // a's flow was created anew: its counters restart; what it counted before stays.
        assert_eq!(
            m.forwarded_totals(|| vec![(a, (2, 200)), (b, (1, 100))]),
            (18, 1800)
        );
        // a ends with a last reading; it is no longer live, its bytes stay in the total.
        m.session_ended(a, EndReason::Completed, Some((5, 500)));
        assert_eq!(m.forwarded_totals(|| vec![(b, (1, 100))]), (21, 2100));
        // b ends with no newer reading; a later snapshot cannot count it again.
        m.session_ended(b, EndReason::Shutdown, None);
        assert_eq!(m.forwarded_totals(Vec::new), (21, 2100));
        assert!(
            m.forwarded().seen.is_empty(),
            "ended sessions are forgotten"
        );
    }
}
