//! `keyplan validate`

use std::path::Path;

use anyhow::Result;

pub fn run(path: &Path) -> Result<u8> {
    let config = super::load(path)?;
    println!(
        "{} is valid: environment {}, {} service(s), {} edge(s).",
        path.display(),
        config.environment,
        config.services.len(),
        config.edges.len()
    );
    Ok(0)
}
