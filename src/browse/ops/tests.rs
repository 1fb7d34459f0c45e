//! Each operation on a temp dir through [`Root`], confined and not.

use super::*;
use crate::browse::wire::{decode_all, Stat};
use crate::fsroot::testing::{self, listing, Tree};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

/// A [`Tree`] with a few files in the docroot.
fn tree() -> Tree {
    let t = testing::tree();
    fs::create_dir(t.root_dir.join("sub")).unwrap();
    fs::write(t.root_dir.join("f"), b"hello").unwrap();
    fs::write(t.root_dir.join("sub/g"), b"12").unwrap();
    t
}

fn confined(t: &Tree, perms: Permissions) -> Ops {
    Ops::new(Root::open(&t.root_dir).unwrap(), perms, "alice")
}

fn reply(a: Result<Answer, Failure>) -> Reply {
    match a {
        Ok(Answer::Reply(r)) => r,
        Ok(Answer::Encoded(bytes)) => {
            let mut all = decode_all(&bytes).unwrap();
            assert_eq!(all.len(), 1);
            all.remove(0)
        }
        Err(f) => f.reply(),
    }
}

fn entries(r: Reply) -> Vec<Stat> {
    match r {
        Reply::Dir(mut e) => {
            e.sort_by(|a, b| a.name.cmp(&b.name));
            e
        }
        other => panic!("not a listing: {other:?}"),
    }
}

fn names(r: Reply) -> Vec<String> {
    entries(r)
        .into_iter()
        .map(|s| String::from_utf8(s.name).unwrap())
        .collect()
}

fn assert_error(r: Reply, errno: i32, text: &str) {
    assert_eq!(r, Reply::error(errno, text));
}

fn containment(path: &str) -> String {
    format!("Path violates docroot containment: {path}")
}

#[test]
fn ls_lists_a_directory_and_stats_a_file() {
    let t = tree();
    fs::set_permissions(t.root_dir.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("sub/g", t.root_dir.join("link")).unwrap();
    symlink(t.root_dir.join("sub"), t.root_dir.join("abs")).unwrap();
    let mut ops = confined(&t, Permissions::all());
    let e = entries(reply(ops.ls(&[], "/")));
    let shown: Vec<(&[u8], &str)> = e
        .iter()
        .map(|s| (&s.name[..], s.zmode.as_deref().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            (&b"abs"[..], "lrwxrwxrwx"),
            (b"f", "-rw-r-----"),
            (b"link", "lrwxrwxrwx"),
            (b"sub", "drwxr-xr-x")
        ]
    );
    let f = &e[1];
    assert_eq!(f.size, Some(5));
    assert_eq!(f.mode, Some(libc::S_IFREG | 0o640));
    assert_eq!(f.zuid.as_deref(), Some("root"));
    assert!(f.mtime.unwrap() > 1_600_000_000);
    assert_eq!(
        f.zmtime.as_deref(),
        Some(&*crate::browse::stat::time_text(f.mtime.unwrap()))
    );
    assert_eq!(e[2].symlink.as_deref(), Some(&b"sub/g"[..]));
    // An absolute target inside the docroot is shown from the docroot's /.
    assert_eq!(e[0].symlink.as_deref(), Some(&b"/sub"[..]));

    // A file: one `file` record named by its last component.
    match reply(ops.ls(&[], "/sub/g")) {
        Reply::File(s) => {
            assert_eq!(s.name, b"g");
            assert_eq!(s.size, Some(2));
        }
        other => panic!("{other:?}"),
    }
    // A link to a file: the link itself, with its target.
    match reply(ops.ls(&[], "link")) {
        Reply::File(s) => {
            assert_eq!(s.name, b"link");
            assert_eq!(s.symlink.as_deref(), Some(&b"sub/g"[..]));
        }
        other => panic!("{other:?}"),
    }
    // A link to a directory inside: listed; an absolute link is refused even when it points
    // inside (the kernel's RESOLVE_BENEATH refuses every absolute link).
    symlink("sub", t.root_dir.join("rel")).unwrap();
    assert_eq!(names(reply(ops.ls(&[], "/rel"))), ["g"]);
    assert_error(
        reply(ops.ls(&[], "/abs")),
        libc::EACCES,
        &containment("/abs"),
    );
    // Relative, `.`, `..` inside: all the docroot's.
    assert_eq!(names(reply(ops.ls(&[], "sub/.."))).len(), 5);
    assert_error(
        reply(ops.ls(&[], "/nope")),
        libc::ENOENT,
        "No such file or directory",
    );
}

#[test]
fn ls_filters_and_its_cap() {
    let t = tree();
    for n in ["a.txt", "b.txt", "c.bin", "d"] {
        fs::write(t.root_dir.join("sub").join(n), b"").unwrap();
    }
    let mut ops = confined(&t, Permissions::all());
    let f = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(reply(ops.ls(&f(&["*.txt"]), "/sub"))),
        ["a.txt", "b.txt"]
    );
    assert_eq!(
        names(reply(ops.ls(&f(&["*.txt", "*.bin"]), "/sub"))),
        ["a.txt", "b.txt", "c.bin"]
    );
    // Five entries, a cap of four: refused with the cap in the text, not cut short.
    ops.set_list_cap(4);
    assert_error(
        reply(ops.ls(&[], "/sub")),
        libc::EFBIG,
        "/sub holds more than 4 entries; ascmd lists at most 4 (as_ls -f PATTERN lists fewer)",
    );
    // Filtered, the same directory fits.
    assert_eq!(names(reply(ops.ls(&f(&["?"]), "/sub"))), ["d", "g"]);
    ops.set_list_cap(usize::MAX);
    assert_eq!(ops.list_cap, MAX_LIST_ENTRIES);
}

#[test]
fn the_real_cap_refuses_a_directory_one_entry_too_big() {
    let t = tree();
    let big = t.root_dir.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..=MAX_LIST_ENTRIES {
        fs::File::create(big.join(i.to_string())).unwrap();
    }
    let mut ops = confined(&t, Permissions::all());
    let r = reply(ops.ls(&[], "/big"));
    assert!(
        matches!(&r, Reply::Error(e) if e.errstr.contains(&format!("more than {MAX_LIST_ENTRIES} entries"))),
        "{r:?}"
    );
    // One fewer fits.
    fs::remove_file(big.join("0")).unwrap();
    assert_eq!(entries(reply(ops.ls(&[], "/big"))).len(), MAX_LIST_ENTRIES);
    // du and rm stream: no cap.
    match reply(ops.du("/big")) {
        Reply::Size(s) => assert_eq!(s.fcount as usize, MAX_LIST_ENTRIES),
        other => panic!("{other:?}"),
    }
    assert_eq!(reply(ops.rm("/big")), Reply::Success);
    assert!(!big.exists());
}

#[test]
fn escapes_are_refused_and_leave_nothing_outside() {
    let t = tree();
    symlink(&t.outside, t.root_dir.join("out")).unwrap();
    symlink(t.outside.join("secret"), t.root_dir.join("secret")).unwrap();
    symlink("../../outside", t.root_dir.join("sub/up")).unwrap();
    let before = listing(&t.outside);
    let mut ops = confined(&t, Permissions::all());
    let refused = |r: Reply, p: &str| {
        assert_eq!(r, Reply::error(libc::EACCES, containment(p)), "{p}");
    };
    refused(reply(ops.ls(&[], "..")), "..");
    refused(reply(ops.ls(&[], "/../outside")), "/../outside");
    refused(reply(ops.ls(&[], "/out")), "/out");
    refused(reply(ops.ls(&[], "/sub/up/")), "/sub/up");
    refused(reply(ops.du("/out")), "/out");
    refused(reply(ops.md5sum("/secret")), "/secret");
    refused(reply(ops.mkdir("/out/new")), "/out");
    refused(reply(ops.mkdir("../new")), "../new");
    refused(reply(ops.mv("/f", "/out/f")), "/out");
    refused(reply(ops.mv("/out/secret", "/stolen")), "/out");
    refused(reply(ops.mv("/f", "../f")), "../f");
    refused(reply(ops.rm("/out/secret")), "/out/secret");
    refused(reply(ops.rm("../outside")), "../outside");
    refused(reply(ops.cp("/out/secret", "/copy")), "/out/secret");
    refused(reply(ops.cp("/f", "/out/f")), "/out/f");
    refused(reply(ops.df(Some("/out"))), "/out");
    // An absolute path outside is a path inside the docroot.
    assert_error(
        reply(ops.ls(&[], "/etc/passwd")),
        libc::ENOENT,
        "No such file or directory",
    );
    // The links themselves may be listed and removed: the link goes, not what it points at.
    assert_eq!(names(reply(ops.ls(&[], "/"))).len(), 4);
    assert_eq!(reply(ops.rm("/out")), Reply::Success);
    assert_eq!(reply(ops.rm("/secret")), Reply::Success);
    // A tree holding a link out is removed without following it.
    assert_eq!(reply(ops.rm("/sub")), Reply::Success);
    assert_eq!(listing(&t.outside), before);
    assert_eq!(fs::read(t.outside.join("secret")).unwrap(), b"outside");
    // The docroot itself is never removed.
    for p in ["/", ".", "", "sub/.."] {
        let r = reply(ops.rm(p));
        assert!(matches!(r, Reply::Error(_)), "{p}: {r:?}");
    }
    assert!(t.root_dir.join("f").exists());
}

#[test]
fn changes_inside_work() {
    let t = tree();
    let mut ops = confined(&t, Permissions::all());
    assert_eq!(reply(ops.mkdir("/new")), Reply::Success);
    assert!(t.root_dir.join("new").is_dir());
    assert_error(reply(ops.mkdir("/new")), libc::EEXIST, "File exists");
    assert_error(
        reply(ops.mkdir("/a/b")),
        libc::ENOENT,
        "No such file or directory",
    );
    assert_eq!(reply(ops.mv("/f", "/new/f2")), Reply::Success);
    assert_eq!(fs::read(t.root_dir.join("new/f2")).unwrap(), b"hello");
    assert_eq!(reply(ops.cp("/new/f2", "/sub")), Reply::Success);
    assert_eq!(fs::read(t.root_dir.join("sub/f2")).unwrap(), b"hello");
    assert_eq!(reply(ops.cp("/sub", "/copy")), Reply::Success);
    assert_eq!(fs::read(t.root_dir.join("copy/g")).unwrap(), b"12");
    assert_eq!(fs::read(t.root_dir.join("copy/f2")).unwrap(), b"hello");
    assert!(matches!(
        reply(ops.cp("/sub", "/sub/inner")),
        Reply::Error(_)
    ));
    assert!(matches!(reply(ops.cp("/sub/g", "/sub/g")), Reply::Error(_)));
    assert_eq!(fs::read(t.root_dir.join("sub/g")).unwrap(), b"12");
    assert_eq!(
        reply(ops.md5sum("/sub/g")),
        Reply::Md5sum(format!("{:x}", md5::compute(b"12")))
    );
    assert!(matches!(reply(ops.md5sum("/sub")), Reply::Error(_)));
    match reply(ops.du("/")) {
        // new/f2, sub/f2, copy/f2 (5 each), sub/g, copy/g (2 each); /, new, sub, copy.
        Reply::Size(s) => assert_eq!(
            s,
            Size {
                size: 19,
                fcount: 5,
                dcount: 4,
                failed_fcount: 0,
                failed_dcount: 0
            }
        ),
        other => panic!("{other:?}"),
    }
    match reply(ops.du("/sub/g")) {
        Reply::Size(s) => assert_eq!((s.size, s.fcount, s.dcount), (2, 1, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(reply(ops.rm("/copy")), Reply::Success);
    assert_eq!(reply(ops.rm("/new/f2")), Reply::Success);
    assert!(!t.root_dir.join("copy").exists());
    assert_error(
        reply(ops.rm("/copy")),
        libc::ENOENT,
        "No such file or directory",
    );
}

#[test]
fn permissions_are_checked_before_anything_is_touched() {
    let t = tree();
    let browse_only = Permissions {
        read: false,
        write: false,
        browse: true,
    };
    let mut ops = confined(&t, browse_only);
    let write = "changes are not allowed for user alice (<write_allowed> is false)";
    let read = "reading files is not allowed for user alice (<read_allowed> is false)";
    assert_error(reply(ops.mkdir("/x")), libc::EACCES, write);
    assert_error(reply(ops.mv("/f", "/g")), libc::EACCES, write);
    assert_error(reply(ops.rm("/f")), libc::EACCES, write);
    assert_error(reply(ops.md5sum("/f")), libc::EACCES, read);
    assert_error(reply(ops.cp("/f", "/g")), libc::EACCES, read);
    assert_eq!(names(reply(ops.ls(&[], "/"))), ["f", "sub"]);
    assert!(t.root_dir.join("f").exists() && !t.root_dir.join("x").exists());

    let no_browse = Permissions {
        read: true,
        write: true,
        browse: false,
    };
    let mut ops = confined(&t, no_browse);
    let browse = "browsing is not allowed for user alice (<dir_allowed> is false)";
    assert_error(reply(ops.ls(&[], "/")), libc::EACCES, browse);
    assert_error(reply(ops.du("/")), libc::EACCES, browse);
    assert_error(reply(ops.df(None)), libc::EACCES, browse);
    assert_eq!(reply(ops.mkdir("/x")), Reply::Success);
    let no_write_dest = Permissions {
        read: true,
        write: false,
        browse: true,
    };
    let mut ops = confined(&t, no_write_dest);
    assert_error(reply(ops.cp("/f", "/g")), libc::EACCES, write);
    assert!(matches!(reply(ops.md5sum("/f")), Reply::Md5sum(_)));
}

#[test]
fn df_shows_the_docroot_as_slash() {
    let t = tree();
    let mut ops = confined(&t, Permissions::all());
    let Reply::Df(m) = reply(ops.df(None)) else {
        panic!("not df")
    };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].dir.as_deref(), Some(&b"/"[..]));
    assert!(m[0].total.unwrap() > 0 && m[0].fcount.is_some());
    assert!(!m[0].fs.contains(&*t.root_dir.to_string_lossy()));
    let Reply::Df(m) = reply(ops.df(Some("/sub"))) else {
        panic!("not df")
    };
    assert_eq!(m[0].dir.as_deref(), Some(&b"/sub"[..]));
    assert!(m[0].is_a.is_some(), "{m:?}");
}

#[test]
fn unconfined_takes_paths_as_given() {
    let t = tree();
    let mut ops = Ops::new(Root::unconfined(), Permissions::all(), "root");
    let dir = t.root_dir.to_str().unwrap();
    assert_eq!(names(reply(ops.ls(&[], dir))), ["f", "sub"]);
    // `..` is the file system's.
    let up = format!("{dir}/sub/../../outside");
    assert_eq!(names(reply(ops.ls(&[], &up))), ["secret"]);
    let new = format!("{dir}/sub/new");
    assert_eq!(reply(ops.mkdir(&new)), Reply::Success);
    assert_eq!(reply(ops.rm(&format!("{dir}/sub"))), Reply::Success);
    assert!(!t.root_dir.join("sub").exists());
    let Reply::Df(all) = reply(ops.df(None)) else {
        panic!("not df")
    };
    assert!(
        all.iter().any(|m| m.dir.as_deref() == Some(&b"/"[..])),
        "{all:?}"
    );
    assert!(matches!(reply(ops.rm("/")), Reply::Error(_)));
}

#[test]
fn mountinfo_lines() {
    let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                30 22 0:25 / /mnt/with\\040space rw - tmpfs tmp\\040fs rw\n\
                junk\n";
    let m = parse_mountinfo(text);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].dev, (8, 1));
    assert_eq!(m[0].fstype, "ext4");
    assert_eq!(m[0].source, "/dev/sda1");
    assert_eq!(m[1].mount_point, b"/mnt/with space");
    assert_eq!(m[1].source, "tmp fs");
    assert_eq!(unescape("a\\134b\\"), b"a\\b\\");
}

#[test]
fn failures_carry_errno_and_text() {
    let f = Failure::io(&io::Error::from_raw_os_error(libc::ENOENT));
    assert_eq!(
        (f.errno, f.text.as_str()),
        (libc::ENOENT, "No such file or directory")
    );
    let f = Failure::io(&fsroot::containment_error("/x"));
    assert_eq!(
        (f.errno, f.text.as_str()),
        (libc::EACCES, &*containment("/x"))
    );
    let f = Failure::io(&io::Error::new(io::ErrorKind::AlreadyExists, "there"));
    assert_eq!((f.errno, f.text.as_str()), (libc::EEXIST, "there"));
    let f = Failure::from(Violation::Empty);
    assert_eq!(f.errno, libc::EINVAL);
}
