//! Coalesced positional writes: consecutive pieces (received datagrams' payloads, still in the
//! receive buffers) bound for adjacent file offsets go to the file in one `pwritev`.

use std::io;
use std::os::fd::RawFd;

/// Most pieces in one `pwritev` (Linux's `IOV_MAX`).
const MAX_IOVS: usize = 1024;

/// Pieces waiting to be written at `start..end` of file `fd`.
pub struct RunWriter<'a> {
    fd: RawFd,
    start: u64,
    end: u64,
    pieces: Vec<&'a [u8]>,
}

impl<'a> RunWriter<'a> {
    /// An empty writer.
    pub fn new() -> RunWriter<'a> {
        RunWriter {
            fd: -1,
            start: 0,
            end: 0,
            pieces: Vec::with_capacity(64),
        }
    }

    /// Queues `data` for `offset` of `fd`; what was queued is written first unless `data`
    /// continues it.
    pub fn push(&mut self, fd: RawFd, offset: u64, data: &'a [u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let continues = fd == self.fd && offset == self.end && self.pieces.len() < MAX_IOVS;
        if !continues {
            self.flush()?;
            self.fd = fd;
            self.start = offset;
            self.end = offset;
        }
        self.pieces.push(data);
        self.end += data.len() as u64;
        Ok(())
    }

    /// Writes whatever is queued.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut iovs: Vec<libc::iovec> = self
            .pieces
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        self.pieces.clear();
        let mut at = self.start;
        let mut first = 0;
        while first < iovs.len() {
            let count = (iovs.len() - first) as libc::c_int;
            let Ok(off) = libc::off_t::try_from(at) else {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            };
            // SAFETY: `iovs[first..]` describe live slices borrowed for 'a; fd is the caller's
            // open file.
            let n = unsafe { libc::pwritev(self.fd, iovs[first..].as_ptr(), count, off) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            let mut left = n as usize;
            at += left as u64;
            while left > 0 && first < iovs.len() {
                let iov = &mut iovs[first];
                if left >= iov.iov_len {
                    left -= iov.iov_len;
                    first += 1;
                } else {
                    // SAFETY: advancing within the same slice.
                    iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left) }.cast();
                    iov.iov_len -= left;
                    left = 0;
                }
            }
        }
        self.start = self.end;
        Ok(())
    }
}

impl Default for RunWriter<'_> {
    fn default() -> Self {
        RunWriter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn coalesces_and_splits_runs() {
        let f = tempfile::tempfile().unwrap();
        let fd = f.as_raw_fd();
        let mut w = RunWriter::new();
        w.push(fd, 0, b"abc").unwrap();
        w.push(fd, 3, b"def").unwrap();
        w.push(fd, 10, b"xyz").unwrap();
        w.push(fd, 13, b"").unwrap();
        w.flush().unwrap();
        let mut buf = [0u8; 13];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcdef\0\0\0\0xyz");
    }
}
