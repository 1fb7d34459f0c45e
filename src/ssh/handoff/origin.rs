//! Where a handed-off session came from, found by the daemon itself in `/proc`, never taken
//! from the shell: the process that connected to the hand-off socket (its PID from the
//! socket's peer credentials), up its parents to the OpenSSH `sshd` process that serves the
//! user's connection, and that process's one established TCP socket, whose two ends are the
//! client's address and the proxy address the client connected to.
//!
//! What this trusts: the kernel (peer credentials, `/proc`) and the sshd binary. A user with a
//! real shell could connect from a program of their own, but its ancestor holding a TCP socket
//! must still be an `sshd` executable owned by root, so the addresses found are those of a real
//! SSH connection of theirs.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many parents up from the connecting process an sshd is looked for (aspshell's parent is
/// sshd's session process; one more level allows a wrapper).
const MAX_ANCESTORS: usize = 3;

/// The file names an OpenSSH server process runs as (`sshd-session` since OpenSSH 9.8).
const SSHD_NAMES: &[&str] = &["sshd", "sshd-session"];

/// `CAP_SYS_PTRACE`'s bit in the capability sets: reading another user's (or a non-dumpable
/// process's, as sshd makes itself) `/proc/PID/fd` and `exe` links needs it.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether this process can read sshd's open files in `/proc` (it has `CAP_SYS_PTRACE` in its
/// effective set). Without it every hand-off would be refused: the daemon checks at start.
pub fn can_read_sshd() -> Result<(), String> {
    let status =
        fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("/proc/self/status has no CapEff line")?;
    if effective & (1 << CAP_SYS_PTRACE) != 0 {
        Ok(())
    } else {
        Err(
            "the OpenSSH mode reads the client's connection from sshd's open files in /proc, \
             which needs CAP_SYS_PTRACE, and this process lacks it; under systemd install the \
             drop-in systemd/fasp-proxy-openssh.conf as \
             /etc/systemd/system/fasp-proxy.service.d/openssh.conf and run \
             systemctl daemon-reload"
                .to_string(),
        )
    }
}

/// The SSH connection a handed-off session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client's address.
    pub client: SocketAddr,
    /// The proxy address the client connected to.
    pub local: SocketAddr,
    /// The sshd process serving the connection.
    pub sshd_pid: u32,
}

/// Finds the SSH connection of process `pid`, which must belong to `uid`; `proc_root` is
/// `/proc` (a parameter for tests). Blocking: reads `/proc`.
pub fn find(proc_root: &Path, pid: u32, uid: u32) -> Result<Origin, String> {
    let status = read_status(proc_root, pid)?;
    if status.uid != uid {
        return Err(format!(
            "process {pid} runs as uid {} but connected as uid {uid}",
            status.uid
        ));
    }
    let mut current = status.ppid;
    for _ in 0..MAX_ANCESTORS {
        if current <= 1 {
            break;
        }
        if is_sshd(proc_root, current) {
            let sockets = tcp_connections(proc_root, current)?;
            return match sockets.as_slice() {
                [(local, client)] => Ok(Origin {
                    client: *client,
                    local: *local,
                    sshd_pid: current,
                }),
                [] => Err(format!(
                    "sshd process {current} holds no established TCP connection"
                )),
                _ => Err(format!(
                    "sshd process {current} holds {} TCP connections, expected one",
                    sockets.len()
                )),
            };
        }
        current = read_status(proc_root, current)?.ppid;
    }
    Err(format!(
        "process {pid} was not started by an OpenSSH sshd (none among its {MAX_ANCESTORS} nearest parents)"
    ))
}

/// The fields of `/proc/PID/status` needed here.
struct Status {
    ppid: u32,
    uid: u32,
}

fn read_status(proc_root: &Path, pid: u32) -> Result<Status, String> {
    let path = proc_root.join(pid.to_string()).join("status");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("{}: no {name} line", path.display()))
    };
    Ok(Status {
        ppid: field("PPid:")?,
        // The real uid (first of four).
        uid: field("Uid:")?,
    })
}

/// Whether process `pid` runs an sshd executable owned by root and writable by nobody else.
fn is_sshd(proc_root: &Path, pid: u32) -> bool {
    let Ok(exe) = fs::read_link(proc_root.join(pid.to_string()).join("exe")) else {
        return false;
    };
    let named = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| SSHD_NAMES.contains(&n));
    named && root_owned(&exe)
}

fn root_owned(exe: &PathBuf) -> bool {
    fs::metadata(exe).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// The established TCP connections (local, remote) among process `pid`'s open files, looked
/// up in the tables of the process's own network namespace.
fn tcp_connections(proc_root: &Path, pid: u32) -> Result<Vec<(SocketAddr, SocketAddr)>, String> {
    let dir = proc_root.join(pid.to_string());
    let fd_dir = dir.join("fd");
    let entries = fs::read_dir(&fd_dir).map_err(|e| format!("{}: {e}", fd_dir.display()))?;
    let mut inodes = Vec::new();
    for entry in entries.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                inodes.push(inode);
            }
        }
    }
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = dir.join("net").join(table);
        // A kernel without IPv6 has no tcp6 table.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(row) = parse_tcp_line(line) {
                if row.established && inodes.contains(&row.inode) {
                    found.push((row.local, row.remote));
                }
            }
        }
    }
    Ok(found)
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One row of `/proc/net/tcp` or `tcp6`.
#[derive(Debug, PartialEq, Eq)]
struct TcpRow {
    local: SocketAddr,
    remote: SocketAddr,
    established: bool,
    inode: u64,
}

/// Parses `  0: 0100007F:08AE 0100007F:C1B2 01 00000000:00000000 00:00000000 00000000 0 0 4711 …`
/// (addresses as the kernel prints them: 32-bit words in host byte order, port in hex).
fn parse_tcp_line(line: &str) -> Option<TcpRow> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 {
        return None;
    }
    Some(TcpRow {
        local: parse_endpoint(fields[1])?,
        remote: parse_endpoint(fields[2])?,
        // TCP_ESTABLISHED
        established: fields[3] == "01",
        inode: fields[9].parse().ok()?,
    })
}

fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address (network byte order in memory) as a
    // native-endian number: the number's native bytes are the address bytes.
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn parses_ipv4_and_ipv6_rows() {
        let v4 = "   0: 0100007F:08AE 0200007F:C1B2 01 00000000:00000000 00:00000000 00000000     0        0 4711 1 0000000000000000 20 4 30 10 -1";
        let row = parse_tcp_line(v4).unwrap();
        assert_eq!(row.local, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(row.remote, "127.0.0.2:49586".parse().unwrap());
        assert!(row.established);
        assert_eq!(row.inode, 4711);
        // 2001:db8::1 port 22, and an IPv4-mapped peer 192.0.2.7.
        let v6 = "   1: B80D0120000000000000000001000000:0016 0000000000000000FFFF0000070200C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 99 1";
        let row = parse_tcp_line(v6).unwrap();
        assert_eq!(row.local, "[2001:db8::1]:22".parse().unwrap());
        assert_eq!(row.remote, "192.0.2.7:54321".parse().unwrap());
        assert!(parse_tcp_line("  sl  local_address rem_address   st").is_none());
        assert!(parse_tcp_line("0: zz:zz 1:1 01 0 0 0 0 0 1").is_none());
    }

    #[test]
    fn finds_a_real_connection_of_this_process() {
        // This process stands in for sshd's: its established socket is found by inode in its
        // own /proc entry (the ancestry and executable checks are the lab test's).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let pid = std::process::id();
        let found = tcp_connections(Path::new("/proc"), pid).unwrap();
        let ours = (server.local_addr().unwrap(), server.peer_addr().unwrap());
        assert!(found.contains(&ours), "{found:?} lacks {ours:?}");
        let theirs = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert!(found.contains(&theirs));
    }

    #[test]
    fn refuses_a_process_not_started_by_sshd() {
        let pid = std::process::id();
        let uid = nix::unistd::getuid().as_raw();
        let e = find(Path::new("/proc"), pid, uid).unwrap_err();
        assert!(e.contains("not started by an OpenSSH sshd"), "{e}");
        let e = find(Path::new("/proc"), pid, uid + 1).unwrap_err();
        assert!(e.contains("connected as uid"), "{e}");
    }
}
