//! The forward proxy's live forwardings: ids, ports, owners and expiry. Pure bookkeeping; the
//! API server installs and removes the kernel entries each change here stands for.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// How long a forwarding lives without a keepalive when `<keepalive_interval>` is 0 or unset:
/// three of IBM ascp's default 60 s keepalives.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(180);
/// How often expired forwardings are swept when `<cleanup_interval>` is unset.
pub const DEFAULT_SWEEP: Duration = Duration::from_secs(10);

/// One live forwarding: `client` reaches `server` through proxy port `port` (TCP and UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The id told to the client (`proxy_id`), sequential from 1.
    pub id: u64,
    /// The id of its kernel entries (their comment).
    pub entry_id: Uuid,
    /// The node-API user who opened it (as sent when authentication is off).
    pub user: String,
    /// The client's address, as the proxy saw it.
    pub client: IpAddr,
    /// The outside server's SSH (TCP) address.
    pub server_tcp: SocketAddr,
    /// The outside server's FASP (UDP) address.
    pub server_udp: SocketAddr,
    /// The proxy port, the same for TCP and UDP.
    pub port: u16,
    /// When it was opened.
    pub opened: Instant,
    /// The last open or keepalive.
    pub last_seen: Instant,
}

/// Why a table operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Every port of the range is in use.
    #[error("every port of {low}-{high} is in use by a live forwarding")]
    Exhausted {
        /// The range's first port.
        low: u16,
        /// The range's last port.
        high: u16,
    },
    /// No live forwarding has this id, or it belongs to another client or user (the same answer,
    /// so ids of others cannot be probed).
    #[error("no forwarding {0} of this client and user")]
    Unknown(u64),
}

/// The live forwardings, their ports, and their expiry.
#[derive(Debug)]
pub struct ForwardTable {
    low: u16,
    high: u16,
    expiry: Duration,
    next_id: u64,
    next_port: u16,
    live: BTreeMap<u64, Forwarding>,
    ports: BTreeSet<u16>,
    reserved: BTreeSet<u16>,
}

impl ForwardTable {
    /// A table handing out ports `low..=high` except `reserved`, expiring forwardings `expiry`
    /// after their last keepalive. `low > high` is treated as the single port `low`.
    ///
    /// `reserved` holds the proxy's own listening ports (the API's 9091/9092, the SSH front end,
    /// the reverse proxy's UDP ports): IBM's default range 5000-10000 holds 9091 and 9092, and a
    /// forwarding on one of them would send that client's next API call to the outside server.
    pub fn new(low: u16, high: u16, expiry: Duration, reserved: BTreeSet<u16>) -> ForwardTable {
        let high = high.max(low);
        ForwardTable {
            low,
            high,
            expiry,
            next_id: 1,
            next_port: low,
            live: BTreeMap::new(),
            ports: BTreeSet::new(),
            reserved,
        }
    }

    /// A reload: new forwardings get ports of `low..=high` except `reserved` and live
    /// `expiry` after their last keepalive; live forwardings keep their ports, even outside the
    /// new range.
    pub fn reconfigure(&mut self, low: u16, high: u16, expiry: Duration, reserved: BTreeSet<u16>) {
        let high = high.max(low);
        self.low = low;
        self.high = high;
        self.expiry = expiry;
        self.reserved = reserved;
        if !(low..=high).contains(&self.next_port) {
            self.next_port = low;
        }
    }

    /// How long a forwarding lives without keepalives.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Opens a forwarding on a free port. Ports are handed out round-robin, so a port just
    /// freed (whose conntrack flows may linger) is the last to be reused.
    pub fn open(
        &mut self,
        user: &str,
        client: IpAddr,
        server_tcp: SocketAddr,
        server_udp: SocketAddr,
        now: Instant,
    ) -> Result<Forwarding, TableError> {
        let span = u32::from(self.high - self.low) + 1;
        let mut port = self.next_port;
        let mut found = None;
        for _ in 0..span {
            if !self.ports.contains(&port) && !self.reserved.contains(&port) {
                found = Some(port);
                break;
            }
            port = if port >= self.high {
                self.low
            } else {
                port + 1
            };
        }
        let Some(port) = found else {
            return Err(TableError::Exhausted {
                low: self.low,
                high: self.high,
            });
        };
        self.next_port = if port >= self.high {
            self.low
        } else {
            port + 1
        };
        let forwarding = Forwarding {
            id: self.next_id,
            entry_id: Uuid::new_v4(),
            user: user.to_string(),
            client,
            server_tcp,
            server_udp,
            port,
            opened: now,
            last_seen: now,
        };
        self.next_id += 1;
        self.ports.insert(port);
        self.live.insert(forwarding.id, forwarding.clone());
        Ok(forwarding)
    }

    fn owned(
        &mut self,
        id: u64,
        client: IpAddr,
        user: &str,
    ) -> Result<&mut Forwarding, TableError> {
        match self.live.get_mut(&id) {
            Some(f) if f.client == client && f.user == user => Ok(f),
            _ => Err(TableError::Unknown(id)),
        }
    }

    /// A keepalive from the forwarding's own client and user: it lives another `expiry`.
    pub fn keepalive(
        &mut self,
        id: u64,
        client: IpAddr,
        user: &str,
        now: Instant,
    ) -> Result<Forwarding, TableError> {
        let f = self.owned(id, client, user)?;
        f.last_seen = now;
        Ok(f.clone())
    }

    /// Closes a forwarding of this client and user, returning it (its entries are the
    /// caller's to remove).
    pub fn close(&mut self, id: u64, client: IpAddr, user: &str) -> Result<Forwarding, TableError> {
        self.owned(id, client, user)?;
        self.take(id).ok_or(TableError::Unknown(id))
    }

    /// Removes a forwarding whatever its owner (for an install that failed, or shutdown).
    pub fn take(&mut self, id: u64) -> Option<Forwarding> {
        let f = self.live.remove(&id)?;
        self.ports.remove(&f.port);
        Some(f)
    }

    /// Removes and returns every forwarding whose last keepalive is `expiry` or more ago.
    pub fn expire(&mut self, now: Instant) -> Vec<Forwarding> {
        let dead: Vec<u64> = self
            .live
            .values()
            .filter(|f| now.saturating_duration_since(f.last_seen) >= self.expiry)
            .map(|f| f.id)
            .collect();
        dead.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// The live forwardings, by id.
    pub fn list(&self) -> impl Iterator<Item = &Forwarding> {
        self.live.values()
    }

    /// How many are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const CLIENT: &str = "192.0.2.2";

    fn open(t: &mut ForwardTable, now: Instant) -> Result<Forwarding, TableError> {
        t.open(
            "proxyuser",
            CLIENT.parse().unwrap(),
            addr("203.0.113.23:22"),
            addr("203.0.113.23:33001"),
            now,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn ids_and_ports_are_handed_out_and_a_full_range_is_refused() {
        let now = Instant::now();
        let mut t = ForwardTable::new(5000, 5002, DEFAULT_EXPIRY, BTreeSet::new());
        let got: Vec<_> = (0..3).map(|_| open(&mut t, now).unwrap()).collect();
        assert_eq!(got.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            got.iter().map(|f| f.port).collect::<Vec<_>>(),
            [5000, 5001, 5002]
        );
        assert_eq!(
            open(&mut t, now).unwrap_err().to_string(),
            "every port of 5000-5002 is in use by a live forwarding"
        );
        let client: IpAddr = CLIENT.parse().unwrap();
        t.close(2, client, "proxyuser").unwrap();
        let again = open(&mut t, now).unwrap();
        assert_eq!((again.id, again.port), (4, 5001));
        assert_eq!(t.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_port_is_reused_last() {
        let now = Instant::now();
        let mut t = ForwardTable::new(5000, 5002, DEFAULT_EXPIRY, BTreeSet::new());
        let first = open(&mut t, now).unwrap();
        t.take(first.id);
        assert_eq!(open(&mut t, now).unwrap().port, 5001);
        assert_eq!(open(&mut t, now).unwrap().port, 5002);
        assert_eq!(open(&mut t, now).unwrap().port, 5000);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_owner_may_keep_alive_or_close() {
        let now = Instant::now();
        let mut t = ForwardTable::new(5000, 5010, DEFAULT_EXPIRY, BTreeSet::new());
        let f = open(&mut t, now).unwrap();
        let client: IpAddr = CLIENT.parse().unwrap();
        let other: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(
            t.keepalive(f.id, other, "proxyuser", now),
            Err(TableError::Unknown(1))
        );
        assert_eq!(
            t.close(f.id, client, "mallory"),
            Err(TableError::Unknown(1))
        );
        assert_eq!(
            t.close(99, client, "proxyuser"),
            Err(TableError::Unknown(99))
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.close(f.id, client, "proxyuser").unwrap().port, 5000);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn forwardings_without_keepalives_expire_and_keepalives_keep_them() {
        let mut t = ForwardTable::new(5000, 5010, Duration::from_secs(30), BTreeSet::new());
        let client: IpAddr = CLIENT.parse().unwrap();
        let kept = open(&mut t, Instant::now()).unwrap();
        let dropped = open(&mut t, Instant::now()).unwrap();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            t.keepalive(kept.id, client, "proxyuser", Instant::now())
                .unwrap();
            let gone = t.expire(Instant::now());
            assert!(gone.iter().all(|f| f.id == dropped.id), "{gone:?}");
        }
        assert_eq!(t.list().map(|f| f.id).collect::<Vec<_>>(), [kept.id]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(t.expire(Instant::now()).len(), 1);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_proxys_own_ports_are_never_handed_out() {
        let now = Instant::now();
        let reserved = BTreeSet::from([9091, 9092, 33001]);
        let mut t = ForwardTable::new(9090, 9093, DEFAULT_EXPIRY, reserved);
        let ports: Vec<u16> = (0..2).map(|_| open(&mut t, now).unwrap().port).collect();
        assert_eq!(ports, [9090, 9093]);
        assert!(matches!(
            open(&mut t, now),
            Err(TableError::Exhausted {
                low: 9090,
                high: 9093
            })
        ));
    }

    #[test]
    fn a_single_port_range_works() {
        let now = Instant::now();
        let mut t = ForwardTable::new(6000, 6000, DEFAULT_EXPIRY, BTreeSet::new());
        assert_eq!(open(&mut t, now).unwrap().port, 6000);
        assert!(open(&mut t, now).is_err());
    }
}
