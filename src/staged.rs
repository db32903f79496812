//! The staged record: the write-ahead intent of a step in progress on one
//! edge, at `{prefix}/{env}/keyplan/staged/{service}/{consumer}`.
//!
//! It is written before the authority mints (the id chosen, the generation,
//! the mode, the ids it replaces), then gains the new key. It is only ever
//! replaced by a record that still names every id it named, it is deleted
//! last, and every apply that finds one finishes its step in its mode. Only
//! keyplan's own role reads this subtree.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// How a step in progress finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The first key of an edge, or a replacement with nothing to keep:
    /// accepted and handed out in one apply.
    Create,
    /// stage, promote after propagation, retire after grace.
    Normal,
    /// As normal, but retire after the smallest grace the rules allow.
    Expedite,
    /// Every older key is refused at once; callers fail until both sides refresh.
    Immediately,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Create => "create",
            Mode::Normal => "normal",
            Mode::Expedite => "expedite",
            Mode::Immediately => "immediately",
        })
    }
}

/// The intent, without the key: what a plan may show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub generation: u64,
    pub mode: Mode,
    /// Why this key is being made (shown in plans and status).
    pub reason: String,
    /// When this generation was scheduled.
    pub due: Timestamp,
    /// Every authority id this intent has named, oldest first; the last is
    /// the attempt in progress. Earlier ones are deleted before it is minted.
    pub ids: Vec<String>,
    /// The authority ids of the keys this one replaces.
    pub replaces: Vec<String>,
}

impl Intent {
    /// The id of the attempt in progress.
    pub fn current_id(&self) -> &str {
        self.ids.last().map_or("", String::as_str)
    }
}

/// The stored record: the intent and, once minted, the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedRecord {
    pub intent: Intent,
    /// The key of `intent.current_id()`, once minted.
    pub key: Option<Secret>,
}

/// The JSON form; the key is a plain string only inside this module.
#[derive(Serialize, Deserialize)]
struct Stored {
    v: u64,
    #[serde(flatten)]
    intent: Intent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl StagedRecord {
    /// The record as stored. It holds the key: it goes only to the store.
    pub fn to_secret(&self) -> Secret {
        let stored = Stored {
            v: 1,
            intent: self.intent.clone(),
            key: self.key.as_ref().map(|k| k.expose().to_owned()),
        };
        let text = serde_json::to_string(&stored).expect("staged records serialize");
        let mut stored = stored;
        if let Some(k) = stored.key.as_mut() {
            zeroize::Zeroize::zeroize(k);
        }
        Secret::new(text)
    }

    /// Reads a stored record.
    ///
    /// # Errors
    /// A message without the value when it is not a staged record.
    pub fn parse(value: &Secret) -> Result<Self, String> {
        let stored: Stored = serde_json::from_str(value.expose()).map_err(|e| {
            format!(
                "not a staged record (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if stored.v != 1 {
            return Err(format!("unknown staged record version {}", stored.v));
        }
        if stored.intent.ids.is_empty() {
            return Err("a staged record names no key id".into());
        }
        Ok(Self {
            intent: stored.intent,
            key: stored.key.map(Secret::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_debugs_the_key() {
        let record = StagedRecord {
            intent: Intent {
                generation: 2,
                mode: Mode::Expedite,
                reason: "forced".into(),
                due: "2027-01-01T00:00:00Z".parse().unwrap(),
                ids: vec!["a".into(), "b".into()],
                replaces: vec!["z".into()],
            },
            key: Some(Secret::new("the-key-value".into())),
        };
        let stored = record.to_secret();
        assert!(stored.expose().contains("the-key-value"));
        assert_eq!(StagedRecord::parse(&stored).unwrap(), record);
        assert!(!format!("{record:?}").contains("the-key-value"));
        assert_eq!(record.intent.current_id(), "b");
        let bad =
            StagedRecord::parse(&Secret::new("{\"key\":\"the-key-value\"".into())).unwrap_err();
        assert!(!bad.contains("the-key-value"));
    }
}
