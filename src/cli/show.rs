//! `keyplan show FILE`: a saved plan, in any format.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use super::plan::Format;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved by `keyplan plan --out FILE`.
    file: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(args: Args) -> Result<u8> {
    let file = super::read_plan(&args.file)?;
    super::plan::print(&file, args.format).context("printing the plan")?;
    Ok(0)
}
