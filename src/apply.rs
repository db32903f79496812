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
/// real time, or standing still for simulations.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Timestamp,
    started: Option<Instant>,
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
            started: Some(Instant::now()),
        }
    }

    /// Always `at`: simulations advance time themselves.
    pub fn fixed(at: Timestamp) -> Self {
        Self {
            origin: at,
            started: None,
        }
    }

    /// The current instant, to the second (stamps in the store stay short).
    pub fn now(&self) -> Timestamp {
        let elapsed = self
            .started
            .and_then(|s| SignedDuration::try_from(s.elapsed()).ok())
            .unwrap_or(SignedDuration::ZERO);
        let now = self.origin + elapsed;
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    }
}

/// Where a test asked the executor to stop: after this many remote writes.
/// Only builds with the `failpoints` feature honour it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Failpoints {
    after_writes: Option<u64>,
    /// Holds the lock this long before the first write (lock tests).
    pause_before_writing: Option<std::time::Duration>,
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
            pause_before_writing: None,
        }
    }

    /// `KEYPLAN_FAILPOINT=N` stops after N writes, and
    /// `KEYPLAN_FAILPOINT_PAUSE_MS=M` holds the lock M ms before the first
    /// write (failpoints builds only).
    pub fn from_env() -> Self {
        #[cfg(feature = "failpoints")]
        {
            let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
            Self {
                after_writes: number("KEYPLAN_FAILPOINT"),
                pause_before_writing: number("KEYPLAN_FAILPOINT_PAUSE_MS")
                    .map(std::time::Duration::from_millis),
            }
        }
        #[cfg(not(feature = "failpoints"))]
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
    /// Takes the lock for `length`, renewable, waiting up to `timeout` for a
    /// holder to let go (`--lock-timeout`; zero: fail at once).
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder.
    pub async fn acquire(
        lock: &'a dyn Lock,
        operation: &str,
        length: SignedDuration,
        timeout: std::time::Duration,
    ) -> Result<Self, LockError> {
        let id = uuid::Uuid::new_v4().to_string();
        let holder = holder();
        let mut make = |now: Timestamp| LockRecord {
            id: id.clone(),
            holder: holder.clone(),
            operation: operation.to_owned(),
            started: now,
            expires: now + length,
        };
        let record = crate::provider::pacing::acquire_with_timeout(
            lock,
            &mut make,
            timeout,
            std::time::Duration::from_secs(2),
            &mut |held| {
                eprintln!(
                    "waiting for the apply lock held by {} ({} since {}; lock id {})",
                    held.holder, held.operation, held.started, held.id
                );
            },
        )
        .await?;
        Ok(Self {
            lock,
            renewed: record.started,
            record,
            length,
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
    /// Actions not started because `--max-duration` ran out.
    pub left: usize,
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
    /// `--max-duration`: no new action starts after it.
    pub deadline: crate::provider::pacing::StepDeadline,
    writes: u64,
    written: BTreeMap<String, Option<u64>>,
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
            deadline: crate::provider::pacing::StepDeadline::new(None),
            writes: 0,
            written: BTreeMap::new(),
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
        if !plan.actions.is_empty() {
            // Before the first write: an apply that stops halfway leaves a
            // record that promises nothing, so the next one does not wait for
            // versions this one may have overwritten or deleted.
            self.write_last_apply(BTreeMap::new())
                .await
                .map_err(|source| ApplyError::Step {
                    action: "apply".into(),
                    step: "record that an apply started".into(),
                    source,
                })?;
        }
        for (done, action) in plan.actions.iter().enumerate() {
            if !self.deadline.may_start() {
                applied.left = plan.actions.len() - done;
                break;
            }
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
        if self.writes == 0
            && let Some(pause) = self.failpoints.pause_before_writing
        {
            tokio::time::sleep(pause).await;
        }
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
        // A document keyplan would refuse to read is never written.
        let accepts_failed = |e: Result<ProviderError, String>| match e {
            Ok(source) => failed(source),
            Err(why) => ApplyError::Document {
                edge: edge.to_string(),
                why,
            },
        };
        self.before_write().await.map_err(failed)?;
        let staged_name = self.layout.staged(&edge.service, &edge.consumer);
        match step {
            Step::WriteIntent { intent } => {
                let record = StagedRecord {
                    intent: intent.clone(),
                    key: None,
                };
                self.put(&staged_name, &record.to_secret(), None)
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
                self.put(&staged_name, &record.to_secret(), None)
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
                    .map_err(accepts_failed)?;
            }
            Step::WriteTombstone { ids } => {
                self.put_accepts(edge, &AcceptsDocument::tombstone(ids.clone()))
                    .await
                    .map_err(accepts_failed)?;
            }
            Step::WriteConsumerKey { generation } => {
                let key = self.key(edge, context).await?;
                let fingerprint =
                    Fingerprint::new(&edge.service, &edge.consumer, *generation, &key.digest());
                let name = self.layout.consumer_key(&edge.consumer, &edge.service);
                self.put(&name, &key, Some(&fingerprint.to_string()))
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
                self.delete(&name).await.map_err(failed)?;
            }
            Step::DeleteStaged => self.delete(&staged_name).await.map_err(failed)?,
            Step::DeleteAccepts => {
                let name = self.layout.accepts(&edge.service, &edge.consumer);
                self.delete(&name).await.map_err(failed)?;
            }
        }
        Ok(())
    }

    async fn put_accepts(
        &mut self,
        edge: &Edge,
        document: &AcceptsDocument,
    ) -> Result<(), Result<ProviderError, String>> {
        let text = document.to_json().map_err(|e| Err(e.to_string()))?;
        let name = self.layout.accepts(&edge.service, &edge.consumer);
        self.put(&name, &Secret::new(text), None)
            .await
            .map_err(Ok)?;
        Ok(())
    }

    /// A store write, remembered for the last-apply record.
    async fn put(
        &mut self,
        name: &str,
        value: &Secret,
        description: Option<&str>,
    ) -> Result<(), ProviderError> {
        let version = self.store.put(name, value, description).await?;
        self.written.insert(name.to_owned(), Some(version));
        Ok(())
    }

    /// A store delete, remembered for the last-apply record.
    async fn delete(&mut self, name: &str) -> Result<(), ProviderError> {
        self.store.delete(name).await?;
        self.written.insert(name.to_owned(), None);
        Ok(())
    }

    /// Records what this apply wrote at `{root}/keyplan/last-apply`, so that
    /// the next apply waits until the store shows it. Nothing to record after
    /// an apply that wrote nothing.
    ///
    /// # Errors
    /// The store's failure.
    pub async fn record_last_apply(&mut self) -> Result<(), ProviderError> {
        if self.written.is_empty() {
            return Ok(());
        }
        let written = std::mem::take(&mut self.written);
        self.write_last_apply(written).await
    }

    async fn write_last_apply(
        &self,
        written: BTreeMap<String, Option<u64>>,
    ) -> Result<(), ProviderError> {
        let record = crate::observe::LastApply {
            lock: self
                .lease
                .as_ref()
                .map(|l| l.record().id.clone())
                .unwrap_or_default(),
            finished: Timestamp::now(),
            written,
        };
        let text = serde_json::to_string(&record).expect("the last-apply record serializes");
        self.store
            .put(&self.layout.last_apply(), &Secret::new(text), None)
            .await?;
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

/// Observes, and if the store does not yet show what the last apply wrote
/// (SSM does not promise read-your-writes between processes), observes again
/// until it does or `patience` runs out. A parameter deleted and written again
/// by an apply that stopped halfway can look like lag forever, so after
/// `patience` the observation is used as it is, with a warning on stderr.
///
/// # Errors
/// A provider failure.
pub async fn observe_caught_up(
    layout: &Layout,
    store: &dyn Store,
    authority: &dyn Authority,
    patience: std::time::Duration,
) -> Result<crate::observe::Observed, ProviderError> {
    let started = Instant::now();
    loop {
        let observed = crate::observe::observe(layout, store, authority).await?;
        let lagging = observed.lagging();
        if lagging.is_empty() {
            return Ok(observed);
        }
        if started.elapsed() >= patience {
            eprintln!(
                "warning: the {} still shows older versions than the last apply wrote ({}); planning with what it shows",
                store.describe(),
                lagging.join(", ")
            );
            return Ok(observed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One unattended apply in process (cron, simulations): take the lock,
/// observe, plan at the clock's instant, carry it out, record what was
/// written, release the lock. With `forced` edges it stages those now and
/// touches nothing else (`keyplan rotate`).
///
/// # Errors
/// The lock, a provider failure, or a failpoint; the lock is released.
pub async fn apply_once(
    config: &crate::config::Config,
    store: &dyn Store,
    authority: &dyn Authority,
    lock: &dyn Lock,
    clock: Clock,
    failpoints: Failpoints,
    forced: &BTreeMap<Edge, crate::plan::Force>,
) -> anyhow::Result<(Plan, Applied)> {
    let lease = Lease::acquire(
        lock,
        "apply",
        SignedDuration::from_mins(10),
        std::time::Duration::ZERO,
    )
    .await?;
    let layout = config.layout();
    let observed = match observe_caught_up(
        &layout,
        store,
        authority,
        std::time::Duration::from_secs(60),
    )
    .await
    {
        Ok(observed) => observed,
        Err(e) => {
            let _ = lease.release().await;
            return Err(e.into());
        }
    };
    let mut plan = crate::plan::plan_with(config, &observed, clock.now(), forced);
    if !forced.is_empty() {
        crate::plan::restrict(&mut plan, &forced.keys().cloned().collect());
    }
    let mut executor = Executor::new(
        layout,
        config.environment.clone(),
        config.namespace.to_string(),
        store,
        authority,
        clock,
    );
    executor.failpoints = failpoints;
    executor.lease = Some(lease);
    let result = executor.execute(&plan, |_| {}).await;
    let recorded = match &result {
        Ok(_) => executor
            .record_last_apply()
            .await
            .map_err(anyhow::Error::from),
        Err(_) => Ok(()),
    };
    if let Some(lease) = executor.lease.take() {
        lease.release().await?;
    }
    let applied = result?;
    recorded?;
    Ok((plan, applied))
}
