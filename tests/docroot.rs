//! Docroots enforced by `ascp --server`, end to end in the namespace lab: a real OpenSSH sshd in
//! the server namespace, a real non-root account (its shell bash), our `ascp` in the client
//! namespace. The configuration the server reads is `/etc/fasp-proxy/aspera.conf`; sshd and its
//! sessions get a private mount namespace in which the test's directory is bind-mounted over
//! `/etc/fasp-proxy`, so the machine's own file (if any) is never read or changed.
//!
//! Every refusal is checked for its message and for nothing written anywhere outside the
//! docroot: the outside directory is owned and writable by the account, so only the docroot's
//! containment keeps a transfer out of it.

mod lab;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lab::accounts::{copy_binaries, dir_0755, Account};
use lab::{failed, ok, text, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const ASPSHELL: &str = env!("CARGO_BIN_EXE_aspshell");

/// True when every directory above `path` lets others through and `path` lets them run it.
fn reachable_by_others(path: &Path) -> bool {
    let runnable = std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o005 == 0o005);
    runnable
        && path
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// What a directory tree holds: each path (relative) with its kind and, for files, content;
/// links are recorded with their target, never followed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!(
                    "file {:?}",
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap())
                )
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), what);
        }
    }
    out
}

/// The lab, one account, its docroot and an outside directory it may write to.
struct World {
    topo: Topology,
    sshd: Sshd,
    account: Account,
    /// `home/` (the account's home), `srv/NAME/` (its docroot), `outside/`, `conf/` (becomes
    /// /etc/fasp-proxy for sshd), `bin/` (ascp, when target/ is not reachable). Mode 0755.
    base: tempfile::TempDir,
    /// The client's files (root's).
    local: tempfile::TempDir,
    /// The server-side ascp, runnable by the account; `None` when the account's shell is
    /// aspshell, which takes only `ascp --server` and runs the ascp beside it.
    server_ascp: Option<String>,
}

impl World {
    fn new(name: &str) -> World {
        World::with_shell(name, false)
    }

    /// Like [`World::new`]; with `aspshell` the account's login shell is the aspshell under
    /// test (copied with ascp into `bin/`), as on a real transfer server.
    fn with_shell(name: &str, aspshell: bool) -> World {
        let base = dir_0755();
        let b = base.path();
        for d in ["home", "srv", "outside", "conf", "bin"] {
            std::fs::create_dir(b.join(d)).unwrap();
            std::fs::set_permissions(b.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir(b.join("srv").join(name)).unwrap();
        let shell = if aspshell {
            copy_binaries(&b.join("bin"), &[ASCP, ASPSHELL]);
            b.join("bin/aspshell")
        } else {
            PathBuf::from("/bin/bash")
        };
        let account = Account::create(name, &b.join("home"), &shell).reset_home_on_drop();
        for d in ["home", "outside"] {
            account.own(&b.join(d));
        }
        account.own(&b.join("srv").join(name));
        std::fs::write(b.join("outside/secret"), "outside secret").unwrap();
        std::fs::write(b.join("home/notes"), "home file").unwrap();
        for f in ["outside/secret", "home/notes"] {
            account.own(&b.join(f));
        }
        let server_ascp = if aspshell {
            None
        } else if reachable_by_others(Path::new(ASCP)) {
            Some(ASCP.to_string())
        } else {
            copy_binaries(&b.join("bin"), &[ASCP]);
            Some(b.join("bin/ascp").display().to_string())
        };
        // (Without an aspera.conf in `conf/` there is no docroot, IBM's default.)
        let topo = Topology::new(1);
        let sshd = Sshd::start_with_conf(
            topo.server(),
            SocketAddr::new(lab::server_v4(0).into(), 22),
            &b.join("conf"),
            "",
        );
        let w = World {
            topo,
            sshd,
            account,
            base,
            local: tempfile::tempdir().unwrap(),
            server_ascp,
        };
        w.configure(&w.default_docroot(""));
        w
    }

    fn docroot(&self) -> PathBuf {
        self.base.path().join("srv").join(&self.account.name)
    }

    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    fn home(&self) -> PathBuf {
        self.base.path().join("home")
    }

    /// `<default>` with the docroot `…/srv/$(name)` and `extra` tags in its `<path>`.
    fn default_docroot(&self, extra: &str) -> String {
        format!(
            "<CONF version=\"2\"><default><file_system><access><paths><path>\
             <absolute>{}/srv/$(name)</absolute>{extra}</path></paths></access></file_system>\
             </default></CONF>\n",
            self.base.path().display()
        )
    }

    /// Writes the aspera.conf the server reads (world-readable, as the account reads it).
    fn configure(&self, xml: &str) {
        let path = self.base.path().join("conf/aspera.conf");
        std::fs::write(&path, xml).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// A file or directory the account owns inside its docroot.
    fn plant_dir(&self, rel: &str) -> PathBuf {
        let p = self.docroot().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        self.account.own(&p);
        p
    }

    fn plant_file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.docroot().join(rel);
        std::fs::write(&p, content).unwrap();
        self.account.own(&p);
        p
    }

    fn plant_link(&self, rel: &str, target: &Path) {
        let p = self.docroot().join(rel);
        symlink(target, &p).unwrap();
        self.account.own(&p);
    }

    /// A client-side file.
    fn local_file(&self, rel: &str, content: &[u8]) -> String {
        let p = self.local.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }

    fn local(&self, rel: &str) -> String {
        self.local.path().join(rel).display().to_string()
    }

    /// `NAME@server:PATH`.
    fn remote(&self, path: &str) -> String {
        format!("{}@{}:{path}", self.account.name, lab::server_v4(0))
    }

    /// Runs ascp in the client namespace as the account (at most 180 s).
    fn ascp(&self, extra: &[&str]) -> Output {
        let login = self.sshd.ascp_options();
        let mut args = vec!["timeout", "180", ASCP];
        args.extend(login.iter().map(String::as_str));
        if let Some(server_ascp) = &self.server_ascp {
            args.extend(["--remote-ascp", server_ascp]);
        }
        args.extend(["-l", "200m"]);
        args.extend_from_slice(extra);
        self.topo.client.try_exec(&args)
    }

    fn upload(&self, local: &str, remote: &str) -> Output {
        self.ascp(&[local, &self.remote(remote)])
    }

    fn download(&self, remote: &str, local: &str) -> Output {
        self.ascp(&[&self.remote(remote), local])
    }

    /// The outside directory and the home as they must stay.
    fn outside_state(&self) -> (BTreeMap<PathBuf, String>, BTreeMap<PathBuf, String>) {
        (snapshot(&self.outside()), snapshot(&self.home()))
    }

    fn assert_outside_untouched(&self) {
        let (outside, home) = self.outside_state();
        let expected_outside = BTreeMap::from([(
            PathBuf::from("secret"),
            "file \"outside secret\"".to_string(),
        )]);
        assert_eq!(outside, expected_outside, "something was written outside");
        let expected_home =
            BTreeMap::from([(PathBuf::from("notes"), "file \"home file\"".to_string())]);
        assert_eq!(home, expected_home, "something was written in the home");
    }
}

/// A refusal of the whole session (before any UDP port), with the docroot's message.
fn refused_session(out: &Output, client_path: &str) {
    let err = failed(out);
    let expected =
        format!("the server refused the session: Path violates docroot containment: {client_path}");
    assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
}

#[test]
fn transfers_inside_the_docroot_work() {
    let w = World::new("faspdoc1");
    let a = w.local_file("a.bin", &vec![0x5a; 300_000]);
    w.plant_dir("sub");
    // `/` is the docroot; relative paths are relative to it too.
    ok(&w.upload(&a, "/"));
    ok(&w.upload(&a, "sub"));
    ok(&w.upload(&a, "/sub/renamed.bin"));
    assert_eq!(
        std::fs::read(w.docroot().join("a.bin")).unwrap().len(),
        300_000
    );
    assert_eq!(
        std::fs::read(w.docroot().join("sub/a.bin")).unwrap().len(),
        300_000
    );
    assert!(w.docroot().join("sub/renamed.bin").is_file());
    // A tree, directories made beneath the docroot.
    w.local_file("tree/x/y/z.txt", b"deep");
    w.local_file("tree/top.txt", b"top");
    ok(&w.ascp(&["-r", &w.local("tree"), &w.remote("/sub/")]));
    assert_eq!(
        std::fs::read(w.docroot().join("sub/tree/x/y/z.txt")).unwrap(),
        b"deep"
    );
    // Downloads, absolute and relative, a file and a tree.
    ok(&w.download("/a.bin", &w.local("back.bin")));
    assert_eq!(std::fs::read(w.local("back.bin")).unwrap().len(), 300_000);
    ok(&w.download("sub/renamed.bin", &w.local("back2.bin")));
    ok(&w.ascp(&["-r", &w.remote("/sub/tree"), &w.local("tree_back")]));
    assert_eq!(
        std::fs::read(w.local("tree_back/x/y/z.txt")).unwrap(),
        b"deep"
    );
    // A link inside the docroot to a file inside it is followed.
    w.plant_link("alias", Path::new("sub/renamed.bin"));
    ok(&w.download("/alias", &w.local("alias.bin")));
    // An absolute path of the server's is a path inside the docroot: the outside directory's
    // own path names directories under the docroot, made for the file.
    let outside_abs = w.outside().display().to_string();
    ok(&w.upload(&a, &format!("{outside_abs}/x.bin")));
    let mirrored = w
        .docroot()
        .join(w.outside().strip_prefix("/").unwrap())
        .join("x.bin");
    assert_eq!(std::fs::read(&mirrored).unwrap().len(), 300_000);
    // So `/etc/passwd` is the docroot's etc/passwd, which does not exist.
    let err = failed(&w.download("/etc/passwd", &w.local("passwd")));
    assert!(
        err.contains("/etc/passwd: no such file or directory on the server"),
        "{err}"
    );
    assert!(!Path::new(&w.local("passwd")).exists());
    w.assert_outside_untouched();
}

#[test]
fn escapes_are_refused_and_nothing_is_written_outside() {
    let w = World::new("faspdoc2");
    let f = w.local_file("f.bin", b"payload");
    w.plant_dir("sub");
    w.plant_file("kept", "kept");
    // Links planted in the docroot: to an outside file, to the outside directory (absolute),
    // and a relative one climbing out.
    w.plant_link("link", &w.outside().join("secret"));
    w.plant_link("dirlink", &w.outside());
    w.plant_link("sub/rel", Path::new("../../../outside"));
    let docroot_before = snapshot(&w.docroot());

    // `..` above the docroot, resolved lexically: refused before anything else.
    for dest in ["../x", "/../../etc", "sub/../../x", "~/../x"] {
        refused_session(&w.upload(&f, dest), dest);
    }
    for src in [
        "../outside/secret",
        "/../../etc/passwd",
        "sub/../../outside/secret",
    ] {
        refused_session(&w.download(src, &w.local("got")), src);
    }
    // Through the links: the kernel refuses the lookup.
    for src in ["/link", "/dirlink/secret", "dirlink", "/sub/rel/secret"] {
        refused_session(&w.download(src, &w.local("got")), src);
    }
    refused_session(
        &w.ascp(&["-r", &w.remote("/dirlink"), &w.local("got")]),
        "/dirlink",
    );
    for dest in [
        "/link",
        "/dirlink",
        "/dirlink/",
        "/dirlink/new.bin",
        "/sub/rel/new.bin",
    ] {
        refused_session(&w.upload(&f, dest), dest);
    }
    assert!(!Path::new(&w.local("got")).exists());
    // Names inside a transfer that are links out: refused per file, nothing replaced.
    let named_link = w.local_file("names/link", b"would overwrite the link");
    let err = failed(&w.upload(&named_link, "/"));
    assert!(
        err.contains("ascp: link: Path violates docroot containment: /link"),
        "{err}"
    );
    w.local_file("names/dirlink/inner.txt", b"would land outside");
    let err = failed(&w.ascp(&["-r", &w.local("names/dirlink"), &w.remote("/")]));
    assert!(
        err.contains("ascp: dirlink: Path violates docroot containment: /dirlink"),
        "{err}"
    );
    assert!(
        err.contains("ascp: dirlink/inner.txt: Path violates docroot containment: /dirlink"),
        "{err}"
    );
    assert_eq!(
        snapshot(&w.docroot()),
        docroot_before,
        "the docroot changed"
    );
    w.assert_outside_untouched();
}

#[test]
fn read_and_write_permissions_and_a_broken_configuration() {
    let w = World::new("faspdoc3");
    let f = w.local_file("f.bin", b"payload");
    w.plant_file("there.txt", "there");
    let user_block = |path: &str| {
        format!(
            "<CONF version=\"2\"><default><file_system><access><paths><path>\
             <absolute>/nonexistent/$(name)</absolute></path></paths></access></file_system>\
             </default><aaa><realms><realm><users><user><name>{}</name><file_system><access>\
             <paths><path>{path}</path></paths></access></file_system></user></users></realm>\
             </realms></aaa></CONF>\n",
            w.account.name
        )
    };
    let absolute = format!(
        "<absolute>{}/srv/$(name)</absolute>",
        w.base.path().display()
    );
    let name = w.account.name.clone();

    // Per-user, IBM's layout: no reading.
    w.configure(&user_block(&format!(
        "{absolute}<read_allowed>false</read_allowed>"
    )));
    let err = failed(&w.download("/there.txt", &w.local("got")));
    assert!(
        err.contains(&format!(
            "the server refused the session: downloads are not allowed for user {name} on this \
             server (read_allowed is false)"
        )),
        "{err}"
    );
    assert!(!Path::new(&w.local("got")).exists());
    ok(&w.upload(&f, "/up1.bin"));
    assert!(w.docroot().join("up1.bin").is_file());

    // No writing.
    w.configure(&user_block(&format!(
        "{absolute}<write_allowed>false</write_allowed>"
    )));
    let err = failed(&w.upload(&f, "/up2.bin"));
    assert!(
        err.contains(&format!(
            "the server refused the session: uploads are not allowed for user {name} on this \
             server (write_allowed is false)"
        )),
        "{err}"
    );
    assert!(!w.docroot().join("up2.bin").exists());
    ok(&w.download("/there.txt", &w.local("got")));

    // The default's docroot does not exist (the user has none of their own): refused.
    w.configure(
        "<CONF version=\"2\"><default><file_system><access><paths><path>\
         <absolute>/nonexistent/$(name)</absolute></path></paths></access></file_system>\
         </default></CONF>\n",
    );
    let err = failed(&w.upload(&f, "/up3.bin"));
    assert!(
        err.contains(&format!(
            "the docroot of user {name} is not usable: docroot /nonexistent/{name}"
        )),
        "{err}"
    );
    // A configuration that cannot be read as valid: the server fails closed.
    w.configure("<CONF version=\"2\"><default><file_system>");
    let err = failed(&w.upload(&f, "/up4.bin"));
    assert!(
        err.contains("the server refused the session: cannot tell the docroot of user"),
        "{err}"
    );
    assert!(err.contains("/etc/fasp-proxy/aspera.conf"), "{err}");
    // Unreadable for the user: fails closed too.
    w.configure(&w.default_docroot(""));
    std::fs::set_permissions(
        w.base.path().join("conf/aspera.conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let err = failed(&w.upload(&f, "/up5.bin"));
    assert!(err.contains("cannot tell the docroot of user"), "{err}");
    for n in ["up2.bin", "up3.bin", "up4.bin", "up5.bin"] {
        assert!(!w.docroot().join(n).exists(), "{n} was written");
    }
    w.assert_outside_untouched();
}

/// A thread swaps a directory of the docroot for a link to the outside directory (one atomic
/// exchange, back and forth, as fast as it can) during a recursive upload into it: files are
/// refused or land in the docroot, nothing ever lands outside.
#[test]
fn a_directory_swapped_for_a_link_during_an_upload_never_lets_a_file_out() {
    let w = World::new("faspdoc4");
    for i in 0..300 {
        w.local_file(&format!("tree/{i:03}.txt"), format!("file {i}").as_bytes());
    }
    // When the swap wins at the directory's own creation, every file is refused (correct, but
    // then the per-file race was not run): the upload is repeated, up to three times, until some
    // files have landed; nothing may ever land outside in any attempt.
    let mut landed = 0;
    for _attempt in 0..3 {
        for name in ["tree", "swap"] {
            let p = w.docroot().join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&p).unwrap(),
                Ok(_) => std::fs::remove_dir_all(&p).unwrap(),
                Err(_) => {}
            }
        }
        w.plant_dir("tree");
        w.plant_link("swap", &w.outside());
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, dir) = (stop.clone(), w.docroot());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    nix::fcntl::renameat2(
                        None,
                        &dir.join("tree"),
                        None,
                        &dir.join("swap"),
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        let out = w.ascp(&["-r", &w.local("tree"), &w.remote("/")]);
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 100, "only {swaps} swaps: no race was tested");
        assert_ne!(out.status.code(), Some(124), "ascp hung");
        // Whichever name the real directory has now, the files that arrived are in it.
        let real = ["tree", "swap"]
            .into_iter()
            .map(|n| w.docroot().join(n))
            .find(|p| {
                !std::fs::symlink_metadata(p)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            })
            .unwrap();
        // (Partial files of refused renames stay in the docroot, for a later resume.)
        let arrived = std::fs::read_dir(&real)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count();
        let refused = text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("ascp: tree"))
            .count();
        eprintln!("{swaps} swaps during the upload; {arrived} files arrived, {refused} refused");
        for line in text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("ascp: tree"))
        {
            assert!(
                line.contains("Path violates docroot containment: /tree")
                    || line.contains("refusing to write through symbolic link /tree")
                    || line
                        == "ascp: tree: creating directory /tree: exists and is not a directory",
                "unexpected failure: {line}"
            );
        }
        w.assert_outside_untouched();
        landed = arrived;
        if landed > 0 {
            break;
        }
    }
    assert!(
        landed > 0,
        "in three uploads the swap always won at the directory"
    );
    w.assert_outside_untouched();
}

#[test]
fn through_aspshell_as_the_login_shell_the_docroot_holds() {
    let w = World::with_shell("faspdoc5", true);
    let a = w.local_file("a.bin", &vec![0x3c; 200_000]);
    w.plant_dir("in");
    ok(&w.upload(&a, "/in"));
    assert_eq!(
        std::fs::read(w.docroot().join("in/a.bin")).unwrap().len(),
        200_000
    );
    ok(&w.download("/in/a.bin", &w.local("back.bin")));
    assert_eq!(std::fs::read(w.local("back.bin")).unwrap().len(), 200_000);
    // Out of the docroot: by `..`, and through a link planted in it.
    refused_session(&w.upload(&a, "/../../outside"), "/../../outside");
    w.plant_link("out", &w.outside());
    refused_session(
        &w.download("/out/secret", &w.local("secret")),
        "/out/secret",
    );
    refused_session(&w.upload(&a, "/out"), "/out");
    assert!(!Path::new(&w.local("secret")).exists());
    w.assert_outside_untouched();
}
