//! A hook for metrics: every check and every refresh of a [`KeyRing`](crate::KeyRing).
//!
//! Implement [`Metrics`] to feed your metrics system, or use [`UsageCounters`]:
//! counts by consumer, generation and key state, with when each was last used,
//! so operators see when previous keys stop being used. The age of each key is
//! in [`KeyRing::status`](crate::KeyRing::status).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;

use crate::accepted::{Caller, Rejection};
use crate::record::KeyState;
use crate::source::SourceError;

/// Called on every check and refresh. Every method does nothing by default.
///
/// Implementations must be quick: they run on the request path.
pub trait Metrics: Send + Sync + 'static {
    /// A request was let through by `caller`'s key.
    fn accepted(&self, caller: &Caller) {
        let _ = caller;
    }
    /// A request was refused.
    fn rejected(&self, rejection: Rejection) {
        let _ = rejection;
    }
    /// A read of the store finished (or failed; the last good set stays).
    fn refreshed(&self, result: Result<(), &SourceError>) {
        let _ = result;
    }
}

impl<M: Metrics + ?Sized> Metrics for Arc<M> {
    fn accepted(&self, caller: &Caller) {
        (**self).accepted(caller);
    }
    fn rejected(&self, rejection: Rejection) {
        (**self).rejected(rejection);
    }
    fn refreshed(&self, result: Result<(), &SourceError>) {
        (**self).refreshed(result);
    }
}

/// How much one key was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUsage {
    pub consumer: String,
    pub generation: u64,
    pub state: KeyState,
    pub count: u64,
    pub last_used: Timestamp,
}

/// What [`UsageCounters`] has counted so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// By consumer, then generation, then state.
    pub keys: Vec<KeyUsage>,
    /// Refusals by [`Rejection::as_str`].
    pub rejections: BTreeMap<&'static str, u64>,
    pub refreshes_ok: u64,
    pub refreshes_failed: u64,
}

/// A ready [`Metrics`]: counters in memory, read with [`UsageCounters::snapshot`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use keyplan_runtime::metrics::{Metrics, UsageCounters};
/// use keyplan_runtime::{Caller, Rejection, record::KeyState};
///
/// let counters = Arc::new(UsageCounters::default());
/// let caller = Caller { consumer: "gateway".into(), generation: 2,
///                       state: KeyState::Previous, key_id: "k2".into() };
/// counters.accepted(&caller);
/// counters.rejected(Rejection::Unknown);
/// let seen = counters.snapshot();
/// assert_eq!(seen.keys[0].count, 1);
/// assert_eq!(seen.keys[0].state, KeyState::Previous);
/// assert_eq!(seen.rejections["unknown"], 1);
/// ```
#[derive(Debug, Default)]
pub struct UsageCounters {
    inner: Mutex<UsageSnapshot>,
}

impl UsageCounters {
    /// A copy of the counts.
    pub fn snapshot(&self) -> UsageSnapshot {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Metrics for UsageCounters {
    fn accepted(&self, caller: &Caller) {
        let now = Timestamp::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (caller.consumer.as_str(), caller.generation, caller.state);
        match inner
            .keys
            .binary_search_by(|k| (k.consumer.as_str(), k.generation, k.state).cmp(&key))
        {
            Ok(i) => {
                inner.keys[i].count += 1;
                inner.keys[i].last_used = now;
            }
            Err(i) => inner.keys.insert(
                i,
                KeyUsage {
                    consumer: caller.consumer.clone(),
                    generation: caller.generation,
                    state: caller.state,
                    count: 1,
                    last_used: now,
                },
            ),
        }
    }

    fn rejected(&self, rejection: Rejection) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.rejections.entry(rejection.as_str()).or_default() += 1;
    }

    fn refreshed(&self, result: Result<(), &SourceError>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => inner.refreshes_ok += 1,
            Err(_) => inner.refreshes_failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_consumer_generation_and_state() {
        let c = UsageCounters::default();
        let caller = |consumer: &str, generation, state| Caller {
            consumer: consumer.into(),
            generation,
            state,
            key_id: "id".into(),
        };
        c.accepted(&caller("gateway", 2, KeyState::Current));
        c.accepted(&caller("gateway", 1, KeyState::Previous));
        c.accepted(&caller("gateway", 2, KeyState::Current));
        c.accepted(&caller("alpha", 1, KeyState::Current));
        c.refreshed(Ok(()));
        c.refreshed(Err(&SourceError::MissingStore("/x".into())));
        let s = c.snapshot();
        let rows: Vec<(&str, u64, KeyState, u64)> = s
            .keys
            .iter()
            .map(|k| (k.consumer.as_str(), k.generation, k.state, k.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("alpha", 1, KeyState::Current, 1),
                ("gateway", 1, KeyState::Previous, 1),
                ("gateway", 2, KeyState::Current, 2),
            ]
        );
        assert_eq!((s.refreshes_ok, s.refreshes_failed), (1, 1));
    }
}
