//! The one type that holds key values.

use std::fmt;

use zeroize::Zeroizing;

/// A key value: no `Display`, no `Serialize`, a redacted `Debug`, wiped from
/// memory when dropped. Read it with [`Secret::expose`], only where it must be
/// stored or hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value itself. Every call site is a place a reviewer should look at.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest services compare against (see `keyplan_runtime::record::digest`).
    pub fn digest(&self) -> String {
        keyplan_runtime::record::digest(self.0.as_bytes())
    }

    /// A fresh random key: 42 bytes from the OS generator, 56 characters of
    /// base64url, the shape FusionAuth generates.
    pub fn generate() -> Self {
        use base64::Engine as _;
        let mut bytes = Zeroizing::new([0u8; 42]);
        getrandom::fill(bytes.as_mut()).expect("the OS random number generator works");
        Self::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2-hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret([REDACTED]))");
    }

    #[test]
    fn generated_keys_are_56_url_safe_characters_and_differ() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.expose().len(), 56);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }
}
