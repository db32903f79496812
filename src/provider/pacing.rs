//! Building blocks of a long apply, generic over the store and the lock:
//! write pacing, `--max-duration`, `--lock-timeout` and the parameter-count
//! guard. (Lease renewal is `apply::Lease`, checked before every write.)

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::provider::{Lock, LockError, LockRecord, ProviderError};

/// Spaces writes evenly: SSM allows about 3 PutParameter a second per
/// account, shared with every other writer, so keyplan stays under it rather
/// than leaning on throttling retries.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// At most `rate` writes a second (a non-positive rate turns pacing off).
    pub fn per_second(rate: f64) -> Self {
        let interval =
            (rate > 0.0 && rate.is_finite()).then(|| Duration::from_secs_f64(1.0 / rate));
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// No pacing (tests, and the local store).
    pub fn off() -> Self {
        Self {
            interval: None,
            next: Mutex::new(None),
        }
    }

    /// Waits for this write's turn.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self
                .next
                .lock()
                .expect("the pacer's lock is never poisoned");
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// `apply --max-duration`: after it, no new step starts; the next run does the
/// rest (a step already started is finished, so the store stays consistent).
#[derive(Clone, Copy, Debug)]
pub struct StepDeadline {
    end: Option<Instant>,
}

impl StepDeadline {
    /// From now, for `max` (`None`: no limit).
    pub fn new(max: Option<Duration>) -> Self {
        Self {
            end: max.map(|m| Instant::now() + m),
        }
    }

    /// Whether a new step may start.
    pub fn may_start(&self) -> bool {
        self.end.is_none_or(|end| Instant::now() < end)
    }
}

/// `--lock-timeout`: tries to take the lock until `timeout` has passed,
/// looking again every `poll`. `on_wait` hears, once, who holds it.
/// `record(now)` builds the record for each attempt (its times move on).
///
/// # Errors
/// The last [`LockError::Held`] when the time is up, or any other error at once.
pub async fn acquire_with_timeout(
    lock: &dyn Lock,
    record: &mut dyn FnMut(Timestamp) -> LockRecord,
    timeout: Duration,
    poll: Duration,
    on_wait: &mut dyn FnMut(&LockRecord),
) -> Result<LockRecord, LockError> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let now = Timestamp::now();
        let attempt = record(now);
        match lock.acquire(&attempt, now).await {
            Ok(()) => return Ok(attempt),
            Err(LockError::Held(holder)) => {
                let elapsed = start.elapsed();
                if elapsed >= timeout {
                    return Err(LockError::Held(holder));
                }
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                tokio::time::sleep(poll.min(timeout - elapsed)).await;
            }
            Err(other) => return Err(other),
        }
    }
}

/// The parameter-count guard: refuses a plan that would take the store past
/// `max` parameters (Standard tier: 10,000 per account and region, shared with
/// everything else there).
///
/// # Errors
/// A message with the numbers and a hint.
pub fn check_parameter_count(
    existing: usize,
    to_create: usize,
    max: usize,
) -> Result<(), ProviderError> {
    let after = existing.saturating_add(to_create);
    if after <= max {
        return Ok(());
    }
    Err(ProviderError::Remote(format!(
        "this plan would bring the store to {after} parameters ({existing} now, {to_create} new), \
         over store.max_parameters = {max}; hint: remove edges, use a separate account or region, \
         or raise store.max_parameters if the account allows it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::local::{LocalDir, LocalLock};
    use jiff::SignedDuration;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_writes() {
        let pacer = Pacer::per_second(3.0);
        let start = Instant::now();
        for _ in 0..7 {
            pacer.wait().await;
        }
        // The first write goes at once, the next six a third of a second apart.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1999), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2100), "{elapsed:?}");

        let off = Pacer::off();
        let start = Instant::now();
        for _ in 0..100 {
            off.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_stops_new_steps() {
        let deadline = StepDeadline::new(Some(Duration::from_secs(10)));
        assert!(deadline.may_start());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(!deadline.may_start());
        assert!(StepDeadline::new(None).may_start());
    }

    #[test]
    fn parameter_count_guard_stops_before_the_limit() {
        assert!(check_parameter_count(9_000, 1_000, 10_000).is_ok());
        let error = check_parameter_count(9_000, 1_001, 10_000)
            .unwrap_err()
            .to_string();
        assert!(error.contains("10001 parameters"), "{error}");
        assert!(error.contains("hint:"), "{error}");
    }

    fn record(id: &str, now: Timestamp, lease_secs: i64) -> LockRecord {
        LockRecord {
            id: id.into(),
            holder: format!("holder-{id}"),
            operation: "apply".into(),
            started: now,
            expires: now + SignedDuration::from_secs(lease_secs),
        }
    }

    #[tokio::test]
    async fn lock_timeout_waits_then_names_the_holder() {
        let temp = tempfile::tempdir().unwrap();
        let dir = LocalDir::new(temp.path().to_path_buf(), "t");
        let lock = LocalLock::new(&dir, "/kp/dev/keyplan/lock");
        let now = Timestamp::now();
        lock.acquire(&record("a", now, 600), now).await.unwrap();

        let mut told = Vec::new();
        let error = acquire_with_timeout(
            &lock,
            &mut |now| record("b", now, 600),
            Duration::from_millis(300),
            Duration::from_millis(50),
            &mut |holder| told.push(holder.holder.clone()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&error, LockError::Held(h) if h.id == "a"),
            "{error}"
        );
        assert_eq!(told, ["holder-a"]);

        // Released while we wait: we get it.
        let lock = Arc::new(lock);
        let releaser = {
            let lock = lock.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                lock.release(&record("a", now, 600)).await.unwrap();
            })
        };
        let got = acquire_with_timeout(
            lock.as_ref(),
            &mut |now| record("c", now, 600),
            Duration::from_secs(5),
            Duration::from_millis(20),
            &mut |_| {},
        )
        .await
        .unwrap();
        releaser.await.unwrap();
        assert_eq!(got.id, "c");
    }
}
