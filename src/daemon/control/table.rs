//! The tables `fasp-proxy sessions` prints: live sessions, then the forward proxy's live
//! forwardings.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::forward::service::ForwardingInfo;
use crate::session::registry::Registry;

/// The sessions table as `fasp-proxy sessions` prints it.
pub fn table(registry: &Registry) -> String {
    let sessions = registry.snapshot();
    let mut out = format!(
        "{:<36}  {:<10} {:<6} {:<21} {:<28} {:<21} {:<19} {:>6} {:>10} {:>12}\n",
        "SESSION", "USER", "KIND", "CLIENT", "RULE", "SERVER", "UDP", "AGE", "PACKETS", "BYTES"
    );
    for s in &sessions {
        let age = SystemTime::now()
            .duration_since(s.started)
            .unwrap_or_default()
            .as_secs();
        let (udp, server) = match &s.entry {
            Some(e) => (
                format!(
                    "{}->{}:{}",
                    e.client_port.map_or_else(|| "*".into(), |p| p.to_string()),
                    e.proxy_port,
                    e.backend.port()
                ),
                s.backend.map_or_else(|| "-".into(), |b| b.to_string()),
            ),
            None => (
                "-".into(),
                s.backend.map_or_else(|| "-".into(), |b| b.to_string()),
            ),
        };
        let (packets, bytes) = s.forwarded.map_or_else(
            || ("-".to_string(), "-".to_string()),
            |(p, b)| (p.to_string(), b.to_string()),
        );
        let _ = writeln!(
            out,
            "{:<36}  {:<10} {:<6} {:<21} {:<28} {:<21} {:<19} {:>5}s {:>10} {:>12}",
            s.id,
            s.user,
            if s.opaque { "opaque" } else { "ascp" },
            s.client,
            s.rule,
            server,
            udp,
            age,
            packets,
            bytes
        );
    }
    let _ = writeln!(
        out,
        "{} live session{}",
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" }
    );
    out
}

/// The forwardings table as `fasp-proxy sessions` prints it, after the sessions.
pub fn forwardings_text(rows: &[(ForwardingInfo, Option<(u64, u64)>)]) -> String {
    let mut out = format!(
        "\n{:<8} {:<16} {:<15} {:<21} {:<21} {:>6} {:>6} {:>10} {:>12}\n",
        "FORWARD", "USER", "CLIENT", "SERVER SSH", "SERVER UDP", "PORT", "AGE", "PACKETS", "BYTES"
    );
    for (info, counters) in rows {
        let f = &info.forwarding;
        let age = SystemTime::now()
            .duration_since(info.opened)
            .unwrap_or_default()
            .as_secs();
        let (packets, bytes) = counters.map_or_else(
            || ("-".to_string(), "-".to_string()),
            |(p, b)| (p.to_string(), b.to_string()),
        );
        let _ = writeln!(
            out,
            "{:<8} {:<16} {:<15} {:<21} {:<21} {:>6} {:>5}s {:>10} {:>12}",
            f.id, f.user, f.client, f.server_tcp, f.server_udp, f.port, age, packets, bytes
        );
    }
    let _ = writeln!(
        out,
        "{} live forwarding{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::SessionEntry;
    use crate::session::registry::SessionInfo;
    use std::time::Duration;

    #[test]
    fn the_table_marks_opaque_sessions_and_shows_their_any_port_entry_and_counters() {
        let registry = Registry::new();
        let id = uuid::Uuid::new_v4();
        let info = SessionInfo {
            id,
            user: "ibmuser".into(),
            client: "192.0.2.7:50144".parse().unwrap(),
            rule: "rule 1 (default rule)".into(),
            backend: None,
            entry: None,
            started: SystemTime::now(),
            last_activity: tokio::time::Instant::now(),
            forwarded: None,
            opaque: true,
        };
        let _close = registry.add_within(info, 10).unwrap();
        let entry = SessionEntry {
            id,
            client: "192.0.2.7".parse().unwrap(),
            client_port: None,
            proxy_addr: "192.0.2.1".parse().unwrap(),
            proxy_port: 33001,
            backend: "198.51.100.2:33001".parse().unwrap(),
            tcp_backend: None,
            snat: None,
            lifetime: Duration::from_secs(60),
        };
        registry.set_entry(id, entry, "198.51.100.2:22".parse().unwrap());
        registry.set_counters(id, 2210, 3_094_000);
        let table = table(&registry);
        let row = table.lines().nth(1).unwrap();
        for field in [
            "ibmuser",
            "opaque",
            "198.51.100.2:22",
            "*->33001:33001",
            "2210",
            "3094000",
        ] {
            assert!(row.contains(field), "{field} missing: {table}");
        }
        assert!(table.lines().next().unwrap().contains("KIND"));
        assert!(table.ends_with("1 live session\n"), "{table}");
    }
}
