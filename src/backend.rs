//! Opens the providers keys.toml names.

use anyhow::{Result, bail};

use crate::config::{AuthorityConfig, Config, StoreKind};
use crate::provider::local::{LocalAuthority, LocalDir, LocalLock, LocalStore};
use crate::provider::{Authority, Lock, Store};

/// The authority, the store and the apply lock of one environment.
pub struct Backend {
    pub store: Box<dyn Store>,
    pub authority: Box<dyn Authority>,
    pub lock: Box<dyn Lock>,
}

impl Backend {
    /// Opens what `config` names.
    ///
    /// # Errors
    /// A provider kind this build cannot open yet, with what to use instead.
    pub async fn open(config: &Config) -> Result<Self> {
        let layout = config.layout();
        let (store, lock, local_dir): (Box<dyn Store>, Box<dyn Lock>, Option<LocalDir>) =
            match &config.store.kind {
                StoreKind::Local { dir, shown } => {
                    let dir = LocalDir::new(dir.clone(), shown.clone());
                    (
                        Box::new(LocalStore::new(dir.clone())),
                        Box::new(LocalLock::new(&dir, &layout.lock())),
                        Some(dir),
                    )
                }
                StoreKind::Ssm { .. } => bail!(
                    "store kind \"ssm\" is not available in this build of keyplan yet; use kind = \"local\""
                ),
            };
        let authority: Box<dyn Authority> = match (&config.authority, local_dir) {
            (AuthorityConfig::Local, Some(dir)) => Box::new(LocalAuthority::new(dir)),
            (AuthorityConfig::Local, None) => bail!(
                "the local authority keeps its records in the local store's directory; use it with [store] kind = \"local\""
            ),
            (AuthorityConfig::FusionAuth(_), _) => bail!(
                "authority kind \"fusionauth\" is not available in this build of keyplan yet; use kind = \"local\""
            ),
        };
        Ok(Self {
            store,
            authority,
            lock,
        })
    }
}
