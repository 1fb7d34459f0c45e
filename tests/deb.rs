//! The Debian package: built with `cargo deb` from the binaries this test build made (no release
//! build: `--no-build --profile dev`, stripped), checked by `lintian`, then installed, run,
//! reinstalled, removed, reinstalled and purged in a throw-away systemd container
//! ([`lab::container::Container`], the one `tests/systemd.rs` boots) joined to the lab's proxy
//! namespace, with a transfer through the packaged daemon to a real OpenSSH backend.
//!
//! Covered: the package's files, modes and conffiles; `lintian` with no error and no warning
//! that `debian/fasp-proxy.lintian-overrides` does not give a reason for; postinst making the
//! host keys and the API certificate, enabling the unit and not starting it while the shipped
//! configuration turns nothing on; the administrator's configuration, `fasp-proxy trust-host
//! --yes` for the internal server and `systemctl start`; a transfer; `dpkg -i` over itself
//! keeping the edited configuration byte for byte and the Ed25519 host key, making a deleted
//! RSA pair again, and restarting the running daemon; `dpkg -r` stopping it and leaving no
//! nftables table or iptables chain of the proxy, the configuration kept; `dpkg -i` again
//! starting it by itself (enabled and configured) and making a deleted certificate again;
//! `dpkg -P` deleting what the package made in `/etc/fasp-proxy` and keeping the
//! administrator's files; the machine unchanged.
//!
//! Needs cargo-deb (`cargo deb`), lintian, dpkg-dev and binutils besides what
//! `tests/systemd.rs` needs; `scripts/test.sh` installs them.

mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use lab::container::{Backend, Container, ProxyClient};
use lab::{text, Topology};

const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Where the container sees the package and the administrator's files (read-only).
const DEB_INSIDE: &str = "/opt/fasp-proxy-deb";
const ADMIN_INSIDE: &str = "/opt/fasp-proxy-admin";
/// PATH for commands in the container (dpkg wants the sbin directories).
const PATH_INSIDE: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
/// What postinst makes in /etc/fasp-proxy, besides the shipped aspera.conf.
const GENERATED: [&str; 6] = [
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "ssh_host_rsa_key",
    "ssh_host_rsa_key.pub",
    "api_cert.pem",
    "api_key.pem",
];

/// Runs `cargo deb` over this build's binaries into `out` (no build of its own: the test
/// build's profile, stripped, light compression); returns the package's path.
fn build_deb(out: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "`cargo deb` is missing: cargo install cargo-deb --locked --version 3.8.0 (scripts/test.sh does)"
    );
    let bin_dir = Path::new(FASP_PROXY)
        .parent()
        .expect("the binaries' directory");
    // The profile that built them: target/debug is the dev profile's, target/NAME profile NAME's.
    let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let built = Command::new(&cargo)
        .args([
            "deb",
            "--no-build",
            "--profile",
            profile,
            "--no-dbgsym",
            "--strip",
            "--fast",
            "--manifest-path",
            &format!("{MANIFEST_DIR}/Cargo.toml"),
            "--output",
        ])
        .arg(out)
        .env(
            "CARGO_TARGET_DIR",
            bin_dir.parent().expect("the target directory"),
        )
        .output()
        .expect("cannot run cargo deb");
    assert!(
        built.status.success(),
        "cargo deb failed:\n{}",
        lab::describe(&built)
    );
    let name = format!("fasp-proxy_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"));
    let deb = out.join(&name);
    assert!(
        deb.is_file(),
        "cargo deb made no {name}:\n{}",
        lab::describe(&built)
    );
    deb
}

/// Starts `lintian` on `deb` (it takes 8-16 s; the container part runs meanwhile).
fn start_lintian(deb: &Path) -> std::process::Child {
    Command::new("lintian")
        .arg(deb)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run lintian: install it (scripts/test.sh does)")
}

/// `lintian`'s error and warning lines (overridden tags are not printed).
fn lintian_complaints(lintian: std::process::Child) -> Vec<String> {
    let out = lintian.wait_with_output().expect("lintian");
    let said = text(&out.stdout);
    assert!(
        out.status.success() || said.contains("E: "),
        "lintian did not run:\n{}",
        lab::describe(&out)
    );
    said.lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .map(str::to_string)
        .collect()
}

/// `dpkg-deb ARGS deb` on the host.
fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb: {}", lab::describe(&out));
    text(&out.stdout)
}

/// Runs `args` in the container (PATH set for dpkg, 120 s at most); panics with everything it
/// said and the unit's state unless it succeeds. Returns stdout and stderr together.
fn run(container: &Container, args: &[&str]) -> String {
    let out = run_unchecked(container, args);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{said}\n{}",
        args.join(" "),
        out.status,
        container.describe()
    );
    said
}

fn run_unchecked(container: &Container, args: &[&str]) -> Output {
    let mut all = vec!["env", PATH_INSIDE, "DEBIAN_FRONTEND=noninteractive"];
    all.extend_from_slice(args);
    container.exec_for(120, &all)
}

/// A file's bytes in the container (`None` if it cannot be read).
fn read_inside(container: &Container, path: &str) -> Option<Vec<u8>> {
    let out = container.exec(&["cat", path]);
    out.status.success().then_some(out.stdout)
}

/// The names in a directory of the container, sorted (empty if it does not exist).
fn list_inside(container: &Container, dir: &str) -> Vec<String> {
    let out = container.exec(&["ls", "-A", dir]);
    let mut names: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    names.sort();
    names
}

/// What the test could change on the machine if the container leaked: the package's paths,
/// dpkg's view of the package, and the proxy's tables and chains in the machine's own kernel
/// namespace.
fn machine_state() -> String {
    let mut state = String::new();
    for path in [
        "/usr/bin/fasp-proxy",
        "/usr/lib/systemd/system/fasp-proxy.service",
        "/etc/pam.d/fasp-proxy",
        "/etc/fasp-proxy",
        "/etc/systemd/system/multi-user.target.wants/fasp-proxy.service",
        "/var/log/fasp-proxy",
        "/usr/sbin/policy-rc.d",
    ] {
        let p = Path::new(path);
        let what = if p.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            format!("directory {names:?}")
        } else {
            match std::fs::read(p) {
                Ok(bytes) => format!("file of {} bytes", bytes.len()),
                Err(_) => "absent".to_string(),
            }
        };
        state.push_str(&format!("{path}: {what}\n"));
    }
    let dpkg = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", "fasp-proxy"])
        .output()
        .unwrap();
    state.push_str(&format!("dpkg: {}\n", text(&dpkg.stdout)));
    // The machine's own nftables tables and nat chains of the proxy (there should be none).
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let chains = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    for line in text(&tables.stdout)
        .lines()
        .chain(text(&chains.stdout).lines())
        .filter(|l| l.contains("fasp_proxy") || l.contains("FASP_PROXY"))
    {
        state.push_str(&format!("kernel: {line}\n"));
    }
    state
}

/// The proxy's nftables tables and iptables nat rules in the proxy namespace, one per line
/// (empty: none).
fn kernel_objects(topo: &Topology) -> String {
    let tables = text(&topo.proxy.try_exec(&["nft", "list", "tables"]).stdout);
    let chains = text(&topo.proxy.try_exec(&["iptables", "-t", "nat", "-S"]).stdout);
    tables
        .lines()
        .filter(|l| l.contains("fasp_proxy"))
        .chain(chains.lines().filter(|l| l.contains("FASP_PROXY")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The packaged copies of the default configuration and of the unit are what `debian/sync.sh`
/// makes from their sources (`fasp-proxy create-config`'s renderer, `systemd/fasp-proxy.service`).
#[test]
fn the_packaged_configuration_and_unit_match_their_sources() {
    let out = Command::new("bash")
        .arg(format!("{MANIFEST_DIR}/debian/sync.sh"))
        .arg("--check")
        .arg(FASP_PROXY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debian/ is out of date; run debian/sync.sh:\n{}",
        lab::describe(&out)
    );
}

#[test]
fn the_debian_package_installs_runs_upgrades_removes_and_purges() {
    let machine_before = machine_state();
    let dir = tempfile::tempdir().unwrap();
    let debs = dir.path().join("debs");
    std::fs::create_dir(&debs).unwrap();

    // Build and lint.
    let t = Instant::now();
    let deb = build_deb(&debs);
    let build_time = t.elapsed();
    eprintln!("deb test: cargo deb {build_time:.1?}");
    let lint_started = Instant::now();
    let lintian = start_lintian(&deb);

    // What is in it.
    let listing = dpkg_deb(&["--contents"], &deb);
    let has = |mode: &str, path: &str| {
        listing
            .lines()
            .any(|l| l.starts_with(mode) && l.ends_with(&format!(" ./{path}")))
    };
    for bin in ["fasp-proxy", "ascp", "ascmd", "aspshell"] {
        assert!(has("-rwxr-xr-x", &format!("usr/bin/{bin}")), "{listing}");
    }
    let mut expected = vec![
        "usr/lib/systemd/system/fasp-proxy.service".to_string(),
        "etc/fasp-proxy/aspera.conf".into(),
        "etc/pam.d/fasp-proxy".into(),
        "usr/share/doc/fasp-proxy/copyright".into(),
        "usr/share/doc/fasp-proxy/changelog.Debian.gz".into(),
        "usr/share/doc/fasp-proxy/README.md".into(),
        "usr/share/doc/fasp-proxy/examples/fasp-proxy-openssh.conf".into(),
        "usr/share/doc/fasp-proxy/examples/aspera.conf".into(),
        "usr/share/lintian/overrides/fasp-proxy".into(),
    ];
    for doc in std::fs::read_dir(format!("{MANIFEST_DIR}/docs")).unwrap() {
        let name = doc.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            expected.push(format!("usr/share/doc/fasp-proxy/{name}"));
        }
    }
    for path in &expected {
        assert!(has("-rw-r--r--", path), "no {path}:\n{listing}");
    }
    let conffiles = Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert_eq!(
        text(&conffiles.stdout).lines().collect::<Vec<_>>(),
        ["/etc/fasp-proxy/aspera.conf", "/etc/pam.d/fasp-proxy"],
        "conffiles: {}",
        lab::describe(&conffiles)
    );
    let control = dpkg_deb(&["--field"], &deb);
    assert!(
        control.contains(&format!("Version: {}-1", env!("CARGO_PKG_VERSION")))
            && control.contains("nftables")
            && control.contains("libpam0g"),
        "{control}"
    );

    // The lab: a backend running OpenSSH whose transfer command is our ascp --server, the
    // administrator's files staged for the container.
    let topo = Topology::new(1);
    let server = lab::server_v4(0);
    let admin = dir.path().join("admin");
    std::fs::create_dir(&admin).unwrap();
    let backend = Backend::start(&topo, dir.path(), &admin);
    std::fs::write(
        admin.join("aspera.conf"),
        format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n<CONF><server><rproxy>\n\
             <enabled>true</enabled>\n\
             <ssh_host_rsa_key>/etc/fasp-proxy/ssh_host_rsa_key</ssh_host_rsa_key>\n\
             <authorized_keys_file>/etc/fasp-proxy/%u.keys</authorized_keys_file>\n\
             <rules><rule><host>{server}:22</host><squash_user>root</squash_user>\
             <keyfile>/etc/fasp-proxy/backend_key</keyfile></rule></rules>\n\
             </rproxy></server></CONF>\n"
        ),
    )
    .unwrap();
    let container_started = Instant::now();
    let container = Container::boot(
        topo.proxy.name(),
        dir.path(),
        &[],
        &[(debs.clone(), DEB_INSIDE), (admin.clone(), ADMIN_INSIDE)],
    );
    // A fresh machine: this one's policy-rc.d (a Docker image's, "exit 101") would forbid
    // every service start and stop in maintainer scripts, and a test may have left an empty
    // /etc/fasp-proxy. Both are removed in the container's overlay only.
    run(
        &container,
        &["rm", "-rf", "/usr/sbin/policy-rc.d", "/etc/fasp-proxy"],
    );
    let status = run_unchecked(&container, &["dpkg-query", "-W", "fasp-proxy"]);
    assert!(
        !status.status.success() || text(&status.stdout).trim() == "fasp-proxy",
        "fasp-proxy is installed on this machine already: {}",
        text(&status.stdout)
    );
    let deb_inside = format!(
        "{DEB_INSIDE}/{}",
        deb.file_name().unwrap().to_string_lossy()
    );

    // 1. dpkg -i: keys made, unit enabled, not started (the shipped configuration turns
    //    nothing on), and postinst says what is left to do.
    let said = run(&container, &["dpkg", "-i", &deb_inside]);
    assert!(
        said.contains("is enabled but not started") && said.contains("systemctl start"),
        "{said}"
    );
    let mut files = vec!["aspera.conf".to_string()];
    files.extend(GENERATED.iter().map(|f| f.to_string()));
    files.sort();
    assert_eq!(list_inside(&container, "/etc/fasp-proxy"), files, "{said}");
    for key in ["ssh_host_ed25519_key", "ssh_host_rsa_key", "api_key.pem"] {
        let mode = run(
            &container,
            &["stat", "-c", "%a %U", &format!("/etc/fasp-proxy/{key}")],
        );
        assert_eq!(mode.trim(), "600 root", "{key}");
    }
    assert_eq!(
        read_inside(&container, "/etc/fasp-proxy/aspera.conf").unwrap(),
        std::fs::read(format!("{MANIFEST_DIR}/debian/aspera.conf")).unwrap()
    );
    let checked = run(&container, &["fasp-proxy", "check-config"]);
    assert!(checked.contains("reverse proxy: disabled"), "{checked}");
    container.assert_unit("UnitFileState", "enabled", &said);
    container.assert_unit("ActiveState", "inactive", &said);
    let conffiles = run(
        &container,
        &["dpkg-query", "-W", "-f=${Conffiles}", "fasp-proxy"],
    );
    assert!(
        conffiles.contains("/etc/fasp-proxy/aspera.conf")
            && conffiles.contains("/etc/pam.d/fasp-proxy"),
        "{conffiles}"
    );
    let host_key = read_inside(&container, "/etc/fasp-proxy/ssh_host_ed25519_key").unwrap();
    let host_pub =
        text(&read_inside(&container, "/etc/fasp-proxy/ssh_host_ed25519_key.pub").unwrap());

    // 2. The administrator: the key for the backend, the users' keys, a configuration with a
    //    rule, the backend's host key recorded by trust-host; then systemctl start.
    for (file, mode) in [
        ("backend_key", "600"),
        ("root.keys", "644"),
        ("aspera.conf", "644"),
    ] {
        run(
            &container,
            &[
                "install",
                "-m",
                mode,
                &format!("{ADMIN_INSIDE}/{file}"),
                &format!("/etc/fasp-proxy/{file}"),
            ],
        );
    }
    let trusted = run(
        &container,
        &["fasp-proxy", "trust-host", "--yes", &format!("{server}:22")],
    );
    let recorded = read_inside(&container, "/etc/fasp-proxy/known_hosts").unwrap_or_default();
    assert!(
        text(&recorded).contains(&server.to_string()),
        "trust-host recorded nothing:\n{trusted}"
    );
    run(&container, &["fasp-proxy", "check-config"]);
    run(&container, &["systemctl", "start", "fasp-proxy"]);
    container.assert_unit("ActiveState", "active", "after systemctl start");

    // 3. A transfer through the packaged daemon.
    let client = ProxyClient::new(&topo.client, dir.path(), &backend.client_key, &host_pub);
    let transfer = |name: &str, len: usize| {
        let payload = dir.path().join(name);
        let data = lab::content(len, len as u64);
        std::fs::write(&payload, &data).unwrap();
        let out = client.send(&["-l", "100m"], &payload);
        assert!(
            out.status.success(),
            "the transfer through the packaged daemon failed:\n{}\n{}",
            lab::describe(&out),
            container.describe()
        );
        assert_eq!(std::fs::read(client.inbox.join(name)).unwrap(), data);
    };
    transfer("first.bin", 4_000_000);
    assert!(
        kernel_objects(&topo).contains("fasp_proxy"),
        "the daemon made no nftables table"
    );

    // 4. dpkg -i over itself, the configuration edited: kept byte for byte, the Ed25519 key
    //    kept, the RSA pair (deleted) made again, the running daemon restarted.
    run(
        &container,
        &[
            "sh",
            "-c",
            "echo '<!-- edited by the administrator -->' >> /etc/fasp-proxy/aspera.conf",
        ],
    );
    let edited = read_inside(&container, "/etc/fasp-proxy/aspera.conf").unwrap();
    let rsa_pub = read_inside(&container, "/etc/fasp-proxy/ssh_host_rsa_key.pub").unwrap();
    run(
        &container,
        &[
            "rm",
            "/etc/fasp-proxy/ssh_host_rsa_key",
            "/etc/fasp-proxy/ssh_host_rsa_key.pub",
        ],
    );
    let pid_before = container.unit_property("MainPID");
    let said = run(&container, &["dpkg", "-i", &deb_inside]);
    assert!(
        said.contains("made /etc/fasp-proxy/ssh_host_rsa_key and")
            && !said.contains("made /etc/fasp-proxy/ssh_host_ed25519_key")
            && !said.contains("made /etc/fasp-proxy/api_cert.pem"),
        "{said}"
    );
    let new_rsa_pub = read_inside(&container, "/etc/fasp-proxy/ssh_host_rsa_key.pub");
    assert!(
        new_rsa_pub.is_some_and(|k| k.starts_with(b"ssh-rsa ") && k != rsa_pub),
        "no new RSA host key:\n{said}"
    );
    assert_eq!(
        read_inside(&container, "/etc/fasp-proxy/aspera.conf").unwrap(),
        edited,
        "the reinstall changed the edited configuration:\n{said}"
    );
    assert_eq!(
        read_inside(&container, "/etc/fasp-proxy/ssh_host_ed25519_key").unwrap(),
        host_key,
        "the reinstall replaced the host key"
    );
    files.extend(["backend_key", "known_hosts", "root.keys"].map(String::from));
    files.sort();
    assert_eq!(
        list_inside(&container, "/etc/fasp-proxy"),
        files,
        "(no .dpkg-dist, no left-over work directory)\n{said}"
    );
    container.assert_unit("ActiveState", "active", &said);
    assert_ne!(
        container.unit_property("MainPID"),
        pid_before,
        "not restarted by the reinstall"
    );

    // 5. dpkg -r: stopped, nothing of the proxy left in the kernel, configuration and keys kept.
    let said = run(&container, &["dpkg", "-r", "fasp-proxy"]);
    container.assert_unit("ActiveState", "inactive", &said);
    assert_eq!(
        kernel_objects(&topo),
        "",
        "left in the kernel after dpkg -r:\n{said}"
    );
    assert!(read_inside(&container, "/usr/bin/fasp-proxy").is_none());
    assert_eq!(list_inside(&container, "/etc/fasp-proxy"), files, "{said}");
    assert_eq!(
        read_inside(&container, "/etc/fasp-proxy/aspera.conf").unwrap(),
        edited
    );
    let status = run(
        &container,
        &["dpkg-query", "-W", "-f=${Status}", "fasp-proxy"],
    );
    assert_eq!(status.trim(), "deinstall ok config-files");

    // 6. dpkg -i once more: enabled and configured, so postinst starts it; a transfer. The
    //    API certificate (deleted) is made again, alone.
    let cert = read_inside(&container, "/etc/fasp-proxy/api_cert.pem").unwrap();
    run(
        &container,
        &[
            "rm",
            "/etc/fasp-proxy/api_cert.pem",
            "/etc/fasp-proxy/api_key.pem",
        ],
    );
    let said = run(&container, &["dpkg", "-i", &deb_inside]);
    assert!(!said.contains("not started"), "{said}");
    assert!(
        said.contains("made /etc/fasp-proxy/api_cert.pem and /etc/fasp-proxy/api_key.pem")
            && !said.contains("made /etc/fasp-proxy/ssh_host"),
        "{said}"
    );
    let new_cert = read_inside(&container, "/etc/fasp-proxy/api_cert.pem");
    assert!(
        new_cert.is_some_and(|c| c.starts_with(b"-----BEGIN CERTIFICATE-----") && c != cert),
        "no new certificate:\n{said}"
    );
    assert_eq!(list_inside(&container, "/etc/fasp-proxy"), files, "{said}");
    container.assert_unit("ActiveState", "active", &said);
    transfer("second.bin", 1_000_000);

    // 7. dpkg -P: stopped, the kernel clean, what the package made gone, the administrator's
    //    own files kept and named.
    let said = run(&container, &["dpkg", "-P", "fasp-proxy"]);
    container.assert_unit("ActiveState", "inactive", &said);
    assert_eq!(
        kernel_objects(&topo),
        "",
        "left in the kernel after dpkg -P:\n{said}"
    );
    assert_eq!(
        list_inside(&container, "/etc/fasp-proxy"),
        ["backend_key", "root.keys"],
        "{said}"
    );
    assert!(
        said.contains("kept /etc/fasp-proxy") && said.contains("backend_key"),
        "{said}"
    );
    for gone in [
        "/etc/pam.d/fasp-proxy",
        "/var/log/fasp-proxy",
        "/etc/systemd/system/multi-user.target.wants/fasp-proxy.service",
        "/usr/lib/systemd/system/fasp-proxy.service",
    ] {
        let out = container.exec(&["test", "-e", gone]);
        assert!(!out.status.success(), "{gone} is left after dpkg -P");
    }
    let status = run_unchecked(
        &container,
        &["dpkg-query", "-W", "-f=${Status}", "fasp-proxy"],
    );
    assert!(
        !status.status.success() || text(&status.stdout).starts_with("unknown"),
        "dpkg still knows the package: {}",
        text(&status.stdout)
    );
    drop(container);
    eprintln!(
        "deb test: container part {:.1?}",
        container_started.elapsed()
    );
    drop(backend);

    // The machine itself: nothing of the above reached it.
    assert_eq!(machine_state(), machine_before, "the machine was changed");

    let complaints = lintian_complaints(lintian);
    eprintln!(
        "deb test: lintian done {:.1?} after it started",
        lint_started.elapsed()
    );
    assert!(
        complaints.is_empty(),
        "lintian (give a reason in debian/fasp-proxy.lintian-overrides, or fix it):\n{}",
        complaints.join("\n")
    );
}
