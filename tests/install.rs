//! `scripts/install.sh` staged into a directory (`DESTDIR`), with the binaries this build made
//! (`INSTALL_BIN_DIR`): what it installs, with which modes, that a second run replaces the
//! binaries but keeps an edited configuration and PAM file byte-identical, and that another
//! `PREFIX` is written into the unit. (Installing for real, then `systemctl enable --now`, is
//! in `tests/systemd.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");
const UNIT_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/fasp-proxy.service");

fn install(destdir: &Path, prefix: Option<&str>) -> Output {
    let bin_dir = Path::new(FASP_PROXY).parent().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT)
        .env("DESTDIR", destdir)
        .env("INSTALL_BIN_DIR", bin_dir)
        .env_remove("PREFIX");
    if let Some(p) = prefix {
        cmd.env("PREFIX", p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "install.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn installs_everything_once_and_keeps_what_the_administrator_changed() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    install(d, None);
    assert_eq!(mode(&d.join("usr/local/bin/fasp-proxy")), 0o755);
    assert_eq!(mode(&d.join("usr/local/bin/ascp")), 0o755);
    assert_eq!(mode(&d.join("usr/local/bin/ascmd")), 0o755);
    assert_eq!(mode(&d.join("usr/local/bin/aspshell")), 0o755);
    // aspshell and ascmd read the configuration as the transfer user.
    assert_eq!(mode(&d.join("etc/fasp-proxy/aspera.conf")), 0o644);
    assert_eq!(
        mode(&d.join("etc/systemd/system/fasp-proxy.service")),
        0o644
    );
    assert_eq!(mode(&d.join("etc/pam.d/fasp-proxy")), 0o644);
    assert_eq!(mode(&d.join("etc/fasp-proxy/ssh_host_ed25519_key")), 0o600);
    assert_eq!(mode(&d.join("etc/fasp-proxy/ssh_host_rsa_key")), 0o600);
    assert_eq!(mode(&d.join("etc/fasp-proxy/api_key.pem")), 0o600);
    assert_eq!(
        std::fs::read_to_string(d.join("etc/systemd/system/fasp-proxy.service")).unwrap(),
        std::fs::read_to_string(UNIT_FILE).unwrap()
    );
    // The configuration names its host key where it will live, not under DESTDIR.
    let conf = d.join("etc/fasp-proxy/aspera.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("<ssh_host_key>/etc/fasp-proxy/ssh_host_ed25519_key</ssh_host_key>"),
        "{text}"
    );
    assert!(
        text.contains("<ssh_host_rsa_key>/etc/fasp-proxy/ssh_host_rsa_key</ssh_host_rsa_key>"),
        "{text}"
    );
    assert!(
        text.contains("<https_certificate>/etc/fasp-proxy/api_cert.pem</https_certificate>")
            && text.contains("<https_private_key>/etc/fasp-proxy/api_key.pem</https_private_key>"),
        "{text}"
    );
    // And it is a configuration the installed binary accepts.
    let check = Command::new(d.join("usr/local/bin/fasp-proxy"))
        .args(["--config", conf.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The administrator edits; a second run keeps those files, key included.
    let pam = d.join("etc/pam.d/fasp-proxy");
    std::fs::write(&conf, format!("{text}<!-- edited -->\n")).unwrap();
    std::fs::write(&pam, "auth required pam_deny.so\n").unwrap();
    let key_before = std::fs::read(d.join("etc/fasp-proxy/ssh_host_ed25519_key")).unwrap();
    let out = install(d, None);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("kept /etc/fasp-proxy/aspera.conf")
            && said.contains("kept /etc/pam.d/fasp-proxy"),
        "{said}"
    );
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .ends_with("<!-- edited -->\n"));
    assert_eq!(
        std::fs::read_to_string(&pam).unwrap(),
        "auth required pam_deny.so\n"
    );
    assert_eq!(
        std::fs::read(d.join("etc/fasp-proxy/ssh_host_ed25519_key")).unwrap(),
        key_before
    );
}

#[test]
fn another_prefix_is_written_into_the_unit() {
    let dest = tempfile::tempdir().unwrap();
    install(dest.path(), Some("/opt/fasp"));
    assert!(dest.path().join("opt/fasp/bin/fasp-proxy").exists());
    let unit =
        std::fs::read_to_string(dest.path().join("etc/systemd/system/fasp-proxy.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/fasp/bin/fasp-proxy "),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/bin/fasp-proxy"), "{unit}");
}

#[test]
fn a_relative_prefix_is_refused_before_anything_is_written() {
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(SCRIPT)
        .env("DESTDIR", dest.path())
        .env("PREFIX", "usr/local")
        .env("INSTALL_BIN_DIR", Path::new(FASP_PROXY).parent().unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PREFIX must be an absolute path"));
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
}
