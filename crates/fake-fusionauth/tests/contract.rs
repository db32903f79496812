//! The fake against FusionAuth's own artefacts: the official Python client
//! (fusionauth-client 1.69.0, pinned in scripts/requirements-test.txt), the
//! OpenAPI validator's own check, and the endpoint table it copies.

mod common;

use common::{Fake, assert_success, run_python, spec_path};

#[test]
fn the_official_python_client_works_against_the_fake() {
    let fake = Fake::start();
    let output = run_python("official_client.py", &[&fake.url(), &fake.manager], None);
    assert_success("tests/python/official_client.py", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok - ")).count() >= 40,
        "{stdout}"
    );
    // The client's traffic is validated against the OpenAPI spec when `fake` drops.
    assert!(
        fake.requests().len() > 30,
        "{} requests",
        fake.requests().len()
    );
}

#[test]
fn the_openapi_validator_rejects_known_defects() {
    let spec = spec_path();
    let output = run_python(
        "validate_openapi.py",
        &[spec.to_str().unwrap(), "--self-test"],
        None,
    );
    assert_success("validate_openapi.py --self-test", &output);
}

#[test]
fn the_endpoint_table_is_the_shared_one() {
    let shared =
        keyplan_test_support::workspace_root().join("../shared/fusionauth/api-endpoints.tsv");
    let text = std::fs::read_to_string(&shared)
        .unwrap_or_else(|e| panic!("read {}: {e}", shared.display()));
    assert_eq!(
        fake_fusionauth::endpoints::all(),
        fake_fusionauth::endpoints::parse_table(&text),
        "crates/fake-fusionauth/data/api-endpoints.tsv differs from {}: copy it again",
        shared.display()
    );
}
