//! The apply lock in Parameter Store, taken by exactly one contender even
//! over an expired lock, although SSM has no compare-and-swap on overwrite.
//!
//! # Design
//!
//! The lock parameter `L` (`{prefix}/{env}/keyplan/lock`, type String) holds
//! a [`LockRecord`] plus an `epoch`: a fresh UUID written by every create of
//! `L`. The *state* of `L` is `(epoch, SSM version)`; it never repeats, since
//! an epoch is created once and versions only grow within it.
//!
//! - **Free → held**: `PutParameter` without `Overwrite` (a conditional
//!   create). Exactly one contender's create succeeds.
//! - **Every other change of `L`** (renew = overwrite, release / takeover /
//!   force-unlock = delete) is made only by whoever first wins the *guard* of
//!   the state it changes: `{L}-guard/{epoch}-{version}`, also created
//!   conditionally. Guards are never reused: a state has one guard, won once.
//!   Since nobody can leave state `s` without `s`'s guard, the guard's winner
//!   knows `L` is still `s` (it re-reads `L` to confirm, and follows its own
//!   later versions if an earlier answer of its was lost).
//! - **Takeover of an expired lock**: read `L` = `s`, expired (`expires +
//!   skew <= now`); win `guard(s)`; delete `L`; then the conditional create
//!   of the free case. Two takers of the same `s` race for one guard; a taker
//!   and a fresh contender race for one create. A slow contender that read `s`
//!   long ago finds `guard(s)` taken and reads again: it never deletes a lock
//!   it did not see expired, because the lock it would delete is always `s`.
//! - **Renew** wins `guard(s)` of its own state, then overwrites `L` (new
//!   version, so a new state). A taker that won that guard first makes the
//!   renewal fail with [`LockError::Lost`]. **Release** wins the guard and
//!   deletes `L`; losing it means someone else already ended our state.
//! - **Verify** reads `L` (one `GetParameter`): ours if the epoch and record
//!   id are ours and `expires > now`. A taker only acts once `expires + skew`
//!   has passed, so with clocks within `skew` a verified holder and a taker do
//!   not overlap (the usual lease assumption; no lock service can fence writes
//!   to a store that does not check a token).
//! - A crash between winning a guard and finishing leaves `L` in a state
//!   nobody else may change: `keyplan force-unlock ID` deletes it anyway (an
//!   operator's override for a holder known to be dead).
//! - Old guards are deleted after `guard_retention` (a day) by the next
//!   holder, so the parameter count stays small.
//!
//! # What this relies on in SSM
//!
//! 1. `PutParameter` without `Overwrite` is atomic: of concurrent creates of a
//!    name, one succeeds and the others get `ParameterAlreadyExists`, and it
//!    sees every completed create (AWS documents the error; moto behaves so).
//! 2. A read never shows a state that did not exist. Stale reads (SSM does not
//!    promise read-after-write across clients) cost only retries: a stale
//!    state's guard is already taken, or its create fails.
//! 3. The one place a stale read could matter is a guard deleted by the
//!    retention sweep and won again by a contender whose read of `L` is more
//!    than `guard_retention` stale; the design assumes reads lag by seconds,
//!    not a day. moto is strongly consistent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::provider::{Lock, LockError, LockRecord, ProviderError, Result};

/// One plain (non-secret) parameter as the lock sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawParameter {
    pub name: String,
    pub value: String,
    pub version: u64,
    /// When the server last wrote it (for the guard retention sweep).
    pub modified: Option<Timestamp>,
}

/// The four SSM primitives the lock needs, and nothing else: a narrow trait
/// so the algorithm can be tested against an in-memory fake with a chosen
/// order of operations (the SDK client implements it for the real thing).
#[async_trait]
pub trait ParameterApi: Send + Sync {
    /// `GetParameter`; `None` when absent.
    async fn get(&self, name: &str) -> Result<Option<RawParameter>>;
    /// `PutParameter` without `Overwrite`: `Some(version)` when created,
    /// `None` when the name already exists.
    async fn create(&self, name: &str, value: &str) -> Result<Option<u64>>;
    /// `PutParameter` with `Overwrite`; returns the new version.
    async fn overwrite(&self, name: &str, value: &str) -> Result<u64>;
    /// `DeleteParameter`; deleting an absent name succeeds.
    async fn delete(&self, name: &str) -> Result<()>;
    /// The parameters directly below `path` (one level), every page.
    async fn list(&self, path: &str) -> Result<Vec<RawParameter>>;
}

/// Timing knobs of the lock.
#[derive(Clone, Debug)]
pub struct SsmLockSettings {
    /// Clock allowance: a lock counts as expired only `skew` after `expires`.
    pub skew: Duration,
    /// How often `acquire` looks again when a guard is busy (a taker is
    /// mid-way), and how long it pauses in between.
    pub attempts: u32,
    pub pause: Duration,
    /// Guards older than this are deleted by the next holder.
    pub guard_retention: Duration,
}

impl Default for SsmLockSettings {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(60),
            attempts: 8,
            pause: Duration::from_millis(250),
            guard_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// What `L` holds: the record and the epoch of the create that wrote it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    record: LockRecord,
    epoch: String,
}

/// What a guard holds: who won it and why (for people reading the store).
#[derive(Debug, Serialize, Deserialize)]
struct Guard {
    by: String,
    op: String,
    at: Timestamp,
}

/// `L` as read: its content and version.
#[derive(Clone, Debug)]
struct Current {
    stored: Stored,
    version: u64,
}

/// What this process knows of a lock it holds.
#[derive(Clone, Debug)]
struct Held {
    epoch: String,
    version: u64,
}

/// The apply lock at one parameter name (see the module docs).
pub struct SsmLock {
    api: Arc<dyn ParameterApi>,
    name: String,
    settings: SsmLockSettings,
    /// Serializes this process's renew / release / acquire, and remembers the
    /// state of the locks it holds, by record id.
    held: tokio::sync::Mutex<HashMap<String, Held>>,
}

impl std::fmt::Debug for SsmLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsmLock")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Corrupt {
        what: what.to_owned(),
        why: e.to_string(),
    }
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl SsmLock {
    /// The lock parameter `name` (`Layout::lock()`), reached through `api`.
    pub fn new(
        api: Arc<dyn ParameterApi>,
        name: impl Into<String>,
        settings: SsmLockSettings,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            settings,
            held: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The path holding the guards, `{lock}-guard`.
    pub fn guard_path(&self) -> String {
        format!("{}-guard", self.name)
    }

    fn guard_name(&self, epoch: &str, version: u64) -> String {
        format!("{}/{epoch}-{version}", self.guard_path())
    }

    async fn read(&self) -> Result<Option<Current>> {
        let Some(raw) = self.api.get(&self.name).await? else {
            return Ok(None);
        };
        let stored: Stored =
            serde_json::from_str(&raw.value).map_err(|e| corrupt(&self.name, e))?;
        Ok(Some(Current {
            stored,
            version: raw.version,
        }))
    }

    fn encode(record: &LockRecord, epoch: &str) -> String {
        serde_json::to_string(&Stored {
            record: record.clone(),
            epoch: epoch.to_owned(),
        })
        .expect("lock records serialize")
    }

    /// Wins the guard of state `(epoch, version)` for `by`; an existing guard
    /// won by `by` earlier (an answer lost on the way back) counts as won.
    async fn take_guard(&self, epoch: &str, version: u64, by: &str, op: &str) -> Result<bool> {
        let name = self.guard_name(epoch, version);
        let guard = serde_json::to_string(&Guard {
            by: by.to_owned(),
            op: op.to_owned(),
            at: Timestamp::now(),
        })
        .expect("guards serialize");
        if self.api.create(&name, &guard).await?.is_some() {
            return Ok(true);
        }
        Ok(match self.api.get(&name).await? {
            Some(raw) => serde_json::from_str::<Guard>(&raw.value).is_ok_and(|g| g.by == by),
            // Deleted by the retention sweep after its state ended: not ours.
            None => false,
        })
    }

    /// Wins the guard of the state `L` is in, starting from `(epoch,
    /// version)` and following that epoch's later versions. Returns `L` as it
    /// is now, which nobody else can change, or `None` when `L` has left this
    /// epoch or someone else holds the guard.
    async fn secure(
        &self,
        epoch: &str,
        mut version: u64,
        by: &str,
        op: &str,
    ) -> Result<Option<Current>> {
        loop {
            if !self.take_guard(epoch, version, by, op).await? {
                return Ok(None);
            }
            match self.read().await? {
                Some(current) if current.stored.epoch == epoch => {
                    if current.version == version {
                        return Ok(Some(current));
                    }
                    if current.version < version {
                        // A stale read; the state we guard is newer. Trust the guard.
                        return Ok(Some(Current { version, ..current }));
                    }
                    version = current.version; // an earlier write of ours landed
                }
                _ => return Ok(None),
            }
        }
    }

    /// Our state for `record`: remembered, or adopted from `L` when it names
    /// our record (a lock taken by another `SsmLock` value of this process).
    async fn our_state(
        &self,
        held: &HashMap<String, Held>,
        record: &LockRecord,
    ) -> Result<Option<Held>> {
        if let Some(h) = held.get(&record.id) {
            return Ok(Some(h.clone()));
        }
        Ok(self
            .read()
            .await?
            .filter(|c| c.stored.record.id == record.id)
            .map(|c| Held {
                epoch: c.stored.epoch,
                version: c.version,
            }))
    }

    /// Deletes guards older than the retention; best effort, after an acquire.
    async fn sweep_guards(&self) {
        let Ok(guards) = self.api.list(&self.guard_path()).await else {
            return;
        };
        let cutoff = Timestamp::now()
            .checked_sub(
                SignedDuration::try_from(self.settings.guard_retention)
                    .unwrap_or(SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MIN);
        for guard in guards {
            if guard.modified.is_some_and(|m| m < cutoff) {
                let _ = self.api.delete(&guard.name).await;
            }
        }
    }

    async fn pause(&self) {
        if !self.settings.pause.is_zero() {
            tokio::time::sleep(self.settings.pause).await;
        }
    }
}

#[async_trait]
impl Lock for SsmLock {
    async fn acquire(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        let mut held = self.held.lock().await;
        let epoch = uuid::Uuid::new_v4().to_string();
        let value = Self::encode(record, &epoch);
        let mut last_seen = None;
        for attempt in 0..self.settings.attempts.max(1) {
            if let Some(version) = self.api.create(&self.name, &value).await? {
                held.insert(record.id.clone(), Held { epoch, version });
                drop(held);
                self.sweep_guards().await;
                return Ok(());
            }
            let Some(current) = self.read().await? else {
                continue; // released between our create and our read
            };
            if current.stored.epoch == epoch {
                // Our create happened; its answer was lost and the SDK retried.
                held.insert(
                    record.id.clone(),
                    Held {
                        epoch,
                        version: current.version,
                    },
                );
                return Ok(());
            }
            if plus(current.stored.record.expires, self.settings.skew) > now {
                return Err(LockError::Held(current.stored.record));
            }
            // Expired: end its state, if we are the one who wins its guard.
            let secured = self
                .secure(
                    &current.stored.epoch,
                    current.version,
                    &record.id,
                    "takeover",
                )
                .await?;
            match secured {
                Some(c) if plus(c.stored.record.expires, self.settings.skew) <= now => {
                    self.api.delete(&self.name).await?;
                }
                Some(c) => return Err(LockError::Held(c.stored.record)), // renewed meanwhile
                None => {
                    // Someone else is ending that state; look again shortly.
                    last_seen = Some(current.stored.record);
                    if attempt + 1 < self.settings.attempts {
                        self.pause().await;
                    }
                }
            }
        }
        match self.read().await? {
            Some(c) => Err(LockError::Held(c.stored.record)),
            None => Err(LockError::Held(last_seen.unwrap_or_else(|| record.clone()))),
        }
    }

    async fn renew(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        let mut held = self.held.lock().await;
        let lost = || LockError::Lost(record.id.clone());
        let Some(state) = self.our_state(&held, record).await? else {
            return Err(lost());
        };
        let current = match self.read().await? {
            Some(c) if c.stored.epoch == state.epoch && c.stored.record.expires > now => c,
            _ => {
                held.remove(&record.id);
                return Err(lost());
            }
        };
        let version = state.version.max(current.version);
        let Some(secured) = self
            .secure(&state.epoch, version, &record.id, "renew")
            .await?
        else {
            held.remove(&record.id);
            return Err(lost());
        };
        let version = self
            .api
            .overwrite(&self.name, &Self::encode(record, &state.epoch))
            .await?;
        debug_assert!(version > secured.version);
        held.insert(
            record.id.clone(),
            Held {
                epoch: state.epoch,
                version,
            },
        );
        Ok(())
    }

    async fn verify(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        let held = self.held.lock().await;
        let known = held.get(&record.id).map(|h| h.epoch.clone());
        match self.read().await? {
            Some(c)
                if c.stored.record.id == record.id
                    && c.stored.record.expires > now
                    && known.is_none_or(|epoch| epoch == c.stored.epoch) =>
            {
                Ok(())
            }
            _ => Err(LockError::Lost(record.id.clone())),
        }
    }

    async fn release(&self, record: &LockRecord) -> Result<(), LockError> {
        let mut held = self.held.lock().await;
        let Some(state) = self.our_state(&held, record).await? else {
            return Ok(());
        };
        held.remove(&record.id);
        if self
            .secure(&state.epoch, state.version, &record.id, "release")
            .await?
            .is_some()
        {
            self.api.delete(&self.name).await?;
        }
        Ok(())
    }

    async fn current(&self) -> Result<Option<LockRecord>, LockError> {
        Ok(self.read().await?.map(|c| c.stored.record))
    }

    async fn force_unlock(&self, id: &str) -> Result<LockRecord, LockError> {
        let mut held = self.held.lock().await;
        let Some(current) = self.read().await?.filter(|c| c.stored.record.id == id) else {
            return Err(LockError::NotHeld(id.to_owned()));
        };
        held.remove(id);
        let by = format!("force-unlock-{}", uuid::Uuid::new_v4());
        match self
            .secure(&current.stored.epoch, current.version, &by, "force-unlock")
            .await?
        {
            Some(_) => self.api.delete(&self.name).await?,
            None => {
                // A guard is held: either a takeover finished (then `L` moved
                // on and is not ours to touch) or its winner died mid-way (`L`
                // is still that state): the operator's override deletes it.
                match self.read().await? {
                    Some(c) if c.stored.epoch == current.stored.epoch => {
                        self.api.delete(&self.name).await?;
                    }
                    _ => return Err(LockError::NotHeld(id.to_owned())),
                }
            }
        }
        Ok(current.stored.record)
    }
}
