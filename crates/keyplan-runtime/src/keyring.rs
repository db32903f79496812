//! [`KeyRing`]: the keys one service accepts, kept fresh in the background.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::accepted::{AcceptedSet, Caller, EdgeProblem, KeyInfo, Rejection, presented_key};
use crate::config::{self, ConfigError, EnvConfig};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::record::Layout;
use crate::refresh::{self, BackgroundTask, Refresher, Snapshot, Timing};
use crate::source::{Parameter, Source};

/// How often readers re-read the store by default (keys.toml's `readers.refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
/// The default jitter: each wait is the interval ± 10 %.
pub const DEFAULT_JITTER: f64 = 0.1;
/// After this long without a successful read, a service stops accepting keys.
/// A day, so that an SSM outage does not become an outage of every service.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The clock allowance: a previous key is accepted until `until` plus this.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);
/// At most one refresh caused by unknown keys in this time.
pub const DEFAULT_MISS_REFRESH: Duration = Duration::from_secs(10);
/// Reads missed before a set is reported stale (as in keyplan's timing rules).
const TOLERATED_MISSES: u32 = 2;

impl Snapshot for AcceptedSet {
    fn next(previous: Option<&Self>, read: Vec<Parameter>, _now: Timestamp) -> Self {
        AcceptedSet::from_documents(
            previous,
            read.into_iter()
                .map(|p| (p.leaf().to_owned(), p.value.as_str().to_owned())),
        )
    }
}

/// How current a key set is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The last read succeeded, recently.
    Fresh,
    /// The last read failed, or reads have been missed: the last good set is
    /// still used. Worth an alert.
    Stale,
    /// No successful read for longer than the maximum age: nothing is accepted.
    Expired,
    /// No read ever succeeded: nothing is accepted.
    NeverLoaded,
}

/// What a [`KeyRing`] holds and how current it is, for health checks and operators.
#[derive(Clone, Debug)]
pub struct Status {
    pub service: String,
    /// The store path read.
    pub path: String,
    pub freshness: Freshness,
    /// When the last successful read finished.
    pub loaded_at: Option<Timestamp>,
    /// How long ago that was.
    pub age: Option<SignedDuration>,
    /// Why the last read failed, if it did.
    pub last_error: Option<String>,
    /// Every accepted key, with its age.
    pub keys: Vec<KeyInfo>,
    /// Consumers whose last document could not be used (an unknown `v`...).
    pub problems: Vec<EdgeProblem>,
}

/// The keys a service accepts, read from `{prefix}/{env}/services/{service}/accepts`
/// and re-read in the background.
///
/// Cheap to clone: clones share the set and the background task, which stops
/// when the last clone is dropped.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyplan_runtime::Error> {
/// use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, KeyState, Layout, digest};
/// use keyplan_runtime::{KeyRing, source::MemoryStore};
///
/// // What `keyplan apply` writes (a `LocalStore` or `SsmStore` in production).
/// let store = MemoryStore::default();
/// let layout = Layout::new("/keyplan", "dev");
/// let now = jiff::Timestamp::now();
/// let doc = AcceptsDocument::new(vec![AcceptedKey {
///     id: "k1".into(), generation: 1, sha256: digest(b"gateway-key-0123456789"),
///     state: KeyState::Current, due: now, staged: now, until: None,
/// }]);
/// store.put(layout.accepts("catalog", "gateway"), doc.to_json().unwrap());
///
/// let ring = KeyRing::builder("catalog")
///     .store(store)
///     .environment("dev")
///     .build()
///     .await?;
/// let caller = ring.check([&b"gateway-key-0123456789"[..]]).unwrap();
/// assert_eq!((caller.consumer.as_str(), caller.generation), ("gateway", 1));
/// assert!(ring.check([&b"someone-elses-key-000"[..]]).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    refresher: Arc<Refresher<AcceptedSet>>,
    skew: SignedDuration,
    max_age: Duration,
    metrics: Option<Arc<dyn Metrics>>,
    _task: BackgroundTask,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("service", &self.inner.service)
            .field("path", &self.inner.refresher.path())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A builder for the key ring of `service`.
    pub fn builder(service: impl Into<String>) -> KeyRingBuilder {
        KeyRingBuilder {
            service: service.into(),
            reader: ReaderSettings::default(),
            max_age: DEFAULT_MAX_AGE,
            skew: DEFAULT_SKEW,
            metrics: None,
        }
    }

    /// The key ring of `KEYPLAN_SERVICE`, from `KEYPLAN_STORE`, `KEYPLAN_PREFIX`
    /// and `KEYPLAN_ENV`, with the default timings. `KEYPLAN_STORE=ssm` uses the
    /// default AWS configuration (feature `ssm`).
    ///
    /// # Errors
    /// A missing or invalid variable, a store whose feature is off, or a first
    /// read that failed.
    pub async fn from_env() -> Result<KeyRing, Error> {
        Self::builder_from_env().await?.build().await
    }

    /// A builder preset from the environment, to change timings before
    /// `build()`.
    ///
    /// # Errors
    /// As [`KeyRing::from_env`], apart from the first read.
    pub async fn builder_from_env() -> Result<KeyRingBuilder, Error> {
        let env = EnvConfig::from_lookup("KEYPLAN_SERVICE", |k| std::env::var(k).ok())?;
        let source = config::open_store(&env.store).await?;
        Ok(Self::builder(env.name)
            .shared_store(source)
            .prefix(env.prefix)
            .environment(env.environment))
    }

    /// The service whose keys these are.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Checks the values of the key header against the set held now, without
    /// reading the store. See [`KeyRing::authenticate`] for the version that
    /// refreshes once when a well-formed key matches nothing.
    ///
    /// # Errors
    /// The [`Rejection`]: a bad header, an unknown or expired key, or a set
    /// that is unavailable (never read, or older than the maximum age).
    pub fn check<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Caller, Rejection> {
        self.check_at(values, Timestamp::now())
    }

    /// [`KeyRing::check`] at the instant `now`, for tests and simulations.
    ///
    /// # Errors
    /// As [`KeyRing::check`].
    pub fn check_at<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
        now: Timestamp,
    ) -> Result<Caller, Rejection> {
        let result = presented_key(values).and_then(|key| self.check_key_at(key, now));
        self.record(&result);
        result
    }

    /// Checks like [`KeyRing::check`]; when a well-formed key matches nothing,
    /// reads the store once (at most once per 10 s for the whole ring, joining
    /// a read in progress) and checks again.
    ///
    /// # Errors
    /// As [`KeyRing::check`].
    pub async fn authenticate<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Caller, Rejection> {
        let seen = self.inner.refresher.completed();
        let result = match presented_key(values) {
            Ok(key) => match self.check_key_at(key, Timestamp::now()) {
                Err(Rejection::Unknown) => self.recheck_after_miss(key, seen).await,
                other => other,
            },
            Err(rejection) => Err(rejection),
        };
        self.record(&result);
        result
    }

    /// Reads the store now and replaces the set (after any read in progress).
    ///
    /// # Errors
    /// [`Error::Store`] when the read failed; the last good set stays in use.
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

    /// What the ring holds and how current it is.
    pub fn status(&self) -> Status {
        self.status_at(Timestamp::now())
    }

    /// [`KeyRing::status`] at the instant `now`.
    pub fn status_at(&self, now: Timestamp) -> Status {
        let refresher = &self.inner.refresher;
        let history = refresher.history();
        let set = refresher.snapshot();
        let age = history.loaded_at.map(|t| now.duration_since(t));
        Status {
            service: self.inner.service.clone(),
            path: refresher.path().to_owned(),
            freshness: self.freshness(age, history.last_error.is_some()),
            loaded_at: history.loaded_at,
            age,
            last_error: history.last_error,
            keys: set.as_ref().map(|s| s.key_info(now)).unwrap_or_default(),
            problems: set.as_ref().map(|s| s.problems()).unwrap_or_default(),
        }
    }

    fn freshness(&self, age: Option<SignedDuration>, failed: bool) -> Freshness {
        let Some(age) = age else {
            return Freshness::NeverLoaded;
        };
        let age = age.max(SignedDuration::ZERO).unsigned_abs();
        let timing = self.inner.refresher.timing;
        let tolerated = timing
            .interval
            .mul_f64((1.0 + timing.jitter) * f64::from(TOLERATED_MISSES + 1));
        if age > self.inner.max_age {
            Freshness::Expired
        } else if failed || age > tolerated {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }

    pub(crate) fn check_key_at(&self, key: &[u8], now: Timestamp) -> Result<Caller, Rejection> {
        let refresher = &self.inner.refresher;
        let age = refresher.loaded_at().map(|t| now.duration_since(t));
        if matches!(
            self.freshness(age, false),
            Freshness::Expired | Freshness::NeverLoaded
        ) {
            return Err(Rejection::Unavailable);
        }
        let set = refresher.snapshot().ok_or(Rejection::Unavailable)?;
        set.check(key, now, self.inner.skew)
    }

    /// How many reads have finished; take it before a check that may miss.
    #[cfg(feature = "server")]
    pub(crate) fn reads_completed(&self) -> u64 {
        self.inner.refresher.completed()
    }

    /// After an unknown key checked when [`KeyRing::reads_completed`] was
    /// `seen`: one rate-limited, single-flight read, then a re-check.
    pub(crate) async fn recheck_after_miss(
        &self,
        key: &[u8],
        seen: u64,
    ) -> Result<Caller, Rejection> {
        if self.inner.refresher.refresh_after_miss(seen).await {
            self.check_key_at(key, Timestamp::now())
        } else {
            Err(Rejection::Unknown)
        }
    }

    pub(crate) fn record(&self, result: &Result<Caller, Rejection>) {
        if let Some(metrics) = &self.inner.metrics {
            match result {
                Ok(caller) => metrics.accepted(caller),
                Err(rejection) => metrics.rejected(*rejection),
            }
        }
    }
}

/// Where a reader reads: the store, the prefix and the environment, with its timings.
#[derive(Clone)]
pub(crate) struct ReaderSettings {
    pub(crate) source: Option<Arc<dyn Source>>,
    pub(crate) prefix: String,
    pub(crate) environment: Option<String>,
    pub(crate) timing: Timing,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        Self {
            source: None,
            prefix: config::DEFAULT_PREFIX.to_owned(),
            environment: None,
            timing: Timing {
                interval: DEFAULT_REFRESH,
                jitter: DEFAULT_JITTER,
                miss_interval: DEFAULT_MISS_REFRESH,
            },
        }
    }
}

impl ReaderSettings {
    /// The source and layout, once every setting is checked.
    pub(crate) fn resolve(&self, name: &str) -> Result<(Arc<dyn Source>, Layout), ConfigError> {
        let source = self
            .source
            .clone()
            .ok_or_else(|| ConfigError::Setting("no store: call `.store(..)`".into()))?;
        let environment = self.environment.as_deref().ok_or_else(|| {
            ConfigError::Setting("no environment: call `.environment(..)`".into())
        })?;
        config::check_prefix(&self.prefix).map_err(ConfigError::Setting)?;
        config::check_name(environment).map_err(ConfigError::Setting)?;
        config::check_name(name).map_err(ConfigError::Setting)?;
        if self.timing.interval.is_zero() {
            return Err(ConfigError::Setting(
                "the refresh interval must not be zero".into(),
            ));
        }
        Ok((source, Layout::new(&self.prefix, environment)))
    }
}

/// Settings of a [`KeyRing`]; [`KeyRingBuilder::build`] makes the first read.
#[must_use = "a builder does nothing until `.build().await`"]
pub struct KeyRingBuilder {
    service: String,
    reader: ReaderSettings,
    max_age: Duration,
    skew: Duration,
    metrics: Option<Arc<dyn Metrics>>,
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field("service", &self.service)
            .field("store", &self.reader.source)
            .field("prefix", &self.reader.prefix)
            .field("environment", &self.reader.environment)
            .field("timing", &self.reader.timing)
            .field("max_age", &self.max_age)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

macro_rules! reader_settings {
    ($builder:ty) => {
        impl $builder {
            /// The store to read: [`LocalStore`](crate::source::LocalStore),
            /// [`SsmStore`](crate::source::SsmStore) or your own [`Source`].
            pub fn store(self, source: impl Source) -> Self {
                self.shared_store(Arc::new(source))
            }

            /// The store, already shared.
            pub fn shared_store(mut self, source: Arc<dyn Source>) -> Self {
                self.reader.source = Some(source);
                self
            }

            /// The SSM store, read through `client`.
            #[cfg(feature = "ssm")]
            pub fn ssm(self, client: aws_sdk_ssm::Client) -> Self {
                self.store(crate::source::SsmStore::new(client))
            }

            /// The local store in `dir`.
            #[cfg(feature = "local")]
            pub fn local(self, dir: impl Into<std::path::PathBuf>) -> Self {
                self.store(crate::source::LocalStore::new(dir))
            }

            /// The store prefix (default `/keyplan`).
            pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
                self.reader.prefix = prefix.into();
                self
            }

            /// The environment's name (required).
            pub fn environment(mut self, environment: impl Into<String>) -> Self {
                self.reader.environment = Some(environment.into());
                self
            }

            /// How often to re-read the store (default 60 s).
            pub fn refresh_every(mut self, interval: Duration) -> Self {
                self.reader.timing.interval = interval;
                self
            }

            /// The jitter of the refresh interval, a fraction in `[0, 1]` (default 0.1).
            pub fn jitter(mut self, fraction: f64) -> Self {
                self.reader.timing.jitter = fraction.clamp(0.0, 1.0);
                self
            }

            /// At most one refresh caused by an unknown key (or a 401) in this
            /// time (default 10 s).
            pub fn miss_refresh_every(mut self, interval: Duration) -> Self {
                self.reader.timing.miss_interval = interval;
                self
            }
        }
    };
}

reader_settings!(KeyRingBuilder);
reader_settings!(crate::consumer::ConsumerKeysBuilder);

impl KeyRingBuilder {
    /// After this long without a successful read the ring accepts nothing
    /// (default one day). Until then a failed read keeps the last good set.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The clock allowance past a previous key's `until` (default 1 minute).
    pub fn skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Called on every check and refresh, e.g. [`UsageCounters`](crate::metrics::UsageCounters).
    pub fn metrics(mut self, metrics: impl Metrics) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    /// Makes the first read and starts refreshing in the background.
    ///
    /// # Errors
    /// A missing or invalid setting, or a first read that failed (there is no
    /// last good set yet; retry, or let the service fail to start).
    ///
    /// # Panics
    /// Outside a tokio runtime with its time driver enabled.
    pub async fn build(self) -> Result<KeyRing, Error> {
        let (source, layout) = self.reader.resolve(&self.service)?;
        let skew = SignedDuration::try_from(self.skew)
            .map_err(|_| ConfigError::Setting("the skew allowance is too large".into()))?;
        if self.max_age < self.reader.timing.interval {
            return Err(ConfigError::Setting(
                "the maximum age is shorter than the refresh interval".into(),
            )
            .into());
        }
        let on_read = self.metrics.clone().map(|m| {
            Box::new(move |r: Result<(), &crate::source::SourceError>| m.refreshed(r))
                as refresh::ReadHook
        });
        let path = layout.service_accepts_path(&self.service);
        let refresher = Arc::new(Refresher::new(
            source,
            path.clone(),
            self.reader.timing,
            on_read,
        ));
        refresher
            .refresh_now()
            .await
            .map_err(|source| Error::Store { path, source })?;
        let task = refresh::spawn(&refresher);
        Ok(KeyRing {
            inner: Arc::new(Inner {
                service: self.service,
                refresher,
                skew,
                max_age: self.max_age,
                metrics: self.metrics,
                _task: task,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AcceptedKey, AcceptsDocument, KeyState, digest};
    use crate::source::MemoryStore;

    const K1: &str = "gateway-key-generation-1-aaaaaaaaaaaa";
    const K2: &str = "gateway-key-generation-2-bbbbbbbbbbbb";

    fn current(key: &str, generation: u64) -> String {
        let now = Timestamp::now();
        AcceptsDocument::new(vec![AcceptedKey {
            id: format!("id-{generation}"),
            generation,
            sha256: digest(key.as_bytes()),
            state: KeyState::Current,
            due: now,
            staged: now,
            until: None,
        }])
        .to_json()
        .unwrap()
    }

    async fn ring(store: &MemoryStore) -> KeyRing {
        KeyRing::builder("catalog")
            .store(store.clone())
            .environment("test")
            .refresh_every(Duration::from_secs(3600))
            .build()
            .await
            .unwrap()
    }

    const PATH: &str = "/keyplan/test/services/catalog/accepts/gateway";

    #[tokio::test]
    async fn an_unknown_version_keeps_the_last_good_set_and_is_reported() {
        let store = MemoryStore::default();
        store.put(PATH, current(K1, 1));
        let ring = ring(&store).await;
        store.put(PATH, r#"{"v":2,"keys":[{"something":"new"}]}"#);
        ring.refresh_now().await.unwrap();
        assert_eq!(ring.check([K1.as_bytes()]).unwrap().generation, 1);
        let status = ring.status();
        assert_eq!(status.freshness, Freshness::Fresh);
        assert_eq!(status.problems.len(), 1);
        assert!(status.problems[0].problem.contains("version 2"));
        // A later good document replaces it and clears the problem.
        store.put(PATH, current(K2, 2));
        ring.refresh_now().await.unwrap();
        assert_eq!(ring.check([K1.as_bytes()]), Err(Rejection::Unknown));
        assert!(ring.status().problems.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_unknown_keys_share_one_read() {
        let store = MemoryStore::default();
        store.put(PATH, current(K1, 1));
        let ring = ring(&store).await;
        store.put(PATH, current(K2, 2));
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let ring = ring.clone();
                tokio::spawn(async move { ring.authenticate([K2.as_bytes()]).await })
            })
            .collect();
        for check in checks {
            assert_eq!(check.await.unwrap().unwrap().generation, 2);
        }
        assert_eq!(
            store.reads(),
            2,
            "one read at build, one for all the misses"
        );
    }

    #[tokio::test]
    async fn staleness_follows_failures_and_missed_reads() {
        let store = MemoryStore::default();
        store.put(PATH, current(K1, 1));
        let ring = ring(&store).await;
        let loaded = ring.status().loaded_at.unwrap();
        assert_eq!(ring.status_at(loaded).freshness, Freshness::Fresh);
        // Three intervals (with jitter) without a read: stale, still accepting.
        let late = loaded + SignedDuration::from_hours(4);
        assert_eq!(ring.status_at(late).freshness, Freshness::Stale);
        assert!(ring.check_at([K1.as_bytes()], late).is_ok());
        store.set_failing(true);
        assert!(ring.refresh_now().await.is_err());
        assert_eq!(ring.status().freshness, Freshness::Stale);
        let expired = loaded + SignedDuration::from_hours(24) + SignedDuration::from_secs(1);
        assert_eq!(ring.status_at(expired).freshness, Freshness::Expired);
        assert_eq!(
            ring.check_at([K1.as_bytes()], expired),
            Err(Rejection::Unavailable)
        );
    }

    #[tokio::test]
    async fn settings_are_checked_and_a_failed_first_read_is_an_error() {
        let store = MemoryStore::default();
        let error = KeyRing::builder("catalog")
            .store(store.clone())
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("environment"), "{error}");
        let error = KeyRing::builder("Bad/Name")
            .store(store.clone())
            .environment("test")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{error}");
        store.set_failing(true);
        let error = KeyRing::builder("catalog")
            .store(store)
            .environment("test")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Store { .. }), "{error}");
    }
}
