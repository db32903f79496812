//! [`ApiKey`]: a key value that never reaches logs, errors or `Debug` output.

use std::fmt;

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::record::{self, digest_prefix};

/// The value of one API key, as a consumer sends it.
///
/// It has no `Display`, its `Debug` prints `ApiKey(REDACTED)`, equality is
/// constant-time and its memory is wiped when it is dropped. Read the value
/// with [`ApiKey::expose`], at the one place that needs it (a header).
///
/// # Examples
///
/// ```
/// use keyplan_runtime::ApiKey;
///
/// let key = ApiKey::new("k3y-value-from-the-store-0123456789");
/// assert_eq!(format!("{key:?}"), "ApiKey(REDACTED)");
/// assert_eq!(key.expose(), "k3y-value-from-the-store-0123456789");
/// assert_eq!(key.fingerprint().len(), 8);
/// ```
#[derive(Clone)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Wraps a key value, taking ownership so no other copy is left behind.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The key itself. Use it only to build the header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// [`record::digest`] of the key: what a service's `accepts` document holds.
    pub fn digest(&self) -> String {
        record::digest(self.0.as_bytes())
    }

    /// The first characters of the digest: safe to log, enough to tell keys apart.
    pub fn fingerprint(&self) -> String {
        digest_prefix(&self.digest()).to_owned()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(REDACTED)")
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for ApiKey {}

impl From<String> for ApiKey {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_even_nested() {
        let key = ApiKey::new("super-secret-value");
        let nested = format!("{:?}", Some(vec![key.clone()]));
        assert!(!nested.contains("super-secret"), "{nested}");
        assert!(nested.contains("REDACTED"));
    }

    #[test]
    fn digest_matches_the_record_format() {
        let key = ApiKey::new("abc");
        assert_eq!(key.digest(), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert_eq!(key.fingerprint(), "ungWv48B");
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(ApiKey::new("a"), ApiKey::from("a".to_owned()));
        assert_ne!(ApiKey::new("a"), ApiKey::new("b"));
        assert_ne!(ApiKey::new("a"), ApiKey::new("ab"));
    }
}
