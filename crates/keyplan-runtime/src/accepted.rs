//! The keys one service accepts, as a pure value: built from the `accepts`
//! documents of a read, checked against a presented key at a given instant.
//!
//! [`KeyRing`](crate::KeyRing) keeps one [`AcceptedSet`] fresh; this module
//! decides everything and does no I/O, so every rule is tested with plain data.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};

use crate::record::{AcceptsDocument, KeyState, RecordError, digest_prefix};

/// A header longer than this is refused before anything is hashed.
pub const MAX_HEADER_BYTES: usize = 256;
/// A key shorter than this is malformed (keyplan's keys are 43 characters).
pub const MIN_KEY_BYTES: usize = 16;

/// Who called: the consumer whose key matched, and which of its keys.
///
/// [`RequireApiKey`](crate::server::RequireApiKey) puts it into the request
/// extensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The consumer's name, as in `keys.toml`.
    pub consumer: String,
    /// The generation of the key that matched.
    pub generation: u64,
    /// Current, pending, or previous (still inside its grace).
    pub state: KeyState,
    /// The authority's id of the key that matched (not secret).
    pub key_id: String,
}

/// Why a request was refused. None of them says which key was tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No key header.
    #[error("no API key was presented")]
    Missing,
    /// The key header appears more than once.
    #[error("the API key header was repeated")]
    Repeated,
    /// The header is longer than [`MAX_HEADER_BYTES`].
    #[error("the API key header is longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    /// Empty, shorter than [`MIN_KEY_BYTES`], or not visible ASCII.
    #[error("the API key is malformed")]
    Malformed,
    /// Well formed, but no accepted key has its digest.
    #[error("the API key is not accepted")]
    Unknown,
    /// A previous key whose `until` plus the skew allowance has passed.
    #[error("the API key has expired")]
    Expired,
    /// The service has no key set it may use: never loaded, or older than its
    /// maximum age. Not the caller's fault.
    #[error("the accepted keys are unavailable")]
    Unavailable,
}

impl Rejection {
    /// A stable lowercase name, for metrics labels and response bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Repeated => "repeated",
            Rejection::TooLong => "too_long",
            Rejection::Malformed => "malformed",
            Rejection::Unknown => "unknown",
            Rejection::Expired => "expired",
            Rejection::Unavailable => "unavailable",
        }
    }
}

/// The one key among the values of a header, checked for shape only.
///
/// # Errors
/// [`Rejection::Missing`] without a value, [`Rejection::Repeated`] with more
/// than one, [`Rejection::TooLong`] and [`Rejection::Malformed`] for its shape.
///
/// # Examples
///
/// ```
/// use keyplan_runtime::{Rejection, presented_key};
///
/// let key = b"0123456789abcdef-_XYZ";
/// assert_eq!(presented_key([&key[..]]), Ok(&key[..]));
/// assert_eq!(presented_key([&key[..], &key[..]]), Err(Rejection::Repeated));
/// assert_eq!(presented_key(Vec::<&[u8]>::new()), Err(Rejection::Missing));
/// assert_eq!(presented_key([&b"short"[..]]), Err(Rejection::Malformed));
/// ```
pub fn presented_key<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<&'a [u8], Rejection> {
    let mut values = values.into_iter();
    let key = values.next().ok_or(Rejection::Missing)?;
    if values.next().is_some() {
        return Err(Rejection::Repeated);
    }
    if key.len() > MAX_HEADER_BYTES {
        return Err(Rejection::TooLong);
    }
    if key.len() < MIN_KEY_BYTES || !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::Malformed);
    }
    Ok(key)
}

/// One accepted key: its digest (never the key), state and times.
#[derive(Clone, PartialEq, Eq)]
struct Accepted {
    id: String,
    generation: u64,
    state: KeyState,
    digest: [u8; 32],
    staged: Timestamp,
    until: Option<Timestamp>,
}

/// What a service accepts from one consumer, with why it may be out of date.
#[derive(Clone, PartialEq, Eq)]
struct Edge {
    keys: Vec<Accepted>,
    revoking: bool,
    /// The last read of this consumer's document could not be used; `keys`
    /// is the last good set (empty if there never was one).
    problem: Option<String>,
}

/// The keys a service accepts from every consumer, at one read of the store.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AcceptedSet {
    edges: BTreeMap<String, Edge>,
}

/// One accepted key, for operators: never the key, never the whole digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub consumer: String,
    pub key_id: String,
    pub generation: u64,
    pub state: KeyState,
    /// The first characters of the key's digest.
    pub fingerprint: String,
    /// When the key was staged (or created).
    pub staged: Timestamp,
    /// How long ago that was.
    pub age: SignedDuration,
    /// For a previous key: when it stops being accepted (before the skew allowance).
    pub until: Option<Timestamp>,
}

/// A consumer whose last document could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeProblem {
    pub consumer: String,
    /// Why, e.g. an unknown document version; the last good keys stay in use.
    pub problem: String,
}

impl AcceptedSet {
    /// The set read from `documents` (consumer name, document text), keeping
    /// from `previous` the keys of every consumer whose document is unusable
    /// (an unknown `v`, malformed JSON, a bad digest).
    ///
    /// A consumer missing from `documents` is no longer accepted at all.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyplan_runtime::AcceptedSet;
    ///
    /// let read = vec![("gateway".to_owned(), r#"{"v":9,"keys":[]}"#.to_owned())];
    /// let set = AcceptedSet::from_documents(None, read);
    /// assert_eq!(set.problems()[0].consumer, "gateway");
    /// ```
    pub fn from_documents(
        previous: Option<&AcceptedSet>,
        documents: impl IntoIterator<Item = (String, String)>,
    ) -> AcceptedSet {
        let mut edges = BTreeMap::new();
        for (consumer, text) in documents {
            let edge = match parse_edge(&text) {
                Ok(edge) => edge,
                Err(problem) => {
                    let mut kept = previous
                        .and_then(|p| p.edges.get(&consumer))
                        .cloned()
                        .unwrap_or(Edge {
                            keys: Vec::new(),
                            revoking: false,
                            problem: None,
                        });
                    kept.problem = Some(problem);
                    kept
                }
            };
            edges.insert(consumer, edge);
        }
        AcceptedSet { edges }
    }

    /// Which consumer, generation and state `presented` belongs to at `now`.
    ///
    /// The presented key is hashed and its digest compared with every
    /// accepted digest in constant time, without stopping at a match. A
    /// previous key is accepted until its `until` plus `skew`, and never after.
    ///
    /// # Errors
    /// [`Rejection::Unknown`] when no digest matches, [`Rejection::Expired`]
    /// for a previous key past its time.
    pub fn check(
        &self,
        presented: &[u8],
        now: Timestamp,
        skew: SignedDuration,
    ) -> Result<Caller, Rejection> {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let mut found = Choice::from(0);
        let mut index = 0u32;
        let all = self.keys();
        for (i, (_, key)) in all.iter().enumerate() {
            let equal = presented.ct_eq(&key.digest);
            found |= equal;
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index = u32::conditional_select(&index, &i, equal);
        }
        if !bool::from(found) {
            return Err(Rejection::Unknown);
        }
        let (consumer, key) = all[index as usize];
        if key.state == KeyState::Previous {
            let until = key.until.ok_or(Rejection::Expired)?;
            let last = until.checked_add(skew).map_err(|_| Rejection::Expired)?;
            if now > last {
                return Err(Rejection::Expired);
            }
        }
        Ok(Caller {
            consumer: consumer.to_owned(),
            generation: key.generation,
            state: key.state,
            key_id: key.id.clone(),
        })
    }

    fn keys(&self) -> Vec<(&str, &Accepted)> {
        self.edges
            .iter()
            .flat_map(|(consumer, edge)| edge.keys.iter().map(move |k| (consumer.as_str(), k)))
            .collect()
    }

    /// The consumers this service knows of (a revoked one is listed while its
    /// tombstone exists).
    pub fn consumers(&self) -> impl Iterator<Item = &str> {
        self.edges.keys().map(String::as_str)
    }

    /// Whether `consumer`'s document is a revoke in progress (nothing accepted).
    pub fn is_revoking(&self, consumer: &str) -> bool {
        self.edges.get(consumer).is_some_and(|e| e.revoking)
    }

    /// Every accepted key, with its age at `now`.
    pub fn key_info(&self, now: Timestamp) -> Vec<KeyInfo> {
        self.keys()
            .into_iter()
            .map(|(consumer, k)| KeyInfo {
                consumer: consumer.to_owned(),
                key_id: k.id.clone(),
                generation: k.generation,
                state: k.state,
                fingerprint: digest_prefix(&URL_SAFE_NO_PAD.encode(k.digest)).to_owned(),
                staged: k.staged,
                age: now.duration_since(k.staged),
                until: k.until,
            })
            .collect()
    }

    /// The consumers whose last document could not be used.
    pub fn problems(&self) -> Vec<EdgeProblem> {
        self.edges
            .iter()
            .filter_map(|(consumer, e)| {
                e.problem.as_ref().map(|p| EdgeProblem {
                    consumer: consumer.clone(),
                    problem: p.clone(),
                })
            })
            .collect()
    }
}

impl fmt::Debug for AcceptedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (consumer, edge) in &self.edges {
            let keys: Vec<String> = edge
                .keys
                .iter()
                .map(|k| format!("gen {} {}", k.generation, k.state))
                .collect();
            map.entry(consumer, &keys);
        }
        map.finish()
    }
}

fn parse_edge(text: &str) -> Result<Edge, String> {
    let doc = AcceptsDocument::parse(text).map_err(|e| match e {
        RecordError::UnknownVersion(v) => {
            format!("unknown accepts version {v}; keeping the last good keys")
        }
        other => format!("unusable accepts document ({other}); keeping the last good keys"),
    })?;
    let revoking = doc.is_tombstone();
    let keys = doc
        .keys
        .into_iter()
        .map(|k| {
            let digest = URL_SAFE_NO_PAD
                .decode(k.sha256.as_bytes())
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| {
                    format!(
                        "key {} has a digest that is not base64url SHA-256; keeping the last good keys",
                        k.id
                    )
                })?;
            Ok(Accepted {
                id: k.id,
                generation: k.generation,
                state: k.state,
                digest,
                staged: k.staged,
                until: k.until,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Edge {
        keys,
        revoking,
        problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AcceptedKey, digest};

    const K1: &str = "gateway-key-generation-1-aaaaaaaaaaaa";
    const K2: &str = "gateway-key-generation-2-bbbbbbbbbbbb";
    const K3: &str = "gateway-key-generation-3-cccccccccccc";
    const R1: &str = "reporting-key-generation-1-dddddddddd";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn key(value: &str, generation: u64, state: KeyState, until: Option<&str>) -> AcceptedKey {
        AcceptedKey {
            id: format!("id-{generation}"),
            generation,
            sha256: digest(value.as_bytes()),
            state,
            due: ts("2027-01-01T00:00:00Z"),
            staged: ts("2027-01-01T00:00:00Z"),
            until: until.map(ts),
        }
    }

    fn doc(keys: Vec<AcceptedKey>) -> String {
        AcceptsDocument::new(keys).to_json().unwrap()
    }

    fn set(docs: &[(&str, String)]) -> AcceptedSet {
        AcceptedSet::from_documents(None, docs.iter().map(|(c, d)| ((*c).to_owned(), d.clone())))
    }

    const NOW: &str = "2027-02-01T12:00:00Z";
    const SKEW: SignedDuration = SignedDuration::from_secs(60);

    #[test]
    fn every_state_names_consumer_generation_and_state() {
        let s = set(&[
            (
                "gateway",
                doc(vec![
                    key(K2, 2, KeyState::Current, None),
                    key(K3, 3, KeyState::Pending, None),
                    key(K1, 1, KeyState::Previous, Some("2027-02-02T00:00:00Z")),
                ]),
            ),
            ("reporting", doc(vec![key(R1, 1, KeyState::Current, None)])),
        ]);
        let now = ts(NOW);
        let check = |k: &str| {
            s.check(k.as_bytes(), now, SKEW)
                .map(|c| (c.consumer, c.generation, c.state))
        };
        assert_eq!(check(K2), Ok(("gateway".into(), 2, KeyState::Current)));
        assert_eq!(check(K3), Ok(("gateway".into(), 3, KeyState::Pending)));
        assert_eq!(check(K1), Ok(("gateway".into(), 1, KeyState::Previous)));
        assert_eq!(check(R1), Ok(("reporting".into(), 1, KeyState::Current)));
        assert_eq!(check("not-a-key-anyone-was-given"), Err(Rejection::Unknown));
        let caller = s.check(K2.as_bytes(), now, SKEW).unwrap();
        assert_eq!(caller.key_id, "id-2");
    }

    #[test]
    fn previous_key_is_accepted_until_until_plus_skew_and_never_after() {
        let until = "2027-02-01T12:00:00Z";
        let s = set(&[(
            "gateway",
            doc(vec![
                key(K2, 2, KeyState::Current, None),
                key(K1, 1, KeyState::Previous, Some(until)),
            ]),
        )]);
        let at = |t: &str| s.check(K1.as_bytes(), ts(t), SKEW).map(|c| c.state);
        assert_eq!(at("2027-02-01T11:59:59Z"), Ok(KeyState::Previous));
        assert_eq!(at("2027-02-01T12:00:00Z"), Ok(KeyState::Previous));
        assert_eq!(at("2027-02-01T12:01:00Z"), Ok(KeyState::Previous));
        assert_eq!(
            at("2027-02-01T12:01:00.000000001Z"),
            Err(Rejection::Expired)
        );
        assert_eq!(at("2030-01-01T00:00:00Z"), Err(Rejection::Expired));
        // Without a skew allowance the boundary is `until` itself.
        assert_eq!(
            s.check(
                K1.as_bytes(),
                ts("2027-02-01T12:00:01Z"),
                SignedDuration::ZERO
            ),
            Err(Rejection::Expired)
        );
        // The current key never expires.
        assert!(
            s.check(K2.as_bytes(), ts("2099-01-01T00:00:00Z"), SKEW)
                .is_ok()
        );
    }

    #[test]
    fn previous_key_without_until_is_refused() {
        let s = set(&[("gateway", doc(vec![key(K1, 1, KeyState::Previous, None)]))]);
        assert_eq!(
            s.check(K1.as_bytes(), ts(NOW), SKEW),
            Err(Rejection::Expired)
        );
    }

    #[test]
    fn tombstone_accepts_nothing() {
        let before = set(&[("gateway", doc(vec![key(K1, 1, KeyState::Current, None)]))]);
        let tomb = AcceptsDocument::tombstone(vec!["id-1".into()])
            .to_json()
            .unwrap();
        let after = AcceptedSet::from_documents(Some(&before), [("gateway".to_owned(), tomb)]);
        assert!(after.is_revoking("gateway"));
        assert_eq!(
            after.check(K1.as_bytes(), ts(NOW), SKEW),
            Err(Rejection::Unknown)
        );
        assert!(after.problems().is_empty());
    }

    #[test]
    fn unknown_version_keeps_the_last_good_keys_of_that_consumer_and_says_so() {
        let before = set(&[
            ("gateway", doc(vec![key(K1, 1, KeyState::Current, None)])),
            ("reporting", doc(vec![key(R1, 1, KeyState::Current, None)])),
        ]);
        let after = AcceptedSet::from_documents(
            Some(&before),
            [
                (
                    "gateway".to_owned(),
                    r#"{"v":2,"keys":{"new":"shape"}}"#.to_owned(),
                ),
                (
                    "reporting".to_owned(),
                    doc(vec![key(R1, 1, KeyState::Current, None)]),
                ),
            ],
        );
        assert_eq!(
            after.check(K1.as_bytes(), ts(NOW), SKEW).unwrap().consumer,
            "gateway"
        );
        let problems = after.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].consumer, "gateway");
        assert!(
            problems[0].problem.contains("unknown accepts version 2"),
            "{problems:?}"
        );
        // A consumer first seen with an unknown version has nothing accepted.
        let fresh =
            AcceptedSet::from_documents(None, [("new".to_owned(), r#"{"v":2}"#.to_owned())]);
        assert_eq!(
            fresh.check(K1.as_bytes(), ts(NOW), SKEW),
            Err(Rejection::Unknown)
        );
        assert_eq!(fresh.problems().len(), 1);
    }

    #[test]
    fn malformed_documents_and_digests_keep_the_last_good_keys() {
        let before = set(&[("gateway", doc(vec![key(K1, 1, KeyState::Current, None)]))]);
        let mut bad_digest = key(K2, 2, KeyState::Current, None);
        bad_digest.sha256 = "not base64!".into();
        for text in [
            String::new(),
            "{".to_owned(),
            "[]".to_owned(),
            "x".repeat(10_000),
            doc(vec![bad_digest.clone()]),
        ] {
            let after =
                AcceptedSet::from_documents(Some(&before), [("gateway".to_owned(), text.clone())]);
            assert!(
                after.check(K1.as_bytes(), ts(NOW), SKEW).is_ok(),
                "{text:.40}"
            );
            assert_eq!(after.problems().len(), 1, "{text:.40}");
        }
    }

    #[test]
    fn a_consumer_no_longer_listed_is_no_longer_accepted() {
        let before = set(&[("gateway", doc(vec![key(K1, 1, KeyState::Current, None)]))]);
        let after = AcceptedSet::from_documents(Some(&before), []);
        assert_eq!(
            after.check(K1.as_bytes(), ts(NOW), SKEW),
            Err(Rejection::Unknown)
        );
    }

    #[test]
    fn presented_key_refuses_bad_shapes() {
        let ok = K1.as_bytes();
        assert_eq!(presented_key([ok]), Ok(ok));
        assert_eq!(presented_key(Vec::<&[u8]>::new()), Err(Rejection::Missing));
        assert_eq!(presented_key([ok, ok]), Err(Rejection::Repeated));
        assert_eq!(presented_key([&b""[..]]), Err(Rejection::Malformed));
        assert_eq!(
            presented_key([&b"0123456789abcde"[..]]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            presented_key(["ключ-ключ-ключ-ключ".as_bytes()]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            presented_key([&b"0123456789 abcdef"[..]]),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            presented_key([&b"0123456789\tabcdef"[..]]),
            Err(Rejection::Malformed)
        );
        let huge = vec![b'a'; MAX_HEADER_BYTES + 1];
        assert_eq!(presented_key([&huge[..]]), Err(Rejection::TooLong));
        let limit = vec![b'a'; MAX_HEADER_BYTES];
        assert_eq!(presented_key([&limit[..]]), Ok(&limit[..]));
    }

    #[test]
    fn debug_and_key_info_show_no_digest() {
        let s = set(&[("gateway", doc(vec![key(K1, 1, KeyState::Current, None)]))]);
        let full = digest(K1.as_bytes());
        let debug = format!("{s:?}");
        assert!(!debug.contains(&full[..12]), "{debug}");
        let info = s.key_info(ts(NOW));
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].fingerprint, full[..8]);
        assert_eq!(
            info[0].age,
            ts(NOW).duration_since(ts("2027-01-01T00:00:00Z"))
        );
    }
}
