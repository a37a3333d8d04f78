#![doc = include_str!("../README.md")]
#![doc = include_str!("../TELEMETRY.md")]

mod admin;
mod clock;
mod context;
mod dialect;
mod error;
mod guard;
mod lock;
mod options;
mod query;
mod random;
mod table;
mod telemetry;
mod wake;

pub use admin::{ForceRelease, LockAdmin, LockInfo, LockState};
pub use dialect::Dialect;
pub use error::{Error, Result};
pub use guard::{FencingToken, Lease, LockGuard, LossReason};
pub use lock::{Attempt, DistributedLock, Holder, LockBuilder, Outcome};
pub use query::{
    BoxError, ColumnType, Direct, IntoQueryInterface, QueryError, QueryErrorKind, QueryInterface,
    Row, Statement, Value,
};
pub use table::TableName;
pub use wake::Wake;

/// Re-exported so adapters implement [`QueryInterface`] with the same macro version.
pub use async_trait::async_trait;
