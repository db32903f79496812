//! An in-memory store, authority and lock sharing one state, for simulations
//! and tests that run thousands of applies: two years of hourly cron, or a
//! property test with a model of readers. It keeps every state the store has
//! been in, tagged with the simulated time, so a model can ask what a reader
//! whose last refresh was at time t saw.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use jiff::Timestamp;

use super::{
    Authority, AuthorityKey, Lock, LockError, LockRecord, MintRequest, Parameter, ProviderError,
    Result, Selector, Store,
};
use crate::secret::Secret;

/// One state of the store: every parameter's value, at a simulated instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Timestamp,
    pub values: BTreeMap<String, String>,
}

#[derive(Debug)]
struct State {
    parameters: BTreeMap<String, Stored>,
    authority: BTreeMap<String, AuthorityKey>,
    lock: Option<LockRecord>,
    history: Vec<Snapshot>,
    time: Timestamp,
    writes: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    version: u64,
    value: String,
    description: Option<String>,
}

/// The shared state; [`Memory::store`], [`Memory::authority`] and
/// [`Memory::lock`] are views of it.
#[derive(Clone, Debug)]
pub struct Memory {
    state: Arc<Mutex<State>>,
}

impl Memory {
    /// An empty world at simulated time `at`.
    pub fn new(at: Timestamp) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                parameters: BTreeMap::new(),
                authority: BTreeMap::new(),
                lock: None,
                history: vec![Snapshot {
                    at,
                    values: BTreeMap::new(),
                }],
                time: at,
                writes: 0,
            })),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no test panics while holding the state")
    }

    /// Tags the writes that follow with simulated time `at`.
    pub fn set_time(&self, at: Timestamp) {
        self.lock_state().time = at;
    }

    pub fn store(&self) -> MemoryStore {
        MemoryStore(self.clone())
    }

    pub fn authority(&self) -> MemoryAuthority {
        MemoryAuthority(self.clone())
    }

    pub fn lock(&self) -> MemoryLock {
        MemoryLock(self.clone())
    }

    /// Every state the store has been in, oldest first.
    pub fn history(&self) -> Vec<Snapshot> {
        self.lock_state().history.clone()
    }

    /// The ids the authority holds, with their records.
    pub fn authority_keys(&self) -> BTreeMap<String, AuthorityKey> {
        self.lock_state().authority.clone()
    }

    /// The current value of a parameter.
    pub fn value(&self, name: &str) -> Option<String> {
        self.lock_state()
            .parameters
            .get(name)
            .map(|p| p.value.clone())
    }

    /// How many remote writes (store and authority) have been made.
    pub fn writes(&self) -> u64 {
        self.lock_state().writes
    }

    fn record(state: &mut State) {
        state.writes += 1;
        let snapshot = Snapshot {
            at: state.time,
            values: state
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
        };
        state.history.push(snapshot);
    }
}

/// The store view of [`Memory`].
#[derive(Clone, Debug)]
pub struct MemoryStore(Memory);

#[async_trait]
impl Store for MemoryStore {
    async fn list(&self, path: &str, decrypt: &Selector<'_>) -> Result<Vec<Parameter>> {
        let state = self.0.lock_state();
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(state
            .parameters
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(name, p)| Parameter {
                name: name.clone(),
                version: p.version,
                value: decrypt(name).then(|| Secret::new(p.value.clone())),
                description: p.description.clone(),
            })
            .collect())
    }

    async fn get(&self, name: &str) -> Result<Option<Parameter>> {
        let state = self.0.lock_state();
        Ok(state.parameters.get(name).map(|p| Parameter {
            name: name.to_owned(),
            version: p.version,
            value: Some(Secret::new(p.value.clone())),
            description: p.description.clone(),
        }))
    }

    async fn put(&self, name: &str, value: &Secret, description: Option<&str>) -> Result<u64> {
        let mut state = self.0.lock_state();
        let version = state.parameters.get(name).map_or(0, |p| p.version) + 1;
        state.parameters.insert(
            name.to_owned(),
            Stored {
                version,
                value: value.expose().to_owned(),
                description: description.map(str::to_owned),
            },
        );
        Memory::record(&mut state);
        Ok(version)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let mut state = self.0.lock_state();
        if state.parameters.remove(name).is_some() {
            Memory::record(&mut state);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory store".into()
    }
}

/// The authority view of [`Memory`].
#[derive(Clone, Debug)]
pub struct MemoryAuthority(Memory);

#[async_trait]
impl Authority for MemoryAuthority {
    async fn get(&self, id: &str) -> Result<Option<AuthorityKey>> {
        Ok(self.0.lock_state().authority.get(id).cloned())
    }

    async fn mint(&self, request: &MintRequest) -> Result<Secret> {
        let mut state = self.0.lock_state();
        if state.authority.contains_key(&request.id) {
            return Err(ProviderError::AlreadyExists {
                what: format!("authority key {}", request.id),
            });
        }
        let record = AuthorityKey::minted(request, state.time);
        state.authority.insert(request.id.clone(), record);
        state.writes += 1;
        Ok(Secret::generate())
    }

    async fn set_expiry(&self, id: &str, expires: Option<Timestamp>) -> Result<()> {
        let mut state = self.0.lock_state();
        let now = state.time;
        let key = state
            .authority
            .get_mut(id)
            .ok_or_else(|| ProviderError::Remote(format!("authority key {id} does not exist")))?;
        key.expires = expires;
        key.updated = now;
        state.writes += 1;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut state = self.0.lock_state();
        state.authority.remove(id);
        state.writes += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory authority".into()
    }
}

/// The lock view of [`Memory`].
#[derive(Clone, Debug)]
pub struct MemoryLock(Memory);

#[async_trait]
impl Lock for MemoryLock {
    async fn acquire(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        let mut state = self.0.lock_state();
        match &state.lock {
            Some(held) if held.expires > now && held.id != record.id => {
                Err(LockError::Held(held.clone()))
            }
            _ => {
                state.lock = Some(record.clone());
                Ok(())
            }
        }
    }

    async fn renew(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        self.verify(record, now).await?;
        self.0.lock_state().lock = Some(record.clone());
        Ok(())
    }

    async fn verify(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        match &self.0.lock_state().lock {
            Some(held) if held.id == record.id && held.expires > now => Ok(()),
            _ => Err(LockError::Lost(record.id.clone())),
        }
    }

    async fn release(&self, record: &LockRecord) -> Result<(), LockError> {
        let mut state = self.0.lock_state();
        if state.lock.as_ref().is_some_and(|l| l.id == record.id) {
            state.lock = None;
        }
        Ok(())
    }

    async fn current(&self) -> Result<Option<LockRecord>, LockError> {
        Ok(self.0.lock_state().lock.clone())
    }

    async fn force_unlock(&self, id: &str) -> Result<LockRecord, LockError> {
        let mut state = self.0.lock_state();
        match state.lock.take() {
            Some(held) if held.id == id => Ok(held),
            other => {
                state.lock = other;
                Err(LockError::NotHeld(id.to_owned()))
            }
        }
    }
}
