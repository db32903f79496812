//! The story's estate through the built binary, on the local default.

use crate::support::{Workspace, assert_code, estate, stderr, stdout};

#[test]
fn plan_apply_status_revoke_end_to_end() {
    let mut ws = Workspace::new(&estate());

    let out = ws.run(&["validate"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("3 edge(s)"), "{}", stdout(&out));

    let out = ws.run(&["plan", "--detailed-exitcode"]);
    assert_code(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains("+ create product-catalog<-gateway gen 1"),
        "{text}"
    );
    assert!(
        text.contains("declared in keys.toml, not in the store"),
        "{text}"
    );
    assert!(text.contains("Plan: 3 to create."), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour off a terminal: {text:?}"
    );

    let out = ws.run(&["apply", "--auto-approve"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Apply complete: 3 create"),
        "{}",
        stdout(&out)
    );

    let out = ws.run(&["plan", "--detailed-exitcode"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));

    let out = ws.run(&["status"]);
    assert_code(&out, 0);
    let table = stdout(&out);
    assert!(table.starts_with("EDGE"), "{table}");
    for edge in [
        "product-catalog<-gateway",
        "product-inventory<-gateway",
        "product-inventory<-reporting",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(edge))
            .unwrap_or_else(|| panic!("{edge} in {table}"));
        assert!(row.contains("current") && row.contains("stage at"), "{row}");
    }
    for (service, consumer) in [
        ("product-catalog", "gateway"),
        ("product-inventory", "gateway"),
        ("product-inventory", "reporting"),
    ] {
        assert!(ws.edge_works(service, consumer), "{service}<-{consumer}");
    }

    // Remove reporting from the inventory's consumers.
    ws.write_config(&estate().replace(
        r#"consumers = ["gateway", "reporting"]"#,
        r#"consumers = ["gateway"]"#,
    ));
    let out = ws.run(&["plan", "--detailed-exitcode"]);
    assert_code(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains("- revoke product-inventory<-reporting gen 1"),
        "{text}"
    );
    assert!(text.contains("removed from keys.toml"), "{text}");
    assert!(text.contains("Plan: 1 to revoke."), "{text}");

    let before = ws.parameters();
    let out = ws.run(&["apply", "--auto-approve"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("--allow-revoke"), "{}", stderr(&out));
    assert_eq!(ws.parameters(), before, "a refused apply changes nothing");
    // Without --auto-approve and without a terminal, apply refuses too.
    let out = ws.run(&["apply"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not on a terminal"),
        "{}",
        stderr(&out)
    );

    let out = ws.run(&["apply", "--auto-approve", "--allow-revoke"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("1 revoke"), "{}", stdout(&out));

    // The store holds exactly the declared edges, and the authority exactly their keys.
    let names: Vec<String> = ws.parameters().into_keys().collect();
    assert_eq!(
        names,
        [
            "/keyplan/dev/consumers/gateway/keys/product-catalog",
            "/keyplan/dev/consumers/gateway/keys/product-inventory",
            "/keyplan/dev/services/product-catalog/accepts/gateway",
            "/keyplan/dev/services/product-inventory/accepts/gateway",
        ]
    );
    assert_eq!(ws.authority_ids(), ws.recorded_ids());
    assert_eq!(ws.authority_ids().len(), 2);
    let out = ws.run(&["plan", "--detailed-exitcode"]);
    assert_code(&out, 0);
    ws.assert_no_leaks();
}

#[test]
fn a_held_lock_names_its_holder_and_force_unlock_clears_it() {
    let mut ws = Workspace::new(&estate());
    let lock = ws.store().join("keyplan/dev/keyplan/lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(
        &lock,
        r#"{"id":"7d7a1f0e-1111-4222-8333-444455556666","holder":"ci@runner pid 42","operation":"apply","started":"2026-01-01T00:00:00Z","expires":"2999-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let out = ws.run(&["apply", "--auto-approve"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("held by ci@runner pid 42"), "{err}");
    assert!(
        err.contains("7d7a1f0e-1111-4222-8333-444455556666"),
        "{err}"
    );
    assert!(
        ws.parameters().is_empty(),
        "nothing but the lock was written"
    );

    let out = ws.run(&["force-unlock", "not-the-id"]);
    assert_code(&out, 1);
    let out = ws.run(&["force-unlock", "7d7a1f0e-1111-4222-8333-444455556666"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("ci@runner pid 42"));
    let out = ws.run(&["apply", "--auto-approve"]);
    assert_code(&out, 0);
    assert!(!lock.exists(), "apply releases its lock");
}

#[test]
fn plan_at_forecasts_and_apply_at_refuses_the_past() {
    let mut ws = Workspace::new(&estate());
    assert_code(
        &ws.run(&["apply", "--auto-approve", "--at", "2027-01-01T00:00:00Z"]),
        0,
    );
    let out = ws.run(&["plan", "--at", "2027-02-01", "--detailed-exitcode"]);
    assert_code(&out, 2);
    assert!(
        stdout(&out).contains("~ stage product-inventory<-gateway gen 2"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("due since 2027-01-31T00:00Z (every 30d)"),
        "{}",
        stdout(&out)
    );
    let out = ws.run(&["apply", "--auto-approve", "--at", "2026-12-01T00:00:00Z"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("earlier than the newest timestamp"),
        "{}",
        stderr(&out)
    );
    let out = ws.run(&["plan", "--at", "yesterday"]);
    assert_code(&out, 2); // clap's usage error
    assert!(stderr(&out).contains("is not a time"), "{}", stderr(&out));
}

#[test]
fn invalid_config_exits_1_with_file_line_column() {
    let mut ws = Workspace::new(
        &estate().replace("consumers = [\"gateway\"]\n", "consumer = [\"gateway\"]\n"),
    );
    let out = ws.run(&["plan"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: keys.toml:27:1: unknown field `consumer` in [services.product-catalog]"
        ),
        "{err}"
    );
    assert!(err.contains("hint: did you mean `consumers`?"), "{err}");
    assert!(!ws.store().exists(), "nothing was written");
}
