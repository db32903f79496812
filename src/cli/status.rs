//! `keyplan status`

use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use jiff::Timestamp;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit 2 when an edge is overdue or stuck (for monitoring).
    #[arg(long)]
    check: bool,
    /// With --check: how long a step may stay due before it counts as overdue
    /// (cron's interval plus a margin).
    #[arg(long, default_value = "1h", value_parser = parse_tolerance)]
    tolerance: jiff::SignedDuration,
    /// Status as of this instant (RFC 3339 or a date).
    #[arg(long, value_parser = super::parse_at)]
    at: Option<Timestamp>,
}

pub async fn run(path: &Path, args: Args) -> Result<u8> {
    let config = super::load(path)?;
    let (observed, plan) = super::observe_and_plan(&config, args.at).await?;
    let rows = crate::render::status_rows(&config, &observed, &plan, args.tolerance);
    write!(anstream::stdout(), "{}", crate::render::status_table(&rows))?;
    let alarms = rows.iter().filter(|r| r.alarm).count();
    if args.check && alarms > 0 {
        eprintln!("{alarms} edge(s) overdue or stuck");
        return Ok(2);
    }
    Ok(0)
}

fn parse_tolerance(text: &str) -> Result<jiff::SignedDuration, String> {
    crate::duration::parse(text)
}
