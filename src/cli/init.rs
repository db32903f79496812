//! `keyplan init`: a commented starter keys.toml.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The environment's name (part of every store path).
    #[arg(long, default_value = "dev")]
    environment: String,
}

/// The starter file, with a fresh environment id.
pub fn starter(environment: &str, id: &uuid::Uuid) -> String {
    format!(
        r#"# keys.toml: which services exist, who may call each, how keys rotate.
# Check it with `keyplan validate`; see what would change with `keyplan plan`.

[environment]
name = "{environment}"
# The namespace of authority key ids and names. Keep it: a new id makes
# keyplan lose track of the keys it minted.
id = "{id}"

[authority]
kind = "local"          # keyplan mints keys itself. In production:
# kind = "fusionauth"
# url = "https://auth.example.com"
# api_key_env = "FUSIONAUTH_API_KEY"   # the name of an environment variable, never the key
# permissions = {{ "/api/status" = ["GET"] }}

[store]
kind = "local"          # a directory mirroring SSM's layout. In production:
dir = ".keyplan"
# kind = "ssm"
# region = "us-east-1"
# kms_key_id = "alias/keyplan-{environment}"
prefix = "/keyplan"

[rotation]              # defaults; override per service or per edge
every = "90d"
propagation = "10m"     # wait after staging before consumers get the new key
grace = "1d"            # how long the previous key stays accepted

[readers]
refresh = "60s"         # how often services and consumers re-read the store

[services.orders]
description = "Orders API"
consumers = ["gateway"]

[consumers.gateway]
description = "The API gateway"
"#
    )
}

pub fn run(path: &Path, args: Args) -> Result<u8> {
    if !crate::config::walk_name_is_valid(&args.environment) {
        bail!(
            "invalid environment name {:?}: a lowercase letter, then lowercase letters, digits, '-' or '_'",
            args.environment
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "{} exists already; keyplan init never overwrites it",
                path.display()
            )
        })?;
    file.write_all(starter(&args.environment, &uuid::Uuid::new_v4()).as_bytes())?;
    eprintln!("Wrote {}. Next: `keyplan plan`.", path.display());
    Ok(0)
}
