//! A fake FusionAuth that speaks the API Key API as FusionAuth 1.69 does, for
//! tests that cannot run the real server.
//!
//! It keeps everything in memory, records every request (with
//! `Authorization` and key values redacted) and can misbehave on demand
//! ([`Fault`]). `README.md` beside this crate lists, point by point, where it
//! may differ from FusionAuth and which behaviour is documented or inferred.
//!
//! # Examples
//!
//! ```
//! use fake_fusionauth::{Fault, FakeFusionAuth, Op};
//!
//! let fake = FakeFusionAuth::start_in_background();
//! fake.seed_manager_key("manager-key-for-tests", None);
//! fake.inject_times(Fault::Status { op: Op::Create, status: 503 }, 1);
//! assert!(fake.url().starts_with("http://127.0.0.1:"));
//! assert!(fake.keys().iter().any(|k| k.key_manager));
//! ```
//!
//! Outside `/api` the fake answers inspection requests, so a test in another
//! process (or language) can drive it too: `GET /_fake/keys`,
//! `GET|DELETE /_fake/requests`, `GET|POST|DELETE /_fake/faults`,
//! `POST /_fake/keys` (seed), `GET|POST /_fake/tenants`, `GET|POST /_fake/clock`.

mod api;
mod conn;
pub mod endpoints;
mod inspect;
mod model;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

pub use api::{MAX_LEN, VERSION};
pub use model::{ActiveFault, Exchange, Fault, KeyRecord, Op, Permissions, SeedKey};

use api::{Outcome, Reply, Request};
use conn::{Cut, CuttableListener};
use model::{Clock, State};

/// The request log keeps at most this many exchanges (oldest dropped first),
/// so a long-running binary does not grow without bound.
const LOG_LIMIT: usize = 100_000;

/// Largest request body read; FusionAuth's API-key documents are tiny.
const BODY_LIMIT: usize = 1 << 20;

pub(crate) struct Shared {
    state: Mutex<State>,
    default_tenant: Uuid,
    stderr_log: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake FusionAuth; it stops when dropped.
pub struct FakeFusionAuth {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeFusionAuth {
    /// Starts on a free loopback port, on the current tokio runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> FakeFusionAuth {
        FakeFusionAuth::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port for the fake FusionAuth")
    }

    /// Starts on `addr`, on the current tokio runtime.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<FakeFusionAuth> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let (fake, serve) = FakeFusionAuth::serve(listener)?;
        tokio::spawn(serve);
        Ok(fake)
    }

    /// Starts on a free loopback port, served by a thread of its own: for
    /// tests without a tokio runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound or no runtime can be built.
    pub fn start_in_background() -> FakeFusionAuth {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the fake FusionAuth");
        let (fake, serve) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .expect("bind a loopback port for the fake FusionAuth");
            FakeFusionAuth::serve(listener).expect("the bound address")
        });
        std::thread::Builder::new()
            .name(format!("fake-fusionauth-{}", fake.addr.port()))
            .spawn(move || runtime.block_on(serve))
            .expect("a thread for the fake FusionAuth");
        fake
    }

    fn serve(
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<(FakeFusionAuth, impl Future<Output = ()> + Send + 'static)> {
        let addr = listener.local_addr()?;
        let default_tenant = Uuid::new_v4();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(default_tenant)),
            default_tenant,
            stderr_log: AtomicBool::new(false),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<Cut>();
        let (tx, rx) = oneshot::channel::<()>();
        let serve = async move {
            let _ = axum::serve(CuttableListener(listener), app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        };
        let fake = FakeFusionAuth {
            shared,
            addr,
            shutdown: Some(tx),
        };
        Ok((fake, serve))
    }

    /// `http://127.0.0.1:{port}`, the base URL a FusionAuth client takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Prints one line per `/api` request on stderr (method, path, status;
    /// never a header or a body).
    pub fn log_to_stderr(&self, on: bool) {
        self.shared.stderr_log.store(on, Ordering::Relaxed);
    }

    /// The tenant every FusionAuth instance has.
    pub fn default_tenant(&self) -> Uuid {
        self.shared.default_tenant
    }

    /// Adds a tenant (FusionAuth refuses keys for tenants that do not exist).
    pub fn add_tenant(&self, id: Uuid) {
        self.shared.lock().tenants.insert(id);
    }

    /// Places a key-manager super key, as Kickstart or the admin UI would:
    /// the API cannot create one. `tenant` makes it tenant-scoped.
    pub fn seed_manager_key(&self, key: &str, tenant: Option<Uuid>) -> KeyRecord {
        self.seed_key(SeedKey {
            tenant_id: tenant,
            ..SeedKey::manager(key)
        })
    }

    /// Places any key directly in the store (an empty `key` is generated).
    pub fn seed_key(&self, mut seed: SeedKey) -> KeyRecord {
        if seed.key.is_empty() {
            seed.key = api::generate_key();
        }
        self.shared.lock().seed(seed)
    }

    /// Every key, key values included.
    pub fn keys(&self) -> Vec<KeyRecord> {
        self.shared.lock().keys.values().cloned().collect()
    }

    pub fn key(&self, id: Uuid) -> Option<KeyRecord> {
        self.shared.lock().keys.get(&id).cloned()
    }

    /// Every `/api` request so far, in arrival order, with its answer.
    pub fn requests(&self) -> Vec<Exchange> {
        self.shared.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// Injects a fault that stays until [`FakeFusionAuth::clear_faults`].
    pub fn inject(&self, fault: Fault) {
        self.push_fault(fault, None);
    }

    /// Injects a fault that fires `times` times (e.g. "the next 2 creates").
    pub fn inject_times(&self, fault: Fault, times: u32) {
        self.push_fault(fault, Some(times));
    }

    fn push_fault(&self, fault: Fault, remaining: Option<u32>) {
        self.shared.lock().faults.push(ActiveFault {
            fault,
            remaining,
            hits: 0,
        });
    }

    /// Every injected fault with its remaining count and hits.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.shared.lock().faults.clone()
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The fake's clock, epoch milliseconds.
    pub fn now(&self) -> i64 {
        self.shared.lock().now()
    }

    /// Stops the clock at `epoch_millis` (for expiry tests).
    pub fn set_now(&self, epoch_millis: i64) {
        self.shared.lock().clock = Clock::Fixed(epoch_millis);
    }

    /// Moves the clock (stopped or not) forward.
    pub fn advance(&self, by: Duration) {
        self.shared.lock().clock.advance(by);
    }

    /// Follows the system clock again.
    pub fn use_system_clock(&self) {
        self.shared.lock().clock = Clock::Real { offset: 0 };
    }
}

// Tests keep one fake per test binary in a `static`.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<FakeFusionAuth>();
};

impl Drop for FakeFusionAuth {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    ConnectInfo(cut): ConnectInfo<Cut>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let method = parts.method.as_str();
    let path = parts.uri.path();
    if path == "/_fake" || path.starts_with("/_fake/") {
        return inspect::handle(&shared, method, path, &body);
    }

    let op = api::classify(method, path);
    let latency = shared.lock().fire(|f| match f {
        Fault::Latency { op: o, millis } if o.covers(op) => Some((f.clone(), *millis)),
        _ => None,
    });
    if let Some((_, millis)) = &latency {
        tokio::time::sleep(Duration::from_millis(*millis)).await;
    }

    let headers = &parts.headers;
    let request = Request {
        method,
        path,
        authorization: header_str(headers, header::AUTHORIZATION.as_str()),
        tenant_header: header_str(headers, "x-fusionauth-tenantid"),
        content_type: header_str(headers, header::CONTENT_TYPE.as_str()),
        body: &body,
    };
    let mut state = shared.lock();
    let at = state.now();
    let forced = state.fire(|f| match f {
        Fault::Status { op: o, status } if o.covers(op) => Some((f.clone(), *status)),
        _ => None,
    });
    let mut outcome = match forced {
        Some((fault, status)) => Outcome {
            fault: Some(fault),
            ..forced_reply(status).into()
        },
        None => state.handle(&request),
    };
    if outcome.fault.is_none() {
        outcome.fault = latency.map(|(fault, _)| fault);
    }
    let exchange = record(&mut state, at, &parts, &request, &outcome);
    drop(state);

    if shared.stderr_log.load(Ordering::Relaxed) {
        let status = exchange
            .status
            .map_or_else(|| "dropped".to_string(), |s| s.to_string());
        eprintln!("fake-fusionauth: {method} {path} -> {status}");
    }
    if outcome.drop_connection {
        cut.cut();
    }
    respond(outcome.reply)
}

fn forced_reply(status: u16) -> Reply {
    if status == 500 {
        return Reply::Empty(500);
    }
    Reply::Json(
        status,
        json!({
            "fieldErrors": {},
            "generalErrors": [{
                "code": "[ServiceUnavailable]",
                "message": "The request cannot be completed at this time; retry later."
            }]
        }),
    )
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn record(
    state: &mut State,
    at: i64,
    parts: &axum::http::request::Parts,
    request: &Request<'_>,
    outcome: &Outcome,
) -> Exchange {
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = if name == header::AUTHORIZATION {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_string(), value)
        })
        .collect();
    let (request_json, request_text) = if request.body.is_empty() {
        (None, None)
    } else {
        match serde_json::from_slice::<Value>(request.body) {
            Ok(v) => (Some(api::redact(v)), None),
            Err(_) => (
                None,
                Some(String::from_utf8_lossy(request.body).into_owned()),
            ),
        }
    };
    let (status, content_type, response_json) = match (&outcome.reply, outcome.drop_connection) {
        (_, true) => (None, None, None),
        (Reply::Empty(s), false) => (Some(*s), None, None),
        (Reply::Json(s, v), false) => (
            Some(*s),
            Some(JSON.to_string()),
            Some(api::redact(v.clone())),
        ),
    };
    let exchange = Exchange {
        seq: state.next_seq,
        at,
        method: request.method.to_string(),
        path: request.path.to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        caller_key_id: outcome.caller,
        request_json,
        request_text,
        status,
        response_content_type: content_type,
        response_json,
        fault: outcome.fault.clone(),
    };
    state.next_seq += 1;
    if state.log.len() >= LOG_LIMIT {
        state.log.remove(0);
    }
    state.log.push(exchange.clone());
    exchange
}

const JSON: &str = "application/json;charset=UTF-8";

fn respond(reply: Reply) -> Response {
    match reply {
        Reply::Empty(status) => Response::builder()
            .status(status)
            .body(Body::empty())
            .expect("a valid status"),
        Reply::Json(status, value) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, JSON)
            .body(Body::from(serde_json::to_vec(&value).expect("JSON")))
            .expect("a valid status"),
    }
}
