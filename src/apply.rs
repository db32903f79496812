//! Walks a [`Plan`] through the providers, deciding nothing.
//!
//! The executor fills in only what cannot be known when planning: the key it
//! has just minted (kept in memory, or read back from the staged record) and
//! the instants of the writes, taken from its own clock at the moment of each
//! write (a retried write is stamped again). Before every remote write it
//! checks that the apply lock still holds (renewing it at a third of its
//! lease) and, in builds with the `failpoints` feature, whether a test asked
//! it to stop there.

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, Fingerprint, Layout};

use crate::config::Edge;
use crate::plan::{Action, DigestRef, Plan, Step, TimeRef};
use crate::provider::{Authority, Lock, LockError, LockRecord, MintRequest, ProviderError, Store};
use crate::secret::Secret;
use crate::staged::{Intent, StagedRecord};

/// The executor's clock: an origin (the wall clock, or `--at`) advancing with
/// real time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Timestamp,
    started: Instant,
}

impl Clock {
    /// Wall-clock time.
    pub fn system() -> Self {
        Self::starting_at(Timestamp::now())
    }

    /// Starts at `origin` (for `--at`) and advances with real time.
    pub fn starting_at(origin: Timestamp) -> Self {
        Self {
            origin,
            started: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        let elapsed =
            SignedDuration::try_from(self.started.elapsed()).unwrap_or(SignedDuration::ZERO);
        self.origin + elapsed
    }
}

/// Where a test asked the executor to stop: after this many remote writes.
/// Only builds with the `failpoints` feature honour it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Failpoints {
    after_writes: Option<u64>,
}

impl Failpoints {
    /// Never stops.
    pub fn none() -> Self {
        Self::default()
    }

    /// Stops before the write that would follow the `n`-th one.
    #[cfg(feature = "failpoints")]
    pub fn after_writes(n: u64) -> Self {
        Self {
            after_writes: Some(n),
        }
    }

    /// `KEYPLAN_FAILPOINT=N` stops after N writes (failpoints builds only).
    pub fn from_env() -> Self {
        #[cfg(feature = "failpoints")]
        if let Some(n) = std::env::var("KEYPLAN_FAILPOINT")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return Self::after_writes(n);
        }
        Self::none()
    }
}

/// Why an apply stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{action} failed at step {step}")]
    Step {
        action: String,
        step: String,
        #[source]
        source: ProviderError,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the store holds a staged record for {0} that cannot be read")]
    StagedUnreadable(String),
    #[error("no key in hand for {0}: the staged record holds none")]
    NoKey(String),
    #[error("an accepts document for {edge} would be invalid: {why}")]
    Document { edge: String, why: String },
}

/// The apply lock as held by this process, renewed as writes go on.
pub struct Lease<'a> {
    lock: &'a dyn Lock,
    record: LockRecord,
    length: SignedDuration,
    renewed: Timestamp,
}

impl<'a> Lease<'a> {
    /// Takes the lock for `length`, renewable.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder.
    pub async fn acquire(
        lock: &'a dyn Lock,
        operation: &str,
        length: SignedDuration,
    ) -> Result<Self, LockError> {
        let now = Timestamp::now();
        let record = LockRecord {
            id: uuid::Uuid::new_v4().to_string(),
            holder: holder(),
            operation: operation.to_owned(),
            started: now,
            expires: now + length,
        };
        lock.acquire(&record, now).await?;
        Ok(Self {
            lock,
            record,
            length,
            renewed: now,
        })
    }

    /// Checks the lease before a write, renewing it after a third of its length.
    ///
    /// # Errors
    /// [`LockError::Lost`] when another process took it over.
    pub async fn keep(&mut self) -> Result<(), LockError> {
        let now = Timestamp::now();
        if now.duration_since(self.renewed) >= self.length / 3 {
            self.record.expires = now + self.length;
            self.lock.renew(&self.record, now).await?;
            self.renewed = now;
            Ok(())
        } else {
            self.lock.verify(&self.record, now).await
        }
    }

    pub fn record(&self) -> &LockRecord {
        &self.record
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// The provider's failure; the lock then expires by itself.
    pub async fn release(self) -> Result<(), LockError> {
        self.lock.release(&self.record).await
    }
}

/// Who is applying, for the lock: user, host and process.
fn holder() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host} pid {}", std::process::id())
}

/// What an apply did, for the closing line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub actions: BTreeMap<String, usize>,
    pub writes: u64,
}

/// The keys and instants an action carries from one step to the next.
#[derive(Default)]
struct ActionContext {
    key: Option<Secret>,
    intent: Option<Intent>,
    until: Option<Timestamp>,
}

/// Carries out plans.
pub struct Executor<'a> {
    pub layout: Layout,
    pub environment: String,
    pub namespace: String,
    pub store: &'a dyn Store,
    pub authority: &'a dyn Authority,
    pub clock: Clock,
    pub failpoints: Failpoints,
    pub lease: Option<Lease<'a>>,
    writes: u64,
}

impl<'a> Executor<'a> {
    pub fn new(
        layout: Layout,
        environment: String,
        namespace: String,
        store: &'a dyn Store,
        authority: &'a dyn Authority,
        clock: Clock,
    ) -> Self {
        Self {
            layout,
            environment,
            namespace,
            store,
            authority,
            clock,
            failpoints: Failpoints::none(),
            lease: None,
            writes: 0,
        }
    }

    /// Runs every action of `plan`, in order; `on_done` hears of each one finished.
    ///
    /// # Errors
    /// The first failure. What was written stays written: the next plan
    /// sees where things stand and finishes the job.
    pub async fn execute(
        &mut self,
        plan: &Plan,
        mut on_done: impl FnMut(&Action),
    ) -> Result<Applied, ApplyError> {
        let mut applied = Applied::default();
        for action in &plan.actions {
            let mut context = ActionContext::default();
            for step in &action.steps {
                self.step(action, step, &mut context).await?;
            }
            *applied.actions.entry(action.kind.to_string()).or_default() += 1;
            on_done(action);
        }
        applied.writes = self.writes;
        Ok(applied)
    }

    /// Before every remote write: the failpoint, then the lease.
    async fn before_write(&mut self) -> Result<(), ProviderError> {
        if let Some(n) = self.failpoints.after_writes
            && self.writes >= n
        {
            return Err(ProviderError::Failpoint(format!("after write {n}")));
        }
        if let Some(lease) = self.lease.as_mut() {
            lease
                .keep()
                .await
                .map_err(|e| ProviderError::Remote(e.to_string()))?;
        }
        self.writes += 1;
        Ok(())
    }

    async fn step(
        &mut self,
        action: &Action,
        step: &Step,
        context: &mut ActionContext,
    ) -> Result<(), ApplyError> {
        let edge = &action.edge;
        let failed = |source: ProviderError| ApplyError::Step {
            action: format!("{} {edge}", action.kind),
            step: step_name(step).to_owned(),
            source,
        };
        self.before_write().await.map_err(failed)?;
        let staged_name = self.layout.staged(&edge.service, &edge.consumer);
        match step {
            Step::WriteIntent { intent } => {
                let record = StagedRecord {
                    intent: intent.clone(),
                    key: None,
                };
                self.store
                    .put(&staged_name, &record.to_secret(), None)
                    .await
                    .map_err(failed)?;
                context.intent = Some(intent.clone());
            }
            Step::Mint { id, name } => {
                let generation = self.intent(edge, context).await?.generation;
                let request = MintRequest {
                    id: id.clone(),
                    name: name.clone(),
                    attributes: BTreeMap::from([
                        (
                            "description".to_owned(),
                            format!("keyplan: {} calls {}", edge.consumer, edge.service),
                        ),
                        ("keyplan.namespace".to_owned(), self.namespace.clone()),
                        ("keyplan.environment".to_owned(), self.environment.clone()),
                        ("keyplan.edge".to_owned(), edge.to_string()),
                        ("keyplan.generation".to_owned(), generation.to_string()),
                    ]),
                };
                context.key = Some(self.authority.mint(&request).await.map_err(failed)?);
            }
            Step::WriteStagedKey => {
                let intent = self.intent(edge, context).await?;
                let key = context
                    .key
                    .clone()
                    .ok_or_else(|| ApplyError::NoKey(edge.to_string()))?;
                let record = StagedRecord {
                    intent,
                    key: Some(key),
                };
                self.store
                    .put(&staged_name, &record.to_secret(), None)
                    .await
                    .map_err(failed)?;
            }
            Step::WriteAccepts { keys } => {
                let now = self.clock.now();
                let mut entries = Vec::with_capacity(keys.len());
                for template in keys {
                    let sha256 = match &template.digest {
                        DigestRef::Known(d) => d.clone(),
                        DigestRef::NewKey => self.key(edge, context).await?.digest(),
                    };
                    let resolve = |t: TimeRef| match t {
                        TimeRef::At(at) => at,
                        TimeRef::Now => now,
                        TimeRef::NowPlus(d) => now + d,
                    };
                    let until = template.until.map(resolve);
                    if until.is_some() {
                        context.until = until;
                    }
                    entries.push(AcceptedKey {
                        id: template.id.clone(),
                        generation: template.generation,
                        sha256,
                        state: template.state,
                        due: resolve(template.due),
                        staged: resolve(template.staged),
                        until,
                    });
                }
                self.put_accepts(edge, &AcceptsDocument::new(entries))
                    .await
                    .map_err(|e| match e {
                        Ok(source) => failed(source),
                        Err(why) => ApplyError::Document {
                            edge: edge.to_string(),
                            why,
                        },
                    })?;
            }
            Step::WriteTombstone { ids } => {
                self.put_accepts(edge, &AcceptsDocument::tombstone(ids.clone()))
                    .await
                    .map_err(|e| match e {
                        Ok(source) => failed(source),
                        Err(why) => ApplyError::Document {
                            edge: edge.to_string(),
                            why,
                        },
                    })?;
            }
            Step::WriteConsumerKey { generation } => {
                let key = self.key(edge, context).await?;
                let fingerprint =
                    Fingerprint::new(&edge.service, &edge.consumer, *generation, &key.digest());
                let name = self.layout.consumer_key(&edge.consumer, &edge.service);
                self.store
                    .put(&name, &key, Some(&fingerprint.to_string()))
                    .await
                    .map_err(failed)?;
            }
            Step::SetAuthorityExpiry { id, until } => {
                let until = until.or(context.until);
                self.authority.set_expiry(id, until).await.map_err(failed)?;
            }
            Step::DeleteAuthorityKey { id } => self.authority.delete(id).await.map_err(failed)?,
            Step::DeleteConsumerKey => {
                let name = self.layout.consumer_key(&edge.consumer, &edge.service);
                self.store.delete(&name).await.map_err(failed)?;
            }
            Step::DeleteStaged => self.store.delete(&staged_name).await.map_err(failed)?,
            Step::DeleteAccepts => {
                let name = self.layout.accepts(&edge.service, &edge.consumer);
                self.store.delete(&name).await.map_err(failed)?;
            }
        }
        Ok(())
    }

    async fn put_accepts(
        &self,
        edge: &Edge,
        document: &AcceptsDocument,
    ) -> Result<(), Result<ProviderError, String>> {
        let text = document.to_json().map_err(|e| Err(e.to_string()))?;
        let name = self.layout.accepts(&edge.service, &edge.consumer);
        self.store
            .put(&name, &Secret::new(text), None)
            .await
            .map_err(Ok)?;
        Ok(())
    }

    async fn staged(&self, edge: &Edge) -> Result<StagedRecord, ApplyError> {
        let name = self.layout.staged(&edge.service, &edge.consumer);
        let parameter = self
            .store
            .get(&name)
            .await
            .map_err(|source| ApplyError::Step {
                action: format!("read {edge}"),
                step: "read staged record".into(),
                source,
            })?;
        parameter
            .and_then(|p| p.value)
            .and_then(|v| StagedRecord::parse(&v).ok())
            .ok_or_else(|| ApplyError::StagedUnreadable(edge.to_string()))
    }

    async fn intent(&self, edge: &Edge, context: &mut ActionContext) -> Result<Intent, ApplyError> {
        if context.intent.is_none() {
            context.intent = Some(self.staged(edge).await?.intent);
        }
        Ok(context.intent.clone().expect("just filled"))
    }

    async fn key(&self, edge: &Edge, context: &mut ActionContext) -> Result<Secret, ApplyError> {
        if context.key.is_none() {
            let record = self.staged(edge).await?;
            context.key = Some(
                record
                    .key
                    .ok_or_else(|| ApplyError::NoKey(edge.to_string()))?,
            );
            context.intent.get_or_insert(record.intent);
        }
        Ok(context.key.clone().expect("just filled"))
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::WriteIntent { .. } => "write the staged intent",
        Step::DeleteAuthorityKey { .. } => "delete the authority key",
        Step::Mint { .. } => "mint the key",
        Step::WriteStagedKey => "write the key into the staged record",
        Step::WriteAccepts { .. } => "write the accepts document",
        Step::WriteTombstone { .. } => "write the revoke tombstone",
        Step::WriteConsumerKey { .. } => "write the consumer key",
        Step::SetAuthorityExpiry { .. } => "set the authority key's expiry",
        Step::DeleteConsumerKey => "delete the consumer key",
        Step::DeleteStaged => "delete the staged record",
        Step::DeleteAccepts => "delete the accepts document",
    }
}
