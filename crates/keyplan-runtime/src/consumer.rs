//! [`ConsumerKeys`]: the keys one consumer sends, kept fresh in the background.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{self, EnvConfig};
use crate::error::Error;
use crate::keyring::ReaderSettings;
use crate::record::Layout;
use crate::refresh::{self, BackgroundTask, Refresher, Snapshot};
use crate::secret::ApiKey;
use crate::source::Parameter;

/// How long a replaced key is kept to be tried once on a 401.
pub const DEFAULT_FALLBACK_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The keys read at one time, and the keys they replaced.
#[derive(Default)]
struct HeldKeys {
    current: BTreeMap<String, ApiKey>,
    /// Per service: the key replaced by `current`, and when that was seen.
    previous: BTreeMap<String, (ApiKey, Timestamp)>,
}

impl Snapshot for HeldKeys {
    fn next(previous: Option<&Self>, read: Vec<Parameter>, now: Timestamp) -> Self {
        let mut next = HeldKeys::default();
        for parameter in read {
            let service = parameter.leaf().to_owned();
            // Keys are visible ASCII; a trailing newline from a hand-edited file is not part of one.
            let key = ApiKey::new(parameter.value.trim());
            if let Some(old) = previous.and_then(|p| p.current.get(&service)) {
                if *old != key {
                    next.previous.insert(service.clone(), (old.clone(), now));
                } else if let Some(kept) = previous.and_then(|p| p.previous.get(&service)) {
                    next.previous.insert(service.clone(), kept.clone());
                }
            }
            next.current.insert(service, key);
        }
        next
    }
}

/// The keys a consumer sends, read from `{prefix}/{env}/consumers/{consumer}/keys`
/// and re-read in the background.
///
/// When a key changes, the one it replaced is kept in memory for a fallback
/// window and tried once on a 401 (see [`ConsumerKeys::after_unauthorized`]).
/// Cheap to clone; the background task stops with the last clone.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyplan_runtime::Error> {
/// use keyplan_runtime::{ConsumerKeys, source::MemoryStore};
///
/// let store = MemoryStore::default(); // a `LocalStore` or `SsmStore` in production
/// store.put("/keyplan/dev/consumers/gateway/keys/catalog", "gateway-key-0123456789");
///
/// let gateway = ConsumerKeys::builder("gateway")
///     .store(store)
///     .environment("dev")
///     .build()
///     .await?;
/// assert_eq!(gateway.key_for("catalog")?.expose(), "gateway-key-0123456789");
/// assert!(gateway.key_for("billing").is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConsumerKeys {
    inner: Arc<Inner>,
}

struct Inner {
    consumer: String,
    refresher: Arc<Refresher<HeldKeys>>,
    fallback_window: Duration,
    _task: BackgroundTask,
}

impl fmt::Debug for ConsumerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerKeys")
            .field("consumer", &self.inner.consumer)
            .field("path", &self.inner.refresher.path())
            .finish_non_exhaustive()
    }
}

impl ConsumerKeys {
    /// A builder for the keys of `consumer`.
    pub fn builder(consumer: impl Into<String>) -> ConsumerKeysBuilder {
        ConsumerKeysBuilder {
            consumer: consumer.into(),
            reader: ReaderSettings::default(),
            fallback_window: DEFAULT_FALLBACK_WINDOW,
        }
    }

    /// The keys of `KEYPLAN_CONSUMER`, from `KEYPLAN_STORE`, `KEYPLAN_PREFIX`
    /// and `KEYPLAN_ENV`. `KEYPLAN_STORE=ssm` uses the default AWS
    /// configuration (feature `ssm`).
    ///
    /// # Errors
    /// A missing or invalid variable, a store whose feature is off, or a first
    /// read that failed.
    pub async fn from_env() -> Result<ConsumerKeys, Error> {
        Self::builder_from_env().await?.build().await
    }

    /// A builder preset from the environment.
    ///
    /// # Errors
    /// As [`ConsumerKeys::from_env`], apart from the first read.
    pub async fn builder_from_env() -> Result<ConsumerKeysBuilder, Error> {
        let env = EnvConfig::from_lookup("KEYPLAN_CONSUMER", |k| std::env::var(k).ok())?;
        let source = config::open_store(&env.store).await?;
        Ok(Self::builder(env.name)
            .shared_store(source)
            .prefix(env.prefix)
            .environment(env.environment))
    }

    /// The consumer whose keys these are.
    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    /// The key to send to `service`.
    ///
    /// # Errors
    /// [`Error::NoKey`] when the store holds none for it (the edge is not
    /// declared, or was revoked).
    pub fn key_for(&self, service: &str) -> Result<ApiKey, Error> {
        self.inner
            .refresher
            .snapshot()
            .and_then(|held| held.current.get(service).cloned())
            .ok_or_else(|| Error::NoKey {
                service: service.to_owned(),
                path: self.inner.refresher.path().to_owned(),
            })
    }

    /// What to try after `service` answered 401 to `sent`: reads the store
    /// (single-flight, at most once per 10 s, or joins a read in progress),
    /// then lists, in order, the current key if it differs from `sent`, and
    /// the key it replaced if that changed within the fallback window. Each is
    /// meant to be tried once; an empty list means "give up".
    pub async fn after_unauthorized(&self, service: &str, sent: &ApiKey) -> Vec<ApiKey> {
        let seen = self.inner.refresher.completed();
        self.inner.refresher.refresh_after_miss(seen).await;
        let Some(held) = self.inner.refresher.snapshot() else {
            return Vec::new();
        };
        let mut candidates: Vec<ApiKey> = Vec::new();
        if let Some(current) = held.current.get(service)
            && current != sent
        {
            candidates.push(current.clone());
        }
        if let Some((previous, replaced_at)) = held.previous.get(service) {
            let age = Timestamp::now().duration_since(*replaced_at);
            let in_window = age.unsigned_abs() <= self.inner.fallback_window;
            if in_window && previous != sent && !candidates.contains(previous) {
                candidates.push(previous.clone());
            }
        }
        candidates
    }

    /// Reads the store now and replaces the keys (after any read in progress).
    ///
    /// # Errors
    /// [`Error::Store`] when the read failed; the last good keys stay in use.
    pub async fn refresh_now(&self) -> Result<(), Error> {
        self.inner
            .refresher
            .refresh_now()
            .await
            .map_err(|source| Error::Store {
                path: self.inner.refresher.path().to_owned(),
                source,
            })
    }

    /// When the last successful read finished, and why the last read failed
    /// if it did.
    pub fn last_read(&self) -> (Option<Timestamp>, Option<String>) {
        let history = self.inner.refresher.history();
        (history.loaded_at, history.last_error)
    }
}

/// Settings of a [`ConsumerKeys`]; [`ConsumerKeysBuilder::build`] makes the first read.
#[must_use = "a builder does nothing until `.build().await`"]
pub struct ConsumerKeysBuilder {
    consumer: String,
    pub(crate) reader: ReaderSettings,
    fallback_window: Duration,
}

impl fmt::Debug for ConsumerKeysBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerKeysBuilder")
            .field("consumer", &self.consumer)
            .field("store", &self.reader.source)
            .field("prefix", &self.reader.prefix)
            .field("environment", &self.reader.environment)
            .field("timing", &self.reader.timing)
            .field("fallback_window", &self.fallback_window)
            .finish_non_exhaustive()
    }
}

impl ConsumerKeysBuilder {
    /// How long a replaced key is kept and tried once on a 401 (default 10 minutes).
    pub fn fallback_window(mut self, window: Duration) -> Self {
        self.fallback_window = window;
        self
    }

    /// Makes the first read and starts refreshing in the background.
    ///
    /// # Errors
    /// A missing or invalid setting, or a first read that failed.
    ///
    /// # Panics
    /// Outside a tokio runtime with its time driver enabled.
    pub async fn build(self) -> Result<ConsumerKeys, Error> {
        let (source, layout): (_, Layout) = self.reader.resolve(&self.consumer)?;
        let path = layout.consumer_keys_path(&self.consumer);
        let refresher = Arc::new(Refresher::new(
            source,
            path.clone(),
            self.reader.timing,
            None,
        ));
        refresher
            .refresh_now()
            .await
            .map_err(|source| Error::Store { path, source })?;
        let task = refresh::spawn(&refresher);
        Ok(ConsumerKeys {
            inner: Arc::new(Inner {
                consumer: self.consumer,
                refresher,
                fallback_window: self.fallback_window,
                _task: task,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Vec<Parameter> {
        pairs
            .iter()
            .map(|(service, key)| Parameter {
                name: format!("/keyplan/dev/consumers/gateway/keys/{service}"),
                value: Zeroizing::new((*key).to_owned()),
            })
            .collect()
    }

    #[test]
    fn a_changed_key_keeps_the_one_it_replaced() {
        let t1: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let t2: Timestamp = "2027-01-01T00:01:00Z".parse().unwrap();
        let first = HeldKeys::next(None, read(&[("catalog", "k1\n"), ("billing", "b1")]), t1);
        assert_eq!(first.current["catalog"].expose(), "k1");
        assert!(first.previous.is_empty());
        let second = HeldKeys::next(
            Some(&first),
            read(&[("catalog", "k2"), ("billing", "b1")]),
            t2,
        );
        assert_eq!(second.current["catalog"].expose(), "k2");
        assert_eq!(second.previous["catalog"].0.expose(), "k1");
        assert_eq!(second.previous["catalog"].1, t2);
        assert!(!second.previous.contains_key("billing"));
        // An unchanged read keeps the remembered key and when it was replaced.
        let third = HeldKeys::next(
            Some(&second),
            read(&[("catalog", "k2")]),
            t2 + jiff::SignedDuration::from_secs(60),
        );
        assert_eq!(third.previous["catalog"].1, t2);
        assert!(!third.current.contains_key("billing"));
    }
}
