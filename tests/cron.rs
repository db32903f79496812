//! Two years of hourly cron, in process: `apply_once` every simulated hour
//! (never skipping an hour) on 20 edges with mixed schedules, against the
//! in-memory provider with a fixed clock per run.
//!
//! Every stage must happen at the first hourly tick at or after the instant
//! an independent function of the schedule rule gives (DESIGN.md, "Schedule"):
//! generation 1 is due when it is created, generation n+1 at `due(n) +
//! every`, plus the edge's spread offset once, after the first key. So for
//! g >= 2, `due(g) = created + offset + (g - 1) * every`: anchored on the
//! schedule, never on the tick at which cron happened to run (no drift).
//! Promote and retire must follow at the first tick after propagation and
//! grace, and nothing else (repair, revoke, replace) may ever happen.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use keyplan::apply::{Clock, Failpoints, apply_once};
use keyplan::config::{self, Config, Edge};
use keyplan::plan::{ActionKind, spread_offset};
use keyplan::provider::memory::Memory;

/// Two years of hourly runs.
const HOURS: i64 = 2 * 365 * 24;
/// The hour at which four more edges are declared (not on a day boundary,
/// so their schedule is anchored on a different instant than the others).
const ADDED_AT_HOUR: i64 = 200 * 24 + 5;

/// 16 edges at first, 20 after `ADDED_AT_HOUR`. Every schedule keeps
/// `every >= propagation + grace + 3h`, so that each rotation finishes (one
/// step per hourly run) before the next one is due.
fn keys_toml(all: bool) -> String {
    let added = |edge: &str| if all { edge.to_owned() } else { String::new() };
    format!(
        r#"
[environment]
name = "cron"

[authority]
kind = "local"

[store]
kind = "local"
prefix = "/keyplan"

[rotation]
every = "30d"
propagation = "10m"
grace = "1d"

[readers]
refresh = "60s"

[services.svc-a]
rotation = {{ every = "7d" }}
consumers = [{{ name = "gw", rotation = {{ every = "5d", spread = "12h" }} }}, "rep", "svc-b" {batch_a}]

[services.svc-b]
rotation = {{ every = "3d", grace = "6h" }}
consumers = ["gw", "rep", "batch", "svc-c"]

[services.svc-c]
rotation = {{ every = "90d", spread = "10d" }}
consumers = ["gw", "batch", "svc-d" {rep_c}]

[services.svc-d]
rotation = {{ every = "14d", spread = "2d" }}
consumers = ["rep", "batch", "svc-e" {gw_d}]

[services.svc-e]
rotation = {{ every = "1d", propagation = "15m", grace = "2h", spread = "6h" }}
consumers = ["gw", {{ name = "rep", rotation = {{ every = "2d", spread = "1d" }} }}, "batch" {svc_a_e}]

[consumers.gw]
[consumers.rep]
readers = {{ refresh = "5m" }}
[consumers.batch]
"#,
        batch_a = added(r#", { name = "batch", rotation = { every = "10d", spread = "3d" } }"#),
        rep_c = added(r#", "rep""#),
        gw_d = added(r#", "gw""#),
        svc_a_e = added(r#", "svc-a""#),
    )
}

fn load(text: &str) -> Config {
    match config::parse(Path::new("/cron/keys.toml"), text) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{e}\n{}", e.rendered),
    }
}

/// The first hourly tick at or after `at`.
fn tick_at_or_after(start: Timestamp, at: Timestamp) -> Timestamp {
    let seconds = at.duration_since(start).as_secs();
    let hours = (seconds + 3599).div_euclid(3600);
    start + SignedDuration::from_hours(hours)
}

/// One step of a rotation as the plans reported it: generation, the tick it
/// ran at, and the instant the plan said it was due since.
type Steps = BTreeMap<Edge, Vec<(u64, Timestamp, Timestamp)>>;

#[test]
fn two_years_of_hourly_cron_stage_every_generation_on_schedule() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let before = load(&keys_toml(false));
    let after = load(&keys_toml(true));
    assert_eq!(before.edges.len(), 16);
    assert_eq!(after.edges.len(), 20);

    // Deliberately not on the hour: ticks and dues never line up by accident.
    let start: Timestamp = "2027-01-01T00:17:23Z".parse().unwrap();
    let end = start + SignedDuration::from_hours(HOURS - 1);
    let mem = Memory::new(start);
    let mut created: BTreeMap<Edge, Timestamp> = BTreeMap::new();
    let mut stages = Steps::new();
    let mut promotes = Steps::new();
    let mut retires = Steps::new();
    let started = Instant::now();
    for hour in 0..HOURS {
        let t = start + SignedDuration::from_hours(hour);
        let config = if hour < ADDED_AT_HOUR {
            &before
        } else {
            &after
        };
        mem.set_time(t);
        let (plan, _) = runtime
            .block_on(apply_once(
                config,
                &mem.store(),
                &mem.authority(),
                &mem.lock(),
                Clock::fixed(t),
                Failpoints::none(),
                &BTreeMap::new(),
            ))
            .unwrap_or_else(|e| panic!("apply at {t}: {e:#}"));
        assert!(plan.problems.is_empty(), "{t}: {:?}", plan.problems);
        for action in &plan.actions {
            let record = (action.generation, t, action.due);
            let edge = action.edge.clone();
            match action.kind {
                ActionKind::Create => {
                    assert_eq!(action.generation, 1);
                    assert!(
                        created.insert(edge, t).is_none(),
                        "{} created twice",
                        action.edge
                    );
                }
                ActionKind::Stage => stages.entry(edge).or_default().push(record),
                ActionKind::Promote => promotes.entry(edge).or_default().push(record),
                ActionKind::Retire => retires.entry(edge).or_default().push(record),
                other => panic!(
                    "{t}: unexpected {other} on {}: {}",
                    action.edge, action.reason
                ),
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!("two years of hourly cron: {HOURS} applies in {elapsed:.1?}");

    let added_at = start + SignedDuration::from_hours(ADDED_AT_HOUR);
    let mut offsets = Vec::new();
    let mut total = 0;
    for (edge, timing) in &after.edges {
        let c = created[edge];
        let expected_creation = if before.edges.contains_key(edge) {
            start
        } else {
            added_at
        };
        assert_eq!(c, expected_creation, "{edge} created at the first run");
        // The spread offset is a stable hash of the edge's name; the rule
        // only says it lies in [0, spread).
        let offset = spread_offset(edge, timing.spread);
        assert!(
            offset >= SignedDuration::ZERO && (offset < timing.spread || timing.spread.is_zero()),
            "{edge}: offset {offset} outside [0, {})",
            timing.spread
        );
        offsets.push(offset);

        let mut expected_stages = Vec::new();
        let mut expected_promotes = Vec::new();
        let mut expected_retires = Vec::new();
        for generation in 2.. {
            let due = c + offset + timing.every * (generation - 1);
            let stage = tick_at_or_after(start, due);
            if stage > end {
                break;
            }
            expected_stages.push((generation as u64, stage, due));
            // Promote waits for propagation after the stage was stamped, and
            // retire for grace after the promote was stamped.
            let promote = tick_at_or_after(start, stage + timing.propagation);
            if promote > end {
                break;
            }
            expected_promotes.push((generation as u64, promote, stage + timing.propagation));
            let retire = tick_at_or_after(start, promote + timing.grace);
            if retire > end {
                break;
            }
            expected_retires.push((generation as u64, retire, promote + timing.grace));
        }
        let none = Vec::new();
        assert_eq!(
            stages.get(edge).unwrap_or(&none),
            &expected_stages,
            "{edge}: stages (generation, run, due) against created {c} + offset {offset} + (g - 1) x {}",
            timing.every
        );
        assert_eq!(
            promotes.get(edge).unwrap_or(&none),
            &expected_promotes,
            "{edge}: promotes"
        );
        assert_eq!(
            retires.get(edge).unwrap_or(&none),
            &expected_retires,
            "{edge}: retires"
        );
        total += expected_stages.len();
    }
    // The schedules are really mixed: spreads move edges apart, and the
    // shortest schedules rotate hundreds of times in two years.
    assert!(
        offsets.iter().filter(|o| !o.is_zero()).count() >= 8,
        "{offsets:?}"
    );
    assert!(total > 2000, "{total} stages in two years");
    assert_eq!(
        stages.keys().count(),
        20,
        "every edge rotated at least once"
    );
}
