//! What tests can see: the keys, the redacted request log, the /_fake calls;
//! and the two ways to start the fake (async library, binary).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Fake, key_doc};
use fake_fusionauth::{FakeFusionAuth, Permissions};
use serde_json::json;

#[test]
fn the_request_log_redacts_secrets_and_shows_bodies() {
    let fake = Fake::start();
    let mut body = key_doc("logged", json!({"/api/user": ["GET"]}));
    body["apiKey"]["key"] = json!("supplied-secret-value");
    let key = fake.call("POST", "/api/api-key", Some(&body)).api_key();
    let path = format!("/api/api-key/{}", key["id"].as_str().unwrap());
    fake.call(
        "PUT",
        &path,
        Some(&json!({"apiKey": {"name": "logged", "permissions": {"endpoints": {"/api/user": ["GET"]}}}})),
    )
    .api_key();
    fake.call("GET", &path, None).api_key();

    let log = fake.requests();
    assert_eq!(log.len(), 3);
    let manager_id = fake.keys().into_iter().find(|k| k.key_manager).unwrap().id;
    let text = serde_json::to_string(&log).unwrap();
    assert!(
        !text.contains(&fake.manager),
        "the manager key leaked: {text}"
    );
    assert!(
        !text.contains("supplied-secret-value"),
        "a key value leaked: {text}"
    );
    for exchange in &log {
        assert_eq!(exchange.headers["authorization"], "[redacted]");
        assert_eq!(exchange.caller_key_id, Some(manager_id));
    }
    let create = &log[0];
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", "/api/api-key")
    );
    assert_eq!(create.request_at("/apiKey/key"), Some(&json!("[redacted]")));
    assert_eq!(create.request_at("/apiKey/name"), Some(&json!("logged")));
    assert_eq!(create.status, Some(200));
    assert_eq!(
        create.response_json.as_ref().unwrap()["apiKey"]["key"],
        json!("[redacted]")
    );
    // The kind of assertion keyplan's tests make: no PUT ever omitted permissions.
    let puts: Vec<_> = log.iter().filter(|e| e.method == "PUT").collect();
    assert_eq!(puts.len(), 1);
    assert!(
        puts.iter()
            .all(|e| e.request_at("/apiKey/permissions/endpoints").is_some())
    );

    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[test]
fn the_key_snapshot_has_values_and_metadata() {
    let fake = Fake::start();
    let key = fake
        .call(
            "POST",
            "/api/api-key",
            Some(&key_doc("snap", json!({"/api/user": ["GET"]}))),
        )
        .api_key();
    let keys = fake.keys();
    assert_eq!(keys.len(), 2);
    let record = keys.iter().find(|k| !k.key_manager).unwrap();
    assert_eq!(record.key, key["key"].as_str().unwrap());
    assert_eq!(record.name.as_deref(), Some("snap"));
    assert_eq!(
        record.attributes.as_ref().unwrap()["description"],
        "a test key"
    );
    assert!(
        matches!(&record.permissions, Permissions::Endpoints(m) if m["/api/user"].contains("GET"))
    );
    assert!(
        !format!("{record:?}").contains(&record.key),
        "Debug hides the value"
    );
}

#[test]
fn inspection_calls_over_http_are_not_logged() {
    let fake = Fake::start();
    let seeded = fake.send(
        "POST",
        "/_fake/keys",
        None,
        &[],
        Some(&json!({"key": "seeded-over-http", "keyManager": true})),
    );
    assert_eq!(seeded.status, 200);
    assert_eq!(seeded.json()["key"]["keyManager"], json!(true));
    fake.send(
        "POST",
        "/api/api-key",
        Some("seeded-over-http"),
        &[],
        Some(&key_doc("via-http", json!({"/api/user": ["GET"]}))),
    )
    .api_key();
    let keys = fake.send("GET", "/_fake/keys", None, &[], None).json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3);
    let tenant = fake.send("POST", "/_fake/tenants", None, &[], None).json()["id"].clone();
    let tenants = fake.send("GET", "/_fake/tenants", None, &[], None).json();
    assert!(tenants["tenants"].as_array().unwrap().contains(&tenant));
    assert_eq!(tenants["default"], json!(fake.default_tenant()));
    let clock = fake.send(
        "POST",
        "/_fake/clock",
        None,
        &[],
        Some(&json!({"now": 1_000, "advanceMillis": 500})),
    );
    assert_eq!(clock.json()["now"], json!(1_500));
    assert_eq!(fake.now(), 1_500);
    fake.send(
        "POST",
        "/_fake/clock",
        None,
        &[],
        Some(&json!({"system": true})),
    );
    assert!(fake.now() > 1_700_000_000_000);
    let requests = fake.send("GET", "/_fake/requests", None, &[], None).json();
    let paths: Vec<_> = requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(paths, [json!("/api/api-key")]);
    fake.send("DELETE", "/_fake/requests", None, &[], None);
    assert!(fake.requests().is_empty());
    assert_eq!(
        fake.send("GET", "/_fake/nothing", None, &[], None).status,
        404
    );
}

#[test]
fn the_library_starts_on_a_tokio_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = FakeFusionAuth::start().await;
        fake.seed_manager_key("async-manager", None);
        let port = fake.addr().port();
        let answer = tokio::task::spawn_blocking(move || {
            common::raw_request(
                port,
                "POST",
                "/api/api-key",
                &[
                    ("Authorization", "async-manager"),
                    ("Content-Type", "application/json"),
                ],
                Some(br#"{"apiKey": {"name": "from-async"}}"#),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(answer.status, 200);
        assert!(
            fake.keys()
                .iter()
                .any(|k| k.name.as_deref() == Some("from-async"))
        );
        common::validate_openapi(&fake.requests());
    });
}

/// Stops the binary however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_seeds_the_manager_key_from_the_environment() {
    let port = keyplan_test_support::free_port();
    let secret = "binary-manager-key-value";
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_fake-fusionauth"))
            .args([
                "--port",
                &port.to_string(),
                "--manager-key-env",
                "FAKE_FA_TEST_MANAGER",
                "--verbose",
            ])
            .env("FAKE_FA_TEST_MANAGER", secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the fake-fusionauth binary"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    assert_eq!(url.trim(), format!("http://127.0.0.1:{port}"));
    keyplan_test_support::wait_for_port(port, Duration::from_secs(10));

    let created = common::raw_request(
        port,
        "POST",
        "/api/api-key",
        &[("Authorization", secret), ("Content-Type", "application/json")],
        Some(br#"{"apiKey": {"name": "from-binary", "permissions": {"endpoints": {"/api/user": ["GET"]}}}}"#),
    )
    .unwrap();
    assert_eq!(created.status, 200);
    let value = created.json()["apiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let log = common::raw_request(port, "GET", "/_fake/requests", &[], None).unwrap();
    let exchanges: Vec<fake_fusionauth::Exchange> =
        serde_json::from_value(log.json()["requests"].clone()).unwrap();
    assert_eq!(exchanges.len(), 1);
    common::validate_openapi(&exchanges);

    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("POST /api/api-key -> 200"), "{stderr}");
    assert!(
        !stderr.contains(secret) && !stderr.contains(&value),
        "a key leaked: {stderr}"
    );
}

#[test]
fn the_binary_refuses_a_missing_manager_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_fake-fusionauth"))
        .args([
            "--port",
            "0",
            "--manager-key-env",
            "FAKE_FA_TEST_UNSET_VARIABLE",
        ])
        .env_remove("FAKE_FA_TEST_UNSET_VARIABLE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FAKE_FA_TEST_UNSET_VARIABLE is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}
