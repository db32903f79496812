//! The errors of building and refreshing a [`KeyRing`](crate::KeyRing) or
//! [`ConsumerKeys`](crate::ConsumerKeys).

use crate::config::ConfigError;
use crate::source::SourceError;

/// Why a key ring or a consumer's keys could not be built, refreshed or used.
///
/// No variant ever carries a key value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting or environment variable is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be read; a running reader keeps its last good set.
    #[error("reading {path} from the store")]
    Store {
        path: String,
        #[source]
        source: SourceError,
    },
    /// The consumer holds no key for this service.
    #[error("no key for service `{service}` under {path}")]
    NoKey { service: String, path: String },
}
