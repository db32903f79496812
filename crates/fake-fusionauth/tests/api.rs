//! The API Key API as the checklist of reference/fusionauth-api.md §7 asks.
//! Every response these tests get is validated against the OpenAPI spec when
//! the fake is dropped.

mod common;

use common::{Fake, key_doc};
use fake_fusionauth::{Permissions, SeedKey};
use serde_json::{Value, json};
use uuid::Uuid;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn create(fake: &Fake, name: &str) -> Value {
    fake.call(
        "POST",
        "/api/api-key",
        Some(&key_doc(name, json!({"/api/user": ["GET"]}))),
    )
    .api_key()
}

fn id_of(key: &Value) -> String {
    key["id"].as_str().expect("id").to_string()
}

fn path_of(key: &Value) -> String {
    format!("/api/api-key/{}", id_of(key))
}

#[test]
fn create_without_an_id_generates_id_key_and_instants() {
    let fake = Fake::start();
    fake.set_now(T0);
    let key = create(&fake, "generated");
    let id = Uuid::parse_str(key["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    let value = key["key"].as_str().unwrap();
    assert_eq!(value.len(), 56);
    assert!(
        value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(key["keyManager"], json!(false));
    assert_eq!(key["retrievable"], json!(true));
    assert_eq!(key["insertInstant"], json!(T0));
    assert_eq!(key["lastUpdateInstant"], json!(T0));
    assert_eq!(key["name"], json!("generated"));
    assert_eq!(
        key["metaData"]["attributes"]["keyplan.edge"],
        json!("generated")
    );
    assert_eq!(fake.key(id).unwrap().key, value);
    let again = fake.call("GET", &path_of(&key), None).api_key();
    assert_eq!(again, key);
}

#[test]
fn create_with_an_id_uses_it_once() {
    let fake = Fake::start();
    let id = Uuid::new_v4();
    let path = format!("/api/api-key/{id}");
    let doc = key_doc("chosen", json!({"/api/user": ["GET"]}));
    let key = fake.call("POST", &path, Some(&doc)).api_key();
    assert_eq!(key["id"], json!(id));
    let twice = fake.call(
        "POST",
        &path,
        Some(&key_doc("other", json!({"/api/user": ["GET"]}))),
    );
    assert_eq!(twice.field_codes("apiKey.id"), ["[duplicate]apiKey.id"]);
    let bad = fake.call("GET", "/api/api-key/not-a-uuid", None);
    assert_eq!(bad.field_codes("keyId"), ["[couldNotConvert]keyId"]);
}

#[test]
fn authentication_failures_are_401_with_an_empty_body() {
    let fake = Fake::start();
    let key = create(&fake, "target");
    let path = path_of(&key);
    let minted = key["key"].as_str().unwrap();
    fake.send("GET", &path, None, &[], None).assert_empty(401);
    fake.send("GET", &path, Some("no-such-key"), &[], None)
        .assert_empty(401);
    let bearer = format!("Bearer {}", fake.manager);
    fake.send("GET", &path, Some(&bearer), &[], None)
        .assert_empty(401);
    // A key that is not a key manager may not use the API Key API at all.
    fake.send("GET", &path, Some(minted), &[], None)
        .assert_empty(401);
    fake.send(
        "POST",
        "/api/api-key",
        Some(minted),
        &[],
        Some(&key_doc("x", json!({"/api/user": ["GET"]}))),
    )
    .assert_empty(401);
    // Outside its permissions.
    fake.send("GET", "/api/group", Some(minted), &[], None)
        .assert_empty(401);
    fake.send("DELETE", "/api/user/1", Some(minted), &[], None)
        .assert_empty(401);
    // Within them: authenticated; the fake keeps no users, so 404.
    fake.send("GET", "/api/user/1", Some(minted), &[], None)
        .assert_empty(404);
}

#[test]
fn expired_keys_get_401_until_extended() {
    let fake = Fake::start();
    fake.set_now(T0);
    let mut doc = key_doc("expiring", json!({"/api/system/version": ["GET"]}));
    doc["apiKey"]["expirationInstant"] = json!(T0 + 60_000);
    let key = fake.call("POST", "/api/api-key", Some(&doc)).api_key();
    assert_eq!(key["expirationInstant"], json!(T0 + 60_000));
    let value = key["key"].as_str().unwrap();
    let probe = || fake.send("GET", "/api/system/version", Some(value), &[], None);
    assert_eq!(probe().status, 200);
    fake.set_now(T0 + 60_000);
    probe().assert_empty(401);
    // Expired keys are kept, and the expiry can be moved.
    let mut extend = doc.clone();
    extend["apiKey"]["expirationInstant"] = json!(T0 + 120_000);
    fake.call("PUT", &path_of(&key), Some(&extend)).api_key();
    assert_eq!(probe().status, 200);

    let manager = "expired-manager";
    fake.seed_key(SeedKey::manager(manager).expiring_at(T0));
    fake.send("GET", &path_of(&key), Some(manager), &[], None)
        .assert_empty(401);
}

#[test]
fn put_replaces_every_mutable_field_and_omitted_permissions_make_a_super_key() {
    let fake = Fake::start();
    fake.set_now(T0);
    let mut doc = key_doc("replace-me", json!({"/api/user": ["GET"]}));
    doc["apiKey"]["expirationInstant"] = json!(T0 + 3_600_000);
    let key = fake.call("POST", "/api/api-key", Some(&doc)).api_key();
    let path = path_of(&key);
    let value = key["key"].as_str().unwrap().to_string();
    fake.send("GET", "/api/group", Some(&value), &[], None)
        .assert_empty(401);

    fake.set_now(T0 + 5_000);
    // key, tenantId, retrievable and keyManager cannot change: ignored.
    let put = json!({"apiKey": {
        "name": "renamed",
        "key": "attempt-to-change-the-value",
        "retrievable": false,
        "keyManager": true,
    }});
    let updated = fake.call("PUT", &path, Some(&put)).api_key();
    assert_eq!(updated["name"], json!("renamed"));
    assert_eq!(updated["key"], json!(value), "the value never changes");
    assert_eq!(updated["retrievable"], json!(true));
    assert_eq!(updated["keyManager"], json!(false));
    assert_eq!(updated["lastUpdateInstant"], json!(T0 + 5_000));
    assert_eq!(updated["insertInstant"], json!(T0));
    for cleared in ["permissions", "metaData", "expirationInstant"] {
        assert!(updated.get(cleared).is_none(), "{cleared} kept: {updated}");
    }
    let id = Uuid::parse_str(&id_of(&key)).unwrap();
    assert_eq!(fake.key(id).unwrap().permissions, Permissions::Super);
    // A super key may call every endpoint.
    fake.send("GET", "/api/group", Some(&value), &[], None)
        .assert_empty(404);
    fake.send("DELETE", "/api/user/1", Some(&value), &[], None)
        .assert_empty(404);
    assert_eq!(
        fake.send("GET", "/api/system/version", Some(&value), &[], None)
            .json(),
        json!({"version": "1.69.0"})
    );
    // An empty endpoints map is a super key too.
    let empty = json!({"apiKey": {"name": "renamed", "permissions": {"endpoints": {}}}});
    let updated = fake.call("PUT", &path, Some(&empty)).api_key();
    assert!(updated.get("permissions").is_none());
    // And permissions come back when sent.
    let back = json!({"apiKey": {"name": "renamed", "permissions": {"endpoints": {"/api/user": ["POST", "GET"]}}}});
    let updated = fake.call("PUT", &path, Some(&back)).api_key();
    let methods: Vec<&str> = updated["permissions"]["endpoints"]["/api/user"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(methods, ["POST", "GET"], "a set, in no alphabetical order");
    fake.send("GET", "/api/group", Some(&value), &[], None)
        .assert_empty(401);

    let missing = fake.call(
        "PUT",
        &format!("/api/api-key/{}", Uuid::new_v4()),
        Some(&back),
    );
    missing.assert_empty(404);
}

#[test]
fn patch_merges_into_the_stored_key() {
    let fake = Fake::start();
    let key = create(&fake, "patch-me");
    let path = path_of(&key);
    let patch = json!({"apiKey": {"permissions": {"endpoints": {"/api/user": ["POST"], "/api/group": ["GET"]}}}});
    let patched = fake.call("PATCH", &path, Some(&patch)).api_key();
    assert_eq!(patched["name"], json!("patch-me"));
    assert_eq!(patched["metaData"], key["metaData"]);
    let endpoints = &patched["permissions"]["endpoints"];
    assert_eq!(endpoints["/api/user"], json!(["POST", "GET"]));
    assert_eq!(endpoints["/api/group"], json!(["GET"]));
}

#[test]
fn delete_answers_200_without_a_body_and_the_key_stops_working() {
    let fake = Fake::start();
    let key = create(&fake, "doomed");
    let path = path_of(&key);
    let value = key["key"].as_str().unwrap();
    assert_eq!(
        fake.send("GET", "/api/user/1", Some(value), &[], None)
            .status,
        404
    );
    fake.call("DELETE", &path, None).assert_empty(200);
    fake.call("GET", &path, None).assert_empty(404);
    fake.call("DELETE", &path, None).assert_empty(404);
    fake.send("GET", "/api/user/1", Some(value), &[], None)
        .assert_empty(401);
    assert!(fake.keys().iter().all(|k| k.key != value));
}

#[test]
fn there_is_no_list_or_search_endpoint() {
    let fake = Fake::start();
    create(&fake, "one");
    fake.call("GET", "/api/api-key", None).assert_empty(404);
    fake.call("GET", "/api/api-key/search", None)
        .field_codes("keyId");
    fake.call("POST", "/api/api-key/search", Some(&json!({"search": {}})))
        .field_codes("keyId");
}

#[test]
fn key_values_and_names_are_unique_and_at_most_191_characters() {
    let fake = Fake::start();
    let first = create(&fake, "taken");
    let perms = json!({"endpoints": {"/api/user": ["GET"]}});
    let same_name = fake.call(
        "POST",
        "/api/api-key",
        Some(&json!({"apiKey": {"name": "taken", "permissions": perms}})),
    );
    assert_eq!(
        same_name.field_codes("apiKey.name"),
        ["[duplicate]apiKey.name"]
    );
    let same_value = fake.call(
        "POST",
        "/api/api-key",
        Some(&json!({"apiKey": {"key": first["key"], "permissions": perms}})),
    );
    assert_eq!(
        same_value.field_codes("apiKey.key"),
        ["[duplicate]apiKey.key"]
    );

    let long = "k".repeat(192);
    let answer = fake.call(
        "POST",
        "/api/api-key",
        Some(&json!({"apiKey": {"key": long, "name": "n".repeat(192), "permissions": perms}})),
    );
    assert_eq!(answer.field_codes("apiKey.key"), ["[tooLong]apiKey.key"]);
    assert_eq!(answer.field_codes("apiKey.name"), ["[tooLong]apiKey.name"]);
    let at_limit =
        json!({"apiKey": {"key": "k".repeat(191), "name": "n".repeat(191), "permissions": perms}});
    let key = fake.call("POST", "/api/api-key", Some(&at_limit)).api_key();
    assert_eq!(key["key"].as_str().unwrap().len(), 191);

    // A supplied value is used as is.
    let own = fake
        .call(
            "POST",
            "/api/api-key",
            Some(&json!({"apiKey": {"key": "super-secret-key", "permissions": perms}})),
        )
        .api_key();
    assert_eq!(own["key"], json!("super-secret-key"));

    // Renaming onto another key's name is refused too.
    let rename = json!({"apiKey": {"name": "taken", "permissions": perms}});
    let answer = fake.call("PUT", &path_of(&own), Some(&rename));
    assert_eq!(
        answer.field_codes("apiKey.name"),
        ["[duplicate]apiKey.name"]
    );
    // Keeping one's own name is fine.
    fake.call("PUT", &path_of(&first), Some(&rename)).api_key();
}

#[test]
fn non_retrievable_keys_show_their_value_only_on_create() {
    let fake = Fake::start();
    let perms = json!({"endpoints": {"/api/user": ["GET"]}});
    let nameless = fake.call(
        "POST",
        "/api/api-key",
        Some(&json!({"apiKey": {"retrievable": false, "permissions": perms}})),
    );
    assert_eq!(nameless.field_codes("apiKey.name"), ["[blank]apiKey.name"]);
    let doc = json!({"apiKey": {"name": "hidden", "retrievable": false, "permissions": perms}});
    let key = fake.call("POST", "/api/api-key", Some(&doc)).api_key();
    assert_eq!(key["key"].as_str().unwrap().len(), 56);
    assert_eq!(key["retrievable"], json!(false));
    let path = path_of(&key);
    let got = fake.call("GET", &path, None).api_key();
    assert!(got.get("key").is_none(), "{got}");
    let put = fake.call("PUT", &path, Some(&doc)).api_key();
    assert!(put.get("key").is_none(), "{put}");
    let unnamed = json!({"apiKey": {"permissions": perms}});
    assert_eq!(
        fake.call("PUT", &path, Some(&unnamed))
            .field_codes("apiKey.name"),
        ["[blank]apiKey.name"]
    );
}

#[test]
fn tenant_scoped_keys_and_the_tenant_header() {
    let fake = Fake::start();
    let tenant = Uuid::new_v4();
    let other = Uuid::new_v4();
    fake.add_tenant(tenant);
    fake.add_tenant(other);
    let scoped = "tenant-manager";
    fake.seed_manager_key(scoped, Some(tenant));
    let global = create(&fake, "global-key");
    let doc = key_doc("tenant-key", json!({"/api/system/version": ["GET"]}));

    // A tenant-scoped manager mints keys of its tenant only.
    let mine = fake
        .send("POST", "/api/api-key", Some(scoped), &[], Some(&doc))
        .api_key();
    assert_eq!(mine["tenantId"], json!(tenant));
    let mut foreign = key_doc("foreign", json!({"/api/user": ["GET"]}));
    foreign["apiKey"]["tenantId"] = json!(other);
    fake.send("POST", "/api/api-key", Some(scoped), &[], Some(&foreign))
        .assert_empty(401);
    // It sees other tenants' keys and global keys as absent.
    fake.send("GET", &path_of(&global), Some(scoped), &[], None)
        .assert_empty(404);
    fake.send("DELETE", &path_of(&global), Some(scoped), &[], None)
        .assert_empty(404);
    assert_eq!(
        fake.send("GET", &path_of(&mine), Some(scoped), &[], None)
            .status,
        200
    );

    // The header scopes a global manager's request the same way.
    let header = tenant.to_string();
    let with = [("X-FusionAuth-TenantId", header.as_str())];
    fake.send("GET", &path_of(&global), Some(&fake.manager), &with, None)
        .assert_empty(404);
    let by_header = fake
        .send(
            "POST",
            "/api/api-key",
            Some(&fake.manager),
            &with,
            Some(&key_doc("by-header", json!({"/api/user": ["GET"]}))),
        )
        .api_key();
    assert_eq!(by_header["tenantId"], json!(tenant));
    // A header naming another tenant than the key's own is refused.
    let other_header = other.to_string();
    fake.send(
        "GET",
        &path_of(&mine),
        Some(scoped),
        &[("X-FusionAuth-TenantId", other_header.as_str())],
        None,
    )
    .assert_empty(401);
    // A header that is not a tenant is a 400.
    for bad in ["not-a-uuid", &Uuid::new_v4().to_string()] {
        let answer = fake.send(
            "GET",
            &path_of(&mine),
            Some(&fake.manager),
            &[("X-FusionAuth-TenantId", bad)],
            None,
        );
        assert_eq!(answer.general_codes(), ["[InvalidTenantId]"]);
    }
    // A key for a tenant that does not exist is refused.
    let mut unknown = key_doc("unknown-tenant", json!({"/api/user": ["GET"]}));
    unknown["apiKey"]["tenantId"] = json!(Uuid::new_v4());
    assert_eq!(
        fake.call("POST", "/api/api-key", Some(&unknown))
            .field_codes("apiKey.tenantId"),
        ["[invalid]apiKey.tenantId"]
    );

    // Tenant-scoped requests may call "tenant" endpoints, not "global" ones.
    let minted = mine["key"].as_str().unwrap();
    assert_eq!(
        fake.send("GET", "/api/system/version", Some(minted), &[], None)
            .status,
        200
    );
    let tenant_super = fake.seed_key(SeedKey {
        key: "tenant-super".into(),
        tenant_id: Some(tenant),
        ..SeedKey::default()
    });
    fake.send("GET", "/api/status", Some(&tenant_super.key), &[], None)
        .assert_empty(401);
    fake.send("GET", "/api/theme", Some(&tenant_super.key), &[], None)
        .assert_empty(401);
    fake.send("GET", "/api/theme", Some(&fake.manager), &with, None)
        .assert_empty(401);
    fake.send("GET", "/api/theme", Some(&fake.manager), &[], None)
        .assert_empty(404);
}

#[test]
fn a_manager_acts_only_within_its_own_authority() {
    let fake = Fake::start();
    let limited = "limited-manager";
    fake.seed_key(SeedKey::manager(limited).limited_to(&[("/api/user", &["GET", "POST"])]));
    let within = key_doc("within", json!({"/api/user": ["GET"]}));
    let key = fake
        .send("POST", "/api/api-key", Some(limited), &[], Some(&within))
        .api_key();
    for beyond in [
        key_doc("more-methods", json!({"/api/user": ["GET", "DELETE"]})),
        key_doc("other-endpoint", json!({"/api/group": ["GET"]})),
        json!({"apiKey": {"name": "super"}}),
    ] {
        fake.send("POST", "/api/api-key", Some(limited), &[], Some(&beyond))
            .assert_empty(401);
    }
    // Nor may it turn a key into a super key, or touch one.
    fake.send(
        "PUT",
        &path_of(&key),
        Some(limited),
        &[],
        Some(&json!({"apiKey": {"name": "within"}})),
    )
    .assert_empty(401);
    let strong = fake
        .call(
            "POST",
            "/api/api-key",
            Some(&json!({"apiKey": {"name": "strong"}})),
        )
        .api_key();
    fake.send("GET", &path_of(&strong), Some(limited), &[], None)
        .assert_empty(401);
    fake.send("DELETE", &path_of(&strong), Some(limited), &[], None)
        .assert_empty(401);
    // keyManager cannot be granted through the API.
    let mut escalate = within.clone();
    escalate["apiKey"]["keyManager"] = json!(true);
    escalate["apiKey"]["name"] = json!("escalate");
    let made = fake.call("POST", "/api/api-key", Some(&escalate)).api_key();
    assert_eq!(made["keyManager"], json!(false));
}

#[test]
fn a_key_can_be_copied_from_a_source_key() {
    let fake = Fake::start();
    let source = create(&fake, "source");
    let copy = fake
        .call(
            "POST",
            "/api/api-key",
            Some(&json!({"sourceKeyId": source["id"], "apiKey": {"name": "copy"}})),
        )
        .api_key();
    assert_eq!(copy["permissions"], source["permissions"]);
    assert_ne!(copy["key"], source["key"]);
    assert_ne!(copy["id"], source["id"]);
    let manager_id = fake.keys().into_iter().find(|k| k.key_manager).unwrap().id;
    let answer = fake.call(
        "POST",
        "/api/api-key",
        Some(&json!({"sourceKeyId": manager_id, "apiKey": {"name": "copy-manager"}})),
    );
    assert_eq!(answer.field_codes("sourceKeyId"), ["[invalid]sourceKeyId"]);
}

#[test]
fn validation_errors_use_the_errors_document() {
    let fake = Fake::start();
    let raw = common::raw_request(
        fake.addr().port(),
        "POST",
        "/api/api-key",
        &[
            ("Authorization", &fake.manager),
            ("Content-Type", "application/json"),
        ],
        Some(b"{not json"),
    )
    .unwrap();
    assert_eq!(raw.general_codes(), ["[invalidJSON]"]);
    assert!(
        raw.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let wrong_type = json!({"apiKey": {"name": 7}});
    assert_eq!(
        fake.call("POST", "/api/api-key", Some(&wrong_type))
            .general_codes(),
        ["[invalidJSON]"]
    );
    let unknown_field =
        json!({"apiKey": {"name": "x", "description": "lives in metaData.attributes"}});
    assert_eq!(
        fake.call("POST", "/api/api-key", Some(&unknown_field))
            .general_codes(),
        ["[invalidJSON]"]
    );
    assert_eq!(
        fake.call("POST", "/api/api-key", Some(&json!({})))
            .field_codes("apiKey"),
        ["[missing]apiKey"]
    );
    let bad_endpoint = key_doc(
        "bad",
        json!({"/api/no-such-thing": ["GET"], "/api/user": ["FETCH"]}),
    );
    let answer = fake.call("POST", "/api/api-key", Some(&bad_endpoint));
    assert_eq!(
        answer.field_codes("apiKey.permissions.endpoints"),
        [
            "[invalid]apiKey.permissions.endpoints",
            "[invalid]apiKey.permissions.endpoints"
        ]
    );
    let form = common::raw_request(
        fake.addr().port(),
        "POST",
        "/api/api-key",
        &[
            ("Authorization", &fake.manager),
            ("Content-Type", "text/plain"),
        ],
        Some(b"{}"),
    )
    .unwrap();
    assert_eq!(form.general_codes(), ["[InvalidContentType]"]);
    assert!(
        fake.keys().iter().all(|k| k.key_manager),
        "nothing was created"
    );
}

#[test]
fn status_answers_anonymously_and_with_a_key() {
    let fake = Fake::start();
    let anonymous = fake.send("GET", "/api/status", None, &[], None);
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.json(), json!({"status": "ok"}));
    let keyed = fake.call("GET", "/api/status", None);
    assert_eq!(keyed.json()["version"], json!("1.69.0"));
    fake.send("GET", "/api/status", Some("wrong"), &[], None)
        .assert_empty(401);
    let limited = fake.seed_key(SeedKey {
        key: "user-reader".into(),
        endpoints: Some([("/api/user".to_string(), ["GET".to_string()].into())].into()),
        ..SeedKey::default()
    });
    fake.send("GET", "/api/status", Some(&limited.key), &[], None)
        .assert_empty(401);
    fake.send("POST", "/api/status", None, &[], None)
        .assert_empty(405);
}
