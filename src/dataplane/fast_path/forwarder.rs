//! [`FastPathForwarder`]: the `<fast_path>` data plane. A [`Forwarder`] around the configured
//! backend (nftables or iptables) that also puts every session it can in the BPF fast path.
//!
//! Per session with a client port (what `src_port_filtering true` gives, the default):
//! 1. the backend installs the session as always (its DNAT entry, the stale-flow clean-up);
//! 2. the session's conntrack flow is created with its NAT, as its first packet would have made
//!    it ([`conntrack::create_nat_flow`]): the kernel, not this code, picks the source port
//!    (the client's, unless another flow to the backend uses it), and the tuple stays reserved
//!    against every other flow for as long as the session lives (each refresh extends it);
//! 3. the fast path's maps get the same translation, both directions.
//!
//! The fast path then forwards the session's packets at the interfaces' ingress, before
//! conntrack and nftables see them. If it is gone (the daemon killed: its TCX links and maps go
//! with the process) the same packets meet the reserved flow in conntrack and are translated
//! the same way, by the kernel's usual path; the restart's reconcile removes them as today.
//!
//! Sessions without a client port, a TCP twin (the forward proxy) or a failure to hold them
//! (map full, a clashing flow) use the backend's path only; a failure says so in the log.
//! Removal takes the session out of the fast path first, so its packets stop at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use uuid::Uuid;

use super::{FastPath, Flow, FlowKey};
use crate::dataplane::command::Netns;
use crate::dataplane::conntrack::{self, FlowTuple};
use crate::dataplane::netlink::NfnlSocket;
use crate::dataplane::{
    Backend, DataplaneError, Errors, Forwarder, InstalledEntry, ReconcileReport, SessionEntry,
};

/// ctnetlink socket buffers: one request and its ACK at a time.
const CT_SOCKET_BUFFER: usize = 1 << 20;

/// A session in the fast path.
#[derive(Debug, Clone, Copy)]
struct Held {
    flow: Flow,
    /// The session's conntrack flow (client → proxy), which reserves the translation.
    orig: FlowTuple,
    /// Packets and bytes counted by map entries this session had before (a refresh that had
    /// to reserve its translation again writes a new entry): the counters never go back.
    carried: (u64, u64),
}

/// The backend `inner`, plus the BPF fast path for the sessions it can hold.
pub struct FastPathForwarder {
    inner: Box<dyn Forwarder>,
    fast: FastPath,
    netns: Netns,
    ct: NfnlSocket,
    /// UDP sockets, unbound, used only to ask the routing table which source address a
    /// destination gets (`connect` + `getsockname`): masquerade's choice, made at install.
    route_v4: UdpSocket,
    route_v6: Option<UdpSocket>,
    held: HashMap<Uuid, Held>,
    /// The interfaces the program is attached to.
    interfaces: Vec<String>,
}

impl FastPathForwarder {
    /// Loads the fast path (maps of `max_entries` sessions) around `inner`, in the calling
    /// thread's network namespace, which `inner` must belong to too; [`Forwarder::prepare`]
    /// attaches it. Fails with the reason (no BPF permission, a kernel without TCX) and
    /// changes nothing.
    pub fn open(inner: Box<dyn Forwarder>, max_entries: u32) -> Result<Self, DataplaneError> {
        let fast = FastPath::load(max_entries).map_err(|e| DataplaneError::Setup(e.to_string()))?;
        let netns = Netns::current()?;
        let ct = NfnlSocket::open(CT_SOCKET_BUFFER)
            .map_err(|e| DataplaneError::io("opening a ctnetlink socket for the fast path", e))?;
        let route_v4 = UdpSocket::bind("0.0.0.0:0")
            .map_err(|e| DataplaneError::io("opening a route-lookup socket", e))?;
        // A host without IPv6 still forwards IPv4.
        let route_v6 = UdpSocket::bind("[::]:0").ok();
        Ok(FastPathForwarder {
            inner,
            fast,
            netns,
            ct,
            route_v4,
            route_v6,
            held: HashMap::new(),
            interfaces: Vec::new(),
        })
    }

    /// The interfaces the program is attached to, by name.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Attaches the program at ingress of every interface of the namespace but `lo`.
    fn attach_everywhere(&mut self) -> Result<(), DataplaneError> {
        let fast = &mut self.fast;
        let attached = self.netns.run_in(|| -> Result<Vec<String>, String> {
            let names = nix::net::if_::if_nameindex()
                .map_err(|e| format!("listing the network interfaces: {e}"))?;
            let mut attached = Vec::new();
            for iface in names.iter() {
                let name = iface.name().to_string_lossy().into_owned();
                if name == "lo" {
                    continue;
                }
                fast.attach(&name).map_err(|e| e.to_string())?;
                attached.push(name);
            }
            Ok(attached)
        })?;
        self.interfaces = attached.map_err(DataplaneError::Setup)?;
        log::info!(
            "BPF fast path attached at the ingress of {} ({} sessions at most)",
            self.interfaces.join(", "),
            self.fast.max_entries()
        );
        Ok(())
    }

    /// The source address the routing table gives packets to `to`: what `masquerade` uses.
    fn source_for(&self, to: SocketAddr) -> Result<IpAddr, String> {
        let sock = match to {
            SocketAddr::V4(_) => &self.route_v4,
            SocketAddr::V6(_) => self
                .route_v6
                .as_ref()
                .ok_or("this host has no IPv6 socket support")?,
        };
        sock.connect(to)
            .and_then(|()| sock.local_addr())
            .map(|a| a.ip())
            .map_err(|e| format!("no route to backend {to}: {e}"))
    }

    /// Reserves the session's translation in conntrack and puts it in the fast path.
    fn hold(&mut self, entry: &SessionEntry, client_port: u16) -> Result<Held, String> {
        let snat = match entry.snat {
            Some(addr) => addr,
            None => self.source_for(entry.backend)?,
        };
        let orig = FlowTuple::udp(
            SocketAddr::new(entry.client, client_port),
            SocketAddr::new(entry.proxy_addr, entry.proxy_port),
        );
        let flow = match conntrack::create_nat_flow(
            &mut self.ct,
            &orig,
            entry.backend,
            snat,
            entry.lifetime,
        ) {
            Ok(flow) => flow,
            // The client's first datagram came through the backend's entry first: that flow
            // has the session's NAT already.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                conntrack::get_flow(&mut self.ct, &orig)
                    .map_err(|e| format!("reading its conntrack flow: {e}"))?
                    .ok_or("its conntrack flow vanished")?
            }
            // nf_nat finds no free source port (64,512 flows to one server address and port from
            // one source address are all there can be), or no memory.
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                return Err(format!(
                    "creating its conntrack flow: no free source port from {snat} to {} (or no \
                     memory): {e}",
                    entry.backend
                ))
            }
            Err(e) => return Err(format!("creating its conntrack flow: {e}")),
        };
        let reply = flow.reply.ok_or("its conntrack flow has no reply tuple")?;
        if reply.src != entry.backend {
            return Err(format!(
                "its conntrack flow goes to {}, not to the backend",
                reply.src
            ));
        }
        let held = Held {
            flow: Flow {
                client: orig.src,
                proxy: orig.dst,
                snat: reply.dst,
                backend: entry.backend,
            },
            orig,
            carried: (0, 0),
        };
        self.fast.insert(&held.flow).map_err(|e| e.to_string())?;
        Ok(held)
    }

    /// What the fast path forwarded from the client of a held session, in all its map entries.
    fn fast_counters(&self, id: Uuid, held: &Held) -> Result<(u64, u64), DataplaneError> {
        let now = self
            .fast
            .counters(&held.flow.key())
            .map_err(|e| DataplaneError::Setup(format!("session {id}: fast path: {e}")))?
            .map(|c| (c.forward.packets, c.forward.bytes))
            .unwrap_or((0, 0));
        Ok((held.carried.0 + now.0, held.carried.1 + now.1))
    }

    /// Takes a held session out of the maps.
    fn release(&mut self, id: Uuid, key: &FlowKey) -> Result<(), DataplaneError> {
        self.fast
            .remove(key)
            .map(|_| ())
            .map_err(|e| DataplaneError::Setup(format!("session {id}: fast path: {e}")))
    }

    /// Empties the maps of everything, held or not.
    fn release_all(&mut self) -> Errors {
        let mut errors = Errors::default();
        let held: Vec<(Uuid, FlowKey)> = self
            .held
            .drain()
            .map(|(id, h)| (id, h.flow.key()))
            .collect();
        for (id, key) in held {
            errors.note(self.release(id, &key));
        }
        match self.fast.list() {
            Ok(left) => {
                for f in left {
                    if let Err(e) = self.fast.remove(&f.flow.key()) {
                        errors.push(DataplaneError::Setup(format!("fast path: {e}")));
                    }
                }
            }
            Err(e) => errors.push(DataplaneError::Setup(format!("fast path: {e}"))),
        }
        errors
    }
}

impl Forwarder for FastPathForwarder {
    fn kind(&self) -> Backend {
        self.inner.kind()
    }

    fn prepare(&mut self) -> Result<(), DataplaneError> {
        self.inner.prepare()?;
        self.attach_everywhere()
    }

    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        self.inner.install(entry)?;
        let Some(client_port) = entry.client_port else {
            return Ok(()); // any source port: the backend's path
        };
        if entry.tcp_backend.is_some() {
            return Ok(()); // the forward proxy's SSH twin: the backend's path
        }
        match self.hold(entry, client_port) {
            Ok(held) => {
                log::debug!("[{}] fast path: {}", entry.id, held.flow);
                self.held.insert(entry.id, held);
            }
            Err(why) => log::warn!(
                "[{}] not on the fast path, the kernel's usual path forwards it: {why}",
                entry.id
            ),
        }
        Ok(())
    }

    fn refresh(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        self.inner.refresh(entry)?;
        let Some(held) = self.held.get(&entry.id).copied() else {
            return Ok(());
        };
        match conntrack::set_flow_timeout(&mut self.ct, &held.orig, entry.lifetime) {
            Ok(()) => Ok(()),
            // Someone flushed conntrack: reserve the translation again (the kernel may pick
            // another source port now, so the maps are written again too).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let carried = self.fast_counters(entry.id, &held)?;
                self.held.remove(&entry.id);
                self.release(entry.id, &held.flow.key())?;
                match self.hold(entry, held.orig.src.port()) {
                    Ok(again) => {
                        self.held.insert(entry.id, Held { carried, ..again });
                    }
                    Err(why) => log::warn!(
                        "[{}] left the fast path (its conntrack flow was deleted), the \
                         kernel's usual path forwards it: {why}",
                        entry.id
                    ),
                }
                Ok(())
            }
            Err(e) => Err(DataplaneError::io(
                format!("session {}: extending its conntrack flow", entry.id),
                e,
            )),
        }
    }

    fn remove(&mut self, entry: &SessionEntry) -> Result<(), Errors> {
        let mut errors = Errors::default();
        if let Some(held) = self.held.remove(&entry.id) {
            errors.note(self.release(entry.id, &held.flow.key()));
        }
        // The backend deletes the session's conntrack flows, the reserved one among them.
        errors.note(self.inner.remove(entry));
        errors.into_result(())
    }

    fn list(&mut self) -> Result<Vec<InstalledEntry>, DataplaneError> {
        self.inner.list()
    }

    fn counters(&mut self, entry: &SessionEntry) -> Result<Option<(u64, u64)>, DataplaneError> {
        let kernel = self.inner.counters(entry)?;
        let Some(held) = self.held.get(&entry.id).copied() else {
            return Ok(kernel);
        };
        let (p, b) = self.fast_counters(entry.id, &held)?;
        let (kp, kb) = kernel.unwrap_or((0, 0));
        Ok(Some((p + kp, b + kb)))
    }

    fn reconcile(&mut self, live: &[Uuid]) -> Result<ReconcileReport, Errors> {
        let mut errors = Errors::default();
        let dead: Vec<Uuid> = self
            .held
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in dead {
            if let Some(held) = self.held.remove(&id) {
                errors.note(self.release(id, &held.flow.key()));
            }
        }
        let report = errors.note(self.inner.reconcile(live));
        match report {
            Some(report) if errors.is_empty() => Ok(report),
            _ => Err(errors),
        }
    }

    fn purge(&mut self) -> Result<ReconcileReport, Errors> {
        let mut errors = self.release_all();
        let fast = &mut self.fast;
        let interfaces = std::mem::take(&mut self.interfaces);
        match self.netns.run_in(|| {
            interfaces
                .iter()
                .filter_map(|i| fast.detach(i).err().map(|e| e.to_string()))
                .collect::<Vec<_>>()
        }) {
            Ok(failed) => {
                for e in failed {
                    errors.push(DataplaneError::Setup(format!("fast path: {e}")));
                }
            }
            Err(e) => errors.push(e),
        }
        let report = errors.note(self.inner.purge());
        match report {
            Some(report) if errors.is_empty() => Ok(report),
            _ => Err(errors),
        }
    }
}
