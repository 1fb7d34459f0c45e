//! Reverse-proxy policy, pure: which rule a session falls under, which account and key it uses
//! on the internal server, which internal server it goes to (round robin, skipping servers
//! marked faulty by a real session's failure or by their health checks, with every change of
//! a server's health logged once, here), and which source
//! address its forwarded data leaves from; and ([`penalties`]) which source addresses are refused
//! for a while after failed logins. Time is passed in (a `tokio::time::Instant`, so
//! paused-time tests drive it), and nothing here does I/O besides logging.

pub mod penalties;
pub mod sources;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use log::{info, warn};
use tokio::time::Instant;

use crate::config::{HealthCheck, Rule};

/// What a session offers for rule matching.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The proxy address the client's TCP connection arrived on.
    pub local_addr: IpAddr,
    /// The host name the client asked for (from its `SessionInit`), if any.
    pub requested_host: Option<&'a str>,
    /// The SSH port the client dialled.
    pub requested_port: u16,
}

/// The first rule in file order whose `host_ip` and `host_domain` both match; if none, the
/// first default rule (one with neither); `None` when nothing matches.
pub fn select_rule<'r>(rules: &'r [Rule], req: &Request<'_>) -> Option<&'r Rule> {
    let local = canonical(req.local_addr);
    let host = req
        .requested_host
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    rules
        .iter()
        .filter(|r| !r.is_default())
        .find(|r| {
            let ip_ok = r.host_ip.is_none_or(|net| net.contains(&local));
            let domain_ok = r.host_domain.as_ref().is_none_or(|d| {
                host.as_deref() == Some(d.name.as_str())
                    && d.port.is_none_or(|p| p == req.requested_port)
            });
            ip_ok && domain_ok
        })
        .or_else(|| rules.iter().find(|r| r.is_default()))
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a proxy user cannot be mapped to an internal account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The user name cannot be put into a path safely.
    #[error("user name {0:?} cannot be used in a key file path")]
    UnsafeUser(String),
}

/// The account to log in as on the internal server: the rule's squash user, or the proxy user.
pub fn backend_user<'a>(rule: &'a Rule, proxy_user: &'a str) -> &'a str {
    rule.squash_user.as_deref().unwrap_or(proxy_user)
}

/// The rule's key file with `$(user)` replaced by the proxy user's name.
pub fn keyfile(rule: &Rule, proxy_user: &str) -> Result<PathBuf, MappingError> {
    let safe = !proxy_user.is_empty()
        && proxy_user != "."
        && proxy_user != ".."
        && proxy_user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if rule.keyfile.contains("$(user)") && !safe {
        return Err(MappingError::UnsafeUser(proxy_user.to_string()));
    }
    Ok(PathBuf::from(rule.keyfile.replace("$(user)", proxy_user)))
}

/// A change of a server's health, to be logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    /// The server failed and is skipped until `until`.
    MarkedFaulty {
        /// The server.
        host: SocketAddr,
        /// When the mark ends.
        until: Instant,
    },
    /// The hold time ran out; the server is tried again.
    Cleared {
        /// The server.
        host: SocketAddr,
    },
}

impl HealthEvent {
    /// Writes the event to the log (a server's health is logged when it changes, only then).
    pub fn log(&self) {
        match self {
            HealthEvent::MarkedFaulty { host, .. } => warn!("internal server {host} marked faulty"),
            HealthEvent::Cleared { host } => {
                info!("internal server {host} no longer marked faulty")
            }
        }
    }
}

/// A change of a server's health-check mark, to be logged once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckEvent {
    /// `times` checks in a row failed (the last one for `why`): the server is marked faulty
    /// until its checks pass again.
    Marked {
        /// The server.
        host: SocketAddr,
        /// Failed checks in a row (`<health_check_failures>`).
        times: u32,
        /// Why the last one failed.
        why: String,
    },
    /// `times` checks in a row passed: the mark is cleared.
    Cleared {
        /// The server.
        host: SocketAddr,
        /// Passed checks in a row (`<health_check_successes>`).
        times: u32,
        /// How much longer a session's failure still keeps it marked (the passive mark, which
        /// the checks leave alone), if it does.
        still_held: Option<Duration>,
    },
}

impl CheckEvent {
    /// Writes the event to the log.
    pub fn log(&self) {
        match self {
            CheckEvent::Marked { host, times, why } => warn!(
                "internal server {host} failed its health check {times} time{} ({why}): marked \
                 faulty",
                plural(*times)
            ),
            CheckEvent::Cleared {
                host,
                times,
                still_held: None,
            } => info!(
                "internal server {host} passed its health check {times} time{}: no longer marked \
                 faulty",
                plural(*times)
            ),
            CheckEvent::Cleared {
                host,
                times,
                still_held: Some(left),
            } => info!(
                "internal server {host} passed its health check {times} time{}: no longer marked \
                 faulty by its health checks (a failed session's mark holds {}s more)",
                plural(*times),
                left.as_secs().max(1)
            ),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What the health checks found of one server so far (pingora's model: consecutive counts
/// against two thresholds flip one flag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Checked {
    /// Marked faulty by its checks.
    marked: bool,
    /// Failed checks in a row (0 after a pass).
    failures: u32,
    /// Passed checks in a row (0 after a failure).
    successes: u32,
}

/// A server's health as the balancer holds it (for the metrics and other readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostHealth {
    /// Until when a real session's failure keeps it marked (the passive mark), if it does.
    pub passive_until: Option<Instant>,
    /// Whether its health checks mark it faulty (the active mark).
    pub active: bool,
    /// Failed health checks in a row.
    pub failures: u32,
    /// Passed health checks in a row.
    pub successes: u32,
}

impl HostHealth {
    /// Whether new sessions skip the server: either mark is set.
    pub fn is_faulty(&self) -> bool {
        self.active || self.passive_until.is_some()
    }
}

/// Round-robin selection over each rule's servers, skipping those marked faulty, and over each
/// rule's `bind_source_address`es: selection and health in one place (as pingora keeps them).
/// A server is marked faulty in two ways, kept apart: passively, for the hold time, when a
/// real session fails on it; actively, when its health checks fail `failures` times in a row,
/// until they pass `successes` times in a row. Either mark makes sessions skip it.
///
/// Shared by all sessions of the daemon (behind a mutex); every call is O(servers of the rule).
#[derive(Debug)]
pub struct Balancer {
    hold: Duration,
    /// Next index per rule (by rule number).
    cursors: HashMap<usize, usize>,
    /// Next source address per rule (by rule number).
    source_cursors: HashMap<usize, usize>,
    /// Faulty servers and when their mark ends.
    faulty: HashMap<SocketAddr, Instant>,
    /// What the health checks found, per server checked.
    checked: HashMap<SocketAddr, Checked>,
    /// How many times each server was marked faulty (each mark counted once, not its renewals):
    /// for the metrics.
    marks: HashMap<SocketAddr, u64>,
}

impl Balancer {
    /// A balancer marking failed servers faulty for `hold` (`<faulty_host_hold_time>`).
    pub fn new(hold: Duration) -> Balancer {
        Balancer {
            hold,
            cursors: HashMap::new(),
            source_cursors: HashMap::new(),
            faulty: HashMap::new(),
            checked: HashMap::new(),
            marks: HashMap::new(),
        }
    }

    /// A reload: the new hold time for marks made from now on, and the marks of servers no
    /// longer in any rule (`hosts`) dropped; the marks of servers still present are kept.
    pub fn reconfigure(&mut self, hold: Duration, hosts: &BTreeSet<SocketAddr>) {
        self.hold = hold;
        self.faulty.retain(|h, _| hosts.contains(h));
        self.checked.retain(|h, _| hosts.contains(h));
    }

    /// Notes one health check of `host` (`Err(why)` when it failed) under `thresholds`, at
    /// `now`; returns the event to log when its mark changed: `failures` failed in a row mark
    /// it, `successes` passed in a row clear the mark. Nothing else is logged.
    pub fn record_check(
        &mut self,
        host: SocketAddr,
        result: Result<(), String>,
        thresholds: &HealthCheck,
        now: Instant,
    ) -> Option<CheckEvent> {
        let still_held = self
            .faulty
            .get(&host)
            .filter(|until| **until > now)
            .map(|until| *until - now);
        let state = self.checked.entry(host).or_default();
        match result {
            Ok(()) => {
                state.failures = 0;
                state.successes = state.successes.saturating_add(1);
                if state.marked && state.successes >= thresholds.successes {
                    state.marked = false;
                    return Some(CheckEvent::Cleared {
                        host,
                        times: state.successes,
                        still_held,
                    });
                }
            }
            Err(why) => {
                state.successes = 0;
                state.failures = state.failures.saturating_add(1);
                if !state.marked && state.failures >= thresholds.failures {
                    state.marked = true;
                    let times = state.failures;
                    *self.marks.entry(host).or_insert(0) += 1;
                    return Some(CheckEvent::Marked { host, times, why });
                }
            }
        }
        None
    }

    /// Forgets the health checks of servers not in `hosts` (gone from the configuration);
    /// with an empty set (health checks turned off), every active mark goes.
    pub fn retain_checked(&mut self, hosts: &BTreeSet<SocketAddr>) {
        self.checked.retain(|h, _| hosts.contains(h));
    }

    /// Every server the balancer holds something about (a passive mark in force, or health
    /// checks), in address order, with its health at `now`; a server absent was neither
    /// checked nor marked, and is taken.
    pub fn health(&self, now: Instant) -> Vec<(SocketAddr, HostHealth)> {
        let mut hosts: Vec<SocketAddr> = self
            .faulty
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(h, _)| *h)
            .chain(self.checked.keys().copied())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
            .into_iter()
            .map(|h| {
                let checked = self.checked.get(&h).copied().unwrap_or_default();
                let health = HostHealth {
                    passive_until: self.faulty.get(&h).copied().filter(|u| *u > now),
                    active: checked.marked,
                    failures: checked.failures,
                    successes: checked.successes,
                };
                (h, health)
            })
            .collect()
    }

    /// The servers to try for a new session of `rule`, in order, after ending the marks whose
    /// hold time has passed (each logged): [`Balancer::expire`] then [`Balancer::candidates`].
    pub fn pick(&mut self, rule: &Rule, now: Instant) -> Vec<SocketAddr> {
        for event in self.expire(now) {
            match event {
                HealthEvent::Cleared { host }
                    if self.checked.get(&host).is_some_and(|c| c.marked) =>
                {
                    info!(
                        "internal server {host}: the hold time of its failed session is over; \
                         its health checks still mark it faulty"
                    )
                }
                event => event.log(),
            }
        }
        self.candidates(rule, now)
    }

    /// Notes that connecting to `host` failed. A failure of the server itself
    /// (`server_fault`) marks it faulty for the hold time, logged the first time; any other
    /// failure (the account or key refused) leaves its health alone.
    pub fn record_failure(&mut self, host: SocketAddr, server_fault: bool, now: Instant) {
        if server_fault {
            if let Some(event) = self.mark_faulty(host, now) {
                event.log();
            }
        }
    }

    /// The source address the forwarded data of a new session of `rule` leaves from
    /// (SNAT): the rule's `bind_source_address`es in turn, or `None` when it has none.
    pub fn source_address(&mut self, rule: &Rule) -> Option<IpAddr> {
        let n = rule.bind_source_addresses.len();
        if n == 0 {
            return None;
        }
        let cursor = self.source_cursors.entry(rule.number).or_insert(0);
        let address = rule.bind_source_addresses[*cursor % n];
        *cursor = (*cursor + 1) % n;
        Some(address)
    }

    /// Ends the marks whose hold time has passed; returns the servers cleared.
    pub fn expire(&mut self, now: Instant) -> Vec<HealthEvent> {
        let mut cleared: Vec<SocketAddr> = self
            .faulty
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(h, _)| *h)
            .collect();
        cleared.sort();
        for h in &cleared {
            self.faulty.remove(h);
        }
        cleared
            .into_iter()
            .map(|host| HealthEvent::Cleared { host })
            .collect()
    }

    /// The servers to try for a new session of `rule`, in order: round robin from the rule's
    /// cursor, healthy ones first; faulty ones are left out. The cursor moves one step per call.
    pub fn candidates(&mut self, rule: &Rule, now: Instant) -> Vec<SocketAddr> {
        let n = rule.hosts.len();
        if n == 0 {
            return Vec::new();
        }
        let cursor = self.cursors.entry(rule.number).or_insert(0);
        let start = *cursor % n;
        *cursor = (start + 1) % n;
        (0..n)
            .map(|i| rule.hosts[(start + i) % n])
            .filter(|h| !self.is_faulty(h, now))
            .collect()
    }

    /// Marks `host` faulty from `now`; returns the event to log the first time (not again while
    /// it stays marked).
    pub fn mark_faulty(&mut self, host: SocketAddr, now: Instant) -> Option<HealthEvent> {
        let until = now + self.hold;
        let newly = self.faulty.get(&host).is_none_or(|u| *u <= now);
        self.faulty.insert(host, until);
        if newly {
            *self.marks.entry(host).or_insert(0) += 1;
        }
        newly.then_some(HealthEvent::MarkedFaulty { host, until })
    }

    /// How many times `host` was marked faulty since the balancer was made (a renewed mark
    /// counts once).
    pub fn faulty_marks(&self, host: &SocketAddr) -> u64 {
        self.marks.get(host).copied().unwrap_or(0)
    }

    /// Whether `host` is marked faulty at `now`, by a session's failure or by its health
    /// checks.
    pub fn is_faulty(&self, host: &SocketAddr, now: Instant) -> bool {
        self.faulty.get(host).is_some_and(|until| *until > now)
            || self.checked.get(host).is_some_and(|c| c.marked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    fn rules() -> Vec<Rule> {
        let text = r#"<CONF><server><rproxy><enabled>true</enabled><rules>
<rule host_ip="203.0.113.7"><host>198.51.100.10</host><squash_user>xfer</squash_user><keyfile>/k/squash</keyfile></rule>
<rule host_ip="203.0.113.128/25"><host>198.51.100.30</host><keyfile>/home/$(user)/.ssh/id</keyfile></rule>
<rule host_domain="files.example.com"><hosts><host>198.51.100.41</host><host>198.51.100.42</host><host>198.51.100.43</host></hosts><keyfile>/k</keyfile></rule>
<rule host_domain="ssh.example.com:2222"><host>198.51.100.50</host><keyfile>/k</keyfile></rule>
<rule><host>198.51.100.99</host><keyfile>/k</keyfile></rule>
</rules></rproxy></server></CONF>"#;
        parse_str(text, Path::new("t"))
            .unwrap()
            .config
            .server
            .rproxy
            .rules
    }

    fn req<'a>(local: &str, host: Option<&'a str>, port: u16) -> Request<'a> {
        Request {
            local_addr: local.parse().unwrap(),
            requested_host: host,
            requested_port: port,
        }
    }

    #[test]
    fn rules_match_by_address_prefix_name_and_fall_back_to_the_default() {
        let r = rules();
        let pick = |q: Request<'_>| select_rule(&r, &q).map(|r| r.number);
        assert_eq!(pick(req("203.0.113.7", None, 33001)), Some(1));
        assert_eq!(
            pick(req("::ffff:203.0.113.7", None, 33001)),
            Some(1),
            "v4-mapped"
        );
        assert_eq!(pick(req("203.0.113.200", None, 33001)), Some(2));
        assert_eq!(
            pick(req("192.0.2.1", Some("FILES.example.com."), 33001)),
            Some(3)
        );
        assert_eq!(
            pick(req("192.0.2.1", Some("ssh.example.com"), 2222)),
            Some(4)
        );
        assert_eq!(
            pick(req("192.0.2.1", Some("ssh.example.com"), 33001)),
            Some(5),
            "port differs"
        );
        assert_eq!(pick(req("192.0.2.1", None, 33001)), Some(5));
        // First match in file order: the address rule wins over the name rule.
        assert_eq!(
            pick(req("203.0.113.7", Some("files.example.com"), 33001)),
            Some(1)
        );
        let no_default: Vec<Rule> = r.into_iter().filter(|x| !x.is_default()).collect();
        assert!(select_rule(&no_default, &req("192.0.2.1", None, 33001)).is_none());
    }

    #[test]
    fn squash_and_individual_accounts_and_keyfile_expansion() {
        let r = rules();
        assert_eq!(backend_user(&r[0], "bear"), "xfer");
        assert_eq!(backend_user(&r[1], "bobcat"), "bobcat");
        assert_eq!(
            keyfile(&r[1], "bobcat").unwrap(),
            Path::new("/home/bobcat/.ssh/id")
        );
        assert_eq!(
            keyfile(&r[0], "../etc").unwrap(),
            Path::new("/k/squash"),
            "no $(user)"
        );
        assert!(keyfile(&r[1], "../etc").is_err());
        assert!(keyfile(&r[1], "a/b").is_err());
        assert!(keyfile(&r[1], "").is_err());
    }

    #[test]
    fn round_robin_skips_faulty_servers_until_the_hold_time_ends() {
        let r = rules();
        let rule = &r[2];
        let (a, b, c) = (rule.hosts[0], rule.hosts[1], rule.hosts[2]);
        let mut bal = Balancer::new(Duration::from_secs(120));
        let t0 = Instant::now();
        assert_eq!(bal.candidates(rule, t0), vec![a, b, c]);
        assert_eq!(bal.candidates(rule, t0), vec![b, c, a]);
        assert_eq!(bal.candidates(rule, t0), vec![c, a, b]);
        // b fails: logged once, skipped while marked.
        assert!(
            matches!(bal.mark_faulty(b, t0), Some(HealthEvent::MarkedFaulty { host, .. }) if host == b)
        );
        assert_eq!(
            bal.mark_faulty(b, t0 + Duration::from_secs(1)),
            None,
            "logged once"
        );
        assert_eq!(bal.candidates(rule, t0), vec![a, c]);
        assert_eq!(bal.candidates(rule, t0), vec![c, a]);
        assert!(bal.is_faulty(&b, t0 + Duration::from_secs(60)));
        // The mark was renewed at t0+1s: it ends at t0+121s.
        let later = t0 + Duration::from_secs(121);
        assert_eq!(bal.expire(t0 + Duration::from_secs(120)), vec![]);
        assert_eq!(bal.expire(later), vec![HealthEvent::Cleared { host: b }]);
        let back = bal.candidates(rule, later);
        assert_eq!(back.len(), 3, "{back:?}");
        assert!(back.contains(&b));
        // All faulty: nothing to try.
        for h in [a, b, c] {
            bal.mark_faulty(h, later);
        }
        assert!(bal.candidates(rule, later).is_empty());
        // A refused key says nothing about the server; a server failure marks it.
        let mut bal = Balancer::new(Duration::from_secs(120));
        bal.record_failure(a, false, t0);
        assert!(!bal.is_faulty(&a, t0));
        bal.record_failure(a, true, t0);
        assert!(bal.is_faulty(&a, t0));
        assert_eq!(
            bal.pick(rule, t0 + Duration::from_secs(120)).len(),
            3,
            "pick expires"
        );
    }

    #[test]
    fn each_mark_is_counted_once_however_often_it_is_renewed() {
        let host: SocketAddr = "198.51.100.10:22".parse().unwrap();
        let mut bal = Balancer::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(bal.faulty_marks(&host), 0);
        bal.mark_faulty(host, t0);
        bal.mark_faulty(host, t0 + Duration::from_secs(5));
        assert_eq!(bal.faulty_marks(&host), 1, "renewed, not marked again");
        bal.mark_faulty(host, t0 + Duration::from_secs(30));
        assert_eq!(
            bal.faulty_marks(&host),
            2,
            "marked again after its mark ended"
        );
    }

    fn thresholds(failures: u32, successes: u32) -> HealthCheck {
        HealthCheck {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(5),
            failures,
            successes,
        }
    }

    #[test]
    fn health_checks_mark_after_n_failures_in_a_row_and_clear_after_m_passes_in_a_row() {
        let r = rules();
        let rule = &r[2];
        let (a, b, c) = (rule.hosts[0], rule.hosts[1], rule.hosts[2]);
        let t = thresholds(3, 2);
        let mut bal = Balancer::new(Duration::from_secs(120));
        let now = Instant::now();
        let fail = |bal: &mut Balancer| bal.record_check(b, Err("refused".into()), &t, now);
        let pass = |bal: &mut Balancer| bal.record_check(b, Ok(()), &t, now);
        // Two failures, a pass: the count starts again.
        assert_eq!(fail(&mut bal), None);
        assert_eq!(fail(&mut bal), None);
        assert_eq!(
            pass(&mut bal),
            None,
            "a pass while unmarked changes nothing"
        );
        assert_eq!(fail(&mut bal), None);
        assert_eq!(fail(&mut bal), None);
        assert!(!bal.is_faulty(&b, now));
        // The third in a row marks it, once.
        assert_eq!(
            fail(&mut bal),
            Some(CheckEvent::Marked {
                host: b,
                times: 3,
                why: "refused".into()
            })
        );
        assert_eq!(fail(&mut bal), None, "logged on change only");
        assert!(bal.is_faulty(&b, now));
        assert_eq!(bal.candidates(rule, now), vec![a, c]);
        assert_eq!(bal.faulty_marks(&b), 1, "an active mark is counted");
        // A pass, a failure, then two passes: only the two in a row clear it.
        assert_eq!(pass(&mut bal), None);
        assert_eq!(fail(&mut bal), None);
        assert_eq!(pass(&mut bal), None);
        assert!(bal.is_faulty(&b, now));
        assert_eq!(
            pass(&mut bal),
            Some(CheckEvent::Cleared {
                host: b,
                times: 2,
                still_held: None
            })
        );
        assert_eq!(pass(&mut bal), None);
        assert!(!bal.is_faulty(&b, now));
        assert_eq!(bal.candidates(rule, now).len(), 3);
    }

    #[test]
    fn active_and_passive_marks_are_kept_apart_and_either_one_skips_the_server() {
        let r = rules();
        let rule = &r[2];
        let b = rule.hosts[1];
        let t = thresholds(1, 1);
        let mut bal = Balancer::new(Duration::from_secs(120));
        let t0 = Instant::now();
        // A session fails on b (passive, 120 s); its checks fail too (active).
        bal.record_failure(b, true, t0);
        assert!(bal.record_check(b, Err("down".into()), &t, t0).is_some());
        let health = bal.health(t0);
        assert_eq!(health.len(), 1);
        assert_eq!(
            health[0],
            (
                b,
                HostHealth {
                    passive_until: Some(t0 + Duration::from_secs(120)),
                    active: true,
                    failures: 1,
                    successes: 0
                }
            )
        );
        // The check passes 30 s later: the active mark goes, the passive one holds.
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!(
            bal.record_check(b, Ok(()), &t, t30),
            Some(CheckEvent::Cleared {
                host: b,
                times: 1,
                still_held: Some(Duration::from_secs(90))
            })
        );
        assert!(bal.is_faulty(&b, t30), "the passive mark still holds");
        assert!(!bal.candidates(rule, t30).contains(&b));
        // Its hold time over, b is taken again.
        let t121 = t0 + Duration::from_secs(121);
        assert_eq!(bal.pick(rule, t121).len(), 3);
        // The other way round: the hold time ends while the checks still mark it.
        bal.record_failure(b, true, t121);
        bal.record_check(b, Err("down".into()), &t, t121);
        let t300 = t0 + Duration::from_secs(300);
        assert!(!bal.pick(rule, t300).contains(&b), "the active mark holds");
        assert_eq!(bal.health(t300)[0].1.passive_until, None);
        assert!(bal.health(t300)[0].1.is_faulty());
        // A server gone from the configuration (or checks off) is forgotten.
        bal.retain_checked(&BTreeSet::new());
        assert!(!bal.is_faulty(&b, t300));
        assert!(bal.health(t300).is_empty());
        bal.record_check(b, Err("down".into()), &t, t300);
        bal.reconfigure(Duration::from_secs(120), &BTreeSet::new());
        assert!(
            !bal.is_faulty(&b, t300),
            "a reload without b forgets its checks"
        );
    }

    #[test]
    fn source_addresses_go_round_robin_per_rule() {
        let text = r#"<CONF><server><rproxy><enabled>true</enabled><rules>
<rule host_ip="203.0.113.7"><host>198.51.100.10</host><keyfile>/k</keyfile>
<bind_source_address>198.51.100.1,198.51.100.2</bind_source_address></rule>
<rule><host>198.51.100.99</host><keyfile>/k</keyfile></rule>
</rules></rproxy></server></CONF>"#;
        let rules = parse_str(text, Path::new("t"))
            .unwrap()
            .config
            .server
            .rproxy
            .rules;
        let mut bal = Balancer::new(Duration::from_secs(1));
        let picks: Vec<_> = (0..3).map(|_| bal.source_address(&rules[0])).collect();
        let (one, two) = ("198.51.100.1".parse().ok(), "198.51.100.2".parse().ok());
        assert_eq!(picks, vec![one, two, one]);
        assert_eq!(
            bal.source_address(&rules[1]),
            None,
            "no SNAT without addresses"
        );
    }
}
