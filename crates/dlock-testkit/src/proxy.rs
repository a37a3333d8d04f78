//! A TCP proxy in front of the database, so a test can make the database unreachable for
//! one client without disturbing the tests running beside it. The torture suite also
//! strikes single connections with [`Proxy::arm`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes flow both ways.
    Open,
    /// Connections stay open, but nothing flows and new ones are never answered: a
    /// network partition. Statements hang.
    Frozen,
    /// Every connection is closed and new ones are closed at once: statements fail.
    Cut,
}

/// A fault for the one connection that [`Proxy::arm`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFault {
    /// The request that struck is forwarded, so the server runs it, but the server's
    /// replies on that connection are held back (in the sockets' buffers) until the fault
    /// is lifted, and then delivered in order: a reply that arrives late.
    HoldReplies,
    /// The request that struck is never forwarded and nothing flows either way, but the
    /// connection stays open (half-open: the peer's packets are dropped without a reset),
    /// until the fault is lifted, which closes it.
    Stall,
}

/// What one connection does, besides the proxy-wide [`State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Struck(ConnectionFault),
    /// A stall lifted: the connection is closed.
    Closed,
}

/// A fault armed by [`Proxy::arm`], waiting for a request that matches.
#[derive(Debug)]
struct Trap {
    pattern: Vec<u8>,
    fault: ConnectionFault,
    struck: oneshot::Sender<watch::Sender<Mode>>,
}

/// A fault armed for one connection. Dropping it disarms the fault, or lifts it if it
/// struck.
#[derive(Debug)]
pub struct Armed {
    trap: Arc<Mutex<Option<Trap>>>,
    struck: oneshot::Receiver<watch::Sender<Mode>>,
    connection: Option<watch::Sender<Mode>>,
}

impl Armed {
    /// Waits until the fault strikes a connection; `false` if it never can (the proxy is
    /// gone). Cancel-safe: a fault that strikes after the wait was given up on is still
    /// lifted when this is dropped.
    pub async fn struck(&mut self) -> bool {
        if self.connection.is_some() {
            return true;
        }
        match (&mut self.struck).await {
            Ok(connection) => {
                self.connection = Some(connection);
                true
            }
            Err(_) => false,
        }
    }

    /// Ends the fault: held replies are delivered, a stalled connection is closed. A
    /// fault that has not struck is disarmed.
    pub fn lift(mut self) {
        self.lift_now();
    }

    fn lift_now(&mut self) {
        self.trap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // It may have struck since the last look.
        if let Ok(connection) = self.struck.try_recv() {
            self.connection = Some(connection);
        }
        if let Some(connection) = self.connection.take() {
            connection.send_modify(|mode| {
                *mode = match *mode {
                    Mode::Struck(ConnectionFault::Stall) | Mode::Closed => Mode::Closed,
                    _ => Mode::Normal,
                };
            });
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.lift_now();
    }
}

/// A proxy to one upstream address; dropping it cuts every connection.
#[derive(Debug)]
pub struct Proxy {
    state: watch::Sender<State>,
    url: String,
    upstream: Arc<Mutex<String>>,
    trap: Arc<Mutex<Option<Trap>>>,
}

impl Proxy {
    /// Starts a proxy for the database at `url`; [`Proxy::url`] is `url` through it.
    pub async fn start(url: &str) -> Result<Self, String> {
        let upstream = Arc::new(Mutex::new(upstream(url)?));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("proxy cannot listen: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (state, _) = watch::channel(State::Open);
        let trap = Arc::new(Mutex::new(None));
        tokio::spawn(accept(
            listener,
            Arc::clone(&upstream),
            state.clone(),
            Arc::clone(&trap),
        ));
        Ok(Self {
            state,
            url: with_address(url, address)?,
            upstream,
            trap,
        })
    }

    /// Arms `fault` for one connection: the first whose client sends bytes that contain
    /// `pattern` (in one read; the requests of a database client are small) is struck,
    /// and stays struck until the returned [`Armed`] is lifted or dropped. Only one fault
    /// is armed at a time: arming again disarms a fault that has not struck yet.
    ///
    /// A statement's parameters travel as their bytes, so a value only one statement
    /// carries (an owner id, a holder label) picks that statement's connection.
    pub fn arm(&self, pattern: impl Into<Vec<u8>>, fault: ConnectionFault) -> Armed {
        let (struck_tx, struck_rx) = oneshot::channel();
        *self.trap.lock().unwrap_or_else(PoisonError::into_inner) = Some(Trap {
            pattern: pattern.into(),
            fault,
            struck: struck_tx,
        });
        Armed {
            trap: Arc::clone(&self.trap),
            struck: struck_rx,
            connection: None,
        }
    }

    /// The database's URL through the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A partition: open connections stay open but nothing flows, new ones are never
    /// answered, so statements hang.
    pub fn freeze(&self) {
        self.state.send_replace(State::Frozen);
    }

    /// Closes every connection, and new ones at once: statements fail.
    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    /// From now on, connects to the database at `url` (its host and port) instead: the
    /// stable address of a primary that failed over. Connections to the old one end
    /// with it.
    pub fn retarget(&self, url: &str) -> Result<(), String> {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = upstream(url)?;
        Ok(())
    }

    /// Lets new connections through again (connections frozen or cut before stay dead,
    /// as after a real partition their peers would have given up on them).
    pub fn open(&self) {
        self.state.send_replace(State::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The `host:port` that `url` names: the proxy's upstream.
fn upstream(url: &str) -> Result<String, String> {
    let parsed = Url::parse(url).map_err(|error| format!("invalid URL {url:?}: {error}"))?;
    match (parsed.host_str(), parsed.port()) {
        (Some(host), Some(port)) if !host.is_empty() => Ok(format!("{host}:{port}")),
        _ => Err(format!("{url}: the proxy needs an explicit host:port")),
    }
}

async fn accept(
    listener: TcpListener,
    upstream: Arc<Mutex<String>>,
    state: watch::Sender<State>,
    trap: Arc<Mutex<Option<Trap>>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let state = state.subscribe();
        let trap = Arc::clone(&trap);
        tokio::spawn(async move {
            let current = *state.borrow();
            match current {
                State::Cut => drop(client),
                State::Frozen => hold_until_cut(client, state).await,
                State::Open => {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, state, trap).await;
                    }
                }
            }
        });
    }
}

async fn hold_until_cut(client: TcpStream, mut state: watch::Receiver<State>) {
    let _ = state.wait_for(|s| *s == State::Cut).await;
    drop(client);
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    state: watch::Receiver<State>,
    trap: Arc<Mutex<Option<Trap>>>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let (mode, _) = watch::channel(Mode::Normal);
    let requests = Direction::Requests {
        trap,
        mode: mode.clone(),
    };
    let replies = Direction::Replies(mode.subscribe());
    tokio::join!(
        pump(client_read, server_write, state.clone(), requests),
        pump(server_read, client_write, state, replies),
    );
}

/// Which way a pump copies, with what it needs for [`Proxy::arm`]'s faults.
enum Direction {
    /// Client to server: may be struck by the armed trap.
    Requests {
        trap: Arc<Mutex<Option<Trap>>>,
        mode: watch::Sender<Mode>,
    },
    /// Server to client.
    Replies(watch::Receiver<Mode>),
}

impl Direction {
    /// Before forwarding `bytes`: strikes this connection if they spring the trap, and
    /// waits while the connection's mode says not to forward. `false`: drop the
    /// connection.
    async fn may_forward(&mut self, bytes: &[u8]) -> bool {
        let mut mode = match self {
            Self::Requests { trap, mode } => {
                let sprung = {
                    let mut trap = trap.lock().unwrap_or_else(PoisonError::into_inner);
                    let matches = trap.as_ref().is_some_and(|trap| {
                        !trap.pattern.is_empty()
                            && bytes
                                .windows(trap.pattern.len())
                                .any(|window| window == trap.pattern.as_slice())
                    });
                    if matches { trap.take() } else { None }
                };
                if let Some(trap) = sprung {
                    // Struck before these bytes go on, so no reply to them slips through.
                    mode.send_replace(Mode::Struck(trap.fault));
                    let _ = trap.struck.send(mode.clone());
                }
                mode.subscribe()
            }
            Self::Replies(mode) => mode.clone(),
        };
        let requests = matches!(self, Self::Requests { .. });
        let forward = mode
            .wait_for(|mode| match mode {
                Mode::Normal | Mode::Closed => true,
                // Requests still flow when only the replies are held.
                Mode::Struck(ConnectionFault::HoldReplies) => requests,
                Mode::Struck(ConnectionFault::Stall) => false,
            })
            .await;
        // A stall that was lifted closes the connection.
        forward.is_ok_and(|mode| *mode != Mode::Closed)
    }
}

/// Copies bytes while the proxy is open; stalls when frozen; stops when cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    mut direction: Direction,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => Some(read),
            _ = state.wait_for(|s| *s != State::Open) => None,
        };
        let n = match read {
            Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) if *state.borrow() == State::Open => n,
            // Frozen or cut: hold the connection, silent, until cut.
            _ => {
                let _ = state.wait_for(|s| *s == State::Cut).await;
                return;
            }
        };
        // A connection struck by an armed fault waits here; a proxy-wide cut still
        // closes it.
        let forward = tokio::select! {
            forward = direction.may_forward(&buffer[..n]) => forward,
            _ = state.wait_for(|s| *s == State::Cut) => false,
        };
        if !forward || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by `address`'s.
pub fn with_address(url: &str, address: SocketAddr) -> Result<String, String> {
    let mut parsed = Url::parse(url).map_err(|error| format!("invalid URL {url:?}: {error}"))?;
    parsed
        .set_ip_host(address.ip())
        .and_then(|()| parsed.set_port(Some(address.port())))
        .map_err(|()| format!("{url}: no host to replace"))?;
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream that echoes every byte it receives, and counts them.
    async fn echo_server() -> (String, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n @ 1..) = socket.read(&mut buffer).await {
                        *counter.lock().unwrap() += n;
                        if socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("tcp://{address}/"), received)
    }

    async fn connect(proxy: &Proxy) -> TcpStream {
        let address = upstream(proxy.url()).unwrap();
        TcpStream::connect(address).await.unwrap()
    }

    async fn read_some(socket: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 1024];
        match tokio::time::timeout(within, socket.read(&mut buffer)).await {
            Ok(Ok(n)) => Some(buffer[..n].to_vec()),
            Ok(Err(_)) => Some(Vec::new()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn held_replies_arrive_when_lifted_and_other_connections_flow() {
        let (url, received) = echo_server().await;
        let proxy = Proxy::start(&url).await.unwrap();
        let mut struck = connect(&proxy).await;
        let mut other = connect(&proxy).await;
        let mut armed = proxy.arm("acquire", ConnectionFault::HoldReplies);
        other.write_all(b"probe").await.unwrap();
        assert_eq!(
            read_some(&mut other, Duration::from_secs(5)).await.unwrap(),
            b"probe"
        );
        struck.write_all(b"acquire x").await.unwrap();
        assert!(armed.struck().await);
        // The server got the request, but its reply is held.
        assert!(
            read_some(&mut struck, Duration::from_millis(200))
                .await
                .is_none()
        );
        assert_eq!(*received.lock().unwrap(), "probeacquire x".len());
        other.write_all(b"acquire y").await.unwrap();
        assert_eq!(
            read_some(&mut other, Duration::from_secs(5)).await.unwrap(),
            b"acquire y"
        );
        armed.lift();
        assert_eq!(
            read_some(&mut struck, Duration::from_secs(5))
                .await
                .unwrap(),
            b"acquire x"
        );
    }

    #[tokio::test]
    async fn a_stalled_connection_forwards_nothing_and_closes_when_lifted() {
        let (url, received) = echo_server().await;
        let proxy = Proxy::start(&url).await.unwrap();
        let mut struck = connect(&proxy).await;
        let mut armed = proxy.arm("renew", ConnectionFault::Stall);
        struck.write_all(b"renew x").await.unwrap();
        assert!(armed.struck().await);
        assert!(
            read_some(&mut struck, Duration::from_millis(200))
                .await
                .is_none()
        );
        assert_eq!(
            *received.lock().unwrap(),
            0,
            "the stalled request went through"
        );
        armed.lift();
        assert_eq!(
            read_some(&mut struck, Duration::from_secs(5))
                .await
                .unwrap(),
            b""
        );
    }
}
