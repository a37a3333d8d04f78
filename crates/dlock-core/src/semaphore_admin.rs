//! For operators: the semaphores of a lock table (their rows are in its companion
//! table), who holds each permit, and a force release per permit.

use crate::semaphore::slot_name;
use crate::{Error, FencingToken, ForceRelease, LockAdmin, LockInfo, LockState, Result};

/// One semaphore as recorded in the companion table, read by [`LockAdmin::semaphores`]
/// or [`LockAdmin::inspect_semaphore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreInfo {
    /// The semaphore's name.
    pub name: String,
    /// How many permits it was defined with.
    pub permits: i64,
    /// Every permit that was ever taken, by permit number: held, revoked, free or
    /// expired, each an ordinary lock row (named `{name}#{permit}`).
    pub slots: Vec<PermitInfo>,
}

impl SemaphoreInfo {
    /// The permits held now (revoked ones included: nobody can take them until their
    /// lease ends).
    pub fn holders(&self) -> impl Iterator<Item = &PermitInfo> {
        self.slots
            .iter()
            .filter(|slot| matches!(slot.lock.state, LockState::Held | LockState::Revoked))
    }
}

/// One permit of a semaphore and its row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermitInfo {
    /// Which permit, from 1.
    pub permit: u32,
    /// Its row, as [`LockAdmin::inspect`] reads a lock's: holder, token, lease.
    pub lock: LockInfo,
}

/// What [`LockAdmin::remove_semaphore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SemaphoreRemoval {
    /// The definition was removed: the next process to use the name defines it anew,
    /// with its own number of permits. This is how the semaphore was.
    Removed(SemaphoreInfo),
    /// Nothing was removed: some permits are held. Stop their holders first (every
    /// process still running with the old count would otherwise mix with the new one).
    InUse(SemaphoreInfo),
}

impl LockAdmin {
    /// Every semaphore of this lock table (in its companion table), by name, with its
    /// number of permits and every permit that was ever taken.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTable`] if the lock table does not exist; the database's error
    /// otherwise. No semaphore ever used (no companion table) is an empty list.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn semaphores(&self) -> Result<Vec<SemaphoreInfo>> {
        Ok(semaphores_in(self.companion_rows().await?))
    }

    /// Every row of the companion table; none if it does not exist (no semaphore or
    /// other primitive was ever used beside this lock table), so long as the lock table
    /// itself does.
    async fn companion_rows(&self) -> Result<Vec<LockInfo>> {
        match self.companion()?.list().await {
            Err(Error::NoSuchTable { .. }) => {
                // Says which table is missing if the lock table is too.
                self.inspect("")
                    .await
                    .map(|_| Vec::new())
                    .or_else(|error| match error {
                        Error::NoSuchLock { .. } => Ok(Vec::new()),
                        other => Err(other),
                    })
            }
            other => other,
        }
    }

    /// The semaphore `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchLock`] (naming the semaphore and the companion table) if no
    /// semaphore of that name was ever used; [`Error::NoSuchTable`] as for
    /// [`semaphores`](Self::semaphores); the database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect_semaphore(&self, name: &str) -> Result<SemaphoreInfo> {
        let rows = self.companion_rows().await?;
        semaphores_in(rows)
            .into_iter()
            .find(|semaphore| semaphore.name == name)
            .ok_or_else(|| Error::NoSuchLock {
                name: name.to_owned(),
                table: self.table().companion().map_or_else(
                    |_| self.table().to_string(),
                    |companion| companion.to_string(),
                ),
            })
    }

    /// Revokes permit `permit` of the semaphore `name` from its holder, only if its
    /// fencing token is still `token`: [`force_release`](Self::force_release) on the
    /// permit's row, with the same guarantees (its holder hears of the loss before anyone
    /// else can take the permit, which frees when the revoked lease ends).
    ///
    /// # Errors
    ///
    /// As [`force_release`](Self::force_release).
    ///
    /// # Cancel Safety
    ///
    /// As [`force_release`](Self::force_release).
    pub async fn force_release_permit(
        &self,
        name: &str,
        permit: u32,
        token: FencingToken,
    ) -> Result<ForceRelease> {
        let row = permit_row(name, permit)?;
        self.companion()?.force_release(&row, token).await
    }

    /// Frees permit `permit` of the semaphore `name` at once, only if its fencing token
    /// is still `token`: [`force_release_now`](Self::force_release_now) on the permit's
    /// row. **Only for a holder known to be dead**, as there.
    ///
    /// # Errors
    ///
    /// As [`force_release_now`](Self::force_release_now).
    ///
    /// # Cancel Safety
    ///
    /// As [`force_release_now`](Self::force_release_now).
    pub async fn force_release_permit_now(
        &self,
        name: &str,
        permit: u32,
        token: FencingToken,
    ) -> Result<ForceRelease> {
        let row = permit_row(name, permit)?;
        self.companion()?.force_release_now(&row, token).await
    }

    /// Removes the definition of the semaphore `name` (its number of permits), so that
    /// it can be used with another count: stop every process using the old count first,
    /// since each checks the count once, before its first acquisition, and would go on
    /// with the old one. Refused while any permit is held. The permits' rows stay, with
    /// their fencing tokens.
    ///
    /// # Errors
    ///
    /// As [`inspect_semaphore`](Self::inspect_semaphore); the database's error.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: the removal is one statement.
    pub async fn remove_semaphore(&self, name: &str) -> Result<SemaphoreRemoval> {
        let semaphore = self.inspect_semaphore(name).await?;
        if semaphore.holders().next().is_some() {
            return Ok(SemaphoreRemoval::InUse(semaphore));
        }
        let companion = self.companion()?;
        let sql = self.dialect().semaphore_sql(companion.table());
        self.queries()
            .execute(&sql.undefine(&slot_name(name, 0)))
            .await
            .map_err(|error| Error::query("remove the semaphore's definition", error))?;
        Ok(SemaphoreRemoval::Removed(semaphore))
    }
}

fn permit_row(name: &str, permit: u32) -> Result<String> {
    if permit == 0 {
        return Err(Error::InvalidOption(
            "permits are numbered from 1; give the permit number shown by \
             `dlock inspect --semaphore`"
                .into(),
        ));
    }
    Ok(slot_name(name, permit))
}

/// The semaphores among the companion table's rows: each defined by a row `{name}#0`,
/// whose token is its number of permits, with its rows `{name}#{i}` for `i` from 1 to
/// that number. Other rows (other primitives', the epoch row) are left out.
fn semaphores_in(rows: Vec<LockInfo>) -> Vec<SemaphoreInfo> {
    let mut semaphores: Vec<SemaphoreInfo> = rows
        .iter()
        .filter_map(|row| {
            let name = row.name.strip_suffix("#0")?;
            Some(SemaphoreInfo {
                name: name.to_owned(),
                permits: row.fencing_token.get(),
                slots: Vec::new(),
            })
        })
        .collect();
    semaphores.sort_by(|a, b| a.name.cmp(&b.name));
    for row in rows {
        let Some((name, number)) = row.name.rsplit_once('#') else {
            continue;
        };
        let Ok(permit) = number.parse::<u32>() else {
            continue;
        };
        if permit == 0 || number.starts_with(['0', '+']) {
            continue;
        }
        let Ok(at) = semaphores.binary_search_by(|semaphore| semaphore.name.as_str().cmp(name))
        else {
            continue;
        };
        let semaphore = &mut semaphores[at];
        if i64::from(permit) <= semaphore.permits {
            semaphore.slots.push(PermitInfo { permit, lock: row });
        }
    }
    for semaphore in &mut semaphores {
        semaphore.slots.sort_by_key(|slot| slot.permit);
    }
    semaphores
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn row(name: &str, state: LockState, token: i64) -> LockInfo {
        LockInfo {
            name: name.into(),
            state,
            holder: None,
            owner_id: None,
            fencing_token: FencingToken(token),
            acquired_at: None,
            expires_at: None,
            read_at: SystemTime::UNIX_EPOCH,
            value: None,
        }
    }

    #[test]
    fn semaphores_are_found_by_their_definition_rows() {
        let rows = vec![
            row("", LockState::Free, 1),
            row("jobs#0", LockState::Free, 2),
            row("jobs#1", LockState::Held, 7),
            row("jobs#2", LockState::Free, 3),
            // Beyond the count, not a number, or written oddly: not permits.
            row("jobs#3", LockState::Held, 1),
            row("jobs#x", LockState::Held, 1),
            row("jobs#01", LockState::Held, 1),
            // A name with `#` in it is a semaphore of its own.
            row("a#b#0", LockState::Free, 1),
            row("a#b#1", LockState::Revoked, 4),
            // No definition: another primitive's rows.
            row("other#1", LockState::Held, 1),
        ];
        let semaphores = semaphores_in(rows);
        let names: Vec<&str> = semaphores.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a#b", "jobs"]);
        let jobs = &semaphores[1];
        assert_eq!(jobs.permits, 2);
        let permits: Vec<u32> = jobs.slots.iter().map(|slot| slot.permit).collect();
        assert_eq!(permits, [1, 2]);
        assert_eq!(jobs.holders().count(), 1);
        assert_eq!(
            semaphores[0].holders().count(),
            1,
            "a revoked permit is held"
        );
    }
}
