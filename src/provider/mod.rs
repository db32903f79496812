//! The narrow traits keyplan talks to the world through, and their
//! implementations: the authority (mints and records keys), the store (hands
//! them out) and the apply lock (kept in the store).
//!
//! Only this module does I/O with the outside world; the planner never sees
//! it. The traits are async because FusionAuth and SSM are network services,
//! and object-safe because keys.toml chooses the implementation at run time.

pub mod local;
pub mod memory;
pub mod pacing;
pub mod ssm;

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// A failure of a provider, keeping what the remote side said.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Remote(String),
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("the stored record {what} is not valid: {why}")]
    Corrupt { what: String, why: String },
    #[error("aborted at failpoint {0} (a test asked for it)")]
    Failpoint(String),
}

/// Chooses the parameters whose values a listing reads (by name).
pub type Selector<'s> = dyn for<'a> Fn(&'a str) -> bool + Sync + 's;

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// One parameter as observed in the store.
#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: String,
    /// Increases with every write (SSM's version; the local index's counter).
    pub version: u64,
    /// The value, only for the parameters the caller asked to decrypt.
    pub value: Option<Secret>,
    /// The non-secret description (the consumer parameter's fingerprint).
    pub description: Option<String>,
}

/// Where keys are handed out: SSM Parameter Store or its local mirror.
#[async_trait]
pub trait Store: Send + Sync {
    /// Every parameter below `path`, recursively, in name order. Values are
    /// read only for the names `decrypt` selects, so that consumer keys are
    /// never decrypted by observation.
    async fn list(&self, path: &str, decrypt: &Selector<'_>) -> Result<Vec<Parameter>>;

    /// One parameter with its value, or `None` when absent.
    async fn get(&self, name: &str) -> Result<Option<Parameter>>;

    /// Writes a parameter (SecureString in SSM) and returns its new version.
    async fn put(&self, name: &str, value: &Secret, description: Option<&str>) -> Result<u64>;

    /// Deletes a parameter; deleting an absent one succeeds.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Where this store is, for messages ("local store at ./.keyplan").
    fn describe(&self) -> String;
}

/// What keyplan records about a key it minted; never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityKey {
    pub id: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    /// When the authority stops honouring the key (set at promote on the previous key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

impl AuthorityKey {
    /// The record of a key just minted from `request` at `now`.
    pub fn minted(request: &MintRequest, now: Timestamp) -> Self {
        Self {
            id: request.id.clone(),
            name: request.name.clone(),
            attributes: request.attributes.clone(),
            expires: None,
            created: now,
            updated: now,
        }
    }
}

/// What to mint: the id is chosen by keyplan before minting (see `crate::ids`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
    pub id: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

/// Mints and records keys: FusionAuth, or keyplan's own local records.
#[async_trait]
pub trait Authority: Send + Sync {
    /// The key with this id, or `None` (FusionAuth: 404).
    async fn get(&self, id: &str) -> Result<Option<AuthorityKey>>;

    /// Mints a key with the given id and returns its value.
    ///
    /// # Errors
    /// [`ProviderError::AlreadyExists`] when the id is taken. A failed or
    /// timed-out mint may still have happened: the next plan looks the id up,
    /// and a key whose value keyplan does not hold is deleted and minted again
    /// under a new id, so keyplan never needs to read a value back.
    async fn mint(&self, request: &MintRequest) -> Result<Secret>;

    /// Sets (or clears) the instant after which the authority refuses the key.
    async fn set_expiry(&self, id: &str, expires: Option<Timestamp>) -> Result<()>;

    /// Deletes a key; deleting an absent one succeeds.
    async fn delete(&self, id: &str) -> Result<()>;

    fn describe(&self) -> String;
}

/// Who holds the apply lock, since when and until when. Nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// A fresh UUID per acquisition: what `force-unlock ID` names.
    pub id: String,
    /// Who took it: user, host and process, for the message a waiter sees.
    pub holder: String,
    pub operation: String,
    pub started: Timestamp,
    pub expires: Timestamp,
}

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the apply lock is held by {} ({} since {}, expires {}); lock id {}",
        .0.holder, .0.operation, .0.started, .0.expires, .0.id
    )]
    Held(LockRecord),
    #[error("the apply lock {0} was lost (expired or taken over); stopping before the next write")]
    Lost(String),
    #[error("no lock with id {0} is held")]
    NotHeld(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// The apply lock: taken by exactly one contender, even over an expired lock.
#[async_trait]
pub trait Lock: Send + Sync {
    /// Takes the lock as `record` describes, or says who holds it. An expired
    /// lock is taken over.
    async fn acquire(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError>;

    /// Extends our lease to `expires`; fails if it is no longer ours.
    async fn renew(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError>;

    /// Whether `record` still holds the lock at `now`.
    async fn verify(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError>;

    /// Releases our lock (absent already: fine).
    async fn release(&self, record: &LockRecord) -> Result<(), LockError>;

    /// The current lock, if any (expired ones included).
    async fn current(&self) -> Result<Option<LockRecord>, LockError>;

    /// Clears the lock with this id, whoever holds it.
    async fn force_unlock(&self, id: &str) -> Result<LockRecord, LockError>;
}
