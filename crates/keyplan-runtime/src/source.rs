//! Where the keys are read from: SSM Parameter Store ([`SsmStore`], feature
//! `ssm`), the local directory store ([`LocalStore`], feature `local`), or any
//! [`Source`] of your own (a fake in tests).
//!
//! A reader reads exactly one path, by path and non-recursively:
//! `.../services/{service}/accepts` or `.../consumers/{consumer}/keys`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use zeroize::Zeroizing;

/// A boxed, sendable future: what [`Source::read_path`] returns, so sources
/// can be chosen at run time (`from_env()`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One parameter read from the store. Its value may be a key: `Debug` hides it.
pub struct Parameter {
    /// The full name, e.g. `/keyplan/prod/services/catalog/accepts/gateway`.
    pub name: String,
    /// The value, wiped from memory when dropped.
    pub value: Zeroizing<String>,
}

impl Parameter {
    /// The last segment of the name: the consumer (for accepts) or the
    /// service (for a consumer's keys).
    pub fn leaf(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

impl fmt::Debug for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parameter")
            .field("name", &self.name)
            .field("value", &"REDACTED")
            .finish()
    }
}

/// Why a read of the store failed. Never carries a parameter's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The local store's directory does not exist (or is not a directory).
    #[error("the local store {0} does not exist")]
    MissingStore(String),
    /// A file of the local store could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A parameter's value is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(String),
    /// SSM refused or failed the read (the SDK's message, with its causes).
    #[error("SSM GetParametersByPath {path}: {message}")]
    Ssm { path: String, message: String },
    /// The read task stopped before it answered.
    #[error("the read of {0} was cancelled")]
    Cancelled(String),
}

/// Something that lists the parameters directly under a path.
///
/// # Examples
///
/// A fixed source, as a test might use:
///
/// ```
/// use keyplan_runtime::source::{BoxFuture, Parameter, Source, SourceError};
///
/// #[derive(Debug)]
/// struct Fixed(Vec<(String, String)>);
///
/// impl Source for Fixed {
///     fn read_path<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
///         Box::pin(async move {
///             Ok(self.0.iter()
///                 .filter(|(name, _)| name.rsplit_once('/').is_some_and(|(dir, _)| dir == path))
///                 .map(|(name, value)| Parameter { name: name.clone(), value: value.clone().into() })
///                 .collect())
///         })
///     }
/// }
/// ```
pub trait Source: Send + Sync + fmt::Debug + 'static {
    /// Every parameter directly under `path` (not below), with its value
    /// decrypted. A path with nothing under it gives an empty list.
    ///
    /// # Errors
    /// When the store cannot be read; the caller keeps its last good set.
    fn read_path<'a>(&'a self, path: &'a str)
    -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>>;
}

/// A store in memory, for tests of code that uses this crate: put and delete
/// parameters, make reads fail, count reads.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use keyplan_runtime::source::{MemoryStore, Source};
///
/// let store = MemoryStore::default();
/// store.put("/keyplan/dev/consumers/gateway/keys/catalog", "the-key");
/// store.put("/keyplan/dev/consumers/gateway/keys/deeper/not-listed", "x");
/// let read = store.read_path("/keyplan/dev/consumers/gateway/keys").await.unwrap();
/// assert_eq!(read.len(), 1);
/// store.set_failing(true);
/// assert!(store.read_path("/keyplan/dev/consumers/gateway/keys").await.is_err());
/// assert_eq!(store.reads(), 2);
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: std::sync::Arc<std::sync::Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    parameters: std::collections::BTreeMap<String, Zeroizing<String>>,
    failing: bool,
    reads: u64,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates or replaces parameter `name`.
    pub fn put(&self, name: impl Into<String>, value: impl Into<String>) {
        self.lock()
            .parameters
            .insert(name.into(), Zeroizing::new(value.into()));
    }

    /// Deletes parameter `name`.
    pub fn delete(&self, name: &str) {
        self.lock().parameters.remove(name);
    }

    /// Makes every read fail (as an outage would) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// How many reads were attempted.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }
}

impl Source for MemoryStore {
    fn read_path<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
        let result = {
            let mut inner = self.lock();
            inner.reads += 1;
            if inner.failing {
                Err(SourceError::MissingStore(
                    "memory (failing on purpose)".into(),
                ))
            } else {
                let path = path.trim_end_matches('/');
                Ok(inner
                    .parameters
                    .iter()
                    .filter(|(name, _)| name.rsplit_once('/').is_some_and(|(dir, _)| dir == path))
                    .map(|(name, value)| Parameter {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect())
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(feature = "local")]
pub use local::LocalStore;

#[cfg(feature = "local")]
mod local {
    use std::io;
    use std::path::{Path, PathBuf};

    use zeroize::Zeroizing;

    use super::{BoxFuture, Parameter, Source, SourceError};

    /// The local store: parameter `{name}` is the file `{dir}{name}`.
    ///
    /// Writers replace files atomically (a temporary file, then a rename), so
    /// a read never sees half a value; temporary files (names starting with
    /// `.`) and `index.json` at the top are not parameters and are skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use keyplan_runtime::source::{LocalStore, Source};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let keys = dir.path().join("keyplan/dev/consumers/gateway/keys");
    /// std::fs::create_dir_all(&keys).unwrap();
    /// std::fs::write(keys.join("catalog"), "the-key").unwrap();
    ///
    /// let store = LocalStore::new(dir.path());
    /// let read = store.read_path("/keyplan/dev/consumers/gateway/keys").await.unwrap();
    /// assert_eq!(read[0].leaf(), "catalog");
    /// assert_eq!(read[0].value.as_str(), "the-key");
    /// # }
    /// ```
    #[derive(Clone, Debug)]
    pub struct LocalStore {
        dir: PathBuf,
    }

    impl LocalStore {
        /// The store kept in `dir` (the directory that holds `index.json`).
        pub fn new(dir: impl Into<PathBuf>) -> Self {
            Self { dir: dir.into() }
        }

        /// The store's directory.
        pub fn dir(&self) -> &Path {
            &self.dir
        }
    }

    impl Source for LocalStore {
        fn read_path<'a>(
            &'a self,
            path: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
            let dir = self.dir.clone();
            let path = path.to_owned();
            Box::pin(async move {
                let what = path.clone();
                tokio::task::spawn_blocking(move || read_dir(&dir, &path))
                    .await
                    .map_err(|_| SourceError::Cancelled(what))?
            })
        }
    }

    fn read_dir(dir: &Path, path: &str) -> Result<Vec<Parameter>, SourceError> {
        if !dir.is_dir() {
            return Err(SourceError::MissingStore(dir.display().to_string()));
        }
        let path = path.trim_end_matches('/');
        let subtree = dir.join(path.trim_start_matches('/'));
        let io_error = |p: &Path, source: io::Error| SourceError::Io {
            path: p.display().to_string(),
            source,
        };
        let entries = match std::fs::read_dir(&subtree) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&subtree, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&subtree, e))?;
            let Some(leaf) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if leaf.starts_with('.') {
                continue;
            }
            let file = entry.path();
            // Follows symlinks, as reading the value does.
            if !file.is_file() {
                continue;
            }
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => Zeroizing::new(bytes),
                // Deleted between the listing and the read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&file, e)),
            };
            let name = format!("{path}/{leaf}");
            let value =
                std::str::from_utf8(&bytes).map_err(|_| SourceError::NotUtf8(name.clone()))?;
            out.push(Parameter {
                name,
                value: Zeroizing::new(value.to_owned()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(feature = "ssm")]
pub use ssm::SsmStore;

#[cfg(feature = "ssm")]
mod ssm {
    use aws_sdk_ssm::error::DisplayErrorContext;
    use zeroize::Zeroizing;

    use super::{BoxFuture, Parameter, Source, SourceError};

    /// AWS SSM Parameter Store, read with `GetParametersByPath` (not
    /// recursive, decrypted), following every `NextToken`.
    ///
    /// The client's credentials need `ssm:GetParametersByPath` on the path
    /// and `kms:Decrypt` for its key; `keyplan iam` prints that policy.
    #[derive(Clone, Debug)]
    pub struct SsmStore {
        client: aws_sdk_ssm::Client,
    }

    impl SsmStore {
        /// A store read through `client` (built by the application, with
        /// `aws_config` or by hand).
        pub fn new(client: aws_sdk_ssm::Client) -> Self {
            Self { client }
        }
    }

    impl Source for SsmStore {
        fn read_path<'a>(
            &'a self,
            path: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
            Box::pin(async move {
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let page = self
                        .client
                        .get_parameters_by_path()
                        .path(path)
                        .recursive(false)
                        .with_decryption(true)
                        .max_results(10)
                        .set_next_token(token.take())
                        .send()
                        .await
                        .map_err(|e| SourceError::Ssm {
                            path: path.to_owned(),
                            message: DisplayErrorContext(&e).to_string(),
                        })?;
                    for p in page.parameters.unwrap_or_default() {
                        if let (Some(name), Some(value)) = (p.name, p.value) {
                            out.push(Parameter {
                                name,
                                value: Zeroizing::new(value),
                            });
                        }
                    }
                    // A page may hold fewer than MaxResults and still not be the last.
                    match page.next_token {
                        Some(next) if !next.is_empty() => token = Some(next),
                        _ => break,
                    }
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            })
        }
    }
}
