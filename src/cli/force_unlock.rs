//! `keyplan force-unlock ID`

use std::path::Path;

use anyhow::{Context as _, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lock id, as a waiting apply names it.
    id: String,
}

pub async fn run(path: &Path, args: Args) -> Result<u8> {
    let config = super::load(path)?;
    let backend = crate::backend::Backend::open(&config).await?;
    let released = backend.lock.force_unlock(&args.id).await.context(
        "force-unlock takes the id of the lock that is held now (`keyplan apply` names it)",
    )?;
    println!(
        "Released lock {} (held by {} for {} since {}).",
        released.id, released.holder, released.operation, released.started
    );
    Ok(0)
}
