//! `aspshell` as the login shell of a real account behind a real OpenSSH sshd in the namespace
//! lab: refusals (nothing runs), interactive logins, scp, sftp and forwarding refused, transfers
//! with our `ascp` through it, the clean environment, the configuration failing closed, IBM's
//! `ascp` from `/opt/aspera/bin`, and syslog that never blocks.
//!
//! sshd runs in a private mount namespace (only it and the sessions it starts see it) where
//! `/dev`, `/etc` and `/opt` are overlays on a tmpfs: `/dev/log` is the test's own socket (or
//! absent), `/etc/fasp-proxy` the test's directory and `/opt/aspera/bin` the test's choice
//! (empty, or IBM's client directory). Nothing of the machine's own files changes.

mod lab;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::accounts::{copy_binaries, dir_0755, Account};
use lab::{content, describe, text, Sshd, Topology};

const ASPSHELL: &str = env!("CARGO_BIN_EXE_aspshell");
const ASCP: &str = env!("CARGO_BIN_EXE_ascp");

const NO_LOGIN: &str =
    "This account is for file transfers only; interactive logins are not available.";

/// Gives sshd a private mount namespace. `$0` is the test's directory: `ns/` (an empty
/// directory, the tmpfs for the overlays), `conf/` (becomes /etc/fasp-proxy), `ibm/` (becomes
/// /opt/aspera/bin), and `log.sock` if the test listens for syslog lines.
const NAMESPACE_SCRIPT: &str = r#"set -e
W=$0
overlay() {
    mkdir "$W/ns/$2.up" "$W/ns/$2.work"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$W/ns/$2.up,workdir=$W/ns/$2.work" "$1"
    [ "$(stat -f -c %T "$1")" = overlayfs ] || { echo "$1 is not an overlay" >&2; exit 1; }
}
mount -t tmpfs -o mode=0755 aspshell-test "$W/ns"
mkdir "$W/ns/dev.real"
mount --rbind /dev "$W/ns/dev.real"
overlay /dev dev
mount --rbind "$W/ns/dev.real/pts" /dev/pts
mount --rbind "$W/ns/dev.real/shm" /dev/shm
rm -f /dev/log
if [ -S "$W/log.sock" ]; then : > /dev/log; mount --bind "$W/log.sock" /dev/log; fi
overlay /etc etc
[ -d /etc/fasp-proxy ] || mkdir /etc/fasp-proxy
mount --bind "$W/conf" /etc/fasp-proxy
overlay /opt opt
mkdir -p /opt/aspera/bin
mount --bind "$W/ibm" /opt/aspera/bin
exec "$@"
"#;

/// What `/dev/log` is in sshd's namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syslog {
    /// The test's socket, read by the test.
    Listening,
    /// The test's socket with its queue full (nobody reads it).
    Full,
    /// None.
    Absent,
}

/// The lab: client and server namespaces, sshd in the server one with aspshell as the test
/// account's shell.
struct Fixture {
    sshd: Sshd,
    /// Dropped before the account: every process of the account ends with the namespaces.
    topo: Topology,
    account: Account,
    /// The test's directory (see [`NAMESPACE_SCRIPT`]).
    root: tempfile::TempDir,
    /// aspshell, ascp (and ascmd if built), mode 0755.
    bin: tempfile::TempDir,
    log: Option<UnixDatagram>,
    /// Keeps a full syslog queue full.
    _fillers: Vec<UnixDatagram>,
}

/// The sshd_config block of docs/operations.md (section "aspshell"), for this account.
fn documented_sshd_block(user: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = doc
        .split("## aspshell: the transfer users' login shell")
        .nth(1)
        .expect("docs/operations.md has the aspshell section");
    let block = section
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|b| b.contains("Match Group transfer"))
        .expect("the aspshell section has the sshd_config block");
    assert!(
        block.contains("Subsystem sftp /usr/lib/openssh/sftp-server"),
        "{block}"
    );
    block.replace("Match Group transfer", &format!("Match User {user}"))
}

/// Fills the receive queue of the datagram socket at `path`: new senders until one cannot
/// send a single datagram (a sender's own buffer may fill first, so one is not enough).
fn fill(path: &Path) -> Vec<UnixDatagram> {
    let mut senders = Vec::new();
    for _ in 0..1000 {
        let s = UnixDatagram::unbound().unwrap();
        s.set_nonblocking(true).unwrap();
        s.connect(path).unwrap();
        let mut sent = 0;
        loop {
            match s.send(b"<38>filler") {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        senders.push(s);
        if sent == 0 {
            return senders;
        }
    }
    panic!("could not fill {}", path.display());
}

/// How a [`Fixture`] differs from the plain one.
struct Options<'a> {
    /// What `/dev/log` is.
    syslog: Syslog,
    /// The directory that becomes /opt/aspera/bin (else an empty one).
    ibm: Option<&'a Path>,
    /// sshd_config lines before the documented block.
    sshd_extra: String,
    /// Leave `PermitTTY no` out of the documented block.
    permit_tty: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            syslog: Syslog::Listening,
            ibm: None,
            sshd_extra: String::new(),
            permit_tty: false,
        }
    }
}

impl Fixture {
    fn new(user: &str) -> Fixture {
        Fixture::with(user, Options::default())
    }

    fn with(user: &str, options: Options) -> Fixture {
        let Options {
            syslog,
            ibm,
            sshd_extra,
            permit_tty,
        } = options;
        let bin = dir_0755();
        copy_binaries(bin.path(), &[ASPSHELL, ASCP]);
        let ascmd = Path::new(ASPSHELL).with_file_name("ascmd");
        if ascmd.exists() {
            copy_binaries(bin.path(), &[&ascmd.display().to_string()]);
        }
        let account = Account::with_temp_home(user, &bin.path().join("aspshell"));

        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("ns")).unwrap();
        for d in ["conf", "ibm"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
            std::fs::set_permissions(root.path().join(d), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        if let Some(ibm) = ibm {
            std::fs::remove_dir(root.path().join("ibm")).unwrap();
            std::os::unix::fs::symlink(ibm, root.path().join("ibm")).unwrap();
        }
        let sock = root.path().join("log.sock");
        let (log, fillers) = match syslog {
            Syslog::Absent => (None, Vec::new()),
            Syslog::Listening | Syslog::Full => {
                let log = UnixDatagram::bind(&sock).unwrap();
                log.set_nonblocking(true).unwrap();
                std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
                let fillers = if syslog == Syslog::Full {
                    fill(&sock)
                } else {
                    Vec::new()
                };
                (Some(log), fillers)
            }
        };

        let topo = Topology::new(1);
        let root_arg = root.path().display().to_string();
        let prefix = ["unshare", "-m", "sh", "-c", NAMESPACE_SCRIPT, &root_arg];
        let mut block = documented_sshd_block(user);
        if permit_tty {
            block = block.replace("PermitTTY no", "");
        }
        let extra =
            format!("{sshd_extra}\nAcceptEnv LANG LC_ALL LD_PRELOAD FASP_TEST_SECRET\n{block}");
        let sshd = Sshd::start_configured(
            topo.server(),
            SocketAddr::new(lab::server_v4(0).into(), 22),
            &prefix,
            &extra,
        );
        sshd.open_to_accounts();
        Fixture {
            sshd,
            account,
            topo,
            root,
            bin,
            log,
            _fillers: fillers,
        }
    }

    fn destination(&self) -> String {
        format!("{}@{}", self.account.name, lab::server_v4(0))
    }

    /// `ssh [options] user@server [command]` from the client namespace (at most 60 s).
    fn ssh(&self, options: &[&str], command: Option<&str>) -> Output {
        self.ssh_from(&[], options, command)
    }

    /// `ssh -tt user@server` (an interactive login with a forced terminal) whose input never
    /// ends (an ssh with a terminal quits at the end of its input, before the answer).
    fn ssh_tty(&self) -> Output {
        self.ssh_from(
            &["sh", "-c", "exec \"$@\" < /dev/zero", "sh"],
            &["-tt"],
            None,
        )
    }

    fn ssh_from(&self, wrapper: &[&str], options: &[&str], command: Option<&str>) -> Output {
        let login = self.sshd.ssh_options();
        let destination = self.destination();
        let mut args = vec!["timeout", "60"];
        args.extend_from_slice(wrapper);
        args.push("ssh");
        args.extend(login.iter().map(String::as_str));
        args.extend_from_slice(options);
        args.push(&destination);
        args.extend(command);
        self.topo.client.try_exec(&args)
    }

    /// Runs our `ascp` client in the client namespace (at most 120 s).
    fn ascp(&self, args: &[&str]) -> Output {
        let login = self.sshd.ascp_options();
        let mut all = vec!["timeout", "120", ASCP];
        all.extend(login.iter().map(String::as_str));
        all.extend_from_slice(args);
        self.topo.client.try_exec(&all)
    }

    /// The syslog lines aspshell sent since the last call.
    fn log_lines(&self) -> Vec<String> {
        let mut lines = self.log_lines_all();
        lines.retain(|l| l.contains(" aspshell["));
        lines
    }

    /// Every syslog line since the last call, whoever sent it (IBM's ascp logs there too).
    fn log_lines_all(&self) -> Vec<String> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match log.recv(&mut buf) {
                Ok(n) => lines.push(text(&buf[..n])),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return lines,
                Err(e) => panic!("syslog socket: {e}"),
            }
        }
    }

    /// The one syslog line since the last call; checks its facility, ident, user and client.
    fn log_line(&self) -> String {
        let lines = self.log_lines();
        assert_eq!(lines.len(), 1, "one syslog line expected: {lines:#?}");
        let line = lines.into_iter().next().unwrap_or_default();
        assert!(
            ["<35>", "<36>", "<37>", "<38>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "facility auth: {line}"
        );
        assert!(line.contains(" aspshell["), "{line}");
        assert!(
            line.contains(&format!(
                "user {} (uid {}), client {} port ",
                self.account.name,
                self.account.uid,
                lab::CLIENT_V4
            )),
            "{line}"
        );
        assert!(line.contains("(SSH_CONNECTION)"), "{line}");
        line
    }

    fn conf(&self) -> PathBuf {
        self.root.path().join("conf/aspera.conf")
    }
}

/// Asserts that aspshell refused `shown` (the escaped command) with its message and status 1,
/// and that the command printed nothing.
fn assert_refused(out: &Output, shown: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    assert!(
        err.lines()
            .any(|l| l == format!("Command not accepted: {shown}")),
        "{}",
        describe(out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(out));
}

#[test]
fn everything_but_the_allowed_commands_is_refused_and_nothing_runs() {
    let f = Fixture::new("fpash-refuse");
    let home = f.account.home().display().to_string();
    let marker = |i: usize| f.account.home().join(format!("marker{i}"));
    // Each would create its marker if any shell ran it.
    let cases: Vec<String> = vec![
        format!("touch {home}/marker0"),
        format!("bash -c 'touch {home}/marker1'"),
        format!("ascp --server; touch {home}/marker2"),
        format!("ascp --server && touch {home}/marker3"),
        format!("ascp -e /usr/bin/touch {home}/marker4"),
        format!("/bin/sh -c \"touch {home}/marker5\""),
        format!("ascp --server $(touch {home}/marker6)"),
        format!("ascp --server `touch {home}/marker7`"),
        format!("ascp --server | touch {home}/marker8"),
        format!("ascp --server > {home}/marker9"),
        format!("ascp --server\ntouch {home}/marker10"),
        format!("touch {home}/marker11 #"),
    ];
    for (i, command) in cases.iter().enumerate() {
        let out = f.ssh(&[], Some(command));
        let shown = command.replace('\n', "\\n");
        assert_refused(&out, &shown);
        assert!(!marker(i).exists(), "{command:?} ran: {}", describe(&out));
        let line = f.log_line();
        assert!(line.starts_with("<36>"), "a refusal is a warning: {line}");
        assert!(
            line.ends_with(&format!("not an allowed command: {shown}")),
            "{line}"
        );
    }
    // What a shell would run, or a near miss of an allowed shape: refused, nothing printed.
    for command in [
        "id",
        "bash",
        "/bin/sh -c id",
        "ascp --server ",
        " ascp --server",
        "ascp  --server",
        "ascp --server -e id",
        "ascmd -V1",
        "ascp -S. -V1", // IBM's: /opt/aspera/bin is empty here
        "scp -t .",
    ] {
        let out = f.ssh(&[], Some(command));
        assert_refused(&out, command);
        assert!(
            f.log_line()
                .ends_with(&format!("not an allowed command: {command}")),
            "{command}"
        );
    }
    // Control characters and non-ASCII are escaped on stderr and in the log.
    let out = f.ssh(&[], Some("id\x1b[2J\u{202e}"));
    assert_refused(&out, "id\\x1b[2J\\u{202e}");
    assert!(f.log_line().ends_with(": id\\x1b[2J\\u{202e}"));

    // Interactive login: a terminal is refused by sshd (the Match block's PermitTTY no), and
    // ssh gives up when it asked for one; without one, aspshell's line.
    let out = f.ssh_tty();
    let all = describe(&out);
    assert_eq!(out.status.code(), Some(255), "{all}");
    assert!(all.contains("PTY allocation request failed"), "{all}");
    assert!(out.stdout.is_empty(), "{all}");
    // sshd may have started the shell before ssh left: if so, aspshell refused the login.
    std::thread::sleep(Duration::from_millis(500));
    for line in f.log_lines() {
        assert!(line.ends_with(", interactive login"), "{line}");
    }
    let out = f.ssh(&["-T"], None);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(text(&out.stderr).trim(), NO_LOGIN, "{}", describe(&out));
    let line = f.log_line();
    assert!(
        line.starts_with("<37>") && line.ends_with(", interactive login"),
        "{line}"
    );

    // scp (the old protocol runs `scp -t`, the new one the sftp subsystem) and sftp: refused
    // by aspshell, nothing written.
    let local = f.root.path().join("upload.txt");
    std::fs::write(&local, "data").unwrap();
    let local_arg = local.display().to_string();
    let key = f.sshd.client_key.display().to_string();
    let known = format!("UserKnownHostsFile={}", f.sshd.known_hosts.display());
    let common = [
        "-F",
        "/dev/null",
        "-i",
        &key,
        "-o",
        &known,
        "-o",
        "BatchMode=yes",
    ];
    for (legacy, name) in [(true, "scp-legacy.txt"), (false, "scp-sftp.txt")] {
        let target = format!("{}:{home}/{name}", f.destination());
        let mut args = vec!["timeout", "60", "scp"];
        if legacy {
            args.push("-O");
        }
        args.extend_from_slice(&common);
        args.extend([local_arg.as_str(), target.as_str()]);
        let out = f.topo.client.try_exec(&args);
        assert!(!out.status.success(), "{}", describe(&out));
        assert_ne!(out.status.code(), Some(124), "{}", describe(&out));
        assert!(!f.account.home().join(name).exists(), "scp wrote {name}");
        let line = f.log_line();
        let sent = if legacy {
            format!("scp -t {home}/{name}")
        } else {
            "/usr/lib/openssh/sftp-server".to_string()
        };
        assert!(
            line.ends_with(&format!("not an allowed command: {sent}")),
            "{line}"
        );
        if legacy {
            assert!(
                text(&out.stderr).contains(&format!("Command not accepted: {sent}")),
                "{}",
                describe(&out)
            );
        }
    }
    let batch = f.root.path().join("batch");
    std::fs::write(&batch, format!("put {local_arg} {home}/sftp.txt\n")).unwrap();
    let batch_arg = batch.display().to_string();
    let mut args = vec!["timeout", "60", "sftp", "-b", &batch_arg];
    args.extend_from_slice(&common);
    let destination = f.destination();
    args.push(&destination);
    let out = f.topo.client.try_exec(&args);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!f.account.home().join("sftp.txt").exists());
    assert!(f
        .log_line()
        .ends_with("not an allowed command: /usr/lib/openssh/sftp-server"));

    // Forwarding is sshd's to refuse (the Match block): a direct-tcpip channel, a remote
    // forward. Neither reaches aspshell.
    let out = f.ssh(&["-W", "198.51.100.2:22"], None);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("administratively prohibited"),
        "{}",
        describe(&out)
    );
    let out = f.ssh(
        &[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "2222:127.0.0.1:22",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        describe(&out)
    );
    assert!(f.log_lines().is_empty(), "{:#?}", f.log_lines());

    // What remains in the home directory: nothing.
    let left: Vec<_> = std::fs::read_dir(f.account.home())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// With a terminal (sshd allowing one): the same one line, exit status 1.
#[test]
fn an_interactive_login_with_a_terminal_gets_one_line() {
    let f = Fixture::with(
        "fpash-tty",
        Options {
            permit_tty: true,
            ..Options::default()
        },
    );
    let out = f.ssh_tty();
    let all = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("PTY allocation request failed"), "{all}");
    // With a terminal, the remote stderr arrives on stdout.
    assert!(text(&out.stdout).contains(NO_LOGIN), "{all}");
    let line = f.log_line();
    assert!(
        line.starts_with("<37>") && line.ends_with(", interactive login"),
        "{line}"
    );
}

#[test]
fn our_ascp_uploads_and_downloads_through_aspshell() {
    let f = Fixture::new("fpash-xfer");
    let src = f.root.path().join("up.bin");
    std::fs::write(&src, content(2_000_000, 7)).unwrap();
    let remote_dir = format!("{}:{}", f.destination(), f.account.home().display());
    let out = f.ascp(&["-l", "300m", src.to_str().unwrap(), &remote_dir]);
    assert!(out.status.success(), "{}", describe(&out));
    let uploaded = f.account.home().join("up.bin");
    assert_eq!(
        std::fs::read(&uploaded).unwrap(),
        std::fs::read(&src).unwrap()
    );
    // Written by ascp --server running as the account, started by aspshell.
    assert_eq!(std::fs::metadata(&uploaded).unwrap().uid(), f.account.uid);
    let line = f.log_line();
    let want = format!(
        "fasp-proxy shape \"ascp --server\", runs {}/ascp: ascp --server",
        f.bin.path().display()
    );
    assert!(
        line.starts_with("<38>") && line.contains("accepted: ") && line.ends_with(&want),
        "{line}"
    );

    let back = f.root.path().join("back.bin");
    let remote_file = format!("{}:{}", f.destination(), uploaded.display());
    let out = f.ascp(&["-l", "300m", &remote_file, back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
    assert!(f.log_line().ends_with(&want));

    // `ascmd` is ours too: run from aspshell's directory, or refused as not installed there.
    let out = f.ssh(&[], Some("ascmd"));
    let line = f.log_line();
    if f.bin.path().join("ascmd").exists() {
        assert!(line.contains("accepted: "), "{line}");
        assert!(
            !text(&out.stderr).contains("Command not accepted"),
            "{}",
            describe(&out)
        );
    } else {
        assert_refused(&out, "ascmd");
        assert!(
            line.starts_with("<35>") && line.contains("is not installed beside aspshell"),
            "{line}"
        );
        assert!(text(&out.stderr).contains("not installed on this server"));
    }
}

/// `<aspshell_commands>`: extra shapes, the clean environment, and a configuration that cannot
/// be used refusing everything.
#[test]
fn configured_commands_get_a_clean_environment_and_a_broken_configuration_fails_closed() {
    let f = Fixture::new("fpash-env");
    // A program found by name in aspshell's own directory.
    let script = f.bin.path().join("showdir");
    std::fs::write(&script, "#!/bin/sh\npwd -P\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let valid = "<CONF version=\"2\">\n<default>\n<aspshell_commands>\n\
                 <command>/usr/bin/printenv</command>\n<command>printenv {arg}</command>\n\
                 <command>showdir</command>\n</aspshell_commands>\n</default>\n</CONF>\n";
    let env_options = [
        "-o",
        "SetEnv=LANG=C.UTF-8 LC_ALL=../../tmp/x LD_PRELOAD=/nonexistent/evil.so FASP_TEST_SECRET=1",
    ];

    // No configuration: no extra shapes; ours still run.
    let out = f.ssh(&[], Some("/usr/bin/printenv"));
    assert_refused(&out, "/usr/bin/printenv");
    f.log_line();

    std::fs::write(f.conf(), valid).unwrap();
    let out = f.ssh(&env_options, Some("/usr/bin/printenv"));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mut env: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    env.sort();
    let names: Vec<&str> = env.iter().filter_map(|l| l.split('=').next()).collect();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "LOGNAME",
            "PATH",
            "SHELL",
            "SSH_CLIENT",
            "SSH_CONNECTION",
            "USER"
        ],
        "{env:#?}"
    );
    let has = |l: String| assert!(env.contains(&l), "{l} missing from {env:#?}");
    has(format!("HOME={}", f.account.home().display()));
    has(format!("USER={}", f.account.name));
    has(format!("LOGNAME={}", f.account.name));
    has(format!("SHELL={}/aspshell", f.bin.path().display()));
    has("PATH=/usr/local/bin:/usr/bin:/bin".into());
    has("LANG=C.UTF-8".into());
    assert!(
        env.iter()
            .any(|l| l.starts_with(&format!("SSH_CONNECTION={} ", lab::CLIENT_V4))),
        "{env:#?}"
    );
    let line = f.log_line();
    assert!(
        line.ends_with(
            "configured shape \"/usr/bin/printenv\", runs /usr/bin/printenv: /usr/bin/printenv"
        ),
        "{line}"
    );

    // By name: /usr/bin/printenv; one in aspshell's directory; the working directory is home.
    let out = f.ssh(&[], Some("printenv USER"));
    assert_eq!(
        text(&out.stdout).trim(),
        f.account.name,
        "{}",
        describe(&out)
    );
    assert!(f
        .log_line()
        .contains("runs /usr/bin/printenv: printenv USER"));
    let out = f.ssh(&[], Some("printenv -0"));
    assert_refused(&out, "printenv -0");
    f.log_line();
    let out = f.ssh(&[], Some("showdir"));
    assert_eq!(
        text(&out.stdout).trim(),
        f.account
            .home()
            .canonicalize()
            .unwrap()
            .display()
            .to_string(),
        "{}",
        describe(&out)
    );
    assert!(f
        .log_line()
        .contains(&format!("runs {}: showdir", script.display())));

    // Invalid, then unreadable: every command refused, even ours, with the reason logged.
    std::fs::write(f.conf(), "<CONF version=\"2\">\n<default>\n<nonsense/>\n").unwrap();
    for command in ["ascp --server", "/usr/bin/printenv"] {
        let out = f.ssh(&[], Some(command));
        assert_refused(&out, command);
        assert!(
            text(&out.stderr).contains("ask its administrator"),
            "{}",
            describe(&out)
        );
        let line = f.log_line();
        assert!(line.starts_with("<35>"), "{line}");
        assert!(
            line.contains("refusing every command: /etc/fasp-proxy/aspera.conf:"),
            "{line}"
        );
    }
    std::fs::write(f.conf(), valid).unwrap();
    std::fs::set_permissions(f.conf(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = f.ssh(&[], Some("ascp --server"));
    assert_refused(&out, "ascp --server");
    let line = f.log_line();
    assert!(
        line.contains("/etc/fasp-proxy/aspera.conf: cannot read: Permission denied"),
        "{line}"
    );
    // Readable again: accepted again, without restarting anything.
    std::fs::set_permissions(f.conf(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = f.ssh(&[], Some("printenv HOME"));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    f.log_line();
}

/// IBM's shapes run IBM's programs from /opt/aspera/bin, when they are there: IBM's own client
/// reaches IBM's ascp (client-licensed, so it ends the session once it runs) through aspshell.
#[test]
fn ibm_ascp_runs_from_opt_aspera_bin() {
    let ibm = PathBuf::from(
        std::env::var_os("FASP_PROXY_IBM_ASCP_DIR").unwrap_or_else(|| {
            panic!(
                "FASP_PROXY_IBM_ASCP_DIR is not set: run the tests with ./scripts/test.sh, which \
             fetches IBM's ascp (PyPI cos-aspera 0.1.163682) and sets it"
            )
        }),
    );
    assert!(ibm.join("ascp").is_file(), "{}", ibm.display());
    // IBM's client speaks ssh-rsa (SHA-1) only: an RSA host key and an RSA client key.
    let keys = tempfile::tempdir().unwrap();
    let rsa = keys.path().join("id_rsa");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(st.success());
    let host_rsa = keys.path().join("host_rsa");
    std::fs::copy(&rsa, &host_rsa).unwrap();
    std::fs::set_permissions(&host_rsa, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = Fixture::with(
        "fpash-ibm",
        Options {
            ibm: Some(&ibm),
            sshd_extra: format!(
                "HostKey {}\nHostKeyAlgorithms +ssh-rsa\nPubkeyAcceptedAlgorithms +ssh-rsa",
                host_rsa.display()
            ),
            ..Options::default()
        },
    );
    let authorized = f.sshd.dir.path().join("authorized_keys");
    let mut keys_text = std::fs::read_to_string(&authorized).unwrap();
    keys_text.push_str(&std::fs::read_to_string(rsa.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys_text).unwrap();

    let src = f.root.path().join("ibm.bin");
    std::fs::write(&src, content(10_000, 3)).unwrap();
    let target = format!("{}:{}/", f.destination(), f.account.home().display());
    let out = f.topo.client.try_exec(&[
        "timeout",
        "60",
        ibm.join("ascp").to_str().unwrap(),
        "-P",
        "22",
        "-i",
        rsa.to_str().unwrap(),
        src.to_str().unwrap(),
        &target,
    ]);
    let all = describe(&out);
    assert!(all.contains("Server has only a client license"), "{all}");
    // IBM's ascp logs to the same socket (its lines are left out) and may still be at it: read
    // until it is quiet, so its lines cannot fill the queue (10 datagrams) for aspshell's next.
    let mut lines = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        let seen = f.log_lines_all();
        if !seen.is_empty() {
            quiet_since = Instant::now();
        }
        lines.extend(seen.into_iter().filter(|l| l.contains(" aspshell[")));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].ends_with("IBM shape \"ascp -S. -V1\", runs /opt/aspera/bin/ascp: ascp -S. -V1"),
        "{lines:#?}"
    );
    // IBM's other shapes: their programs are not in this directory, so they are refused.
    for command in ["ascp4 -S.", "async -q -S -s-"] {
        let out = f.ssh(&[], Some(command));
        assert_refused(&out, command);
        f.log_line();
    }
}

/// A syslog daemon that does not read, or none at all: aspshell still answers at once.
#[test]
fn syslog_that_is_full_or_missing_never_blocks_the_shell() {
    for syslog in [Syslog::Full, Syslog::Absent] {
        let f = Fixture::with(
            "fpash-log",
            Options {
                syslog,
                ..Options::default()
            },
        );
        let start = Instant::now();
        let out = f.ssh(&[], Some("id"));
        assert_refused(&out, "id");
        let out = f.ssh(&["-T"], None);
        assert_eq!(text(&out.stderr).trim(), NO_LOGIN, "{}", describe(&out));
        // Accepted: ascp --server starts (and ends at once: its stdin is empty).
        let out = f.ssh(&[], Some("ascp --server"));
        assert!(
            !text(&out.stderr).contains("Command not accepted"),
            "{}",
            describe(&out)
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        if syslog == Syslog::Full {
            let lines = f.log_lines();
            assert!(
                lines.is_empty(),
                "aspshell's lines cannot fit in a full queue: {lines:?}"
            );
        }
    }
}
