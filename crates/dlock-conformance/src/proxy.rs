//! A TCP proxy in front of the database, so a scenario can make the database unreachable
//! for one client without disturbing the tests running beside it. Public for the torture
//! suite (`dlock-torture`), which partitions its workers from the database with it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

/// A proxy to one upstream address; dropping it cuts every connection.
#[derive(Debug)]
pub struct Proxy {
    state: watch::Sender<State>,
    url: String,
}

impl Proxy {
    /// Starts a proxy for the database at `url`; [`Proxy::url`] is `url` through it.
    pub async fn start(url: &str) -> Result<Self, String> {
        let (prefix, upstream, suffix) = split_url(url)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("proxy cannot listen: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (state, _) = watch::channel(State::Open);
        tokio::spawn(accept(listener, upstream, state.clone()));
        Ok(Self {
            state,
            url: format!("{prefix}{address}{suffix}"),
        })
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

/// `scheme://user@host:port/db?x` → (`scheme://user@`, `host:port`, `/db?x`).
fn split_url(url: &str) -> Result<(&str, String, &str), String> {
    let authority_start = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| format!("{url}: no scheme"))?;
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let host_start = url[authority_start..authority_end]
        .rfind('@')
        .map_or(authority_start, |i| authority_start + i + 1);
    let host = &url[host_start..authority_end];
    if host.is_empty() || !host.contains(':') {
        return Err(format!("{url}: the proxy needs an explicit host:port"));
    }
    Ok((&url[..host_start], host.to_owned(), &url[authority_end..]))
}

async fn accept(listener: TcpListener, upstream: String, state: watch::Sender<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        let state = state.subscribe();
        tokio::spawn(async move {
            let current = *state.borrow();
            match current {
                State::Cut => drop(client),
                State::Frozen => hold_until_cut(client, state).await,
                State::Open => {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, state).await;
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

async fn relay(client: TcpStream, server: TcpStream, state: watch::Receiver<State>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, state.clone()),
        pump(server_read, client_write, state),
    );
}

/// Copies bytes while the proxy is open; stalls when frozen; stops when cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
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
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its `host:port` replaced by `address`.
pub(crate) fn with_address(url: &str, address: &str) -> Result<String, String> {
    let (prefix, _, suffix) = split_url(url)?;
    Ok(format!("{prefix}{address}{suffix}"))
}
