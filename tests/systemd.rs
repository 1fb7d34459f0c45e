//! The shipped unit file `systemd/fasp-proxy.service`, run by a real systemd.
//!
//! systemd is not PID 1 on the machines this runs on, so the test boots one in a throw-away
//! container ([`lab::container::Container`]: `systemd-nspawn --boot` over the machine's own root
//! with a tmpfs on top, joined to the lab's proxy network namespace). The source tree, the built
//! binaries and a configuration directory (as `/etc/fasp-proxy`) are bind-mounted in, and
//! `scripts/install.sh` installs the binaries, the unit and the PAM file inside, as an
//! administrator would; nothing of the machine is changed. (`tests/deb.rs` boots the same
//! container for the Debian package.)
//!
//! Covered: `scripts/install.sh` then `systemctl enable --now` (the administrator's two
//! commands), `Type=notify` (the unit becomes active, so READY=1 arrived), `ExecStartPre`
//! check-config, the hardening as applied (capability bounding set, no new privileges,
//! seccomp: the daemon still programs nftables, which caught `setns` being refused under
//! `RestrictNamespaces=yes`), logging to the journal through syslog, a transfer through the
//! unit's daemon with the kernel entry visible, `Restart=on-failure` after SIGKILL mid-transfer
//! with the restart's reconcile dropping the dead daemon's entry, and `systemctl stop` (SIGTERM)
//! mid-transfer removing the entry and ending cleanly.
//!
//! Needs `systemd` and `systemd-nspawn` (Debian: systemd, systemd-container; `scripts/test.sh`
//! installs them).

mod lab;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::container::{status_field, Backend, Container, ProxyClient, UNIT};
use lab::{text, NsProcess, Topology};

const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
const UNIT_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/fasp-proxy.service");
/// Where the container sees the source tree and the built binaries (read-only).
const SRC_INSIDE: &str = "/opt/fasp-proxy-src";
const BIN_INSIDE: &str = "/opt/fasp-proxy-bin";

/// The capability mask that `CapabilityBoundingSet=` of the unit file describes.
fn unit_capability_mask(unit: &str) -> u64 {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    line.split_whitespace()
        .map(|name| {
            let bit = match name {
                "CAP_DAC_READ_SEARCH" => 2,
                "CAP_NET_BIND_SERVICE" => 10,
                "CAP_NET_ADMIN" => 12,
                "CAP_NET_RAW" => 13,
                other => panic!("add {other} to the test's capability table"),
            };
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// Whether the sessions map holds an element for the lab's client.
fn has_client_entry(topo: &Topology) -> bool {
    topo.nft_sessions()
        .contains(&format!("{} . ", lab::CLIENT_V4))
}

/// Waits (20 s at most) for the sessions map to hold an element for the lab's client; panics
/// with the map and the unit's state if it does not.
#[track_caller]
fn assert_client_entry_appears(topo: &Topology, container: &Container) {
    assert!(
        lab::wait_until(Duration::from_secs(20), || has_client_entry(topo)),
        "no kernel entry:\n{}\n{}",
        topo.nft_sessions(),
        container.describe()
    );
}

/// Waits (60 s at most) for `transfer` to end; panics with its output and the unit's state
/// unless it succeeded.
#[track_caller]
fn assert_transfer_succeeds(transfer: &mut NsProcess, container: &Container) {
    let status = transfer.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the transfer failed:\n{}\n{}",
        transfer.log(),
        container.describe()
    );
}

#[test]
fn the_unit_file_runs_the_daemon_under_systemd_with_its_hardening() {
    let topo = Topology::new(1);
    let server = lab::server_v4(0);
    let dir = tempfile::tempdir().unwrap();

    // /etc/fasp-proxy as create-config makes it, then a configuration that logs to syslog
    // (the default) and uses only paths inside /etc/fasp-proxy.
    let etc = dir.path().join("etc");
    let out = Command::new(FASP_PROXY)
        .args(["create-config", "--dir", etc.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "create-config: {}", text(&out.stderr));
    let backend = Backend::start(&topo, dir.path(), &etc);
    lab::seed_known_hosts(&etc.join("known_hosts"), &[&backend.sshd]);
    let write_config = |server_extra: &str| {
        std::fs::write(
            etc.join("aspera.conf"),
            format!(
                "<CONF><server><rproxy>\n<enabled>true</enabled>\n\
                 <ssh_host_key>/etc/fasp-proxy/ssh_host_ed25519_key</ssh_host_key>\n\
                 <authorized_keys_file>/etc/fasp-proxy/%u.keys</authorized_keys_file>\n\
                 <password_authentication>true</password_authentication>\n\
                 <rules><rule><host>{server}:22</host><squash_user>root</squash_user><keyfile>/etc/fasp-proxy/backend_key</keyfile></rule></rules>\n\
                 </rproxy>{server_extra}</server></CONF>\n"
            ),
        )
        .unwrap()
    };
    write_config("");
    let host_pub = std::fs::read_to_string(etc.join("ssh_host_ed25519_key.pub")).unwrap();
    let client = ProxyClient::new(&topo.client, dir.path(), &backend.client_key, &host_pub);

    // Created before the container boots: its root is an overlay whose /etc may already be
    // copied up (systemd-sysusers), hiding later changes of the machine's /etc/shadow.
    let account = lab::PasswordAccount::create("faspunit");
    let bin_dir = Path::new(FASP_PROXY)
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let container = Container::boot(
        topo.proxy.name(),
        dir.path(),
        &[(etc.clone(), "/etc/fasp-proxy")],
        &[
            (PathBuf::from(env!("CARGO_MANIFEST_DIR")), SRC_INSIDE),
            (bin_dir, BIN_INSIDE),
        ],
    );

    // The administrator's two commands, inside the container: the install script (binaries,
    // unit, PAM file; the configuration exists, so it is kept), then enable --now. Type=notify:
    // `systemctl enable --now` returns once READY=1 arrived (or fails).
    let install = container.exec(&[
        "env",
        &format!("INSTALL_BIN_DIR={BIN_INSIDE}"),
        "INSTALL_SKIP_PACKAGES=1",
        &format!("{SRC_INSIDE}/scripts/install.sh"),
    ]);
    let said = format!("{}{}", text(&install.stdout), text(&install.stderr));
    assert!(install.status.success(), "install.sh failed:\n{said}");
    assert!(
        said.contains("kept /etc/fasp-proxy/aspera.conf (exists)")
            && said.contains("installed /etc/pam.d/fasp-proxy")
            && said.contains("installed /usr/local/bin/fasp-proxy"),
        "{said}"
    );
    let installed_unit = container.exec(&["cat", "/etc/systemd/system/fasp-proxy.service"]);
    assert_eq!(
        text(&installed_unit.stdout),
        std::fs::read_to_string(UNIT_FILE).unwrap(),
        "install.sh installed another unit than systemd/fasp-proxy.service"
    );
    container.systemctl_ok(&["enable", "--now", UNIT]);
    container.assert_unit("UnitFileState", "enabled", "");
    container.assert_unit("ActiveState", "active", "");
    let pid = container.unit_property("MainPID");
    assert_ne!(pid, "0", "{}", container.describe());
    assert!(
        container.journal().contains("listening on"),
        "the daemon's syslog lines are not in the journal:\n{}",
        container.describe()
    );

    // systemd's own lint of the unit file finds nothing to say about it.
    let verify = container.exec(&[
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/fasp-proxy.service",
    ]);
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(
        verify.status.success() && !said.contains("fasp-proxy"),
        "systemd-analyze verify:\n{said}"
    );

    // The hardening is in force on the daemon itself. (The container's PID namespace is a
    // child of ours, so MainPID is found under the container's leader.)
    let host_pid = container
        .host_pid(&pid)
        .unwrap_or_else(|| panic!("no host PID for the daemon (PID {pid} inside)"));
    let unit_text = std::fs::read_to_string(UNIT_FILE).unwrap();
    let bounding = u64::from_str_radix(&status_field(&host_pid, "CapBnd"), 16).unwrap();
    assert_eq!(
        bounding,
        unit_capability_mask(&unit_text),
        "capability bounding set {bounding:#x} is not the unit's"
    );
    assert_eq!(status_field(&host_pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(&host_pid, "Seccomp"), "2", "no seccomp filter");

    // A transfer through the daemon the unit started, with the kernel entry visible.
    let payload = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&payload, &data).unwrap();
    let ascp = |rate: &str| client.spawn(&["--overwrite", "always", "-l", rate], &payload);
    let mut transfer = ascp("40m");
    assert_client_entry_appears(&topo, &container);
    // `fasp-proxy sessions` from the host reaches the unit's daemon (its control socket).
    let sessions = text(&topo.proxy.try_exec(&[FASP_PROXY, "sessions"]).stdout);
    assert!(
        sessions.contains("1 live session"),
        "fasp-proxy sessions:\n{sessions}"
    );
    assert_transfer_succeeds(&mut transfer, &container);
    assert_eq!(
        std::fs::read(client.inbox.join("payload.bin")).unwrap(),
        data
    );

    // The journal has the session's lines as a field: `journalctl SESSION_ID=…` shows that one
    // transfer and nothing else.
    let journal = container.journal();
    let id = journal
        .lines()
        .find(|l| l.contains("Setup UDP forwarding"))
        .and_then(|l| {
            l.split_once('[')?
                .1
                .split_once(']')
                .map(|(id, _)| id.to_string())
        })
        .unwrap_or_else(|| panic!("no session line in the journal:\n{journal}"));
    let one = text(
        &container
            .exec(&[
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                &format!("SESSION_ID={id}"),
            ])
            .stdout,
    );
    let lines: Vec<&str> = one.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "journalctl SESSION_ID={id}:\n{one}");
    assert!(
        lines.iter().all(|l| l.contains(&format!("[{id}]"))),
        "journalctl SESSION_ID={id} shows other lines:\n{one}"
    );
    let export = text(
        &container
            .exec(&[
                "journalctl",
                "--no-pager",
                "-o",
                "export",
                &format!("SESSION_ID={id}"),
            ])
            .stdout,
    );
    assert!(export.contains("SYSLOG_IDENTIFIER=fasp-proxy"), "{export}");

    // `systemctl reload` (ExecReload= runs `fasp-proxy reload`): a valid change is applied and
    // said in one line; a broken file fails the reload and leaves the daemon as it was.
    write_config("<admin_group>root</admin_group>");
    container.systemctl_ok(&["reload", UNIT]);
    assert!(
        container
            .journal()
            .contains("configuration reloaded from /etc/fasp-proxy/aspera.conf (asked by uid 0 (root)): <admin_group> None → Some(\"root\")"),
        "{}",
        container.describe()
    );
    std::fs::write(
        etc.join("aspera.conf"),
        "<CONF><server><rproxy><enabled>maybe</enabled>",
    )
    .unwrap();
    let reload = container.systemctl(&["reload", UNIT]);
    assert!(
        !reload.status.success(),
        "a broken file reloaded:\n{}",
        container.describe()
    );
    container.assert_unit("ActiveState", "active", "after a failed reload");
    assert_eq!(
        container.unit_property("MainPID"),
        pid,
        "the daemon was restarted"
    );
    assert!(
        container
            .journal()
            .contains("still running on the previous configuration"),
        "{}",
        container.describe()
    );
    write_config("");
    container.systemctl_ok(&["reload", UNIT]);

    // A password login (account made above), checked by PAM with the shipped
    // etc/pam.d/fasp-proxy, under the hardening.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"checked by PAM").unwrap();
    let out = client.send_with_password(account.name, &account.password, &small);
    assert!(
        out.status.success(),
        "password login under systemd: {}\n{}",
        text(&out.stderr),
        container.describe()
    );
    assert_eq!(
        std::fs::read(client.inbox.join("small.bin")).unwrap(),
        b"checked by PAM"
    );
    drop(account);
    assert!(
        lab::wait_until(Duration::from_secs(10), || !has_client_entry(&topo)),
        "the entry outlived the session:\n{}",
        topo.nft_sessions()
    );

    // Restart=on-failure: SIGKILL mid-transfer; systemd starts it again, and the new daemon's
    // reconcile drops the entry the dead one left.
    let mut doomed = ascp("8m");
    assert_client_entry_appears(&topo, &container);
    container.systemctl_ok(&["kill", "--signal=SIGKILL", UNIT]);
    let restarted = lab::wait_until(Duration::from_secs(30), || {
        container.unit_property("NRestarts") == "1"
            && container.unit_property("ActiveState") == "active"
    });
    assert!(
        restarted,
        "not restarted after SIGKILL:\n{}",
        container.describe()
    );
    assert_ne!(container.unit_property("MainPID"), pid, "the same process?");
    assert!(
        lab::wait_until(Duration::from_secs(10), || !has_client_entry(&topo)),
        "the killed daemon's entry survived the restart:\n{}\n{}",
        topo.nft_sessions(),
        container.describe()
    );
    let _ = doomed.wait_exit(Duration::from_secs(60));

    // systemctl stop (SIGTERM) mid-transfer: the session is closed, its entry removed, and the
    // unit ends cleanly (not "failed").
    let mut stopped_mid = ascp("8m");
    assert_client_entry_appears(&topo, &container);
    container.systemctl_ok(&["stop", UNIT]);
    container.assert_unit("ActiveState", "inactive", "");
    container.assert_unit("Result", "success", "");
    assert!(
        !has_client_entry(&topo),
        "entries left after systemctl stop:\n{}",
        topo.nft_sessions()
    );
    let status = stopped_mid.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "a transfer cut by the stop cannot have succeeded"
    );
    let journal = container.journal();
    assert!(journal.contains("Setup UDP forwarding"), "{journal}");
    // LimitMEMLOCK leaves room for russh's locked buffers.
    assert!(!journal.contains("failed to lock"), "{journal}");

    // The iptables backend under the same hardening (iptables-restore as a child process).
    write_config("<forwarding_type>iptables</forwarding_type>");
    container.systemctl_ok(&["start", UNIT]);
    let iptables_nat = || topo.iptables_nat();
    let client = lab::CLIENT_V4.to_string();
    let mut transfer = ascp("40m");
    let seen = lab::wait_until(Duration::from_secs(20), || iptables_nat().contains(&client));
    assert!(
        seen,
        "no iptables rule:\n{}\n{}",
        iptables_nat(),
        container.describe()
    );
    assert_transfer_succeeds(&mut transfer, &container);
    container.systemctl_ok(&["stop", UNIT]);
    container.assert_unit("Result", "success", "iptables backend");
    assert!(
        !iptables_nat().contains(&client),
        "a rule was left:\n{}",
        iptables_nat()
    );

    // The BPF fast path: the shipped unit lacks CAP_BPF, so the daemon says what it needs and
    // does not start; the drop-in docs/operations.md gives makes it work.
    write_config("<fast_path>true</fast_path>");
    let refused = container.systemctl(&["start", UNIT]);
    assert!(!refused.status.success(), "started without CAP_BPF");
    let journal = container.journal();
    assert!(
        journal.contains("it needs root, or CAP_BPF and CAP_NET_ADMIN"),
        "{journal}"
    );
    let drop_in = "/etc/systemd/system/fasp-proxy.service.d";
    let made = container.exec(&[
        "sh",
        "-c",
        &format!(
            "mkdir -p {drop_in} && printf '[Service]\\nCapabilityBoundingSet=CAP_BPF\\n' \
             > {drop_in}/fast-path.conf && systemctl daemon-reload && systemctl reset-failed {UNIT}"
        ),
    ]);
    assert!(made.status.success(), "{}", lab::describe(&made));
    container.systemctl_ok(&["start", UNIT]);
    assert!(
        container
            .journal()
            .contains("BPF fast path attached at the ingress of "),
        "{}",
        container.describe()
    );
    let mut transfer = ascp("40m");
    assert_client_entry_appears(&topo, &container);
    assert_transfer_succeeds(&mut transfer, &container);
    container.systemctl_ok(&["stop", UNIT]);
    container.assert_unit("Result", "success", "fast path");
    drop(container);
    drop(backend);
}
