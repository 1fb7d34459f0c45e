//! The audit's result: users with their category, findings and notes; printed in the shape of
//! IBM's asp-check, or as JSON.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use serde::Serialize;

use super::finding::{Check, Finding};

/// What an account is to the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// An ordinary login shell and no `<aaa>` entry: may do anything its Unix rights allow
    /// (counted, not considered insecure).
    FullAccess,
    /// aspshell as the login shell: a transfer user, checked.
    Restricted,
    /// An `<aaa>` entry but a login shell other than aspshell: a transfer user, checked.
    TransferWithoutAspshell,
    /// A shell that refuses logins and no `<aaa>` entry (listed only when asked for by name).
    NoLogin,
}

impl Category {
    /// Whether the user's SSH settings and docroot are checked.
    pub fn is_transfer_user(self) -> bool {
        matches!(
            self,
            Category::Restricted | Category::TransferWithoutAspshell
        )
    }
}

/// One account the audit considered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserEntry {
    /// The login name.
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The home directory.
    pub home: String,
    /// The login shell.
    pub shell: String,
    /// What the account is.
    pub category: Category,
    /// Whether at least one finding concerns it.
    pub insecure: bool,
}

/// The counts of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Users with an ordinary shell and no `<aaa>` entry.
    pub full_access: usize,
    /// Users whose login shell is aspshell.
    pub restricted: usize,
    /// Users with at least one finding.
    pub insecure_users: usize,
    /// Findings about the proxy's configuration.
    pub insecure_settings: usize,
    /// Per check: users with that finding (per-user checks) or findings (settings).
    pub by_check: BTreeMap<&'static str, usize>,
}

/// The whole result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The configuration audited.
    pub config: String,
    /// The summary counts.
    pub counts: Counts,
    /// Every account considered, in password-database order.
    pub users: Vec<UserEntry>,
    /// Every problem, users' first (in the order of `users`), then the configuration's.
    pub findings: Vec<Finding>,
    /// Things worth knowing that are not problems (an `<aaa>` user without an account, …).
    pub notes: Vec<String>,
    /// Whether anything insecure was found (exit status 1).
    pub insecure: bool,
}

impl Report {
    /// Builds the report: marks insecure users and counts.
    pub fn new(
        config: String,
        mut users: Vec<UserEntry>,
        findings: Vec<Finding>,
        notes: Vec<String>,
    ) -> Report {
        let flagged: HashSet<(&str, Check)> = findings
            .iter()
            .filter_map(|f| f.user.as_deref().map(|u| (u, f.check)))
            .collect();
        let insecure_names: HashSet<&str> = flagged.iter().map(|(u, _)| *u).collect();
        for user in &mut users {
            user.insecure = insecure_names.contains(user.name.as_str());
        }
        let mut by_check = BTreeMap::new();
        for check in Check::ALL {
            let n = if check.is_per_user() {
                users
                    .iter()
                    .filter(|u| flagged.contains(&(u.name.as_str(), check)))
                    .count()
            } else {
                findings.iter().filter(|f| f.check == check).count()
            };
            by_check.insert(check.id(), n);
        }
        let count = |c: Category| users.iter().filter(|u| u.category == c).count();
        let counts = Counts {
            full_access: count(Category::FullAccess),
            restricted: count(Category::Restricted),
            insecure_users: users.iter().filter(|u| u.insecure).count(),
            insecure_settings: findings.iter().filter(|f| f.user.is_none()).count(),
            by_check,
        };
        Report {
            config,
            insecure: !findings.is_empty(),
            counts,
            users,
            findings,
            notes,
        }
    }

    /// The text report: IBM asp-check's summary lines, ours after them, then one line per
    /// finding (`USER: what: detail; fix: …`, `settings: …` for the configuration) and notes.
    pub fn text(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Users with full access: {} (not considered insecure)",
            c.full_access
        );
        let _ = writeln!(out, "Restricted users: {}", c.restricted);
        let _ = writeln!(out, "Insecure users: {}", c.insecure_users);
        let line = |out: &mut String, check: Check| {
            let n = c.by_check.get(check.id()).copied().unwrap_or(0);
            let _ = writeln!(out, "- {}: {n}", check.title());
        };
        for check in Check::ALL.into_iter().filter(|c| c.is_per_user()) {
            line(&mut out, check);
        }
        let _ = writeln!(out, "Insecure settings: {}", c.insecure_settings);
        for check in Check::ALL.into_iter().filter(|c| !c.is_per_user()) {
            line(&mut out, check);
        }
        if !self.findings.is_empty() || !self.notes.is_empty() {
            out.push('\n');
        }
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{}: {}: {}; fix: {}",
                f.user.as_deref().unwrap_or("settings"),
                f.check.title(),
                f.detail,
                f.fix
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The JSON report, one object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot write the report as JSON: {e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, category: Category) -> UserEntry {
        UserEntry {
            name: name.into(),
            uid: 1000,
            home: format!("/home/{name}"),
            shell: "/usr/local/bin/aspshell".into(),
            category,
            insecure: false,
        }
    }

    fn sample() -> Report {
        Report::new(
            "/etc/fasp-proxy/aspera.conf".into(),
            vec![
                user("root", Category::FullAccess),
                user("ann", Category::Restricted),
                user("bob", Category::Restricted),
                user("cy", Category::TransferWithoutAspshell),
            ],
            vec![
                Finding::user("bob", Check::SshTunneling, "d1".into(), "f1".into()),
                Finding::user("bob", Check::Tty, "d2".into(), "f2".into()),
                Finding::user("cy", Check::NoRestrictedShell, "d3".into(), "f3".into()),
                Finding::setting(Check::KeyFileReadable, "d4".into(), "f4".into()),
            ],
            vec!["n1".into()],
        )
    }

    #[test]
    fn text_in_ibm_shape() {
        let text = sample().text();
        let expected = "\
Users with full access: 1 (not considered insecure)
Restricted users: 2
Insecure users: 2
- no restricted shell (aspshell): 1
- docroot above home directory: 0
- ssh tunneling enabled: 1
- terminal (tty) allowed: 1
- sftp past the shell (internal-sftp): 0
- password logins: 0
- legacy ssh algorithms: 0
- user environment (PermitUserEnvironment): 0
Insecure settings: 1
- key files readable by others: 1
- reverse proxy open to every client: 0
- forward proxy without authentication: 0
- forward proxy to every destination: 0
- ssh-rsa (SHA-1) signatures accepted: 0
- internal servers' host keys trusted on first use: 0

bob: ssh tunneling enabled: d1; fix: f1
bob: terminal (tty) allowed: d2; fix: f2
cy: no restricted shell (aspshell): d3; fix: f3
settings: key files readable by others: d4; fix: f4
note: n1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn json_matches_text() {
        let report = sample();
        let v: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(v["counts"]["full_access"], 1);
        assert_eq!(v["counts"]["insecure_users"], 2);
        assert_eq!(v["counts"]["by_check"]["ssh-tunneling"], 1);
        assert_eq!(v["users"][2]["insecure"], true);
        assert_eq!(v["users"][1]["insecure"], false);
        assert_eq!(v["users"][3]["category"], "transfer-without-aspshell");
        assert_eq!(v["findings"][0]["check"], "ssh-tunneling");
        assert_eq!(v["findings"][3]["user"], serde_json::Value::Null);
        assert_eq!(v["insecure"], true);
    }

    #[test]
    fn nothing_found() {
        let report = Report::new(
            "c".into(),
            vec![user("ann", Category::Restricted)],
            vec![],
            vec![],
        );
        assert!(!report.insecure);
        assert!(report.text().ends_with("trusted on first use: 0\n"));
    }
}
