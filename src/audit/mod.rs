//! `fasp-proxy audit`: IBM's `asp-check` for this host. Counts full-access and restricted
//! (aspshell) users and finds insecure transfer users and settings.
//!
//! One job per module:
//! 1. [`accounts`]: the password database and what each login shell means;
//! 2. [`sshd`]: the settings OpenSSH's sshd applies to a user (`sshd -T -C user=…`);
//! 3. [`checks`]: the checks of one transfer user (shell, docroot, sshd settings), pure;
//! 4. [`settings`]: the checks of the proxy's own configuration (key files, allow lists);
//! 5. [`report`]: the result, as text in asp-check's shape or as JSON; [`finding`] its items.
//!
//! Transfer users are the accounts whose shell is aspshell and those named in the
//! configuration's `<aaa>` users; only they get `sshd -T` (a few at a time), so a host with
//! thousands of ordinary accounts is audited in about a second.

pub mod accounts;
pub mod checks;
pub mod finding;
pub mod report;
pub mod settings;
pub mod sshd;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use self::accounts::{Account, Shell, Source};
use self::finding::Finding;
use self::report::{Category, Report, UserEntry};
use self::sshd::Sshd;
use crate::config::{self, Config};

/// The default sshd configuration audited.
pub const DEFAULT_SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

/// The default sshd program.
pub const DEFAULT_SSHD: &str = "/usr/sbin/sshd";

/// What to audit.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxy's configuration (`--config`).
    pub config: PathBuf,
    /// The sshd program (`--sshd`).
    pub sshd: PathBuf,
    /// sshd's configuration (`--sshd-config`).
    pub sshd_config: PathBuf,
    /// Only these users (`--user`, repeatable); empty = every account.
    pub users: Vec<String>,
    /// A passwd-format file to read accounts from instead of the password database.
    pub passwd: Option<PathBuf>,
}

/// Runs the audit. Err (exit status 2) when it cannot run: the configuration cannot be read or
/// is invalid, sshd or its configuration is missing, `sshd -T` fails, a named user does not
/// exist.
pub fn run(options: &Options) -> Result<Report, String> {
    let mut notes = Vec::new();
    let config = load_config(&options.config, &mut notes)?;
    let sshd = Sshd {
        binary: options.sshd.clone(),
        config: options.sshd_config.clone(),
    };
    sshd.check()?;
    let source = match &options.passwd {
        Some(path) => Source::File(path.clone()),
        None => Source::System,
    };
    let everyone = accounts::all(&source)?;
    let considered = select(&everyone, &options.users, &source)?;

    let mut users = Vec::with_capacity(considered.len());
    for account in &considered {
        let category = categorise(account, &config);
        if category == Category::NoLogin && options.users.is_empty() {
            continue;
        }
        users.push((account, category));
    }

    let transfer: Vec<&Account> = users
        .iter()
        .filter(|(_, c)| c.is_transfer_user())
        .map(|(a, _)| *a)
        .collect();
    let names: Vec<&str> = transfer.iter().map(|a| a.name.as_str()).collect();
    let sshd_findings = sshd.check_all(&names, checks::sshd)?;

    let mut findings = Vec::new();
    for (account, from_sshd) in transfer.iter().zip(sshd_findings) {
        findings.extend(user_findings(account, &config, &mut notes));
        findings.extend(from_sshd);
    }

    let known: HashSet<&str> = everyone
        .iter()
        .chain(&considered)
        .map(|a| a.name.as_str())
        .collect();
    for aaa in &config.users {
        let asked = options.users.is_empty() || options.users.contains(&aaa.name);
        if asked && !known.contains(aaa.name.as_str()) {
            notes.push(format!(
                "<aaa> user {} (line {}) has no account on this host",
                aaa.name, aaa.pos.line
            ));
        }
    }

    let all_names: Vec<&str> = everyone.iter().map(|a| a.name.as_str()).collect();
    findings.extend(settings::check(&config, &options.config, &all_names));

    let entries = users
        .into_iter()
        .map(|(a, category)| UserEntry {
            name: a.name.clone(),
            uid: a.uid,
            home: a.home.display().to_string(),
            shell: a.shell.display().to_string(),
            category,
            insecure: false,
        })
        .collect();
    Ok(Report::new(
        options.config.display().to_string(),
        entries,
        findings,
        notes,
    ))
}

/// The configuration at `path`; a missing file is the defaults, as aspshell and `ascp
/// --server` take it (with a note).
fn load_config(path: &Path, notes: &mut Vec<String>) -> Result<Config, String> {
    if let Some(config) = config::load_quiet(path).map_err(|e| format!("configuration {e}"))? {
        return Ok(config);
    }
    notes.push(format!(
        "{} does not exist: audited with the defaults aspshell and ascp --server use then (no \
         docroots, neither proxy on)",
        path.display()
    ));
    config::parse_str("<CONF/>", path)
        .map(|loaded| loaded.config)
        .map_err(|e| format!("the default configuration: {e}"))
}

/// The accounts to audit: `names` if given (each must exist), else every account.
fn select(everyone: &[Account], names: &[String], source: &Source) -> Result<Vec<Account>, String> {
    if names.is_empty() {
        return Ok(everyone.to_vec());
    }
    let mut out: Vec<Account> = Vec::with_capacity(names.len());
    for name in names {
        if out.iter().any(|a| &a.name == name) {
            continue;
        }
        let found = match everyone.iter().find(|a| &a.name == name) {
            Some(a) => Some(a.clone()),
            // An account NSS does not enumerate (LDAP, SSSD without enumeration).
            None => accounts::lookup(source, name)?,
        };
        match found {
            Some(a) => out.push(a),
            None => {
                let db = match source {
                    Source::System => "the password database".to_string(),
                    Source::File(p) => p.display().to_string(),
                };
                return Err(format!("--user {name}: no such account in {db}"));
            }
        }
    }
    Ok(out)
}

/// What `account` is, from its shell and whether the configuration has an `<aaa>` entry for it.
pub fn categorise(account: &Account, config: &Config) -> Category {
    match accounts::classify_shell(&account.shell, |p| p.exists()) {
        Shell::Aspshell => Category::Restricted,
        _ if config.user(&account.name).is_some() => Category::TransferWithoutAspshell,
        Shell::Ordinary => Category::FullAccess,
        Shell::NoLogin => Category::NoLogin,
    }
}

/// The shell and docroot findings of a transfer user; a docroot that cannot be worked out (the
/// transfer programs then refuse) is a note.
fn user_findings(account: &Account, config: &Config, notes: &mut Vec<String>) -> Vec<Finding> {
    let mut found = Vec::new();
    let name = &account.name;
    if accounts::classify_shell(&account.shell, |p| p.exists()) != Shell::Aspshell {
        if let Some(aaa) = config.user(name) {
            found.push(checks::no_restricted_shell(
                name,
                &account.shell,
                aaa.pos.line,
            ));
        }
    }
    match config.docroot_for(name, &account.home) {
        Ok(docroot) => found.extend(checks::docroot(name, &account.home, &docroot, |p| {
            std::fs::canonicalize(p).ok()
        })),
        Err(e) => notes.push(format!(
            "{e} (aspshell and ascp --server refuse this user's transfers)"
        )),
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, shell: &str) -> Account {
        Account {
            name: name.into(),
            uid: 1000,
            home: format!("/home/{name}").into(),
            shell: shell.into(),
        }
    }

    #[test]
    fn categories() {
        let config = config::parse_str(
            "<CONF><aaa><realms><realm><users><user><name>cy</name></user><user><name>dee</name></user></users></realm></realms></aaa></CONF>",
            Path::new("/t"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
        let c = |name: &str, shell: &str| categorise(&account(name, shell), &config);
        assert_eq!(c("root", "/bin/sh"), Category::FullAccess);
        assert_eq!(c("ann", "/usr/local/bin/aspshell"), Category::Restricted);
        assert_eq!(c("cy", "/usr/local/bin/aspshell"), Category::Restricted);
        assert_eq!(c("cy", "/bin/sh"), Category::TransferWithoutAspshell);
        assert_eq!(
            c("dee", "/usr/sbin/nologin"),
            Category::TransferWithoutAspshell
        );
        assert_eq!(c("daemon", "/usr/sbin/nologin"), Category::NoLogin);
    }

    #[test]
    fn a_missing_configuration_is_the_defaults_and_a_broken_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut notes = Vec::new();
        let config = load_config(&dir.path().join("none.conf"), &mut notes).unwrap();
        assert!(!config.server.rproxy.enabled && config.users.is_empty());
        assert!(notes[0].contains("does not exist"), "{notes:?}");
        let bad = dir.path().join("bad.conf");
        std::fs::write(
            &bad,
            "<CONF><server><rproxy><enabled>maybe</enabled></rproxy></server></CONF>",
        )
        .unwrap();
        let e = load_config(&bad, &mut notes).unwrap_err();
        assert!(e.contains("bad.conf") && e.contains("1:"), "{e}");
    }
}
