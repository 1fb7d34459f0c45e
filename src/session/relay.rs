//! The control channel once the handshake is done: bytes copied both ways between the client
//! and the internal server, each copy noting activity for the idle timeout.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each direction's copy buffer.
const CHUNK: usize = 16 * 1024;

/// Bytes already read past the handshake's frames (a frame reader reads ahead), to be passed on
/// before anything else read from the same side.
#[derive(Debug, Default)]
pub struct Pending {
    /// Read from the client after its request.
    pub to_server: Vec<u8>,
    /// Read from the server after its answer.
    pub to_client: Vec<u8>,
}

/// Copies both ways until the server side ends; a side's EOF is passed on as EOF.
///
/// `pending` bytes go first, each to its side. `activity` is called for every chunk copied.
///
/// The session ends when the server side ends: nothing the client still sends can matter, and
/// the client gets the exit status at once instead of waiting to close its side first. The
/// client's EOF alone only ends the upstream direction. Each direction is its own loop, run
/// together: a write that waits (the peer's window is full) never stops the other direction
/// from being read, so the two ends cannot block each other through us.
pub async fn relay<CR, CW, SR, SW>(
    client_read: &mut CR,
    client_write: &mut CW,
    server_read: &mut SR,
    server_write: &mut SW,
    pending: Pending,
    activity: impl Fn(),
) -> Result<(), String>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let upstream = async {
        server_write
            .write_all(&pending.to_server)
            .await
            .map_err(|e| format!("writing to the internal server: {e}"))?;
        copy(client_read, server_write, &activity)
            .await
            .map_err(|e| format!("writing to the internal server: {e}"))
    };
    let downstream = async {
        client_write
            .write_all(&pending.to_client)
            .await
            .map_err(|e| format!("writing to the client: {e}"))?;
        copy(server_read, client_write, &activity)
            .await
            .map_err(|e| format!("writing to the client: {e}"))
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        r = &mut downstream => r,
        r = &mut upstream => match r {
            Ok(()) => downstream.await,
            Err(e) => Err(e),
        },
    }
}

/// Copies `from` to `to` until `from` ends (or fails to read), then shuts `to` down. Only a
/// failed write is an error.
async fn copy<R, W>(from: &mut R, to: &mut W, activity: &impl Fn()) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(n) => {
                activity();
                to.write_all(&buf[..n]).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn bytes_cross_both_ways_in_order_and_the_servers_end_ends_it() {
        let (mut client, proxy_client) = tokio::io::duplex(64);
        let (proxy_server, mut server) = tokio::io::duplex(64);
        let (mut cr, mut cw) = tokio::io::split(proxy_client);
        let (mut sr, mut sw) = tokio::io::split(proxy_server);
        let seen = AtomicUsize::new(0);
        let pending = Pending {
            to_server: b"early".to_vec(),
            to_client: b"first:".to_vec(),
        };
        let relay = relay(&mut cr, &mut cw, &mut sr, &mut sw, pending, || {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let peers = async {
            client.write_all(b"-up").await.unwrap();
            let mut got = [0u8; 8];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"early-up");
            server.write_all(b"down").await.unwrap();
            let mut got = [0u8; 10];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"first:down");
            drop(server);
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "the server's end is passed on as EOF");
        };
        let (result, ()) = tokio::join!(relay, peers);
        assert_eq!(result, Ok(()));
        assert!(seen.load(Ordering::Relaxed) >= 2);
    }
}
