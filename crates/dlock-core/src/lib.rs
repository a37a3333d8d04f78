#![doc = include_str!("../README.md")]
#![doc = include_str!("../TELEMETRY.md")]

pub mod adapter;
mod admin;
mod attempt;
mod backoff;
mod builder;
mod clock;
mod dialect;
mod durability;
mod election;
mod error;
mod guard;
mod inner;
mod keep_alive;
mod leadership;
mod lease;
mod listening;
mod lock;
mod multi;
mod name_set;
mod observer;
mod options;
mod outcome;
mod random;
mod rw_admin;
mod rwlock;
mod semaphore;
mod semaphore_admin;
mod table;
mod telemetry;
mod wait;

/// A boxed error, for jobs that fail in more ways than [`Error`] (`lock(f)` accepts any
/// error type that [`Error`] converts into); drivers' errors arrive boxed as this too.
pub use adapter::{BoxError, TransactionPooler};
pub use admin::{ForceRelease, LockAdmin, LockInfo, LockState};
pub use builder::{LockBuilder, MultiLockBuilder, RwLockBuilder};
pub use dialect::Dialect;
pub use durability::{Durability, DurabilitySetting, SettingEffect};
pub use election::{Election, ElectionBuilder, Leader};
pub use error::{Error, Result};
pub use guard::LockGuard;
pub use leadership::Leadership;
pub use lease::{FencingToken, Lease, LossReason};
pub use lock::DistributedLock;
pub use multi::{MultiLock, MultiLockGuard};
pub use observer::Observer;
pub use outcome::{Attempt, Holder, Outcome};
pub use rw_admin::{RwHolder, RwLockInfo};
pub use rwlock::{RwLock, RwReadGuard, RwWriteGuard};
pub use semaphore::{MAX_PERMITS, Semaphore, SemaphoreBuilder, SemaphorePermit};
pub use semaphore_admin::{PermitInfo, SemaphoreInfo, SemaphoreRemoval};
pub use table::TableName;
