//! What a scrape reads at the moment it is made: live sessions (the session registry), live
//! forwardings (the forward proxy), the forwarded packets and bytes (the kernel counters the
//! daemon last read for each session, made totals by [`Metrics::forwarded_totals`]), and each
//! internal server's health (the balancer). Read once per scrape into a [`Live`], which the
//! scrape encodes as a `prometheus-client` [`Collector`].

use std::net::SocketAddr;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::time::Instant;

use super::Metrics;
use crate::forward::service::ForwardService;
use crate::session::Shared;

/// One internal server at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its SSH address, as the rules name it.
    pub host: SocketAddr,
    /// Not marked faulty now.
    pub healthy: bool,
    /// How many times it was marked faulty since the daemon started.
    pub faulty_marks: u64,
}

/// The values read at one scrape.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Live reverse-proxy sessions.
    pub sessions: usize,
    /// Live forward-proxy forwardings (0 when the forward proxy is off).
    pub forwardings: usize,
    /// Packets forwarded by the kernel for every session so far.
    pub packets: u64,
    /// Bytes forwarded by the kernel for every session so far.
    pub bytes: u64,
    /// Every internal server of the configuration in force, by address.
    pub backends: Vec<Backend>,
}

impl Live {
    /// Reads the daemon's state now.
    pub fn read(metrics: &Metrics, shared: &Shared, forward: Option<&ForwardService>) -> Live {
        let mut sessions = 0;
        let (packets, bytes) = metrics.forwarded_totals(|| {
            let snapshot = shared.registry.snapshot();
            sessions = snapshot.len();
            snapshot
                .into_iter()
                .filter_map(|s| Some((s.id, s.forwarded?)))
                .collect()
        });
        let hosts = shared.config().server.rproxy.servers();
        let now = Instant::now();
        let backends = {
            let balancer = shared.balancer.lock().unwrap_or_else(|p| p.into_inner());
            hosts
                .into_iter()
                .map(|host| Backend {
                    host,
                    healthy: !balancer.is_faulty(&host, now),
                    faulty_marks: balancer.faulty_marks(&host),
                })
                .collect()
        };
        Live {
            sessions,
            forwardings: forward.map_or(0, |f| f.list().len()),
            packets,
            bytes,
            backends,
        }
    }
}

/// Encodes one metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        single(
            &mut encoder,
            "fasp_proxy_live_sessions",
            "Reverse-proxy sessions live now",
            &ConstGauge::new(self.sessions as i64),
        )?;
        single(
            &mut encoder,
            "fasp_proxy_live_forwardings",
            "Forward-proxy forwardings live now",
            &ConstGauge::new(self.forwardings as i64),
        )?;
        single(
            &mut encoder,
            "fasp_proxy_forwarded_packets",
            "Packets the kernel forwarded from clients to internal servers for reverse-proxy sessions, ended and live (conntrack counters, read every 5 s and at each session's end)",
            &ConstCounter::new(self.packets),
        )?;
        single(
            &mut encoder,
            "fasp_proxy_forwarded_bytes",
            "Bytes the kernel forwarded from clients to internal servers for reverse-proxy sessions, ended and live (conntrack counters, read every 5 s and at each session's end)",
            &ConstCounter::new(self.bytes),
        )?;
        let mut up = encoder.encode_descriptor(
            "fasp_proxy_backend_up",
            "Whether an internal server is taken for new sessions: 1 healthy, 0 marked faulty",
            None,
            MetricType::Gauge,
        )?;
        for b in &self.backends {
            let labels = [("host", b.host.to_string())];
            ConstGauge::new(i64::from(b.healthy)).encode(up.encode_family(&labels)?)?;
        }
        let mut marks = encoder.encode_descriptor(
            "fasp_proxy_backend_faulty_marks",
            "Times an internal server was marked faulty (by a failed session or health check) since the daemon started",
            None,
            MetricType::Counter,
        )?;
        for b in &self.backends {
            let labels = [("host", b.host.to_string())];
            ConstCounter::new(b.faulty_marks).encode(marks.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;

    #[test]
    fn a_scrape_shows_what_was_read() {
        let live = Live {
            sessions: 2,
            forwardings: 1,
            packets: 700,
            bytes: 1_000_000,
            backends: vec![
                Backend {
                    host: "198.51.100.2:22".parse().unwrap(),
                    healthy: true,
                    faulty_marks: 0,
                },
                Backend {
                    host: "[2001:db8:2::3]:22".parse().unwrap(),
                    healthy: false,
                    faulty_marks: 3,
                },
            ],
        };
        let text = Metrics::new().encode(live, Format::Prometheus).unwrap();
        for line in [
            "fasp_proxy_live_sessions 2",
            "fasp_proxy_live_forwardings 1",
            "fasp_proxy_forwarded_packets_total 700",
            "fasp_proxy_forwarded_bytes_total 1000000",
            "fasp_proxy_backend_up{host=\"198.51.100.2:22\"} 1",
            "fasp_proxy_backend_up{host=\"[2001:db8:2::3]:22\"} 0",
            "fasp_proxy_backend_faulty_marks_total{host=\"198.51.100.2:22\"} 0",
            "fasp_proxy_backend_faulty_marks_total{host=\"[2001:db8:2::3]:22\"} 3",
            "# TYPE fasp_proxy_backend_faulty_marks_total counter",
            "# TYPE fasp_proxy_backend_up gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?}:\n{text}");
        }
    }
}
