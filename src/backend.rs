//! Opens the providers keys.toml names.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::config::{AuthorityConfig, Config, StoreKind};
use crate::provider::local::{LocalAuthority, LocalDir, LocalLock, LocalStore};
use crate::provider::ssm::{self, SsmLockSettings, SsmSettings, SsmStore};
use crate::provider::{Authority, Lock, Store};

/// The authority, the store and the apply lock of one environment.
pub struct Backend {
    pub store: Box<dyn Store>,
    pub authority: Box<dyn Authority>,
    pub lock: Box<dyn Lock>,
}

impl Backend {
    /// Opens what `config` names. Nothing is contacted yet: the first call
    /// reports an unreachable or misconfigured provider.
    ///
    /// # Errors
    /// A provider kind this build cannot open yet, with what to use instead.
    pub async fn open(config: &Config) -> Result<Self> {
        let layout = config.layout();
        let (store, lock): (Box<dyn Store>, Box<dyn Lock>) = match &config.store.kind {
            StoreKind::Local { dir, shown } => {
                let dir = LocalDir::new(dir.clone(), shown.clone());
                (
                    Box::new(LocalStore::new(dir.clone())),
                    Box::new(LocalLock::new(&dir, &layout.lock())),
                )
            }
            StoreKind::Ssm {
                region,
                endpoint,
                kms_key_id,
                writes_per_second,
            } => {
                let client = ssm::client_from_env(region.as_deref(), endpoint.as_deref()).await;
                let store = SsmStore::new(
                    client,
                    SsmSettings {
                        kms_key_id: kms_key_id.clone(),
                        writes_per_second: Some(
                            writes_per_second.unwrap_or(ssm::DEFAULT_WRITES_PER_SECOND),
                        ),
                        tags: BTreeMap::from([
                            ("keyplan:environment".to_owned(), config.environment.clone()),
                            ("keyplan:managed-by".to_owned(), "keyplan".to_owned()),
                        ]),
                    },
                );
                let lock = store.lock(&layout.lock(), SsmLockSettings::default());
                (Box::new(store), Box::new(lock))
            }
        };
        let authority: Box<dyn Authority> = match &config.authority {
            AuthorityConfig::Local { dir, shown } => Box::new(LocalAuthority::new(LocalDir::new(
                dir.clone(),
                shown.clone(),
            ))),
            AuthorityConfig::FusionAuth(_) => bail!(
                "authority kind \"fusionauth\" is not available in this build of keyplan yet; use kind = \"local\""
            ),
        };
        Ok(Self {
            store,
            authority,
            lock,
        })
    }

    /// "the local store at … and the local authority at …", for the context
    /// of errors while observing.
    pub fn describe(&self) -> String {
        format!(
            "the {} and the {}",
            self.store.describe(),
            self.authority.describe()
        )
    }
}
