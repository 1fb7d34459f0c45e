//! The daemon's control socket, for `fasp-proxy sessions` and `fasp-proxy reload`: an abstract
//! Unix socket (private to the daemon's network namespace, no file), one request per
//! connection. The client sends one line, the daemon answers text and closes:
//!
//! - `list`: the live sessions and, when the forward proxy runs, its live forwardings;
//! - `close ID`: ends session `ID` (a UUID) or forwarding `ID` (a number) at once;
//! - `reload`: re-reads the configuration, answering what changed or every error.
//!
//! An answer starting with `error:` is a refusal or a failure. Every request is checked against
//! the peer's credentials (`SO_PEERCRED`): root and members of `<admin_group>` (read from the
//! configuration in force at each request) may list and act; anyone else is refused and nothing
//! happens ([`access`]). A client is bounded: one line of at most [`MAX_REQUEST`] bytes within
//! [`REQUEST_TIMEOUT`], at most [`MAX_PER_UID`] connections of one uid at once; each connection
//! is served on its own task, so a silent or flooding client holds up no one else.

pub mod access;
pub mod client;
pub mod table;

use std::collections::HashMap;
use std::os::linux::net::SocketAddrExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use uuid::Uuid;

pub use self::client::{request, Answer};
pub use self::table::{forwardings_text, table};
use crate::daemon::reload::{ReloadRequest, ReloadSender};
use crate::forward::service::ForwardService;
use crate::session::registry::CloseReason;
use crate::session::Shared;

/// The abstract socket name.
pub const SOCKET_NAME: &str = "fasp-proxy-control";
/// Longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 512;
/// How long a client has to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon tries to write its answer to a client that does not read.
pub const ANSWER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the rest of a refused request is read and dropped before the connection closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections of one uid served at once; more are answered "busy" at once.
pub const MAX_PER_UID: usize = 4;
/// Connections served at once, all uids together.
pub const MAX_CONNECTIONS: usize = 64;
/// How long `close` waits for the session to have ended (its entry and flows removed) before
/// answering; longer than a session's own bounded end.
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// How long `reload` waits for the daemon's answer.
pub const RELOAD_WAIT: Duration = Duration::from_secs(60);
/// How an answer that is a refusal or a failure starts.
pub const ERROR_PREFIX: &str = "error:";

/// Binds the control socket; fails when another daemon holds it in this network namespace.
pub fn bind() -> Result<tokio::net::UnixListener, String> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(SOCKET_NAME.as_bytes())
        .map_err(|e| format!("control socket: {e}"))?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        format!("control socket @{SOCKET_NAME}: {e} (is another fasp-proxy running?)")
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    tokio::net::UnixListener::from_std(std_listener).map_err(|e| format!("control socket: {e}"))
}

/// One request of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `list`.
    List,
    /// `close ID`.
    Close(Target),
    /// `reload`.
    Reload,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::List => f.write_str("list"),
            Request::Close(Target::Session(id)) => write!(f, "close {id}"),
            Request::Close(Target::Forwarding(id)) => write!(f, "close {id}"),
            Request::Reload => f.write_str("reload"),
        }
    }
}

/// What `close` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A reverse-proxy session, by its UUID.
    Session(Uuid),
    /// A forward-proxy forwarding, by its number.
    Forwarding(u64),
}

/// Reads a request line (without its newline; surrounding blanks and a `\r` ignored).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let mut words = line.split_whitespace();
    let request = match (words.next(), words.next(), words.next()) {
        (Some("list"), None, _) => Request::List,
        (Some("reload"), None, _) => Request::Reload,
        (Some("close"), Some(id), None) => Request::Close(parse_target(id)?),
        (Some("close"), _, _) => return Err("usage: close ID".into()),
        _ => {
            let shown: String = line
                .chars()
                .take(40)
                .flat_map(char::escape_default)
                .collect();
            return Err(format!(
                "unknown request {shown:?}: the requests are list, close ID, reload"
            ));
        }
    };
    Ok(request)
}

fn parse_target(id: &str) -> Result<Target, String> {
    if let Ok(uuid) = Uuid::parse_str(id) {
        return Ok(Target::Session(uuid));
    }
    id.parse::<u64>().map(Target::Forwarding).map_err(|_| {
        let shown: String = id.chars().take(40).flat_map(char::escape_default).collect();
        format!("{shown}: neither a session UUID nor a forwarding number (see fasp-proxy sessions)")
    })
}

/// What every connection's task shares.
struct Context {
    shared: Arc<Shared>,
    forward: Option<Arc<ForwardService>>,
    reload: Option<ReloadSender>,
    /// Connections being served, by uid.
    serving: Mutex<HashMap<u32, usize>>,
}

/// A connection's place among [`Context::serving`], given back when it ends.
struct Slot {
    context: Arc<Context>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut serving = self.context.lock_serving();
        if let Some(n) = serving.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                serving.remove(&self.uid);
            }
        }
    }
}

impl Context {
    fn lock_serving(&self) -> std::sync::MutexGuard<'_, HashMap<u32, usize>> {
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection of `uid`, or why there is none.
    fn slot(self: &Arc<Context>, uid: u32) -> Result<Slot, String> {
        let mut serving = self.lock_serving();
        let total: usize = serving.values().sum();
        let mine = serving.get(&uid).copied().unwrap_or(0);
        if mine >= MAX_PER_UID {
            return Err(format!(
                "busy: uid {uid} has {mine} control requests in progress; try again"
            ));
        }
        if total >= MAX_CONNECTIONS {
            return Err("busy: too many control requests in progress; try again".into());
        }
        *serving.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            context: Arc::clone(self),
            uid,
        })
    }
}

/// Answers requests on `listener` until `shutdown`: the sessions of `shared`, the forwardings
/// of `forward` (if the forward proxy runs), and reloads through `reload` (if the daemon can).
pub async fn serve_shared(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    forward: Option<Arc<ForwardService>>,
    reload: Option<ReloadSender>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let context = Arc::new(Context {
        shared,
        forward,
        reload,
        serving: Mutex::new(HashMap::new()),
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(cred) = stream.peer_cred() else { continue };
                match context.slot(cred.uid()) {
                    Ok(slot) => {
                        tokio::spawn(serve_one(stream, Arc::clone(&context), cred.uid(), slot));
                    }
                    // Answered without waiting: the socket's buffer is empty.
                    Err(busy) => {
                        let _ = stream.try_write(format!("{ERROR_PREFIX} {busy}\n").as_bytes());
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Serves one connection: its request, checked against `uid`, and the answer.
async fn serve_one(mut stream: UnixStream, context: Arc<Context>, uid: u32, _slot: Slot) {
    let (answer, unread) = match read_request(&mut stream).await {
        Ok(line) => (answer(&context, uid, &line).await, false),
        Err(e) => (format!("{ERROR_PREFIX} {e}\n"), true),
    };
    let _ = tokio::time::timeout(ANSWER_WRITE_TIMEOUT, async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
    if unread {
        // Closed with unread data, a Unix socket resets the peer, whose answer is lost: what
        // else it sent is read and dropped first, for a bounded time.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Reads one request line: up to its newline (or the client's end of writing), at most
/// [`MAX_REQUEST`] bytes, within [`REQUEST_TIMEOUT`].
async fn read_request(stream: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::with_capacity(64);
    let read = async {
        let mut chunk = [0u8; 256];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading the request: {e}"))?;
            let got = &chunk[..n];
            let end = got.iter().position(|&b| b == b'\n');
            line.extend_from_slice(&got[..end.unwrap_or(n)]);
            if line.len() > MAX_REQUEST {
                return Err(format!("request longer than {MAX_REQUEST} bytes"));
            }
            if n == 0 || end.is_some() {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| format!("no request line within {} s", REQUEST_TIMEOUT.as_secs()))??;
    String::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())
}

/// The answer to `line` from `uid`: refused unless root or in `<admin_group>` as configured now.
async fn answer(context: &Context, uid: u32, line: &str) -> String {
    let request = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return format!("{ERROR_PREFIX} {e}\n"),
    };
    let admin_group = context.shared.config().server.admin_group.clone();
    let decided =
        tokio::task::spawn_blocking(move || access::authorize(uid, admin_group.as_deref())).await;
    let peer = match decided {
        Ok(Ok(peer)) => peer,
        Ok(Err(denied)) => {
            warn!("control socket: {request}: {denied}");
            return format!("{ERROR_PREFIX} {denied}\n");
        }
        Err(e) => return format!("{ERROR_PREFIX} checking uid {uid}: {e}\n"),
    };
    match request {
        Request::List => list(context).await,
        Request::Close(target) => close(context, target, &peer).await,
        Request::Reload => reload(context, &peer).await,
    }
}

/// `list`: both tables, with the kernel counters read now.
async fn list(context: &Context) -> String {
    refresh_counters(&context.shared).await;
    let mut answer = table(&context.shared.registry);
    if let Some(forward) = &context.forward {
        let mut rows = Vec::new();
        for info in forward.list() {
            let counters = forward.counters(info.entry.clone()).await;
            rows.push((info, counters));
        }
        answer.push_str(&forwardings_text(&rows));
    }
    answer
}

/// Reads the kernel counters of every live session now, so the table is current.
async fn refresh_counters(shared: &Shared) {
    for s in shared.registry.snapshot() {
        let Some(entry) = s.entry else { continue };
        if let Some(Ok(Some((packets, bytes)))) =
            shared.dataplane(move |f| f.counters(&entry)).await
        {
            shared.registry.set_counters(s.id, packets, bytes);
        }
    }
}

/// `close ID`: the session is asked to end (its own end removes its kernel entry and flows and
/// tells its client why) and waited for; a forwarding is removed here.
async fn close(context: &Context, target: Target, peer: &access::Peer) -> String {
    match target {
        Target::Session(id) => {
            let registry = &context.shared.registry;
            if !registry.close(id, CloseReason::Administrator) {
                return format!("{ERROR_PREFIX} no live session {id}\n");
            }
            info!("[{id}] closed by the administrator ({})", peer.for_log());
            let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
            while registry.contains(id) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if registry.contains(id) {
                format!(
                    "session {id} was asked to end; it is still ending after {} s\n",
                    CLOSE_WAIT.as_secs()
                )
            } else {
                format!("session {id} closed: its kernel entry and flows are removed\n")
            }
        }
        Target::Forwarding(id) => {
            let Some(forward) = &context.forward else {
                return format!(
                    "{ERROR_PREFIX} no live forwarding {id} (the forward proxy is not enabled)\n"
                );
            };
            if forward.close_by_administrator(id, &peer.for_log()).await {
                format!("forwarding {id} closed: its kernel entries and flows are removed\n")
            } else {
                format!("{ERROR_PREFIX} no live forwarding {id}\n")
            }
        }
    }
}

/// `reload`: handed to the daemon's reload loop; its answer is passed on.
async fn reload(context: &Context, peer: &access::Peer) -> String {
    let Some(sender) = &context.reload else {
        return format!("{ERROR_PREFIX} this daemon cannot reload its configuration\n");
    };
    let (reply, replied) = tokio::sync::oneshot::channel();
    let asked = ReloadRequest {
        requested_by: peer.described(),
        reply: Some(reply),
    };
    if sender.send(asked).await.is_err() {
        return format!("{ERROR_PREFIX} the daemon is shutting down\n");
    }
    match tokio::time::timeout(RELOAD_WAIT, replied).await {
        Ok(Ok(Ok(changed))) => with_newline(changed),
        Ok(Ok(Err(errors))) => format!(
            "{ERROR_PREFIX} the configuration was not reloaded; the daemon keeps the one in \
             force:\n{}",
            with_newline(errors)
        ),
        Ok(Err(_)) => format!("{ERROR_PREFIX} the reload was dropped without an answer\n"),
        Err(_) => format!(
            "{ERROR_PREFIX} no answer to the reload within {} s\n",
            RELOAD_WAIT.as_secs()
        ),
    }
}

fn with_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::memory::MemoryForwarder;
    use crate::session::registry::SessionInfo;
    use std::time::SystemTime;

    #[test]
    fn requests_are_one_verb_and_at_most_one_id() {
        let id = Uuid::new_v4();
        assert_eq!(parse_request("list"), Ok(Request::List));
        assert_eq!(parse_request(" reload \r"), Ok(Request::Reload));
        assert_eq!(
            parse_request(&format!("close {id}")),
            Ok(Request::Close(Target::Session(id)))
        );
        assert_eq!(
            parse_request("close 17"),
            Ok(Request::Close(Target::Forwarding(17)))
        );
        assert_eq!(parse_request("close"), Err("usage: close ID".into()));
        assert_eq!(parse_request("close 1 2"), Err("usage: close ID".into()));
        assert!(parse_request("close x1")
            .unwrap_err()
            .contains("neither a session UUID nor a forwarding number"));
        for bad in ["", "list all", "LIST", "rm -rf /", "close\u{0} 1"] {
            let e = parse_request(bad).unwrap_err();
            assert!(
                e.contains("the requests are list, close ID, reload") || e.contains("close ID"),
                "{bad:?}: {e}"
            );
        }
    }

    fn shared() -> Arc<Shared> {
        let text = "<CONF><server><rproxy><enabled>true</enabled><rules><rule>\
                    <host>198.51.100.10</host><keyfile>/k</keyfile></rule></rules></rproxy>\
                    </server></CONF>";
        let config = crate::config::parse_str(text, std::path::Path::new("t"))
            .unwrap()
            .config;
        Arc::new(Shared::new(
            Arc::new(config),
            Box::new(MemoryForwarder::new()),
            "/nonexistent/known_hosts".into(),
            Arc::default(),
        ))
    }

    fn session(user: &str) -> SessionInfo {
        SessionInfo {
            id: Uuid::new_v4(),
            user: user.into(),
            client: "192.0.2.7:50144".parse().unwrap(),
            rule: "rule 1".into(),
            backend: None,
            entry: None,
            started: SystemTime::now(),
            last_activity: tokio::time::Instant::now(),
            forwarded: None,
            opaque: false,
        }
    }

    /// A control socket on a path of `dir` (not the abstract name, which a daemon of this
    /// machine may hold), served by [`serve_shared`].
    struct Served {
        path: std::path::PathBuf,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Served {
        fn start(
            dir: &std::path::Path,
            shared: &Arc<Shared>,
            reload: Option<ReloadSender>,
        ) -> Served {
            let path = dir.join("control");
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(serve_shared(
                listener,
                Arc::clone(shared),
                None,
                reload,
                stopped,
            ));
            Served { path, stop, task }
        }

        /// One request through the real client, on a blocking thread.
        async fn ask(&self, line: &str) -> Answer {
            let (path, line) = (self.path.clone(), line.to_string());
            tokio::task::spawn_blocking(move || {
                client::exchange(
                    std::os::unix::net::UnixStream::connect(path).unwrap(),
                    &line,
                )
            })
            .await
            .unwrap()
            .unwrap()
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            self.task.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_ends_the_session_and_answers_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared();
        let info = session("alice");
        let id = info.id;
        let mut signal = shared.registry.add_within(info, 10).unwrap();
        // The session's task: ends when asked, after a little work.
        let ended = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let reason = signal.requested().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                shared.registry.remove(id);
                reason
            })
        };
        let served = Served::start(dir.path(), &shared, None);
        let listed = served.ask("list").await;
        assert!(
            !listed.is_error() && listed.text.contains(&id.to_string()),
            "{listed:?}"
        );
        let closed = served.ask(&format!("close {id}")).await;
        assert_eq!(
            closed.text,
            format!("session {id} closed: its kernel entry and flows are removed\n")
        );
        assert!(!shared.registry.contains(id), "answered before the end");
        assert_eq!(ended.await.unwrap(), CloseReason::Administrator);
        let unknown = served.ask(&format!("close {id}")).await;
        assert!(unknown.is_error(), "{unknown:?}");
        assert_eq!(unknown.text, format!("error: no live session {id}\n"));
        let forwarding = served.ask("close 3").await;
        assert_eq!(
            forwarding.text,
            "error: no live forwarding 3 (the forward proxy is not enabled)\n"
        );
        let reload = served.ask("reload").await;
        assert_eq!(
            reload.text,
            "error: this daemon cannot reload its configuration\n"
        );
        let bad = served.ask("shutdown").await;
        assert!(
            bad.is_error() && bad.text.contains("unknown request"),
            "{bad:?}"
        );
        served.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_passes_the_daemon_s_answer_on_and_says_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared();
        let (sender, mut requests) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
        let daemon = tokio::spawn(async move {
            let mut asked_by = Vec::new();
            let answers = [
                Ok("reloaded: rule 1 changed".to_string()),
                Err("t:3: <rule> has no <host>\nt:9: <max_sessions> 0 is out of range".to_string()),
            ];
            for answer in answers {
                let request = requests.recv().await.unwrap();
                asked_by.push(request.requested_by.clone());
                let _ = request.reply.unwrap().send(answer);
            }
            asked_by
        });
        let served = Served::start(dir.path(), &shared, Some(sender));
        let ok = served.ask("reload").await;
        assert_eq!(ok.text, "reloaded: rule 1 changed\n");
        assert!(!ok.is_error());
        let failed = served.ask("reload").await;
        assert!(failed.is_error(), "{failed:?}");
        assert!(
            failed
                .text
                .ends_with("\nt:3: <rule> has no <host>\nt:9: <max_sessions> 0 is out of range\n"),
            "every error: {failed:?}"
        );
        assert_eq!(daemon.await.unwrap(), ["uid 0 (root)", "uid 0 (root)"]);
        served.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_endless_and_huge_clients_hold_up_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared();
        let served = Served::start(dir.path(), &shared, None);
        // Silent: connects and sends nothing.
        let mut silent = UnixStream::connect(&served.path).await.unwrap();
        // No newline: a request that never ends.
        let mut endless = UnixStream::connect(&served.path).await.unwrap();
        endless.write_all(b"list and then some").await.unwrap();
        // Huge: a 1 MB line, written while it can be.
        let huge_path = served.path.clone();
        let huge = tokio::spawn(async move {
            let mut s = UnixStream::connect(huge_path).await.unwrap();
            let _ = s.write_all(&vec![b'x'; 1 << 20]).await;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            answer
        });
        let started = std::time::Instant::now();
        let listed = served.ask("list").await;
        assert!(listed.text.ends_with("0 live sessions\n"), "{listed:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered after {:?}",
            started.elapsed()
        );
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), huge)
                .await
                .unwrap()
                .unwrap(),
            format!("error: request longer than {MAX_REQUEST} bytes\n")
        );
        for (what, stream) in [("silent", &mut silent), ("endless", &mut endless)] {
            let mut answer = String::new();
            let read = tokio::time::timeout(
                REQUEST_TIMEOUT + Duration::from_secs(2),
                stream.read_to_string(&mut answer),
            )
            .await;
            assert!(read.is_ok(), "{what}: not closed");
            assert_eq!(answer, "error: no request line within 5 s\n", "{what}");
        }
        served.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_uid_holds_at_most_its_share_of_connections() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared();
        let served = Served::start(dir.path(), &shared, None);
        let mut held = Vec::new();
        for _ in 0..MAX_PER_UID {
            held.push(UnixStream::connect(&served.path).await.unwrap());
        }
        // Let the daemon take them all before the next one.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let busy = served.ask("list").await;
        assert!(
            busy.is_error() && busy.text.contains("busy: uid 0"),
            "{busy:?}"
        );
        drop(held);
        let listed = until_not_busy(|| async { served.ask("list").await }).await;
        assert!(!listed.is_error(), "{listed:?}");
        served.stop().await;
    }

    /// Asks until the answer is not "busy" (the daemon notices closed connections when it
    /// next reads them), for up to 2 s.
    async fn until_not_busy<F, Fut>(mut ask: F) -> Answer
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let answer = ask().await;
            if !answer.text.contains("busy") || std::time::Instant::now() > deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
