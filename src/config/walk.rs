//! The first pass over keys.toml: the shape of every table, with spans.
//! Unknown fields, wrong types and malformed values are reported here; the
//! rules that relate fields to each other are in `rules.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use jiff::SignedDuration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use uuid::Uuid;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::{AuthorityConfig, FusionAuthConfig, StoreConfig, StoreKind};
use crate::duration;

pub type Span = Range<usize>;

/// A value and where it was written.
#[derive(Clone, Debug)]
pub struct At<T> {
    pub value: T,
    pub span: Span,
}

/// Rotation settings as written at one level (defaults, service, edge).
#[derive(Clone, Debug, Default)]
pub struct RawTiming {
    pub every: Option<At<SignedDuration>>,
    pub propagation: Option<At<SignedDuration>>,
    pub grace: Option<At<SignedDuration>>,
    pub spread: Option<At<SignedDuration>>,
    pub skew: Option<At<SignedDuration>>,
    pub lag: Option<At<SignedDuration>>,
}

#[derive(Clone, Debug)]
pub enum RawRefresh {
    Every(SignedDuration),
    Restart,
}

/// `readers = { refresh, max_restart }` at one level.
#[derive(Clone, Debug, Default)]
pub struct RawReaders {
    pub refresh: Option<At<RawRefresh>>,
    pub max_restart: Option<At<SignedDuration>>,
}

#[derive(Clone, Debug)]
pub struct RawConsumerRef {
    pub name: At<String>,
    pub timing: RawTiming,
}

#[derive(Clone, Debug)]
pub struct RawService {
    pub span: Span,
    pub description: Option<String>,
    pub consumers: Vec<RawConsumerRef>,
    pub timing: RawTiming,
    pub readers: RawReaders,
}

#[derive(Clone, Debug)]
pub struct RawConsumer {
    pub span: Span,
    pub readers: RawReaders,
}

/// keys.toml after the first pass.
#[derive(Clone, Debug)]
pub struct Raw {
    pub environment: At<String>,
    pub environment_id: Option<Uuid>,
    pub authority: AuthorityConfig,
    pub permissions_span: Option<Span>,
    pub store: StoreConfig,
    pub store_span: Span,
    pub prefix_span: Option<Span>,
    pub defaults: RawTiming,
    pub readers: RawReaders,
    pub services: BTreeMap<String, RawService>,
    pub consumers: BTreeMap<String, RawConsumer>,
}

/// Walks the document; `None` when a required part is missing or unreadable.
pub fn walk(text: &str, base: &Path) -> (Option<Raw>, Vec<Diagnostic>) {
    let mut w = Walker::default();
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let message = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned();
            w.errors.push(Diagnostic::error(
                e.span(),
                format!("invalid TOML: {message}"),
            ));
            return (None, w.errors);
        }
    };
    let raw = w.root(root.get_ref(), root.span(), base);
    (raw, w.errors)
}

#[derive(Default)]
struct Walker {
    errors: Vec<Diagnostic>,
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Names of services and consumers: part of every store path.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

const NAME_RULE: &str = "names are a lowercase letter, then lowercase letters, digits, '-' or '_', at most 63 characters";

impl Walker {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.errors.push(Diagnostic::error(Some(span), message));
    }

    /// Reports fields of `table` not in `allowed`, with a suggestion.
    fn known_fields(&mut self, table: &Table<'_>, allowed: &[&str], context: &str) {
        for key in table.keys() {
            let name = key.get_ref().as_ref();
            if !allowed.contains(&name) {
                let mut d = Diagnostic::error(
                    Some(key.span()),
                    format!("unknown field `{name}` in {context}"),
                );
                d = match did_you_mean(name, allowed.iter().copied()) {
                    Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                    None => d.with_hint(format!("expected one of: {}", allowed.join(", "))),
                };
                self.errors.push(d);
            }
        }
    }

    fn table<'a, 'i>(&mut self, value: &'a Value<'i>, what: &str) -> Option<&'a Table<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    value.span(),
                    format!("{what} must be a table, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, value: &Value<'_>, what: &str) -> Option<At<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(At {
                value: s.to_string(),
                span: value.span(),
            }),
            other => {
                self.error(
                    value.span(),
                    format!("{what} must be a string, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn duration(&mut self, value: &Value<'_>, what: &str) -> Option<At<SignedDuration>> {
        let text = self.string(value, what)?;
        match duration::parse(&text.value) {
            Ok(d) => Some(At {
                value: d,
                span: text.span,
            }),
            Err(why) => {
                self.error(text.span, format!("{what}: {why}"));
                None
            }
        }
    }

    fn get<'a, 'i>(table: &'a Table<'i>, key: &str) -> Option<&'a Value<'i>> {
        table.get(key)
    }

    fn root(&mut self, root: &Table<'_>, root_span: Span, base: &Path) -> Option<Raw> {
        self.known_fields(
            root,
            &[
                "environment",
                "authority",
                "store",
                "rotation",
                "readers",
                "services",
                "consumers",
            ],
            "keys.toml",
        );
        let start = root_span.start..root_span.start;
        let environment = self.environment(root, &start);
        let authority = match Self::get(root, "authority") {
            Some(v) => self.authority(v, base),
            None => {
                self.errors.push(
                    Diagnostic::error(Some(start.clone()), "missing table [authority]").with_hint(
                        "add `[authority]` with `kind = \"local\"` to let keyplan mint keys itself",
                    ),
                );
                None
            }
        };
        let store = match Self::get(root, "store") {
            Some(v) => self.store(v, base).map(|(s, p)| (s, p, v.span())),
            None => {
                self.errors.push(
                    Diagnostic::error(Some(start.clone()), "missing table [store]").with_hint(
                        "add `[store]` with `kind = \"local\"` to keep keys in ./.keyplan",
                    ),
                );
                None
            }
        };
        let defaults = match Self::get(root, "rotation") {
            Some(v) => self.timing(v, "[rotation]"),
            None => RawTiming::default(),
        };
        let readers = match Self::get(root, "readers") {
            Some(v) => self.readers(v, "[readers]"),
            None => RawReaders::default(),
        };
        let consumers = self.consumers(root);
        let services = self.services(root);
        let (environment, environment_id) = environment?;
        let (authority, permissions_span) = authority?;
        let (store, prefix_span, store_span) = store?;
        Some(Raw {
            environment,
            environment_id,
            authority,
            permissions_span,
            store,
            store_span,
            prefix_span,
            defaults,
            readers,
            services,
            consumers,
        })
    }

    fn environment(
        &mut self,
        root: &Table<'_>,
        start: &Span,
    ) -> Option<(At<String>, Option<Uuid>)> {
        let Some(value) = Self::get(root, "environment") else {
            self.errors.push(
                Diagnostic::error(Some(start.clone()), "missing table [environment]")
                    .with_hint("add `[environment]` with `name = \"dev\"`: the name is part of every store path"),
            );
            return None;
        };
        let table = self.table(value, "[environment]")?;
        self.known_fields(table, &["name", "id"], "[environment]");
        let id = match Self::get(table, "id") {
            Some(v) => {
                self.string(v, "environment.id")
                    .and_then(|s| match Uuid::parse_str(&s.value) {
                        Ok(id) => Some(id),
                        Err(_) => {
                            self.error(s.span, "environment.id must be a UUID");
                            None
                        }
                    })
            }
            None => None,
        };
        let Some(name) = Self::get(table, "name") else {
            self.error(value.span(), "missing field `name` in [environment]");
            return None;
        };
        let name = self.string(name, "environment.name")?;
        if !valid_name(&name.value) {
            self.errors.push(
                Diagnostic::error(Some(name.span.clone()), "invalid environment name")
                    .with_hint(NAME_RULE),
            );
        }
        Some((name, id))
    }

    /// `[authority]`. Messages here never quote a value.
    fn authority(
        &mut self,
        value: &Value<'_>,
        base: &Path,
    ) -> Option<(AuthorityConfig, Option<Span>)> {
        let table = self.table(value, "[authority]")?;
        let Some(kind) = Self::get(table, "kind") else {
            self.errors.push(
                Diagnostic::error(Some(value.span()), "missing field `kind` in [authority]")
                    .with_hint("`kind = \"local\"` or `kind = \"fusionauth\"`"),
            );
            return None;
        };
        let kind = self.string(kind, "authority.kind")?;
        match kind.value.as_str() {
            "local" => {
                self.known_fields(table, &["kind", "dir"], "[authority] (kind = \"local\")");
                let shown = Self::get(table, "dir")
                    .and_then(|d| self.string(d, "authority.dir"))
                    .map_or_else(|| ".keyplan".to_owned(), |d| d.value);
                Some((
                    AuthorityConfig::Local {
                        dir: base.join(&shown),
                        shown,
                    },
                    None,
                ))
            }
            "fusionauth" => self.fusionauth(table, value.span()),
            _ => {
                self.errors.push(
                    Diagnostic::error(Some(kind.span), "unknown authority kind")
                        .with_hint("`kind = \"local\"` or `kind = \"fusionauth\"`"),
                );
                None
            }
        }
    }

    fn fusionauth(
        &mut self,
        table: &Table<'_>,
        span: Span,
    ) -> Option<(AuthorityConfig, Option<Span>)> {
        self.known_fields(
            table,
            &["kind", "url", "api_key_env", "tenant_id", "permissions"],
            "[authority] (kind = \"fusionauth\")",
        );
        let required = |w: &mut Self, field: &str| match Self::get(table, field) {
            Some(v) => w.string(v, &format!("authority.{field}")),
            None => {
                w.error(
                    span.clone(),
                    format!("missing field `{field}` in [authority]"),
                );
                None
            }
        };
        let url = required(self, "url");
        let api_key_env = required(self, "api_key_env");
        let tenant_id = match Self::get(table, "tenant_id") {
            Some(v) => match self.string(v, "authority.tenant_id") {
                Some(s) => match Uuid::parse_str(&s.value) {
                    Ok(id) => Some(Some(id)),
                    Err(_) => {
                        self.error(s.span, "authority.tenant_id must be a UUID");
                        None
                    }
                },
                None => None,
            },
            None => Some(None),
        };
        let (permissions, permissions_span) = match Self::get(table, "permissions") {
            Some(v) => (self.permissions(v), Some(v.span())),
            None => {
                self.errors.push(
                    Diagnostic::error(Some(span.clone()), "missing field `permissions` in [authority]")
                        .with_hint("FusionAuth gives a key with no permissions access to every API; name at least one, such as `permissions = { \"/api/status\" = [\"GET\"] }`"),
                );
                (None, None)
            }
        };
        if let Some(url) = &url
            && !(url.value.starts_with("https://") || url.value.starts_with("http://"))
        {
            self.error(
                url.span.clone(),
                "authority.url must be an http:// or https:// URL",
            );
        }
        if let Some(env) = &api_key_env {
            self.check_env_name(env, "authority.api_key_env");
        }
        Some((
            AuthorityConfig::FusionAuth(FusionAuthConfig {
                url: url?.value,
                api_key_env: api_key_env?.value,
                tenant_id: tenant_id?,
                permissions: permissions?,
            }),
            permissions_span,
        ))
    }

    /// An environment variable's name, never a key pasted in its place.
    fn check_env_name(&mut self, env: &At<String>, what: &str) {
        let v = &env.value;
        let is_name = !v.is_empty()
            && v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && v.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !is_name {
            let looks_secret = v.len() >= 20 || v.chars().any(|c| c.is_ascii_lowercase());
            let d = Diagnostic::error(
                Some(env.span.clone()),
                format!("{what} must name an environment variable (UPPER_CASE)"),
            );
            self.errors.push(if looks_secret {
                d.with_hint("this looks like a key value: never put secrets in keys.toml; export the key in an environment variable and name it here, such as `api_key_env = \"FUSIONAUTH_API_KEY\"`")
            } else {
                d.with_hint("such as `api_key_env = \"FUSIONAUTH_API_KEY\"`")
            });
        }
    }

    fn permissions(&mut self, value: &Value<'_>) -> Option<BTreeMap<String, BTreeSet<String>>> {
        let table = self.table(value, "authority.permissions")?;
        let mut out = BTreeMap::new();
        let known = crate::fusionauth_endpoints::endpoints();
        if table.is_empty() {
            self.errors.push(
                Diagnostic::error(Some(value.span()), "authority.permissions is empty")
                    .with_hint("FusionAuth gives a key with no permissions access to every API (a super key); name at least one endpoint"),
            );
            return None;
        }
        let mut ok = true;
        for (endpoint, methods) in table {
            let name = endpoint.get_ref().as_ref();
            if name == "/api/api-key" || name.starts_with("/api/api-key/") {
                self.errors.push(
                    Diagnostic::error(Some(endpoint.span()), "minted keys must not reach the API Key API")
                        .with_hint("remove this endpoint: a key that can mint keys defeats the point of scoped keys"),
                );
                ok = false;
                continue;
            }
            let Some(allowed) = known.get(name) else {
                let mut d = Diagnostic::error(
                    Some(endpoint.span()),
                    "unknown FusionAuth endpoint in authority.permissions",
                );
                if let Some(s) = did_you_mean(name, known.keys().map(|k| k.as_str())) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                self.errors.push(d);
                ok = false;
                continue;
            };
            let DeValue::Array(list) = methods.get_ref() else {
                self.error(
                    methods.span(),
                    "the methods of an endpoint must be an array such as [\"GET\"]",
                );
                ok = false;
                continue;
            };
            if list.is_empty() {
                self.error(methods.span(), "an endpoint needs at least one method");
                ok = false;
            }
            let mut set = BTreeSet::new();
            for method in list {
                let Some(m) = self.string(method, "a method") else {
                    ok = false;
                    continue;
                };
                if !allowed.methods.contains(&m.value) {
                    self.errors.push(
                        Diagnostic::error(
                            Some(m.span),
                            format!("endpoint {name} has no method {}", m.value),
                        )
                        .with_hint(format!(
                            "it allows: {}",
                            allowed
                                .methods
                                .iter()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    );
                    ok = false;
                }
                set.insert(m.value);
            }
            out.insert(name.to_owned(), set);
        }
        ok.then_some(out)
    }

    fn store(&mut self, value: &Value<'_>, base: &Path) -> Option<(StoreConfig, Option<Span>)> {
        let table = self.table(value, "[store]")?;
        let Some(kind) = Self::get(table, "kind") else {
            self.errors.push(
                Diagnostic::error(Some(value.span()), "missing field `kind` in [store]")
                    .with_hint("`kind = \"local\"` or `kind = \"ssm\"`"),
            );
            return None;
        };
        let kind = self.string(kind, "store.kind")?;
        let common = ["kind", "prefix", "max_parameters"];
        let optional = |w: &mut Self, field: &str| {
            Self::get(table, field).and_then(|v| w.string(v, &format!("store.{field}")))
        };
        let kind = match kind.value.as_str() {
            "local" => {
                self.known_fields(
                    table,
                    &[&common[..], &["dir"]].concat(),
                    "[store] (kind = \"local\")",
                );
                let shown =
                    optional(self, "dir").map_or_else(|| ".keyplan".to_owned(), |d| d.value);
                StoreKind::Local {
                    dir: base.join(&shown),
                    shown,
                }
            }
            "ssm" => {
                self.known_fields(
                    table,
                    &[
                        &common[..],
                        &["region", "endpoint", "kms_key_id", "writes_per_second"],
                    ]
                    .concat(),
                    "[store] (kind = \"ssm\")",
                );
                let region = optional(self, "region");
                if let Some(r) = &region
                    && r.value.trim().is_empty()
                {
                    self.errors.push(
                        Diagnostic::error(Some(r.span.clone()), "store.region is empty")
                            .with_hint("name a region such as \"us-east-1\", or remove the field to use the AWS region chain"),
                    );
                }
                let endpoint = optional(self, "endpoint");
                if let Some(e) = &endpoint
                    && !(e.value.starts_with("http://") || e.value.starts_with("https://"))
                {
                    self.error(
                        e.span.clone(),
                        "store.endpoint must be an http:// or https:// URL",
                    );
                }
                let writes_per_second = match Self::get(table, "writes_per_second") {
                    Some(v) => match v.get_ref() {
                        DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
                        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                        other => {
                            self.error(
                                v.span(),
                                format!(
                                    "store.writes_per_second must be a number, not {}",
                                    type_name(other)
                                ),
                            );
                            None
                        }
                    }
                    .filter(|n| {
                        let ok = *n > 0.0 && n.is_finite();
                        if !ok {
                            self.error(v.span(), "store.writes_per_second must be above 0");
                        }
                        ok
                    }),
                    None => None,
                };
                StoreKind::Ssm {
                    region: region.map(|r| r.value),
                    endpoint: endpoint.map(|e| e.value),
                    kms_key_id: optional(self, "kms_key_id").map(|k| k.value),
                    writes_per_second,
                }
            }
            _ => {
                self.errors.push(
                    Diagnostic::error(
                        Some(kind.span),
                        format!("unknown store kind `{}`", kind.value),
                    )
                    .with_hint("`kind = \"local\"` or `kind = \"ssm\"`"),
                );
                return None;
            }
        };
        let prefix = optional(self, "prefix");
        let prefix_span = prefix.as_ref().map(|p| p.span.clone());
        if let Some(p) = &prefix {
            self.check_prefix(p);
        }
        let max_parameters = match Self::get(table, "max_parameters") {
            Some(v) => match v.get_ref() {
                DeValue::Integer(i) => match i.as_str().replace('_', "").parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        self.error(v.span(), "store.max_parameters must be a positive integer");
                        10_000
                    }
                },
                other => {
                    self.error(
                        v.span(),
                        format!(
                            "store.max_parameters must be an integer, not {}",
                            type_name(other)
                        ),
                    );
                    10_000
                }
            },
            None => 10_000,
        };
        Some((
            StoreConfig {
                prefix: prefix.map_or_else(
                    || "/keyplan".to_owned(),
                    |p| p.value.trim_end_matches('/').to_owned(),
                ),
                max_parameters,
                kind,
            },
            prefix_span,
        ))
    }

    fn check_prefix(&mut self, prefix: &At<String>) {
        let p = &prefix.value;
        let problem = if !p.starts_with('/') {
            Some("store.prefix must start with `/`")
        } else if p.contains("//") {
            Some("store.prefix must not contain `//`")
        } else if p.chars().any(char::is_whitespace) {
            Some("store.prefix must not contain spaces")
        } else if p
            .trim_start_matches('/')
            .to_ascii_lowercase()
            .starts_with("aws")
            || p.trim_start_matches('/')
                .to_ascii_lowercase()
                .starts_with("ssm")
        {
            Some("store.prefix must not start with `aws` or `ssm` (SSM reserves them)")
        } else if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
        {
            Some("store.prefix may hold only letters, digits and / _ . -")
        } else {
            None
        };
        if let Some(message) = problem {
            self.errors.push(
                Diagnostic::error(Some(prefix.span.clone()), message)
                    .with_hint("such as `prefix = \"/keyplan\"`"),
            );
        }
    }

    fn timing(&mut self, value: &Value<'_>, context: &str) -> RawTiming {
        let Some(table) = self.table(value, context) else {
            return RawTiming::default();
        };
        self.known_fields(
            table,
            &["every", "propagation", "grace", "spread", "skew", "lag"],
            context,
        );
        let field = |w: &mut Self, name: &str| {
            Self::get(table, name).and_then(|v| w.duration(v, &format!("{context} {name}")))
        };
        RawTiming {
            every: field(self, "every"),
            propagation: field(self, "propagation"),
            grace: field(self, "grace"),
            spread: field(self, "spread"),
            skew: field(self, "skew"),
            lag: field(self, "lag"),
        }
    }

    fn readers(&mut self, value: &Value<'_>, context: &str) -> RawReaders {
        let Some(table) = self.table(value, context) else {
            return RawReaders::default();
        };
        self.known_fields(table, &["refresh", "max_restart"], context);
        let refresh = Self::get(table, "refresh").and_then(|v| {
            let text = self.string(v, &format!("{context} refresh"))?;
            if text.value == "restart" {
                return Some(At {
                    value: RawRefresh::Restart,
                    span: text.span,
                });
            }
            match duration::parse(&text.value) {
                Ok(d) if d.is_positive() => Some(At {
                    value: RawRefresh::Every(d),
                    span: text.span,
                }),
                Ok(_) => {
                    self.error(text.span, format!("{context} refresh must be above zero"));
                    None
                }
                Err(why) => {
                    self.errors.push(
                        Diagnostic::error(Some(text.span), format!("{context} refresh: {why}"))
                            .with_hint("a duration such as \"60s\", or \"restart\" for readers that read only when they start"),
                    );
                    None
                }
            }
        });
        let max_restart = Self::get(table, "max_restart")
            .and_then(|v| self.duration(v, &format!("{context} max_restart")));
        RawReaders {
            refresh,
            max_restart,
        }
    }

    fn consumers(&mut self, root: &Table<'_>) -> BTreeMap<String, RawConsumer> {
        let mut out = BTreeMap::new();
        let Some(value) = Self::get(root, "consumers") else {
            return out;
        };
        let Some(table) = self.table(value, "[consumers]") else {
            return out;
        };
        for (key, entry) in table {
            let name = key.get_ref().as_ref();
            let context = format!("[consumers.{name}]");
            if !valid_name(name) {
                self.errors.push(
                    Diagnostic::error(Some(key.span()), format!("invalid consumer name `{name}`"))
                        .with_hint(NAME_RULE),
                );
            }
            let Some(fields) = self.table(entry, &context) else {
                continue;
            };
            self.known_fields(fields, &["description", "readers"], &context);
            if let Some(d) = Self::get(fields, "description") {
                self.string(d, &format!("{context} description"));
            }
            let readers = match Self::get(fields, "readers") {
                Some(v) => self.readers(v, &format!("{context} readers")),
                None => RawReaders::default(),
            };
            out.insert(
                name.to_owned(),
                RawConsumer {
                    span: key.span(),
                    readers,
                },
            );
        }
        out
    }

    fn services(&mut self, root: &Table<'_>) -> BTreeMap<String, RawService> {
        let mut out = BTreeMap::new();
        let Some(value) = Self::get(root, "services") else {
            return out;
        };
        let Some(table) = self.table(value, "[services]") else {
            return out;
        };
        for (key, entry) in table {
            let name = key.get_ref().as_ref();
            let context = format!("[services.{name}]");
            if !valid_name(name) {
                self.errors.push(
                    Diagnostic::error(Some(key.span()), format!("invalid service name `{name}`"))
                        .with_hint(NAME_RULE),
                );
            }
            let Some(fields) = self.table(entry, &context) else {
                continue;
            };
            self.known_fields(
                fields,
                &["description", "consumers", "rotation", "readers"],
                &context,
            );
            let description = Self::get(fields, "description")
                .and_then(|d| self.string(d, &format!("{context} description")))
                .map(|d| d.value);
            let timing = match Self::get(fields, "rotation") {
                Some(v) => self.timing(v, &format!("{context} rotation")),
                None => RawTiming::default(),
            };
            let readers = match Self::get(fields, "readers") {
                Some(v) => self.readers(v, &format!("{context} readers")),
                None => RawReaders::default(),
            };
            let consumers = match Self::get(fields, "consumers") {
                Some(v) => self.consumer_refs(v, &context),
                None => {
                    self.errors.push(
                        Diagnostic::error(Some(key.span()), format!("missing field `consumers` in {context}"))
                            .with_hint("list who may call it: `consumers = [\"gateway\"]` (an empty list allows nobody)"),
                    );
                    Vec::new()
                }
            };
            out.insert(
                name.to_owned(),
                RawService {
                    span: key.span(),
                    description,
                    consumers,
                    timing,
                    readers,
                },
            );
        }
        out
    }

    fn consumer_refs(&mut self, value: &Value<'_>, context: &str) -> Vec<RawConsumerRef> {
        let DeValue::Array(list) = value.get_ref() else {
            self.error(
                value.span(),
                format!(
                    "{context} consumers must be an array, not {}",
                    type_name(value.get_ref())
                ),
            );
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for item in list {
            let reference = match item.get_ref() {
                DeValue::String(s) => Some(RawConsumerRef {
                    name: At {
                        value: s.to_string(),
                        span: item.span(),
                    },
                    timing: RawTiming::default(),
                }),
                DeValue::Table(t) => {
                    let edge_context = format!("{context} consumer");
                    self.known_fields(t, &["name", "rotation"], &edge_context);
                    let name = match Self::get(t, "name") {
                        Some(n) => self.string(n, "consumer name"),
                        None => {
                            self.error(
                                item.span(),
                                format!("missing field `name` in {edge_context}"),
                            );
                            None
                        }
                    };
                    let timing = match Self::get(t, "rotation") {
                        Some(v) => self.timing(v, &format!("{edge_context} rotation")),
                        None => RawTiming::default(),
                    };
                    name.map(|name| RawConsumerRef { name, timing })
                }
                other => {
                    self.error(
                        item.span(),
                        format!("a consumer is a name or {{ name = ..., rotation = {{ ... }} }}, not {}", type_name(other)),
                    );
                    None
                }
            };
            if let Some(r) = reference {
                if !seen.insert(r.name.value.clone()) {
                    self.error(
                        r.name.span.clone(),
                        format!("consumer `{}` is listed twice in {context}", r.name.value),
                    );
                    continue;
                }
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(valid_name("product-catalog"));
        assert!(valid_name("a_1"));
        assert!(!valid_name("Product"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(!valid_name("a/b"));
    }
}
