//! Browsing end to end: real OpenSSH `sshd` in a namespace, a real non-root account whose
//! docroot comes from an IBM-layout `aspera.conf`, our `ascmd` on the server, and our `ascp`
//! browse verbs (or plain `ssh` with a command script) on the client.
//!
//! The test's `aspera.conf` reaches `ascmd` at the one place it reads (`/etc/fasp-proxy`): sshd
//! runs in a mount namespace of its own (`unshare -m`) where a temp dir is bind-mounted over
//! `/etc/fasp-proxy`; the machine's own directory is not touched (it is only created, empty,
//! if missing, to have something to mount over).

mod lab;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fasp_proxy::browse::wire::{decode_all, Reply};
use lab::accounts::{copy_binaries, Account};
use lab::{text, Lab, Netns, Sshd};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const ASCMD: &str = env!("CARGO_BIN_EXE_ascmd");
const ASPSHELL: &str = env!("CARGO_BIN_EXE_aspshell");

/// The lab: a namespace with sshd on its loopback, the account, its docroot and a directory
/// beside the docroot.
struct Setup {
    /// `--remote-ascmd`: `ascmd` under aspshell, else the copy's full path.
    remote_ascmd: String,
    account: Account,
    sshd: Sshd,
    ns: Netns,
    base: tempfile::TempDir,
    _lab: Lab,
}

const PORT: u16 = 2222;

impl Setup {
    fn new(user: &'static str) -> Setup {
        Setup::with_shell(user, false)
    }

    /// With `aspshell`: the account's login shell is `aspshell`, installed beside `ascmd`.
    fn with_shell(user: &'static str, aspshell: bool) -> Setup {
        let base = tempfile::tempdir().unwrap();
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["etc", "home", "bin", "docroots", "outside"] {
            fs::create_dir(base.path().join(d)).unwrap();
        }
        let home = base.path().join("home").join(user);
        fs::create_dir(&home).unwrap();
        copy_binaries(&base.path().join("bin"), &[ASCMD, ASPSHELL]);
        let shell = if aspshell {
            base.path().join("bin/aspshell")
        } else {
            PathBuf::from("/bin/sh")
        };
        let account = Account::create(user, &home, &shell);
        account.own_keeping_group(&home);
        let docroot = base.path().join("docroots").join(user);
        fs::create_dir(&docroot).unwrap();
        fs::write(docroot.join("hello.txt"), b"hello\n").unwrap();
        fs::create_dir(docroot.join("sub")).unwrap();
        fs::write(docroot.join("sub/data.bin"), vec![7u8; 3000]).unwrap();
        for p in [
            docroot.clone(),
            docroot.join("hello.txt"),
            docroot.join("sub"),
            docroot.join("sub/data.bin"),
        ] {
            account.own_keeping_group(&p);
        }
        fs::write(base.path().join("outside/secret"), b"outside").unwrap();
        // The outside is writable by the user: only the docroot keeps them out.
        fs::set_permissions(
            base.path().join("outside"),
            fs::Permissions::from_mode(0o777),
        )
        .unwrap();

        let lab = Lab::new();
        let ns = lab.add_netns("browse");
        let sshd = Sshd::start_with_conf(
            &ns,
            SocketAddr::from(([127, 0, 0, 1], PORT)),
            &base.path().join("etc"),
            "",
        );
        let s = Setup {
            account,
            sshd,
            ns,
            base,
            _lab: lab,
            remote_ascmd: if aspshell {
                "ascmd".to_string()
            } else {
                String::new()
            },
        };
        s.conf(&s.docroot_conf(""));
        s
    }

    fn docroot(&self) -> PathBuf {
        self.base.path().join("docroots").join(&self.account.name)
    }

    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    /// An IBM-layout configuration with the docroot `docroots/$(name)` and `flags` (tags
    /// inside `<path>`).
    fn docroot_conf(&self, flags: &str) -> String {
        format!(
            "<CONF version=\"2\"><default><file_system><access><paths><path>\
             <absolute>{}/docroots/$(name)</absolute>{flags}</path></paths></access>\
             </file_system></default></CONF>\n",
            self.base.path().display()
        )
    }

    /// Writes `/etc/fasp-proxy/aspera.conf` as the sessions see it.
    fn conf(&self, text: &str) {
        fs::write(self.base.path().join("etc/aspera.conf"), text).unwrap();
    }

    fn remote(&self, path: &str) -> String {
        format!("{}@127.0.0.1:{path}", self.account.name)
    }

    /// `ascp` with a browse verb, in the namespace, as root on the client side.
    fn ascp(&self, verb: &[&str]) -> Output {
        let login = self.sshd.ascp_options();
        let remote_ascmd = if self.remote_ascmd.is_empty() {
            self.base.path().join("bin/ascmd").display().to_string()
        } else {
            self.remote_ascmd.clone()
        };
        let mut args = vec!["timeout", "60", ASCP];
        args.extend(login.iter().map(String::as_str));
        args.extend(["--remote-ascmd", &remote_ascmd]);
        args.extend_from_slice(verb);
        self.ns.try_exec(&args)
    }

    fn ok(&self, verb: &[&str]) -> String {
        let out = self.ascp(verb);
        assert!(
            out.status.success(),
            "ascp {verb:?} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        // Paths are shown as the user sees them, never the docroot's place.
        assert!(
            !stdout.contains(&*self.docroot().to_string_lossy()),
            "the docroot's place leaked: {stdout}"
        );
        stdout
    }

    fn refused(&self, verb: &[&str]) -> String {
        let out = self.ascp(verb);
        assert_eq!(
            out.status.code(),
            Some(1),
            "ascp {verb:?} should have been refused:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }
}

/// Every file below `dir` with its content, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
                out.push((p, Vec::new()));
            } else if m.is_file() {
                out.push((p.clone(), fs::read(&p).unwrap()));
            } else {
                out.push((p, b"<link>".to_vec()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn browse_inside_the_docroot() {
    let s = Setup::new("fpbrowse1");
    let root = s.docroot();

    // ls: `ls -l` lines, names relative to the listed directory, owner the user.
    let out = s.ok(&["--ls", &s.remote("/")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("-rw-r--r-- fpbrowse1 ") && lines[0].ends_with(" hello.txt"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("drwxr-xr-x fpbrowse1 ") && lines[1].ends_with(" sub"),
        "{out}"
    );
    let json = s.ok(&["--ls", "--json", &s.remote("/sub")]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["path"], "/sub");
    assert_eq!(v["entries"][0]["name"], "data.bin");
    assert_eq!(v["entries"][0]["size"], 3000);
    assert_eq!(v["entries"][0]["type"], "file");
    assert_eq!(v["entries"][0]["zuid"], "fpbrowse1");
    // An empty path is the docroot itself.
    assert_eq!(s.ok(&["--ls", &s.remote("")]), out);

    // stat: a file and a directory, each its own line.
    let out = s.ok(&["--stat", &s.remote("/hello.txt"), "/sub"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("-rw-r--r-- fpbrowse1 root 6 20"),
        "{out}"
    );
    assert!(lines[0].ends_with(" /hello.txt"), "{out}");
    assert!(lines[1].starts_with("drwxr-xr-x fpbrowse1 root "), "{out}");
    assert!(lines[1].ends_with(" /sub"), "{out}");
    assert_eq!(s.ok(&["--stat", &s.remote("/")]), "/: directory\n");

    // mkdir, mv, then the tree as expected on disk.
    s.ok(&["--mkdir", &s.remote("/new"), "/new/deeper"]);
    assert!(root.join("new/deeper").is_dir());
    assert_eq!(fs::metadata(root.join("new")).unwrap().uid(), s.account.uid);
    s.ok(&["--mv", &s.remote("/hello.txt"), "/new/hello.txt"]);
    assert!(!root.join("hello.txt").exists());
    assert_eq!(fs::read(root.join("new/hello.txt")).unwrap(), b"hello\n");

    // du: bytes of the files and counts.
    let out = s.ok(&["--du", "--json", &s.remote("/")]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            v["size"].as_u64(),
            v["fcount"].as_u64(),
            v["dcount"].as_u64()
        ),
        (Some(3006), Some(2), Some(4)),
        "{out}"
    );
    let out = s.ok(&["--du", &s.remote("/sub")]);
    assert_eq!(out.trim(), "3000\t/sub\t(1 files, 1 directories)");

    // md5sum, as md5sum prints it.
    let out = s.ok(&["--md5sum", &s.remote("/new/hello.txt")]);
    assert_eq!(
        out,
        format!("{:x}  /new/hello.txt\n", md5::compute(b"hello\n"))
    );

    // df: the docroot's file system, shown as /.
    let out = s.ok(&["--df", "--json", &s.remote("")]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["mounts"][0]["dir"], "/");
    assert!(v["mounts"][0]["total"].as_u64().unwrap() > 0, "{out}");
    let out = s.ok(&["--df", &s.remote("")]);
    assert!(
        out.starts_with("Filesystem") && out.lines().nth(1).unwrap().ends_with(" /"),
        "{out}"
    );

    // rm: a directory with everything in it.
    s.ok(&["--rm", &s.remote("/new")]);
    assert!(!root.join("new").exists());
    let err = s.refused(&["--rm", &s.remote("/new")]);
    assert_eq!(err.trim(), "ascp: --rm /new: No such file or directory");
    assert_eq!(fs::read_dir(&root).unwrap().count(), 1, "only sub is left");
}

#[test]
fn escapes_are_refused_and_nothing_changes_outside() {
    let s = Setup::new("fpbrowse2");
    let root = s.docroot();
    // Links planted in the docroot pointing out (an administrator's mistake, or a race).
    symlink(s.outside(), root.join("out")).unwrap();
    symlink("../../../outside/secret", root.join("sub/up")).unwrap();
    let before = snapshot(&s.outside());
    let before_root = snapshot(&root);
    let containment = |err: String, path: &str| {
        assert!(
            err.contains(&format!("Path violates docroot containment: {path}")),
            "{path}: {err}"
        );
    };
    containment(s.refused(&["--ls", &s.remote("..")]), "..");
    containment(
        s.refused(&["--ls", &s.remote("/../outside")]),
        "/../outside",
    );
    containment(s.refused(&["--mkdir", &s.remote("../new")]), "../new");
    containment(
        s.refused(&["--mv", &s.remote("/sub/data.bin"), "../data.bin"]),
        "../data.bin",
    );
    containment(
        s.refused(&["--rm", &s.remote("../outside/secret")]),
        "../outside/secret",
    );
    containment(s.refused(&["--ls", &s.remote("/out")]), "/out");
    containment(s.refused(&["--mkdir", &s.remote("/out/new")]), "/out");
    containment(
        s.refused(&["--mv", &s.remote("/out/secret"), "/stolen"]),
        "/out",
    );
    containment(
        s.refused(&["--mv", &s.remote("/sub/data.bin"), "/out/data.bin"]),
        "/out",
    );
    containment(
        s.refused(&["--rm", &s.remote("/out/secret")]),
        "/out/secret",
    );
    containment(s.refused(&["--md5sum", &s.remote("/sub/up")]), "/sub/up");
    containment(s.refused(&["--du", &s.remote("/out")]), "/out");
    // The real outside path, absolute: a path inside the docroot, which has no such thing.
    let real = s.outside().join("new").display().to_string();
    let err = s.refused(&["--mkdir", &s.remote(&real)]);
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!err.contains("docroots"), "{err}");
    let err = s.refused(&["--ls", &s.remote(&s.outside().display().to_string())]);
    assert!(err.contains("No such file or directory"), "{err}");
    assert_eq!(
        snapshot(&s.outside()),
        before,
        "something changed outside the docroot"
    );
    assert_eq!(snapshot(&root), before_root);
    // Removing the links removes the links only.
    s.ok(&["--rm", &s.remote("/out")]);
    s.ok(&["--rm", &s.remote("/sub")]);
    assert_eq!(snapshot(&s.outside()), before);
    assert_eq!(fs::read_dir(&root).unwrap().count(), 1, "hello.txt is left");
}

#[test]
fn the_configuration_decides_what_is_allowed() {
    let s = Setup::new("fpbrowse3");
    let root = s.docroot();
    s.conf(&s.docroot_conf("<dir_allowed>false</dir_allowed>"));
    let err = s.refused(&["--ls", &s.remote("/")]);
    assert_eq!(
        err.trim(),
        "ascp: --ls /: browsing is not allowed for user fpbrowse3 (<dir_allowed> is false)"
    );
    s.refused(&["--du", &s.remote("/")]);
    s.refused(&["--df", &s.remote("")]);
    // Browsing off does not stop changes.
    s.ok(&["--mkdir", &s.remote("/made")]);
    assert!(root.join("made").is_dir());

    s.conf(&s.docroot_conf("<write_allowed>false</write_allowed>"));
    let err = s.refused(&["--mkdir", &s.remote("/other")]);
    assert!(
        err.contains("changes are not allowed for user fpbrowse3 (<write_allowed> is false)"),
        "{err}"
    );
    s.refused(&["--rm", &s.remote("/made")]);
    s.refused(&["--mv", &s.remote("/made"), "/moved"]);
    assert!(!root.join("other").exists() && root.join("made").is_dir());
    assert!(s.ok(&["--ls", &s.remote("/")]).contains(" made"));

    s.conf(&s.docroot_conf("<read_allowed>false</read_allowed>"));
    let err = s.refused(&["--md5sum", &s.remote("/hello.txt")]);
    assert!(err.contains("<read_allowed> is false"), "{err}");

    // An invalid file: every command refused with the reason (fail closed).
    s.conf("<CONF version=\"2\"><default><file_system><access>");
    let err = s.refused(&["--ls", &s.remote("/")]);
    assert!(err.contains("aspera.conf"), "{err}");
    // A docroot that does not exist: refused without naming its place.
    s.conf(
        &s.docroot_conf("")
            .replace("docroots/$(name)", "nowhere/$(name)"),
    );
    let err = s.refused(&["--ls", &s.remote("/")]);
    assert!(
        err.contains("cannot be opened (No such file or directory)") && !err.contains("nowhere"),
        "{err}"
    );
    // No file at all: IBM's default, the whole file system.
    fs::remove_file(s.base.path().join("etc/aspera.conf")).unwrap();
    let out = s.ok(&["--ls", &s.remote(&root.display().to_string())]);
    assert!(out.contains(" made") && out.contains(" hello.txt"), "{out}");
}

#[test]
fn plain_ssh_with_a_command_script_decodes() {
    let s = Setup::new("fpbrowse4");
    let login = s.sshd.ssh_options();
    let user_at = format!("{}@127.0.0.1", s.account.name);
    let remote = format!("{} -V2", s.base.path().join("bin/ascmd").display());
    let long = "x".repeat(1024 * 1024);
    let script = format!(
        "as_session_init --protocol=2 --host=files.example.com\n\
         as_ls \"/sub\"\n\
         as_mkdir '/with space'\n\
         as_mv \"/with space\" \"/with \\\"quotes\\\"\"\n\
         as_ls ..\n\
         as_ls {long}\n\
         as_du /\n\
         as_md5sum /hello.txt\n\
         as_rm \"/with \\\"quotes\\\"\"\n\
         as_exit\n\
         as_info\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", s.ns.name(), "ssh"])
        .args(&login)
        .args([&user_at, &remote])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(script.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "ssh failed: {}", text(&out.stderr));
    let replies = decode_all(&out.stdout).unwrap();
    assert_eq!(replies.len(), 9, "{replies:?}");
    let Reply::Info(info) = &replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(info.protocol, Some(2));
    match &replies[1] {
        Reply::Dir(e) => {
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].name, b"data.bin");
            assert_eq!(e[0].size, Some(3000));
            assert_eq!(e[0].zmode.as_deref(), Some("-rw-r--r--"));
            assert_eq!(e[0].zuid.as_deref(), Some("fpbrowse4"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(replies[2], Reply::Success);
    assert_eq!(replies[3], Reply::Success);
    assert_eq!(
        replies[4],
        Reply::error(13, "Path violates docroot containment: ..")
    );
    assert_eq!(
        replies[5],
        Reply::error(22, "command line longer than 65536 bytes, ignored")
    );
    match &replies[6] {
        Reply::Size(sz) => assert_eq!((sz.size, sz.fcount, sz.dcount), (3006, 2, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        replies[7],
        Reply::Md5sum(format!("{:x}", md5::compute(b"hello\n")))
    );
    assert_eq!(replies[8], Reply::Success);
    assert!(!s.docroot().join("with \"quotes\"").exists());
}

#[test]
fn through_aspshell_as_the_login_shell() {
    let s = Setup::with_shell("fpbrowse5", true);
    // aspshell runs `ascmd` from its own directory, as our `ascp --ls` sends it.
    let out = s.ok(&["--ls", &s.remote("/sub")]);
    assert!(out.trim_end().ends_with(" data.bin"), "{out}");
    s.ok(&["--mkdir", &s.remote("/via-aspshell")]);
    assert!(s.docroot().join("via-aspshell").is_dir());
    containment_refused(&s.refused(&["--ls", &s.remote("/..")]), "/..");
    // The docroot still rules.
    s.conf(&s.docroot_conf("<dir_allowed>false</dir_allowed>"));
    assert!(s
        .refused(&["--ls", &s.remote("/")])
        .contains("<dir_allowed> is false"));
}

fn containment_refused(err: &str, path: &str) {
    assert!(
        err.contains(&format!("Path violates docroot containment: {path}")),
        "{path}: {err}"
    );
}
