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
//! An entry with a TCP twin ([`SessionEntry::tcp_backend`], always without a client port) has
//! two more rules with the same comment, in the same batch: TCP from the client (any source
//! port) to the same proxy port goes to the TCP backend, masqueraded or SNAT'ed as the UDP:
//! ```text
//! -A FASP_PROXY -s 192.0.2.2/32 -p tcp -m tcp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:22
//! -A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
//! ```
//! (`iptables-save` prints them back verbatim; `iptables -t nat -L -n` shows
//! `DNAT 6 -- 192.0.2.2 0.0.0.0/0 tcp dpt:33001 ADDRTYPE match dst-type LOCAL /* <uuid> */ to:198.51.100.2:22`).
//! Only the UDP DNAT rule holds the session's key and stands for it in list, reconcile and
//! purge; the twin's rules are read as part of it, and are leftovers without it.
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
//!
//! Files: this one holds the backend (batches, install, remove, reconcile, purge); [`tools`]
//! finds the `iptables`/`ip6tables` tools; [`rules`] builds each session rule's text; [`save`]
//! reads `iptables-save -t nat` back with a strict parser.

mod rules;
mod save;
mod tools;

use std::collections::HashSet;
use std::path::Path;

use uuid::Uuid;

use self::rules::{add_lines, comment_id, delete_lines, Rule};
use self::save::{NatState, SavedRule};
use self::tools::{ip6_sibling, Tools};
use super::command::{self, Netns};
use super::conntrack;
use super::entry::{InstalledEntry, SessionEntry, SessionKey};
use super::error::{DataplaneError, Errors};
use super::family::Family;
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
            // Only UDP DNAT rules hold keys (a TCP twin shares its session's key).
            let mut taken: HashSet<SessionKey> = state
                .rules
                .iter()
                .filter_map(|r| r.rule.as_ref().ok()?.udp_dnat().map(|d| d.key()))
                .collect();
            let mut lines = Vec::with_capacity(mine.len() * 2);
            let count = mine.len();
            for entry in mine {
                entry.validate()?;
                if !taken.insert(entry.key()) {
                    return Err(DataplaneError::KeyTaken {
                        id: entry.id,
                        key: entry.key(),
                        owner: None,
                    });
                }
                lines.extend(add_lines(entry));
            }
            self.restore(family, &lines, &format!("installing {count} sessions"))?;
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

    /// A session's rules (DNAT and POST, and its TCP twin's) in `state`, found by their comment.
    fn session_lines(state: &NatState, id: Uuid) -> impl Iterator<Item = &SavedRule> {
        state
            .rules
            .iter()
            .filter(move |r| matches!(&r.rule, Ok(rule) if rule.id() == Some(id)))
    }

    /// A session's DNAT and POST rules (and its TCP twin's), in one batch: all or nothing.
    /// Refused with [`DataplaneError::KeyTaken`] if a UDP DNAT rule of the same key exists (its
    /// comment names the owner); a [`DataplaneError::Setup`] if the chains are missing.
    fn add_rules(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
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
        if let Some(taken) = state
            .rules
            .iter()
            .find_map(|r| r.rule.as_ref().ok()?.udp_dnat().filter(|d| d.key() == key))
        {
            return Err(DataplaneError::KeyTaken {
                id: entry.id,
                key,
                owner: comment_id(&taken.comment),
            });
        }
        self.restore(
            family,
            &add_lines(entry),
            &format!("session {}: install", entry.id),
        )
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
                // A TCP twin's rule is kept only with its session's UDP DNAT rule: alone it is
                // a leftover.
                let keep = matches!(&saved.rule, Ok(r) if r.id().is_some_and(|id| live.contains(&id))
                    && (!r.is_tcp() || state.has_udp_dnat_of(r)));
                if keep {
                    if matches!(&saved.rule, Ok(r) if r.udp_dnat().is_some()) {
                        kept += 1;
                    }
                    continue;
                }
                lines.push(saved.delete_line());
                if let Some(d) = saved.rule.as_ref().ok().and_then(Rule::udp_dnat) {
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

    /// Refuses the session with [`DataplaneError::KeyTaken`] if a UDP DNAT rule of the same key
    /// exists (its comment names the owner), adds the DNAT and POST rules (and the TCP twin's)
    /// in one batch, then deletes the stale conntrack flows of the client tuple. Lines of the
    /// chain it cannot parse do not block installs ([`Forwarder::list`] reports them, reconcile
    /// deletes them).
    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        // Then: a stale un-NATed flow of the same tuple would shadow the new rule.
        super::install_or_roll_back(self, entry, Self::add_rules, |fw| {
            conntrack::delete_session_flows(&mut fw.ct, entry)
        })
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
                errors.push(e);
                // Could not list: try the exact rules anyway.
                errors.note(self.restore(family, &delete_lines(entry), &what));
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
            entries.extend(state.rules.iter().filter_map(|r| {
                let d = r.rule.as_ref().ok()?.udp_dnat()?;
                Some(state.installed(d))
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
                .filter_map(|r| Some(state.installed(r.rule.as_ref().ok()?.udp_dnat()?)))
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

#[cfg(test)]
mod tests {
    use super::*;

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
