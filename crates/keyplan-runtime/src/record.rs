//! The store layout: parameter paths, the `accepts` document and the consumer
//! parameter's fingerprint.
//!
//! This module is the contract between `keyplan apply`, which writes the
//! store, and every reader of it (this crate, and services in other languages).
//! Nothing else in keyplan defines these formats; `docs/store-layout.md`
//! describes them for teams that write readers of their own.
//!
//! # Examples
//!
//! ```
//! use keyplan_runtime::record::{Layout, digest};
//!
//! let layout = Layout::new("/keyplan", "prod");
//! assert_eq!(
//!     layout.accepts("product-catalog", "gateway"),
//!     "/keyplan/prod/services/product-catalog/accepts/gateway"
//! );
//! assert_eq!(digest(b"abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The only `accepts` document version this crate writes and reads.
pub const ACCEPTS_VERSION: u64 = 1;
/// At most this many keys are ever listed in one `accepts` document.
pub const MAX_ACCEPTED_KEYS: usize = 3;
/// An `accepts` document never exceeds this many bytes (SSM Standard tier allows 4 KB).
pub const MAX_ACCEPTS_BYTES: usize = 4096;
/// Length of the digest prefix shown in fingerprints, plans and logs.
pub const DIGEST_PREFIX_LEN: usize = 8;

/// Unpadded base64url (RFC 4648 §5) of SHA-256 over the exact bytes of a key.
///
/// This is what `accepts` documents hold instead of keys, so a leaked service
/// parameter does not let anyone impersonate a consumer.
pub fn digest(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(key))
}

/// The first characters of a digest: enough to tell keys apart in a plan.
pub fn digest_prefix(digest: &str) -> &str {
    let end = digest
        .char_indices()
        .nth(DIGEST_PREFIX_LEN)
        .map_or(digest.len(), |(i, _)| i);
    &digest[..end]
}

/// Where keyplan keeps everything of one environment: `{prefix}/{env}/...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

/// What a parameter under an environment's root is, recovered from its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParameterRole {
    /// `{root}/services/{service}/accepts/{consumer}`
    Accepts { service: String, consumer: String },
    /// `{root}/consumers/{consumer}/keys/{service}`
    ConsumerKey { consumer: String, service: String },
    /// `{root}/keyplan/staged/{service}/{consumer}`
    Staged { service: String, consumer: String },
    /// `{root}/keyplan/lock`
    Lock,
    /// `{root}/keyplan/last-apply`
    LastApply,
}

impl Layout {
    /// The layout of environment `env` under `prefix` (which starts with `/`).
    pub fn new(prefix: &str, env: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Self {
            root: format!("{prefix}/{env}"),
        }
    }

    /// `{prefix}/{env}`: one recursive read of this path observes everything.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The subtree a service reads, by path and non-recursively.
    pub fn service_accepts_path(&self, service: &str) -> String {
        format!("{}/services/{service}/accepts", self.root)
    }

    /// What `service` accepts from `consumer`.
    pub fn accepts(&self, service: &str, consumer: &str) -> String {
        format!("{}/{consumer}", self.service_accepts_path(service))
    }

    /// The subtree a consumer reads, by path and non-recursively.
    pub fn consumer_keys_path(&self, consumer: &str) -> String {
        format!("{}/consumers/{consumer}/keys", self.root)
    }

    /// The bare key `consumer` sends to `service`.
    pub fn consumer_key(&self, consumer: &str, service: &str) -> String {
        format!("{}/{service}", self.consumer_keys_path(consumer))
    }

    /// The write-ahead intent of a step in progress on one edge (keyplan's own).
    pub fn staged(&self, service: &str, consumer: &str) -> String {
        format!("{}/keyplan/staged/{service}/{consumer}", self.root)
    }

    /// The apply lock (holder and times; nothing secret).
    pub fn lock(&self) -> String {
        format!("{}/keyplan/lock", self.root)
    }

    /// What the last apply wrote (names and versions), so the next one can
    /// wait until the store shows it (keyplan's own; nothing secret).
    pub fn last_apply(&self) -> String {
        format!("{}/keyplan/last-apply", self.root)
    }

    /// The role of a parameter named `name`, or `None` when it is not one of
    /// keyplan's (or lies outside this environment).
    pub fn classify(&self, name: &str) -> Option<ParameterRole> {
        let rest = name.strip_prefix(&self.root)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let role = match parts.as_slice() {
            ["services", service, "accepts", consumer] => ParameterRole::Accepts {
                service: (*service).to_owned(),
                consumer: (*consumer).to_owned(),
            },
            ["consumers", consumer, "keys", service] => ParameterRole::ConsumerKey {
                consumer: (*consumer).to_owned(),
                service: (*service).to_owned(),
            },
            ["keyplan", "staged", service, consumer] => ParameterRole::Staged {
                service: (*service).to_owned(),
                consumer: (*consumer).to_owned(),
            },
            ["keyplan", "lock"] => ParameterRole::Lock,
            ["keyplan", "last-apply"] => ParameterRole::LastApply,
            _ => return None,
        };
        let names_ok = match &role {
            ParameterRole::Accepts { service, consumer }
            | ParameterRole::ConsumerKey { consumer, service }
            | ParameterRole::Staged { service, consumer } => {
                !service.is_empty() && !consumer.is_empty()
            }
            ParameterRole::Lock | ParameterRole::LastApply => true,
        };
        names_ok.then_some(role)
    }
}

/// Which part a key plays in a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// The key consumers are handed now.
    Current,
    /// Accepted ahead of time; consumers get it at promote.
    Pending,
    /// Still accepted until `until`, so calls in flight and slow readers succeed.
    Previous,
}

impl KeyState {
    /// The lowercase name used in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Current => "current",
            KeyState::Pending => "pending",
            KeyState::Previous => "previous",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key a service accepts from a consumer: its digest, never the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedKey {
    /// The authority's id of the key.
    pub id: String,
    /// The n-th key of this edge.
    pub generation: u64,
    /// [`digest`] of the key.
    pub sha256: String,
    pub state: KeyState,
    /// When this generation was scheduled.
    pub due: Timestamp,
    /// When it was written as pending, or created.
    pub staged: Timestamp,
    /// For a previous key: the instant after which it is refused (plus the skew allowance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

/// What a service accepts from one consumer: `{prefix}/{env}/services/{service}/accepts/{consumer}`.
///
/// A document with an empty `keys` and a non-empty `revoking` is the tombstone
/// of a revoke in progress: the service accepts nothing from that consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptsDocument {
    pub v: u64,
    pub keys: Vec<AcceptedKey>,
    /// Authority ids being deleted by a revoke in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoking: Vec<String>,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("not a JSON object with a numeric `v`: {0}")]
    Malformed(String),
    #[error("unknown accepts document version {0} (this reader knows version {ACCEPTS_VERSION})")]
    UnknownVersion(u64),
    #[error("{0} keys listed; at most {MAX_ACCEPTED_KEYS} are allowed")]
    TooManyKeys(usize),
    #[error("document is {0} bytes; at most {MAX_ACCEPTS_BYTES} are allowed")]
    TooLarge(usize),
    #[error("not a keyplan fingerprint")]
    NotAFingerprint,
}

impl AcceptsDocument {
    /// A document listing `keys`.
    pub fn new(keys: Vec<AcceptedKey>) -> Self {
        Self {
            v: ACCEPTS_VERSION,
            keys,
            revoking: Vec::new(),
        }
    }

    /// The tombstone of a revoke in progress: nothing accepted, `ids` being deleted.
    pub fn tombstone(ids: Vec<String>) -> Self {
        Self {
            v: ACCEPTS_VERSION,
            keys: Vec::new(),
            revoking: ids,
        }
    }

    /// Whether this is a revoke in progress.
    pub fn is_tombstone(&self) -> bool {
        self.keys.is_empty() && !self.revoking.is_empty()
    }

    /// Parses a document, checking its version before anything else so that a
    /// reader meeting a newer format can keep its last good set.
    ///
    /// # Errors
    /// [`RecordError::UnknownVersion`] for any `v` but 1, [`RecordError::Malformed`]
    /// for anything that is not a document, and the size limits.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        if text.len() > MAX_ACCEPTS_BYTES {
            return Err(RecordError::TooLarge(text.len()));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RecordError::Malformed(e.to_string()))?;
        let v = value
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| RecordError::Malformed("missing `v`".into()))?;
        if v != ACCEPTS_VERSION {
            return Err(RecordError::UnknownVersion(v));
        }
        let doc: AcceptsDocument =
            serde_json::from_value(value).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if doc.keys.len() > MAX_ACCEPTED_KEYS {
            return Err(RecordError::TooManyKeys(doc.keys.len()));
        }
        Ok(doc)
    }

    /// The document as stored: compact JSON.
    ///
    /// # Errors
    /// The size limits, so that keyplan never writes what a reader would refuse.
    pub fn to_json(&self) -> Result<String, RecordError> {
        if self.keys.len() > MAX_ACCEPTED_KEYS {
            return Err(RecordError::TooManyKeys(self.keys.len()));
        }
        let text = serde_json::to_string(self).expect("accepts documents always serialize");
        if text.len() > MAX_ACCEPTS_BYTES {
            return Err(RecordError::TooLarge(text.len()));
        }
        Ok(text)
    }

    /// The key in `state`, if any.
    pub fn key_in(&self, state: KeyState) -> Option<&AcceptedKey> {
        self.keys.iter().find(|k| k.state == state)
    }

    /// Every authority id the document names, accepted or being revoked.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .map(|k| k.id.as_str())
            .chain(self.revoking.iter().map(String::as_str))
    }
}

/// The non-secret description of a consumer parameter: which edge and
/// generation it holds and the start of the key's digest, so a plan can
/// compare it without decrypting the key.
///
/// Rendered as `keyplan edge=product-catalog<-gateway gen=3 sha256=AbCdEfGh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub service: String,
    pub consumer: String,
    pub generation: u64,
    /// The first [`DIGEST_PREFIX_LEN`] characters of the key's digest.
    pub digest_prefix: String,
}

impl Fingerprint {
    /// The fingerprint of the key with digest `digest`.
    pub fn new(service: &str, consumer: &str, generation: u64, digest: &str) -> Self {
        Self {
            service: service.to_owned(),
            consumer: consumer.to_owned(),
            generation,
            digest_prefix: digest_prefix(digest).to_owned(),
        }
    }

    /// Whether this fingerprint names the key with `digest`.
    pub fn matches(&self, digest: &str) -> bool {
        digest_prefix(digest) == self.digest_prefix
    }

    /// Reads a fingerprint back from a parameter's description.
    ///
    /// # Errors
    /// [`RecordError::NotAFingerprint`] for any other text.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let mut words = text.split_whitespace();
        if words.next() != Some("keyplan") {
            return Err(RecordError::NotAFingerprint);
        }
        let mut field = |name: &str| {
            words
                .next()
                .and_then(|w| w.strip_prefix(name))
                .and_then(|w| w.strip_prefix('='))
                .map(str::to_owned)
                .ok_or(RecordError::NotAFingerprint)
        };
        let edge = field("edge")?;
        let generation = field("gen")?
            .parse()
            .map_err(|_| RecordError::NotAFingerprint)?;
        let digest_prefix = field("sha256")?;
        let (service, consumer) = edge.split_once("<-").ok_or(RecordError::NotAFingerprint)?;
        Ok(Self {
            service: service.to_owned(),
            consumer: consumer.to_owned(),
            generation,
            digest_prefix,
        })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keyplan edge={}<-{} gen={} sha256={}",
            self.service, self.consumer, self.generation, self.digest_prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn key(id: &str, state: KeyState) -> AcceptedKey {
        AcceptedKey {
            id: id.into(),
            generation: 1,
            sha256: digest(id.as_bytes()),
            state,
            due: ts("2027-01-01T00:00:00Z"),
            staged: ts("2027-01-01T00:00:00Z"),
            until: None,
        }
    }

    #[test]
    fn digest_is_unpadded_base64url_of_sha256() {
        // SHA-256("") = e3b0c442...; its base64url has no padding and no '+' or '/'.
        assert_eq!(digest(b""), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
        assert_eq!(digest(b"abc").len(), 43);
    }

    #[test]
    fn paths_follow_the_layout() {
        let l = Layout::new("/keyplan/", "prod");
        assert_eq!(l.root(), "/keyplan/prod");
        assert_eq!(
            l.consumer_key("gateway", "product-catalog"),
            "/keyplan/prod/consumers/gateway/keys/product-catalog"
        );
        assert_eq!(
            l.staged("product-catalog", "gateway"),
            "/keyplan/prod/keyplan/staged/product-catalog/gateway"
        );
        assert_eq!(l.lock(), "/keyplan/prod/keyplan/lock");
    }

    #[test]
    fn classify_inverts_the_paths() {
        let l = Layout::new("/keyplan", "prod");
        assert_eq!(
            l.classify(&l.accepts("a", "b")),
            Some(ParameterRole::Accepts {
                service: "a".into(),
                consumer: "b".into()
            })
        );
        assert_eq!(
            l.classify(&l.consumer_key("b", "a")),
            Some(ParameterRole::ConsumerKey {
                consumer: "b".into(),
                service: "a".into()
            })
        );
        assert_eq!(l.classify(&l.lock()), Some(ParameterRole::Lock));
        assert_eq!(l.classify("/keyplan/prodx/services/a/accepts/b"), None);
        assert_eq!(l.classify("/keyplan/prod/services/a/accepts/b/c"), None);
        assert_eq!(l.classify("/keyplan/prod/services//accepts/b"), None);
    }

    #[test]
    fn accepts_round_trips_and_ignores_unknown_fields() {
        let doc = AcceptsDocument::new(vec![key("k1", KeyState::Current)]);
        let json = doc.to_json().unwrap();
        assert_eq!(AcceptsDocument::parse(&json).unwrap(), doc);
        let extended = json.replacen("\"v\":1", "\"v\":1,\"future\":true", 1);
        assert_eq!(AcceptsDocument::parse(&extended).unwrap(), doc);
    }

    #[test]
    fn accepts_refuses_unknown_versions_and_oversize() {
        assert_eq!(
            AcceptsDocument::parse(r#"{"v":2,"keys":"anything"}"#),
            Err(RecordError::UnknownVersion(2))
        );
        assert!(matches!(
            AcceptsDocument::parse("[]"),
            Err(RecordError::Malformed(_))
        ));
        let four = AcceptsDocument::new(vec![
            key("a", KeyState::Current),
            key("b", KeyState::Pending),
            key("c", KeyState::Previous),
            key("d", KeyState::Previous),
        ]);
        assert_eq!(four.to_json(), Err(RecordError::TooManyKeys(4)));
        let huge = format!(r#"{{"v":1,"keys":[],"pad":"{}"}}"#, "x".repeat(5000));
        assert!(matches!(
            AcceptsDocument::parse(&huge),
            Err(RecordError::TooLarge(_))
        ));
    }

    #[test]
    fn tombstone_lists_ids_and_accepts_nothing() {
        let t = AcceptsDocument::tombstone(vec!["k1".into(), "k2".into()]);
        assert!(t.is_tombstone());
        assert_eq!(
            t.to_json().unwrap(),
            r#"{"v":1,"keys":[],"revoking":["k1","k2"]}"#
        );
        assert_eq!(t.ids().collect::<Vec<_>>(), ["k1", "k2"]);
    }

    #[test]
    fn fingerprint_round_trips() {
        let d = digest(b"secret");
        let f = Fingerprint::new("product-catalog", "gateway", 3, &d);
        let text = f.to_string();
        assert!(text.starts_with("keyplan edge=product-catalog<-gateway gen=3 sha256="));
        assert_eq!(Fingerprint::parse(&text).unwrap(), f);
        assert!(f.matches(&d));
        assert!(!f.matches(&digest(b"other")));
        assert_eq!(
            Fingerprint::parse("hello"),
            Err(RecordError::NotAFingerprint)
        );
    }
}
