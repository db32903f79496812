//! The consumer side against a real service: reqwest through the helper, to
//! an axum server behind the layer, over loopback.
#![cfg(all(feature = "client", feature = "server"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};
use common::{K1, K2, current};
use keyplan_runtime::client::{AddApiKeyLayer, RetryUnauthorized, SendWithApiKey as _};
use keyplan_runtime::record::Layout;
use keyplan_runtime::server::RequireApiKeyLayer;
use keyplan_runtime::source::MemoryStore;
use keyplan_runtime::{Caller, ConsumerKeys, KeyRing};
use tower::ServiceExt as _;

fn layout() -> Layout {
    Layout::new("/keyplan", "test")
}

/// A catalog service on loopback; returns its URL and a count of handled calls.
async fn serve(store: &MemoryStore) -> (String, Arc<AtomicUsize>) {
    let ring = KeyRing::builder("catalog")
        .store(store.clone())
        .environment("test")
        .refresh_every(Duration::from_secs(3600))
        // The service must not re-read on its own in these tests.
        .miss_refresh_every(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let counter2 = handled.clone();
    let app = Router::new()
        .route(
            "/products",
            get(move |Extension(caller): Extension<Caller>| async move {
                counter.fetch_add(1, Ordering::SeqCst);
                caller.consumer
            }),
        )
        .route(
            "/orders",
            post(move || async move {
                counter2.fetch_add(1, Ordering::SeqCst);
                "created"
            }),
        )
        .layer(RequireApiKeyLayer::new(ring));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, handled)
}

async fn consumer(store: &MemoryStore) -> ConsumerKeys {
    ConsumerKeys::builder("gateway")
        .store(store.clone())
        .environment("test")
        .refresh_every(Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_401_refreshes_and_retries_an_idempotent_request_with_the_new_key() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K1));
    store.put(layout().consumer_key("gateway", "catalog"), K1);
    let keys = consumer(&store).await;
    // An `--immediately` rotation: the service accepts only K2 and the
    // consumer's parameter holds K2, but this consumer has not re-read yet.
    store.put(layout().accepts("catalog", "gateway"), current(K2));
    store.put(layout().consumer_key("gateway", "catalog"), K2);
    let (url, handled) = serve(&store).await;
    assert_eq!(keys.key_for("catalog").unwrap().expose(), K1);

    let response = reqwest::Client::new()
        .get(format!("{url}/products"))
        .send_with_api_key(&keys, "catalog")
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "retried with the new key");
    assert_eq!(response.text().await.unwrap(), "gateway");
    assert_eq!(keys.key_for("catalog").unwrap().expose(), K2);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_replaced_key_is_tried_once_when_the_service_lags() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K1));
    store.put(layout().consumer_key("gateway", "catalog"), K1);
    // The service read its accepts before the rotation and does not re-read.
    let (url, handled) = serve(&store).await;
    let keys = consumer(&store).await;
    store.put(layout().consumer_key("gateway", "catalog"), K2);
    keys.refresh_now().await.unwrap();
    assert_eq!(keys.key_for("catalog").unwrap().expose(), K2);

    let http = reqwest::Client::new();
    let response = http
        .get(format!("{url}/products"))
        .send_with_api_key(&keys, "catalog")
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "fell back to the replaced key");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_non_idempotent_request_is_not_retried() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K2));
    store.put(layout().consumer_key("gateway", "catalog"), K1);
    let (url, handled) = serve(&store).await;
    let keys = consumer(&store).await;
    store.put(layout().consumer_key("gateway", "catalog"), K2);

    let response = reqwest::Client::new()
        .post(format!("{url}/orders"))
        .body("{}")
        .send_with_api_key(&keys, "catalog")
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    // ... but the refresh happened, so the next call carries K2.
    assert_eq!(keys.key_for("catalog").unwrap().expose(), K2);
}

#[tokio::test]
async fn the_tower_client_layer_adds_the_key_and_refreshes_on_401() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K2));
    store.put(layout().consumer_key("gateway", "catalog"), K1);
    let keys = consumer(&store).await;
    store.put(layout().consumer_key("gateway", "catalog"), K2);
    let ring = KeyRing::builder("catalog")
        .store(store.clone())
        .environment("test")
        .build()
        .await
        .unwrap();
    // A tower "client" whose transport is the protected service itself.
    let server = tower::ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(ring))
        .service(tower::service_fn(|_: axum::http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(axum::http::Response::new(String::from("ok")))
        }));
    let client = tower::ServiceBuilder::new()
        .layer(AddApiKeyLayer::new(keys.clone(), "catalog"))
        .service(server);
    let first = client
        .clone()
        .oneshot(axum::http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(first.status(), 401);
    let second = client
        .oneshot(axum::http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.into_body(), "ok");
}

#[tokio::test]
async fn the_tower_retry_policy_resends_an_idempotent_request_with_the_new_key() {
    let store = MemoryStore::default();
    store.put(layout().accepts("catalog", "gateway"), current(K2));
    store.put(layout().consumer_key("gateway", "catalog"), K1);
    let keys = consumer(&store).await;
    store.put(layout().consumer_key("gateway", "catalog"), K2);
    let ring = KeyRing::builder("catalog")
        .store(store.clone())
        .environment("test")
        .build()
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let server = tower::ServiceBuilder::new()
        .layer(RequireApiKeyLayer::new(ring))
        .service(tower::service_fn(move |_: axum::http::Request<String>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(String::from("ok")))
            }
        }));
    let client = tower::ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryUnauthorized::once()))
        .layer(AddApiKeyLayer::new(keys.clone(), "catalog"))
        .service(server);
    // GET: the first try with K1 is refused, the keys refresh, the retry with K2 passes.
    let response = client
        .clone()
        .oneshot(axum::http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    // POST is never retried, so a refused POST stays refused and the handler is not reached.
    store.put(layout().consumer_key("gateway", "catalog"), K1);
    keys.refresh_now().await.unwrap();
    let post = axum::http::Request::post("/orders")
        .body(String::new())
        .unwrap();
    let response = client.oneshot(post).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}
