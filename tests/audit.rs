//! `fasp-proxy audit` on this host: real accounts (made with `useradd` for the test and deleted
//! with `userdel` after it, also on panic), the real `sshd -T` reading a test sshd_config with a
//! `Match User` block, real key files. `sshd -T` only parses, so no network namespace is needed.
//!
//! Run: `cargo test --test audit` (as root).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The accounts of the lab host, one of each kind.
const FULL: &str = "fpaudit_full"; // ordinary shell, no <aaa> entry
const GOOD: &str = "fpaudit_good"; // aspshell, docroot $(home)/data
const AT_HOME: &str = "fpaudit_home"; // aspshell, docroot $(home)
const NO_ASPSHELL: &str = "fpaudit_shell"; // <aaa> entry, /bin/bash
const FORWARDS: &str = "fpaudit_fwd"; // aspshell, Match User block allows TCP forwarding
const ALL: [&str; 5] = [FULL, GOOD, AT_HOME, NO_ASPSHELL, FORWARDS];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fasp-proxy"))
        .env_remove("FASP_PROXY_CONFIG")
        .args(args)
        .output()
        .expect("run fasp-proxy audit")
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/audit.rs creates accounts and runs sshd -T: run it as root"
    );
}

/// An account made for the test; deleted when dropped, also on panic.
struct TestUser {
    name: &'static str,
}

impl TestUser {
    fn create(name: &'static str, shell: &Path, home: &Path) -> TestUser {
        remove_account(name); // left by a run that was killed
        fs::create_dir_all(home.join("data")).unwrap();
        run(Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir"])
            .arg(home)
            .arg("--shell")
            .arg(shell)
            .arg(name));
        TestUser { name }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        remove_account(self.name);
    }
}

fn remove_account(name: &str) {
    if nix::unistd::User::from_name(name).ok().flatten().is_some() {
        let out = Command::new("userdel").arg(name).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            // Never leave a usable account behind.
            let _ = Command::new("usermod")
                .args(["--shell", "/usr/sbin/nologin", "--password", "*", name])
                .output();
        }
    }
}

/// An executable named `aspshell` in `dir`: the built one if there is one.
fn aspshell(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let path = bin.join("aspshell");
    let source = option_env!("CARGO_BIN_EXE_aspshell").unwrap_or("/usr/sbin/nologin");
    fs::copy(source, &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A hardened sshd_config for transfer users, with `extra` at the end (Match blocks).
fn sshd_config(dir: &Path, extra: &str) -> PathBuf {
    let key = dir.join("sshd_host_key");
    if !key.exists() {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
    }
    let path = dir.join("sshd_config");
    fs::write(
        &path,
        format!(
            "HostKey {}\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             X11Forwarding no\n\
             AllowStreamLocalForwarding no\n\
             PermitTunnel no\n\
             PermitTTY no\n\
             PermitUserEnvironment no\n\
             Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr\n\
             MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n\
             {extra}",
            key.display()
        ),
    )
    .unwrap();
    path
}

/// The proxy's configuration: `<default>` docroot `$(home)/data`, `<aaa>` entries for
/// fpaudit_home (docroot `home_docroot`) and fpaudit_shell, the reverse proxy with one rule
/// whose key file is `rule_key`.
fn aspera_conf(dir: &Path, home_docroot: &str) -> PathBuf {
    let d = dir.display();
    let path = dir.join("aspera.conf");
    fs::write(
        &path,
        format!(
            r#"<CONF>
  <default><file_system><access><paths><path><absolute>$(home)/data</absolute></path></paths></access></file_system></default>
  <aaa><realms><realm><users>
    <user><name>{AT_HOME}</name><file_system><access><paths><path><absolute>{home_docroot}</absolute></path></paths></access></file_system></user>
    <user><name>{NO_ASPSHELL}</name></user>
  </users></realm></realms></aaa>
  <server>
    <rproxy>
      <enabled>true</enabled>
      <ssh_host_key>{d}/host_key</ssh_host_key>
      <allowed_clients><cidr>192.0.2.0/24</cidr></allowed_clients>
      <rules><rule><host>198.51.100.2:22</host><keyfile>{d}/rule_key</keyfile></rule></rules>
    </rproxy>
    <https_private_key>{d}/api_key.pem</https_private_key>
  </server>
</CONF>
"#
        ),
    )
    .unwrap();
    path
}

fn write_key(path: &Path, mode: u32) {
    fs::write(path, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn audit_users(conf: &Path, sshd_conf: &Path, json: bool) -> Output {
    let mut args = vec![
        "--config".to_string(),
        conf.display().to_string(),
        "audit".to_string(),
        "--sshd-config".to_string(),
        sshd_conf.display().to_string(),
    ];
    for user in ALL {
        args.push("--user".into());
        args.push(user.into());
    }
    if json {
        args.push("--json".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    audit(&args)
}

/// The summary line starting with `label`, its number.
fn count(report: &str, label: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in\n{report}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

/// The finding lines of a text report (after the blank line, notes excepted).
fn finding_lines(report: &str) -> Vec<&str> {
    report
        .split_once("\n\n")
        .map(|(_, rest)| rest.lines().filter(|l| !l.starts_with("note: ")).collect())
        .unwrap_or_default()
}

#[test]
fn finds_exactly_the_insecure_users_and_settings_then_nothing_once_fixed() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let shell = aspshell(dir.path());
    let home = |name: &str| dir.path().join("home").join(name);
    let _users: Vec<TestUser> = [
        (FULL, PathBuf::from("/bin/bash")),
        (GOOD, shell.clone()),
        (AT_HOME, shell.clone()),
        (NO_ASPSHELL, PathBuf::from("/bin/bash")),
        (FORWARDS, shell.clone()),
    ]
    .into_iter()
    .map(|(name, sh)| TestUser::create(name, &sh, &home(name)))
    .collect();
    write_key(&dir.path().join("host_key"), 0o600);
    write_key(&dir.path().join("rule_key"), 0o644);
    let conf = aspera_conf(dir.path(), "$(home)");
    let sshd_conf = sshd_config(
        dir.path(),
        &format!("Match User {FORWARDS}\n    AllowTcpForwarding yes\n"),
    );

    // Text.
    let out = audit_users(&conf, &sshd_conf, false);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}{}", text(&out.stderr));
    assert!(report.starts_with("Users with full access: 1 (not considered insecure)\n"));
    assert_eq!(count(&report, "Restricted users: "), 3, "{report}");
    assert_eq!(count(&report, "Insecure users: "), 3, "{report}");
    assert_eq!(count(&report, "- no restricted shell (aspshell): "), 1);
    assert_eq!(count(&report, "- docroot above home directory: "), 1);
    assert_eq!(count(&report, "- ssh tunneling enabled: "), 1);
    assert_eq!(count(&report, "- terminal (tty) allowed: "), 0);
    assert_eq!(count(&report, "- password logins: "), 0);
    assert_eq!(count(&report, "- legacy ssh algorithms: "), 0);
    assert_eq!(count(&report, "Insecure settings: "), 1);
    assert_eq!(count(&report, "- key files readable by others: "), 1);
    let lines = finding_lines(&report);
    let rule_key = dir.path().join("rule_key");
    let expected_starts = [
        format!(
            "{AT_HOME}: docroot above home directory: docroot {} is the home directory",
            home(AT_HOME).display()
        ),
        format!("{NO_ASPSHELL}: no restricted shell (aspshell): has an <aaa> <user> entry"),
        format!("{FORWARDS}: ssh tunneling enabled: sshd allows AllowTcpForwarding yes"),
        format!(
            "settings: key files readable by others: {} (<keyfile> of rule 1",
            rule_key.display()
        ),
    ];
    assert_eq!(lines.len(), expected_starts.len(), "{report}");
    for (line, start) in lines.iter().zip(&expected_starts) {
        assert!(
            line.starts_with(start.as_str()),
            "{line:?}\nwanted {start:?}"
        );
    }
    assert!(lines[1].ends_with(&format!(
        "fix: chsh -s /usr/local/bin/aspshell {NO_ASPSHELL}"
    )));
    assert!(lines[3].ends_with(&format!("fix: chmod 600 {}", rule_key.display())));

    // JSON says the same.
    let out = audit_users(&conf, &sshd_conf, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["insecure"], true);
    assert_eq!(v["counts"]["full_access"], 1);
    assert_eq!(v["counts"]["restricted"], 3);
    assert_eq!(v["counts"]["insecure_users"], 3);
    assert_eq!(v["counts"]["insecure_settings"], 1);
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), lines.len());
    let checks: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["user"].as_str().unwrap_or("settings"),
                f["check"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            (AT_HOME, "docroot-above-home"),
            (NO_ASPSHELL, "no-restricted-shell"),
            (FORWARDS, "ssh-tunneling"),
            ("settings", "key-file-readable"),
        ]
    );
    for (f, line) in findings.iter().zip(&lines) {
        let (user, detail, fix) = (
            f["user"].as_str().unwrap_or("settings"),
            f["detail"].as_str().unwrap(),
            f["fix"].as_str().unwrap(),
        );
        assert!(
            line.starts_with(&format!("{user}: "))
                && line.contains(&format!(": {detail}; fix: {fix}")),
            "text {line:?} vs JSON {f}"
        );
    }
    let categories: Vec<(&str, &str, bool)> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap(),
                u["category"].as_str().unwrap(),
                u["insecure"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        categories,
        [
            (FULL, "full-access", false),
            (GOOD, "restricted", false),
            (AT_HOME, "restricted", true),
            (NO_ASPSHELL, "transfer-without-aspshell", true),
            (FORWARDS, "restricted", true),
        ]
    );

    // Fixed: the key's mode, the Match block, the docroot, the shell.
    fs::set_permissions(&rule_key, fs::Permissions::from_mode(0o600)).unwrap();
    let sshd_conf = sshd_config(dir.path(), "");
    let conf = aspera_conf(dir.path(), "$(home)/data");
    run(Command::new("usermod")
        .arg("--shell")
        .arg(&shell)
        .arg(NO_ASPSHELL));
    let out = audit_users(&conf, &sshd_conf, false);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    assert_eq!(count(&report, "Restricted users: "), 4, "{report}");
    assert_eq!(count(&report, "Insecure users: "), 0, "{report}");
    assert_eq!(count(&report, "Insecure settings: "), 0, "{report}");
    assert!(finding_lines(&report).is_empty(), "{report}");
    let out = audit_users(&conf, &sshd_conf, true);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["insecure"], false);
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn says_why_when_it_cannot_run() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let conf = aspera_conf(dir.path(), "$(home)/data");
    let sshd_conf = sshd_config(dir.path(), "");
    let conf_s = conf.display().to_string();
    let sshd_s = sshd_conf.display().to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--sshd", "/nonexistent/sbin/sshd"],
            "sshd /nonexistent/sbin/sshd: no such program".into(),
        ),
        (
            vec!["--sshd-config", "/nonexistent/sshd_config"],
            "sshd configuration /nonexistent/sshd_config: cannot read".into(),
        ),
        (
            vec!["--sshd-config", &sshd_s, "--user", "fpaudit_nobody"],
            "--user fpaudit_nobody: no such account".into(),
        ),
    ];
    for (extra, wanted) in cases {
        let mut args = vec!["--config", &conf_s, "audit"];
        args.extend(extra);
        let out = audit(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&wanted), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // An invalid configuration: its file and line.
    let bad = dir.path().join("bad.conf");
    fs::write(
        &bad,
        "<CONF>\n<server><rproxy><enabled>maybe</enabled></rproxy></server></CONF>\n",
    )
    .unwrap();
    let bad_s = bad.display().to_string();
    let out = audit(&["--config", &bad_s, "audit", "--sshd-config", &sshd_s]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{bad_s}:2:")), "{stderr}");
    // sshd refusing its configuration: sshd's own message.
    let broken = dir.path().join("broken_sshd_config");
    fs::write(&broken, "NoSuchKeyword yes\n").unwrap();
    let broken_s = broken.display().to_string();
    let passwd = dir.path().join("passwd");
    fs::write(
        &passwd,
        format!(
            "x:x:5000:5000::/home/x:{}\n",
            aspshell(dir.path()).display()
        ),
    )
    .unwrap();
    let passwd_s = passwd.display().to_string();
    let out = audit(&[
        "--config",
        &conf_s,
        "audit",
        "--sshd-config",
        &broken_s,
        "--passwd",
        &passwd_s,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("-T -f") && stderr.contains("NoSuchKeyword"),
        "{stderr}"
    );
}

/// 5,000 accounts, 250 of them restricted: `sshd -T` runs once per restricted user and never
/// for the others, and the audit takes seconds, not minutes.
#[test]
fn thousands_of_accounts_run_sshd_only_for_transfer_users() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let shell = aspshell(dir.path());
    let conf = aspera_conf(dir.path(), "$(home)/data");
    let sshd_conf = sshd_config(dir.path(), "");
    let mut passwd = String::new();
    for i in 0..5000 {
        let sh = if i % 20 == 0 {
            shell.display().to_string()
        } else if i % 3 == 0 {
            "/usr/sbin/nologin".to_string()
        } else {
            "/bin/bash".to_string()
        };
        passwd.push_str(&format!(
            "u{i:04}:x:{}:100::/home/u{i:04}:{sh}\n",
            10000 + i
        ));
    }
    let passwd_path = dir.path().join("passwd");
    fs::write(&passwd_path, passwd).unwrap();
    // A wrapper that logs each user sshd -T is asked about, then runs the real sshd.
    let log = dir.path().join("sshd-calls");
    let wrapper = dir.path().join("sshd");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$5\" >> {}\nexec /usr/sbin/sshd \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let out = audit(&[
        "--config",
        &conf.display().to_string(),
        "audit",
        "--sshd",
        &wrapper.display().to_string(),
        "--sshd-config",
        &sshd_conf.display().to_string(),
        "--passwd",
        &passwd_path.display().to_string(),
    ]);
    let took = started.elapsed();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    assert_eq!(count(&report, "Restricted users: "), 250);
    // 5000 - 250 restricted - the nologin ones (i % 3 == 0, not i % 20 == 0).
    let nologin = (0..5000).filter(|i| i % 20 != 0 && i % 3 == 0).count() as u64;
    assert_eq!(
        count(&report, "Users with full access: "),
        5000 - 250 - nologin
    );
    let calls = fs::read_to_string(&log).unwrap();
    let mut users: Vec<&str> = calls.lines().collect();
    users.sort();
    let expected: Vec<String> = (0..5000)
        .step_by(20)
        .map(|i| format!("user=u{i:04},host=localhost,addr=127.0.0.1"))
        .collect();
    assert_eq!(users, expected);
    eprintln!("audit of 5,000 accounts, 250 restricted: {took:?}");
    assert!(took.as_secs() < 60, "took {took:?}");
}
