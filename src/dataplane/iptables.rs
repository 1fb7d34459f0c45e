//! The iptables backend (`forwarding_type iptables`): one DNAT rule per session in a chain the
//! proxy owns, plus the SNAT (or MASQUERADE) rule for that session only, written with
//! `iptables-restore --noflush` batches and read back with `iptables-save -t nat`.
//!
//! What the proxy owns, in table `nat` of both `iptables` (IPv4) and `ip6tables` (IPv6):
//! ```text
//! :FASP_PROXY - [0:0]                      session DNAT rules
//! :FASP_PROXY_POST - [0:0]                 session SNAT / MASQUERADE rules
//! -A PREROUTING -j FASP_PROXY              jump rule (inserted first in PREROUTING)
//! -A POSTROUTING -j FASP_PROXY_POST        jump rule (inserted first in POSTROUTING)
//! ```
//! Nothing else in the table is ever changed or flushed.
//!
//! A session is two rules, added (and deleted) together in one batch:
//! ```text
//! *nat
//! -I FASP_PROXY 1 -s 192.0.2.2/32 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:33001
//! -I FASP_PROXY_POST 1 -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
//! COMMIT
//! ```
//! so that `iptables -t nat -L -n` shows
//! `DNAT 17 -- 192.0.2.2 0.0.0.0/0 udp spt:40000 dpt:33001 ADDRTYPE match dst-type LOCAL /* <uuid> */ to:198.51.100.2:33001`
//! (iptables 1.8.9 prints the protocol as a number with `-n`; without `-n` it prints `udp` and
//! `anywhere`). Sessions that filter on the client's source port are inserted at the top of the
//! chains, sessions without (`src_port_filtering false`) appended, so a session keyed on a port
//! wins over one keyed on any port of the same client, whatever their installation order.
//!
//! Facts measured on iptables v1.8.9 (nf_tables) that shape this module:
//! - declaring an *existing* chain (`:FASP_PROXY - [0:0]`) in an `iptables-restore --noflush`
//!   batch **flushes it**, so [`Forwarder::prepare`] creates missing chains with `-N` (which
//!   fails instead of flushing if the chain appeared meanwhile) and session batches never
//!   declare chains;
//! - `-D` of a rule that does not exist fails the whole batch (`Bad rule (does a matching rule
//!   exist in that chain?)`), so deletions are computed from a fresh `iptables-save` and use the
//!   saved line itself;
//! - a batch is one transaction: when a line fails, nothing of the batch is applied.
//!
//! Rules do not expire: [`Forwarder::refresh`] does nothing, and [`Forwarder::reconcile`] at
//! start is what cleans up after a crash.
//!
//! Every command runs in the network namespace the forwarder was opened in
//! ([`command::run`]), whichever thread calls.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::command::{self, Netns};
use super::conntrack;
use super::entry::{InstalledEntry, SessionEntry, SessionKey};
use super::error::{DataplaneError, Errors};
use super::netlink::NfnlSocket;
use super::{Backend, Forwarder, ReconcileReport};

/// The chain holding the sessions' DNAT rules, jumped to from `nat PREROUTING`.
pub const CHAIN: &str = "FASP_PROXY";
/// The chain holding the sessions' SNAT / MASQUERADE rules, jumped to from `nat POSTROUTING`.
pub const POST_CHAIN: &str = "FASP_PROXY_POST";

/// Receive/send buffer of the ctnetlink socket.
const CT_SOCKET_BUFFER: usize = 8 << 20;

/// `iptables-restore` arguments: keep what the batch does not mention, and wait up to 10 s for
/// the xtables lock (iptables-legacy takes it; iptables-nft ignores it).
const RESTORE_ARGS: [&str; 2] = ["--noflush", "--wait=10"];

/// The jump rule into [`CHAIN`], as `iptables-save` prints it.
const PRE_JUMP: &str = "-A PREROUTING -j FASP_PROXY";
/// The jump rule into [`POST_CHAIN`], as `iptables-save` prints it.
const POST_JUMP: &str = "-A POSTROUTING -j FASP_PROXY_POST";

/// The Debian package shipping the tools.
const PACKAGE_HINT: &str = "install the Debian package iptables (apt-get install iptables)";

/// IPv4 (iptables) or IPv6 (ip6tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const ALL: [Family; 2] = [Family::V4, Family::V6];

    fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// Prefix length of a single host.
    fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// The restore and save tools of one family.
#[derive(Debug)]
struct Tools {
    restore: String,
    save: String,
}

impl Tools {
    /// Checks `binary`, `binary-restore` and `binary-save` exist and are executable.
    fn find(binary: &Path) -> Result<Tools, DataplaneError> {
        let restore = with_suffix(binary, "-restore");
        let save = with_suffix(binary, "-save");
        for path in [binary, restore.as_path(), save.as_path()] {
            check_executable(path)?;
        }
        Ok(Tools {
            restore: path_str(&restore)?,
            save: path_str(&save)?,
        })
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn check_executable(path: &Path) -> Result<(), DataplaneError> {
    let why = match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
        Ok(m) if m.is_file() => "is not executable".to_string(),
        Ok(_) => "is not a file".to_string(),
        Err(e) => format!("cannot be used ({e})"),
    };
    Err(DataplaneError::Setup(format!(
        "iptables backend: {} {why}; it needs iptables, ip6tables and their -restore and -save \
         tools next to iptables_path: {PACKAGE_HINT}",
        path.display()
    )))
}

fn path_str(path: &Path) -> Result<String, DataplaneError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        DataplaneError::Setup(format!(
            "iptables backend: the path {} is not valid UTF-8",
            path.display()
        ))
    })
}

/// The IPv6 sibling of an iptables binary: `/usr/sbin/iptables` → `/usr/sbin/ip6tables`,
/// `/usr/sbin/iptables-legacy` → `/usr/sbin/ip6tables-legacy`.
fn ip6_sibling(iptables: &Path) -> PathBuf {
    let name = iptables
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("iptables"))
        .map_or_else(
            || "ip6tables".to_string(),
            |rest| format!("ip6tables{rest}"),
        );
    iptables.with_file_name(name)
}

/// The iptables backend. See the module documentation for the rules it writes.
pub struct IptablesForwarder {
    netns: Netns,
    ct: NfnlSocket,
    v4: Tools,
    v6: Tools,
}

impl std::fmt::Debug for IptablesForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IptablesForwarder")
            .field("netns", &self.netns)
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .finish_non_exhaustive()
    }
}

impl IptablesForwarder {
    /// Opens the backend in the calling thread's network namespace, which every later command
    /// runs in. `iptables_path` is the IPv4 binary (e.g. `/usr/sbin/iptables`); `ip6tables` is
    /// looked up next to it, and `<binary>-restore` / `<binary>-save` for both. Fails with a
    /// message naming the missing path and the package if a tool is missing, or if the
    /// ctnetlink socket cannot be opened (it needs CAP_NET_ADMIN).
    pub fn open(iptables_path: &Path) -> Result<Self, DataplaneError> {
        let v4 = Tools::find(iptables_path)?;
        let v6 = Tools::find(&ip6_sibling(iptables_path))?;
        let netns = Netns::current()?;
        let ct = NfnlSocket::open(CT_SOCKET_BUFFER).map_err(|e| {
            DataplaneError::io(
                "iptables backend: opening the ctnetlink socket (needs CAP_NET_ADMIN)",
                e,
            )
        })?;
        Ok(IptablesForwarder { netns, ct, v4, v6 })
    }

    /// Installs many sessions with one `iptables-restore` batch per family (to fill a
    /// benchmark or restore a known set quickly). Refuses, changing nothing, if a key is taken
    /// or repeated. Unlike [`Forwarder::install`] it leaves conntrack alone.
    pub fn install_many(&mut self, entries: &[SessionEntry]) -> Result<(), DataplaneError> {
        for family in Family::ALL {
            let mine: Vec<&SessionEntry> = entries
                .iter()
                .filter(|e| Family::of(e.client) == family)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let state = self.save(family)?;
            let mut taken: HashSet<SessionKey> = state
                .rules
                .iter()
                .filter_map(|r| match &r.rule {
                    Ok(Rule::Dnat(d)) => Some(d.key()),
                    _ => None,
                })
                .collect();
            let mut lines = Vec::with_capacity(mine.len() * 2);
            for entry in mine {
                entry.validate()?;
                if !taken.insert(entry.key()) {
                    return Err(DataplaneError::KeyTaken {
                        id: entry.id,
                        key: entry.key(),
                        owner: None,
                    });
                }
                lines.push(DnatRule::of(entry).add_line());
                lines.push(PostRule::of(entry).add_line());
            }
            self.restore(
                family,
                &lines,
                &format!("installing {} sessions", lines.len() / 2),
            )?;
        }
        Ok(())
    }

    fn tools(&self, family: Family) -> &Tools {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Reads table nat of one family (`iptables-save -t nat`).
    fn save(&self, family: Family) -> Result<NatState, DataplaneError> {
        let save = &self.tools(family).save;
        let text = command::run(&self.netns, save, &["-t", "nat"], None)?;
        Ok(NatState::parse(family, &text))
    }

    /// Applies `lines` as one `*nat … COMMIT` batch with `iptables-restore --noflush`; nothing
    /// of it is applied if a line fails. `what` says what the batch is for, in errors.
    fn restore(&self, family: Family, lines: &[String], what: &str) -> Result<(), DataplaneError> {
        if lines.is_empty() {
            return Ok(());
        }
        let batch = batch_text(lines);
        let restore = &self.tools(family).restore;
        command::run(&self.netns, restore, &RESTORE_ARGS, Some(&batch))
            .map(drop)
            .map_err(|e| explain_restore_error(e, &batch, what))
    }

    /// A session's rules (DNAT and POST) in `state`, found by their comment.
    fn session_lines(state: &NatState, id: Uuid) -> impl Iterator<Item = &SavedRule> {
        state
            .rules
            .iter()
            .filter(move |r| matches!(&r.rule, Ok(rule) if rule.id() == Some(id)))
    }

    /// Reconciles, collecting errors in `errors`, and returns what was done.
    fn reconcile_into(&mut self, live: &[Uuid], errors: &mut Errors) -> ReconcileReport {
        let live: HashSet<Uuid> = live.iter().copied().collect();
        let mut report = ReconcileReport::default();
        for family in Family::ALL {
            let Some(state) = errors.note(self.save(family)) else {
                continue;
            };
            let mut lines = Vec::new();
            let mut removed = Vec::new();
            let mut kept = 0;
            for saved in &state.rules {
                let keep =
                    matches!(&saved.rule, Ok(r) if r.id().is_some_and(|id| live.contains(&id)));
                if keep {
                    if matches!(saved.rule, Ok(Rule::Dnat(_))) {
                        kept += 1;
                    }
                    continue;
                }
                lines.push(saved.delete_line());
                if let Ok(Rule::Dnat(d)) = &saved.rule {
                    removed.push(state.installed(d));
                }
            }
            report.kept += kept;
            let what = format!(
                "reconcile: removing {} rule(s) of sessions no live session owns",
                lines.len()
            );
            if errors.note(self.restore(family, &lines, &what)).is_some() {
                report.removed.extend(removed);
            }
        }
        if !report.removed.is_empty() {
            errors.note(conntrack::delete_installed_flows(
                &mut self.ct,
                &report.removed,
            ));
        }
        report
    }
}

impl Forwarder for IptablesForwarder {
    fn kind(&self) -> Backend {
        Backend::Iptables
    }

    /// Creates the chains with `-N` if missing (declaring an existing chain in a `--noflush`
    /// batch would flush it) and inserts the jump rules if missing, one batch per family.
    fn prepare(&mut self) -> Result<(), DataplaneError> {
        for family in Family::ALL {
            let state = self.save(family)?;
            let mut lines = Vec::new();
            // -N FASP_PROXY
            if !state.has_chain {
                lines.push(format!("-N {CHAIN}"));
            }
            // -N FASP_PROXY_POST
            if !state.has_post_chain {
                lines.push(format!("-N {POST_CHAIN}"));
            }
            // -I PREROUTING 1 -j FASP_PROXY   (saved as `-A PREROUTING -j FASP_PROXY`)
            if state.pre_jumps == 0 {
                lines.push(format!("-I PREROUTING 1 -j {CHAIN}"));
            }
            // -I POSTROUTING 1 -j FASP_PROXY_POST   (saved as `-A POSTROUTING -j FASP_PROXY_POST`)
            if state.post_jumps == 0 {
                lines.push(format!("-I POSTROUTING 1 -j {POST_CHAIN}"));
            }
            self.restore(
                family,
                &lines,
                "prepare: creating the proxy's chains and jumps",
            )?;
        }
        Ok(())
    }

    /// Refuses the session with [`DataplaneError::KeyTaken`] if a DNAT rule of the same key
    /// exists (its comment names the owner), adds the DNAT and POST rules in one batch, then
    /// deletes the stale conntrack flows of the client tuple. Lines of the chain it cannot
    /// parse do not block installs ([`Forwarder::list`] reports them, reconcile deletes them).
    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        entry.validate()?;
        let family = Family::of(entry.client);
        let state = self.save(family)?;
        if !state.has_chain || !state.has_post_chain {
            return Err(DataplaneError::Setup(format!(
                "session {}: chain {CHAIN} or {POST_CHAIN} is missing from table nat \
                 ({}); prepare() creates them",
                entry.id,
                self.tools(family).save
            )));
        }
        let key = entry.key();
        if let Some(taken) = state.rules.iter().find_map(|r| match &r.rule {
            Ok(Rule::Dnat(d)) if d.key() == key => Some(d),
            _ => None,
        }) {
            return Err(DataplaneError::KeyTaken {
                id: entry.id,
                key,
                owner: comment_id(&taken.comment),
            });
        }
        let lines = [
            DnatRule::of(entry).add_line(),
            PostRule::of(entry).add_line(),
        ];
        self.restore(family, &lines, &format!("session {}: install", entry.id))?;
        // Only now: a stale un-NATed flow of the same tuple would shadow the new rule. If that
        // fails the install fails whole: the rules go again (the caller never owned them).
        if let Err(e) = conntrack::delete_session_flows(&mut self.ct, entry) {
            let _ = self.remove(entry);
            return Err(e);
        }
        Ok(())
    }

    /// iptables rules do not expire: nothing to do. After a crash, [`Forwarder::reconcile`]
    /// at start removes what no live session owns.
    fn refresh(&mut self, _entry: &SessionEntry) -> Result<(), DataplaneError> {
        Ok(())
    }

    /// Deletes every rule in the proxy's chains whose comment is the session's UUID (read from
    /// `iptables-save` first, so a session already gone is not an error), in one batch, then
    /// the session's conntrack flows.
    fn remove(&mut self, entry: &SessionEntry) -> Result<(), Errors> {
        let mut errors = Errors::default();
        let family = Family::of(entry.client);
        let what = format!("session {}: remove", entry.id);
        match self.save(family) {
            Ok(state) => {
                let lines: Vec<String> = Self::session_lines(&state, entry.id)
                    .map(SavedRule::delete_line)
                    .collect();
                errors.note(self.restore(family, &lines, &what));
            }
            Err(e) => {
                errors.0.push(e);
                // Could not list: try the exact rules anyway.
                let lines = [
                    DnatRule::of(entry).delete_line(),
                    PostRule::of(entry).delete_line(),
                ];
                errors.note(self.restore(family, &lines, &what));
            }
        }
        errors.note(conntrack::delete_session_flows(&mut self.ct, entry));
        errors.into_result(())
    }

    /// The session flow's conntrack counters (over netlink, as the nftables backend).
    fn counters(&mut self, entry: &SessionEntry) -> Result<Option<(u64, u64)>, DataplaneError> {
        conntrack::session_counters(&mut self.ct, entry)
    }

    /// Reads the sessions back from `iptables-save -t nat` and `ip6tables-save -t nat`. A rule
    /// in the proxy's chains that is not of the shape this module writes is an error naming
    /// the line.
    fn list(&mut self) -> Result<Vec<InstalledEntry>, DataplaneError> {
        let mut entries = Vec::new();
        for family in Family::ALL {
            let state = self.save(family)?;
            if let Some((saved, why)) = state.rules.iter().find_map(|r| match &r.rule {
                Err(why) => Some((r, why)),
                Ok(_) => None,
            }) {
                return Err(saved.parse_error(&self.tools(family).save, why));
            }
            entries.extend(state.rules.iter().filter_map(|r| match &r.rule {
                Ok(Rule::Dnat(d)) => Some(state.installed(d)),
                _ => None,
            }));
        }
        Ok(entries)
    }

    /// Deletes every rule of the proxy's chains whose comment is not the UUID of a live
    /// session, including rules it cannot parse, in one batch per family, then the conntrack
    /// flows of the removed sessions.
    fn reconcile(&mut self, live: &[Uuid]) -> Result<ReconcileReport, Errors> {
        let mut errors = Errors::default();
        let report = self.reconcile_into(live, &mut errors);
        errors.into_result(report)
    }

    /// Reconciles with no live session, then deletes the jump rules and flushes and deletes
    /// the proxy's chains, one batch per family. Purging when nothing exists is not an error.
    fn purge(&mut self) -> Result<ReconcileReport, Errors> {
        let mut errors = Errors::default();
        let mut report = self.reconcile_into(&[], &mut errors);
        let mut leftovers = Vec::new();
        for family in Family::ALL {
            let Some(state) = errors.note(self.save(family)) else {
                continue;
            };
            let mut lines = Vec::new();
            // -D PREROUTING -j FASP_PROXY   (once per occurrence)
            lines.extend((0..state.pre_jumps).map(|_| format!("-D PREROUTING -j {CHAIN}")));
            // -D POSTROUTING -j FASP_PROXY_POST
            lines.extend((0..state.post_jumps).map(|_| format!("-D POSTROUTING -j {POST_CHAIN}")));
            // -F FASP_PROXY / -X FASP_PROXY
            for (exists, chain) in [(state.has_chain, CHAIN), (state.has_post_chain, POST_CHAIN)] {
                if exists {
                    lines.push(format!("-F {chain}"));
                    lines.push(format!("-X {chain}"));
                }
            }
            // Sessions the reconcile could not delete go with the flush: their flows too.
            let left: Vec<InstalledEntry> = state
                .rules
                .iter()
                .filter_map(|r| match &r.rule {
                    Ok(Rule::Dnat(d)) => Some(state.installed(d)),
                    _ => None,
                })
                .collect();
            let what = "purge: removing the proxy's jump rules and chains";
            if errors.note(self.restore(family, &lines, what)).is_some() {
                leftovers.extend(left);
            }
        }
        if !leftovers.is_empty() {
            errors.note(conntrack::delete_installed_flows(&mut self.ct, &leftovers));
            report.removed.extend(leftovers);
        }
        errors.into_result(report)
    }
}

/// The text fed to `iptables-restore --noflush`.
fn batch_text(lines: &[String]) -> String {
    let mut text = String::from("*nat\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// Adds what the batch was for and the text of the line `iptables-restore` complains about to
/// its error. The tool names the line in several ways: `iptables-restore: line 2 failed: …`,
/// `Error occurred at line: 3`, `line 4: CHAIN_DEL failed (Device or resource busy): chain X`.
fn explain_restore_error(error: DataplaneError, batch: &str, what: &str) -> DataplaneError {
    let DataplaneError::Command {
        command,
        status,
        stderr,
    } = error
    else {
        return error;
    };
    let failed_line = stderr.match_indices("line").find_map(|(i, _)| {
        let rest = stderr[i + "line".len()..].trim_start_matches([':', ' ']);
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: usize = rest[..digits].parse().ok()?;
        let text = batch.lines().nth(n.checked_sub(1)?)?;
        Some(format!(" [line {n} of the batch: {text}]"))
    });
    DataplaneError::Command {
        command: format!("{what}: {command}"),
        status,
        stderr: format!("{stderr}{}", failed_line.unwrap_or_default()),
    }
}

/// The session UUID in a rule comment, if it is one.
fn comment_id(comment: &str) -> Option<Uuid> {
    Uuid::try_parse(comment).ok()
}

/// A session's DNAT rule in [`CHAIN`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct DnatRule {
    comment: String,
    client: IpAddr,
    client_port: Option<u16>,
    proxy_port: u16,
    backend: SocketAddr,
}

impl DnatRule {
    fn of(entry: &SessionEntry) -> Self {
        DnatRule {
            comment: entry.id.to_string(),
            client: entry.client,
            client_port: entry.client_port,
            proxy_port: entry.proxy_port,
            backend: entry.backend,
        }
    }

    fn key(&self) -> SessionKey {
        SessionKey {
            client: self.client,
            client_port: self.client_port,
            proxy_port: self.proxy_port,
        }
    }

    /// The rule, as `iptables-save` prints it after `-A FASP_PROXY`. `addrtype LOCAL`: only
    /// datagrams addressed to the proxy itself, never the client's traffic the host routes
    /// elsewhere (the nftables backend's `fib daddr type local`):
    /// ```text
    /// -s 192.0.2.2/32 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:33001
    /// -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:33001
    /// -s 2001:db8:1::2/128 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination [2001:db8:2::2]:33001
    /// ```
    fn spec(&self) -> String {
        let family = Family::of(self.client);
        let sport = self
            .client_port
            .map(|p| format!(" --sport {p}"))
            .unwrap_or_default();
        format!(
            "-s {}/{} -p udp -m udp{sport} --dport {} -m addrtype --dst-type LOCAL -m comment --comment {} -j DNAT --to-destination {}",
            self.client,
            family.host_len(),
            self.proxy_port,
            self.comment,
            self.backend // `198.51.100.2:33001`, `[2001:db8:2::2]:33001`
        )
    }

    /// `-I FASP_PROXY 1 <spec>` with a client port (so it wins over any-port rules),
    /// `-A FASP_PROXY <spec>` without.
    fn add_line(&self) -> String {
        add_line(CHAIN, self.client_port.is_some(), &self.spec())
    }

    /// `-D FASP_PROXY <spec>`.
    fn delete_line(&self) -> String {
        format!("-D {CHAIN} {}", self.spec())
    }

    /// Parses the tokens after `-A FASP_PROXY`, accepting exactly what [`DnatRule::spec`]
    /// writes.
    fn parse(t: &mut Tokens<'_>) -> Result<Self, String> {
        t.expect("-s")?;
        let client = t.host()?;
        let family = Family::of(client);
        t.expect_all(&["-p", "udp", "-m", "udp"])?;
        let client_port = if t.eat("--sport") {
            Some(t.port()?)
        } else {
            None
        };
        t.expect("--dport")?;
        let proxy_port = t.port()?;
        t.expect_all(&["-m", "addrtype", "--dst-type", "LOCAL"])?;
        t.expect_all(&["-m", "comment", "--comment"])?;
        let comment = t.next("a comment")?.to_string();
        t.expect_all(&["-j", "DNAT", "--to-destination"])?;
        let backend = t.socket_addr(family)?;
        t.end()?;
        Ok(DnatRule {
            comment,
            client,
            client_port,
            proxy_port,
            backend,
        })
    }
}

/// A session's SNAT or MASQUERADE rule in [`POST_CHAIN`]: only packets this session's DNAT
/// rule translated (conntrack status DNAT, original ports) are rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PostRule {
    comment: String,
    client: IpAddr,
    client_port: Option<u16>,
    proxy_port: u16,
    backend: SocketAddr,
    snat: Option<IpAddr>,
}

impl PostRule {
    fn of(entry: &SessionEntry) -> Self {
        PostRule {
            comment: entry.id.to_string(),
            client: entry.client,
            client_port: entry.client_port,
            proxy_port: entry.proxy_port,
            backend: entry.backend,
            snat: entry.snat,
        }
    }

    fn key(&self) -> SessionKey {
        SessionKey {
            client: self.client,
            client_port: self.client_port,
            proxy_port: self.proxy_port,
        }
    }

    /// The rule, as `iptables-save` prints it after `-A FASP_PROXY_POST`:
    /// ```text
    /// -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
    /// -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment <uuid> -j SNAT --to-source 198.51.100.1
    /// -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
    /// ```
    fn spec(&self) -> String {
        let len = Family::of(self.client).host_len();
        let sport = self
            .client_port
            .map(|p| format!(" --ctorigsrcport {p}"))
            .unwrap_or_default();
        let target = match self.snat {
            Some(addr) => format!("SNAT --to-source {addr}"),
            None => "MASQUERADE".to_string(),
        };
        format!(
            "-s {}/{len} -d {}/{len} -p udp -m udp --dport {} -m conntrack --ctstate DNAT{sport} \
             --ctorigdstport {} -m comment --comment {} -j {target}",
            self.client,
            self.backend.ip(),
            self.backend.port(),
            self.proxy_port,
            self.comment,
        )
    }

    /// `-I FASP_PROXY_POST 1 <spec>` with a client port, `-A FASP_PROXY_POST <spec>` without.
    fn add_line(&self) -> String {
        add_line(POST_CHAIN, self.client_port.is_some(), &self.spec())
    }

    /// `-D FASP_PROXY_POST <spec>`.
    fn delete_line(&self) -> String {
        format!("-D {POST_CHAIN} {}", self.spec())
    }

    /// Parses the tokens after `-A FASP_PROXY_POST`, accepting exactly what
    /// [`PostRule::spec`] writes.
    fn parse(t: &mut Tokens<'_>) -> Result<Self, String> {
        t.expect("-s")?;
        let client = t.host()?;
        let family = Family::of(client);
        t.expect("-d")?;
        let backend_ip = t.host()?;
        if Family::of(backend_ip) != family {
            return Err(format!(
                "{client} and {backend_ip} are of different families"
            ));
        }
        t.expect_all(&["-p", "udp", "-m", "udp", "--dport"])?;
        let backend = SocketAddr::new(backend_ip, t.port()?);
        t.expect_all(&["-m", "conntrack", "--ctstate", "DNAT"])?;
        let client_port = if t.eat("--ctorigsrcport") {
            Some(t.port()?)
        } else {
            None
        };
        t.expect("--ctorigdstport")?;
        let proxy_port = t.port()?;
        t.expect_all(&["-m", "comment", "--comment"])?;
        let comment = t.next("a comment")?.to_string();
        t.expect("-j")?;
        let snat = match t.next("MASQUERADE or SNAT")? {
            "MASQUERADE" => None,
            "SNAT" => {
                t.expect("--to-source")?;
                let addr = t.addr()?;
                if Family::of(addr) != family {
                    return Err(format!("SNAT address {addr} is not of the client's family"));
                }
                Some(addr)
            }
            other => return Err(format!("expected MASQUERADE or SNAT, found `{other}`")),
        };
        t.end()?;
        Ok(PostRule {
            comment,
            client,
            client_port,
            proxy_port,
            backend,
            snat,
        })
    }
}

/// `-I CHAIN 1 spec` (port-specific sessions go first) or `-A CHAIN spec`.
fn add_line(chain: &str, first: bool, spec: &str) -> String {
    if first {
        format!("-I {chain} 1 {spec}")
    } else {
        format!("-A {chain} {spec}")
    }
}

/// A rule of one of the proxy's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Dnat(DnatRule),
    Post(PostRule),
}

impl Rule {
    fn id(&self) -> Option<Uuid> {
        match self {
            Rule::Dnat(d) => comment_id(&d.comment),
            Rule::Post(p) => comment_id(&p.comment),
        }
    }
}

/// One rule line of the proxy's chains as `iptables-save` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SavedRule {
    /// The whole line, `-A FASP_PROXY …`.
    line: String,
    /// What it says, or why it is not of the shape this module writes.
    rule: Result<Rule, String>,
}

impl SavedRule {
    /// The same rule with `-D` instead of `-A`: deletes it whatever it says (also a line the
    /// parser does not understand; `iptables-save` output is valid `iptables-restore` input).
    fn delete_line(&self) -> String {
        match self.line.strip_prefix("-A ") {
            Some(rest) => format!("-D {rest}"),
            None => self.line.clone(),
        }
    }

    fn parse_error(&self, save: &str, why: &str) -> DataplaneError {
        DataplaneError::io(
            format!("reading the proxy's rules ({save} -t nat)"),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "rule `{}` is not of the shape the proxy writes: {why}",
                    self.line
                ),
            ),
        )
    }
}

/// What the proxy owns in one family's table nat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct NatState {
    has_chain: bool,
    has_post_chain: bool,
    /// How many `-A PREROUTING -j FASP_PROXY` rules exist.
    pre_jumps: usize,
    /// How many `-A POSTROUTING -j FASP_PROXY_POST` rules exist.
    post_jumps: usize,
    /// The rules of both chains, in order.
    rules: Vec<SavedRule>,
}

impl NatState {
    /// Reads `iptables-save -t nat` output. Only the proxy's chains, their rules and the two
    /// jump rules are looked at; everything else is foreign and ignored.
    fn parse(family: Family, text: &str) -> NatState {
        let mut state = NatState::default();
        let mut in_nat = false;
        for raw in text.lines() {
            let line = raw.trim_end();
            if line.starts_with('*') {
                in_nat = line == "*nat";
                continue;
            }
            if !in_nat || line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "COMMIT" {
                in_nat = false;
            } else if let Some(decl) = line.strip_prefix(':') {
                match decl.split_whitespace().next() {
                    Some(CHAIN) => state.has_chain = true,
                    Some(POST_CHAIN) => state.has_post_chain = true,
                    _ => {}
                }
            } else if line == PRE_JUMP {
                state.pre_jumps += 1;
            } else if line == POST_JUMP {
                state.post_jumps += 1;
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, _) = rest.split_once(' ').unwrap_or((rest, ""));
                if chain == CHAIN || chain == POST_CHAIN {
                    state.rules.push(SavedRule {
                        line: line.to_string(),
                        rule: parse_rule(family, line),
                    });
                }
            }
        }
        state
    }

    /// The installed entry of a DNAT rule, with the SNAT address of its POST rule (same
    /// comment and key); masquerade when there is none.
    fn installed(&self, dnat: &DnatRule) -> InstalledEntry {
        let snat = self.rules.iter().find_map(|r| match &r.rule {
            Ok(Rule::Post(p))
                if p.comment == dnat.comment
                    && p.key() == dnat.key()
                    && p.backend == dnat.backend =>
            {
                Some(p.snat)
            }
            _ => None,
        });
        InstalledEntry {
            id: comment_id(&dnat.comment),
            key: dnat.key(),
            backend: dnat.backend,
            snat: snat.flatten(),
            expires: None,
        }
    }
}

/// Parses one `-A FASP_PROXY …` or `-A FASP_PROXY_POST …` line of `family`.
fn parse_rule(family: Family, line: &str) -> Result<Rule, String> {
    let tokens = tokenize(line)?;
    let mut t = Tokens {
        tokens: &tokens,
        pos: 0,
    };
    t.expect("-A")?;
    let rule = match t.next("a chain")? {
        CHAIN => Rule::Dnat(DnatRule::parse(&mut t)?),
        POST_CHAIN => Rule::Post(PostRule::parse(&mut t)?),
        other => return Err(format!("`{other}` is not one of the proxy's chains")),
    };
    let client = match &rule {
        Rule::Dnat(d) => d.client,
        Rule::Post(p) => p.client,
    };
    if Family::of(client) != family {
        return Err(format!("address {client} in the wrong family's table"));
    }
    Ok(rule)
}

/// Splits an `iptables-save` line into words; a word may be double-quoted with `\"` and `\\`
/// escapes inside (iptables-save quotes comments that need it).
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(tokens);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some(c) => word.push(c),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_ascii_whitespace()) {
                return Err("text right after a closing quote".into());
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                word.push(c);
            }
        }
        tokens.push(word);
    }
}

/// A cursor over the words of a rule, for the strict parsers.
struct Tokens<'a> {
    tokens: &'a [String],
    pos: usize,
}

impl Tokens<'_> {
    fn next(&mut self, what: &str) -> Result<&str, String> {
        let token = self
            .tokens
            .get(self.pos)
            .ok_or_else(|| format!("expected {what}, found the end of the line"))?;
        self.pos += 1;
        Ok(token)
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        match self.tokens.get(self.pos) {
            Some(t) if t == word => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => Err(format!("expected `{word}`, found `{t}`")),
            None => Err(format!("expected `{word}`, found the end of the line")),
        }
    }

    fn expect_all(&mut self, words: &[&str]) -> Result<(), String> {
        words.iter().try_for_each(|w| self.expect(w))
    }

    /// Consumes `word` if it comes next.
    fn eat(&mut self, word: &str) -> bool {
        let found = self.tokens.get(self.pos).is_some_and(|t| t == word);
        if found {
            self.pos += 1;
        }
        found
    }

    fn end(&self) -> Result<(), String> {
        match self.tokens.get(self.pos..) {
            Some([]) | None => Ok(()),
            Some(rest) => Err(format!("unexpected `{}` at the end", rest.join(" "))),
        }
    }

    /// A single host: `192.0.2.2/32` or `2001:db8::2/128`.
    fn host(&mut self) -> Result<IpAddr, String> {
        let token = self.next("an address")?;
        let (addr, len) = token
            .split_once('/')
            .ok_or_else(|| format!("expected ADDRESS/PREFIX, found `{token}`"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        if len != Family::of(addr).host_len().to_string() {
            return Err(format!("`{token}` is not a single host"));
        }
        Ok(addr)
    }

    fn addr(&mut self) -> Result<IpAddr, String> {
        let token = self.next("an address")?;
        token
            .parse()
            .map_err(|_| format!("`{token}` is not an IP address"))
    }

    /// A UDP port, 1..=65535.
    fn port(&mut self) -> Result<u16, String> {
        let token = self.next("a port")?;
        match token.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(format!("`{token}` is not a port (1..=65535)")),
        }
    }

    /// `198.51.100.2:33001` or `[2001:db8:2::2]:33001`, of `family`.
    fn socket_addr(&mut self, family: Family) -> Result<SocketAddr, String> {
        let token = self.next("ADDRESS:PORT")?;
        let addr: SocketAddr = token
            .parse()
            .map_err(|_| format!("`{token}` is not a single ADDRESS:PORT"))?;
        if Family::of(addr.ip()) != family || addr.port() == 0 {
            return Err(format!("`{token}` is not a usable target"));
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::entry::sample_entry;

    const UUID: &str = "3a9fd819-59c3-42bc-b0a2-d26304a1eb84";

    fn v6_entry() -> SessionEntry {
        SessionEntry {
            client: "2001:db8:1::2".parse().unwrap(),
            proxy_addr: "2001:db8:1::1".parse().unwrap(),
            backend: "[2001:db8:2::2]:33001".parse().unwrap(),
            ..sample_entry()
        }
    }

    /// `iptables-save -t nat` output as v1.8.9 prints it, with foreign rules around ours.
    fn saved(body: &str) -> String {
        format!(
            "# Generated by iptables-save v1.8.9 (nf_tables) on Sat Nov 21 05:53:13 2026\n\
             *nat\n\
             :PREROUTING ACCEPT [0:0]\n\
             :INPUT ACCEPT [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [3:180]\n\
             :DOCKER - [0:0]\n\
             :FASP_PROXY - [0:0]\n\
             :FASP_PROXY_POST - [0:0]\n\
             -A PREROUTING -j FASP_PROXY\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A POSTROUTING -j FASP_PROXY_POST\n\
             -A DOCKER -i docker0 -j RETURN\n\
             {body}\
             COMMIT\n\
             # Completed on Sat Nov 21 05:53:13 2026\n"
        )
    }

    #[test]
    fn dnat_rule_text_v4_with_and_without_source_port() {
        let mut e = sample_entry();
        assert_eq!(
            DnatRule::of(&e).add_line(),
            format!(
                "-I FASP_PROXY 1 -s 192.0.2.2/32 -p udp -m udp --sport 40000 --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:33001"
            )
        );
        e.client_port = None;
        assert_eq!(
            DnatRule::of(&e).add_line(),
            format!(
                "-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:33001"
            )
        );
        assert_eq!(
            DnatRule::of(&e).delete_line(),
            format!(
                "-D FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:33001"
            )
        );
    }

    #[test]
    fn dnat_rule_text_v6() {
        assert_eq!(
            DnatRule::of(&v6_entry()).add_line(),
            format!(
                "-I FASP_PROXY 1 -s 2001:db8:1::2/128 -p udp -m udp --sport 40000 --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination [2001:db8:2::2]:33001"
            )
        );
    }

    #[test]
    fn post_rule_text_masquerade_and_snat() {
        let mut e = sample_entry();
        assert_eq!(
            PostRule::of(&e).add_line(),
            format!(
                "-I FASP_PROXY_POST 1 -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 \
                 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 \
                 -m comment --comment {UUID} -j MASQUERADE"
            )
        );
        e.client_port = None;
        e.snat = Some("198.51.100.1".parse().unwrap());
        assert_eq!(
            PostRule::of(&e).add_line(),
            format!(
                "-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 \
                 -m conntrack --ctstate DNAT --ctorigdstport 33001 \
                 -m comment --comment {UUID} -j SNAT --to-source 198.51.100.1"
            )
        );
        let mut e = v6_entry();
        e.snat = Some("2001:db8:2::1".parse().unwrap());
        assert_eq!(
            PostRule::of(&e).delete_line(),
            format!(
                "-D FASP_PROXY_POST -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 \
                 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 \
                 -m comment --comment {UUID} -j SNAT --to-source 2001:db8:2::1"
            )
        );
    }

    /// What `iptables-save` prints for an entry's two rules (`-A` whatever the insert position).
    fn saved_lines(e: &SessionEntry) -> String {
        format!(
            "-A FASP_PROXY {}\n-A FASP_PROXY_POST {}\n",
            DnatRule::of(e).spec(),
            PostRule::of(e).spec()
        )
    }

    #[test]
    fn parser_reads_back_every_shape_it_writes() {
        let mut entries = Vec::new();
        for v6 in [false, true] {
            for port in [Some(40000), None] {
                for snat in [false, true] {
                    let mut e = if v6 { v6_entry() } else { sample_entry() };
                    e.id = Uuid::new_v4();
                    e.client_port = port;
                    e.proxy_port = 33001 + entries.len() as u16;
                    if snat {
                        e.snat = Some(
                            if v6 { "2001:db8:2::1" } else { "198.51.100.1" }
                                .parse()
                                .unwrap(),
                        );
                    }
                    entries.push(e);
                }
            }
        }
        for family in Family::ALL {
            let mine: Vec<&SessionEntry> = entries
                .iter()
                .filter(|e| Family::of(e.client) == family)
                .collect();
            let body: String = mine.iter().map(|e| saved_lines(e)).collect();
            let state = NatState::parse(family, &saved(&body));
            assert!(state.has_chain && state.has_post_chain);
            assert_eq!((state.pre_jumps, state.post_jumps), (1, 1));
            assert_eq!(
                state.rules.len(),
                2 * mine.len(),
                "foreign rules are not ours"
            );
            for (i, e) in mine.iter().enumerate() {
                let dnat = &state.rules[2 * i];
                assert_eq!(dnat.rule, Ok(Rule::Dnat(DnatRule::of(e))), "{}", dnat.line);
                let post = &state.rules[2 * i + 1];
                assert_eq!(post.rule, Ok(Rule::Post(PostRule::of(e))), "{}", post.line);
                let Ok(Rule::Dnat(d)) = &dnat.rule else {
                    unreachable!()
                };
                assert_eq!(
                    state.installed(d),
                    InstalledEntry {
                        id: Some(e.id),
                        key: e.key(),
                        backend: e.backend,
                        snat: e.snat,
                        expires: None,
                    }
                );
            }
        }
    }

    #[test]
    fn parser_reports_malformed_lines_and_deletes_them_verbatim() {
        let bad = [
            // no comment
            (
                "-A FASP_PROXY -s 192.0.2.77/32 -p udp -m udp --dport 33001 -j DNAT --to-destination 198.51.100.2:33001",
                "expected `-m`, found `-j`",
            ),
            // a port range as target
            (
                "-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:1000-2000",
                "not a single ADDRESS:PORT",
            ),
            // a network, not a host
            (
                "-A FASP_PROXY -s 192.0.2.0/24 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:33001",
                "not a single host",
            ),
            // something after the target
            (
                "-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment x -j MASQUERADE --random",
                "unexpected `--random`",
            ),
            // a quoted comment is read, but the rule is still not ours
            (
                "-A FASP_PROXY -s 192.0.2.4/32 -m comment --comment \"a b \\\"c\" -j RETURN",
                "expected `-p`, found `-m`",
            ),
            (
                "-A FASP_PROXY -s 192.0.2.4/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment \"open",
                "unterminated quoted string",
            ),
        ];
        for (line, why) in bad {
            let state = NatState::parse(Family::V4, &saved(&format!("{line}\n")));
            assert_eq!(state.rules.len(), 1);
            let r = &state.rules[0];
            let err = r.rule.as_ref().unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
            assert_eq!(r.delete_line(), line.replacen("-A ", "-D ", 1));
            let msg = r.parse_error("/usr/sbin/iptables-save", err).to_string();
            assert!(
                msg.contains(line) && msg.contains("iptables-save -t nat"),
                "{msg}"
            );
        }
        // an IPv4 rule in the IPv6 table
        let state = NatState::parse(Family::V6, &saved(&saved_lines(&sample_entry())));
        assert!(state.rules[0]
            .rule
            .as_ref()
            .unwrap_err()
            .contains("wrong family"));
    }

    #[test]
    fn non_uuid_comment_gives_an_entry_without_id() {
        let line = "-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment \"not a uuid\" -j DNAT --to-destination 198.51.100.2:33001\n";
        let state = NatState::parse(Family::V4, &saved(line));
        let Ok(Rule::Dnat(d)) = &state.rules[0].rule else {
            panic!("{:?}", state.rules[0])
        };
        assert_eq!(d.comment, "not a uuid");
        let entry = state.installed(d);
        assert_eq!(entry.id, None);
        assert_eq!(entry.snat, None);
    }

    #[test]
    fn empty_table_and_missing_chains() {
        let state = NatState::parse(
            Family::V4,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
        );
        assert_eq!(state, NatState::default());
        // a chain whose name only starts like ours is foreign
        let state = NatState::parse(
            Family::V4,
            "*nat\n:FASP_PROXY_OLD - [0:0]\n-A FASP_PROXY_OLD -j RETURN\n-A PREROUTING -j FASP_PROXY_OLD\nCOMMIT\n",
        );
        assert_eq!(state, NatState::default());
    }

    #[test]
    fn restore_errors_name_the_failing_line() {
        let batch = batch_text(&[
            "-N FASP_PROXY".into(),
            "-D FASP_PROXY -j RETURN".into(),
            "-X FASP_PROXY".into(),
        ]);
        let explain = |stderr: &str| {
            let err = DataplaneError::Command {
                command: "/usr/sbin/iptables-restore --noflush --wait=10".into(),
                status: "exit status: 1".into(),
                stderr: stderr.into(),
            };
            explain_restore_error(err, &batch, "session x: remove").to_string()
        };
        // What iptables-restore v1.8.9 (nf_tables) prints, in its three shapes.
        let msg = explain(
            "iptables: Bad rule (does a matching rule exist in that chain?).\n\
             iptables-restore: line 3 failed: Bad rule (does a matching rule exist in that chain?).",
        );
        assert!(
            msg.starts_with("session x: remove: /usr/sbin/iptables-restore"),
            "{msg}"
        );
        assert!(
            msg.ends_with("[line 3 of the batch: -D FASP_PROXY -j RETURN]"),
            "{msg}"
        );
        let msg = explain(
            "iptables-restore v1.8.9 (nf_tables): unknown option \"--bogus\"\n\
             Error occurred at line: 2\nTry `iptables-restore -h' for more information.",
        );
        assert!(
            msg.ends_with("[line 2 of the batch: -N FASP_PROXY]"),
            "{msg}"
        );
        let msg = explain(
            "iptables-restore v1.8.9 (nf_tables): \n\
             line 4: CHAIN_DEL failed (Device or resource busy): chain FASP_PROXY",
        );
        assert!(
            msg.ends_with("[line 4 of the batch: -X FASP_PROXY]"),
            "{msg}"
        );
        // No line named: the error is kept as it is, with what was being done.
        let msg = explain("iptables-restore: unable to initialize table 'nat'");
        assert!(msg.ends_with("unable to initialize table 'nat'"), "{msg}");
    }

    #[test]
    fn ip6tables_is_found_next_to_iptables() {
        assert_eq!(
            ip6_sibling(Path::new("/usr/sbin/iptables")),
            Path::new("/usr/sbin/ip6tables")
        );
        assert_eq!(
            ip6_sibling(Path::new("/sbin/iptables-legacy")),
            Path::new("/sbin/ip6tables-legacy")
        );
        assert_eq!(
            with_suffix(Path::new("/usr/sbin/iptables"), "-restore"),
            Path::new("/usr/sbin/iptables-restore")
        );
    }

    #[test]
    fn open_names_a_missing_tool_and_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = IptablesForwarder::open(&dir.path().join("iptables")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&dir.path().join("iptables").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("apt-get install iptables"), "{msg}");
    }
}
