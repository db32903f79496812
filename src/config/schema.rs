//! A JSON Schema of keys.toml for editors (`keyplan schema`).
//!
//! keys.toml is parsed by walking it with spans (see `walk.rs`), not by
//! deserializing these types; they exist to describe the file. The schema
//! checks shapes, names and duration syntax; the rules that relate fields
//! (consumers exist, timing, FusionAuth limits) are `keyplan validate`'s.

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// A duration: a whole number and a unit, s, m, h or d ("90d", "10m").
#[derive(JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
struct Duration(#[schemars(regex(pattern = r"^[0-9]+[smhd]$"))] String);

/// keyplan's declaration of services, their consumers and key rotation.
#[derive(JsonSchema)]
#[schemars(title = "keys.toml", deny_unknown_fields)]
#[allow(dead_code)]
struct KeysFile {
    environment: Environment,
    authority: Authority,
    store: Store,
    rotation: Option<Rotation>,
    readers: Option<Readers>,
    /// Each service and the consumers allowed to call it.
    #[schemars(extend("propertyNames" = { "pattern": "^[a-z][a-z0-9_-]{0,62}$" }))]
    services: Option<BTreeMap<String, Service>>,
    /// Callers that are not services themselves.
    #[schemars(extend("propertyNames" = { "pattern": "^[a-z][a-z0-9_-]{0,62}$" }))]
    consumers: Option<BTreeMap<String, Consumer>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Environment {
    /// Part of every store path.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,62}$"))]
    name: String,
    /// The namespace of authority key ids and names (`keyplan init` writes one).
    #[schemars(extend("format" = "uuid"))]
    id: Option<String>,
}

/// Who mints and records keys.
#[derive(JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)]
enum Authority {
    /// keyplan mints keys itself and records them under `{dir}/authority/`.
    Local {
        /// Relative to keys.toml; default ".keyplan".
        dir: Option<String>,
    },
    /// FusionAuth mints and records every key.
    Fusionauth {
        #[schemars(regex(pattern = r"^https?://"))]
        url: String,
        /// The environment variable holding keyplan's key-manager key.
        #[schemars(regex(pattern = r"^[A-Z_][A-Z0-9_]*$"))]
        api_key_env: String,
        #[schemars(extend("format" = "uuid"))]
        tenant_id: Option<String>,
        /// What minted keys may do on FusionAuth itself: endpoint -> methods. Never empty.
        #[schemars(extend("minProperties" = 1))]
        permissions: BTreeMap<String, Vec<Method>>,
    },
}

#[derive(JsonSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum Method {
    GET,
    POST,
    PUT,
    PATCH,
    DELETE,
}

/// Where keys are handed out.
#[derive(JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)]
enum Store {
    /// A directory mirroring SSM's layout.
    Local {
        /// Relative to keys.toml; default ".keyplan".
        dir: Option<String>,
        #[schemars(regex(pattern = r"^/[A-Za-z0-9/_.-]*$"))]
        prefix: Option<String>,
        max_parameters: Option<u64>,
    },
    /// AWS SSM Parameter Store.
    Ssm {
        #[schemars(regex(pattern = r"^/[A-Za-z0-9/_.-]*$"))]
        prefix: Option<String>,
        max_parameters: Option<u64>,
        #[schemars(length(min = 1))]
        region: Option<String>,
        /// An endpoint override (moto, LocalStack).
        #[schemars(regex(pattern = r"^https?://"))]
        endpoint: Option<String>,
        kms_key_id: Option<String>,
        writes_per_second: Option<f64>,
    },
}

/// Rotation timing; defaults here, overridable per service and per edge.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Rotation {
    every: Option<Duration>,
    propagation: Option<Duration>,
    grace: Option<Duration>,
    spread: Option<Duration>,
    skew: Option<Duration>,
    lag: Option<Duration>,
}

/// How often readers re-read the store.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Readers {
    /// A duration, or "restart" for readers that read only when they start.
    #[schemars(regex(pattern = r"^([0-9]+[smhd]|restart)$"))]
    refresh: Option<String>,
    max_restart: Option<Duration>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Service {
    description: Option<String>,
    consumers: Vec<ConsumerRef>,
    rotation: Option<Rotation>,
    readers: Option<Readers>,
}

/// A consumer's name, or a name with rotation settings for this edge.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ConsumerRef {
    Name(#[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,62}$"))] String),
    Edge(EdgeRef),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct EdgeRef {
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,62}$"))]
    name: String,
    rotation: Option<Rotation>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Consumer {
    description: Option<String>,
    readers: Option<Readers>,
}

/// The schema as pretty JSON.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(KeysFile);
    let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize");
    text.push('\n');
    text
}
