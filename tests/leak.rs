//! No key value reaches stdout, stderr or any file but the store's value
//! files, across a whole lifecycle: create, rotate through every phase,
//! revoke, errors.

use crate::support::{MINTED, Workspace, assert_code, estate};

#[test]
fn no_key_value_leaks_through_a_whole_lifecycle() {
    let mut ws = Workspace::new(&estate());
    for args in [
        &["validate"][..],
        &["plan"],
        &["apply", "--auto-approve", "--at", "2027-01-01T00:00:00Z"],
        &["status"],
        &["plan", "--at", "2027-02-01T00:00:00Z"],
        &["apply", "--auto-approve", "--at", "2027-02-01T00:00:00Z"],
        &["status", "--at", "2027-02-01T00:05:00Z"],
        &["apply", "--auto-approve", "--at", "2027-02-01T01:00:00Z"],
        &["apply", "--auto-approve", "--at", "2027-02-03T00:00:00Z"],
        &["status", "--at", "2027-02-03T00:00:00Z"],
    ] {
        let out = ws.run(args);
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(2),
            "{args:?}"
        );
    }
    ws.write_config(&estate().replace(
        r#"consumers = ["gateway", "reporting"]"#,
        r#"consumers = ["gateway"]"#,
    ));
    assert_code(&ws.run(&["apply", "--auto-approve"]), 1);
    assert_code(
        &ws.run(&[
            "apply",
            "--auto-approve",
            "--allow-revoke",
            "--at",
            "2027-02-04T00:00:00Z",
        ]),
        0,
    );
    ws.write_config(
        "[environment]\nname = \"dev\"\n[authority]\nkind = \"local\"\n[store]\nkind = \"nope\"\n",
    );
    assert_code(&ws.run(&["plan"]), 1);
    // Three creates and two rotations: at least five keys were seen.
    assert!(
        MINTED.lock().unwrap().len() >= 5,
        "the leak test collected keys"
    );
    ws.assert_no_leaks();
}
