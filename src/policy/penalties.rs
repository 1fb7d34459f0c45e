//! Penalties per source address, in the shape of OpenSSH's `PerSourcePenalties`: an address that
//! offends (a failed login) is refused for a while, doubled with each offence while it keeps
//! offending, up to a ceiling; the table forgets an address some time after its last offence and
//! never holds more than [`PenaltySettings::max_tracked`] of them (the one offending longest ago
//! is dropped first), so a flood of sources cannot grow it without end. Pure: time is passed in.
//!
//! IPv6 sources are counted per prefix ([`PenaltySettings::ipv6_prefix`], /64 by default): one
//! host usually owns a whole /64, and would otherwise escape by changing its address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use super::canonical;

/// How penalties grow and how much the table remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PenaltySettings {
    /// The penalty of a first offence; doubled for each further one.
    pub base: Duration,
    /// The longest penalty.
    pub max: Duration,
    /// An address's offences are forgotten this long after its last one.
    pub memory: Duration,
    /// Most addresses (or IPv6 prefixes) remembered at once.
    pub max_tracked: usize,
    /// IPv6 sources sharing this many leading bits count as one source.
    pub ipv6_prefix: u8,
}

impl Default for PenaltySettings {
    fn default() -> Self {
        PenaltySettings {
            base: Duration::from_secs(1),
            max: Duration::from_secs(16),
            memory: Duration::from_secs(600),
            max_tracked: 4096,
            ipv6_prefix: 64,
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

    /// The settings it runs with.
    pub fn settings(&self) -> &PenaltySettings {
        &self.settings
    }

    /// The key `addr` is counted under: IPv4 as is, IPv6 by its prefix.
    pub fn source_key(&self, addr: IpAddr) -> IpAddr {
        match canonical(addr) {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.settings.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        }
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

    /// Records an offence of `addr`: its penalty starts now.
    pub fn offence(&mut self, addr: IpAddr, now: Instant) -> Offence {
        let key = self.source_key(addr);
        // Forget the sources whose last offence is older than the memory, then make room.
        while let Some((&(last, seq), _)) = self.by_age.first_key_value() {
            if now.saturating_duration_since(last) < self.settings.memory {
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
        record.offences = record.offences.saturating_add(1);
        let factor = 1u32 << (record.offences - 1).min(16);
        let penalty = self
            .settings
            .base
            .saturating_mul(factor)
            .min(self.settings.max);
        record.last = stamp;
        record.until = now + penalty;
        record.refusal_logged = false;
        Offence {
            count: record.offences,
            penalty,
        }
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

    #[tokio::test(start_paused = true)]
    async fn penalties_double_up_to_the_ceiling_and_refuse_meanwhile() {
        let mut p = Penalties::new(PenaltySettings::default());
        let now = Instant::now();
        let a = ip("192.0.2.2");
        assert_eq!(p.check(a, now), None);
        let secs: Vec<u64> = (0..7)
            .map(|_| p.offence(a, now).penalty.as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 16, 16]);
        let first = p.check(a, now).unwrap();
        assert_eq!(
            (first.remaining.as_secs(), first.offences, first.first),
            (16, 7, true)
        );
        let again = p.check(a, now + Duration::from_secs(15)).unwrap();
        assert_eq!((again.remaining.as_secs(), again.first), (1, false));
        assert_eq!(p.check(a, now + Duration::from_secs(16)), None);
        // Another address is not affected; a success forgives.
        assert_eq!(p.check(ip("192.0.2.3"), now), None);
        p.forgive(a);
        assert_eq!(p.offence(a, now).penalty, Duration::from_secs(1));
        // Offences are forgotten after a while.
        let later = now + PenaltySettings::default().memory + Duration::from_secs(1);
        assert_eq!(p.offence(a, later).count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_sources_count_per_prefix_and_mapped_ipv4_as_ipv4() {
        let mut p = Penalties::new(PenaltySettings::default());
        let now = Instant::now();
        p.offence(ip("2001:db8:1:2::1"), now);
        assert!(p.check(ip("2001:db8:1:2:ffff::9"), now).is_some());
        assert!(p.check(ip("2001:db8:1:3::1"), now).is_none());
        p.offence(ip("::ffff:192.0.2.9"), now);
        assert!(p.check(ip("192.0.2.9"), now).is_some());
        assert_eq!(p.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_with_100000_offending_sources() {
        let settings = PenaltySettings::default();
        let mut p = Penalties::new(settings.clone());
        let start = Instant::now();
        let first = ip("198.51.100.1");
        p.offence(first, start);
        for i in 0..100_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0xcb00_7100 + i));
            p.offence(addr, start + Duration::from_millis(u64::from(i) + 1));
            assert!(p.len() <= settings.max_tracked);
        }
        assert_eq!(p.by_age.len(), p.by_source.len());
        assert_eq!(p.len(), settings.max_tracked);
        // The oldest offender was dropped first.
        assert_eq!(p.check(first, start), None);
    }
}
