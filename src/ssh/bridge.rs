//! Copies bytes between an SSH channel and a local socket, one direction per future, so that a
//! slow reader on one side never stalls the other direction. Shared by the client side
//! ([`super::client`]) and the front end ([`super::server`]).

use std::future::Future;

use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Size of one read from the local socket (one or a few SSH packets).
pub(crate) const CHUNK: usize = 16 * 1024;

/// How [`outbound`] stopped.
#[derive(Debug)]
pub(crate) enum Outbound<T> {
    /// The local side shut down its write half (or failed): nothing more to send.
    LocalEof,
    /// The channel can no longer be written to (closed, or the connection is gone).
    ChannelGone,
    /// `stop` resolved (checked between chunks, never in the middle of sending one).
    Stopped(T),
}

/// Delivers the peer's channel data to `local` in order and shuts `local` down on the peer's
/// EOF; every other message (stderr, exit status, ...) goes to `other`. Returns when the channel
/// closes. If the local side stops reading, returns at once when `stop_when_unread`, else keeps
/// discarding further data (so that the connection does not stall) until the channel closes.
pub(crate) async fn inbound(
    mut rx: ChannelReadHalf,
    mut local: OwnedWriteHalf,
    stop_when_unread: bool,
    mut other: impl FnMut(ChannelMsg),
) {
    let mut open = true;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if open && local.write_all(&data).await.is_err() {
                    if stop_when_unread {
                        break;
                    }
                    open = false;
                }
            }
            ChannelMsg::Eof => {
                if open {
                    let _ = local.shutdown().await;
                    open = false;
                }
            }
            ChannelMsg::Close => break,
            msg => other(msg),
        }
    }
    let _ = local.shutdown().await;
}

/// Sends what `local` yields as channel data (in order, honouring the peer's window) until
/// `local` reaches EOF, the channel is gone, or `stop` resolves. Data already readable wins over
/// `stop`; a chunk is never abandoned half sent. Does not send EOF itself.
pub(crate) async fn outbound<S, T>(
    tx: &ChannelWriteHalf<S>,
    local: &mut OwnedReadHalf,
    stop: impl Future<Output = T>,
) -> Outbound<T>
where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    tokio::pin!(stop);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            biased;
            read = local.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Outbound::LocalEof,
                Ok(n) => n,
            },
            value = &mut stop => return Outbound::Stopped(value),
        };
        if tx.data_bytes(buf[..n].to_vec()).await.is_err() {
            return Outbound::ChannelGone;
        }
    }
}
