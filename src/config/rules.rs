//! The second pass: rules relating fields to each other (consumers exist,
//! the timing rules of the rotation protocol, FusionAuth limits), and the
//! resolution of defaults into one [`Timing`] per edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jiff::SignedDuration;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::walk::{At, Raw, RawReaders, RawRefresh, RawTiming, Span};
use super::{AuthorityConfig, Config, Edge, Refresh, ServiceConfig, StoreKind, Timing};
use crate::duration::format as fmt;

/// Missed refreshes a reader may have and still never fail a call.
pub const MISSED_REFRESHES: i64 = 2;
/// The jitter readers add to their refresh interval, in percent.
pub const JITTER_PERCENT: i64 = 10;

/// Built-in defaults, used where keys.toml says nothing.
pub const DEFAULT_EVERY: SignedDuration = SignedDuration::from_hours(90 * 24);
pub const DEFAULT_PROPAGATION: SignedDuration = SignedDuration::from_mins(10);
pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(24);
pub const DEFAULT_SKEW: SignedDuration = SignedDuration::from_mins(1);
pub const DEFAULT_LAG: SignedDuration = SignedDuration::from_secs(30);
pub const DEFAULT_REFRESH: SignedDuration = SignedDuration::from_secs(60);

/// The least wait that covers readers refreshing every `refresh`:
/// `(k + 1) × R × (1 + j) + skew + lag`, or for restart readers
/// `max_restart + skew + lag`.
pub fn minimum_wait(refresh: Refresh, skew: SignedDuration, lag: SignedDuration) -> SignedDuration {
    let readers = match refresh {
        Refresh::Every(r) => {
            let seconds = r.as_secs() * (MISSED_REFRESHES + 1) * (100 + JITTER_PERCENT);
            SignedDuration::from_secs((seconds + 99) / 100)
        }
        Refresh::Restart { max_restart } => max_restart,
    };
    readers + skew + lag
}

/// The longest name keyplan gives an authority key (FusionAuth allows 191).
pub fn longest_key_name(namespace: &uuid::Uuid, edge: &Edge) -> usize {
    crate::ids::key_name(namespace, edge, u64::MAX).len()
}

struct Checker<'a> {
    raw: &'a Raw,
    findings: Vec<Diagnostic>,
    reported: BTreeSet<(String, Option<usize>)>,
}

/// A setting resolved through its levels, with where it was written.
struct Resolved<T> {
    value: T,
    span: Option<Span>,
}

fn pick<T: Copy>(levels: [Option<&At<T>>; 3], default: T) -> Resolved<T> {
    levels.into_iter().flatten().next().map_or(
        Resolved {
            value: default,
            span: None,
        },
        |at| Resolved {
            value: at.value,
            span: Some(at.span.clone()),
        },
    )
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        let key = (d.message.clone(), d.span.as_ref().map(|s| s.start));
        if self.reported.insert(key) {
            self.findings.push(d);
        }
    }

    fn refresh(&mut self, own: &RawReaders, fallback_span: &Span) -> (Refresh, Option<Span>) {
        let global = &self.raw.readers;
        let refresh = own.refresh.as_ref().or(global.refresh.as_ref());
        let max_restart = own.max_restart.as_ref().or(global.max_restart.as_ref());
        match refresh {
            None => (Refresh::Every(DEFAULT_REFRESH), None),
            Some(At {
                value: RawRefresh::Every(d),
                span,
            }) => (Refresh::Every(*d), Some(span.clone())),
            Some(At {
                value: RawRefresh::Restart,
                span,
            }) => match max_restart {
                Some(m) => (
                    Refresh::Restart {
                        max_restart: m.value,
                    },
                    Some(span.clone()),
                ),
                None => {
                    self.push(
                        Diagnostic::error(Some(span.clone()), "a `restart` reader needs `max_restart`")
                            .with_hint("declare how long every task takes to restart after a change, such as `max_restart = \"15m\"`; the waits of a rotation must cover it"),
                    );
                    let _ = fallback_span;
                    (
                        Refresh::Restart {
                            max_restart: SignedDuration::ZERO,
                        },
                        Some(span.clone()),
                    )
                }
            },
        }
    }

    fn edge_timing(
        &mut self,
        edge: &Edge,
        service_timing: &RawTiming,
        edge_timing: &RawTiming,
        anchor: &Span,
    ) -> Timing {
        let d = &self.raw.defaults;
        let levels = |f: fn(&RawTiming) -> &Option<At<SignedDuration>>| {
            [
                f(edge_timing).as_ref(),
                f(service_timing).as_ref(),
                f(d).as_ref(),
            ]
        };
        let every = pick(levels(|t| &t.every), DEFAULT_EVERY);
        let propagation = pick(levels(|t| &t.propagation), DEFAULT_PROPAGATION);
        let grace = pick(levels(|t| &t.grace), DEFAULT_GRACE);
        let spread = pick(levels(|t| &t.spread), SignedDuration::ZERO);
        let skew = pick(levels(|t| &t.skew), DEFAULT_SKEW);
        let lag = pick(levels(|t| &t.lag), DEFAULT_LAG);

        let service = &self.raw.services[&edge.service];
        let (service_refresh, service_refresh_span) =
            self.refresh(&service.readers.clone(), &service.span.clone());
        let consumer_readers = self
            .raw
            .consumers
            .get(&edge.consumer)
            .map(|c| c.readers.clone())
            .or_else(|| {
                self.raw
                    .services
                    .get(&edge.consumer)
                    .map(|s| s.readers.clone())
            })
            .unwrap_or_default();
        let (consumer_refresh, consumer_refresh_span) = self.refresh(&consumer_readers, anchor);

        let at = |r: &Resolved<SignedDuration>, others: &[&Option<Span>]| {
            r.span
                .clone()
                .or_else(|| others.iter().find_map(|s| (*s).clone()))
                .unwrap_or_else(|| anchor.clone())
        };
        if !every.value.is_positive() {
            self.push(Diagnostic::error(
                Some(at(&every, &[])),
                format!("rotation every must be above zero ({edge})"),
            ));
        }
        let need = minimum_wait(service_refresh, skew.value, lag.value);
        if propagation.value < need {
            self.push(
                Diagnostic::error(
                    Some(at(&propagation, &[&service_refresh_span])),
                    format!(
                        "propagation {} is too short for {edge}: the service's readers need at least {}",
                        fmt(propagation.value),
                        fmt(need)
                    ),
                )
                .with_hint(format!(
                    "propagation >= (k + 1) x refresh x (1 + jitter) + skew + lag = {}; raise propagation or refresh the service's readers more often",
                    fmt(need)
                )),
            );
        }
        let need = minimum_wait(consumer_refresh, skew.value, lag.value);
        if grace.value < need {
            self.push(
                Diagnostic::error(
                    Some(at(&grace, &[&consumer_refresh_span])),
                    format!(
                        "grace {} is too short for {edge}: the consumer's readers need at least {}",
                        fmt(grace.value),
                        fmt(need)
                    ),
                )
                .with_hint(format!(
                    "grace >= (k + 1) x refresh x (1 + jitter) + skew + lag = {}; raise grace or refresh the consumer's readers more often",
                    fmt(need)
                )),
            );
        }
        if propagation.value + grace.value >= every.value {
            self.push(
                Diagnostic::error(
                    Some(at(&every, &[&propagation.span, &grace.span])),
                    format!(
                        "rotation every {} must be longer than propagation + grace ({} + {}) for {edge}",
                        fmt(every.value),
                        fmt(propagation.value),
                        fmt(grace.value)
                    ),
                )
                .with_hint("a rotation must finish before the next one is due"),
            );
        }
        if spread.value.is_negative() || (spread.value.is_positive() && spread.value >= every.value)
        {
            self.push(Diagnostic::error(
                Some(at(&spread, &[])),
                format!(
                    "spread {} must be shorter than every {} ({edge})",
                    fmt(spread.value),
                    fmt(every.value)
                ),
            ));
        }
        Timing {
            every: every.value,
            propagation: propagation.value,
            grace: grace.value,
            spread: spread.value,
            skew: skew.value,
            lag: lag.value,
            service_refresh,
            consumer_refresh,
        }
    }
}

/// Applies the cross-field rules and resolves every edge's timing.
pub fn finish(raw: Raw, path: &Path, text: &str) -> (Config, Vec<Diagnostic>) {
    let mut c = Checker {
        raw: &raw,
        findings: Vec::new(),
        reported: BTreeSet::new(),
    };
    let namespace = raw
        .environment_id
        .unwrap_or_else(|| super::derived_namespace(&raw.store.prefix, &raw.environment.value));
    let known: BTreeSet<String> = raw
        .consumers
        .keys()
        .chain(raw.services.keys())
        .cloned()
        .collect();

    let mut edges = BTreeMap::new();
    let mut services = BTreeMap::new();
    for (name, service) in &raw.services {
        let mut consumers = BTreeSet::new();
        for reference in &service.consumers {
            let consumer = &reference.name.value;
            if !known.contains(consumer) {
                let mut d = Diagnostic::error(
                    Some(reference.name.span.clone()),
                    format!("unknown consumer `{consumer}` in [services.{name}]"),
                );
                d = match did_you_mean(consumer, known.iter().map(String::as_str)) {
                    Some(s) => d.with_hint(format!(
                        "did you mean `{s}`? (a consumer is any name in [consumers] or [services])"
                    )),
                    None => d.with_hint(format!("declare it: add `[consumers.{consumer}]`")),
                };
                c.push(d);
                continue;
            }
            if consumer == name {
                c.push(Diagnostic::error(
                    Some(reference.name.span.clone()),
                    format!("service `{name}` lists itself as a consumer"),
                ));
                continue;
            }
            let edge = super::Edge::new(name, consumer);
            let timing = c.edge_timing(
                &edge,
                &service.timing,
                &reference.timing,
                &reference.name.span,
            );
            if let AuthorityConfig::FusionAuth(_) = raw.authority {
                let length = longest_key_name(&namespace, &edge);
                if length > 191 {
                    c.push(Diagnostic::error(
                        Some(reference.name.span.clone()),
                        format!("the FusionAuth key name for {edge} would be {length} characters; FusionAuth allows 191"),
                    ).with_hint("shorten the service or consumer name"));
                }
            }
            edges.insert(edge, timing);
            consumers.insert(consumer.clone());
        }
        services.insert(
            name.clone(),
            ServiceConfig {
                description: service.description.clone(),
                consumers,
            },
        );
    }
    // Readers of the defaults are checked even when no edge uses them.
    for consumer in raw.consumers.values() {
        c.refresh(&consumer.readers.clone(), &consumer.span.clone());
    }

    if let AuthorityConfig::FusionAuth(fa) = &raw.authority
        && fa.tenant_id.is_some()
    {
        let endpoints = crate::fusionauth_endpoints::endpoints();
        for endpoint in fa.permissions.keys() {
            if endpoints.get(endpoint).is_some_and(|e| !e.tenant) {
                c.push(
                    Diagnostic::warning(
                        raw.permissions_span.clone(),
                        format!("{endpoint} is a global endpoint: tenant-scoped keys cannot call it"),
                    )
                    .with_hint("with tenant_id, use a tenant endpoint such as `\"/api/system/version\" = [\"GET\"]`"),
                );
            }
        }
    }
    match &raw.store.kind {
        StoreKind::Ssm { kms_key_id: None, .. } => c.push(
            Diagnostic::warning(Some(raw.store_span.clone()), "no store.kms_key_id: SSM will encrypt with aws/ssm, which every principal of the account can decrypt")
                .with_hint("set `kms_key_id = \"alias/keyplan-<env>\"` to a key only keyplan, the services and the consumers may use"),
        ),
        StoreKind::Local { .. } => {
            let first = raw.store.prefix.trim_start_matches('/').split('/').next().unwrap_or("");
            if first == "authority" || first == "index.json" {
                c.push(Diagnostic::error(
                    raw.prefix_span.clone().or(Some(raw.store_span.clone())),
                    "store.prefix collides with the local store's own files (authority/, index.json)",
                ));
            }
        }
        StoreKind::Ssm { .. } => {}
    }

    let findings = c.findings;
    let config = Config {
        path: path.to_owned(),
        digest: super::file_digest(text),
        environment: raw.environment.value.clone(),
        namespace,
        authority: raw.authority.clone(),
        store: raw.store.clone(),
        services,
        consumers: known,
        edges,
    };
    (config, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_wait_follows_the_formula() {
        // 3 x 60s x 1.1 + 60s + 30s = 198s + 90s = 288s
        let need = minimum_wait(
            Refresh::Every(SignedDuration::from_secs(60)),
            DEFAULT_SKEW,
            DEFAULT_LAG,
        );
        assert_eq!(need, SignedDuration::from_secs(288));
        let need = minimum_wait(
            Refresh::Restart {
                max_restart: SignedDuration::from_mins(15),
            },
            DEFAULT_SKEW,
            DEFAULT_LAG,
        );
        assert_eq!(need, SignedDuration::from_secs(15 * 60 + 90));
    }
}
