//! keys.toml -> a validated [`Config`] (pure: reads nothing but the text).
//!
//! The document is walked with its spans rather than deserialized, so that
//! every error is reported at once, at its `file:line:column`, with a hint,
//! and so that no error ever quotes a value of `[authority]`.

pub mod diagnostic;
pub mod rules;
pub mod schema;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use jiff::SignedDuration;
use uuid::Uuid;

pub use diagnostic::{Diagnostic, Severity};

/// One (service, consumer) pair: every edge has its own key.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Edge {
    pub service: String,
    pub consumer: String,
}

impl Edge {
    pub fn new(service: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            consumer: consumer.into(),
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<-{}", self.service, self.consumer)
    }
}

/// How often a reader re-reads the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Every interval (with up to 10% jitter).
    Every(SignedDuration),
    /// Only when it starts (ECS environment, External Secrets): within `max_restart`
    /// of a change every task has restarted.
    Restart { max_restart: SignedDuration },
}

/// The timing of one edge's rotations, after defaults and overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub every: SignedDuration,
    pub propagation: SignedDuration,
    pub grace: SignedDuration,
    /// A stable per-edge offset of up to this much, so that edges created
    /// together do not all rotate in the same run.
    pub spread: SignedDuration,
    /// The clock allowance between machines.
    pub skew: SignedDuration,
    /// The time from a stamp to a write being readable everywhere.
    pub lag: SignedDuration,
    /// The service's readers.
    pub service_refresh: Refresh,
    /// The consumer's readers.
    pub consumer_refresh: Refresh,
}

/// Who mints and records keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorityConfig {
    /// keyplan mints keys itself and records them (never their values) under
    /// `{dir}/authority/`.
    Local {
        /// Resolved against the directory of keys.toml.
        dir: PathBuf,
        /// As written, for messages.
        shown: String,
    },
    FusionAuth(FusionAuthConfig),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionAuthConfig {
    pub url: String,
    /// The environment variable holding keyplan's key-manager key.
    pub api_key_env: String,
    pub tenant_id: Option<Uuid>,
    /// What minted keys may do on FusionAuth itself; never empty.
    pub permissions: BTreeMap<String, BTreeSet<String>>,
}

/// Where keys are handed out.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreKind {
    Local {
        /// Resolved against the directory of keys.toml.
        dir: PathBuf,
        /// As written, for messages.
        shown: String,
    },
    Ssm {
        region: Option<String>,
        endpoint: Option<String>,
        kms_key_id: Option<String>,
        writes_per_second: Option<f64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    pub prefix: String,
    /// Plan stops before the store would hold more parameters than this.
    pub max_parameters: u64,
    pub kind: StoreKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub description: Option<String>,
    pub consumers: BTreeSet<String>,
}

/// keys.toml, validated: the desired state.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where it was read from, as given.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, so a saved plan can tell that it changed.
    pub digest: String,
    pub environment: String,
    /// The namespace of authority key ids and names.
    pub namespace: Uuid,
    pub authority: AuthorityConfig,
    pub store: StoreConfig,
    pub services: BTreeMap<String, ServiceConfig>,
    /// Every name that may call a service: `[consumers]` and `[services]`.
    pub consumers: BTreeSet<String>,
    pub edges: BTreeMap<Edge, Timing>,
}

/// keys.toml could not be used; the findings say where and why.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub rendered: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        write!(
            f,
            "{} is not valid ({errors} error{})",
            self.file,
            if errors == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigError {}

/// A valid config and the warnings about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Rendered warnings, ready for stderr.
    pub warnings: String,
}

/// Reads and validates keys.toml at `path`.
///
/// # Errors
/// [`ConfigError`] with every problem found, rendered with file:line:column.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text).map_err(LoadError::Invalid)
}

/// Why keys.toml could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(ConfigError),
}

/// Validates keys.toml text; `path` names it in messages and anchors `store.dir`.
///
/// # Errors
/// [`ConfigError`] with every problem found.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new("."));
    let (config, mut diagnostics) = walk::walk(text, base);
    let config = config.map(|raw| {
        let (config, findings) = rules::finish(raw, path, text);
        diagnostics.extend(findings);
        config
    });
    diagnostics.sort_by_key(|d| {
        (
            d.severity == Severity::Warning,
            d.span.as_ref().map(|s| s.start),
        )
    });
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let rendered = diagnostic::render(&file, text, &diagnostics);
    match config {
        Some(config) if !has_errors => Ok(Loaded {
            config,
            warnings: rendered,
        }),
        _ => Err(ConfigError {
            file,
            rendered,
            diagnostics,
        }),
    }
}

impl Config {
    /// The store layout of this environment.
    pub fn layout(&self) -> keyplan_runtime::record::Layout {
        keyplan_runtime::record::Layout::new(&self.store.prefix, &self.environment)
    }
}

/// The default namespace when `[environment] id` is absent: derived from the
/// environment's name and the store prefix, so it is stable across machines.
pub fn derived_namespace(prefix: &str, environment: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("keyplan:{prefix}/{environment}").as_bytes(),
    )
}

/// Whether `name` is a valid service, consumer or environment name.
pub fn walk_name_is_valid(name: &str) -> bool {
    walk::valid_name(name)
}

/// The SHA-256 of keys.toml, for saved plans.
pub fn file_digest(text: &str) -> String {
    keyplan_runtime::record::digest(text.as_bytes())
}
