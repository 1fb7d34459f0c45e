//! The nftables backend (the default): each session is one element in a DNAT map and one in a
//! SNAT map or masquerade set of the proxy's own table, added and deleted over one long-lived
//! NETLINK_NETFILTER socket. An entry with a TCP twin ([`SessionEntry::tcp_backend`]) has two
//! more, in `tcp_sessions` and in `tcp_source_nat` or `tcp_masq_sessions`, always added,
//! refreshed and deleted in the same transaction as its UDP elements. See [`ruleset`] for the
//! table and the rules that look the maps up.

pub mod elements;
pub mod ruleset;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use uuid::Uuid;

use self::elements::{ElemOp, Element, Family, Listed, Part, SetRef};
use self::ruleset::{Collection, Keying};
use super::command::{self, Netns};
use super::conntrack;
use super::entry::{InstalledEntry, SessionEntry, SessionKey};
use super::error::{DataplaneError, Errors};
use super::netlink::{Errno, NfnlSocket};
use super::{Backend, Forwarder, ReconcileReport};

/// Socket buffers: room for the ACKs of the largest batch (see `MAX_BATCH`).
const SOCKET_BUFFER: usize = 8 << 20;
/// Elements per nf_tables transaction in bulk operations (reconcile, purge).
const MAX_BATCH: usize = 1000;

/// The nftables forwarder. It belongs to the network namespace it was opened in: its netlink
/// socket and the `nft` commands it runs stay there, whichever thread uses it.
pub struct NftablesForwarder {
    netns: Netns,
    sock: NfnlSocket,
    /// Whether the kernel restarts an element's timer when it is re-added (Linux >= 6.12);
    /// otherwise refresh deletes and re-adds in one transaction. Probed by `prepare`.
    in_place_refresh: bool,
    /// What the probe found.
    probed_in_place: bool,
}

impl NftablesForwarder {
    /// Opens the netlink socket in the calling thread's network namespace; a
    /// [`DataplaneError::Setup`] when `nft` (which `prepare` and `purge` run) is not installed.
    pub fn open() -> Result<Self, DataplaneError> {
        if !command::on_path("nft") {
            return Err(DataplaneError::Setup(
                "nft not found in PATH; install the nftables package (apt-get install nftables)"
                    .into(),
            ));
        }
        let netns = Netns::current()?;
        let sock = NfnlSocket::open(SOCKET_BUFFER).map_err(|e| {
            DataplaneError::io(
                "opening the NETLINK_NETFILTER socket (needs CAP_NET_ADMIN)",
                e,
            )
        })?;
        Ok(NftablesForwarder {
            netns,
            sock,
            in_place_refresh: false,
            probed_in_place: false,
        })
    }

    /// Whether refresh restarts timers in place (known after `prepare`).
    pub fn refreshes_in_place(&self) -> bool {
        self.in_place_refresh
    }

    /// Makes refresh delete and re-add elements, as on kernels older than 6.12, even where the
    /// kernel could restart timers in place (`false` goes back to what `prepare` found). Lets the
    /// fallback path be tested on any kernel.
    pub fn force_delete_add_refresh(&mut self, force: bool) {
        if force {
            self.in_place_refresh = false;
        } else {
            self.in_place_refresh = self.probed_in_place;
        }
    }

    fn nft(&self, script: &str) -> Result<(), DataplaneError> {
        command::run(&self.netns, "nft", &["-f", "-"], Some(script)).map_err(|e| match e {
            DataplaneError::Command { status, stderr, .. } if status == command::NOT_FOUND => {
                DataplaneError::Setup(format!(
                    "cannot run nft ({stderr}); install the nftables package (apt-get install nftables)"
                ))
            }
            other => other,
        })?;
        Ok(())
    }

    /// Finds out whether re-adding an element restarts its timer: adds a probe element with a
    /// 60 s timeout, re-adds it with 61 s, and reads the timeout back.
    fn probe_refresh(&mut self) -> Result<bool, DataplaneError> {
        let set = ruleset::set(Family::V4, Collection::Masquerade, false);
        // 0.0.0.0 . 0 never matches a real packet.
        let key = vec![Part::Addr(IpAddr::from([0, 0, 0, 0])), Part::Port(0)];
        let probe = |secs| Element {
            key: key.clone(),
            data: None,
            timeout: Duration::from_secs(secs),
            comment: "fasp-proxy refresh probe".into(),
        };
        let what = "probing element timer refresh";
        let io = |e| DataplaneError::io(what, e);
        let _ =
            elements::apply(&mut self.sock, &[ElemOp::Delete(set, key.clone())], 1).map_err(io)?;
        let added =
            elements::apply(&mut self.sock, &[ElemOp::Add(set, probe(60))], 1).map_err(io)?;
        kernel_result(what, &added)?;
        let refreshed =
            elements::apply(&mut self.sock, &[ElemOp::Refresh(set, probe(61))], 1).map_err(io)?;
        let listed = set.list(&mut self.sock).map_err(io)?;
        let in_place = refreshed.iter().all(Result::is_ok)
            && listed
                .iter()
                .any(|l| l.key == key && l.timeout == Some(Duration::from_secs(61)));
        let deleted =
            elements::apply(&mut self.sock, &[ElemOp::Delete(set, key)], 1).map_err(io)?;
        kernel_result(what, &deleted)?;
        Ok(in_place)
    }

    /// The element operations that add `entry` (Add) or refresh it (Refresh): its DNAT element
    /// and its SNAT or masquerade element, for UDP and, when it has one, for its TCP twin, in
    /// the order of [`session_sets`].
    fn element_ops(entry: &SessionEntry, refresh: bool) -> Vec<ElemOp> {
        let element = |key: Vec<Part>, data: Option<Vec<Part>>| Element {
            key,
            data,
            timeout: entry.lifetime,
            comment: entry.id.to_string(),
        };
        let to = |addr: SocketAddr| Some(vec![Part::Addr(addr.ip()), Part::Port(addr.port())]);
        let snat = entry.snat.map(|addr| vec![Part::Addr(addr)]);
        let key = key_parts(&entry.key());
        let mut elements = vec![
            element(key.clone(), to(entry.backend)),
            element(key, snat.clone()),
        ];
        if let Some(tcp) = entry.tcp_backend {
            // client address . proxy port, whatever `client_port` (validate() wants it None).
            let key = vec![Part::Addr(entry.client), Part::Port(entry.proxy_port)];
            elements.push(element(key.clone(), to(tcp)));
            elements.push(element(key, snat));
        }
        session_sets(entry)
            .into_iter()
            .zip(elements)
            .map(|(set, e)| {
                if refresh {
                    ElemOp::Refresh(set, e)
                } else {
                    ElemOp::Add(set, e)
                }
            })
            .collect()
    }

    /// Delete operations for every collection a key may have an element in.
    fn delete_ops(key: &SessionKey, present: &[SetRef]) -> Vec<ElemOp> {
        present
            .iter()
            .map(|set| ElemOp::Delete(*set, key_parts(key)))
            .collect()
    }

    /// Sends `ops` as one transaction; every op either committed or none.
    fn transaction(
        &mut self,
        what: &str,
        ops: &[ElemOp],
    ) -> Result<Vec<Result<(), Errno>>, DataplaneError> {
        let mut encoded = Vec::with_capacity(ops.len());
        for op in ops {
            encoded.push(op.encode().map_err(|e| DataplaneError::io(what, e))?);
        }
        let report = self
            .sock
            .batch(encoded)
            .map_err(|e| DataplaneError::io(what, e))?;
        if let Some(errno) = report.batch_error {
            return Err(DataplaneError::Kernel {
                what: what.to_string(),
                errno,
            });
        }
        let mut results = vec![Ok(()); ops.len()];
        for (i, errno) in report.failed {
            results[i] = Err(errno);
        }
        Ok(results)
    }

    /// Which session holds `key`, from the DNAT map's comments.
    fn owner_of(&mut self, key: &SessionKey) -> Option<Uuid> {
        let family = Family::of(key.client);
        let set = ruleset::set(family, Collection::Sessions, key.client_port.is_some());
        let parts = key_parts(key);
        set.list(&mut self.sock)
            .ok()?
            .into_iter()
            .find(|l| l.key == parts)
            .and_then(|l| l.comment.and_then(|c| Uuid::parse_str(&c).ok()))
    }

    /// Every element of every collection, by family and key.
    fn read_all(&mut self) -> Result<BTreeMap<SessionKey, Found>, DataplaneError> {
        let mut found: BTreeMap<SessionKey, Found> = BTreeMap::new();
        for family in Family::ALL {
            for set in ruleset::all_sets(family) {
                let listed = match set.list(&mut self.sock) {
                    Ok(l) => l,
                    // No table (not prepared yet, or purged): nothing of ours there.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => {
                        return Err(DataplaneError::io(
                            format!(
                                "listing {} {} {}",
                                family.nft_keyword(),
                                set.table,
                                set.name
                            ),
                            e,
                        ))
                    }
                };
                for l in listed {
                    let Some(key) = session_key(&l.key) else {
                        continue;
                    };
                    let f = found.entry(key).or_default();
                    f.sets.push(set);
                    f.absorb(&set, l);
                }
            }
        }
        // The refresh probe's element is not a session.
        found.retain(|k, _| !k.client.is_unspecified());
        Ok(found)
    }

    /// A session's elements (two, four with a TCP twin), in one transaction: all or nothing. A taken key is
    /// [`DataplaneError::KeyTaken`] (naming the owner from the DNAT map's comment), a missing
    /// table a [`DataplaneError::Setup`].
    fn add_elements(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        let what = format!("session {}: installing {}", entry.id, entry.key());
        let results = self.transaction(&what, &Self::element_ops(entry, false))?;
        if results.contains(&Err(Errno::EXIST)) {
            let key = entry.key();
            return Err(DataplaneError::KeyTaken {
                id: entry.id,
                key,
                owner: self.owner_of(&key),
            });
        }
        if results.contains(&Err(Errno::NOENT)) {
            return Err(DataplaneError::Setup(format!(
                "{what}: the proxy's table {} {} is missing; prepare() creates it",
                Family::of(entry.client).nft_keyword(),
                ruleset::TABLE
            )));
        }
        kernel_result(&what, &results)
    }

    fn drop_entries(
        &mut self,
        found: Vec<(SessionKey, Found)>,
        errors: &mut Errors,
    ) -> Vec<InstalledEntry> {
        let ops: Vec<ElemOp> = found
            .iter()
            .flat_map(|(key, f)| Self::delete_ops(key, &f.sets))
            .collect();
        match elements::apply(&mut self.sock, &ops, MAX_BATCH) {
            Ok(results) => {
                for (op, r) in ops.iter().zip(results) {
                    if let Err(errno) = r {
                        if errno != Errno::NOENT {
                            errors.push(DataplaneError::Kernel {
                                what: format!("deleting an element of {}", op.set().name),
                                errno,
                            });
                        }
                    }
                }
            }
            Err(e) => errors
                .0
                .push(DataplaneError::io("deleting stale session elements", e)),
        }
        let removed: Vec<InstalledEntry> = found
            .into_iter()
            .filter_map(|(key, f)| f.installed(key))
            .collect();
        errors.note(conntrack::delete_installed_flows(&mut self.sock, &removed));
        removed
    }
}

/// The collections a session has an element in: the DNAT map, and the SNAT map or the
/// masquerade set, keyed with or without the client port; with a TCP twin also `tcp_sessions`
/// and `tcp_source_nat` or `tcp_masq_sessions`.
fn session_sets(entry: &SessionEntry) -> Vec<SetRef> {
    let family = Family::of(entry.client);
    let with_port = entry.client_port.is_some();
    let nat = if entry.snat.is_some() {
        Collection::SourceNat
    } else {
        Collection::Masquerade
    };
    let mut sets = vec![
        ruleset::set(family, Collection::Sessions, with_port),
        ruleset::set(family, nat, with_port),
    ];
    if entry.tcp_backend.is_some() {
        sets.push(ruleset::tcp_set(family, Collection::Sessions));
        sets.push(ruleset::tcp_set(family, nat));
    }
    sets
}

/// What was found of one key across the collections. The TCP twin's elements are keyed like
/// the any-port UDP ones (client address . proxy port), so they land in the same `Found`.
#[derive(Debug, Default)]
struct Found {
    sets: Vec<SetRef>,
    id: Option<Uuid>,
    /// From the UDP DNAT map: without it the key is a leftover.
    backend: Option<SocketAddr>,
    /// From `tcp_sessions`.
    tcp_backend: Option<SocketAddr>,
    snat: Option<IpAddr>,
    expires: Option<Duration>,
}

impl Found {
    fn absorb(&mut self, set: &SetRef, l: Listed) {
        if self.id.is_none() {
            self.id = l.comment.as_deref().and_then(|c| Uuid::parse_str(c).ok());
        }
        let Some((collection, keying)) = ruleset::role(set.name) else {
            return;
        };
        match (collection, keying, l.data.as_deref()) {
            (
                Collection::Sessions,
                Keying::ClientPort | Keying::AnyPort,
                Some([Part::Addr(a), Part::Port(p)]),
            ) => {
                self.backend = Some(SocketAddr::new(*a, *p));
                self.expires = l.expires;
            }
            (Collection::Sessions, Keying::Tcp, Some([Part::Addr(a), Part::Port(p)])) => {
                self.tcp_backend = Some(SocketAddr::new(*a, *p));
            }
            // The UDP and the TCP SNAT elements of one entry hold the same address.
            (Collection::SourceNat, _, Some([Part::Addr(a)])) => self.snat = Some(*a),
            _ => {}
        }
    }

    /// The entry as the kernel holds it; `None` for leftovers without a UDP DNAT element (also
    /// a key with TCP elements only).
    fn installed(&self, key: SessionKey) -> Option<InstalledEntry> {
        Some(InstalledEntry {
            id: self.id,
            key,
            backend: self.backend?,
            tcp_backend: self.tcp_backend,
            snat: self.snat,
            expires: self.expires,
        })
    }
}

fn key_parts(key: &SessionKey) -> Vec<Part> {
    let mut parts = vec![Part::Addr(key.client)];
    if let Some(p) = key.client_port {
        parts.push(Part::Port(p));
    }
    parts.push(Part::Port(key.proxy_port));
    parts
}

fn session_key(parts: &[Part]) -> Option<SessionKey> {
    match parts {
        [Part::Addr(client), Part::Port(cport), Part::Port(pport)] => Some(SessionKey {
            client: *client,
            client_port: Some(*cport),
            proxy_port: *pport,
        }),
        [Part::Addr(client), Part::Port(pport)] => Some(SessionKey {
            client: *client,
            client_port: None,
            proxy_port: *pport,
        }),
        _ => None,
    }
}

fn kernel_result(what: &str, results: &[Result<(), Errno>]) -> Result<(), DataplaneError> {
    match results.iter().find_map(|r| r.err()) {
        Some(errno) => Err(DataplaneError::Kernel {
            what: what.to_string(),
            errno,
        }),
        None => Ok(()),
    }
}

impl Forwarder for NftablesForwarder {
    fn kind(&self) -> Backend {
        Backend::Nftables
    }

    fn prepare(&mut self) -> Result<(), DataplaneError> {
        let script: String = Family::ALL
            .into_iter()
            .map(ruleset::prepare_script)
            .collect();
        self.nft(&script)?;
        self.probed_in_place = self.probe_refresh()?;
        self.in_place_refresh = self.probed_in_place;
        Ok(())
    }

    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        // Then: a stale un-NATed flow of the same tuple would shadow the new entry.
        super::install_or_roll_back(self, entry, Self::add_elements, |fw| {
            conntrack::delete_session_flows(&mut fw.sock, entry)
        })
    }

    fn refresh(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        entry.validate()?;
        let what = format!("session {}: refreshing {}", entry.id, entry.key());
        if self.in_place_refresh {
            let results = self.transaction(&what, &Self::element_ops(entry, true))?;
            return kernel_result(&what, &results);
        }
        // Older kernels: delete and re-add in one transaction restarts the timer.
        let mut ops = Self::delete_ops(&entry.key(), &session_sets(entry));
        ops.extend(Self::element_ops(entry, false));
        let results = self.transaction(&what, &ops)?;
        if results.contains(&Err(Errno::NOENT)) {
            // It had expired already: add it back.
            let results = self.transaction(&what, &Self::element_ops(entry, false))?;
            return kernel_result(&what, &results);
        }
        kernel_result(&what, &results)
    }

    fn remove(&mut self, entry: &SessionEntry) -> Result<(), Errors> {
        let mut errors = Errors::default();
        // Only the elements the session has: asking to delete an absent element aborts
        // the kernel transaction, and an aborted transaction costs a grace period (~16 ms).
        let sets = session_sets(entry);
        let ops = Self::delete_ops(&entry.key(), &sets);
        // Each element on its own: one that is absent (ENOENT) must not keep the others.
        match elements::apply(&mut self.sock, &ops, MAX_BATCH) {
            Ok(results) => {
                for (op, r) in ops.iter().zip(results) {
                    match r {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(errno) => errors.push(DataplaneError::Kernel {
                            what: format!(
                                "session {}: deleting its element of {}",
                                entry.id,
                                op.set().name
                            ),
                            errno,
                        }),
                    }
                }
            }
            Err(e) => errors.push(DataplaneError::io(
                format!("session {}: deleting its elements", entry.id),
                e,
            )),
        }
        errors.note(conntrack::delete_session_flows(&mut self.sock, entry));
        errors.into_result(())
    }

    fn counters(&mut self, entry: &SessionEntry) -> Result<Option<(u64, u64)>, DataplaneError> {
        conntrack::session_counters(&mut self.sock, entry)
    }

    fn list(&mut self) -> Result<Vec<InstalledEntry>, DataplaneError> {
        Ok(self
            .read_all()?
            .into_iter()
            .filter_map(|(key, f)| f.installed(key))
            .collect())
    }

    fn reconcile(&mut self, live: &[Uuid]) -> Result<ReconcileReport, Errors> {
        let mut errors = Errors::default();
        let found = self.read_all()?;
        let (keep, drop): (Vec<_>, Vec<_>) = found
            .into_iter()
            .partition(|(_, f)| f.backend.is_some() && f.id.is_some_and(|id| live.contains(&id)));
        let removed = self.drop_entries(drop, &mut errors);
        errors.into_result(ReconcileReport {
            kept: keep.len(),
            removed,
        })
    }

    fn purge(&mut self) -> Result<ReconcileReport, Errors> {
        let mut errors = Errors::default();
        let report = errors.note(self.reconcile(&[])).unwrap_or_default();
        let script: String = Family::ALL.into_iter().map(ruleset::purge_script).collect();
        errors.note(self.nft(&script));
        errors.into_result(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::entry::sample_entry;

    fn tcp_entry() -> SessionEntry {
        SessionEntry {
            client_port: None,
            tcp_backend: Some("198.51.100.2:22".parse().unwrap()),
            ..sample_entry()
        }
    }

    fn names(ops: &[ElemOp]) -> Vec<&'static str> {
        ops.iter().map(|op| op.set().name).collect()
    }

    #[test]
    fn a_tcp_twin_adds_and_refreshes_its_elements_with_the_udp_ones() {
        let e = tcp_entry();
        let add = NftablesForwarder::element_ops(&e, false);
        assert_eq!(
            names(&add),
            [
                "sessions_any_port",
                "masq_sessions_any_port",
                "tcp_sessions",
                "tcp_masq_sessions"
            ]
        );
        let key = vec![Part::Addr(e.client), Part::Port(e.proxy_port)];
        let ElemOp::Add(_, dnat) = &add[2] else {
            panic!("{add:?}")
        };
        assert_eq!(dnat.key, key);
        assert_eq!(
            dnat.data,
            Some(vec![
                Part::Addr("198.51.100.2".parse().unwrap()),
                Part::Port(22)
            ])
        );
        assert_eq!(dnat.comment, e.id.to_string());
        assert!(NftablesForwarder::element_ops(&e, true)
            .iter()
            .all(|op| matches!(op, ElemOp::Refresh(..))));
        let snat = SessionEntry {
            snat: Some("198.51.100.1".parse().unwrap()),
            ..e.clone()
        };
        let ops = NftablesForwarder::element_ops(&snat, false);
        assert_eq!(names(&ops)[3], "tcp_source_nat");
        let ElemOp::Add(_, nat) = &ops[3] else {
            panic!("{ops:?}")
        };
        assert_eq!(
            nat.data,
            Some(vec![Part::Addr("198.51.100.1".parse().unwrap())])
        );
        let deletes = NftablesForwarder::delete_ops(&e.key(), &session_sets(&e));
        assert_eq!(names(&deletes), names(&add));
        assert!(deletes
            .iter()
            .all(|op| matches!(op, ElemOp::Delete(_, k) if *k == key)));
        // Without a twin: the two UDP elements only.
        assert_eq!(
            names(&NftablesForwarder::element_ops(&sample_entry(), false)),
            ["sessions", "masq_sessions"]
        );
    }

    #[test]
    fn the_tcp_backend_is_read_from_tcp_sessions_and_a_tcp_only_key_is_a_leftover() {
        let e = tcp_entry();
        let listed = |data: Option<Vec<Part>>| Listed {
            key: vec![Part::Addr(e.client), Part::Port(e.proxy_port)],
            data,
            timeout: None,
            expires: Some(Duration::from_secs(30)),
            comment: Some(e.id.to_string()),
        };
        let to = |a: &str, p| Some(vec![Part::Addr(a.parse().unwrap()), Part::Port(p)]);
        let mut tcp_only = Found::default();
        let tcp_sessions = ruleset::tcp_set(Family::V4, Collection::Sessions);
        tcp_only.absorb(&tcp_sessions, listed(to("198.51.100.2", 22)));
        assert_eq!(
            tcp_only.backend, None,
            "tcp_sessions is not the UDP DNAT map"
        );
        assert_eq!(tcp_only.installed(e.key()), None, "a leftover");

        let mut found = Found::default();
        found.absorb(
            &ruleset::set(Family::V4, Collection::Sessions, false),
            listed(to("198.51.100.2", 33001)),
        );
        found.absorb(&tcp_sessions, listed(to("198.51.100.2", 22)));
        let installed = found.installed(e.key()).unwrap();
        assert_eq!(installed.backend, e.backend);
        assert_eq!(installed.tcp_backend, e.tcp_backend);
        assert_eq!(installed.expires, Some(Duration::from_secs(30)));
    }
}
