//! The saved plan: `keyplan plan --out FILE`, `keyplan show FILE`,
//! `keyplan apply FILE`, and the document of `--format json`.
//!
//! A pull request shows the plan; the merge applies exactly it. So the file
//! records what it was made from (keys.toml's digest, the instant) and the
//! state of exactly the objects its actions touch (store versions, authority
//! key ids and update times). `apply FILE` re-observes under the lock and
//! refuses, naming each object that moved, when anything differs. No key
//! value is ever in it: steps carry ids and digests only.

use std::collections::BTreeMap;

use jiff::Timestamp;
use keyplan_runtime::record::{AcceptsDocument, digest_prefix};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Edge};
use crate::observe::{Observed, Versioned};
use crate::plan::{DigestRef, Plan, Step, TimeRef};

/// The `format` field of every plan document.
pub const FORMAT: &str = "keyplan-plan";
/// The version of the plan document; bumped on any incompatible change.
pub const VERSION: u32 = 1;

/// A plan with what it was made from. See docs/plan-format.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    pub format: String,
    pub version: u32,
    pub keyplan_version: String,
    pub config: ConfigRef,
    pub environment: String,
    pub plan: Plan,
    /// The objects the actions touch, as observed: what `apply FILE` checks.
    pub objects: Objects,
    /// Each touched edge's accepts document before the plan, one line per
    /// key (digest prefixes only), for the diffs plans show.
    pub accepts_before: BTreeMap<String, Vec<String>>,
}

/// Which keys.toml the plan was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRef {
    pub path: String,
    pub sha256: String,
}

/// Fingerprints of the touched objects: store parameters by name (their
/// version, `None` when absent) and authority keys by id (their last update,
/// `None` when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objects {
    pub store: BTreeMap<String, Option<u64>>,
    pub authority: BTreeMap<String, Option<Timestamp>>,
}

impl Objects {
    /// The fingerprints of what `plan` touches, as `observed` shows them.
    pub fn touched(config: &Config, observed: &Observed, plan: &Plan) -> Self {
        let layout = config.layout();
        let mut objects = Objects::default();
        for action in &plan.actions {
            let edge = &action.edge;
            for name in [
                layout.accepts(&edge.service, &edge.consumer),
                layout.consumer_key(&edge.consumer, &edge.service),
                layout.staged(&edge.service, &edge.consumer),
            ] {
                let version = observed.versions.get(&name).copied();
                objects.store.insert(name, version);
            }
            for step in &action.steps {
                let id = match step {
                    Step::Mint { id, .. }
                    | Step::DeleteAuthorityKey { id }
                    | Step::SetAuthorityExpiry { id, .. } => id,
                    _ => continue,
                };
                let updated = observed
                    .authority
                    .get(id)
                    .cloned()
                    .flatten()
                    .map(|k| k.updated);
                objects.authority.insert(id.clone(), updated);
            }
        }
        objects
    }

    /// Lines such as `services/x/accepts/y: version 4` for a diff, names
    /// relative to the environment's root.
    pub fn lines(&self, root: &str) -> Vec<String> {
        let store = self.store.iter().map(|(name, version)| {
            let short = name
                .strip_prefix(root)
                .unwrap_or(name)
                .trim_start_matches('/');
            format!(
                "{short}: {}",
                version.map_or("absent".into(), |v| format!("version {v}"))
            )
        });
        let authority = self.authority.iter().map(|(id, updated)| {
            format!(
                "authority key {id}: {}",
                updated.map_or("absent".into(), |u| format!("updated {u}"))
            )
        });
        store.chain(authority).collect()
    }

    /// Every object whose fingerprint differs in `now`, as
    /// `services/x/accepts/y: version 4 -> 5`.
    pub fn moved(&self, now: &Objects, root: &str) -> Vec<String> {
        let show_version = |v: Option<u64>| v.map_or("absent".into(), |v| format!("version {v}"));
        let show_update =
            |u: Option<Timestamp>| u.map_or("absent".into(), |u| format!("updated {u}"));
        let mut moved = Vec::new();
        for (name, then) in &self.store {
            let current = now.store.get(name).copied().flatten();
            if current != *then {
                let short = name
                    .strip_prefix(root)
                    .unwrap_or(name)
                    .trim_start_matches('/');
                moved.push(format!(
                    "{short}: {} -> {}",
                    show_version(*then),
                    show_version(current)
                ));
            }
        }
        for (id, then) in &self.authority {
            let current = now.authority.get(id).copied().flatten();
            if current != *then {
                moved.push(format!(
                    "authority key {id}: {} -> {}",
                    show_update(*then),
                    show_update(current)
                ));
            }
        }
        moved
    }
}

/// One accepts document as plan lines: `gen 1 current brohLIVI`.
pub fn accepts_lines(document: &AcceptsDocument) -> Vec<String> {
    if document.is_tombstone() {
        return vec![format!(
            "nothing accepted; revoking {} key(s)",
            document.revoking.len()
        )];
    }
    document
        .keys
        .iter()
        .map(|k| {
            let until = k.until.map_or(String::new(), |u| {
                format!(" until {}", crate::render::instant(u))
            });
            format!(
                "gen {} {} {}{until}",
                k.generation,
                k.state,
                digest_prefix(&k.sha256)
            )
        })
        .collect()
}

/// The accepts document a step writes, as plan lines (`new key` for the key
/// the apply mints, `at apply` for instants the executor stamps).
pub fn written_lines(step: &Step) -> Option<Vec<String>> {
    match step {
        Step::WriteAccepts { keys } => Some(
            keys.iter()
                .map(|k| {
                    let digest = match &k.digest {
                        DigestRef::Known(d) => digest_prefix(d).to_owned(),
                        DigestRef::NewKey => "<new key>".to_owned(),
                    };
                    let until = match k.until {
                        None => String::new(),
                        Some(TimeRef::At(t)) => format!(" until {}", crate::render::instant(t)),
                        Some(TimeRef::Now) => " until <apply time>".to_owned(),
                        Some(TimeRef::NowPlus(d)) => {
                            format!(" until <apply time> + {}", crate::duration::format(d))
                        }
                    };
                    format!("gen {} {} {digest}{until}", k.generation, k.state)
                })
                .collect(),
        ),
        Step::WriteTombstone { ids } => Some(vec![format!(
            "nothing accepted; revoking {} key(s)",
            ids.len()
        )]),
        Step::DeleteAccepts => Some(Vec::new()),
        _ => None,
    }
}

impl PlanFile {
    /// The document of `plan`, made from `config` and `observed`.
    pub fn new(config: &Config, observed: &Observed, plan: Plan) -> Self {
        let objects = Objects::touched(config, observed, &plan);
        let mut accepts_before = BTreeMap::new();
        for action in &plan.actions {
            let lines = match observed
                .edges
                .get(&action.edge)
                .and_then(|s| s.accepts.as_ref())
            {
                Some(Versioned { value: Ok(doc), .. }) => accepts_lines(doc),
                Some(Versioned { value: Err(_), .. }) => vec!["(unreadable)".to_owned()],
                None => Vec::new(),
            };
            accepts_before.insert(action.edge.to_string(), lines);
        }
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            keyplan_version: env!("CARGO_PKG_VERSION").to_owned(),
            config: ConfigRef {
                path: config.path.display().to_string(),
                sha256: config.digest.clone(),
            },
            environment: config.environment.clone(),
            plan,
            objects,
            accepts_before,
        }
    }

    /// The before lines of `edge`'s accepts document.
    pub fn before(&self, edge: &Edge) -> &[String] {
        self.accepts_before
            .get(&edge.to_string())
            .map_or(&[], Vec::as_slice)
    }

    /// The document as written by `plan --out` and `--format json`.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("plans serialize");
        text.push('\n');
        text
    }

    /// Reads a saved plan.
    ///
    /// # Errors
    /// Not a keyplan plan, or a version this keyplan does not read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(format!(
                "not a keyplan plan (its \"format\" is not \"{FORMAT}\")"
            ));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            other => {
                return Err(format!(
                    "plan format version {} is not one this keyplan reads (it reads {VERSION})",
                    other.map_or("none".into(), |v| v.to_string())
                ));
            }
        }
        serde_json::from_value(value).map_err(|e| format!("the plan is damaged: {e}"))
    }
}
