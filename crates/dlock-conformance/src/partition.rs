//! A partition between one holder and its database: statements hang.
//!
//! Over TCP it is the [`Proxy`], which stops forwarding bytes, so the adapter's driver
//! sees a real network failure. An embedded database (SQLite) has no network to cut, so
//! there the holder's query interface is wrapped instead, and its calls hang once frozen:
//! the same condition as seen by the lock, without the driver's part.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dlock_core::{Dialect, QueryError, QueryInterface, Row, Statement, async_trait};

use crate::proxy::Proxy;
use crate::{Adapter, Env};

/// A way to cut one holder off from the database.
pub(crate) enum Partition {
    Proxy(Proxy),
    Wrapper(Arc<AtomicBool>),
}

impl Partition {
    /// A partition for `env`'s database: a proxy when it is reached over the network.
    pub(crate) async fn start<A: Adapter>(env: &Env<A>) -> Result<Self, String> {
        if env.target.network {
            Ok(Self::Proxy(Proxy::start(&env.url).await?))
        } else {
            Ok(Self::Wrapper(Arc::new(AtomicBool::new(false))))
        }
    }

    /// A new pool whose statements the partition can cut off.
    pub(crate) async fn connect<A: Adapter>(
        &self,
        env: &Env<A>,
    ) -> Result<Arc<dyn QueryInterface>, String> {
        match self {
            Self::Proxy(proxy) => env.connect_to(proxy.url()).await,
            Self::Wrapper(frozen) => Ok(Arc::new(Freezable {
                inner: env.connect().await?,
                frozen: Arc::clone(frozen),
            })),
        }
    }

    /// From now on, statements through the partition hang.
    pub(crate) fn freeze(&self) {
        match self {
            Self::Proxy(proxy) => proxy.freeze(),
            Self::Wrapper(frozen) => frozen.store(true, Ordering::SeqCst),
        }
    }
}

#[derive(Debug)]
struct Freezable {
    inner: Arc<dyn QueryInterface>,
    frozen: Arc<AtomicBool>,
}

impl Freezable {
    async fn hang_if_frozen(&self) {
        if self.frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl QueryInterface for Freezable {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.hang_if_frozen().await;
        self.inner.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.hang_if_frozen().await;
        self.inner.query(statement).await
    }
}
