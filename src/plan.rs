//! `plan(desired, observed, now) -> Plan`: pure and synchronous.
//!
//! For every edge the planner works out where its rotation protocol stands
//! (see DESIGN.md and docs/rotation.md) and lists the writes that advance it
//! as far as `now` allows, each action with its reason, and apart from them
//! the steps that are waiting with the instant they become due. The executor
//! (`apply.rs`) carries the steps out in order and decides nothing; the only
//! things it fills in are the instants of writes that start a wait, taken
//! from its own clock, and the value of a key it has just minted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, KeyState};
use serde::{Deserialize, Serialize};

use crate::config::rules::minimum_wait;
use crate::config::{Config, Edge, Timing};
use crate::duration::format as fmt_duration;
use crate::ids;
use crate::observe::{EdgeState, Observed, StagedView, Versioned};
use crate::staged::{Intent, Mode};

/// What an action does to an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// The first key of an edge: minted, accepted and handed out in one apply.
    Create,
    /// A new key is minted and accepted as pending next to the current one.
    Stage,
    /// The consumer gets the pending key; the old one stays accepted for grace.
    Promote,
    /// The previous key is deleted and no longer accepted.
    Retire,
    /// `rotate --immediately`: the old keys are refused at once.
    Replace,
    /// The edge is gone from keys.toml: its keys are refused and deleted.
    Revoke,
    /// Puts back what the store lost, only restoring or widening.
    Repair,
}

impl ActionKind {
    /// The symbol of human output: + create, - revoke, ~ anything else.
    pub fn symbol(self) -> char {
        match self {
            ActionKind::Create => '+',
            ActionKind::Revoke => '-',
            _ => '~',
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::Create => "create",
            ActionKind::Stage => "stage",
            ActionKind::Promote => "promote",
            ActionKind::Retire => "retire",
            ActionKind::Replace => "replace",
            ActionKind::Revoke => "revoke",
            ActionKind::Repair => "repair",
        })
    }
}

/// An instant the executor fills in when it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeRef {
    /// Known at plan time (kept from the store).
    At(Timestamp),
    /// The executor's clock at the write.
    Now,
    /// The executor's clock at the write, plus this much.
    NowPlus(SignedDuration),
}

/// The digest of a key in an accepts entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestRef {
    Known(String),
    /// The key this action minted or found in the staged record.
    NewKey,
}

/// One entry of an accepts document to write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryTemplate {
    pub id: String,
    pub generation: u64,
    pub digest: DigestRef,
    pub state: KeyState,
    pub due: TimeRef,
    pub staged: TimeRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<TimeRef>,
}

/// One remote write. Key values never appear here: `Mint` leaves the new key
/// with the executor, and later steps take it from there or from the staged
/// record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Writes the staged record without a key: the intent, before minting.
    WriteIntent {
        intent: Intent,
    },
    DeleteAuthorityKey {
        id: String,
    },
    Mint {
        id: String,
        name: String,
    },
    /// Rewrites the staged record with the key just minted.
    WriteStagedKey,
    WriteAccepts {
        keys: Vec<EntryTemplate>,
    },
    /// Accepts nothing and lists the ids being deleted.
    WriteTombstone {
        ids: Vec<String>,
    },
    /// Hands the new key to the consumer, with its fingerprint.
    WriteConsumerKey {
        generation: u64,
    },
    /// The authority refuses the key after `until` (`None`: the `until` of the
    /// previous key this action just wrote).
    SetAuthorityExpiry {
        id: String,
        until: Option<Timestamp>,
    },
    DeleteConsumerKey,
    DeleteStaged,
    DeleteAccepts,
}

/// An action due now on one edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub edge: Edge,
    pub kind: ActionKind,
    pub reason: String,
    /// The generation the action is about.
    pub generation: u64,
    /// Since when it has been due (`status --check` flags what waits too long).
    pub due: Timestamp,
    pub steps: Vec<Step>,
}

/// A step that is not due yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub edge: Edge,
    pub kind: ActionKind,
    pub due: Timestamp,
    pub reason: String,
}

/// An edge keyplan will not touch until someone looks at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub edge: Edge,
    pub message: String,
}

/// The plan: the actions due at `now`, in order, and what waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub now: Timestamp,
    pub actions: Vec<Action>,
    pub waiting: Vec<Waiting>,
    pub problems: Vec<Problem>,
    /// Parameters the environment will hold at most while the plan runs.
    pub parameters_after: u64,
}

impl Plan {
    /// Whether nothing is due now.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// How many actions of `kind` the plan holds.
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }
}

/// A forced rotation asked for by `keyplan rotate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Force {
    Normal,
    Expedite,
    Immediately,
}

/// Plans every edge at `now`.
pub fn plan(config: &Config, observed: &Observed, now: Timestamp) -> Plan {
    plan_with(config, observed, now, &BTreeMap::new())
}

/// [`plan`], with the edges `keyplan rotate` asks to stage now.
pub fn plan_with(
    config: &Config,
    observed: &Observed,
    now: Timestamp,
    forced: &BTreeMap<Edge, Force>,
) -> Plan {
    let mut out = Plan {
        now,
        actions: Vec::new(),
        waiting: Vec::new(),
        problems: Vec::new(),
        parameters_after: observed.parameter_count,
    };
    let edges: BTreeSet<&Edge> = config.edges.keys().chain(observed.edges.keys()).collect();
    let empty = EdgeState::default();
    for edge in edges {
        let state = observed.edges.get(edge).unwrap_or(&empty);
        let mut planner = EdgePlanner {
            config,
            observed,
            now,
            edge,
            state,
            out: &mut out,
        };
        match config.edges.get(edge) {
            Some(timing) => planner.declared(timing, forced.get(edge).copied()),
            None => planner.revoke(),
        }
    }
    out.parameters_after = observed.parameter_count
        + 3 * out.count(ActionKind::Create) as u64
        + out.count(ActionKind::Stage) as u64;
    out
}

/// The instant generation n+1 of an edge is due, from generation n's entry:
/// `due(n) + every`, anchored on the schedule rather than on when cron ran,
/// plus (once, after the first key) the edge's stable spread offset.
pub fn next_due(edge: &Edge, timing: &Timing, current: &AcceptedKey) -> Timestamp {
    let offset = if current.generation == 1 {
        spread_offset(edge, timing.spread)
    } else {
        SignedDuration::ZERO
    };
    current.due + timing.every + offset
}

/// A stable offset in `[0, spread)` derived from the edge's name.
pub fn spread_offset(edge: &Edge, spread: SignedDuration) -> SignedDuration {
    let seconds = spread.as_secs();
    if seconds <= 0 {
        return SignedDuration::ZERO;
    }
    let digest = keyplan_runtime::record::digest(edge.to_string().as_bytes());
    let n = digest.bytes().take(10).fold(0u64, |acc, b| {
        acc.wrapping_mul(131).wrapping_add(u64::from(b))
    });
    SignedDuration::from_secs((n % seconds as u64) as i64)
}

/// How long the previous key stays accepted after promote, in `mode`.
pub fn grace_for(timing: &Timing, mode: Mode) -> SignedDuration {
    match mode {
        Mode::Expedite => minimum_wait(timing.consumer_refresh, timing.skew, timing.lag).max(
            minimum_wait(timing.service_refresh, timing.skew, timing.lag),
        ),
        _ => timing.grace,
    }
}

/// Why a scheduled stage is due: "due since 2027-03-02T10:00Z (every 30d)".
fn due_reason(due: Timestamp, timing: &Timing) -> String {
    format!(
        "due since {} (every {})",
        stamp(due),
        fmt_duration(timing.every)
    )
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%MZ").to_string()
}

fn ago(now: Timestamp, then: Timestamp) -> String {
    let d = now.duration_since(then);
    if d.as_secs() < 60 {
        format!("{}s ago", d.as_secs().max(0))
    } else {
        format!(
            "{} ago",
            fmt_duration(SignedDuration::from_secs(d.as_secs() / 60 * 60))
        )
    }
}

/// `entry` as the only, current key.
fn kept_entry(entry: &AcceptedKey) -> AcceptedKey {
    AcceptedKey {
        state: KeyState::Current,
        until: None,
        ..entry.clone()
    }
}

fn kept(entry: &AcceptedKey, state: KeyState, until: Option<TimeRef>) -> EntryTemplate {
    EntryTemplate {
        id: entry.id.clone(),
        generation: entry.generation,
        digest: DigestRef::Known(entry.sha256.clone()),
        state,
        due: TimeRef::At(entry.due),
        staged: TimeRef::At(entry.staged),
        until,
    }
}

struct EdgePlanner<'a> {
    config: &'a Config,
    observed: &'a Observed,
    now: Timestamp,
    edge: &'a Edge,
    state: &'a EdgeState,
    out: &'a mut Plan,
}

impl EdgePlanner<'_> {
    fn act(
        &mut self,
        kind: ActionKind,
        generation: u64,
        due: Timestamp,
        reason: String,
        steps: Vec<Step>,
    ) {
        if !steps.is_empty() {
            self.out.actions.push(Action {
                edge: self.edge.clone(),
                kind,
                reason,
                generation,
                due,
                steps,
            });
        }
    }

    fn wait(&mut self, kind: ActionKind, due: Timestamp, reason: String) {
        self.out.waiting.push(Waiting {
            edge: self.edge.clone(),
            kind,
            due,
            reason,
        });
    }

    /// The previous key of `generation` stays accepted until `until`.
    fn wait_for_retire(&mut self, generation: u64, until: Timestamp) {
        self.wait(
            ActionKind::Retire,
            until,
            format!("previous gen {generation} until {}", stamp(until)),
        );
    }

    fn problem(&mut self, message: String) {
        self.out.problems.push(Problem {
            edge: self.edge.clone(),
            message,
        });
    }

    /// The lock id of the last apply that wrote anything: part of every new
    /// key id, so ids never repeat even within one instant.
    fn last_apply(&self) -> &str {
        self.observed
            .last_apply
            .as_ref()
            .map_or("", |l| l.lock.as_str())
    }

    fn consumer_has(&self, digest: &str) -> bool {
        matches!(&self.state.consumer_key, Some(Versioned { value: Some(fp), .. }) if fp.matches(digest))
    }

    /// The highest generation any record of this edge names.
    fn highest_generation(&self) -> u64 {
        let mut highest = 0;
        if let Some(Versioned { value: Ok(doc), .. }) = &self.state.accepts {
            highest = doc.keys.iter().map(|k| k.generation).max().unwrap_or(0);
        }
        if let Some(Versioned {
            value: Some(fp), ..
        }) = &self.state.consumer_key
        {
            highest = highest.max(fp.generation);
        }
        if let Some(Versioned {
            value: Ok(view), ..
        }) = &self.state.staged
        {
            highest = highest.max(view.intent.generation);
        }
        highest
    }

    fn delete_existing(&self, ids: impl IntoIterator<Item = String>, except: &str) -> Vec<Step> {
        let mut seen = BTreeSet::new();
        ids.into_iter()
            .filter(|id| id != except && self.observed.authority_has(id) && seen.insert(id.clone()))
            .map(|id| Step::DeleteAuthorityKey { id })
            .collect()
    }

    fn declared(&mut self, timing: &Timing, forced: Option<Force>) {
        let accepts = match &self.state.accepts {
            Some(Versioned {
                value: Err(why), ..
            }) => {
                return self.problem(format!(
                    "its accepts document cannot be read ({why}); keyplan leaves the edge alone"
                ));
            }
            Some(Versioned { value: Ok(doc), .. }) => Some(doc),
            None => None,
        };
        if let Some(staged) = &self.state.staged {
            match &staged.value {
                Ok(view) => return self.finish_staged(timing, view, accepts),
                Err(why) => {
                    return self.problem(format!(
                        "its staged record cannot be read ({why}); keyplan leaves the edge alone"
                    ));
                }
            }
        }
        let Some(doc) = accepts else {
            let reason = if self.state.consumer_key.is_some() {
                "repair: the service accepts nothing from this consumer".to_owned()
            } else {
                "declared in keys.toml, not in the store".to_owned()
            };
            return self.start(Mode::Create, ActionKind::Create, reason, self.now);
        };
        if doc.is_tombstone() || doc.keys.is_empty() {
            self.finish_revoke(
                Some(doc),
                "finishing an interrupted revoke before the edge is created again",
            );
            return self.start(
                Mode::Create,
                ActionKind::Create,
                "declared in keys.toml again after a revoke".into(),
                self.now,
            );
        }
        let Some(current) = doc.key_in(KeyState::Current) else {
            return self.problem("its accepts document has no current key and no staged record; keyplan leaves the edge alone".into());
        };
        if let Some(pending) = doc.key_in(KeyState::Pending) {
            // A pending key without its staged record: its value is lost, and
            // nobody was handed it, so it is dropped.
            let mut steps = self.delete_existing([pending.id.clone()], "");
            let keys = doc
                .keys
                .iter()
                .filter(|k| k.state != KeyState::Pending)
                .map(|k| kept(k, k.state, k.until.map(TimeRef::At)))
                .collect();
            steps.push(Step::WriteAccepts { keys });
            return self.act(
                ActionKind::Repair,
                pending.generation,
                self.now,
                format!(
                    "pending key gen {} has no staged record; it is dropped",
                    pending.generation
                ),
                steps,
            );
        }
        if let Some(previous) = doc.key_in(KeyState::Previous) {
            let until = previous.until.unwrap_or(previous.staged);
            if self.now < until {
                return self.wait_for_retire(previous.generation, until);
            }
            let mut steps = self.delete_existing([previous.id.clone()], "");
            steps.push(Step::WriteAccepts {
                keys: vec![kept(current, KeyState::Current, None)],
            });
            self.act(
                ActionKind::Retire,
                previous.generation,
                until,
                format!("previous until {}", stamp(until)),
                steps,
            );
            return self.stage_if_due(timing, current);
        }
        if !self.observed.authority_has(&current.id) {
            return self.start(
                Mode::Normal,
                ActionKind::Stage,
                format!(
                    "repair: the authority no longer holds key {} (gen {})",
                    current.id, current.generation
                ),
                self.now,
            );
        }
        if !self.consumer_has(&current.sha256) {
            return self.start(
                Mode::Normal,
                ActionKind::Stage,
                "repair: the consumer holds no key the service accepts".into(),
                self.now,
            );
        }
        if let Some(force) = forced {
            let (mode, kind, reason) = match force {
                Force::Normal => (Mode::Normal, ActionKind::Stage, "forced by keyplan rotate"),
                Force::Expedite => (
                    Mode::Expedite,
                    ActionKind::Stage,
                    "forced by keyplan rotate --expedite",
                ),
                Force::Immediately => (
                    Mode::Immediately,
                    ActionKind::Replace,
                    "forced by keyplan rotate --immediately",
                ),
            };
            return self.start(mode, kind, reason.into(), self.now);
        }
        let due = next_due(self.edge, timing, current);
        if self.now >= due {
            self.start(
                Mode::Normal,
                ActionKind::Stage,
                due_reason(due, timing),
                due,
            );
        } else {
            self.wait(
                ActionKind::Stage,
                due,
                format!(
                    "gen {} due {} (every {})",
                    current.generation + 1,
                    stamp(due),
                    fmt_duration(timing.every)
                ),
            );
        }
    }

    /// After a retire (or a finished create or replace) the edge holds one
    /// key: when the next generation is due already (cron stopped for a while,
    /// `every` was shortened, a step was interrupted long ago), it is staged in
    /// the same apply, so that nothing is due after it.
    fn stage_if_due(&mut self, timing: &Timing, current: &AcceptedKey) {
        let due = next_due(self.edge, timing, current);
        if self.now >= due {
            let after = AcceptsDocument::new(vec![kept_entry(current)]);
            self.start_from(
                Mode::Normal,
                ActionKind::Stage,
                due_reason(due, timing),
                due,
                Some(&after),
            );
        }
    }

    /// Starts a new key: intent first, then mint, then the rest of the step.
    fn start(&mut self, mode: Mode, kind: ActionKind, reason: String, due: Timestamp) {
        let accepts = match &self.state.accepts {
            Some(Versioned { value: Ok(doc), .. }) => Some(doc),
            _ => None,
        };
        self.start_from(mode, kind, reason, due, accepts);
    }

    /// [`Self::start`] from `accepts`: what the store holds when this step
    /// begins (after the earlier actions of this plan on the edge).
    fn start_from(
        &mut self,
        mode: Mode,
        kind: ActionKind,
        reason: String,
        due: Timestamp,
        accepts: Option<&AcceptsDocument>,
    ) {
        let generation = self.highest_generation() + 1;
        let id = ids::key_id(
            &self.config.namespace,
            self.edge,
            self.now,
            generation,
            0,
            self.last_apply(),
        );
        let replaces = accepts
            .map(|doc| doc.keys.iter().map(|k| k.id.clone()).collect())
            .unwrap_or_default();
        let intent = Intent {
            generation,
            mode,
            reason: reason.clone(),
            due,
            ids: vec![id.clone()],
            replaces,
        };
        let mut steps = vec![
            Step::WriteIntent {
                intent: intent.clone(),
            },
            Step::Mint {
                id,
                name: ids::key_name(&self.config.namespace, self.edge, generation),
            },
            Step::WriteStagedKey,
        ];
        steps.extend(self.after_mint(&intent, accepts, None));
        self.act(kind, generation, due, reason, steps);
    }

    /// The writes that follow a mint (or find the key in the staged record),
    /// up to the first wait.
    fn after_mint(
        &self,
        intent: &Intent,
        accepts: Option<&AcceptsDocument>,
        staged_at: Option<Timestamp>,
    ) -> Vec<Step> {
        let id = intent.current_id().to_owned();
        let new_current = EntryTemplate {
            id: id.clone(),
            generation: intent.generation,
            digest: DigestRef::NewKey,
            state: KeyState::Current,
            due: if intent.mode == Mode::Create {
                TimeRef::Now
            } else {
                TimeRef::At(intent.due)
            },
            staged: staged_at.map_or(TimeRef::Now, TimeRef::At),
            until: None,
        };
        let stale = intent.ids[..intent.ids.len() - 1].iter().cloned();
        match intent.mode {
            Mode::Create | Mode::Immediately => {
                let mut steps = vec![
                    Step::WriteAccepts {
                        keys: vec![new_current],
                    },
                    Step::WriteConsumerKey {
                        generation: intent.generation,
                    },
                ];
                let older = accepts.into_iter().flat_map(|d| d.ids().map(str::to_owned));
                steps.extend(self.delete_existing(
                    stale.chain(intent.replaces.iter().cloned()).chain(older),
                    &id,
                ));
                steps.push(Step::DeleteStaged);
                steps
            }
            Mode::Normal | Mode::Expedite => {
                let mut keys: Vec<EntryTemplate> = accepts
                    .into_iter()
                    .flat_map(|d| d.keys.iter())
                    .filter(|k| k.state == KeyState::Current && k.id != id)
                    .map(|k| kept(k, KeyState::Current, None))
                    .collect();
                keys.push(EntryTemplate {
                    state: KeyState::Pending,
                    ..new_current
                });
                let mut steps = self.delete_existing(stale, &id);
                steps.push(Step::WriteAccepts { keys });
                steps
            }
        }
    }

    /// Finishes the step a staged record describes, in its mode.
    fn finish_staged(
        &mut self,
        timing: &Timing,
        view: &StagedView,
        accepts: Option<&AcceptsDocument>,
    ) {
        let intent = &view.intent;
        let id = intent.current_id().to_owned();
        let kind = match intent.mode {
            Mode::Create => ActionKind::Create,
            Mode::Immediately => ActionKind::Replace,
            Mode::Normal | Mode::Expedite => ActionKind::Stage,
        };
        let minted = self.observed.authority_has(&id);
        let generation = intent.generation;
        if view.key_digest.is_none() || !minted {
            // Not minted yet, or minted but its value is lost (or the authority
            // lost the key): a new attempt with a fresh id, the old one deleted.
            let mut steps = Vec::new();
            let mut next = intent.clone();
            if minted || view.key_digest.is_some() {
                next.ids.push(ids::key_id(
                    &self.config.namespace,
                    self.edge,
                    self.now,
                    generation,
                    intent.ids.len() as u32,
                    self.last_apply(),
                ));
                steps.push(Step::WriteIntent {
                    intent: next.clone(),
                });
                steps.extend(self.delete_existing([id.clone()], ""));
            }
            steps.push(Step::Mint {
                id: next.current_id().to_owned(),
                name: ids::key_name(&self.config.namespace, self.edge, generation),
            });
            steps.push(Step::WriteStagedKey);
            steps.extend(self.after_mint(&next, accepts, None));
            let reason = format!(
                "finishing an interrupted {} ({})",
                intent.mode, intent.reason
            );
            return self.act(kind, generation, intent.due, reason, steps);
        }
        let digest = view.key_digest.clone().unwrap_or_default();
        let entry = accepts.and_then(|d| d.keys.iter().find(|k| k.id == id));
        let interrupted = format!(
            "finishing an interrupted {} ({})",
            intent.mode, intent.reason
        );
        match (intent.mode, entry.map(|e| e.state)) {
            (Mode::Create | Mode::Immediately, _) => {
                let in_place = accepts.is_some_and(|d| {
                    d.keys.len() == 1 && entry.is_some_and(|e| e.state == KeyState::Current)
                });
                let mut steps = self.after_mint(intent, accepts, entry.map(|e| e.staged));
                if in_place {
                    steps.retain(|s| !matches!(s, Step::WriteAccepts { .. }));
                }
                if self.consumer_has(&digest) {
                    steps.retain(|s| !matches!(s, Step::WriteConsumerKey { .. }));
                }
                self.act(kind, generation, intent.due, interrupted, steps);
                // The key as the steps above leave it in accepts.
                let current = entry.cloned().unwrap_or_else(|| AcceptedKey {
                    id: id.clone(),
                    generation,
                    sha256: digest.clone(),
                    state: KeyState::Current,
                    due: if intent.mode == Mode::Create {
                        self.now
                    } else {
                        intent.due
                    },
                    staged: self.now,
                    until: None,
                });
                self.stage_if_due(timing, &current);
            }
            (_, None) => {
                let steps = self.after_mint(intent, accepts, None);
                self.act(
                    ActionKind::Stage,
                    generation,
                    intent.due,
                    interrupted,
                    steps,
                );
            }
            (_, Some(KeyState::Pending)) => {
                let entry = entry.expect("matched Some");
                let due = entry.staged + timing.propagation;
                if self.now < due {
                    return self.wait(
                        ActionKind::Promote,
                        due,
                        format!(
                            "gen {generation} staged {}, propagation {}",
                            stamp(entry.staged),
                            fmt_duration(timing.propagation)
                        ),
                    );
                }
                let accepts = accepts.expect("an entry was found in it");
                let mut steps = Vec::new();
                if !self.consumer_has(&digest) {
                    steps.push(Step::WriteConsumerKey { generation });
                }
                let grace = grace_for(timing, intent.mode);
                let mut keys = vec![kept(entry, KeyState::Current, None)];
                let mut expire = Vec::new();
                for old in accepts
                    .keys
                    .iter()
                    .filter(|k| k.id != id && k.state == KeyState::Current)
                {
                    keys.push(kept(old, KeyState::Previous, Some(TimeRef::NowPlus(grace))));
                    if self.observed.authority_has(&old.id) {
                        expire.push(Step::SetAuthorityExpiry {
                            id: old.id.clone(),
                            until: None,
                        });
                    }
                }
                steps.push(Step::WriteAccepts { keys });
                steps.extend(expire);
                let reason = format!(
                    "staged {}, propagation {}{}",
                    ago(self.now, entry.staged),
                    fmt_duration(timing.propagation),
                    if intent.mode == Mode::Expedite {
                        " (expedited: grace shortened)"
                    } else {
                        ""
                    }
                );
                self.act(ActionKind::Promote, generation, due, reason, steps);
            }
            (_, Some(KeyState::Current)) => {
                let accepts = accepts.expect("an entry was found in it");
                let mut steps = Vec::new();
                if !self.consumer_has(&digest) {
                    steps.push(Step::WriteConsumerKey { generation });
                }
                if let Some(previous) = accepts.key_in(KeyState::Previous) {
                    let until = previous.until.unwrap_or(previous.staged);
                    let recorded = self.observed.authority.get(&previous.id).cloned().flatten();
                    if recorded.as_ref().is_some_and(|k| k.expires != Some(until)) {
                        steps.push(Step::SetAuthorityExpiry {
                            id: previous.id.clone(),
                            until: Some(until),
                        });
                    }
                    if self.now < until {
                        self.act(
                            ActionKind::Repair,
                            generation,
                            intent.due,
                            interrupted,
                            steps,
                        );
                        return self.wait_for_retire(previous.generation, until);
                    }
                    steps.extend(self.delete_existing(
                        std::iter::once(previous.id.clone()).chain(intent.replaces.iter().cloned()),
                        &id,
                    ));
                    steps.push(Step::WriteAccepts {
                        keys: vec![kept(entry.expect("matched Some"), KeyState::Current, None)],
                    });
                    steps.push(Step::DeleteStaged);
                    self.act(
                        ActionKind::Retire,
                        generation,
                        until,
                        format!("previous until {}", stamp(until)),
                        steps,
                    );
                    return self.stage_if_due(timing, entry.expect("matched Some"));
                }
                steps.extend(
                    self.delete_existing(
                        intent
                            .replaces
                            .iter()
                            .cloned()
                            .chain(intent.ids.iter().cloned()),
                        &id,
                    ),
                );
                if accepts.keys.len() > 1 {
                    steps.push(Step::WriteAccepts {
                        keys: vec![kept(entry.expect("matched Some"), KeyState::Current, None)],
                    });
                }
                steps.push(Step::DeleteStaged);
                self.act(
                    ActionKind::Retire,
                    generation,
                    intent.due,
                    interrupted,
                    steps,
                );
                self.stage_if_due(timing, entry.expect("matched Some"));
            }
            (_, Some(KeyState::Previous)) => {
                self.problem(format!("the staged key gen {generation} is listed as previous; keyplan leaves the edge alone"));
            }
        }
    }

    /// Refuses and deletes the keys of an edge that keys.toml no longer declares.
    fn revoke(&mut self) {
        self.finish_revoke(
            match &self.state.accepts {
                Some(Versioned { value: Ok(doc), .. }) => Some(doc),
                _ => None,
            },
            "removed from keys.toml",
        );
    }

    fn finish_revoke(&mut self, accepts: Option<&AcceptsDocument>, reason: &str) {
        let mut ids: Vec<String> = accepts
            .into_iter()
            .flat_map(|d| d.ids().map(str::to_owned))
            .collect();
        if let Some(Versioned {
            value: Ok(view), ..
        }) = &self.state.staged
        {
            ids.extend(view.intent.ids.iter().cloned());
            ids.extend(view.intent.replaces.iter().cloned());
        }
        let mut unique = BTreeSet::new();
        ids.retain(|id| unique.insert(id.clone()));
        let mut steps = Vec::new();
        let tombstoned = accepts
            .is_some_and(|d| d.keys.is_empty() && ids.iter().all(|id| d.revoking.contains(id)));
        if self.state.accepts.is_some() && !tombstoned && !ids.is_empty() {
            steps.push(Step::WriteTombstone { ids: ids.clone() });
        }
        steps.extend(self.delete_existing(ids, ""));
        if self.state.consumer_key.is_some() {
            steps.push(Step::DeleteConsumerKey);
        }
        if self.state.staged.is_some() {
            steps.push(Step::DeleteStaged);
        }
        if self.state.accepts.is_some() {
            steps.push(Step::DeleteAccepts);
        }
        let generation = self.highest_generation();
        self.act(
            ActionKind::Revoke,
            generation,
            self.now,
            reason.to_owned(),
            steps,
        );
    }
}

/// Keeps only the actions and waiting steps of `edges` (for `keyplan rotate`).
pub fn restrict(plan: &mut Plan, edges: &BTreeSet<Edge>) {
    plan.actions.retain(|a| edges.contains(&a.edge));
    plan.waiting.retain(|w| edges.contains(&w.edge));
    plan.problems.retain(|p| edges.contains(&p.edge));
}
