//! Configuration from the environment: `KEYPLAN_STORE`, `KEYPLAN_PREFIX`,
//! `KEYPLAN_ENV`, and `KEYPLAN_SERVICE` or `KEYPLAN_CONSUMER`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::record::Layout;
use crate::source::Source;

/// The prefix used when `KEYPLAN_PREFIX` is not set.
pub const DEFAULT_PREFIX: &str = "/keyplan";

/// Which store to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// AWS SSM Parameter Store, with the default AWS configuration (feature `ssm`).
    Ssm,
    /// The local store in this directory (feature `local`).
    Local(PathBuf),
}

impl FromStr for StoreKind {
    type Err = ConfigError;

    /// `ssm` or `local:/path/to/dir`.
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text {
            "ssm" => Ok(StoreKind::Ssm),
            _ => match text.strip_prefix("local:") {
                Some(dir) if !dir.is_empty() => Ok(StoreKind::Local(PathBuf::from(dir))),
                _ => Err(ConfigError::Invalid {
                    variable: "KEYPLAN_STORE",
                    reason: format!("`{text}` is neither `ssm` nor `local:/path`"),
                }),
            },
        }
    }
}

/// A configuration variable that is missing or wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{variable}: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
    #[error("the {kind} store needs keyplan-runtime's `{feature}` feature")]
    NotCompiledIn {
        kind: &'static str,
        feature: &'static str,
    },
    #[error("{0}")]
    Setting(String),
}

/// What `from_env()` read: the store, the layout, and the reader's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvConfig {
    pub store: StoreKind,
    pub prefix: String,
    pub environment: String,
    /// The service's name (`KEYPLAN_SERVICE`) or the consumer's (`KEYPLAN_CONSUMER`).
    pub name: String,
}

impl EnvConfig {
    /// Reads the variables through `lookup` (`std::env::var(..).ok()` in
    /// `from_env()`); `name_variable` is `KEYPLAN_SERVICE` or `KEYPLAN_CONSUMER`.
    ///
    /// # Errors
    /// A missing or invalid variable, named in the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use keyplan_runtime::config::{EnvConfig, StoreKind};
    ///
    /// let vars = [("KEYPLAN_STORE", "local:/srv/.keyplan"), ("KEYPLAN_ENV", "dev"),
    ///             ("KEYPLAN_SERVICE", "product-catalog")];
    /// let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    /// let config = EnvConfig::from_lookup("KEYPLAN_SERVICE", lookup).unwrap();
    /// assert_eq!(config.store, StoreKind::Local("/srv/.keyplan".into()));
    /// assert_eq!(config.prefix, "/keyplan");
    /// assert_eq!(config.layout().service_accepts_path(&config.name),
    ///            "/keyplan/dev/services/product-catalog/accepts");
    /// ```
    pub fn from_lookup(
        name_variable: &'static str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let required = |var: &'static str| {
            lookup(var)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(var))
        };
        let store = required("KEYPLAN_STORE")?.parse()?;
        let prefix = lookup("KEYPLAN_PREFIX")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        check_prefix(&prefix).map_err(|reason| ConfigError::Invalid {
            variable: "KEYPLAN_PREFIX",
            reason,
        })?;
        let environment = required("KEYPLAN_ENV")?;
        check_name(&environment).map_err(|reason| ConfigError::Invalid {
            variable: "KEYPLAN_ENV",
            reason,
        })?;
        let name = required(name_variable)?;
        check_name(&name).map_err(|reason| ConfigError::Invalid {
            variable: name_variable,
            reason,
        })?;
        Ok(Self {
            store,
            prefix,
            environment,
            name,
        })
    }

    /// The layout `{prefix}/{environment}`.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.prefix, &self.environment)
    }
}

/// keyplan's names: `[a-z][a-z0-9_-]*`, at most 63 characters.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name: [a-z][a-z0-9_-]*, at most 63 characters"
        ))
    }
}

pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || prefix.contains("//") || prefix.contains(char::is_whitespace) {
        Err(format!(
            "`{prefix}` must start with `/` and hold no `//` or spaces"
        ))
    } else {
        Ok(())
    }
}

/// Opens the store `kind` names.
///
/// # Errors
/// [`ConfigError::NotCompiledIn`] when its feature is off.
pub async fn open_store(kind: &StoreKind) -> Result<Arc<dyn Source>, ConfigError> {
    match kind {
        #[cfg(feature = "ssm")]
        StoreKind::Ssm => {
            let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            Ok(Arc::new(crate::source::SsmStore::new(
                aws_sdk_ssm::Client::new(&config),
            )))
        }
        #[cfg(not(feature = "ssm"))]
        StoreKind::Ssm => Err(ConfigError::NotCompiledIn {
            kind: "ssm",
            feature: "ssm",
        }),
        #[cfg(feature = "local")]
        StoreKind::Local(dir) => Ok(Arc::new(crate::source::LocalStore::new(dir.clone()))),
        #[cfg(not(feature = "local"))]
        StoreKind::Local(_) => Err(ConfigError::NotCompiledIn {
            kind: "local",
            feature: "local",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn reads_every_variable() {
        let c = EnvConfig::from_lookup(
            "KEYPLAN_CONSUMER",
            lookup(&[
                ("KEYPLAN_STORE", "ssm"),
                ("KEYPLAN_PREFIX", "/platform/keys"),
                ("KEYPLAN_ENV", "prod"),
                ("KEYPLAN_CONSUMER", "gateway"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store, StoreKind::Ssm);
        assert_eq!(
            c.layout().consumer_keys_path(&c.name),
            "/platform/keys/prod/consumers/gateway/keys"
        );
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let base = [("KEYPLAN_STORE", "ssm"), ("KEYPLAN_ENV", "prod")];
        assert_eq!(
            EnvConfig::from_lookup("KEYPLAN_SERVICE", lookup(&base)),
            Err(ConfigError::Missing("KEYPLAN_SERVICE"))
        );
        let bad = |var: &'static str, value: &str| {
            let mut vars = base.to_vec();
            vars.push(("KEYPLAN_SERVICE", "catalog"));
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            match EnvConfig::from_lookup("KEYPLAN_SERVICE", lookup(&vars)) {
                Err(ConfigError::Invalid { variable, .. }) => variable,
                other => panic!("{var}={value}: {other:?}"),
            }
        };
        assert_eq!(bad("KEYPLAN_STORE", "s3"), "KEYPLAN_STORE");
        assert_eq!(bad("KEYPLAN_STORE", "local:"), "KEYPLAN_STORE");
        assert_eq!(bad("KEYPLAN_PREFIX", "keyplan"), "KEYPLAN_PREFIX");
        assert_eq!(bad("KEYPLAN_ENV", "Prod"), "KEYPLAN_ENV");
        assert_eq!(bad("KEYPLAN_SERVICE", "../etc"), "KEYPLAN_SERVICE");
    }
}
