//! A client of the forward proxy's API that writes its requests byte for byte, as IBM's ascp 3.9
//! does (and as attackers do), shared by `tests/forward_api.rs` and `tests/forward_proxy.rs`.
#![allow(dead_code)] // each test binary uses its own part

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A request as IBM's client writes it: POST, Basic credentials, a form content type, no
/// User-Agent.
pub fn ibm_request(path: &str, credentials: &str, body: &str) -> Vec<u8> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(credentials);
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:9091\r\nAccept: */*\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers).
    pub head: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response. `None` if the server closed without one.
pub async fn read_reply<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut reply = Reply {
        status,
        head,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    reply.body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some(reply)
}

/// Reads one response: (status, body). `None` if the server closed without one.
pub async fn read_response<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<(u16, String)> {
    read_reply(s).await.map(|r| (r.status, r.body))
}

/// Sends `request` on a new connection to `addr` from the source address `from` (any when
/// `None`) and reads the reply; `None` if the connection failed or closed without one.
pub async fn send_from(from: Option<IpAddr>, addr: SocketAddr, request: &[u8]) -> Option<Reply> {
    let mut s = match from {
        None => TcpStream::connect(addr).await.ok()?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .ok()?;
            socket.bind(SocketAddr::new(ip, 0)).ok()?;
            socket.connect(addr).await.ok()?
        }
    };
    s.write_all(request).await.ok()?;
    read_reply(&mut s).await
}
