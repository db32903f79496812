//! The tower layer: the inner service is never reached on failure, the caller
//! is in the extensions on success, and unknown keys refresh at most once.
#![cfg(feature = "server")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use common::{K1, K2, R1, accepted, current, document};
use jiff::{SignedDuration, Timestamp};
use keyplan_runtime::metrics::UsageCounters;
use keyplan_runtime::record::{KeyState, Layout};
use keyplan_runtime::server::RequireApiKeyLayer;
use keyplan_runtime::source::MemoryStore;
use keyplan_runtime::{Caller, KeyRing};
use tower::{ServiceBuilder, ServiceExt as _, service_fn};

fn layout() -> Layout {
    Layout::new("/keyplan", "test")
}

async fn ring(store: &MemoryStore) -> KeyRing {
    KeyRing::builder("catalog")
        .store(store.clone())
        .environment("test")
        .build()
        .await
        .unwrap()
}

/// A service that counts its calls and answers with the caller's name.
fn counting(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send {
    service_fn(move |request: Request<Body>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let caller = request.extensions().get::<Caller>().cloned();
            let sensitive = request
                .headers()
                .get("x-api-key")
                .is_some_and(HeaderValue::is_sensitive);
            let body = match caller {
                Some(c) => format!(
                    "{} gen={} {} sensitive={sensitive}",
                    c.consumer, c.generation, c.state
                ),
                None => "no caller".to_owned(),
            };
            Ok(Response::new(Body::from(body)))
        }
    })
}

async fn text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn request(keys: &[&[u8]]) -> Request<Body> {
    let mut builder = Request::get("/products");
    for key in keys {
        builder = builder.header("x-api-key", HeaderValue::from_bytes(key).unwrap());
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn inner_service_is_never_reached_on_failure() {
    let store = MemoryStore::default();
    let until = Timestamp::now() - SignedDuration::from_hours(1);
    store.put(
        layout().accepts("catalog", "gateway"),
        document(vec![
            accepted(K2, 2, KeyState::Current, None),
            accepted(K1, 1, KeyState::Previous, Some(until)),
        ]),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(ring(&store).await))
        .service(counting(calls.clone()));

    let long = vec![b'a'; 257];
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![], "missing_api_key"),
        (vec![b""], "malformed_api_key"),
        (vec![b"short"], "malformed_api_key"),
        (
            vec!["clé-non-ascii-0123456789".as_bytes()],
            "malformed_api_key",
        ),
        (vec![&long], "malformed_api_key"),
        (vec![K2.as_bytes(), K2.as_bytes()], "malformed_api_key"),
        (vec![b"well-formed-but-unknown-key-0123"], "invalid_api_key"),
        (vec![K1.as_bytes()], "invalid_api_key"),
    ];
    for (keys, error) in cases {
        let response = service.clone().oneshot(request(&keys)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{keys:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(text(response).await, format!(r#"{{"error":"{error}"}}"#));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the inner service was called"
    );

    let response = service
        .clone()
        .oneshot(request(&[K2.as_bytes()]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "gateway gen=2 current sensitive=true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn caller_reaches_an_axum_handler_and_a_custom_header_works() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "reporting"), current(R1));
    let app = Router::new()
        .route(
            "/products",
            get(|Extension(caller): Extension<Caller>| async move { caller.consumer }),
        )
        .layer(
            RequireApiKeyLayer::new(ring(&store).await)
                .header_name("x-catalog-key".parse().unwrap()),
        );
    let ok = Request::get("/products")
        .header("x-catalog-key", R1)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(ok).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "reporting");
    // The default header is not read when another is configured.
    let response = app.oneshot(request(&[R1.as_bytes()])).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unknown_key_refreshes_once_then_is_accepted_if_it_was_added() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K1));
    let calls = Arc::new(AtomicUsize::new(0));
    let ring = ring(&store).await;
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(ring.clone()))
        .service(counting(calls.clone()));
    assert_eq!(store.reads(), 1);

    // A stage adds K2 as pending: the first caller with K2 triggers a read.
    store.put(
        layout().accepts("catalog", "gateway"),
        document(vec![
            accepted(K1, 1, KeyState::Current, None),
            accepted(K2, 2, KeyState::Pending, None),
        ]),
    );
    let response = service
        .clone()
        .oneshot(request(&[K2.as_bytes()]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "gateway gen=2 pending sensitive=true");
    assert_eq!(store.reads(), 2);

    // Unknown keys within 10 s do not read again: no amplification.
    for _ in 0..5 {
        let response = service
            .clone()
            .oneshot(request(&[b"attacker-guess-0123456789abcdef"]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(store.reads(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn unknown_keys_refresh_at_most_once_per_ten_seconds() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K1));
    let ring = KeyRing::builder("catalog")
        .store(store.clone())
        .environment("test")
        .refresh_every(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let unknown: &[u8] = b"unknown-key-0123456789abcdef";
    assert!(ring.authenticate([unknown]).await.is_err());
    assert!(ring.authenticate([unknown]).await.is_err());
    assert_eq!(
        store.reads(),
        2,
        "one read at build, one for the first miss"
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(ring.authenticate([unknown]).await.is_err());
    assert_eq!(store.reads(), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(ring.authenticate([unknown]).await.is_err());
    assert_eq!(store.reads(), 3);
    // A malformed key never causes a read.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(ring.authenticate([&b"short"[..]]).await.is_err());
    assert_eq!(store.reads(), 3);
}

#[tokio::test]
async fn metrics_count_by_consumer_and_state_and_status_shows_key_ages() {
    let store = MemoryStore::default();
    let until = Timestamp::now() + SignedDuration::from_hours(24);
    store.put(
        layout().accepts("catalog", "gateway"),
        document(vec![
            accepted(K2, 2, KeyState::Current, None),
            accepted(K1, 1, KeyState::Previous, Some(until)),
        ]),
    );
    let counters = Arc::new(UsageCounters::default());
    let ring = KeyRing::builder("catalog")
        .store(store.clone())
        .environment("test")
        .metrics(counters.clone())
        .build()
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(ring.clone()))
        .service(counting(Arc::new(AtomicUsize::new(0))));
    for key in [K2, K2, K1] {
        let response = service
            .clone()
            .oneshot(request(&[key.as_bytes()]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    service.clone().oneshot(request(&[])).await.unwrap();
    let seen = counters.snapshot();
    let rows: Vec<(&str, u64, KeyState, u64)> = seen
        .keys
        .iter()
        .map(|k| (k.consumer.as_str(), k.generation, k.state, k.count))
        .collect();
    assert_eq!(
        rows,
        [
            ("gateway", 1, KeyState::Previous, 1),
            ("gateway", 2, KeyState::Current, 2)
        ]
    );
    assert_eq!(seen.rejections["missing"], 1);
    assert_eq!(seen.refreshes_ok, 1);

    let status = ring.status();
    assert_eq!(status.keys.len(), 2);
    assert!(status.keys.iter().all(|k| k.age >= SignedDuration::ZERO));
    let previous = status
        .keys
        .iter()
        .find(|k| k.state == KeyState::Previous)
        .unwrap();
    assert_eq!(previous.until, Some(until));
}
