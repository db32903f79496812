//! Abort `apply` after every remote write, then show that the next apply
//! converges: every declared edge works, nothing undeclared is accepted, and
//! the authority holds exactly the live keys.

use crate::support::{Workspace, assert_code, estate, stderr};

const DECLARED: [(&str, &str); 3] = [
    ("product-catalog", "gateway"),
    ("product-inventory", "gateway"),
    ("product-inventory", "reporting"),
];

fn assert_converged(ws: &Workspace, declared: &[(&str, &str)]) {
    for (service, consumer) in declared {
        assert!(
            ws.edge_works(service, consumer),
            "{service}<-{consumer} works"
        );
    }
    let accepted: Vec<(String, String)> = ws.accepted_edges().into_iter().collect();
    let expected: Vec<(String, String)> = declared
        .iter()
        .map(|(s, c)| ((*s).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(
        accepted, expected,
        "exactly the declared edges are accepted"
    );
    assert_eq!(
        ws.authority_ids(),
        ws.recorded_ids(),
        "the authority holds exactly the live keys"
    );
    assert!(
        !ws.parameters()
            .keys()
            .any(|n| n.contains("/keyplan/staged/")),
        "no staged record is left"
    );
}

/// Runs `setup`, then for n = 0, 1, ... aborts `apply_args` after n writes on
/// a fresh copy and lets a plain apply finish, until an apply needs no abort.
fn every_failpoint(
    setup: impl Fn(&mut Workspace),
    apply_args: &[&str],
    declared: &[(&str, &str)],
) -> u64 {
    for n in 0.. {
        let mut ws = Workspace::new(&estate());
        setup(&mut ws);
        let out = ws.run_failing_after(n, apply_args);
        if out.status.code() == Some(0) {
            assert_converged(&ws, declared);
            ws.assert_no_leaks();
            return n;
        }
        assert_code(&out, 1);
        assert!(stderr(&out).contains("failpoint"), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("the next apply finishes the job"),
            "{}",
            stderr(&out)
        );
        let out = ws.run(apply_args);
        assert_code(&out, 0);
        assert_converged(&ws, declared);
        let out = ws.run(&["plan", "--detailed-exitcode"]);
        assert_code(&out, 0);
        ws.assert_no_leaks();
    }
    unreachable!()
}

#[test]
fn create_converges_after_an_abort_at_every_write() {
    let writes = every_failpoint(|_| {}, &["apply", "--auto-approve"], &DECLARED);
    // Six writes per created edge: intent, mint, staged key, accepts, consumer key, delete staged.
    assert_eq!(writes, 18);
}

#[test]
fn revoke_converges_after_an_abort_at_every_write() {
    let remaining = [
        ("product-catalog", "gateway"),
        ("product-inventory", "gateway"),
    ];
    let writes = every_failpoint(
        |ws| {
            assert_code(&ws.run(&["apply", "--auto-approve"]), 0);
            ws.write_config(&estate().replace(
                r#"consumers = ["gateway", "reporting"]"#,
                r#"consumers = ["gateway"]"#,
            ));
        },
        &["apply", "--auto-approve", "--allow-revoke"],
        &remaining,
    );
    // Tombstone, delete the authority key, the consumer key and the accepts document.
    assert_eq!(writes, 4);
}
