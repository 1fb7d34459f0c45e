//! UDP segmentation offload (Linux): `UDP_SEGMENT` lets one `sendmsg` carry many equal-size
//! datagrams (the kernel, or the NIC, cuts them; on the wire they are ordinary datagrams), and
//! `UDP_GRO` lets one `recvmsg` return several datagrams of one flow back to back, with their
//! size in a control message. Both are optional: the caller falls back to one datagram per
//! message when a kernel or path refuses them.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Most datagrams one segmented send may carry (the kernel's `UDP_MAX_SEGMENTS` is 64 on older
/// kernels, 128 on newer ones).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes one segmented send may carry (an IPv4 datagram's 65 535 minus IP and UDP headers,
/// rounded down).
pub const MAX_BYTES: usize = 65_000;
/// Size of a receive buffer that can hold a whole coalesced (GRO) batch.
pub const GRO_BUFFER: usize = 65_536;
/// Bytes reserved per message for control messages: one carrying a `u16`/`c_int` takes at most
/// 32 bytes on every Linux ABI (cmsghdr plus an aligned int); received messages may carry two
/// (`UDP_GRO` and `SO_RXQ_OVFL`).
pub const CMSG_SPACE: usize = 64;

/// A control-message buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgBuf(pub [u8; CMSG_SPACE]);

impl Default for CmsgBuf {
    fn default() -> CmsgBuf {
        CmsgBuf([0; CMSG_SPACE])
    }
}

fn set_int(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt with a valid fd and a pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// True when the kernel accepts `UDP_SEGMENT` on this socket (probed by setting a per-socket
/// default segment size and clearing it again; sends pass their size per message).
pub fn gso_supported(sock: &UdpSocket) -> bool {
    set_int(sock, libc::SOL_UDP, libc::UDP_SEGMENT, 1200)
        && set_int(sock, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`); true if it accepted.
pub fn enable_gro(sock: &UdpSocket) -> bool {
    set_int(sock, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Fills `buf` with one `UDP_SEGMENT` control message for `segment` bytes per datagram and
/// points `hdr` at it.
pub fn attach_segment_size(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, segment: u16) {
    // SAFETY: CMSG_SPACE(2) is a small constant computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    buf.0 = [0; CMSG_SPACE];
    hdr.msg_control = buf.0.as_mut_ptr().cast();
    hdr.msg_controllen = space.min(CMSG_SPACE) as _;
    // SAFETY: msg_control points at CMSG_SPACE bytes, aligned for cmsghdr, which hold one
    // cmsghdr and a u16; CMSG_FIRSTHDR/CMSG_DATA stay inside that buffer.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        if cmsg.is_null() {
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            return;
        }
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
}

/// Asks the kernel to report, with every received message, how many datagrams it has dropped
/// on this socket so far (`SO_RXQ_OVFL`: the receive buffer was full); true if it accepted.
pub fn enable_drop_count(sock: &UdpSocket) -> bool {
    set_int(sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// The socket's cumulative drop count from a received message's control messages
/// (`SO_RXQ_OVFL`), if present.
#[allow(clippy::unnecessary_cast)] // msg_controllen is usize on glibc, u32 on musl
pub fn received_drop_count(hdr: &libc::msghdr) -> Option<u32> {
    if hdr.msg_control.is_null()
        || (hdr.msg_controllen as usize) < std::mem::size_of::<libc::cmsghdr>()
    {
        return None;
    }
    // SAFETY: as in `received_segment_size`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Points `hdr` at `buf` to receive control messages.
pub fn attach_receive_buffer(hdr: &mut libc::msghdr, buf: &mut CmsgBuf) {
    hdr.msg_control = buf.0.as_mut_ptr().cast();
    hdr.msg_controllen = CMSG_SPACE as _;
}

/// The datagram size of a coalesced (GRO) receive, from its control messages; `None` when the
/// message holds a single datagram.
#[allow(clippy::unnecessary_cast)] // msg_controllen is usize on glibc, u32 on musl
pub fn received_segment_size(hdr: &libc::msghdr) -> Option<usize> {
    if hdr.msg_control.is_null()
        || (hdr.msg_controllen as usize) < std::mem::size_of::<libc::cmsghdr>()
    {
        return None;
    }
    // SAFETY: the kernel filled msg_controllen bytes of the buffer msg_control points at with
    // well-formed cmsghdrs; the CMSG_* macros walk within that length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).ok().filter(|&s| s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_send_arrives_as_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        if !gso_supported(&tx) {
            return; // old kernel: nothing to test
        }
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: all-zero msghdr is valid; it points at one live iovec and a live cmsg buffer.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        let mut cm = CmsgBuf::default();
        attach_segment_size(&mut hdr, &mut cm, 1000);
        // SAFETY: as above.
        let n = unsafe { libc::sendmsg(tx.as_raw_fd(), &hdr, 0) };
        assert_eq!(n, 2500);
        let mut buf = [0u8; 4000];
        let sizes: Vec<usize> = (0..3).map(|_| rx.recv(&mut buf).unwrap()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
    }

    #[test]
    fn overflow_drops_are_counted() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        assert!(enable_drop_count(&rx));
        let small = 4096 as libc::c_int;
        // SAFETY: setsockopt with a live c_int.
        unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        for _ in 0..200 {
            let _ = tx.send(&[7u8; 1000]);
        }
        // Each datagram carries the count as it was when it was queued: the later ones see
        // the drops.
        let mut buf = [0u8; 2000];
        let mut drops = 0;
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: all-zero msghdr is valid; it points at a live iovec and control buffer.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            let mut cm = CmsgBuf::default();
            attach_receive_buffer(&mut hdr, &mut cm);
            // SAFETY: as above.
            let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut hdr, libc::MSG_DONTWAIT) };
            if n < 0 {
                break;
            }
            assert_eq!(n, 1000);
            drops = drops.max(received_drop_count(&hdr).unwrap_or(0));
        }
        // One more after the overflow carries the count.
        tx.send(&[7u8; 1000]).unwrap();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        let mut cm = CmsgBuf::default();
        attach_receive_buffer(&mut hdr, &mut cm);
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut hdr, 0) };
        assert_eq!(n, 1000);
        drops = drops.max(received_drop_count(&hdr).unwrap_or(0));
        assert!(drops > 0, "no drops reported");
    }
}
