//! The BPF fast path: `bpf/fast_path.c` (built by build.rs, embedded here) loaded with aya,
//! attached at TC ingress of the proxy's interfaces, and its two session maps.
//!
//! A [`FastPath`] owns everything it puts in the kernel: the program, its maps (`fp_forward`,
//! keyed like the nftables `sessions` map, and `fp_reply`, keyed by the reply's tuple), and one
//! TCX link per interface. None of them is pinned, so all of it goes when the `FastPath` is
//! dropped or its process dies (kill -9 included): the kernel detaches a TCX link when its
//! last file descriptor closes. Packets the maps do not hold fall through unchanged to the
//! rest of the stack (nftables, conntrack, routing).
//!
//! [`FastPathForwarder`] is the [`crate::dataplane::Forwarder`] that keeps it in step with the
//! configured backend (`<fast_path>true</fast_path>`).

pub mod error;
pub mod flow;
pub mod forwarder;
pub mod maps;

pub use error::FastPathError;
pub use flow::{Counters, Flow, FlowCounters, FlowKey, InstalledFlow};
pub use forwarder::FastPathForwarder;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, MapError};
use aya::programs::links::LinkOrder;
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfError, EbpfLoader};

use error::{chain, errno};
use maps::{ForwardKey, Layout, ReplyKey, Rewrite};

/// The compiled program (`bpf/fast_path.c`, built by build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fast_path.o"));

/// The program's name (its function in the C source), as `bpftool net` shows it.
pub const PROGRAM: &str = "fasp_fast_path";
/// The forward map: client address . client port . proxy port.
pub const FORWARD_MAP: &str = "fp_forward";
/// The reply map: backend address . port . SNAT address . port.
pub const REPLY_MAP: &str = "fp_reply";
/// Entries per map unless the loader is told otherwise.
pub const DEFAULT_MAX_ENTRIES: u32 = 262_144;

/// `BPF_NOEXIST`: an insert that refuses a key already present.
const BPF_NOEXIST: u64 = 1;

/// The loaded fast path: program, maps, and the interfaces it is attached to.
pub struct FastPath {
    forward: HashMap<MapData, ForwardKey, Rewrite>,
    reply: HashMap<MapData, ReplyKey, Rewrite>,
    /// (network namespace inode, ifindex) → the TCX link.
    links: std::collections::HashMap<(u64, u32), SchedClassifierLinkId>,
    ebpf: Ebpf,
    max_entries: u32,
    load_time: Duration,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("max_entries", &self.max_entries)
            .field("attached", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// Loads the program and creates its two maps, `max_entries` each (the kernel refuses
    /// inserts beyond). Nothing is attached yet.
    pub fn load(max_entries: u32) -> Result<FastPath, FastPathError> {
        let started = Instant::now();
        let layout = Layout::of_object(OBJECT).map_err(FastPathError::Object)?;
        if layout != Layout::EXPECTED {
            return Err(FastPathError::Object(format!(
                "its layout is {layout:?}, this loader's is {:?} (rebuild both together)",
                Layout::EXPECTED
            )));
        }
        if max_entries == 0 {
            return Err(FastPathError::Load("max_entries must be at least 1".into()));
        }
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(FORWARD_MAP, max_entries)
            .set_max_entries(REPLY_MAP, max_entries)
            .load(OBJECT)
            .map_err(load_error)?;
        let program = classifier(&mut ebpf)?;
        program.load().map_err(|e| program_load_error(&e))?;
        let forward = take_hash_map(&mut ebpf, FORWARD_MAP)?;
        let reply = take_hash_map(&mut ebpf, REPLY_MAP)?;
        Ok(FastPath {
            forward,
            reply,
            links: std::collections::HashMap::new(),
            ebpf,
            max_entries,
            load_time: started.elapsed(),
        })
    }

    /// How long [`FastPath::load`] took (object check, maps, verifier).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The maps' capacity.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// The instructions the verifier processed (the kernel's `verified_insns`), if it says.
    pub fn verified_instructions(&self) -> Option<u32> {
        let program = self.ebpf.program(PROGRAM)?;
        program.info().ok()?.verified_instruction_count()
    }

    /// Attaches the program at TC ingress of `iface` in the calling thread's network namespace,
    /// through a TCX link (Linux 6.6 or later), after any program already there. Attaching to
    /// an interface it is attached to already does nothing.
    pub fn attach(&mut self, iface: &str) -> Result<(), FastPathError> {
        let ifindex = ifindex(iface)?;
        let slot = (netns_id()?, ifindex);
        if self.links.contains_key(&slot) {
            return Ok(());
        }
        let attach_error = |e: ProgramError| FastPathError::Attach {
            action: "attaching",
            iface: iface.to_string(),
            ifindex,
            detail: chain(&e),
        };
        let program = classifier(&mut self.ebpf)?;
        // TCX, never a netlink tc filter: a link goes with the process, a filter outlives it.
        let link = program
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(attach_error)?;
        self.links.insert(slot, link);
        Ok(())
    }

    /// [`FastPath::attach`] by interface index.
    pub fn attach_index(&mut self, ifindex: u32) -> Result<(), FastPathError> {
        self.attach(&ifname(ifindex)?)
    }

    /// Detaches the program from `iface` (in the calling thread's network namespace); an
    /// interface it is not attached to is not an error.
    pub fn detach(&mut self, iface: &str) -> Result<(), FastPathError> {
        let ifindex = ifindex(iface)?;
        let Some(link) = self.links.remove(&(netns_id()?, ifindex)) else {
            return Ok(());
        };
        let program = classifier(&mut self.ebpf)?;
        program.detach(link).map_err(|e| FastPathError::Attach {
            action: "detaching",
            iface: iface.to_string(),
            ifindex,
            detail: chain(&e),
        })
    }

    /// The programs attached through TCX at ingress of `iface` (in the calling thread's
    /// network namespace), in the order they run: (program id, name). Any process's, not only
    /// this one's: how an operator or a test sees what is attached.
    pub fn tcx_ingress_programs(iface: &str) -> Result<Vec<(u32, String)>, FastPathError> {
        let ifindex = ifindex(iface)?;
        let (_, programs) =
            SchedClassifier::query_tcx(iface, TcAttachType::Ingress).map_err(|e| {
                FastPathError::Attach {
                    action: "querying the TCX programs beside",
                    iface: iface.to_string(),
                    ifindex,
                    detail: chain(&e),
                }
            })?;
        Ok(programs
            .iter()
            .map(|p| (p.id(), String::from_utf8_lossy(p.name()).into_owned()))
            .collect())
    }

    /// Puts a flow in both maps: the reply entry, then the forward entry (so nothing is
    /// forwarded before its replies can come back). Refuses, changing nothing, a flow whose
    /// forward key or reply tuple another flow holds.
    pub fn insert(&mut self, flow: &Flow) -> Result<(), FastPathError> {
        flow.validate()?;
        let fkey = maps::forward_key(flow.client, flow.proxy.port());
        let rkey = maps::reply_key(flow.backend, flow.snat);
        // Backend to SNAT comes back from the proxy address and port, to the client.
        let back = maps::rewrite(flow.snat.ip(), flow.proxy, flow.client);
        // Client to proxy goes on from the SNAT address and port, to the backend.
        let on = maps::rewrite(flow.proxy.ip(), flow.snat, flow.backend);
        let rkey_text = || format!("reply {} -> {}", flow.backend, flow.snat);
        if self.forward.get(&fkey, 0).is_ok() {
            return Err(FastPathError::KeyTaken {
                map: FORWARD_MAP,
                key: flow.key().to_string(),
            });
        }
        self.reply
            .insert(rkey, back, BPF_NOEXIST)
            .map_err(|e| insert_error(REPLY_MAP, rkey_text(), &e, self.max_entries))?;
        if let Err(e) = self.forward.insert(fkey, on, BPF_NOEXIST) {
            // Not ours to keep: the forward half failed (a racing insert, or a full map).
            let _ = self.reply.remove(&rkey);
            return Err(insert_error(
                FORWARD_MAP,
                flow.key().to_string(),
                &e,
                self.max_entries,
            ));
        }
        Ok(())
    }

    /// Removes a flow from both maps: the forward entry first (the client's packets stop being
    /// forwarded at once), then its reply entry. Returns the flow removed, `None` if there was
    /// none (not an error).
    pub fn remove(&mut self, key: &FlowKey) -> Result<Option<Flow>, FastPathError> {
        let fkey = maps::forward_key(SocketAddr::new(key.client, key.client_port), key.proxy_port);
        let Some(rewrite) = self.forward_value(&fkey, key)? else {
            return Ok(None);
        };
        let flow = flow_of(&fkey, &rewrite).ok_or_else(|| FastPathError::Map {
            map: FORWARD_MAP,
            op: "reading",
            key: key.to_string(),
            detail: "an entry of an unknown address family".into(),
        })?;
        ignore_missing(self.forward.remove(&fkey)).map_err(|e| FastPathError::Map {
            map: FORWARD_MAP,
            op: "removing",
            key: key.to_string(),
            detail: chain(&e),
        })?;
        let rkey = maps::reply_key(flow.backend, flow.snat);
        ignore_missing(self.reply.remove(&rkey)).map_err(|e| FastPathError::Map {
            map: REPLY_MAP,
            op: "removing",
            key: format!("reply {} -> {} (of {key})", flow.backend, flow.snat),
            detail: chain(&e),
        })?;
        Ok(Some(flow))
    }

    /// The flows the maps hold, with their counters.
    pub fn list(&self) -> Result<Vec<InstalledFlow>, FastPathError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for item in self.forward.iter() {
            let (fkey, rewrite) = item.map_err(|e| FastPathError::Map {
                map: FORWARD_MAP,
                op: "listing",
                key: "entries".into(),
                detail: chain(&e),
            })?;
            let Some(flow) = flow_of(&fkey, &rewrite) else {
                continue; // an unknown family: never written by this loader
            };
            if !seen.insert(flow.key()) {
                continue; // the kernel's iteration may repeat a key while the map changes
            }
            let reply = self.reply_counters(&flow)?;
            out.push(InstalledFlow {
                flow,
                counters: FlowCounters {
                    forward: counters_of(&rewrite),
                    reply,
                },
            });
        }
        Ok(out)
    }

    /// The counters of one flow; `None` if the maps do not hold it.
    pub fn counters(&self, key: &FlowKey) -> Result<Option<FlowCounters>, FastPathError> {
        let fkey = maps::forward_key(SocketAddr::new(key.client, key.client_port), key.proxy_port);
        let Some(rewrite) = self.forward_value(&fkey, key)? else {
            return Ok(None);
        };
        let Some(flow) = flow_of(&fkey, &rewrite) else {
            return Ok(None);
        };
        Ok(Some(FlowCounters {
            forward: counters_of(&rewrite),
            reply: self.reply_counters(&flow)?,
        }))
    }

    fn forward_value(
        &self,
        fkey: &ForwardKey,
        key: &FlowKey,
    ) -> Result<Option<Rewrite>, FastPathError> {
        match self.forward.get(fkey, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(FastPathError::Map {
                map: FORWARD_MAP,
                op: "reading",
                key: key.to_string(),
                detail: chain(&e),
            }),
        }
    }

    fn reply_counters(&self, flow: &Flow) -> Result<Counters, FastPathError> {
        let rkey = maps::reply_key(flow.backend, flow.snat);
        match self.reply.get(&rkey, 0) {
            Ok(v) => Ok(counters_of(&v)),
            Err(MapError::KeyNotFound) => Ok(Counters::default()),
            Err(e) => Err(FastPathError::Map {
                map: REPLY_MAP,
                op: "reading",
                key: format!("reply {} -> {}", flow.backend, flow.snat),
                detail: chain(&e),
            }),
        }
    }
}

fn counters_of(r: &Rewrite) -> Counters {
    Counters {
        packets: r.packets,
        bytes: r.bytes,
    }
}

/// The flow a forward entry stands for; `None` for an unknown family byte.
fn flow_of(key: &ForwardKey, r: &Rewrite) -> Option<Flow> {
    let ip = |b: [u8; 16]| maps::ip_from(b, key.family);
    Some(Flow {
        client: SocketAddr::new(ip(key.addr)?, u16::from_be_bytes(key.sport)),
        proxy: SocketAddr::new(ip(r.match_daddr)?, u16::from_be_bytes(key.dport)),
        snat: SocketAddr::new(ip(r.saddr)?, u16::from_be_bytes(r.sport)),
        backend: SocketAddr::new(ip(r.daddr)?, u16::from_be_bytes(r.dport)),
    })
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn insert_error(map: &'static str, key: String, e: &MapError, max: u32) -> FastPathError {
    match errno(e) {
        Some(libc::EEXIST) => FastPathError::KeyTaken { map, key },
        Some(libc::E2BIG) => FastPathError::Map {
            map,
            op: "inserting",
            key,
            detail: format!("the map is full ({max} entries): {}", chain(e)),
        },
        _ => FastPathError::Map {
            map,
            op: "inserting",
            key,
            detail: chain(e),
        },
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, FastPathError> {
    let program = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| FastPathError::Object(format!("no program {PROGRAM}")))?;
    program.try_into().map_err(|e: ProgramError| {
        FastPathError::Object(format!("{PROGRAM} is not a TC classifier: {}", chain(&e)))
    })
}

fn take_hash_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<HashMap<MapData, K, V>, FastPathError> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| FastPathError::Object(format!("no map {name}")))?;
    HashMap::try_from(map).map_err(|e| FastPathError::Object(format!("map {name}: {}", chain(&e))))
}

fn is_permission(code: Option<i32>) -> bool {
    matches!(code, Some(libc::EPERM))
}

fn load_error(e: EbpfError) -> FastPathError {
    if is_permission(errno(&e)) {
        return FastPathError::Permission { detail: chain(&e) };
    }
    FastPathError::Load(chain(&e))
}

fn program_load_error(e: &ProgramError) -> FastPathError {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        let log = verifier_log.to_string();
        if io_error.raw_os_error() == Some(libc::EPERM) {
            return FastPathError::Permission { detail: chain(e) };
        }
        return FastPathError::Verifier {
            errno: io_error.raw_os_error().map_or_else(
                || io::Error::from(io_error.kind()),
                io::Error::from_raw_os_error,
            ),
            log: if log.trim().is_empty() {
                format!("(empty; {io_error})")
            } else {
                log
            },
        };
    }
    if is_permission(errno(e)) {
        return FastPathError::Permission { detail: chain(e) };
    }
    FastPathError::Load(chain(e))
}

/// The index of `iface` in the calling thread's network namespace.
fn ifindex(iface: &str) -> Result<u32, FastPathError> {
    nix::net::if_::if_nametoindex(iface).map_err(|e| FastPathError::Interface {
        iface: iface.to_string(),
        source: io::Error::from(e),
    })
}

/// The name of interface `ifindex` in the calling thread's network namespace.
fn ifname(ifindex: u32) -> Result<String, FastPathError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname(3) requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(FastPathError::Interface {
            iface: format!("#{ifindex}"),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// The calling thread's network namespace, as the inode of its nsfs file.
fn netns_id() -> Result<u64, FastPathError> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| FastPathError::Interface {
            iface: "(network namespace of this thread)".into(),
            source: e,
        })
}
