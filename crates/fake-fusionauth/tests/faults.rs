//! Every injectable fault, and that each stops when its count runs out.

mod common;

use std::time::{Duration, Instant};

use common::{Fake, key_doc};
use fake_fusionauth::{Fault, Op, Permissions};
use serde_json::json;
use uuid::Uuid;

const T0: i64 = 1_767_225_600_000;

fn doc(name: &str) -> serde_json::Value {
    key_doc(name, json!({"/api/system/version": ["GET"]}))
}

#[test]
fn a_500_for_the_next_create_commits_nothing() {
    let fake = Fake::start();
    fake.inject_times(
        Fault::Status {
            op: Op::Create,
            status: 500,
        },
        1,
    );
    let before = fake.keys().len();
    fake.call("POST", "/api/api-key", Some(&doc("first")))
        .assert_empty(500);
    assert_eq!(fake.keys().len(), before);
    fake.call("POST", "/api/api-key", Some(&doc("first")))
        .api_key();
    let faults = fake.faults();
    assert_eq!((faults[0].hits, faults[0].remaining), (1, Some(0)));
    let log = fake.requests();
    assert_eq!(log[0].fault, Some(faults[0].fault.clone()));
    assert_eq!(log[1].fault, None);
}

#[test]
fn a_503_on_every_request_until_cleared() {
    let fake = Fake::start();
    fake.inject(Fault::Status {
        op: Op::Any,
        status: 503,
    });
    for (method, path) in [("GET", "/api/status"), ("POST", "/api/api-key")] {
        let answer = fake.call(method, path, Some(&doc("x")));
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.json()["generalErrors"][0]["code"],
            json!("[ServiceUnavailable]")
        );
    }
    // Only /api: inspection still works.
    assert_eq!(fake.faults()[0].hits, 2);
    fake.clear_faults();
    fake.call("POST", "/api/api-key", Some(&doc("x"))).api_key();
}

#[test]
fn faults_target_one_operation() {
    let fake = Fake::start();
    let key = fake
        .call("POST", "/api/api-key", Some(&doc("target")))
        .api_key();
    let path = format!("/api/api-key/{}", key["id"].as_str().unwrap());
    fake.inject(Fault::Status {
        op: Op::Update,
        status: 500,
    });
    assert_eq!(fake.call("GET", &path, None).status, 200);
    fake.call("PUT", &path, Some(&doc("target")))
        .assert_empty(500);
    fake.call("DELETE", &path, None).assert_empty(200);
}

#[test]
fn latency_delays_the_answer() {
    let fake = Fake::start();
    fake.inject_times(
        Fault::Latency {
            op: Op::Retrieve,
            millis: 400,
        },
        1,
    );
    let path = format!("/api/api-key/{}", Uuid::new_v4());
    let start = Instant::now();
    fake.call("GET", &path, None).assert_empty(404);
    assert!(start.elapsed() >= Duration::from_millis(400));
    let start = Instant::now();
    fake.call("GET", &path, None).assert_empty(404);
    assert!(start.elapsed() < Duration::from_millis(400));
}

#[test]
fn a_create_that_commits_and_then_drops_the_connection() {
    let fake = Fake::start();
    fake.inject_times(Fault::DropAfterCommit, 1);
    let id = Uuid::new_v4();
    let path = format!("/api/api-key/{id}");
    let answer = fake.try_send(
        "POST",
        &path,
        Some(&fake.manager),
        &[],
        Some(&doc("lost-answer")),
    );
    assert!(answer.is_err(), "expected no answer, got {answer:?}");
    // The key exists: a client must GET by id before creating again.
    let stored = fake.key(id).expect("committed");
    assert_eq!(stored.name.as_deref(), Some("lost-answer"));
    let got = fake.call("GET", &path, None).api_key();
    assert_eq!(got["key"], json!(stored.key));
    let retry = fake.call("POST", &path, Some(&doc("lost-answer")));
    assert_eq!(retry.field_codes("apiKey.id"), ["[duplicate]apiKey.id"]);
    let dropped = &fake.requests()[0];
    assert_eq!(dropped.status, None);
    assert_eq!(dropped.fault, Some(Fault::DropAfterCommit));
}

#[test]
fn new_keys_are_unknown_until_they_propagate() {
    let fake = Fake::start();
    fake.set_now(T0);
    fake.inject_times(Fault::PropagationDelay { millis: 5_000 }, 1);
    let slow = fake
        .call("POST", "/api/api-key", Some(&doc("slow")))
        .api_key();
    let fast = fake
        .call("POST", "/api/api-key", Some(&doc("fast")))
        .api_key();
    let probe = |key: &serde_json::Value| {
        fake.send(
            "GET",
            "/api/system/version",
            Some(key["key"].as_str().unwrap()),
            &[],
            None,
        )
        .status
    };
    assert_eq!(probe(&slow), 401);
    assert_eq!(probe(&fast), 200);
    // The manager can read it meanwhile: only its use is delayed.
    let path = format!("/api/api-key/{}", slow["id"].as_str().unwrap());
    fake.call("GET", &path, None).api_key();
    fake.advance(Duration::from_millis(4_999));
    assert_eq!(probe(&slow), 401);
    fake.advance(Duration::from_millis(1));
    assert_eq!(probe(&slow), 200);
}

#[test]
fn the_empty_permissions_object_quirk() {
    let fake = Fake::start();
    let body = json!({"apiKey": {"name": "quirky", "permissions": {}}});
    // Without the quirk, `{}` is a super key like an absent `permissions`.
    let fine = fake.call("POST", "/api/api-key", Some(&body)).api_key();
    assert!(fine.get("permissions").is_none());
    let value = fine["key"].as_str().unwrap();
    assert_eq!(
        fake.send("GET", "/api/system/version", Some(value), &[], None)
            .status,
        200
    );

    fake.inject(Fault::EmptyPermissionsQuirk);
    let body = json!({"apiKey": {"name": "broken", "permissions": {}}});
    let broken = fake.call("POST", "/api/api-key", Some(&body)).api_key();
    assert_eq!(broken["permissions"], json!({}));
    let path = format!("/api/api-key/{}", broken["id"].as_str().unwrap());
    assert_eq!(
        fake.call("GET", &path, None).api_key()["permissions"],
        json!({})
    );
    let value = broken["key"].as_str().unwrap();
    for endpoint in ["/api/system/version", "/api/status", "/api/user/1"] {
        fake.send("GET", endpoint, Some(value), &[], None)
            .assert_empty(401);
    }
    // A PUT without `permissions` repairs it into a working super key.
    let repaired = fake
        .call("PUT", &path, Some(&json!({"apiKey": {"name": "broken"}})))
        .api_key();
    assert!(repaired.get("permissions").is_none());
    assert_eq!(
        fake.send("GET", "/api/system/version", Some(value), &[], None)
            .status,
        200
    );
    // And a PUT with `{}` breaks the other one.
    let fine_path = format!("/api/api-key/{}", fine["id"].as_str().unwrap());
    fake.call(
        "PUT",
        &fine_path,
        Some(&json!({"apiKey": {"name": "quirky", "permissions": {}}})),
    )
    .api_key();
    let id = Uuid::parse_str(fine["id"].as_str().unwrap()).unwrap();
    assert_eq!(fake.key(id).unwrap().permissions, Permissions::EmptyObject);
}

#[test]
fn a_500_instead_of_a_400_on_a_duplicate() {
    let fake = Fake::start();
    fake.call("POST", "/api/api-key", Some(&doc("taken")))
        .api_key();
    fake.inject(Fault::DuplicateAs500);
    let before = fake.keys().len();
    fake.call("POST", "/api/api-key", Some(&doc("taken")))
        .assert_empty(500);
    assert_eq!(fake.keys().len(), before);
    // Other validation errors stay 400.
    let nameless = json!({"apiKey": {"retrievable": false}});
    assert_eq!(
        fake.call("POST", "/api/api-key", Some(&nameless))
            .field_codes("apiKey.name"),
        ["[blank]apiKey.name"]
    );
    assert_eq!(fake.faults()[0].hits, 1);
}

#[test]
fn a_500_for_an_unknown_tenant() {
    let fake = Fake::start();
    fake.inject_times(Fault::UnknownTenantAs500, 1);
    let mut body = doc("nowhere");
    body["apiKey"]["tenantId"] = json!(Uuid::new_v4());
    fake.call("POST", "/api/api-key", Some(&body))
        .assert_empty(500);
    assert_eq!(
        fake.call("POST", "/api/api-key", Some(&body))
            .field_codes("apiKey.tenantId"),
        ["[invalid]apiKey.tenantId"]
    );
}

#[test]
fn faults_can_be_injected_over_http() {
    let fake = Fake::start();
    let inject = json!({"fault": {"kind": "status", "op": "create", "status": 503}, "times": 2});
    let answer = fake.send("POST", "/_fake/faults", None, &[], Some(&inject));
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    for _ in 0..2 {
        assert_eq!(
            fake.call("POST", "/api/api-key", Some(&doc("h"))).status,
            503
        );
    }
    fake.call("POST", "/api/api-key", Some(&doc("h"))).api_key();
    let listed = fake.send("GET", "/_fake/faults", None, &[], None).json();
    assert_eq!(listed["faults"][0]["hits"], json!(2));
    assert_eq!(listed["faults"][0]["remaining"], json!(0));
    let latency = json!({"fault": {"kind": "latency", "op": "any", "millis": 1}});
    assert_eq!(
        fake.send("POST", "/_fake/faults", None, &[], Some(&latency))
            .status,
        200
    );
    assert_eq!(
        fake.send("DELETE", "/_fake/faults", None, &[], None).status,
        200
    );
    assert!(fake.faults().is_empty());
    let bad = json!({"fault": {"kind": "meteor"}});
    assert_eq!(
        fake.send("POST", "/_fake/faults", None, &[], Some(&bad))
            .status,
        400
    );
}
