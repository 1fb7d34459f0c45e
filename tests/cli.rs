//! The admin command line, run as a user runs it: exit codes, messages and files.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn fasp_proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fasp-proxy"))
        .args(args)
        .env_remove("FASP_PROXY_CONFIG")
        .output()
        .expect("run fasp-proxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file under `dir` with its bytes, sorted, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn check_config_accepts_the_sample_and_summarises_every_rule() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/aspera.conf");
    let out = fasp_proxy(&["check-config", sample]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("valid (3 rules"), "{stdout}");
    for wanted in [
        "rule 1 (host_ip=\"203.0.113.7\")",
        "every user as squash user xfer",
        "rule 2 (host_ip=\"203.0.113.128/25\")",
        "each user as their own account (individual)",
        "rule 3 (host_domain=\"files.example.com\")",
        "round robin over 198.51.100.41:22, 198.51.100.42:22, 198.51.100.43:22",
        "UDP port 33001",
    ] {
        assert!(stdout.contains(wanted), "missing {wanted:?} in\n{stdout}");
    }
}

#[test]
fn check_config_refuses_bad_files_with_position_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax.conf",
            "<CONF>\n<server>\n<rproxy>\n<enabled>true</enabld>\n</rproxy></server></CONF>\n",
            "syntax.conf:4:",
            "</enabld> does not match <enabled>",
        ),
        (
            "unknown.conf",
            "<CONF>\n<server>\n<rproxy>\n<rules><rule host_ip=\"192.0.2.1\">\n  <host>198.51.100.2</host>\n  <keyﬁle>/k</keyﬁle>\n</rule></rules></rproxy></server></CONF>\n",
            "unknown.conf:6:3: error: rule 1 (host_ip=\"192.0.2.1\"): unknown tag <keyﬁle> in <rule>",
            "did you mean <keyfile>?",
        ),
        (
            "semantic.conf",
            "<CONF>\n<server>\n<rproxy><enabled>true</enabled>\n<rules>\n<rule host_ip=\"192.0.2.1\">\n<host>198.51.100.2:99999</host>\n<keyfile>/k</keyfile></rule></rules></rproxy></server></CONF>\n",
            "semantic.conf:6:1: error: rule 1 (host_ip=\"192.0.2.1\"): <host>:",
            "port 99999 is out of range",
        ),
    ];
    for (name, content, _, _) in cases {
        fs::write(dir.path().join(name), content).unwrap();
    }
    let before = snapshot(dir.path());
    for (name, _, location, message) in cases {
        let path = dir.path().join(name);
        let out = fasp_proxy(&["check-config", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{name}: printed a summary for a bad file"
        );
        assert!(
            stderr.contains(location),
            "{name}: wanted {location:?} in\n{stderr}"
        );
        assert!(
            stderr.contains(message),
            "{name}: wanted {message:?} in\n{stderr}"
        );
    }
    assert_eq!(before, snapshot(dir.path()), "check-config changed files");
}

#[test]
fn check_config_reports_missing_file_and_honours_env_and_flag() {
    let out = fasp_proxy(&["check-config", "/nonexistent/aspera.conf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/aspera.conf: error: cannot read"));

    // Default path, then the environment, then --config.
    let out = fasp_proxy(&["check-config"]);
    let default_seen = text(&out.stdout) + &text(&out.stderr);
    assert!(
        default_seen.contains("/etc/fasp-proxy/aspera.conf"),
        "{default_seen}"
    );

    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/aspera.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_fasp-proxy"))
        .arg("check-config")
        .env("FASP_PROXY_CONFIG", sample)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid (3 rules"));

    let out = Command::new(env!("CARGO_BIN_EXE_fasp-proxy"))
        .args(["--config", sample, "check-config"])
        .env("FASP_PROXY_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn create_config_twice_refuses_and_leaves_files_identical() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("fasp");
    let out = fasp_proxy(&["create-config", "--dir", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("host key fingerprint: SHA256:"));
    assert!(text(&out.stdout).contains("RSA host key fingerprint: SHA256:"));
    let before = snapshot(&target);
    assert_eq!(
        before.len(),
        7,
        "aspera.conf, two host keys with their .pub, the API certificate and key"
    );
    assert!(
        text(&out.stdout).contains("HTTPS API, self-signed, for"),
        "{}",
        text(&out.stdout)
    );

    // What it wrote is a valid configuration pointing at the key it made.
    let conf = target.join("aspera.conf");
    let out = fasp_proxy(&["check-config", conf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(fs::read_to_string(&conf)
        .unwrap()
        .contains(target.join("ssh_host_ed25519_key").to_str().unwrap()));

    let out = fasp_proxy(&["create-config", "--dir", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(before, snapshot(&target));
}

#[test]
fn spec_version_and_help() {
    let out = fasp_proxy(&["spec"]);
    assert!(out.status.success());
    let spec = text(&out.stdout);
    assert!(spec.contains("<proxy_port>33001</proxy_port>"));
    assert!(spec.contains("<squash_user></squash_user>"));
    assert!(spec.contains("attribute host_ip"));

    let out = fasp_proxy(&["--version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("fasp-proxy {}", env!("CARGO_PKG_VERSION"))
    );

    let out = fasp_proxy(&["--help"]);
    let help = text(&out.stdout);
    for verb in ["create-config", "check-config", "spec"] {
        assert!(help.contains(verb), "{help}");
    }
    let out = fasp_proxy(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `check-config` on `path`: exit status, stdout, stderr.
fn check_config(path: &Path) -> (Option<i32>, String, String) {
    let out = fasp_proxy(&["check-config", &path.to_string_lossy()]);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The "not used by fasp-proxy" warnings of a `check-config` run.
fn not_used(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(": warning: ") && l.contains("is not used by fasp-proxy"))
        .collect()
}

#[test]
fn check_config_accepts_the_aspera_conf_ibm_ships_with_its_client() {
    let Some(dir) = std::env::var_os("FASP_PROXY_IBM_ASCP_DIR") else {
        panic!(
            "FASP_PROXY_IBM_ASCP_DIR is not set: it must name the directory of IBM's client \
             (the cos-aspera wheel's purelib/cos_aspera) holding the aspera.conf IBM ships; \
             scripts/test.sh sets it"
        );
    };
    let file = Path::new(&dir).join("aspera.conf");
    assert!(
        file.is_file(),
        "FASP_PROXY_IBM_ASCP_DIR={} holds no aspera.conf (scripts/test.sh sets the variable)",
        Path::new(&dir).display()
    );
    let (code, stdout, stderr) = check_config(&file);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains(": error: "), "{stderr}");
    assert!(stdout.contains("valid (0 rules"), "{stdout}");
    let ignored = not_used(&stderr);
    assert_eq!(ignored.len(), 1, "{stderr}");
    assert!(
        ignored[0].starts_with(&format!("{}:4:1: warning: <default>", file.display()))
            && ignored[0].ends_with("[at CONF/default]"),
        "{stderr}"
    );
}

#[test]
fn check_config_accepts_the_product_guide_examples_as_ibm_files() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ibm");
    let cases: [(&str, &str, &[&str]); 2] = [
        ("guide_reverse_proxy.conf", "valid (2 rules", &[]),
        (
            "guide_load_balancing.conf",
            "valid (1 rule,",
            &["CONF/server/server_name", "CONF/default"],
        ),
    ];
    for (name, valid, ignored) in cases {
        let (code, stdout, stderr) = check_config(&fixtures.join(name));
        assert_eq!(code, Some(0), "{name}: {stdout}\n{stderr}");
        assert!(!stderr.contains(": error: "), "{name}: {stderr}");
        assert!(stdout.contains(valid), "{name}: {stdout}");
        assert!(
            stdout.contains("forwarding via iptables"),
            "{name}: {stdout}"
        );
        let warned = not_used(&stderr);
        assert_eq!(warned.len(), ignored.len(), "{name}: {stderr}");
        for (line, path) in warned.iter().zip(ignored) {
            assert!(line.ends_with(&format!("[at {path}]")), "{name}: {line}");
        }
    }
}

#[test]
fn check_config_on_ibm_tags_warns_once_and_suggests_on_typos() {
    let dir = tempfile::tempdir().unwrap();
    let rproxy = "<rproxy><enabled>true</enabled><rules><rule><host>198.51.100.2</host>\
                  <keyfile>/k</keyfile></rule></rules></rproxy>";
    let ibm_only = dir.path().join("ibm_only.conf");
    fs::write(
        &ibm_only,
        format!("<CONF version=\"2\">\n<server>\n<server_name>p</server_name>\n{rproxy}\n</server>\n</CONF>\n"),
    )
    .unwrap();
    let (code, _, stderr) = check_config(&ibm_only);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        not_used(&stderr),
        [format!(
            "{}:3:1: warning: <server_name> (IBM's aspera.conf schema) is not used by \
             fasp-proxy: ignored [at CONF/server/server_name]",
            ibm_only.display()
        )],
        "{stderr}"
    );

    let typo = dir.path().join("typo.conf");
    fs::write(
        &typo,
        format!("<CONF version=\"2\">\n<server>\n<server_nmae>p</server_nmae>\n{rproxy}\n</server>\n</CONF>\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = check_config(&typo);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:3:1: error: unknown tag <server_nmae> in <server> [at CONF/server/server_nmae]; \
             did you mean <server_name>?",
            typo.display()
        )),
        "{stderr}"
    );

    let disagree = dir.path().join("disagree.conf");
    fs::write(
        &disagree,
        "<CONF version=\"2\">\n<server>\n<forwarding_type>nftables</forwarding_type>\n<rproxy><enabled>true</enabled><rules>\n\
         <rule><host>198.51.100.2</host><keyfile>/k</keyfile>\n<forwarding_type>iptables</forwarding_type></rule>\n\
         </rules></rproxy>\n</server>\n</CONF>\n",
    )
    .unwrap();
    let (code, _, stderr) = check_config(&disagree);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:6:1: error: rule 1 (default rule): <forwarding_type> iptables disagrees with \
             <server><forwarding_type> nftables (line 3)",
            disagree.display()
        )),
        "{stderr}"
    );
}

/// Runs `fasp-proxy --config CONF node-user ARGS` with `stdin` as its input.
fn node_user(conf: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fasp-proxy"))
        .arg("--config")
        .arg(conf)
        .arg("node-user")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fasp-proxy node-user");
    // A refusal (e.g. a bad argument) may exit before reading its input: a broken pipe here is
    // not the test's concern, the exit status and stderr are.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn node_user_add_list_del_keeps_only_hashes_in_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("aspera.conf");
    let file = dir.path().join("node-users");

    let out = node_user(&conf, &["add", "proxyuser"], "Pr0xy pass\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("added user proxyuser"));
    let out = node_user(&conf, &["add", "other"], "x\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = fs::read_to_string(&file).unwrap();
    assert!(!stored.contains("Pr0xy"), "{stored}");
    assert!(stored.contains("proxyuser:$argon2id$"), "{stored}");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = node_user(&conf, &["list"], "");
    assert_eq!(text(&out.stdout), "proxyuser\nother\n");
    let out = node_user(&conf, &["add", "proxyuser"], "second\n");
    assert!(text(&out.stdout).contains("new password for user proxyuser"));

    // Refusals change nothing.
    let before = snapshot(dir.path());
    for (args, input, why) in [
        (&["add", "bad name"][..], "pw\n", "is not 1-64"),
        (&["add", "-x"][..], "pw\n", "unexpected argument"),
        (&["add", "carol"][..], "\n", "1-1024 bytes"),
        (&["del", "carol"][..], "", "no user carol"),
    ] {
        let out = node_user(&conf, args, input);
        assert_eq!(
            out.status.code(),
            Some(if why == "unexpected argument" { 2 } else { 1 })
        );
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(snapshot(dir.path()), before);

    let out = node_user(&conf, &["del", "other"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&node_user(&conf, &["list"], "").stdout), "proxyuser\n");

    // A damaged file is reported with its line and left alone.
    fs::write(&file, "proxyuser:$argon2id$ok\nbroken line\n").unwrap();
    let out = node_user(&conf, &["list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("node-users line 1"),
        "{}",
        text(&out.stderr)
    );
}
