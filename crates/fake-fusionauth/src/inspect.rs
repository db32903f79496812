//! `/_fake/...`: the library's inspection and control calls over HTTP, for
//! tests that drive the binary or run in another language. Outside `/api`, so
//! nothing here can be mistaken for FusionAuth, and never logged.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::model::{ActiveFault, Clock, Fault, SeedKey};
use crate::{Shared, api};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InjectRequest {
    fault: Fault,
    /// Absent: until cleared.
    times: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct TenantRequest {
    id: Option<Uuid>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct ClockRequest {
    /// Stop the clock here (epoch milliseconds).
    now: Option<i64>,
    advance_millis: Option<u64>,
    /// Follow the system clock again.
    system: bool,
}

pub(crate) fn handle(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Response {
    match answer(shared, method, path, body) {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err((status, message)) => json_response(status, &json!({ "error": message })),
    }
}

type Failure = (StatusCode, String);

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

fn parse_required<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

fn answer(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Result<Value, Failure> {
    let mut state = shared.lock();
    match (method, path) {
        ("GET", "/_fake/keys") => Ok(json!({ "keys": state.keys.values().collect::<Vec<_>>() })),
        ("POST", "/_fake/keys") => {
            let mut seed: SeedKey = parse_required(body)?;
            if seed.key.is_empty() {
                seed.key = api::generate_key();
            }
            if state.keys.values().any(|k| k.key == seed.key) {
                return Err((StatusCode::CONFLICT, "a key with this value exists".into()));
            }
            Ok(json!({ "key": state.seed(seed) }))
        }
        ("GET", "/_fake/requests") => Ok(json!({ "requests": state.log })),
        ("DELETE", "/_fake/requests") => {
            state.log.clear();
            Ok(json!({}))
        }
        ("GET", "/_fake/faults") => Ok(json!({ "faults": state.faults })),
        ("POST", "/_fake/faults") => {
            let inject: InjectRequest = parse_required(body)?;
            state.faults.push(ActiveFault {
                fault: inject.fault,
                remaining: inject.times,
                hits: 0,
            });
            Ok(json!({ "faults": state.faults }))
        }
        ("DELETE", "/_fake/faults") => {
            state.faults.clear();
            Ok(json!({}))
        }
        ("GET", "/_fake/tenants") => Ok(json!({
            "default": shared.default_tenant,
            "tenants": state.tenants,
        })),
        ("POST", "/_fake/tenants") => {
            let request: TenantRequest = parse(body)?;
            let id = request.id.unwrap_or_else(Uuid::new_v4);
            state.tenants.insert(id);
            Ok(json!({ "id": id }))
        }
        ("GET", "/_fake/clock") => Ok(json!({ "now": state.now() })),
        ("POST", "/_fake/clock") => {
            let request: ClockRequest = parse(body)?;
            if request.system {
                state.clock = Clock::Real { offset: 0 };
            }
            if let Some(now) = request.now {
                state.clock = Clock::Fixed(now);
            }
            if let Some(ms) = request.advance_millis {
                state.clock.advance(Duration::from_millis(ms));
            }
            Ok(json!({ "now": state.now() }))
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no inspection call {method} {path}"),
        )),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("JSON")))
        .expect("a valid response")
}
