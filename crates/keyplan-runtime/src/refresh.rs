//! Keeping a snapshot of one store path fresh: a background re-read at an
//! interval with jitter, `refresh_now()`, and a single-flight refresh when a
//! caller meets something unknown (rate-limited).
//!
//! A failed read never replaces the last good snapshot; it is recorded so the
//! owner can report staleness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use jiff::Timestamp;
use tokio::task::JoinHandle;

use crate::source::{Parameter, Source, SourceError};

/// Called after every read, with its outcome (the metrics hook).
pub(crate) type ReadHook = Box<dyn Fn(Result<(), &SourceError>) + Send + Sync>;

/// How a snapshot is built from one read and the last good snapshot.
pub(crate) trait Snapshot: Send + Sync + Sized + 'static {
    fn next(previous: Option<&Self>, read: Vec<Parameter>, now: Timestamp) -> Self;
}

/// How often, and how quickly after a miss, to re-read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) interval: Duration,
    /// Each wait is `interval × (1 ± jitter)`.
    pub(crate) jitter: f64,
    /// At most one refresh caused by a miss in this time.
    pub(crate) miss_interval: Duration,
}

/// When the last reads happened and how the last one went.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    pub(crate) loaded_at: Option<Timestamp>,
    pub(crate) last_error: Option<String>,
}

pub(crate) struct Refresher<T> {
    source: Arc<dyn Source>,
    path: String,
    pub(crate) timing: Timing,
    snapshot: RwLock<Option<Arc<T>>>,
    history: Mutex<History>,
    /// Held for the whole of one read, so reads never overlap.
    flight: tokio::sync::Mutex<()>,
    /// Completed reads, to let waiters know that one finished meanwhile.
    completed: AtomicU64,
    last_miss: Mutex<Option<tokio::time::Instant>>,
    on_read: Option<ReadHook>,
}

impl<T: Snapshot> Refresher<T> {
    pub(crate) fn new(
        source: Arc<dyn Source>,
        path: String,
        timing: Timing,
        on_read: Option<ReadHook>,
    ) -> Self {
        Self {
            source,
            path,
            timing,
            snapshot: RwLock::new(None),
            history: Mutex::new(History::default()),
            flight: tokio::sync::Mutex::new(()),
            completed: AtomicU64::new(0),
            last_miss: Mutex::new(None),
            on_read,
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The last good snapshot, if any read ever succeeded.
    pub(crate) fn snapshot(&self) -> Option<Arc<T>> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When the last successful read finished (cheap: for the request path).
    pub(crate) fn loaded_at(&self) -> Option<Timestamp> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .loaded_at
    }

    pub(crate) fn history(&self) -> History {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the store now (after any read in progress) and installs the result.
    pub(crate) async fn refresh_now(&self) -> Result<(), SourceError> {
        let _flight = self.flight.lock().await;
        self.read_and_install().await
    }

    /// How many reads have finished: taken before a check, it tells
    /// [`Refresher::refresh_after_miss`] whether a read happened since.
    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// After a miss (an unknown key, a 401) seen when `completed` was `seen`:
    /// if a read finished since, or finishes while waiting for the one in
    /// progress, nothing more is read; otherwise reads at most once per
    /// `miss_interval`. Returns whether a read finished since `seen`, i.e.
    /// whether checking again can help.
    pub(crate) async fn refresh_after_miss(&self, seen: u64) -> bool {
        if self.completed() != seen {
            return true;
        }
        let _flight = self.flight.lock().await;
        if self.completed() != seen {
            return true;
        }
        {
            let mut last = self
                .last_miss
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.timing.miss_interval) {
                return false;
            }
            *last = Some(now);
        }
        let _ = self.read_and_install().await;
        true
    }

    async fn read_and_install(&self) -> Result<(), SourceError> {
        let result = self.source.read_path(&self.path).await;
        let now = Timestamp::now();
        let outcome = match result {
            Ok(read) => {
                let previous = self.snapshot();
                let next = Arc::new(T::next(previous.as_deref(), read, now));
                *self
                    .snapshot
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(next);
                let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                history.loaded_at = Some(now);
                history.last_error = None;
                Ok(())
            }
            Err(error) => {
                let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                history.last_error = Some(error.to_string());
                Err(error)
            }
        };
        self.completed.fetch_add(1, Ordering::AcqRel);
        if let Some(hook) = &self.on_read {
            hook(outcome.as_ref().map(|_| ()));
        }
        outcome
    }
}

/// Aborts the background task when the last handle goes away.
#[derive(Debug)]
pub(crate) struct BackgroundTask(JoinHandle<()>);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts re-reading every `timing.interval` (with jitter) until `refresher`
/// is dropped.
///
/// # Panics
/// Outside a tokio runtime with its time driver enabled.
pub(crate) fn spawn<T: Snapshot>(refresher: &Arc<Refresher<T>>) -> BackgroundTask {
    let weak: Weak<Refresher<T>> = Arc::downgrade(refresher);
    let timing = refresher.timing;
    let mut jitter = Jitter::new();
    BackgroundTask(tokio::spawn(async move {
        loop {
            tokio::time::sleep(jitter.apply(timing.interval, timing.jitter)).await;
            let Some(refresher) = weak.upgrade() else {
                return;
            };
            let _ = refresher.refresh_now().await;
        }
    }))
}

/// A small xorshift generator seeded by the standard library's random hash
/// keys: enough to spread readers apart, without a dependency.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        use std::hash::{BuildHasher as _, RandomState};
        Self(RandomState::new().hash_one(std::process::id()) | 1)
    }

    fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `interval × (1 + u)` with `u` uniform in `[-jitter, +jitter]`.
    fn apply(&mut self, interval: Duration, jitter: f64) -> Duration {
        let jitter = jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * self.next_unit() - 1.0);
        interval.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let mut j = Jitter::new();
        let base = Duration::from_secs(60);
        let waits: Vec<Duration> = (0..1000).map(|_| j.apply(base, 0.1)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(54) && *w <= Duration::from_secs(66))
        );
        let min = waits.iter().min().unwrap();
        let max = waits.iter().max().unwrap();
        assert!(*max - *min > Duration::from_secs(6), "{min:?}..{max:?}");
        assert_eq!(j.apply(base, 0.0), base);
    }
}
