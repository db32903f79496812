//! `keyplan rotate TARGET`: stage a new key now on the targeted edges.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};

use crate::config::{Config, Edge};
use crate::plan::Force;

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// An edge (`service<-consumer`), a service (all its consumers' keys), or
    /// a consumer (all the keys it sends).
    target: String,
    /// Promote after propagation and retire after the smallest grace the
    /// timing rules allow: for a key that may have leaked. No call fails.
    #[arg(long, conflicts_with = "immediately")]
    expedite: bool,
    /// Refuse the old key at once and hand out the new one in this apply:
    /// calls with the old key fail until both sides refresh.
    #[arg(long)]
    immediately: bool,
    #[command(flatten)]
    apply: super::apply::Options,
}

/// The declared edges `target` names.
///
/// # Errors
/// A target that names no declared edge, with the names that exist.
pub fn targets(config: &Config, target: &str) -> Result<Vec<Edge>> {
    let edges: Vec<Edge> = if let Some((service, consumer)) = target.split_once("<-") {
        let edge = Edge::new(service, consumer);
        if config.edges.contains_key(&edge) {
            vec![edge]
        } else {
            Vec::new()
        }
    } else {
        config
            .edges
            .keys()
            .filter(|e| e.service == target || e.consumer == target)
            .cloned()
            .collect()
    };
    if edges.is_empty() {
        let names: Vec<String> = config.edges.keys().map(Edge::to_string).collect();
        bail!(
            "{target:?} names no declared edge; give an edge such as `{}`, a service or a consumer",
            names.first().map_or("service<-consumer", String::as_str)
        );
    }
    Ok(edges)
}

pub async fn run(path: &Path, args: RotateArgs) -> Result<u8> {
    let config = super::load(path)?;
    let force = if args.immediately {
        Force::Immediately
    } else if args.expedite {
        Force::Expedite
    } else {
        Force::Normal
    };
    let forced: BTreeMap<Edge, Force> = targets(&config, &args.target)?
        .into_iter()
        .map(|e| (e, force))
        .collect();
    super::apply::run_with(&config, &args.apply, &forced, None).await
}
