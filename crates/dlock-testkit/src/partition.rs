//! A partition between one holder and its database: statements hang.
//!
//! Over TCP it is the [`Proxy`], which stops forwarding bytes, so the adapter's driver sees
//! a real network failure. An embedded database (SQLite) has no network to cut, so there
//! the holder's query interface is tapped instead, and its statements hang once frozen:
//! the same condition as the lock sees it, without the driver's part.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dlock_core::Dialect;
use dlock_core::adapter::QueryInterface;

use crate::proxy::Proxy;
use crate::tap::{Flow, Tap};

/// A way to cut one holder off from the database.
#[derive(Debug)]
pub enum Partition {
    /// A proxy in front of a database reached over TCP.
    Proxy(Proxy),
    /// Whether the tapped query interfaces hang their statements.
    Tap(Arc<AtomicBool>),
}

impl Partition {
    /// A partition for `dialect`'s database at `url`: a proxy for a server.
    pub async fn start(dialect: Dialect, url: &str) -> Result<Self, String> {
        match dialect {
            Dialect::Sqlite => Ok(Self::Tap(Arc::new(AtomicBool::new(false)))),
            _ => Ok(Self::Proxy(Proxy::start(url).await?)),
        }
    }

    /// The URL to connect to through the partition: the proxy's, or `url` itself.
    pub fn url<'a>(&'a self, url: &'a str) -> &'a str {
        match self {
            Self::Proxy(proxy) => proxy.url(),
            Self::Tap(_) => url,
        }
    }

    /// `queries` (connected to [`Partition::url`]), made to hang when frozen.
    pub fn wrap(&self, queries: Arc<dyn QueryInterface>) -> Arc<dyn QueryInterface> {
        match self {
            Self::Proxy(_) => queries,
            Self::Tap(frozen) => {
                let frozen = Arc::clone(frozen);
                Arc::new(Tap::new(queries, move |_| {
                    if frozen.load(Ordering::SeqCst) {
                        Flow::Hang
                    } else {
                        Flow::Forward
                    }
                }))
            }
        }
    }

    /// From now on, statements through the partition hang.
    pub fn freeze(&self) {
        match self {
            Self::Proxy(proxy) => proxy.freeze(),
            Self::Tap(frozen) => frozen.store(true, Ordering::SeqCst),
        }
    }
}
