//! Paths resolved beneath a directory by the kernel: the docroot of `ascp --server`.
//!
//! Status: ready
//!
//! A [`Root`] is either unconfined (the client side, or a server without a docroot: plain
//! `std::fs` calls, relative paths against the current directory, exactly as before docroots)
//! or confined to a directory, held as an `O_PATH` descriptor opened once. Confined, every
//! operation resolves its path with `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`
//! on that descriptor; calls that have no `openat2` form (`mkdirat`, `renameat`, `unlinkat`,
//! `fstatat`) act on a parent directory opened that way, with the last component a plain name
//! that is never `..` and never followed if it is a symbolic link. So no symbolic link planted
//! anywhere in the tree (absolute, or relative and climbing out), no `..`, and no directory
//! renamed while a call runs can make an operation act outside the root: the kernel refuses the
//! lookup, and the refusal comes back as an `io::Error` whose message is
//! `Path violates docroot containment: <path>` ([`is_containment_violation`]).
//!
//! Paths: [`Root::resolve`] turns what a client asked for into the path the operations take.
//! With a docroot the user sees it as `/`: `/a/b` and `a/b` are both the docroot's `a/b`, `..`
//! is resolved lexically and may not climb above the docroot, and the result is relative to the
//! root (`.` for the docroot itself). Messages show paths as the user sees them
//! ([`Root::show`]: `/a/b`), never the docroot's place on the server.
//!
//! Next to each syscall below is the guarantee it gives.

use std::ffi::{CStr, CString, OsString};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use libc::c_int;
use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// The first words of every containment refusal (IBM's message).
pub const CONTAINMENT_MESSAGE: &str = "Path violates docroot containment";

/// How confined lookups resolve: `RESOLVE_BENEATH` (every step of the walk, `..` and the
/// targets of symbolic links included, must stay below the root descriptor; absolute paths and
/// absolute links fail with `EXDEV`; a rename racing a `..` step fails with `EAGAIN`, never
/// escapes) and `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd`-style links, which jump to an open
/// file without any path walk the kernel could check).
const RESOLVE: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// How often a lookup that a concurrent rename disturbed (`EAGAIN`) is tried again.
const RETRIES: usize = 128;

/// Why a client path is refused by [`Root::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The path climbs above the docroot; the client's path as given.
    Containment(String),
    /// The path is empty.
    Empty,
    /// The path holds a NUL byte.
    Nul(String),
}

impl Violation {
    /// True for a docroot escape (not for an empty or malformed path).
    pub fn is_containment(&self) -> bool {
        matches!(self, Violation::Containment(_))
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Containment(path) => write!(f, "{CONTAINMENT_MESSAGE}: {path}"),
            Violation::Empty => f.write_str("empty path"),
            Violation::Nul(path) => write!(f, "path {path:?} contains a NUL byte"),
        }
    }
}

impl std::error::Error for Violation {}

/// The `io::Error` of a refused escape: kind `PermissionDenied`, message
/// `Path violates docroot containment: <path>`.
pub fn containment_error(path: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        Violation::Containment(path.into()),
    )
}

/// True when `e` is a docroot escape refused by a [`Root`] operation.
pub fn is_containment_violation(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Violation>())
        .is_some_and(Violation::is_containment)
}

/// A directory that paths are resolved beneath, or no confinement at all.
#[derive(Clone)]
pub struct Root {
    /// The docroot's `O_PATH` descriptor; `None` when unconfined.
    dir: Option<Arc<OwnedFd>>,
    /// The docroot as configured (`/` when unconfined), for messages.
    path: PathBuf,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dir {
            Some(fd) => write!(f, "Root({} as fd {})", self.path.display(), fd.as_raw_fd()),
            None => f.write_str("Root(unconfined)"),
        }
    }
}

/// What kind of entry [`Root::read_dir`] found (not following symbolic links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, socket or FIFO.
    Other,
}

impl FileType {
    /// A regular file.
    pub fn is_file(self) -> bool {
        self == FileType::File
    }
    /// A directory.
    pub fn is_dir(self) -> bool {
        self == FileType::Dir
    }
    /// A symbolic link.
    pub fn is_symlink(self) -> bool {
        self == FileType::Symlink
    }

    fn of_std(t: fs::FileType) -> FileType {
        if t.is_symlink() {
            FileType::Symlink
        } else if t.is_dir() {
            FileType::Dir
        } else if t.is_file() {
            FileType::File
        } else {
            FileType::Other
        }
    }

    fn of_mode(mode: libc::mode_t) -> FileType {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => FileType::File,
            SFlag::S_IFDIR => FileType::Dir,
            SFlag::S_IFLNK => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

/// One entry of a directory (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    name: OsString,
    file_type: FileType,
}

impl DirEntry {
    /// The entry's name in its directory.
    pub fn file_name(&self) -> &std::ffi::OsStr {
        &self.name
    }
    /// What it is (a symbolic link is reported as one, not followed).
    pub fn file_type(&self) -> FileType {
        self.file_type
    }
}

/// Space on the file system holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Size of the file system.
    pub total: u64,
    /// Free, including blocks reserved for root.
    pub free: u64,
    /// Free for an unprivileged user.
    pub available: u64,
}

/// How [`Root::open_file`] opens a file, as `std::fs::OpenOptions`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: c_int,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Nothing set; mode 0o666 for created files (less the umask).
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o666,
            custom_flags: 0,
        }
    }
    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }
    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }
    /// Writes go to the end.
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }
    /// Cut an existing file to length 0.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }
    /// Create the file if it does not exist.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }
    /// Create the file; fail if anything (a symbolic link included) has its name.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }
    /// Permission bits of a created file.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }
    /// More `O_*` flags (`O_NOFOLLOW`, `O_NONBLOCK`...); the access mode bits are ignored.
    pub fn custom_flags(&mut self, flags: c_int) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    /// The same request for `std::fs`.
    fn to_std(&self) -> fs::OpenOptions {
        let mut o = fs::OpenOptions::new();
        o.read(self.read)
            .write(self.write)
            .append(self.append)
            .truncate(self.truncate)
            .create(self.create)
            .create_new(self.create_new)
            .mode(self.mode)
            .custom_flags(self.custom_flags);
        o
    }

    /// The `open(2)` flags, as std computes them.
    fn flags(&self) -> io::Result<c_int> {
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => libc::O_RDONLY,
            (false, true, false) => libc::O_WRONLY,
            (true, true, false) => libc::O_RDWR,
            (false, _, true) => libc::O_WRONLY | libc::O_APPEND,
            (true, _, true) => libc::O_RDWR | libc::O_APPEND,
            (false, false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "open: neither reading nor writing asked for",
                ))
            }
        };
        let creation = if self.create_new {
            libc::O_CREAT | libc::O_EXCL
        } else {
            match (self.create, self.truncate) {
                (true, true) => libc::O_CREAT | libc::O_TRUNC,
                (true, false) => libc::O_CREAT,
                (false, true) => libc::O_TRUNC,
                (false, false) => 0,
            }
        };
        Ok(access | creation | (self.custom_flags & !libc::O_ACCMODE))
    }
}

/// `openat2(2)` on `dir` with `resolve`; the one `unsafe` of this module.
fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC;
    // The kernel refuses a mode without O_CREAT/O_TMPFILE.
    // O_TMPFILE includes the O_DIRECTORY bit: test for all of its bits, or every directory
    // open would carry a mode and fail with EINVAL.
    let mode = if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        u64::from(mode)
    } else {
        0
    };
    // SAFETY: `open_how` is three integers, for which all-zero bytes are a valid value (and the
    // kernel wants every field it does not know zero); the syscall reads `path` (a
    // NUL-terminated string borrowed for the call) and `how` (on our stack, its exact size
    // passed), and writes nothing of ours.
    let ret = unsafe {
        let mut how: libc::open_how = std::mem::zeroed();
        how.flags = flags as u64;
        how.mode = mode;
        how.resolve = resolve;
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret)
        .map_err(|_| io::Error::other(format!("openat2 returned descriptor {ret}")))?;
    // SAFETY: a successful openat2 returns a descriptor just opened for us, owned by nothing
    // else, which `OwnedFd` now closes exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {:?} contains a NUL byte", path.display()),
        )
    })
}

/// Relative paths are relative to the home directory sshd started us in; `~/` likewise.
fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(path), |h| Path::new(&h).join(rest)),
        None => PathBuf::from(path),
    }
}

impl Root {
    /// No confinement: relative paths against the current directory, absolute ones as given.
    pub fn unconfined() -> Root {
        Root {
            dir: None,
            path: PathBuf::from("/"),
        }
    }

    /// Confined to `dir`, which must be an existing directory (the error names it).
    pub fn open(dir: &Path) -> io::Result<Root> {
        // open(O_PATH | O_DIRECTORY): a handle on the directory itself, taken once; later
        // renames or replacements of `dir`'s path do not move the root.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::ENOTDIR) {
                    "is not a directory".to_string()
                } else {
                    e.to_string()
                };
                io::Error::new(e.kind(), format!("docroot {}: {why}", dir.display()))
            })?;
        Ok(Root {
            dir: Some(Arc::new(OwnedFd::from(file))),
            path: dir.to_path_buf(),
        })
    }

    /// True when paths are confined to a docroot.
    pub fn is_confined(&self) -> bool {
        self.dir.is_some()
    }

    /// The docroot as configured (`/` when unconfined), for messages to administrators.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path for a client's path, or why it is refused.
    ///
    /// Confined: the docroot is the user's `/`; absolute and relative paths (and `~/`) are
    /// taken from it, `..` is resolved lexically and may not climb above it. The result is
    /// relative to the root, `.` for the root itself, without `..`. Unconfined: the path as
    /// given, `~/` replaced by `$HOME/`.
    pub fn resolve(&self, client_path: &str) -> Result<PathBuf, Violation> {
        if client_path.is_empty() {
            return Err(Violation::Empty);
        }
        if client_path.contains('\0') {
            return Err(Violation::Nul(client_path.to_string()));
        }
        if !self.is_confined() {
            return Ok(expand_home(client_path));
        }
        let rest = if client_path == "~" {
            ""
        } else {
            client_path.strip_prefix("~/").unwrap_or(client_path)
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in rest.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(Violation::Containment(client_path.to_string()));
                    }
                }
                name => parts.push(name),
            }
        }
        Ok(if parts.is_empty() {
            PathBuf::from(".")
        } else {
            parts.iter().collect()
        })
    }

    /// A path as the user sees it: `/a/b` under a docroot, as given when unconfined.
    pub fn show(&self, path: &Path) -> String {
        if !self.is_confined() {
            return path.display().to_string();
        }
        let mut out = String::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => {
                    out.push('/');
                    out.push_str(&n.to_string_lossy());
                }
                Component::ParentDir => out.push_str("/.."),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Opens `path` beneath the root descriptor `dir`.
    fn beneath(&self, dir: &OwnedFd, path: &Path, flags: c_int, mode: u32) -> io::Result<OwnedFd> {
        let c = c_path(path)?;
        for _ in 0..RETRIES {
            // openat2(root, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): the file it returns
            // was reached by a walk that never left the root, whatever links or renames
            // happened on the way.
            match openat2(dir.as_fd(), &c, flags, mode, RESOLVE) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                // EXDEV: the walk would have left the root (`..`, an absolute path or link).
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    return Err(containment_error(self.show(path)))
                }
                // ELOOP: a magic link (or a loop of links). With O_NOFOLLOW and without
                // O_PATH it is the last component being a link, reported as such.
                Err(e)
                    if e.raw_os_error() == Some(libc::ELOOP)
                        && (flags & libc::O_NOFOLLOW == 0 || flags & libc::O_PATH != 0) =>
                {
                    return Err(containment_error(self.show(path)))
                }
                other => return other,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{}: the directory tree kept changing during the lookup",
                self.show(path)
            ),
        ))
    }

    /// The directory holding `path`'s last component, opened beneath the root, and that
    /// component: for the `*at` calls with no `openat2` form. The name is a plain name (not
    /// `.` or `..`, no `/`), so the call never walks anywhere from the directory.
    fn parent(&self, dir: &OwnedFd, path: &Path, what: &str) -> io::Result<(OwnedFd, CString)> {
        let name = match path.components().next_back() {
            Some(Component::Normal(n)) => n,
            Some(Component::ParentDir) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} {}: the path ends in \"..\"", self.show(path)),
                ))
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{what} {}: that is the docroot itself", self.show(path)),
                ))
            }
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // O_PATH | O_DIRECTORY beneath the root: a handle on the parent that stays valid (and
        // inside) even if the parent is renamed after this.
        let pfd = self.beneath(dir, parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let cname = CString::new(name.as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} {}: the name contains a NUL byte", self.show(path)),
            )
        })?;
        Ok((pfd, cname))
    }

    /// Opens a file as `opts` says (follows symbolic links that stay inside the root).
    pub fn open_file(&self, path: &Path, opts: &OpenOptions) -> io::Result<File> {
        match &self.dir {
            None => opts.to_std().open(path),
            Some(dir) => Ok(File::from(self.beneath(
                dir,
                path,
                opts.flags()?,
                opts.mode,
            )?)),
        }
    }

    /// Metadata of `path`, following symbolic links (that stay inside the root).
    pub fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        match &self.dir {
            None => fs::metadata(path),
            // O_PATH beneath the root, then fstat on that descriptor: the metadata of exactly
            // the file the confined walk reached.
            Some(dir) => File::from(self.beneath(dir, path, libc::O_PATH, 0)?).metadata(),
        }
    }

    /// Metadata of `path` itself: a symbolic link as the last component is not followed.
    pub fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        match &self.dir {
            None => fs::symlink_metadata(path),
            // O_PATH | O_NOFOLLOW: a descriptor for the last component itself (a link stays a
            // link); the components before it are walked beneath the root.
            Some(dir) => {
                File::from(self.beneath(dir, path, libc::O_PATH | libc::O_NOFOLLOW, 0)?).metadata()
            }
        }
    }

    /// Creates one directory (mode 0o777 less the umask, as `std::fs::create_dir`).
    pub fn create_dir(&self, path: &Path) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return fs::create_dir(path);
        };
        if path.components().all(|c| c == Component::CurDir) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "creating directory {}: that is the docroot",
                    self.show(path)
                ),
            ));
        }
        let (parent, name) = self.parent(dir, path, "creating directory")?;
        // mkdirat(parent, name): creates the entry in that directory; an existing entry, a
        // symbolic link included, is EEXIST and never followed.
        nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name.as_c_str(),
            Mode::from_bits_truncate(0o777),
        )
        .map_err(io::Error::from)
    }

    /// Creates a directory and any missing parents; an existing directory (or a link to one
    /// inside the root) is fine.
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if self.dir.is_none() {
            return fs::create_dir_all(path);
        }
        if self.metadata(path).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let mut prefix = PathBuf::new();
        for c in path.components() {
            match c {
                Component::CurDir => continue,
                Component::Normal(n) => prefix.push(n),
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "creating directory {}: only plain names may be created",
                            self.show(path)
                        ),
                    ))
                }
            }
            match self.create_dir(&prefix) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !self.metadata(&prefix)?.is_dir() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a directory", self.show(&prefix)),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Renames `from` to `to` (both inside the root); a link at either name is itself moved or
    /// replaced, never followed.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return fs::rename(from, to);
        };
        let (pf, nf) = self.parent(dir, from, "renaming")?;
        let (pt, nt) = self.parent(dir, to, "renaming to")?;
        // renameat(parent, name, parent, name): both parents were reached beneath the root;
        // the names are single components, links among them are not followed.
        nix::fcntl::renameat(
            Some(pf.as_raw_fd()),
            nf.as_c_str(),
            Some(pt.as_raw_fd()),
            nt.as_c_str(),
        )
        .map_err(io::Error::from)
    }

    /// Removes a file (or a symbolic link itself).
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return fs::remove_file(path);
        };
        let (parent, name) = self.parent(dir, path, "removing")?;
        // unlinkat(parent, name, 0): removes that entry of that directory; a link is removed,
        // not its target.
        nix::unistd::unlinkat(
            Some(parent.as_raw_fd()),
            name.as_c_str(),
            UnlinkatFlags::NoRemoveDir,
        )
        .map_err(io::Error::from)
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return fs::remove_dir(path);
        };
        let (parent, name) = self.parent(dir, path, "removing directory")?;
        // unlinkat(parent, name, AT_REMOVEDIR): that entry only, and only if it is an empty
        // directory (a link to one is ENOTDIR).
        nix::unistd::unlinkat(
            Some(parent.as_raw_fd()),
            name.as_c_str(),
            UnlinkatFlags::RemoveDir,
        )
        .map_err(io::Error::from)
    }

    /// The entries of a directory (names and types, without `.` and `..`), sorted by name.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        match &self.dir {
            None => {
                for e in fs::read_dir(path)? {
                    let e = e?;
                    out.push(DirEntry {
                        name: e.file_name(),
                        file_type: FileType::of_std(e.file_type()?),
                    });
                }
            }
            Some(dir) => {
                // O_RDONLY | O_DIRECTORY beneath the root, then getdents on that descriptor:
                // the listing is of the directory the confined walk reached.
                let fd = self.beneath(dir, path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let mut d = nix::dir::Dir::from(fd).map_err(io::Error::from)?;
                let raw = d.as_raw_fd();
                for e in d.iter() {
                    let e = e.map_err(io::Error::from)?;
                    let name = e.file_name();
                    if name.to_bytes() == b"." || name.to_bytes() == b".." {
                        continue;
                    }
                    let file_type = match e.file_type() {
                        Some(nix::dir::Type::File) => FileType::File,
                        Some(nix::dir::Type::Directory) => FileType::Dir,
                        Some(nix::dir::Type::Symlink) => FileType::Symlink,
                        Some(_) => FileType::Other,
                        // fstatat(dir, name, AT_SYMLINK_NOFOLLOW): the entry itself, in the
                        // directory we hold, for file systems that do not fill d_type.
                        None => FileType::of_mode(
                            nix::sys::stat::fstatat(Some(raw), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                                .map_err(io::Error::from)?
                                .st_mode,
                        ),
                    };
                    out.push(DirEntry {
                        name: OsString::from(std::ffi::OsStr::from_bytes(name.to_bytes())),
                        file_type,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Opens `path` to change its attributes: read-only, not through a final link, and
    /// without blocking on a FIFO.
    fn attribute_handle(&self, dir: &OwnedFd, path: &Path) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        Ok(File::from(self.beneath(dir, path, flags, 0)?))
    }

    /// Sets permission bits (`mode & 0o7777`); a symbolic link as the last component is refused
    /// when confined.
    pub fn set_permissions(&self, path: &Path, mode: u32) -> io::Result<()> {
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match &self.dir {
            None => fs::set_permissions(path, perms),
            // fchmod on the descriptor the confined walk opened: exactly that file.
            Some(dir) => self.attribute_handle(dir, path)?.set_permissions(perms),
        }
    }

    /// Sets the modification time; a symbolic link as the last component is refused when
    /// confined.
    pub fn set_modified(&self, path: &Path, time: SystemTime) -> io::Result<()> {
        match &self.dir {
            None => File::open(path)?.set_modified(time),
            // futimens on the descriptor the confined walk opened: exactly that file.
            Some(dir) => self.attribute_handle(dir, path)?.set_modified(time),
        }
    }

    /// Space on the file system holding `path`.
    pub fn space(&self, path: &Path) -> io::Result<Space> {
        let st = match &self.dir {
            None => nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?,
            // fstatvfs on an O_PATH descriptor reached beneath the root.
            Some(dir) => {
                let fd = self.beneath(dir, path, libc::O_PATH, 0)?;
                nix::sys::statvfs::fstatvfs(&fd).map_err(io::Error::from)?
            }
        };
        let unit = st.fragment_size() as u64;
        Ok(Space {
            total: (st.blocks() as u64).saturating_mul(unit),
            free: (st.blocks_free() as u64).saturating_mul(unit),
            available: (st.blocks_available() as u64).saturating_mul(unit),
        })
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{listing, Swapper};
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A [`testing::Tree`] with `f` and `sub/f` in the docroot, opened as [`Tree::root`].
    struct Tree {
        dirs: testing::Tree,
        root: Root,
    }

    impl std::ops::Deref for Tree {
        type Target = testing::Tree;

        fn deref(&self) -> &testing::Tree {
            &self.dirs
        }
    }

    fn tree() -> Tree {
        let dirs = testing::tree();
        fs::create_dir(dirs.root_dir.join("sub")).unwrap();
        fs::write(dirs.root_dir.join("sub/f"), b"inside").unwrap();
        fs::write(dirs.root_dir.join("f"), b"inside").unwrap();
        let root = Root::open(&dirs.root_dir).unwrap();
        Tree { dirs, root }
    }

    fn read(root: &Root, p: &str) -> io::Result<String> {
        let mut f = root.open_file(Path::new(p), OpenOptions::new().read(true))?;
        let mut s = String::new();
        io::Read::read_to_string(&mut f, &mut s)?;
        Ok(s)
    }

    fn assert_violation<T: fmt::Debug>(r: io::Result<T>, shown: &str) {
        let e = r.expect_err("must be refused");
        assert!(is_containment_violation(&e), "{e:?}");
        assert_eq!(e.to_string(), format!("{CONTAINMENT_MESSAGE}: {shown}"));
    }

    #[test]
    fn resolve_takes_the_docroot_as_slash() {
        let t = tree();
        let r = &t.root;
        assert_eq!(r.resolve("/").unwrap(), PathBuf::from("."));
        assert_eq!(r.resolve("~").unwrap(), PathBuf::from("."));
        assert_eq!(r.resolve("/a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(r.resolve("a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(r.resolve("~/a").unwrap(), PathBuf::from("a"));
        assert_eq!(r.resolve("a/../b/./c").unwrap(), PathBuf::from("b/c"));
        assert_eq!(r.resolve("a/..").unwrap(), PathBuf::from("."));
        // An absolute path outside is still a path inside the docroot.
        assert_eq!(
            r.resolve("/etc/passwd").unwrap(),
            PathBuf::from("etc/passwd")
        );
        for bad in ["..", "../x", "/../../etc/passwd", "a/../../x", "~/../x"] {
            let v = r.resolve(bad).unwrap_err();
            assert_eq!(
                v.to_string(),
                format!("Path violates docroot containment: {bad}")
            );
            assert!(v.is_containment());
        }
        assert_eq!(r.resolve("").unwrap_err(), Violation::Empty);
        assert!(matches!(r.resolve("a\0b"), Err(Violation::Nul(_))));
        assert_eq!(r.show(Path::new(".")), "/");
        assert_eq!(r.show(&r.resolve("/x/y").unwrap()), "/x/y");
    }

    #[test]
    fn unconfined_keeps_paths() {
        let u = Root::unconfined();
        assert!(!u.is_confined());
        assert_eq!(
            u.resolve("/etc/passwd").unwrap(),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(u.resolve("../x").unwrap(), PathBuf::from("../x"));
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(u.resolve("~/x").unwrap(), Path::new(&home).join("x"));
        }
        assert_eq!(u.resolve("").unwrap_err(), Violation::Empty);
        assert!(u.metadata(Path::new("/etc/passwd")).is_ok());
    }

    #[test]
    fn open_refuses_a_missing_or_plain_docroot() {
        let t = tree();
        let e = Root::open(&t.root_dir.join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let e = Root::open(&t.root_dir.join("f")).unwrap_err();
        assert!(e.to_string().ends_with("/f: is not a directory"), "{e}");
    }

    #[test]
    fn dotdot_and_absolute_paths_are_refused_by_the_kernel() {
        let t = tree();
        let r = &t.root;
        assert_eq!(read(r, "f").unwrap(), "inside");
        assert_eq!(read(r, "sub/../f").unwrap(), "inside");
        assert_violation(read(r, "../outside/secret"), "/../outside/secret");
        assert_violation(
            read(r, "sub/../../outside/secret"),
            "/sub/../../outside/secret",
        );
        assert_violation(r.metadata(Path::new("/etc/passwd")), "/etc/passwd");
    }

    #[test]
    fn links_out_are_refused_links_inside_allowed() {
        let t = tree();
        let r = &t.root;
        symlink("/etc/passwd", t.root_dir.join("abs")).unwrap();
        symlink("../outside/secret", t.root_dir.join("rel")).unwrap();
        symlink("sub/f", t.root_dir.join("sibling")).unwrap();
        symlink("../f", t.root_dir.join("sub/up")).unwrap();
        symlink(&t.outside, t.root_dir.join("dirout")).unwrap();
        symlink("sub", t.root_dir.join("dirin")).unwrap();
        assert_violation(read(r, "abs"), "/abs");
        assert_violation(read(r, "rel"), "/rel");
        assert_violation(r.metadata(Path::new("abs")), "/abs");
        assert_violation(read(r, "dirout/secret"), "/dirout/secret");
        assert_violation(r.read_dir(Path::new("dirout")), "/dirout");
        assert_eq!(read(r, "sibling").unwrap(), "inside");
        assert_eq!(read(r, "sub/up").unwrap(), "inside");
        assert_eq!(read(r, "dirin/f").unwrap(), "inside");
        // The link itself can be looked at.
        assert!(r
            .symlink_metadata(Path::new("abs"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(r.metadata(Path::new("sibling")).unwrap().is_file());
        let names: Vec<(String, FileType)> = r
            .read_dir(Path::new("."))
            .unwrap()
            .into_iter()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.file_type()))
            .collect();
        assert_eq!(
            names,
            [
                ("abs", FileType::Symlink),
                ("dirin", FileType::Symlink),
                ("dirout", FileType::Symlink),
                ("f", FileType::File),
                ("rel", FileType::Symlink),
                ("sibling", FileType::Symlink),
                ("sub", FileType::Dir),
            ]
            .map(|(n, t)| (n.to_string(), t))
        );
        // Attributes are never set through a final link, even one inside.
        assert!(r.set_permissions(Path::new("sibling"), 0o600).is_err());
        assert!(r.set_permissions(Path::new("abs"), 0o600).is_err());
    }

    #[test]
    fn writes_through_links_out_are_refused_and_leave_nothing_outside() {
        let t = tree();
        let r = &t.root;
        symlink(&t.outside, t.root_dir.join("dirout")).unwrap();
        symlink(t.outside.join("secret"), t.root_dir.join("fileout")).unwrap();
        let before = listing(&t.outside);
        assert_violation(r.create_dir(Path::new("dirout/new")), "/dirout");
        assert_violation(r.create_dir_all(Path::new("dirout/x/y")), "/dirout");
        assert_violation(
            r.open_file(
                Path::new("dirout/new.partial"),
                OpenOptions::new().write(true).create(true),
            ),
            "/dirout/new.partial",
        );
        assert_violation(
            r.open_file(
                Path::new("fileout"),
                OpenOptions::new().write(true).truncate(true),
            ),
            "/fileout",
        );
        assert_violation(r.rename(Path::new("f"), Path::new("dirout/f")), "/dirout");
        assert_violation(
            r.rename(Path::new("dirout/secret"), Path::new("g")),
            "/dirout",
        );
        assert_violation(r.remove_file(Path::new("dirout/secret")), "/dirout");
        assert_violation(
            r.set_permissions(Path::new("dirout/secret"), 0o777),
            "/dirout/secret",
        );
        assert_violation(
            r.set_modified(Path::new("dirout/secret"), SystemTime::UNIX_EPOCH),
            "/dirout/secret",
        );
        // Renaming onto a link replaces the link, it does not write through it.
        r.rename(Path::new("f"), Path::new("fileout")).unwrap();
        assert!(fs::symlink_metadata(t.root_dir.join("fileout"))
            .unwrap()
            .is_file());
        assert_eq!(listing(&t.outside), before);
        assert_eq!(fs::read(t.outside.join("secret")).unwrap(), b"outside");
    }

    #[test]
    fn operations_inside_work() {
        let t = tree();
        let r = &t.root;
        r.create_dir_all(Path::new("a/b/c")).unwrap();
        r.create_dir_all(Path::new("a/b/c")).unwrap();
        assert_eq!(
            r.create_dir(Path::new("a")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let mut f = r
            .open_file(
                Path::new("a/b/c/x"),
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )
            .unwrap();
        io::Write::write_all(&mut f, b"data").unwrap();
        drop(f);
        r.set_permissions(Path::new("a/b/c/x"), 0o640).unwrap();
        r.set_modified(Path::new("a/b/c/x"), SystemTime::UNIX_EPOCH)
            .unwrap();
        let m = fs::metadata(t.root_dir.join("a/b/c/x")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        assert_eq!(m.modified().unwrap(), SystemTime::UNIX_EPOCH);
        r.rename(Path::new("a/b/c/x"), Path::new("a/y")).unwrap();
        assert_eq!(read(r, "a/y").unwrap(), "data");
        r.remove_file(Path::new("a/y")).unwrap();
        r.remove_dir(Path::new("a/b/c")).unwrap();
        assert!(r.symlink_metadata(Path::new("a/b/c")).is_err());
        assert!(r.remove_dir(Path::new(".")).is_err());
        assert!(r.rename(Path::new("."), Path::new("z")).is_err());
        assert!(r.space(Path::new("a")).unwrap().total > 0);
        assert!(r.metadata(Path::new(".")).unwrap().is_dir());
        assert_eq!(r.path(), t.root_dir.as_path());
    }

    /// A thread swaps a directory of the docroot for a link to `/etc` (one atomic exchange,
    /// back and forth) while another opens `d/passwd` beneath the root 10,000 times: every open
    /// that succeeds is the docroot's file, never `/etc/passwd`.
    #[test]
    fn swapping_a_directory_for_a_link_out_never_escapes() {
        let t = tree();
        fs::create_dir(t.root_dir.join("d")).unwrap();
        fs::write(t.root_dir.join("d/passwd"), b"inside").unwrap();
        symlink("/etc", t.root_dir.join("swap")).unwrap();
        let swapper = Swapper::start(t.root_dir.join("d"), t.root_dir.join("swap"));
        let (mut inside, mut refused) = (0, 0);
        for _ in 0..10_000 {
            match read(&t.root, "d/passwd") {
                Ok(s) => {
                    assert_eq!(s, "inside", "opened a file outside the docroot");
                    inside += 1;
                }
                Err(e) => {
                    assert!(
                        is_containment_violation(&e) || e.kind() == io::ErrorKind::NotFound,
                        "{e:?}"
                    );
                    refused += 1;
                }
            }
        }
        let swaps = swapper.stop();
        assert!(swaps > 100, "only {swaps} swaps: no race was tested");
        assert!(
            inside > 0 && refused > 0,
            "{inside} inside, {refused} refused"
        );
    }

    /// A thread moves a directory out of the docroot and back while another opens a file
    /// through a link deep inside it that climbs with `..` (`a/d/…/up` → `../…/f`): once `a` is
    /// outside, those `..` would reach the outside `f`; the kernel never lets them.
    #[test]
    fn moving_a_parent_out_during_a_walk_never_escapes() {
        let t = tree();
        // A long walk below `a`, so a move lands in the middle of it often: `a/d/d/…/up`.
        let depth = 24;
        let deep: PathBuf = std::iter::once("a").chain(["d"; 24]).collect();
        fs::create_dir_all(t.root_dir.join(&deep)).unwrap();
        symlink(
            "../".repeat(depth + 1) + "f",
            t.root_dir.join(&deep).join("up"),
        )
        .unwrap();
        // outside/x/a/d/…/up → outside/x/f once moved.
        fs::create_dir(t.outside.join("x")).unwrap();
        fs::write(t.outside.join("x/f"), b"outside").unwrap();
        let target = deep.join("up");
        let target = target.to_str().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mover = {
            let stop = stop.clone();
            let (inside, out) = (t.root_dir.join("a"), t.outside.join("x/a"));
            std::thread::spawn(move || {
                let mut moves = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    fs::rename(&inside, &out).unwrap();
                    fs::rename(&out, &inside).unwrap();
                    moves += 1;
                }
                moves
            })
        };
        let (mut inside, mut refused) = (0, 0);
        for _ in 0..10_000 {
            match read(&t.root, target) {
                Ok(s) => {
                    assert_eq!(s, "inside", "opened a file outside the docroot");
                    inside += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let moves = mover.join().unwrap();
        assert!(moves > 100, "only {moves} moves: no race was tested");
        assert!(inside > 0, "{inside} inside, {refused} refused");
    }
}
