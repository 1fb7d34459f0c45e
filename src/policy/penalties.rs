//! Penalties per source address, in the shape of OpenSSH's `PerSourcePenalties`: an address that
//! offends (a failed login, a connection dropped or timed out before logging in, a per-source
//! cap tripped) is refused for a while, which starts at its kind of offence's amount and doubles
//! each time it offends again after serving a penalty, up to a ceiling (offences while a penalty
//! runs, such as several of its connections timing out together, extend it without doubling). The table forgets an
//! address some time after its last offence and never holds more than
//! [`PenaltySettings::max_tracked`] of them (the one offending longest ago is dropped first), so
//! a flood of sources cannot grow it without end. One table serves the SSH front end and the
//! forward proxy's API. Pure: time is passed in.
//!
//! IPv6 sources are counted per prefix ([`PenaltySettings::ipv6_prefix`], /64 by default): one
//! host usually owns a whole /64, and would otherwise escape by changing its address.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use super::canonical;

/// What a source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffenceKind {
    /// It failed to log in (a wrong key or password, then gave up or was cut off).
    AuthFailure,
    /// It closed the connection without trying to log in.
    NoAuth,
    /// It did not finish a login step (banner, key exchange, authentication) in time.
    GraceExceeded,
    /// It tripped a per-source cap (too many connections at once).
    SourceCap,
}

impl fmt::Display for OffenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffenceKind::AuthFailure => "failed login",
            OffenceKind::NoAuth => "dropped before logging in",
            OffenceKind::GraceExceeded => "login too slow",
            OffenceKind::SourceCap => "too many connections at once",
        })
    }
}

/// How penalties grow and how much the table remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PenaltySettings {
    /// The first penalty of a failed login.
    pub auth_failure: Duration,
    /// The first penalty of a connection closed without a login attempt.
    pub no_auth: Duration,
    /// The first penalty of a login step not finished in time.
    pub grace_exceeded: Duration,
    /// The first penalty of a per-source cap tripped.
    pub source_cap: Duration,
    /// The longest penalty.
    pub max: Duration,
    /// An address's offences are forgotten this long after its last one (at least `max`).
    pub memory: Duration,
    /// Most addresses (or IPv6 prefixes) remembered at once.
    pub max_tracked: usize,
    /// IPv6 sources sharing this many leading bits count as one source.
    pub ipv6_prefix: u8,
    /// Sources never penalised.
    pub exempt: Vec<IpNet>,
}

impl Default for PenaltySettings {
    fn default() -> Self {
        PenaltySettings {
            auth_failure: Duration::from_secs(5),
            no_auth: Duration::from_secs(1),
            grace_exceeded: Duration::from_secs(10),
            source_cap: Duration::from_secs(5),
            max: Duration::from_secs(600),
            memory: Duration::from_secs(600),
            max_tracked: 65_536,
            ipv6_prefix: 64,
            exempt: Vec::new(),
        }
    }
}

/// The penalty table as the daemon's tasks share it.
pub type SharedPenalties = std::sync::Arc<std::sync::Mutex<Penalties>>;

/// Locks a shared table (a poisoned lock is taken as it is: the table stays consistent).
pub fn lock(shared: &SharedPenalties) -> std::sync::MutexGuard<'_, Penalties> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key `addr` is counted under: IPv4 as is, IPv6 by its first `ipv6_prefix` bits.
pub fn source_key(addr: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

impl PenaltySettings {
    /// The settings of `<server><per_source>` (and `<rproxy><allowed_clients>` when they are
    /// exempt).
    pub fn from_config(config: &crate::config::Config) -> PenaltySettings {
        let s = &config.server.per_source;
        PenaltySettings {
            auth_failure: s.penalty_auth_failure,
            no_auth: s.penalty_no_auth,
            grace_exceeded: s.penalty_grace_exceeded,
            source_cap: s.penalty_max_startups,
            max: s.penalty_max,
            memory: Duration::from_secs(600).max(s.penalty_max),
            max_tracked: s.max_tracked_sources as usize,
            ipv6_prefix: s.ipv6_prefix,
            exempt: if s.penalty_exempt_allowed_clients {
                config.server.rproxy.allowed_clients.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// No penalty of any kind (for tests of other things).
    pub fn off() -> PenaltySettings {
        PenaltySettings {
            auth_failure: Duration::ZERO,
            no_auth: Duration::ZERO,
            grace_exceeded: Duration::ZERO,
            source_cap: Duration::ZERO,
            ..PenaltySettings::default()
        }
    }

    /// The first penalty of `kind`.
    pub fn first_penalty(&self, kind: OffenceKind) -> Duration {
        match kind {
            OffenceKind::AuthFailure => self.auth_failure,
            OffenceKind::NoAuth => self.no_auth,
            OffenceKind::GraceExceeded => self.grace_exceeded,
            OffenceKind::SourceCap => self.source_cap,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    offences: u32,
    /// When it last offended, with a sequence number: its key in [`Penalties::by_age`].
    last: (Instant, u64),
    until: Instant,
    refusal_logged: bool,
}

/// What [`Penalties::offence`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offence {
    /// The offences of this source still remembered, this one included.
    pub count: u32,
    /// How long it is refused from now.
    pub penalty: Duration,
}

/// A source refused by [`Penalties::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Time left of its penalty.
    pub remaining: Duration,
    /// Its offences.
    pub offences: u32,
    /// Whether this is the first refusal of this penalty (log it; the others are not).
    pub first: bool,
}

/// The penalty table (one per daemon, behind a mutex).
#[derive(Debug)]
pub struct Penalties {
    settings: PenaltySettings,
    by_source: HashMap<IpAddr, Record>,
    /// The sources by their last offence, oldest first: forgetting and evicting cost O(log n).
    by_age: BTreeMap<(Instant, u64), IpAddr>,
    sequence: u64,
}

impl Penalties {
    /// An empty table.
    pub fn new(settings: PenaltySettings) -> Penalties {
        Penalties {
            settings,
            by_source: HashMap::new(),
            by_age: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// An empty table to share between the daemon's tasks.
    pub fn shared(settings: PenaltySettings) -> SharedPenalties {
        std::sync::Arc::new(std::sync::Mutex::new(Penalties::new(settings)))
    }

    /// A reload: offences from now on are judged by `settings`; penalties already running
    /// keep their end.
    pub fn reconfigure(&mut self, settings: PenaltySettings) {
        self.settings = settings;
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PenaltySettings {
        &self.settings
    }

    /// The key `addr` is counted under: IPv4 as is, IPv6 by its prefix.
    pub fn source_key(&self, addr: IpAddr) -> IpAddr {
        source_key(addr, self.settings.ipv6_prefix)
    }

    /// Records an offence and logs it (one line per offence); `None` when it costs nothing.
    pub fn offend(&mut self, addr: IpAddr, kind: OffenceKind, now: Instant) -> Option<Offence> {
        let offence = self.offence(addr, kind, now)?;
        log::warn!(
            "source {} penalised for {:.1} s: {kind} (offence {} of this source)",
            self.source_key(addr),
            offence.penalty.as_secs_f64(),
            offence.count
        );
        Some(offence)
    }

    /// Whether `addr` is never penalised.
    pub fn is_exempt(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.settings.exempt.iter().any(|net| net.contains(&addr))
    }

    /// Whether `addr` serves a penalty (a look only: [`Penalties::check`] also marks the
    /// refusal as logged).
    pub fn is_penalised(&self, addr: IpAddr, now: Instant) -> bool {
        self.by_source
            .get(&self.source_key(addr))
            .is_some_and(|r| now < r.until)
    }

    /// `Some` while `addr` serves a penalty.
    pub fn check(&mut self, addr: IpAddr, now: Instant) -> Option<Refused> {
        let key = self.source_key(addr);
        let record = self.by_source.get_mut(&key)?;
        if now >= record.until {
            return None;
        }
        let first = !record.refusal_logged;
        record.refusal_logged = true;
        Some(Refused {
            remaining: record.until - now,
            offences: record.offences,
            first,
        })
    }

    /// Records an offence of `addr`: its penalty starts now. `None` for an exempt source or a
    /// kind whose penalty is 0 (off).
    pub fn offence(&mut self, addr: IpAddr, kind: OffenceKind, now: Instant) -> Option<Offence> {
        let first = self.settings.first_penalty(kind);
        if first.is_zero() || self.is_exempt(addr) {
            return None;
        }
        let key = self.source_key(addr);
        let memory = self.settings.memory.max(self.settings.max);
        // Forget the sources whose last offence is older than the memory, then make room.
        while let Some((&(last, seq), _)) = self.by_age.first_key_value() {
            if now.saturating_duration_since(last) < memory {
                break;
            }
            self.forget_oldest((last, seq));
        }
        if !self.by_source.contains_key(&key) && self.by_source.len() >= self.settings.max_tracked {
            if let Some((&oldest, _)) = self.by_age.first_key_value() {
                self.forget_oldest(oldest);
            }
        }
        self.sequence += 1;
        let stamp = (now, self.sequence);
        let record = self.by_source.entry(key).or_insert(Record {
            offences: 0,
            last: stamp,
            until: now,
            refusal_logged: false,
        });
        self.by_age.remove(&record.last);
        self.by_age.insert(stamp, key);
        // Offences during a penalty (several connections timing out together) extend it but do
        // not double it: it doubles for a source that offends again after serving it.
        let serving = now < record.until;
        if !serving {
            record.offences = record.offences.saturating_add(1);
            record.refusal_logged = false;
        }
        let factor = 1u32 << record.offences.saturating_sub(1).min(16);
        let penalty = first.saturating_mul(factor).min(self.settings.max);
        record.last = stamp;
        record.until = record.until.max(now + penalty);
        Some(Offence {
            count: record.offences,
            penalty,
        })
    }

    /// A success of `addr` (a valid login) clears its offences.
    pub fn forgive(&mut self, addr: IpAddr) {
        let key = self.source_key(addr);
        if let Some(record) = self.by_source.remove(&key) {
            self.by_age.remove(&record.last);
        }
    }

    fn forget_oldest(&mut self, stamp: (Instant, u64)) {
        if let Some(key) = self.by_age.remove(&stamp) {
            self.by_source.remove(&key);
        }
    }

    /// How many sources are remembered.
    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn settings() -> PenaltySettings {
        PenaltySettings {
            auth_failure: Duration::from_secs(1),
            max: Duration::from_secs(16),
            ..PenaltySettings::default()
        }
    }

    fn fail(p: &mut Penalties, addr: IpAddr, now: Instant) -> Offence {
        p.offence(addr, OffenceKind::AuthFailure, now).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_double_up_to_the_ceiling_and_refuse_meanwhile() {
        let mut p = Penalties::new(settings());
        let now = Instant::now();
        let a = ip("192.0.2.2");
        assert_eq!(p.check(a, now), None);
        // Each offence after the last penalty was served doubles it.
        let mut t = now;
        let mut secs = Vec::new();
        for _ in 0..7 {
            let o = fail(&mut p, a, t);
            secs.push(o.penalty.as_secs());
            t += o.penalty;
        }
        assert_eq!(secs, [1, 2, 4, 8, 16, 16, 16]);
        let t = t - Duration::from_secs(16);
        let first = p.check(a, t).unwrap();
        assert_eq!((first.remaining.as_secs(), first.offences), (16, 7));
        assert!(first.first);
        let again = p.check(a, t + Duration::from_secs(15)).unwrap();
        assert_eq!((again.remaining.as_secs(), again.first), (1, false));
        assert_eq!(p.check(a, t + Duration::from_secs(16)), None);
        // Offences while a penalty runs (connections timing out together) do not double it.
        let c = ip("192.0.2.5");
        let burst: Vec<u64> = (0..5)
            .map(|_| fail(&mut p, c, now).penalty.as_secs())
            .collect();
        assert_eq!(burst, [1, 1, 1, 1, 1]);
        assert_eq!(p.check(c, now).unwrap().offences, 1);
        // Another address is not affected; a success forgives.
        assert_eq!(p.check(ip("192.0.2.3"), now), None);
        p.forgive(a);
        assert_eq!(fail(&mut p, a, now).penalty, Duration::from_secs(1));
        // Each kind starts at its own amount; repeated offences of any kind double it.
        let b = ip("192.0.2.4");
        let first = p.offence(b, OffenceKind::GraceExceeded, now).unwrap();
        assert_eq!(first.penalty, Duration::from_secs(10));
        let served = now + Duration::from_secs(10);
        let second = p.offence(b, OffenceKind::NoAuth, served).unwrap();
        assert_eq!(second.penalty, Duration::from_secs(2));
        // Offences are forgotten after a while.
        let later = now + PenaltySettings::default().memory + Duration::from_secs(1);
        assert_eq!(fail(&mut p, a, later).count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn exempt_sources_and_kinds_set_to_zero_are_never_penalised() {
        let mut p = Penalties::new(PenaltySettings {
            no_auth: Duration::ZERO,
            exempt: vec!["192.0.2.0/28".parse().unwrap()],
            ..PenaltySettings::default()
        });
        let now = Instant::now();
        assert_eq!(
            p.offence(ip("192.0.2.5"), OffenceKind::AuthFailure, now),
            None
        );
        assert_eq!(p.offence(ip("192.0.2.99"), OffenceKind::NoAuth, now), None);
        assert!(p
            .offence(ip("192.0.2.99"), OffenceKind::AuthFailure, now)
            .is_some());
        assert!(!p.is_empty() && p.len() == 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_sources_count_per_prefix_and_mapped_ipv4_as_ipv4() {
        let mut p = Penalties::new(PenaltySettings::default());
        let now = Instant::now();
        fail(&mut p, ip("2001:db8:1:2::1"), now);
        assert!(p.check(ip("2001:db8:1:2:ffff::9"), now).is_some());
        assert!(p.check(ip("2001:db8:1:3::1"), now).is_none());
        fail(&mut p, ip("::ffff:192.0.2.9"), now);
        assert!(p.check(ip("192.0.2.9"), now).is_some());
        assert_eq!(p.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_with_100000_offending_sources() {
        let settings = PenaltySettings::default();
        let mut p = Penalties::new(settings.clone());
        let start = Instant::now();
        let first = ip("198.51.100.1");
        fail(&mut p, first, start);
        for i in 0..100_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0xcb00_7100 + i));
            fail(
                &mut p,
                addr,
                start + Duration::from_millis(u64::from(i) + 1),
            );
            assert!(p.len() <= settings.max_tracked);
        }
        assert_eq!(p.by_age.len(), p.by_source.len());
        assert_eq!(p.len(), settings.max_tracked);
        // The oldest offender was dropped first.
        assert_eq!(p.check(first, start), None);
    }
}
