//! Each `ascmd` operation, on a [`Root`] with the user's permissions.
//!
//! Every client path goes through [`Root::resolve`] and the `Root` operations (or a
//! [`DirHandle`] opened through it), so a confined user's `..`, absolute paths and symbolic
//! links never reach outside the docroot: the kernel refuses, and the reply is an `error` with
//! `Path violates docroot containment: PATH`. Paths and names in replies are as the user sees
//! them. Errors from the system carry its errno and its text (as IBM's `ascmd`: `No such file
//! or directory`); refusals of ours carry `EACCES` and a sentence.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use super::stat::{failed, Attrs, Names};
use super::walk::{self, DirHandle, MAX_DEPTH};
use super::wire::{DirEncoder, Mount, Reply, Size};
use crate::fsroot::{self, OpenOptions, Root, Violation};

/// Most entries one `as_ls` answers; a larger directory is refused with a message saying so
/// (`-f PATTERN` lists fewer). About 200 bytes each on the wire.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// Most mounts one `as_df` answers.
pub const MAX_MOUNTS: usize = 1024;

/// What the user may do (from the docroot's `<read_allowed>`, `<write_allowed>`,
/// `<dir_allowed>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// md5sum, and the source of cp.
    pub read: bool,
    /// mkdir, mv, rm, and the destination of cp.
    pub write: bool,
    /// ls, du, df (IBM's "browse allowed").
    pub browse: bool,
}

impl Permissions {
    /// Everything allowed.
    pub fn all() -> Permissions {
        Permissions {
            read: true,
            write: true,
            browse: true,
        }
    }
}

/// Why an operation failed: an errno and the text for the `error` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The errno.
    pub errno: i32,
    /// The text.
    pub text: String,
}

impl Failure {
    /// A refusal of ours (`EACCES`).
    pub fn refused(text: impl Into<String>) -> Failure {
        Failure {
            errno: libc::EACCES,
            text: text.into(),
        }
    }

    /// A bad request (`EINVAL`).
    pub fn invalid(text: impl Into<String>) -> Failure {
        Failure {
            errno: libc::EINVAL,
            text: text.into(),
        }
    }

    /// From an `io::Error`: a containment refusal keeps its message; a system error is its
    /// errno and the system's text for it; anything else its message.
    pub fn io(e: &io::Error) -> Failure {
        if fsroot::is_containment_violation(e) {
            return Failure::refused(e.to_string());
        }
        if let Some(errno) = e.raw_os_error() {
            return Failure {
                errno,
                text: nix::errno::Errno::from_raw(errno).desc().to_string(),
            };
        }
        let errno = match e.kind() {
            io::ErrorKind::PermissionDenied => libc::EACCES,
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::AlreadyExists => libc::EEXIST,
            io::ErrorKind::InvalidInput => libc::EINVAL,
            io::ErrorKind::WouldBlock => libc::EAGAIN,
            _ => libc::EIO,
        };
        Failure {
            errno,
            text: e.to_string(),
        }
    }

    /// The `error` reply.
    pub fn reply(&self) -> Reply {
        Reply::error(self.errno, self.text.clone())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::io(&e)
    }
}

impl From<Violation> for Failure {
    fn from(v: Violation) -> Failure {
        match v {
            Violation::Containment(_) => Failure::refused(v.to_string()),
            _ => Failure::invalid(v.to_string()),
        }
    }
}

/// A reply, or a listing already encoded.
// One per command, moved once: the size of the `Reply` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Answer {
    /// A reply to encode.
    Reply(Reply),
    /// A `dir` record, encoded as it was read.
    Encoded(Vec<u8>),
}

/// The operations of one session.
#[derive(Debug)]
pub struct Ops {
    root: Root,
    perms: Permissions,
    user: String,
    names: Names,
    list_cap: usize,
}

/// The last component of a client's path, for a `file` reply's name (`/` for the root).
fn base_name(client_path: &str) -> Vec<u8> {
    let trimmed = client_path.trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some(last) if !last.is_empty() => last.as_bytes().to_vec(),
        _ => client_path.as_bytes().to_vec(),
    }
}

/// Whether `path` (resolved) names something that may be removed or replaced: it ends in a
/// plain name (not the docroot, `.`, `..` or `/`).
fn ends_in_name(path: &Path) -> bool {
    matches!(path.components().next_back(), Some(Component::Normal(_)))
}

impl Ops {
    /// Operations on `root` for `user` with `perms`.
    pub fn new(root: Root, perms: Permissions, user: impl Into<String>) -> Ops {
        Ops {
            root,
            perms,
            user: user.into(),
            names: Names::default(),
            list_cap: MAX_LIST_ENTRIES,
        }
    }

    /// Lowers the most entries one listing answers (for tests; never above
    /// [`MAX_LIST_ENTRIES`]).
    pub fn set_list_cap(&mut self, cap: usize) {
        self.list_cap = cap.min(MAX_LIST_ENTRIES);
    }

    fn need_browse(&self) -> Result<(), Failure> {
        if self.perms.browse {
            return Ok(());
        }
        Err(Failure::refused(format!(
            "browsing is not allowed for user {} (<dir_allowed> is false)",
            self.user
        )))
    }

    fn need_write(&self) -> Result<(), Failure> {
        if self.perms.write {
            return Ok(());
        }
        Err(Failure::refused(format!(
            "changes are not allowed for user {} (<write_allowed> is false)",
            self.user
        )))
    }

    fn need_read(&self) -> Result<(), Failure> {
        if self.perms.read {
            return Ok(());
        }
        Err(Failure::refused(format!(
            "reading files is not allowed for user {} (<read_allowed> is false)",
            self.user
        )))
    }

    /// A link's target as the user sees it: an absolute target inside the docroot is shown
    /// from the docroot's `/`.
    fn shown_target(&self, target: Vec<u8>) -> Vec<u8> {
        if !self.root.is_confined() {
            return target;
        }
        let t = Path::new(OsStr::from_bytes(&target));
        match t.strip_prefix(self.root.path()) {
            Ok(rest) if t.is_absolute() => {
                let mut out = b"/".to_vec();
                out.extend_from_slice(rest.as_os_str().as_bytes());
                out
            }
            _ => target,
        }
    }

    /// `as_ls`: a directory's entries (a link to a directory inside the root is listed), or
    /// one file's attributes.
    pub fn ls(&mut self, filters: &[String], client_path: &str) -> Result<Answer, Failure> {
        self.need_browse()?;
        let path = self.root.resolve(client_path)?;
        let own = self.root.symlink_metadata(&path)?;
        let own = Attrs::of_metadata(&own);
        let target = if own.is_symlink() {
            // A dangling link, or one to a file: the link itself.
            match self.root.metadata(&path) {
                Ok(m) if m.is_dir() => None,
                Ok(_) => Some(own),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(own),
                Err(e) => return Err(e.into()),
            }
        } else if own.is_dir() {
            None
        } else {
            Some(own)
        };
        if let Some(attrs) = target {
            let link = if attrs.is_symlink() {
                Some(self.read_link(&path)?)
            } else {
                None
            };
            let stat = self.names.stat(base_name(client_path), &attrs, link);
            return Ok(Answer::Reply(Reply::File(stat)));
        }
        let dir = DirHandle::open(&self.root, &path, true)?;
        let mut out = DirEncoder::new();
        for entry in dir.entries()? {
            let entry = entry?;
            let name = entry.bytes();
            if !filters.is_empty()
                && !filters
                    .iter()
                    .any(|f| super::command::matches(f.as_bytes(), name))
            {
                continue;
            }
            if out.len() == self.list_cap {
                let cap = self.list_cap;
                return Err(Failure {
                    errno: libc::EFBIG,
                    text: format!(
                        "{client_path} holds more than {cap} entries; ascmd lists at most {cap} (as_ls -f PATTERN lists fewer)"
                    ),
                });
            }
            let stat = match dir.stat(&entry.name) {
                Ok(a) => {
                    let link = if a.is_symlink() {
                        dir.read_link(&entry.name)
                            .ok()
                            .map(|t| self.shown_target(t))
                    } else {
                        None
                    };
                    self.names.stat(name.to_vec(), &a, link)
                }
                Err(e) => failed(name.to_vec(), e.raw_os_error().unwrap_or(libc::EIO)),
            };
            out.push(&stat)
                .map_err(|e| Failure::invalid(e.to_string()))?;
        }
        let bytes = out.finish().map_err(|e| Failure::invalid(e.to_string()))?;
        Ok(Answer::Encoded(bytes))
    }

    /// A link's target through the root (read in the directory that holds it).
    fn read_link(&self, path: &Path) -> Result<Vec<u8>, Failure> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Some(name) = path.file_name() else {
            return Ok(Vec::new());
        };
        let dir = DirHandle::open(&self.root, parent, true)?;
        let cname = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| Failure::invalid("a name holds a NUL byte"))?;
        Ok(self.shown_target(dir.read_link(&cname)?))
    }

    /// `as_du`: bytes of the files beneath a path, and how many files and directories.
    pub fn du(&mut self, client_path: &str) -> Result<Answer, Failure> {
        self.need_browse()?;
        let path = self.root.resolve(client_path)?;
        let top = Attrs::of_metadata(&self.root.metadata(&path)?);
        let mut size = Size::default();
        if !top.is_dir() {
            size.size = top.size;
            size.fcount = 1;
            return Ok(Answer::Reply(Reply::Size(size)));
        }
        let dir = DirHandle::open(&self.root, &path, true)?;
        size.dcount = 1;
        let mut stack = vec![dir.entries().map(|e| (dir, e))?];
        loop {
            let depth = stack.len();
            let Some((dir, entries)) = stack.last_mut() else {
                break;
            };
            let entry = match entries.next() {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(_)) => {
                    size.failed_dcount = size.failed_dcount.saturating_add(1);
                    stack.pop();
                    continue;
                }
                Some(Ok(e)) => e,
            };
            let attrs = match dir.stat(&entry.name) {
                Ok(a) => a,
                Err(_) => {
                    size.failed_fcount = size.failed_fcount.saturating_add(1);
                    continue;
                }
            };
            if !attrs.is_dir() {
                size.size = size.size.saturating_add(attrs.size);
                size.fcount = size.fcount.saturating_add(1);
                continue;
            }
            let opened = if depth > MAX_DEPTH {
                None
            } else {
                dir.subdir(&entry.name)
                    .and_then(|d| d.entries().map(|e| (d, e)))
                    .ok()
            };
            match opened {
                Some(level) => {
                    size.dcount = size.dcount.saturating_add(1);
                    stack.push(level);
                }
                None => size.failed_dcount = size.failed_dcount.saturating_add(1),
            }
        }
        Ok(Answer::Reply(Reply::Size(size)))
    }

    /// `as_mkdir`: one directory (its parent must exist).
    pub fn mkdir(&mut self, client_path: &str) -> Result<Answer, Failure> {
        self.need_write()?;
        let path = self.root.resolve(client_path)?;
        self.root.create_dir(&path)?;
        Ok(Answer::Reply(Reply::Success))
    }

    /// `as_mv`: `rename(2)` of one path to another.
    pub fn mv(&mut self, from: &str, to: &str) -> Result<Answer, Failure> {
        self.need_write()?;
        let from = self.root.resolve(from)?;
        let to = self.root.resolve(to)?;
        self.root.rename(&from, &to)?;
        Ok(Answer::Reply(Reply::Success))
    }

    /// `as_rm`: a file or link itself, or a directory and everything in it; no link is ever
    /// followed, and the docroot itself is never removed.
    pub fn rm(&mut self, client_path: &str) -> Result<Answer, Failure> {
        self.need_write()?;
        let path = self.root.resolve(client_path)?;
        if !ends_in_name(&path) {
            return Err(Failure::refused(format!(
                "refusing to remove {client_path}: it does not end in a name"
            )));
        }
        let own = self.root.symlink_metadata(&path)?;
        if !own.is_dir() {
            self.root.remove_file(&path)?;
            return Ok(Answer::Reply(Reply::Success));
        }
        // Opened without following: if the directory was replaced by a link meanwhile, this
        // fails instead of emptying what the link points at.
        let dir = DirHandle::open(&self.root, &path, false)?;
        walk::remove_contents(dir, client_path)?;
        self.root.remove_dir(&path)?;
        Ok(Answer::Reply(Reply::Success))
    }

    /// Opens a regular file for reading through the root.
    fn open_regular(&self, path: &Path, client_path: &str) -> Result<std::fs::File, Failure> {
        let f = self.root.open_file(
            path,
            OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK),
        )?;
        if !f.metadata()?.is_file() {
            return Err(Failure::invalid(format!(
                "{client_path} is not a regular file"
            )));
        }
        Ok(f)
    }

    /// `as_md5sum`: a file's MD5 digest, in hex.
    pub fn md5sum(&mut self, client_path: &str) -> Result<Answer, Failure> {
        self.need_read()?;
        let path = self.root.resolve(client_path)?;
        let mut f = self.open_regular(&path, client_path)?;
        let mut ctx = md5::Context::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => ctx.consume(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Answer::Reply(Reply::Md5sum(format!(
            "{:x}",
            ctx.finalize()
        ))))
    }

    /// `as_cp`: copies a file, or a directory tree (directories and regular files; symbolic
    /// links and special files are skipped). Into an existing directory, the copy keeps the
    /// source's name.
    pub fn cp(&mut self, from: &str, to: &str) -> Result<Answer, Failure> {
        self.need_read()?;
        self.need_write()?;
        let src = self.root.resolve(from)?;
        let mut dest = self.root.resolve(to)?;
        let src_meta = self.root.metadata(&src)?;
        if self.root.metadata(&dest).is_ok_and(|m| m.is_dir()) {
            let Some(name) = src.file_name() else {
                return Err(Failure::invalid(format!("cannot copy {from} into {to}")));
            };
            dest.push(name);
        }
        if !src_meta.is_dir() {
            let mut input = self.open_regular(&src, from)?;
            if let Ok(d) = self.root.metadata(&dest) {
                if d.dev() == src_meta.dev() && d.ino() == src_meta.ino() {
                    return Err(Failure::invalid(format!(
                        "{from} and {to} are the same file"
                    )));
                }
            }
            self.copy_into(&mut input, &dest, src_meta.mode())?;
            return Ok(Answer::Reply(Reply::Success));
        }
        if dest.starts_with(&src) || src == Path::new(".") {
            return Err(Failure::invalid(format!(
                "cannot copy directory {from} into itself ({to})"
            )));
        }
        self.make_dir(&dest)?;
        let top = DirHandle::open(&self.root, &src, true)?;
        let mut stack = vec![(top.entries()?, top, dest)];
        loop {
            let depth = stack.len();
            let Some((entries, dir, dest)) = stack.last_mut() else {
                break;
            };
            let Some(entry) = entries.next() else {
                stack.pop();
                continue;
            };
            let entry = entry?;
            let attrs = dir.stat(&entry.name)?;
            let target = dest.join(walk::os(&entry.name));
            if attrs.is_dir() {
                if depth > MAX_DEPTH {
                    return Err(Failure::invalid(format!(
                        "{from} is more than {MAX_DEPTH} directories deep"
                    )));
                }
                self.make_dir(&target)?;
                let sub = dir.subdir(&entry.name)?;
                stack.push((sub.entries()?, sub, target));
            } else if attrs.is_file() {
                let mut input = dir.open_file(&entry.name)?;
                self.copy_into(&mut input, &target, attrs.mode)?;
            }
        }
        Ok(Answer::Reply(Reply::Success))
    }

    fn make_dir(&self, path: &Path) -> Result<(), Failure> {
        match self.root.create_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.root.metadata(path)?.is_dir() {
                    Ok(())
                } else {
                    Err(e.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn copy_into(&self, input: &mut std::fs::File, dest: &Path, mode: u32) -> Result<(), Failure> {
        let mut out = self.root.open_file(
            dest,
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode & 0o777)
                .custom_flags(libc::O_NOFOLLOW),
        )?;
        io::copy(input, &mut out)?;
        Ok(())
    }

    /// `as_df`: the file system holding a path; without one, every mount (unconfined) or the
    /// docroot's file system shown as `/` (confined).
    pub fn df(&mut self, client_path: Option<&str>) -> Result<Answer, Failure> {
        self.need_browse()?;
        let mounts = match client_path {
            Some(p) => {
                let path = self.root.resolve(p)?;
                vec![self.mount_of(&path, p.as_bytes())?]
            }
            None if self.root.is_confined() => vec![self.mount_of(Path::new("."), b"/")?],
            None => all_mounts()?,
        };
        Ok(Answer::Reply(Reply::Df(mounts)))
    }

    fn mount_of(&self, path: &Path, shown: &[u8]) -> Result<Mount, Failure> {
        let f = self.root.open_file(
            path,
            OpenOptions::new().read(true).custom_flags(libc::O_PATH),
        )?;
        let dev = f.metadata()?.dev();
        let vfs = nix::sys::statvfs::fstatvfs(&f).map_err(io::Error::from)?;
        let info = mount_table()
            .unwrap_or_default()
            .into_iter()
            .rev()
            .find(|m| m.dev == (nix::sys::stat::major(dev), nix::sys::stat::minor(dev)));
        let mut m = space_of(&vfs);
        m.dir = Some(shown.to_vec());
        if let Some(info) = info {
            m.fs = info.source;
            m.is_a = Some(info.fstype);
        }
        Ok(m)
    }
}

/// The sizes of a `statvfs`, in a [`Mount`] without names.
// The field types are u64 on 64-bit Linux, narrower elsewhere.
#[allow(clippy::useless_conversion)]
fn space_of(v: &nix::sys::statvfs::Statvfs) -> Mount {
    let unit = u64::from(v.fragment_size());
    let blocks = u64::from(v.blocks());
    Mount {
        total: Some(blocks.saturating_mul(unit)),
        used: Some(
            blocks
                .saturating_sub(u64::from(v.blocks_free()))
                .saturating_mul(unit),
        ),
        free: Some(u64::from(v.blocks_available()).saturating_mul(unit)),
        fcount: Some(u64::from(v.files())),
        ..Mount::default()
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    dev: (u64, u64),
    mount_point: Vec<u8>,
    fstype: String,
    source: String,
}

/// `\040`-style escapes of mountinfo undone.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        let Some((major, minor)) = fields[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        out.push(MountInfo {
            dev: (major, minor),
            mount_point: unescape(fields[4]),
            fstype: fields[sep + 1].to_string(),
            source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
        });
    }
    out
}

fn mount_table() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Every mount with a size (as `df` shows them), at most [`MAX_MOUNTS`].
fn all_mounts() -> Result<Vec<Mount>, Failure> {
    let mut out = Vec::new();
    for info in mount_table()? {
        if out.len() == MAX_MOUNTS {
            break;
        }
        let at = Path::new(OsStr::from_bytes(&info.mount_point));
        let mut m = match nix::sys::statvfs::statvfs(at) {
            Ok(v) if v.blocks() == 0 => continue,
            Ok(v) => space_of(&v),
            Err(e) => Mount {
                errno: u32::try_from(e as i32).ok(),
                errstr: Some(e.desc().to_string()),
                ..Mount::default()
            },
        };
        m.fs = info.source;
        m.dir = Some(info.mount_point);
        m.is_a = Some(info.fstype);
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
