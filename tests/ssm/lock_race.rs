//! The lock algorithm against the in-memory fake, one SSM call at a time in
//! chosen orders: random ones (8 contenders x 20 rounds on an expired lock)
//! and the hand-written ones that used to break naive designs.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use keyplan::provider::ssm::{SsmLock, SsmLockSettings};
use keyplan::provider::{Lock, LockError, LockRecord};

use super::fake::{FakeSsm, Stepper, Task};

const LOCK: &str = "/kp/race/keyplan/lock";

fn settings() -> SsmLockSettings {
    SsmLockSettings {
        skew: Duration::ZERO,
        attempts: 8,
        pause: Duration::ZERO, // the fake interleaves by hand; no timers
        guard_retention: Duration::from_secs(24 * 3600),
    }
}

fn lock(fake: &Arc<FakeSsm>, settings: SsmLockSettings) -> SsmLock {
    SsmLock::new(fake.clone(), LOCK, settings)
}

fn at(minutes: i64) -> Timestamp {
    "2027-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minutes)
}

fn record(id: &str, now: Timestamp) -> LockRecord {
    LockRecord {
        id: id.into(),
        holder: format!("holder-{id}"),
        operation: "apply".into(),
        started: now,
        expires: now + SignedDuration::from_mins(10),
    }
}

/// Runs a future that needs no interleaving to its end.
fn run<T>(future: impl Future<Output = T>) -> T {
    let mut stepper = Stepper::new(vec![Box::pin(future) as Task<'_, T>]);
    stepper.finish(0);
    stepper.outputs.pop().unwrap().unwrap()
}

fn holder_of(fake: &FakeSsm) -> Option<String> {
    let value = fake.value(LOCK)?;
    let json: serde_json::Value = serde_json::from_str(&value).unwrap();
    Some(json["id"].as_str().unwrap().to_owned())
}

#[test]
fn eight_contenders_twenty_rounds_exactly_one_winner_each() {
    let fake = Arc::new(FakeSsm::default());
    // An expired lock to start from.
    run(lock(&fake, settings()).acquire(&record("initial", at(-60)), at(-60))).unwrap();

    for round in 0..20u64 {
        let now = at(60 * round as i64); // every earlier lock has expired
        let locks: Vec<SsmLock> = (0..8).map(|_| lock(&fake, settings())).collect();
        let records: Vec<LockRecord> = (0..8)
            .map(|i| record(&format!("r{round}-c{i}"), now))
            .collect();
        let tasks: Vec<Task<'_, Result<(), LockError>>> = locks
            .iter()
            .zip(&records)
            .map(|(l, r)| Box::pin(l.acquire(r, now)) as Task<'_, _>)
            .collect();
        let mut stepper = Stepper::new(tasks);
        stepper.run_shuffled(0x9e37_79b9_7f4a_7c15 ^ (round + 1).wrapping_mul(0x1000_0000_01b3));

        let winners: Vec<usize> = (0..8)
            .filter(|&i| matches!(stepper.outputs[i], Some(Ok(()))))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = winners[0];
        for (i, output) in stepper.outputs.iter().enumerate() {
            if i != winner {
                assert!(
                    matches!(output, Some(Err(LockError::Held(_)))),
                    "round {round}, contender {i}: {output:?}"
                );
            }
        }
        assert_eq!(
            holder_of(&fake).as_deref(),
            Some(records[winner].id.as_str())
        );
        for (i, (l, r)) in locks.iter().zip(&records).enumerate() {
            let verified = run(l.verify(r, now));
            assert_eq!(
                verified.is_ok(),
                i == winner,
                "round {round}, contender {i}"
            );
        }
    }
}

#[test]
fn a_live_lock_is_refused_with_its_holder() {
    let fake = Arc::new(FakeSsm::default());
    run(lock(&fake, settings()).acquire(&record("a", at(0)), at(0))).unwrap();
    match run(lock(&fake, settings()).acquire(&record("b", at(1)), at(1))) {
        Err(LockError::Held(held)) => assert_eq!(held.holder, "holder-a"),
        other => panic!("expected Held, got {other:?}"),
    }
    // With skew, a lock one minute past its expiry still counts as held.
    let skewed = SsmLockSettings {
        skew: Duration::from_secs(120),
        ..settings()
    };
    assert!(matches!(
        run(lock(&fake, skewed).acquire(&record("b", at(11)), at(11))),
        Err(LockError::Held(_))
    ));
}

/// A contender that saw the expired lock, then stalled while another took it
/// over and released it and a third took it fresh, must not win.
#[test]
fn a_slow_contender_arriving_late_never_wins() {
    for retention in [Duration::from_secs(24 * 3600), Duration::ZERO] {
        let fake = Arc::new(FakeSsm::default());
        let s = SsmLockSettings {
            guard_retention: retention,
            ..settings()
        };
        run(lock(&fake, s.clone()).acquire(&record("old", at(0)), at(0))).unwrap();

        let now = at(30);
        let (slow, taker, fresh) = (
            lock(&fake, s.clone()),
            lock(&fake, s.clone()),
            lock(&fake, s.clone()),
        );
        let (slow_r, taker_r, fresh_r) = (
            record("slow", now),
            record("taker", now),
            record("fresh", now),
        );
        let mut stepper = Stepper::new(vec![
            Box::pin(slow.acquire(&slow_r, now)) as Task<'_, _>,
            Box::pin(async {
                taker.acquire(&taker_r, now).await?;
                taker.release(&taker_r).await
            }),
            Box::pin(fresh.acquire(&fresh_r, now)),
        ]);
        // slow: yield, create fails, reads the expired lock; stops before its guard.
        for _ in 0..3 {
            assert!(!stepper.step(0));
        }
        stepper.finish(1);
        stepper.finish(2);
        stepper.finish(0);
        assert!(matches!(stepper.outputs[1], Some(Ok(()))));
        assert!(matches!(stepper.outputs[2], Some(Ok(()))));
        match &stepper.outputs[0] {
            Some(Err(LockError::Held(held))) => assert_eq!(held.id, "fresh"),
            other => panic!("retention {retention:?}: the slow contender got {other:?}"),
        }
        assert_eq!(holder_of(&fake).as_deref(), Some("fresh"));
    }
}

/// Two takers read the same expired lock; the one that loses the guard does
/// not delete the winner's new lock, whatever the order.
#[test]
fn two_takers_of_one_expired_lock() {
    for order in 0..64u64 {
        let fake = Arc::new(FakeSsm::default());
        run(lock(&fake, settings()).acquire(&record("old", at(0)), at(0))).unwrap();
        let now = at(30);
        let (a, b) = (lock(&fake, settings()), lock(&fake, settings()));
        let (ra, rb) = (record("a", now), record("b", now));
        let mut stepper = Stepper::new(vec![
            Box::pin(a.acquire(&ra, now)) as Task<'_, _>,
            Box::pin(b.acquire(&rb, now)),
        ]);
        stepper.run_shuffled(order + 1);
        let wins = stepper
            .outputs
            .iter()
            .filter(|o| matches!(o, Some(Ok(()))))
            .count();
        assert_eq!(wins, 1, "order {order}");
        let holder = holder_of(&fake).unwrap();
        assert!(holder == "a" || holder == "b");
        let winner_ok = if holder == "a" {
            run(a.verify(&ra, now))
        } else {
            run(b.verify(&rb, now))
        };
        winner_ok.unwrap();
    }
}

/// A holder whose clock is behind renews while a taker (whose clock says the
/// lock expired) is mid-way: one of them loses, never neither nor both.
#[test]
fn a_late_renewal_and_a_takeover_do_not_both_succeed() {
    for split in 0..8 {
        let fake = Arc::new(FakeSsm::default());
        let holder = lock(&fake, settings());
        let held = record("h", at(0));
        run(holder.acquire(&held, at(0))).unwrap();

        let holder_now = at(9); // believes one minute is left
        let taker_now = at(11); // believes it expired
        let taker = lock(&fake, settings());
        let taker_r = record("t", taker_now);
        let mut renewed = held.clone();
        renewed.expires = at(19);
        let mut stepper = Stepper::new(vec![
            Box::pin(holder.renew(&renewed, holder_now)) as Task<'_, _>,
            Box::pin(taker.acquire(&taker_r, taker_now)),
        ]);
        for _ in 0..split {
            stepper.step(1);
        }
        stepper.finish(0);
        stepper.finish(1);
        let renew_ok = matches!(stepper.outputs[0], Some(Ok(())));
        let take_ok = matches!(stepper.outputs[1], Some(Ok(())));
        assert!(
            renew_ok != take_ok,
            "split {split}: renew {renew_ok}, takeover {take_ok}"
        );
        let owner = holder_of(&fake).unwrap();
        assert_eq!(owner, if renew_ok { "h" } else { "t" }, "split {split}");
        if take_ok {
            assert!(matches!(
                run(holder.verify(&renewed, holder_now)),
                Err(LockError::Lost(_))
            ));
        }
    }
}

#[test]
fn release_force_unlock_and_guard_retention() {
    let fake = Arc::new(FakeSsm::default());
    let a = lock(&fake, settings());
    let ra = record("a", at(0));
    run(a.acquire(&ra, at(0))).unwrap();
    let mut renewed = ra.clone();
    renewed.expires = at(20);
    run(a.renew(&renewed, at(5))).unwrap();
    run(a.verify(&renewed, at(15))).unwrap();
    run(a.release(&renewed)).unwrap();
    run(a.release(&renewed)).unwrap(); // released already: fine
    assert_eq!(run(a.current()).unwrap(), None);

    let b = lock(&fake, settings());
    run(b.acquire(&record("b", at(30)), at(30))).unwrap();
    assert!(matches!(
        run(a.force_unlock("a")),
        Err(LockError::NotHeld(_))
    ));
    assert_eq!(run(a.force_unlock("b")).unwrap().id, "b");
    assert_eq!(run(a.current()).unwrap(), None);
    // b's renewal after a force-unlock fails.
    let mut rb = record("b", at(30));
    rb.expires = at(50);
    assert!(matches!(run(b.renew(&rb, at(31))), Err(LockError::Lost(_))));

    // Guards pile up per renewal and release; a holder with zero retention sweeps them.
    let guards = |fake: &FakeSsm| {
        fake.names()
            .iter()
            .filter(|n| n.contains("-guard/"))
            .count()
    };
    assert!(guards(&fake) >= 2);
    let sweeper = lock(
        &fake,
        SsmLockSettings {
            guard_retention: Duration::ZERO,
            ..settings()
        },
    );
    run(sweeper.acquire(&record("c", at(60)), at(60))).unwrap();
    assert_eq!(guards(&fake), 0);
}
