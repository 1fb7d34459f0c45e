//! A file's attributes as an `ascmd` [`Stat`]: the mode as `ls -l` writes it, owner and group
//! names, times as numbers and as text.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use super::wire::Stat;

/// Most owner and group names remembered in one session.
const NAME_CACHE: usize = 1024;

/// The attributes a [`Stat`] is made of, from `std` metadata or a raw `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// `st_mode`.
    pub mode: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_uid`.
    pub uid: u32,
    /// `st_gid`.
    pub gid: u32,
    /// `st_atime` (seconds; before 1970 is 0).
    pub atime: u64,
    /// `st_mtime`.
    pub mtime: u64,
    /// `st_ctime`.
    pub ctime: u64,
}

fn secs(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

impl Attrs {
    /// From `std::fs::Metadata`.
    pub fn of_metadata(m: &Metadata) -> Attrs {
        Attrs {
            mode: m.mode(),
            size: m.size(),
            uid: m.uid(),
            gid: m.gid(),
            atime: secs(m.atime()),
            mtime: secs(m.mtime()),
            ctime: secs(m.ctime()),
        }
    }

    /// From a raw `stat` (`fstatat`).
    pub fn of_stat(s: &libc::stat) -> Attrs {
        Attrs {
            mode: s.st_mode,
            size: u64::try_from(s.st_size).unwrap_or(0),
            uid: s.st_uid,
            gid: s.st_gid,
            atime: secs(s.st_atime),
            mtime: secs(s.st_mtime),
            ctime: secs(s.st_ctime),
        }
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// The mode as `ls -l` writes it: `drwxr-xr-x`, `-rwsr-x--T`, `lrwxrwxrwx`.
pub fn zmode(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |x: bool, s: bool, set: char| match (x, s) {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(mode & 0o100 != 0, mode & 0o4000 != 0, 's'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(mode & 0o010 != 0, mode & 0o2000 != 0, 's'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(mode & 0o001 != 0, mode & 0o1000 != 0, 't'));
    s
}

/// Seconds since 1970 as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn time_text(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Owner and group names by id, looked up once each (at most [`NAME_CACHE`] kept).
#[derive(Debug, Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// The user's name, or the number when there is none.
    pub fn user(&mut self, uid: u32) -> String {
        if let Some(n) = self.users.get(&uid) {
            return n.clone();
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        if self.users.len() < NAME_CACHE {
            self.users.insert(uid, name.clone());
        }
        name
    }

    /// The group's name, or the number when there is none.
    pub fn group(&mut self, gid: u32) -> String {
        if let Some(n) = self.groups.get(&gid) {
            return n.clone();
        }
        let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name);
        if self.groups.len() < NAME_CACHE {
            self.groups.insert(gid, name.clone());
        }
        name
    }

    /// The full [`Stat`] of an entry named `name`; `symlink` is a link's target.
    pub fn stat(&mut self, name: Vec<u8>, a: &Attrs, symlink: Option<Vec<u8>>) -> Stat {
        Stat {
            name,
            size: Some(a.size),
            mode: Some(a.mode),
            zmode: Some(zmode(a.mode)),
            uid: Some(a.uid),
            zuid: Some(self.user(a.uid)),
            gid: Some(a.gid),
            zgid: Some(self.group(a.gid)),
            ctime: Some(a.ctime),
            zctime: Some(time_text(a.ctime)),
            mtime: Some(a.mtime),
            zmtime: Some(time_text(a.mtime)),
            atime: Some(a.atime),
            zatime: Some(time_text(a.atime)),
            symlink,
            errno: None,
            errstr: None,
        }
    }
}

/// The stat of an entry that could not be examined: its name and why.
pub fn failed(name: Vec<u8>, errno: i32) -> Stat {
    Stat {
        name,
        errno: u32::try_from(errno).ok(),
        errstr: Some(nix::errno::Errno::from_raw(errno).desc().to_string()),
        ..Stat::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_ls_writes_them() {
        assert_eq!(zmode(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(zmode(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(zmode(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(zmode(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(zmode(libc::S_IFREG | 0o4644), "-rwSr--r--");
        assert_eq!(zmode(libc::S_IFDIR | 0o2775), "drwxrwsr-x");
        assert_eq!(zmode(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(zmode(libc::S_IFDIR | 0o1770), "drwxrwx--T");
        assert_eq!(zmode(libc::S_IFIFO | 0o600), "prw-------");
        assert_eq!(zmode(libc::S_IFSOCK | 0o600), "srw-------");
        assert_eq!(zmode(libc::S_IFCHR | 0o666), "crw-rw-rw-");
        assert_eq!(zmode(libc::S_IFBLK), "b---------");
    }

    #[test]
    fn times_in_utc() {
        assert_eq!(time_text(0), "1970-01-01 00:00:00");
        assert_eq!(time_text(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(time_text(1_743_413_253), "2025-03-31 09:27:33");
        assert_eq!(time_text(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn names_of_ids() {
        let mut n = Names::default();
        assert_eq!(n.user(0), "root");
        assert_eq!(n.group(0), "root");
        // An id without an entry is shown as its number.
        assert_eq!(n.user(4_000_000_000), "4000000000");
        let e = failed(b"x".to_vec(), libc::ENOENT);
        assert_eq!(e.errstr.as_deref(), Some("No such file or directory"));
        assert_eq!(e.errno, Some(2));
    }
}
