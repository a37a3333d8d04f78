//! One query interface that forwards everything to another and sees each statement on its
//! way: to count statements, record them, or hang them (a partition).

use std::fmt;
use std::sync::Arc;

use dlock_core::Dialect;
use dlock_core::adapter::{
    Listen, QueryError, QueryInterface, Row, Statement, StatementKind, async_trait,
};

/// Whether a statement of the core only reads: it probes, reads a token or a leader, or lists, or
/// notifies (which writes no row). Everything else takes, renews or frees a lock, or
/// creates its table.
pub fn only_reads(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Probe
            | StatementKind::ReadToken
            | StatementKind::List
            | StatementKind::Inspect
            | StatementKind::Leader
            | StatementKind::Notify
            | StatementKind::Durability
    )
}

/// What a [`Tap`] does with a statement after its observer has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Sends it on to the database.
    Forward,
    /// Never answers it, as a database cut off by a partition would not.
    Hang,
}

/// A query interface over `inner` that calls `observe` with each statement before it is
/// sent (whether or not it then succeeds: a failed statement still cost a round trip),
/// and forwards everything else unchanged.
pub struct Tap<F> {
    inner: Arc<dyn QueryInterface>,
    observe: F,
}

impl<F> Tap<F>
where
    F: Fn(&Statement) -> Flow + Send + Sync + 'static,
{
    /// Taps `inner`.
    pub fn new(inner: Arc<dyn QueryInterface>, observe: F) -> Self {
        Self { inner, observe }
    }

    async fn pass(&self, statement: &Statement) {
        if (self.observe)(statement) == Flow::Hang {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl<F> QueryInterface for Tap<F>
where
    F: Fn(&Statement) -> Flow + Send + Sync + 'static,
{
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.pass(statement).await;
        self.inner.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.pass(statement).await;
        self.inner.query(statement).await
    }

    /// Listening runs on a connection of its own, outside the pool: no statement of the
    /// lock's, so not observed.
    fn listener(&self) -> Option<&dyn Listen> {
        self.inner.listener()
    }
}

impl<F> fmt::Debug for Tap<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
