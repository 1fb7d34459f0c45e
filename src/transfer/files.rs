//! The file-system side: what the sender announces (walking the sources), where the receiver
//! puts each path (and what it refuses), partial-file names, and file attributes.
//!
//! Symbolic links: a source named on the command line is followed (the user asked for it);
//! links found *inside* a directory tree are never followed — they are skipped and listed in the
//! report with a note, so a transfer cannot wander out of the tree.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::TransferError;
use crate::protocol::{FileKind, MAX_STRING};

/// Suffix of the file the receiver writes into until the data verifies.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// One thing the sender will announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is here.
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

/// The name a source is announced under: its last component.
fn source_name(src: &Path) -> Result<String, TransferError> {
    let unusable = |reason: &str| TransferError::UnsupportedSource {
        path: src.to_path_buf(),
        reason: reason.into(),
    };
    let name = match src.file_name() {
        Some(n) => n.to_os_string(),
        None => fs::canonicalize(src)
            .map_err(|e| TransferError::io(format!("resolving source {}", src.display()), e))?
            .file_name()
            .map(|n| n.to_os_string())
            .ok_or_else(|| unusable("has no name to send it under"))?,
    };
    name.into_string()
        .map_err(|_| unusable("its name is not valid UTF-8"))
}

/// Lists what to send, in order, directories before their contents. Top-level sources must
/// exist, and directories need `recursive`; errors name the source.
pub fn walk(sources: &[PathBuf], recursive: bool) -> Result<Vec<WalkItem>, TransferError> {
    // Check every top-level source first, so nothing moves if one is wrong.
    let mut tops = Vec::new();
    for src in sources {
        let meta = match fs::metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TransferError::SourceNotFound(src.clone()))
            }
            Err(e) => return Err(TransferError::io(format!("source {}", src.display()), e)),
        };
        if meta.is_dir() && !recursive {
            return Err(TransferError::SourceIsDirectory(src.clone()));
        }
        if !meta.is_dir() && !meta.is_file() {
            return Err(TransferError::UnsupportedSource {
                path: src.clone(),
                reason: "is neither a regular file nor a directory".into(),
            });
        }
        tops.push((src.clone(), source_name(src)?, meta));
    }
    let mut out = Vec::new();
    for (src, name, meta) in tops {
        let is_dir = meta.is_dir();
        out.push(WalkItem::Send(entry(src.clone(), name.clone(), &meta)));
        if is_dir {
            walk_dir(&src, &name, &mut out)?;
        }
    }
    Ok(out)
}

fn walk_dir(dir: &Path, prefix: &str, out: &mut Vec<WalkItem>) -> Result<(), TransferError> {
    let read = fs::read_dir(dir)
        .map_err(|e| TransferError::io(format!("reading directory {}", dir.display()), e))?;
    let mut children = Vec::new();
    for item in read {
        let item =
            item.map_err(|e| TransferError::io(format!("reading directory {}", dir.display()), e))?;
        children.push(item.path());
    }
    children.sort();
    for local in children {
        let Some(os_name) = local.file_name() else {
            continue;
        };
        let Some(name) = os_name.to_str() else {
            out.push(WalkItem::Skip {
                path: format!("{prefix}/{}", os_name.to_string_lossy()),
                local,
                reason: "name is not valid UTF-8".into(),
            });
            continue;
        };
        let path = format!("{prefix}/{name}");
        let meta = fs::symlink_metadata(&local)
            .map_err(|e| TransferError::io(format!("reading {}", local.display()), e))?;
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
            walk_dir(&local, &path, out)?;
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
    root: PathBuf,
    is_dir: bool,
    first_top: Option<String>,
}

impl Destination {
    /// If `root` is an existing directory, paths go under it; otherwise `root` is the new name
    /// of the (single) top-level source.
    pub fn new(root: &Path) -> Destination {
        Destination {
            root: root.to_path_buf(),
            is_dir: root.is_dir(),
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
                        self.root.display()
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
                if let Ok(m) = fs::symlink_metadata(&cursor) {
                    if m.file_type().is_symlink() {
                        return Err(format!(
                            "refusing to write through symbolic link {}",
                            cursor.display()
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
/// time.
pub fn set_attributes(path: &Path, mode: u32, mtime: i64) -> std::io::Result<()> {
    let f = File::open(path)?;
    f.set_modified(system_time(mtime))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_into_directory_and_rename() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Destination::new(dir.path());
        assert_eq!(d.resolve("a/b.txt").unwrap(), dir.path().join("a/b.txt"));
        for bad in ["", "/etc/passwd", "a/../../x", "./a", "a//b", "..", "a/\0"] {
            assert!(d.resolve(bad).is_err(), "{bad:?}");
        }
        let newname = dir.path().join("new");
        let mut d = Destination::new(&newname);
        assert_eq!(d.resolve("tree").unwrap(), newname);
        assert_eq!(d.resolve("tree/x/y").unwrap(), newname.join("x/y"));
        assert!(d.resolve("other").is_err());
    }

    #[test]
    fn resolve_refuses_symlinked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let mut d = Destination::new(dir.path());
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
            walk(std::slice::from_ref(&root), false),
            Err(TransferError::SourceIsDirectory(_))
        ));
        assert!(matches!(
            walk(&[dir.path().join("missing")], true),
            Err(TransferError::SourceNotFound(_))
        ));
        let items = walk(std::slice::from_ref(&root), true).unwrap();
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
}
