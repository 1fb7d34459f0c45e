//! The bytes of IBM's `ascmd` replies: big-endian type-length-value records, encoded and
//! decoded.
//!
//! A record is a type (`u8`), a length (`u32`, big-endian) and that many bytes of value. The
//! server writes one [`Reply`] record per command (and one `info` at the start); a reply's value
//! is itself a list of records, one per field, typed by the tables below (numbers start at 1,
//! in the order of IBM's type table). Base values: `int32` and `int64` big-endian (4 and 8
//! bytes), `epoch` seconds as an `int64`, `zstr` bytes ending in one NUL. Three shapes of list:
//! - `dir`: one record per entry (type 1), each value a `stat` field list;
//! - `df`: the fields of every mount one after the other; a `fs` field (type 1) starts the
//!   next mount, so every mount is written starting with it;
//! - `info`'s `dev`: the field repeated, one value each.

use std::fmt;
use std::io::{self, Read};

/// Result record types (the top level).
pub mod result {
    /// `file`: one `stat` (a path that is not a directory).
    pub const FILE: u8 = 1;
    /// `dir`: a list of `stat`, one per entry.
    pub const DIR: u8 = 2;
    /// `size`: what `as_du` counted.
    pub const SIZE: u8 = 3;
    /// `error`: errno and text.
    pub const ERROR: u8 = 4;
    /// `info`: the server's platform, version, locale.
    pub const INFO: u8 = 5;
    /// `success`: no value.
    pub const SUCCESS: u8 = 6;
    /// `exit`: no value (in IBM's table; no server command prints it).
    pub const EXIT: u8 = 7;
    /// `df`: mounts.
    pub const DF: u8 = 8;
    /// `md5sum`: a hex digest.
    pub const MD5SUM: u8 = 9;
}

/// `stat` field types.
pub mod stat {
    /// Entry name (`zstr`).
    pub const NAME: u8 = 1;
    /// Size in bytes (`int64`).
    pub const SIZE: u8 = 2;
    /// `st_mode` (`int32`).
    pub const MODE: u8 = 3;
    /// Mode as `ls -l` shows it (`zstr`, `drwxr-xr-x`).
    pub const ZMODE: u8 = 4;
    /// Owner id (`int32`).
    pub const UID: u8 = 5;
    /// Owner name (`zstr`).
    pub const ZUID: u8 = 6;
    /// Group id (`int32`).
    pub const GID: u8 = 7;
    /// Group name (`zstr`).
    pub const ZGID: u8 = 8;
    /// Status change time (`epoch`).
    pub const CTIME: u8 = 9;
    /// The same as text (`zstr`).
    pub const ZCTIME: u8 = 10;
    /// Modification time (`epoch`).
    pub const MTIME: u8 = 11;
    /// The same as text (`zstr`).
    pub const ZMTIME: u8 = 12;
    /// Access time (`epoch`).
    pub const ATIME: u8 = 13;
    /// The same as text (`zstr`).
    pub const ZATIME: u8 = 14;
    /// A symbolic link's target (`zstr`).
    pub const SYMLINK: u8 = 15;
    /// Why the entry could not be examined (`int32`).
    pub const ERRNO: u8 = 16;
    /// The same as text (`zstr`).
    pub const ERRSTR: u8 = 17;
}

/// `info` field types.
pub mod info {
    /// Operating system (`zstr`).
    pub const PLATFORM: u8 = 1;
    /// Server version (`zstr`).
    pub const VERSION: u8 = 2;
    /// Locale language (`zstr`).
    pub const LANG: u8 = 3;
    /// Locale territory (`zstr`).
    pub const TERRITORY: u8 = 4;
    /// Character set (`zstr`).
    pub const CODESET: u8 = 5;
    /// `LC_CTYPE` (`zstr`).
    pub const LC_CTYPE: u8 = 6;
    /// `LC_NUMERIC` (`zstr`).
    pub const LC_NUMERIC: u8 = 7;
    /// `LC_TIME` (`zstr`).
    pub const LC_TIME: u8 = 8;
    /// `LC_ALL` (`zstr`).
    pub const LC_ALL: u8 = 9;
    /// A device (drive), repeated (`zstr`).
    pub const DEV: u8 = 10;
    /// Browse capabilities (`zstr`).
    pub const BROWSE_CAPS: u8 = 11;
    /// Protocol version of the session (we write an `int64`; a `zstr` is read too).
    pub const PROTOCOL: u8 = 12;
}

/// `size` field types.
pub mod size {
    /// Bytes (`int64`).
    pub const SIZE: u8 = 1;
    /// Files counted (`int32`).
    pub const FCOUNT: u8 = 2;
    /// Directories counted (`int32`).
    pub const DCOUNT: u8 = 3;
    /// Files that could not be examined (`int32`).
    pub const FAILED_FCOUNT: u8 = 4;
    /// Directories that could not be read (`int32`).
    pub const FAILED_DCOUNT: u8 = 5;
}

/// `error` field types.
pub mod error {
    /// The errno (`int32`).
    pub const ERRNO: u8 = 1;
    /// The text (`zstr`).
    pub const ERRSTR: u8 = 2;
}

/// `mnt` field types (in `df`).
pub mod mnt {
    /// The mounted file system (`zstr`); starts a new mount.
    pub const FS: u8 = 1;
    /// Where it is mounted (`zstr`).
    pub const DIR: u8 = 2;
    /// Its type (`zstr`).
    pub const IS_A: u8 = 3;
    /// Size in bytes (`int64`).
    pub const TOTAL: u8 = 4;
    /// Bytes used (`int64`).
    pub const USED: u8 = 5;
    /// Bytes free (`int64`).
    pub const FREE: u8 = 6;
    /// Files (inodes) it can hold (`int64`).
    pub const FCOUNT: u8 = 7;
    /// Why it could not be examined (`int32`).
    pub const ERRNO: u8 = 8;
    /// The same as text (`zstr`).
    pub const ERRSTR: u8 = 9;
}

/// `md5sum` field types.
pub mod md5 {
    /// The digest in lower-case hex (`zstr`).
    pub const MD5SUM: u8 = 1;
}

/// Largest record value [`read_reply`] accepts (a client's bound on what a server may send).
pub const MAX_REPLY_BYTES: u32 = 256 * 1024 * 1024;

/// One file's attributes (IBM's `stat`); absent fields are not written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// The entry's name (a directory listing) or the path's last component (`file`).
    pub name: Vec<u8>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// `st_mode`, type bits included.
    pub mode: Option<u32>,
    /// The mode as `ls -l` writes it.
    pub zmode: Option<String>,
    /// Owner id.
    pub uid: Option<u32>,
    /// Owner name.
    pub zuid: Option<String>,
    /// Group id.
    pub gid: Option<u32>,
    /// Group name.
    pub zgid: Option<String>,
    /// Status change time, seconds since 1970.
    pub ctime: Option<u64>,
    /// The same as text.
    pub zctime: Option<String>,
    /// Modification time, seconds since 1970.
    pub mtime: Option<u64>,
    /// The same as text.
    pub zmtime: Option<String>,
    /// Access time, seconds since 1970.
    pub atime: Option<u64>,
    /// The same as text.
    pub zatime: Option<String>,
    /// A symbolic link's target.
    pub symlink: Option<Vec<u8>>,
    /// Why this entry could not be examined.
    pub errno: Option<u32>,
    /// The same as text.
    pub errstr: Option<String>,
}

/// The server's description of itself (IBM's `info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Operating system.
    pub platform: Option<String>,
    /// Server version.
    pub version: Option<String>,
    /// Locale language.
    pub lang: Option<String>,
    /// Locale territory.
    pub territory: Option<String>,
    /// Character set.
    pub codeset: Option<String>,
    /// `LC_CTYPE`.
    pub lc_ctype: Option<String>,
    /// `LC_NUMERIC`.
    pub lc_numeric: Option<String>,
    /// `LC_TIME`.
    pub lc_time: Option<String>,
    /// `LC_ALL`.
    pub lc_all: Option<String>,
    /// Devices (drives), each one record.
    pub dev: Vec<String>,
    /// Browse capabilities.
    pub browse_caps: Option<String>,
    /// Protocol version of the session.
    pub protocol: Option<u64>,
}

/// What `as_du` counted (IBM's `size`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Bytes of the files (their lengths, symbolic links' own included).
    pub size: u64,
    /// Files (and symbolic links, devices...) counted.
    pub fcount: u32,
    /// Directories counted, the starting one included.
    pub dcount: u32,
    /// Entries that could not be examined.
    pub failed_fcount: u32,
    /// Directories that could not be read.
    pub failed_dcount: u32,
}

/// A refused or failed command (IBM's `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The errno (`EACCES` for refusals).
    pub errno: u32,
    /// What happened: the system's text for an errno, or our own sentence.
    pub errstr: String,
}

/// One mounted file system (IBM's `mnt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// The mounted file system (device or source).
    pub fs: String,
    /// Where it is mounted, as the user sees it.
    pub dir: Option<Vec<u8>>,
    /// Its type (`ext4`, `tmpfs`...).
    pub is_a: Option<String>,
    /// Size in bytes.
    pub total: Option<u64>,
    /// Bytes used.
    pub used: Option<u64>,
    /// Bytes free for unprivileged users.
    pub free: Option<u64>,
    /// Files (inodes) it can hold.
    pub fcount: Option<u64>,
    /// Why it could not be examined.
    pub errno: Option<u32>,
    /// The same as text.
    pub errstr: Option<String>,
}

/// One reply record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A path that is not a directory.
    File(Stat),
    /// A directory's entries.
    Dir(Vec<Stat>),
    /// `as_du`'s counts.
    Size(Size),
    /// A failure.
    Error(ErrorReply),
    /// The server's description.
    Info(Info),
    /// The command worked.
    Success,
    /// In IBM's table; never written by our server.
    Exit,
    /// Mounted file systems.
    Df(Vec<Mount>),
    /// A file's MD5 digest in hex.
    Md5sum(String),
}

/// Why bytes are not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed ascmd reply: {}", self.0)
    }
}

impl std::error::Error for WireError {}

fn bad<T>(msg: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends one record. A value longer than `u32::MAX` cannot be written (our caps keep every
/// reply far below it).
fn put(out: &mut Vec<u8>, t: u8, value: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(value.len())
        .map_err(|_| WireError(format!("a value of {} bytes does not fit", value.len())))?;
    out.push(t);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn put_zstr(out: &mut Vec<u8>, t: u8, s: &[u8]) -> Result<(), WireError> {
    // A NUL inside would end the string early for every reader: cut there.
    let s = s.split(|&b| b == 0).next().unwrap_or_default();
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s);
    v.push(0);
    put(out, t, &v)
}

fn put_opt_str(out: &mut Vec<u8>, t: u8, s: &Option<String>) -> Result<(), WireError> {
    match s {
        Some(s) => put_zstr(out, t, s.as_bytes()),
        None => Ok(()),
    }
}

fn put_opt_u32(out: &mut Vec<u8>, t: u8, v: Option<u32>) -> Result<(), WireError> {
    match v {
        Some(v) => put(out, t, &v.to_be_bytes()),
        None => Ok(()),
    }
}

fn put_opt_u64(out: &mut Vec<u8>, t: u8, v: Option<u64>) -> Result<(), WireError> {
    match v {
        Some(v) => put(out, t, &v.to_be_bytes()),
        None => Ok(()),
    }
}

fn stat_fields(s: &Stat) -> Result<Vec<u8>, WireError> {
    let mut v = Vec::with_capacity(160 + s.name.len());
    put_zstr(&mut v, stat::NAME, &s.name)?;
    put_opt_u64(&mut v, stat::SIZE, s.size)?;
    put_opt_u32(&mut v, stat::MODE, s.mode)?;
    put_opt_str(&mut v, stat::ZMODE, &s.zmode)?;
    put_opt_u32(&mut v, stat::UID, s.uid)?;
    put_opt_str(&mut v, stat::ZUID, &s.zuid)?;
    put_opt_u32(&mut v, stat::GID, s.gid)?;
    put_opt_str(&mut v, stat::ZGID, &s.zgid)?;
    put_opt_u64(&mut v, stat::CTIME, s.ctime)?;
    put_opt_str(&mut v, stat::ZCTIME, &s.zctime)?;
    put_opt_u64(&mut v, stat::MTIME, s.mtime)?;
    put_opt_str(&mut v, stat::ZMTIME, &s.zmtime)?;
    put_opt_u64(&mut v, stat::ATIME, s.atime)?;
    put_opt_str(&mut v, stat::ZATIME, &s.zatime)?;
    if let Some(target) = &s.symlink {
        put_zstr(&mut v, stat::SYMLINK, target)?;
    }
    put_opt_u32(&mut v, stat::ERRNO, s.errno)?;
    put_opt_str(&mut v, stat::ERRSTR, &s.errstr)?;
    Ok(v)
}

fn info_fields(i: &Info) -> Result<Vec<u8>, WireError> {
    let mut v = Vec::new();
    put_opt_str(&mut v, info::PLATFORM, &i.platform)?;
    put_opt_str(&mut v, info::VERSION, &i.version)?;
    put_opt_str(&mut v, info::LANG, &i.lang)?;
    put_opt_str(&mut v, info::TERRITORY, &i.territory)?;
    put_opt_str(&mut v, info::CODESET, &i.codeset)?;
    put_opt_str(&mut v, info::LC_CTYPE, &i.lc_ctype)?;
    put_opt_str(&mut v, info::LC_NUMERIC, &i.lc_numeric)?;
    put_opt_str(&mut v, info::LC_TIME, &i.lc_time)?;
    put_opt_str(&mut v, info::LC_ALL, &i.lc_all)?;
    for d in &i.dev {
        put_zstr(&mut v, info::DEV, d.as_bytes())?;
    }
    put_opt_str(&mut v, info::BROWSE_CAPS, &i.browse_caps)?;
    put_opt_u64(&mut v, info::PROTOCOL, i.protocol)?;
    Ok(v)
}

fn size_fields(s: &Size) -> Result<Vec<u8>, WireError> {
    let mut v = Vec::with_capacity(48);
    put(&mut v, size::SIZE, &s.size.to_be_bytes())?;
    put(&mut v, size::FCOUNT, &s.fcount.to_be_bytes())?;
    put(&mut v, size::DCOUNT, &s.dcount.to_be_bytes())?;
    put(&mut v, size::FAILED_FCOUNT, &s.failed_fcount.to_be_bytes())?;
    put(&mut v, size::FAILED_DCOUNT, &s.failed_dcount.to_be_bytes())?;
    Ok(v)
}

fn mount_fields(v: &mut Vec<u8>, m: &Mount) -> Result<(), WireError> {
    // `fs` first, always: it is what starts a mount for a reader.
    put_zstr(v, mnt::FS, m.fs.as_bytes())?;
    if let Some(dir) = &m.dir {
        put_zstr(v, mnt::DIR, dir)?;
    }
    put_opt_str(v, mnt::IS_A, &m.is_a)?;
    put_opt_u64(v, mnt::TOTAL, m.total)?;
    put_opt_u64(v, mnt::USED, m.used)?;
    put_opt_u64(v, mnt::FREE, m.free)?;
    put_opt_u64(v, mnt::FCOUNT, m.fcount)?;
    put_opt_u32(v, mnt::ERRNO, m.errno)?;
    put_opt_str(v, mnt::ERRSTR, &m.errstr)
}

impl Reply {
    /// The record's type number.
    pub fn type_code(&self) -> u8 {
        match self {
            Reply::File(_) => result::FILE,
            Reply::Dir(_) => result::DIR,
            Reply::Size(_) => result::SIZE,
            Reply::Error(_) => result::ERROR,
            Reply::Info(_) => result::INFO,
            Reply::Success => result::SUCCESS,
            Reply::Exit => result::EXIT,
            Reply::Df(_) => result::DF,
            Reply::Md5sum(_) => result::MD5SUM,
        }
    }

    /// The reply as one record, appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let value = match self {
            Reply::File(s) => stat_fields(s)?,
            Reply::Dir(entries) => {
                let mut v = Vec::new();
                for e in entries {
                    put(&mut v, result::FILE, &stat_fields(e)?)?;
                }
                v
            }
            Reply::Size(s) => size_fields(s)?,
            Reply::Error(e) => {
                let mut v = Vec::new();
                put(&mut v, error::ERRNO, &e.errno.to_be_bytes())?;
                put_zstr(&mut v, error::ERRSTR, e.errstr.as_bytes())?;
                v
            }
            Reply::Info(i) => info_fields(i)?,
            Reply::Success | Reply::Exit => Vec::new(),
            Reply::Df(mounts) => {
                let mut v = Vec::new();
                for m in mounts {
                    mount_fields(&mut v, m)?;
                }
                v
            }
            Reply::Md5sum(hex) => {
                let mut v = Vec::new();
                put_zstr(&mut v, md5::MD5SUM, hex.as_bytes())?;
                v
            }
        };
        put(out, self.type_code(), &value)
    }

    /// The reply as one record.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// An `error` reply.
    pub fn error(errno: i32, errstr: impl Into<String>) -> Reply {
        Reply::Error(ErrorReply {
            errno: u32::try_from(errno).unwrap_or(0),
            errstr: errstr.into(),
        })
    }
}

/// A `dir` reply built one entry at a time, so a listing is held only as its encoded bytes.
#[derive(Debug)]
pub struct DirEncoder {
    buf: Vec<u8>,
    entries: usize,
}

impl Default for DirEncoder {
    fn default() -> Self {
        DirEncoder::new()
    }
}

impl DirEncoder {
    /// An empty listing.
    pub fn new() -> DirEncoder {
        DirEncoder {
            buf: vec![result::DIR, 0, 0, 0, 0],
            entries: 0,
        }
    }

    /// Appends one entry.
    pub fn push(&mut self, s: &Stat) -> Result<(), WireError> {
        let fields = stat_fields(s)?;
        put(&mut self.buf, result::FILE, &fields)?;
        self.entries += 1;
        Ok(())
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The whole record.
    pub fn finish(mut self) -> Result<Vec<u8>, WireError> {
        let len = u32::try_from(self.buf.len() - 5).map_err(|_| {
            WireError(format!(
                "a listing of {} bytes does not fit",
                self.buf.len()
            ))
        })?;
        self.buf[1..5].copy_from_slice(&len.to_be_bytes());
        Ok(self.buf)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// The records of `buf` in order: (type, value). Err if a record is cut short.
pub fn records(mut buf: &[u8]) -> Result<Vec<(u8, &[u8])>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 5 {
            return bad(format!("{} bytes left, a record needs 5", buf.len()));
        }
        let t = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let rest = &buf[5..];
        if rest.len() < len {
            return bad(format!(
                "record type {t} says {len} bytes, {} are left",
                rest.len()
            ));
        }
        out.push((t, &rest[..len]));
        buf = &rest[len..];
    }
    Ok(out)
}

fn zstr(v: &[u8]) -> Vec<u8> {
    v.split(|&b| b == 0).next().unwrap_or_default().to_vec()
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(&zstr(v)).into_owned()
}

fn int32(what: &str, v: &[u8]) -> Result<u32, WireError> {
    match <[u8; 4]>::try_from(v) {
        Ok(b) => Ok(u32::from_be_bytes(b)),
        Err(_) => bad(format!("{what}: an int32 of {} bytes", v.len())),
    }
}

fn int64(what: &str, v: &[u8]) -> Result<u64, WireError> {
    match <[u8; 8]>::try_from(v) {
        Ok(b) => Ok(u64::from_be_bytes(b)),
        Err(_) => bad(format!("{what}: an int64 of {} bytes", v.len())),
    }
}

/// Decodes a `stat` field list.
pub fn decode_stat(value: &[u8]) -> Result<Stat, WireError> {
    let mut s = Stat::default();
    for (t, v) in records(value)? {
        match t {
            stat::NAME => s.name = zstr(v),
            stat::SIZE => s.size = Some(int64("size", v)?),
            stat::MODE => s.mode = Some(int32("mode", v)?),
            stat::ZMODE => s.zmode = Some(text(v)),
            stat::UID => s.uid = Some(int32("uid", v)?),
            stat::ZUID => s.zuid = Some(text(v)),
            stat::GID => s.gid = Some(int32("gid", v)?),
            stat::ZGID => s.zgid = Some(text(v)),
            stat::CTIME => s.ctime = Some(int64("ctime", v)?),
            stat::ZCTIME => s.zctime = Some(text(v)),
            stat::MTIME => s.mtime = Some(int64("mtime", v)?),
            stat::ZMTIME => s.zmtime = Some(text(v)),
            stat::ATIME => s.atime = Some(int64("atime", v)?),
            stat::ZATIME => s.zatime = Some(text(v)),
            stat::SYMLINK => s.symlink = Some(zstr(v)),
            stat::ERRNO => s.errno = Some(int32("errno", v)?),
            stat::ERRSTR => s.errstr = Some(text(v)),
            other => return bad(format!("unknown stat field {other}")),
        }
    }
    Ok(s)
}

fn decode_info(value: &[u8]) -> Result<Info, WireError> {
    let mut i = Info::default();
    for (t, v) in records(value)? {
        match t {
            info::PLATFORM => i.platform = Some(text(v)),
            info::VERSION => i.version = Some(text(v)),
            info::LANG => i.lang = Some(text(v)),
            info::TERRITORY => i.territory = Some(text(v)),
            info::CODESET => i.codeset = Some(text(v)),
            info::LC_CTYPE => i.lc_ctype = Some(text(v)),
            info::LC_NUMERIC => i.lc_numeric = Some(text(v)),
            info::LC_TIME => i.lc_time = Some(text(v)),
            info::LC_ALL => i.lc_all = Some(text(v)),
            info::DEV => i.dev.push(text(v)),
            info::BROWSE_CAPS => i.browse_caps = Some(text(v)),
            // An int64, or digits in a zstr.
            info::PROTOCOL => {
                i.protocol = match int64("protocol", v) {
                    Ok(n) => Some(n),
                    Err(_) => text(v).trim().parse().ok(),
                }
            }
            other => return bad(format!("unknown info field {other}")),
        }
    }
    Ok(i)
}

fn decode_size(value: &[u8]) -> Result<Size, WireError> {
    let mut s = Size::default();
    for (t, v) in records(value)? {
        match t {
            size::SIZE => s.size = int64("size", v)?,
            size::FCOUNT => s.fcount = int32("fcount", v)?,
            size::DCOUNT => s.dcount = int32("dcount", v)?,
            size::FAILED_FCOUNT => s.failed_fcount = int32("failed_fcount", v)?,
            size::FAILED_DCOUNT => s.failed_dcount = int32("failed_dcount", v)?,
            other => return bad(format!("unknown size field {other}")),
        }
    }
    Ok(s)
}

fn decode_error(value: &[u8]) -> Result<ErrorReply, WireError> {
    let (mut errno, mut errstr) = (None, None);
    for (t, v) in records(value)? {
        match t {
            error::ERRNO => errno = Some(int32("errno", v)?),
            error::ERRSTR => errstr = Some(text(v)),
            other => return bad(format!("unknown error field {other}")),
        }
    }
    Ok(ErrorReply {
        errno: errno.unwrap_or(0),
        errstr: errstr.unwrap_or_default(),
    })
}

fn decode_df(value: &[u8]) -> Result<Vec<Mount>, WireError> {
    let mut mounts: Vec<Mount> = Vec::new();
    for (t, v) in records(value)? {
        if t == mnt::FS {
            mounts.push(Mount {
                fs: text(v),
                ..Mount::default()
            });
            continue;
        }
        let Some(m) = mounts.last_mut() else {
            return bad(format!("df field {t} before the first fs field"));
        };
        match t {
            mnt::DIR => m.dir = Some(zstr(v)),
            mnt::IS_A => m.is_a = Some(text(v)),
            mnt::TOTAL => m.total = Some(int64("total", v)?),
            mnt::USED => m.used = Some(int64("used", v)?),
            mnt::FREE => m.free = Some(int64("free", v)?),
            mnt::FCOUNT => m.fcount = Some(int64("fcount", v)?),
            mnt::ERRNO => m.errno = Some(int32("errno", v)?),
            mnt::ERRSTR => m.errstr = Some(text(v)),
            other => return bad(format!("unknown df field {other}")),
        }
    }
    Ok(mounts)
}

/// Decodes one record's value as a reply of type `t`.
pub fn decode_reply(t: u8, value: &[u8]) -> Result<Reply, WireError> {
    Ok(match t {
        result::FILE => Reply::File(decode_stat(value)?),
        result::DIR => Reply::Dir(
            records(value)?
                .into_iter()
                .map(|(_, v)| decode_stat(v))
                .collect::<Result<_, _>>()?,
        ),
        result::SIZE => Reply::Size(decode_size(value)?),
        result::ERROR => Reply::Error(decode_error(value)?),
        result::INFO => Reply::Info(decode_info(value)?),
        result::SUCCESS => Reply::Success,
        result::EXIT => Reply::Exit,
        result::DF => Reply::Df(decode_df(value)?),
        result::MD5SUM => {
            let mut hex = String::new();
            for (t, v) in records(value)? {
                match t {
                    md5::MD5SUM => hex = text(v),
                    other => return bad(format!("unknown md5sum field {other}")),
                }
            }
            Reply::Md5sum(hex)
        }
        other => return bad(format!("unknown result type {other}")),
    })
}

/// Decodes a whole stream of replies (everything a session wrote).
pub fn decode_all(buf: &[u8]) -> Result<Vec<Reply>, WireError> {
    records(buf)?
        .into_iter()
        .map(|(t, v)| decode_reply(t, v))
        .collect()
}

/// Reads one reply from `r`; `None` at a clean end of stream (before a record starts). A
/// record longer than [`MAX_REPLY_BYTES`] or cut short is an error; memory grows with the
/// bytes actually received, not with the length announced.
pub fn read_reply(r: &mut impl Read) -> io::Result<Option<Reply>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the ascmd reply ended inside a record header",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_REPLY_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an ascmd reply of {len} bytes is over the {MAX_REPLY_BYTES}-byte limit"),
        ));
    }
    let mut value = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut value)?;
    if value.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the ascmd reply ended after {} of {len} bytes", value.len()),
        ));
    }
    decode_reply(head[0], &value)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record built by hand: type, big-endian length, value.
    fn rec(t: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![t];
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    fn full_stat() -> Stat {
        Stat {
            name: b"a b".to_vec(),
            size: Some(4096),
            mode: Some(0o40755),
            zmode: Some("drwxr-xr-x".into()),
            uid: Some(1000),
            zuid: Some("alice".into()),
            gid: Some(100),
            zgid: Some("users".into()),
            ctime: Some(1),
            zctime: Some("1970-01-01 00:00:01".into()),
            mtime: Some(2),
            zmtime: Some("1970-01-01 00:00:02".into()),
            atime: Some(3),
            zatime: Some("1970-01-01 00:00:03".into()),
            symlink: Some(b"t".to_vec()),
            errno: Some(2),
            errstr: Some("No such file or directory".into()),
        }
    }

    #[test]
    fn golden_success_and_exit() {
        assert_eq!(Reply::Success.encode().unwrap(), [6, 0, 0, 0, 0]);
        assert_eq!(Reply::Exit.encode().unwrap(), [7, 0, 0, 0, 0]);
    }

    #[test]
    fn golden_error() {
        let want = rec(
            4,
            &cat(&[
                rec(1, &[0, 0, 0, 2]),
                rec(2, b"No such file or directory\0"),
            ]),
        );
        assert_eq!(
            Reply::error(2, "No such file or directory")
                .encode()
                .unwrap(),
            want
        );
    }

    #[test]
    fn golden_file_and_dir() {
        let s = Stat {
            name: b"f".to_vec(),
            size: Some(5),
            mode: Some(0o100644),
            zmode: Some("-rw-r--r--".into()),
            mtime: Some(0x0102_0304),
            ..Stat::default()
        };
        let fields = cat(&[
            rec(1, b"f\0"),
            rec(2, &[0, 0, 0, 0, 0, 0, 0, 5]),
            rec(3, &0o100644u32.to_be_bytes()),
            rec(4, b"-rw-r--r--\0"),
            rec(11, &[0, 0, 0, 0, 1, 2, 3, 4]),
        ]);
        assert_eq!(Reply::File(s.clone()).encode().unwrap(), rec(1, &fields));
        // A listing: one type-1 record per entry inside the type-2 record.
        let want = rec(2, &cat(&[rec(1, &fields), rec(1, &fields)]));
        assert_eq!(
            Reply::Dir(vec![s.clone(), s.clone()]).encode().unwrap(),
            want
        );
        assert_eq!(Reply::Dir(vec![]).encode().unwrap(), [2, 0, 0, 0, 0]);
        let mut d = DirEncoder::new();
        assert!(d.is_empty());
        d.push(&s).unwrap();
        d.push(&s).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.finish().unwrap(), want);
        assert_eq!(DirEncoder::new().finish().unwrap(), [2, 0, 0, 0, 0]);
    }

    #[test]
    fn golden_size() {
        let s = Size {
            size: 0x1_0000_0001,
            fcount: 3,
            dcount: 2,
            failed_fcount: 1,
            failed_dcount: 0,
        };
        let want = rec(
            3,
            &cat(&[
                rec(1, &[0, 0, 0, 1, 0, 0, 0, 1]),
                rec(2, &[0, 0, 0, 3]),
                rec(3, &[0, 0, 0, 2]),
                rec(4, &[0, 0, 0, 1]),
                rec(5, &[0, 0, 0, 0]),
            ]),
        );
        assert_eq!(Reply::Size(s).encode().unwrap(), want);
    }

    #[test]
    fn golden_df_restarts_on_fs() {
        let m = |fs: &str| Mount {
            fs: fs.into(),
            dir: Some(b"/".to_vec()),
            is_a: Some("ext4".into()),
            total: Some(10),
            used: Some(4),
            free: Some(6),
            fcount: Some(7),
            errno: None,
            errstr: None,
        };
        let one = |fs: &[u8]| {
            cat(&[
                rec(1, fs),
                rec(2, b"/\0"),
                rec(3, b"ext4\0"),
                rec(4, &10u64.to_be_bytes()),
                rec(5, &4u64.to_be_bytes()),
                rec(6, &6u64.to_be_bytes()),
                rec(7, &7u64.to_be_bytes()),
            ])
        };
        let want = rec(8, &cat(&[one(b"/dev/a\0"), one(b"/dev/b\0")]));
        let got = Reply::Df(vec![m("/dev/a"), m("/dev/b")]).encode().unwrap();
        assert_eq!(got, want);
        assert_eq!(
            decode_all(&got).unwrap(),
            [Reply::Df(vec![m("/dev/a"), m("/dev/b")])]
        );
        // A field before any fs is not a mount.
        assert!(decode_reply(8, &rec(2, b"/\0")).is_err());
    }

    #[test]
    fn golden_info_and_md5() {
        let i = Info {
            platform: Some("Linux".into()),
            version: Some("1".into()),
            dev: vec!["a".into(), "b".into()],
            protocol: Some(2),
            ..Info::default()
        };
        let want = rec(
            5,
            &cat(&[
                rec(1, b"Linux\0"),
                rec(2, b"1\0"),
                rec(10, b"a\0"),
                rec(10, b"b\0"),
                rec(12, &2u64.to_be_bytes()),
            ]),
        );
        assert_eq!(Reply::Info(i.clone()).encode().unwrap(), want);
        assert_eq!(decode_all(&want).unwrap(), [Reply::Info(i)]);
        // A protocol written as a zstr reads too.
        let z = decode_reply(5, &rec(12, b"2\0")).unwrap();
        assert!(matches!(
            z,
            Reply::Info(Info {
                protocol: Some(2),
                ..
            })
        ));
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        let want = rec(9, &rec(1, format!("{hex}\0").as_bytes()));
        assert_eq!(Reply::Md5sum(hex.into()).encode().unwrap(), want);
    }

    #[test]
    fn round_trips() {
        let all = vec![
            Reply::File(full_stat()),
            Reply::Dir(vec![full_stat(), Stat::default(), full_stat()]),
            Reply::Size(Size {
                size: u64::MAX,
                fcount: u32::MAX,
                dcount: 1,
                failed_fcount: 0,
                failed_dcount: 7,
            }),
            Reply::error(13, "Path violates docroot containment: /x"),
            Reply::Info(Info {
                platform: Some("Linux".into()),
                version: Some("v".into()),
                lang: Some("C".into()),
                territory: Some(String::new()),
                codeset: Some("UTF-8".into()),
                lc_ctype: Some("C".into()),
                lc_numeric: Some("C".into()),
                lc_time: Some("C".into()),
                lc_all: Some(String::new()),
                dev: vec![],
                browse_caps: Some("x".into()),
                protocol: Some(1),
            }),
            Reply::Success,
            Reply::Exit,
            Reply::Df(vec![Mount {
                fs: "tmpfs".into(),
                errno: Some(13),
                errstr: Some("Permission denied".into()),
                ..Mount::default()
            }]),
            Reply::Md5sum("00".into()),
        ];
        let mut stream = Vec::new();
        for r in &all {
            r.encode_into(&mut stream).unwrap();
        }
        assert_eq!(decode_all(&stream).unwrap(), all);
        let mut cursor = &stream[..];
        for r in &all {
            assert_eq!(read_reply(&mut cursor).unwrap().as_ref(), Some(r));
        }
        assert_eq!(read_reply(&mut cursor).unwrap(), None);
    }

    #[test]
    fn a_nul_in_a_string_ends_it() {
        let r = Reply::File(Stat {
            name: b"a\0b".to_vec(),
            ..Stat::default()
        });
        assert_eq!(r.encode().unwrap(), rec(1, &rec(1, b"a\0")));
    }

    #[test]
    fn malformed_input_is_refused_not_a_crash() {
        // Cut short, wrong integer sizes, unknown types.
        assert!(records(&[1, 0, 0]).is_err());
        assert!(records(&[1, 0, 0, 0, 9, 1]).is_err());
        assert!(decode_reply(3, &rec(1, &[0, 1])).is_err());
        assert!(decode_reply(1, &rec(99, b"")).is_err());
        assert!(decode_reply(42, b"").is_err());
        let mut short: &[u8] = &[6, 0, 0];
        assert!(read_reply(&mut short).is_err());
        let mut cut: &[u8] = &[6, 0, 0, 0, 3, 1];
        assert!(read_reply(&mut cut).is_err());
        // A length over the bound is refused before anything is read or allocated.
        let mut huge: &[u8] = &[2, 0xff, 0xff, 0xff, 0xff];
        let e = read_reply(&mut huge).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        // Every prefix of a valid stream is either a shorter valid stream or an error.
        let mut stream = Reply::File(full_stat()).encode().unwrap();
        Reply::Success.encode_into(&mut stream).unwrap();
        for n in 0..stream.len() {
            let _ = decode_all(&stream[..n]);
        }
    }
}
