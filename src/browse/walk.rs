//! Directories held open, and everything below them reached relative to that descriptor:
//! for listings, `as_du`, `as_rm` and `as_cp` of trees.
//!
//! A [`DirHandle`] is opened once through the [`Root`] (so it is inside the docroot); from
//! there every step uses a name that `getdents` returned (never `..`, never a `/`) with the
//! `*at` calls and `O_NOFOLLOW`: a symbolic link below the starting directory is looked at,
//! removed or skipped, never followed, and renaming directories while a walk runs cannot move
//! it outside the directory it started in. Entries are read as a stream, so a directory of a
//! million entries costs one `getdents` buffer, not a million names.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use super::stat::Attrs;
use crate::fsroot::{OpenOptions, Root};

/// How deep a walk goes below its starting directory.
pub const MAX_DEPTH: usize = 256;

/// An open directory.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
}

/// One entry of a directory (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: CString,
    /// Whether `getdents` says it is a directory (`None`: the file system does not say).
    pub is_dir: Option<bool>,
}

impl Entry {
    /// The name's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.name.as_bytes()
    }
}

/// The entries of a directory, read as a stream.
pub struct Entries {
    iter: nix::dir::OwningIter,
}

impl Iterator for Entries {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<io::Result<Entry>> {
        loop {
            let e = match self.iter.next()? {
                Ok(e) => e,
                Err(errno) => return Some(Err(io::Error::from(errno))),
            };
            let name = e.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let is_dir = match e.file_type() {
                Some(nix::dir::Type::Directory) => Some(true),
                Some(_) => Some(false),
                None => None,
            };
            return Some(Ok(Entry {
                name: name.to_owned(),
                is_dir,
            }));
        }
    }
}

fn os_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

impl DirHandle {
    /// Opens `path` (resolved by `root`) as a directory. With `follow`, a symbolic link as the
    /// last component is followed (if it stays inside the root); without, it is refused
    /// (`ELOOP`).
    pub fn open(root: &Root, path: &Path, follow: bool) -> io::Result<DirHandle> {
        let mut flags = libc::O_DIRECTORY;
        if !follow {
            flags |= libc::O_NOFOLLOW;
        }
        // Mode 0: fsroot passes a mode to openat2 when the flags overlap O_TMPFILE (which
        // includes O_DIRECTORY's bit), and the kernel refuses a mode without O_CREAT.
        let file = root.open_file(
            path,
            OpenOptions::new().read(true).mode(0).custom_flags(flags),
        )?;
        Ok(DirHandle {
            fd: OwnedFd::from(file),
        })
    }

    /// The entries, from the start (each call reads the directory anew).
    pub fn entries(&self) -> io::Result<Entries> {
        // openat(fd, ".") opens the same directory with a fresh offset.
        let fd = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(os_err)?;
        let dir = nix::dir::Dir::from_fd(fd).map_err(os_err)?;
        Ok(Entries {
            iter: dir.into_iter(),
        })
    }

    /// The attributes of entry `name` itself (a link is not followed).
    pub fn stat(&self, name: &CStr) -> io::Result<Attrs> {
        let st = nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(os_err)?;
        Ok(Attrs::of_stat(&st))
    }

    /// A symbolic link's target, as written in the link.
    pub fn read_link(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let target = nix::fcntl::readlinkat(Some(self.fd.as_raw_fd()), name).map_err(os_err)?;
        Ok(target.as_bytes().to_vec())
    }

    /// Opens the subdirectory `name`; a symbolic link there is refused, not followed.
    pub fn subdir(&self, name: &CStr) -> io::Result<DirHandle> {
        let fd = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(os_err)?;
        Ok(DirHandle { fd: owned(fd) })
    }

    /// Opens the file `name` for reading; a symbolic link there is refused, not followed.
    pub fn open_file(&self, name: &CStr) -> io::Result<std::fs::File> {
        let fd = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(os_err)?;
        Ok(std::fs::File::from(owned(fd)))
    }

    /// Removes entry `name` (an empty directory with `dir`, else a file or link itself).
    pub fn remove(&self, name: &CStr, dir: bool) -> io::Result<()> {
        let how = if dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(Some(self.fd.as_raw_fd()), name, how).map_err(os_err)
    }

    /// Whether entry `e` is a directory (asking the file system when `getdents` did not say).
    pub fn is_dir(&self, e: &Entry) -> io::Result<bool> {
        match e.is_dir {
            Some(d) => Ok(d),
            None => Ok(self.stat(&e.name)?.is_dir()),
        }
    }
}

impl AsFd for DirHandle {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An `OwnedFd` for a descriptor `openat` just returned.
fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was returned by a successful `openat` a moment ago and is owned by nothing
    // else; the `OwnedFd` closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A name as an `OsStr`, for messages and paths.
pub fn os(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

/// Removes everything inside `top` (not `top` itself), depth first, without following any
/// link. `shown` names `top` in messages. At most [`MAX_DEPTH`] levels.
pub fn remove_contents(top: DirHandle, shown: &str) -> io::Result<()> {
    // Each level: the directory, its entry stream, its name in the level above, and how
    // many times it was read (entries created while it is emptied are tried again).
    struct Level {
        dir: DirHandle,
        entries: Entries,
        name: Option<CString>,
        passes: u8,
    }
    let entries = top.entries()?;
    let mut stack = vec![Level {
        dir: top,
        entries,
        name: None,
        passes: 1,
    }];
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            break;
        };
        match level.entries.next() {
            Some(Ok(e)) => {
                if level.dir.is_dir(&e)? {
                    if depth > MAX_DEPTH {
                        return Err(io::Error::other(format!(
                            "{shown} is more than {MAX_DEPTH} directories deep; nothing below that was removed"
                        )));
                    }
                    let sub = level.dir.subdir(&e.name)?;
                    let entries = sub.entries()?;
                    stack.push(Level {
                        dir: sub,
                        entries,
                        name: Some(e.name),
                        passes: 1,
                    });
                } else {
                    match level.dir.remove(&e.name, false) {
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        other => other?,
                    }
                }
            }
            Some(Err(err)) => return Err(err),
            None => {
                let Some(done) = stack.pop() else { break };
                let Some(name) = done.name else { break };
                let Some(parent) = stack.last() else { break };
                match parent.dir.remove(&name, true) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    // Something was created in it meanwhile: read it again, a few times.
                    Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) && done.passes < 3 => {
                        let entries = done.dir.entries()?;
                        stack.push(Level {
                            dir: done.dir,
                            entries,
                            name: Some(name),
                            passes: done.passes + 1,
                        });
                    }
                    Err(err) => return Err(err),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn streams_entries_and_refuses_links() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/f"), b"x").unwrap();
        fs::create_dir(t.path().join("d/sub")).unwrap();
        symlink("/etc", t.path().join("d/link")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let d = DirHandle::open(&root, Path::new("d"), false).unwrap();
        let mut names: Vec<(Vec<u8>, bool)> = d
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let dir = d.is_dir(&e).unwrap();
                (e.bytes().to_vec(), dir)
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                (b"f".to_vec(), false),
                (b"link".to_vec(), false),
                (b"sub".to_vec(), true)
            ]
        );
        // Twice from the start.
        assert_eq!(d.entries().unwrap().count(), 3);
        assert!(d.stat(c"link").unwrap().is_symlink());
        assert_eq!(d.read_link(c"link").unwrap(), b"/etc");
        // ENOTDIR or ELOOP: refused, not followed to /etc.
        let e = d.subdir(c"link").unwrap_err().raw_os_error();
        assert!(matches!(e, Some(libc::ENOTDIR | libc::ELOOP)), "{e:?}");
        assert!(d.open_file(c"link").is_err());
        // The top itself opened without following a final link.
        symlink("d", t.path().join("to_d")).unwrap();
        assert!(DirHandle::open(&root, Path::new("to_d"), false).is_err());
        assert!(DirHandle::open(&root, Path::new("to_d"), true).is_ok());
    }

    #[test]
    fn removes_a_tree_but_not_what_links_point_at() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let top = t.path().join("top");
        fs::create_dir_all(top.join("a/b/c")).unwrap();
        for i in 0..50 {
            fs::write(top.join(format!("a/b/f{i}")), b"x").unwrap();
        }
        symlink(&outside, top.join("a/out")).unwrap();
        symlink(outside.join("keep"), top.join("a/b/c/keep")).unwrap();
        let root = Root::open(t.path()).unwrap();
        remove_contents(
            DirHandle::open(&root, Path::new("top"), false).unwrap(),
            "/top",
        )
        .unwrap();
        assert_eq!(fs::read_dir(&top).unwrap().count(), 0);
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
    }

    #[test]
    fn depth_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().join("top");
        for _ in 0..=MAX_DEPTH + 1 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        let root = Root::open(t.path()).unwrap();
        let e = remove_contents(
            DirHandle::open(&root, Path::new("top"), false).unwrap(),
            "/top",
        )
        .unwrap_err();
        assert!(e.to_string().contains("deep"), "{e}");
    }
}
