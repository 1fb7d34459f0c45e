//! The file-system side: what the sender announces (walking the sources), where the receiver
//! puts each path (and what it refuses), partial-file names, and file attributes.
//!
//! Symbolic links: a source named on the command line is followed (the user asked for it);
//! links found *inside* a directory tree are never followed — they are skipped and listed in the
//! report with a note, so a transfer cannot wander out of the tree.
//!
//! Every file-system access goes through the session's [`Root`]: unconfined on the client
//! (plain paths), the docroot on a server that has one (paths relative to it, resolved by the
//! kernel beneath it; errors show paths as the user sees them, [`Root::show`]).

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::TransferError;
use crate::fsroot::{is_containment_violation, Root};
use crate::protocol::{FileKind, MAX_STRING};

/// Suffix of the file the receiver writes into until the data verifies.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// One thing the sender will announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is here (relative to the docroot when confined).
    pub local: PathBuf,
    /// The path announced (relative, `/`-separated).
    pub path: String,
    /// File or directory.
    pub kind: FileKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// The result of walking the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkItem {
    /// To be sent.
    Send(Entry),
    /// Left out, with the reason (symbolic link in a tree, special file, unusable name).
    Skip {
        /// Where it is here.
        local: PathBuf,
        /// The path it would have had.
        path: String,
        /// Why it is left out.
        reason: String,
    },
}

fn entry(local: PathBuf, path: String, meta: &Metadata) -> Entry {
    let kind = if meta.is_dir() {
        FileKind::Directory
    } else {
        FileKind::File
    };
    Entry {
        local,
        path,
        kind,
        size: if meta.is_dir() { 0 } else { meta.len() },
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
    }
}

/// The name a source is announced under: its last component (for the docroot itself, the
/// docroot directory's own name).
fn source_name(root: &Root, src: &Path) -> Result<String, TransferError> {
    let unusable = |reason: &str| TransferError::UnsupportedSource {
        path: PathBuf::from(root.show(src)),
        reason: reason.into(),
    };
    let name = match src.file_name() {
        Some(n) => n.to_os_string(),
        None => {
            let real = if root.is_confined() {
                if src.components().any(|c| c != Component::CurDir) {
                    return Err(unusable("has no name to send it under"));
                }
                root.path()
            } else {
                src
            };
            fs::canonicalize(real)
                .map_err(|e| TransferError::io(format!("resolving source {}", root.show(src)), e))?
                .file_name()
                .map(|n| n.to_os_string())
                .ok_or_else(|| unusable("has no name to send it under"))?
        }
    };
    name.into_string()
        .map_err(|_| unusable("its name is not valid UTF-8"))
}

/// Lists what to send from `root`, in order, directories before their contents. Top-level
/// sources must exist, and directories need `recursive`; errors name the source.
pub fn walk(
    root: &Root,
    sources: &[PathBuf],
    recursive: bool,
) -> Result<Vec<WalkItem>, TransferError> {
    // Check every top-level source first, so nothing moves if one is wrong.
    let mut tops = Vec::new();
    for src in sources {
        let shown = || PathBuf::from(root.show(src));
        let meta = match root.metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TransferError::SourceNotFound(shown()))
            }
            Err(e) => return Err(TransferError::io(format!("source {}", root.show(src)), e)),
        };
        if meta.is_dir() && !recursive {
            return Err(TransferError::SourceIsDirectory(shown()));
        }
        if !meta.is_dir() && !meta.is_file() {
            return Err(TransferError::UnsupportedSource {
                path: shown(),
                reason: "is neither a regular file nor a directory".into(),
            });
        }
        tops.push((src.clone(), source_name(root, src)?, meta));
    }
    let mut out = Vec::new();
    for (src, name, meta) in tops {
        let is_dir = meta.is_dir();
        out.push(WalkItem::Send(entry(src.clone(), name.clone(), &meta)));
        if is_dir {
            walk_dir(root, &src, &name, &mut out)?;
        }
    }
    Ok(out)
}

fn walk_dir(
    root: &Root,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<WalkItem>,
) -> Result<(), TransferError> {
    let children = root
        .read_dir(dir)
        .map_err(|e| TransferError::io(format!("reading directory {}", root.show(dir)), e))?;
    for child in children {
        let os_name = child.file_name();
        let local = dir.join(os_name);
        let Some(name) = os_name.to_str() else {
            out.push(WalkItem::Skip {
                path: format!("{prefix}/{}", os_name.to_string_lossy()),
                local,
                reason: "name is not valid UTF-8".into(),
            });
            continue;
        };
        let path = format!("{prefix}/{name}");
        let meta = root
            .symlink_metadata(&local)
            .map_err(|e| TransferError::io(format!("reading {}", root.show(&local)), e))?;
        let skip = |reason: &str| WalkItem::Skip {
            local: local.clone(),
            path: path.clone(),
            reason: reason.into(),
        };
        if path.len() > MAX_STRING {
            out.push(skip("path longer than the protocol allows"));
        } else if meta.file_type().is_symlink() {
            out.push(skip("symbolic link inside a directory tree, not followed"));
        } else if meta.is_dir() {
            out.push(WalkItem::Send(entry(local.clone(), path.clone(), &meta)));
            walk_dir(root, &local, &path, out)?;
        } else if meta.is_file() {
            out.push(WalkItem::Send(entry(local.clone(), path.clone(), &meta)));
        } else {
            out.push(skip("not a regular file (device, socket or FIFO)"));
        }
    }
    Ok(())
}

/// Where received paths go.
#[derive(Debug)]
pub struct Destination {
    fs: Root,
    root: PathBuf,
    is_dir: bool,
    first_top: Option<String>,
}

impl Destination {
    /// If `root` (a path in `fs`) is an existing directory, paths go under it; otherwise `root`
    /// is the new name of the (single) top-level source.
    pub fn new(fs: &Root, root: &Path) -> Destination {
        Destination {
            fs: fs.clone(),
            root: root.to_path_buf(),
            is_dir: fs.metadata(root).is_ok_and(|m| m.is_dir()),
            first_top: None,
        }
    }

    /// The local path for an announced path, or why it is refused.
    pub fn resolve(&mut self, wire: &str) -> Result<PathBuf, String> {
        let mut parts = Vec::new();
        for part in wire.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                return Err(format!("refusing unsafe path {wire:?}"));
            }
            parts.push(part);
        }
        let Some((top, rest)) = parts.split_first() else {
            return Err(format!("refusing unsafe path {wire:?}"));
        };
        let mut out = self.root.clone();
        if self.is_dir {
            out.push(top);
        } else {
            match &self.first_top {
                None => self.first_top = Some((*top).to_string()),
                Some(t) if t == top => {}
                Some(_) => {
                    return Err(format!(
                        "destination {} is not a directory, so it can take only one source",
                        self.fs.show(&self.root)
                    ))
                }
            }
        }
        for p in rest {
            out.push(p);
        }
        // Belt and braces: the result must stay under the root, lexically…
        if !out.starts_with(&self.root)
            || out
                .components()
                .skip(self.root.components().count())
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(format!(
                "refusing path {wire:?} that leaves the destination"
            ));
        }
        // …and no directory on the way may be a symbolic link (it could point anywhere).
        let mut cursor = self.root.clone();
        for p in parts.iter().skip(if self.is_dir { 0 } else { 1 }) {
            if cursor != self.root {
                if let Ok(m) = self.fs.symlink_metadata(&cursor) {
                    if m.file_type().is_symlink() {
                        // Under a docroot, a link leading out of it gets the docroot's refusal.
                        if let Err(e) = self.fs.metadata(&cursor) {
                            if is_containment_violation(&e) {
                                return Err(e.to_string());
                            }
                        }
                        return Err(format!(
                            "refusing to write through symbolic link {}",
                            self.fs.show(&cursor)
                        ));
                    }
                }
            }
            cursor.push(p);
        }
        Ok(out)
    }
}

/// The partial file for a destination file.
pub fn partial_path(final_path: &Path) -> PathBuf {
    let mut name = final_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(PARTIAL_SUFFIX);
    final_path.with_file_name(name)
}

/// Seconds since the epoch as a `SystemTime`.
pub fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Sets permission bits (setuid, setgid and sticky bits are not carried over) and modification
/// time of `path` in `root`.
pub fn set_attributes(root: &Root, path: &Path, mode: u32, mtime: i64) -> std::io::Result<()> {
    root.set_modified(path, system_time(mtime))?;
    root.set_permissions(path, mode & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free() -> Root {
        Root::unconfined()
    }

    #[test]
    fn resolve_into_directory_and_rename() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Destination::new(&free(), dir.path());
        assert_eq!(d.resolve("a/b.txt").unwrap(), dir.path().join("a/b.txt"));
        for bad in ["", "/etc/passwd", "a/../../x", "./a", "a//b", "..", "a/\0"] {
            assert!(d.resolve(bad).is_err(), "{bad:?}");
        }
        let newname = dir.path().join("new");
        let mut d = Destination::new(&free(), &newname);
        assert_eq!(d.resolve("tree").unwrap(), newname);
        assert_eq!(d.resolve("tree/x/y").unwrap(), newname.join("x/y"));
        assert!(d.resolve("other").is_err());
    }

    #[test]
    fn resolve_refuses_symlinked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let mut d = Destination::new(&free(), dir.path());
        assert!(d.resolve("link/file").is_err());
        assert!(d.resolve("link").is_ok()); // replacing the link itself is fine
    }

    #[test]
    fn walk_orders_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/f"), b"x").unwrap();
        fs::write(root.join("a"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("l")).unwrap();
        assert!(matches!(
            walk(&free(), std::slice::from_ref(&root), false),
            Err(TransferError::SourceIsDirectory(_))
        ));
        assert!(matches!(
            walk(&free(), &[dir.path().join("missing")], true),
            Err(TransferError::SourceNotFound(_))
        ));
        let items = walk(&free(), std::slice::from_ref(&root), true).unwrap();
        let paths: Vec<String> = items
            .iter()
            .map(|i| match i {
                WalkItem::Send(e) => e.path.clone(),
                WalkItem::Skip { path, .. } => format!("skip:{path}"),
            })
            .collect();
        assert_eq!(paths, vec!["t", "t/a", "skip:t/l", "t/sub", "t/sub/f"]);
    }

    #[test]
    fn partial_names() {
        assert_eq!(
            partial_path(Path::new("/x/y.bin")),
            PathBuf::from("/x/y.bin.partial")
        );
    }

    fn names(items: &[WalkItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                WalkItem::Send(e) => e.path.clone(),
                WalkItem::Skip { path, .. } => format!("skip:{path}"),
            })
            .collect()
    }

    #[test]
    fn confined_walk_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let docroot = dir.path().join("docroot");
        fs::create_dir_all(docroot.join("t/sub")).unwrap();
        fs::write(docroot.join("t/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", docroot.join("t/etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", docroot.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc", docroot.join("etc")).unwrap();
        let root = Root::open(&docroot).unwrap();
        let t = root.resolve("/t").unwrap();
        let items = walk(&root, std::slice::from_ref(&t), true).unwrap();
        assert_eq!(names(&items), ["t", "skip:t/etc", "t/sub", "t/sub/f"]);
        match &items[3] {
            WalkItem::Send(e) => assert_eq!(e.local, Path::new("t/sub/f")),
            other => panic!("{other:?}"),
        }
        // The docroot itself goes under its own name.
        let all = walk(&root, &[root.resolve("/").unwrap()], true).unwrap();
        assert_eq!(names(&all)[0], "docroot");
        // Top-level sources are followed, but not out of the docroot; `/etc/hostname` is the
        // docroot's etc/hostname, reached through the link `etc` and refused.
        for out in ["/passwd", "/etc", "/etc/hostname"] {
            let p = root.resolve(out).unwrap();
            match walk(&root, &[p], true) {
                Err(TransferError::Io { source, .. }) => {
                    assert!(is_containment_violation(&source), "{out}: {source}")
                }
                other => panic!("{out}: {other:?}"),
            }
        }
        assert!(walk(&root, &[root.resolve("/nothing").unwrap()], true)
            .is_err_and(|e| e.to_string() == "source /nothing does not exist"));
    }

    #[test]
    fn confined_destination_paths() {
        let dir = tempfile::tempdir().unwrap();
        let docroot = dir.path().join("docroot");
        let outside = dir.path().join("outside");
        fs::create_dir_all(docroot.join("in")).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, docroot.join("in/out")).unwrap();
        let root = Root::open(&docroot).unwrap();
        let mut d = Destination::new(&root, &root.resolve("/in").unwrap());
        assert_eq!(d.resolve("a/b").unwrap(), Path::new("in/a/b"));
        assert_eq!(
            d.resolve("out/x").unwrap_err(),
            "Path violates docroot containment: /in/out"
        );
        let mut top = Destination::new(&root, &root.resolve("/").unwrap());
        assert_eq!(top.resolve("x").unwrap(), Path::new("./x"));
        assert_eq!(root.show(&top.resolve("x/y").unwrap()), "/x/y");
        // A name inside a link out: refused by the kernel when used.
        let e = root.create_dir_all(Path::new("in/out/new")).unwrap_err();
        assert!(is_containment_violation(&e), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
