//! The providers' answers -> [`Observed`]: what the store and the authority
//! hold for every edge, found with one recursive read of `{prefix}/{env}` and
//! one authority look-up per recorded id.
//!
//! Only accepts documents and staged records are read with their values;
//! consumer keys are compared through their fingerprints.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use keyplan_runtime::record::{AcceptsDocument, Fingerprint, Layout, ParameterRole};

use crate::config::Edge;
use crate::provider::{Authority, AuthorityKey, ProviderError, Store};
use crate::staged::{Intent, StagedRecord};

/// A stored object and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// What the store holds for one edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeState {
    /// The service's accepts document, or why it could not be read.
    pub accepts: Option<Versioned<Result<AcceptsDocument, String>>>,
    /// The consumer parameter's fingerprint (`None` inside: no fingerprint).
    pub consumer_key: Option<Versioned<Option<Fingerprint>>>,
    /// The staged intent (never its key), or why it could not be read.
    pub staged: Option<Versioned<Result<StagedView, String>>>,
}

/// A staged record as the planner sees it: the intent and whether it holds
/// the key, and that key's digest. The key itself stays in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedView {
    pub intent: Intent,
    pub key_digest: Option<String>,
}

/// Everything observed, by edge, plus the authority's records by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub edges: BTreeMap<Edge, EdgeState>,
    /// Every id named in the store, with the authority's record (`None`: absent).
    pub authority: BTreeMap<String, Option<AuthorityKey>>,
    /// Parameters under the environment's root that are not keyplan's.
    pub foreign: Vec<String>,
    /// How many parameters the environment holds.
    pub parameter_count: u64,
    /// The newest timestamp found in the store (`apply --at` may not go before it).
    pub newest_stamp: Option<Timestamp>,
    /// Every parameter's version, by name.
    pub versions: BTreeMap<String, u64>,
    /// What the last apply wrote, if it said.
    pub last_apply: Option<LastApply>,
}

/// What an apply wrote: names and versions (`None`: deleted). The next apply
/// waits until the store shows at least this, since SSM does not promise
/// read-your-writes between processes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastApply {
    pub lock: String,
    pub finished: Timestamp,
    pub written: BTreeMap<String, Option<u64>>,
}

impl Observed {
    /// The parameters the last apply wrote that the store does not show yet
    /// at the version it wrote. Deletions are not checked: a later apply that
    /// stopped halfway may have written the name again.
    pub fn lagging(&self) -> Vec<String> {
        let Some(last) = &self.last_apply else {
            return Vec::new();
        };
        last.written
            .iter()
            .filter(|(name, version)| {
                version.is_some_and(|v| self.versions.get(*name).is_none_or(|seen| *seen < v))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Observed {
    /// Whether the authority holds key `id`.
    pub fn authority_has(&self, id: &str) -> bool {
        self.authority.get(id).is_some_and(Option::is_some)
    }
}

/// Reads the store and the authority.
///
/// # Errors
/// The first provider failure.
pub async fn observe(
    layout: &Layout,
    store: &dyn Store,
    authority: &dyn Authority,
) -> Result<Observed, ProviderError> {
    let decrypt = |name: &str| {
        matches!(
            layout.classify(name),
            Some(
                ParameterRole::Accepts { .. }
                    | ParameterRole::Staged { .. }
                    | ParameterRole::LastApply
            )
        )
    };
    let parameters = store.list(layout.root(), &decrypt).await?;
    let mut observed = Observed {
        parameter_count: parameters.len() as u64,
        ..Observed::default()
    };
    let mut stamps = Vec::new();
    for parameter in parameters {
        observed
            .versions
            .insert(parameter.name.clone(), parameter.version);
        let Some(role) = layout.classify(&parameter.name) else {
            observed.foreign.push(parameter.name);
            continue;
        };
        let version = parameter.version;
        match role {
            ParameterRole::Accepts { service, consumer } => {
                let document = match &parameter.value {
                    Some(v) => AcceptsDocument::parse(v.expose()).map_err(|e| e.to_string()),
                    None => Err("the store returned no value".into()),
                };
                if let Ok(doc) = &document {
                    for key in &doc.keys {
                        stamps.extend([key.due, key.staged]);
                        stamps.extend(key.until);
                    }
                }
                observed
                    .edges
                    .entry(Edge::new(service, consumer))
                    .or_default()
                    .accepts = Some(Versioned {
                    version,
                    value: document,
                });
            }
            ParameterRole::ConsumerKey { consumer, service } => {
                let fingerprint = parameter
                    .description
                    .as_deref()
                    .and_then(|d| Fingerprint::parse(d).ok());
                observed
                    .edges
                    .entry(Edge::new(service, consumer))
                    .or_default()
                    .consumer_key = Some(Versioned {
                    version,
                    value: fingerprint,
                });
            }
            ParameterRole::Staged { service, consumer } => {
                let view = match &parameter.value {
                    Some(v) => StagedRecord::parse(v).map(|r| StagedView {
                        key_digest: r.key.as_ref().map(|k| k.digest()),
                        intent: r.intent,
                    }),
                    None => Err("the store returned no value".into()),
                };
                if let Ok(v) = &view {
                    stamps.push(v.intent.due);
                }
                observed
                    .edges
                    .entry(Edge::new(service, consumer))
                    .or_default()
                    .staged = Some(Versioned {
                    version,
                    value: view,
                });
            }
            ParameterRole::Lock => {}
            ParameterRole::LastApply => {
                observed.last_apply = parameter
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_str(v.expose()).ok());
            }
        }
    }
    observed.newest_stamp = stamps.into_iter().max();

    let mut ids = BTreeSet::new();
    for state in observed.edges.values() {
        if let Some(Versioned { value: Ok(doc), .. }) = &state.accepts {
            ids.extend(doc.ids().map(str::to_owned));
        }
        if let Some(Versioned {
            value: Ok(view), ..
        }) = &state.staged
        {
            ids.extend(view.intent.ids.iter().cloned());
            ids.extend(view.intent.replaces.iter().cloned());
        }
    }
    for id in ids {
        let record = authority.get(&id).await?;
        observed.authority.insert(id, record);
    }
    Ok(observed)
}
