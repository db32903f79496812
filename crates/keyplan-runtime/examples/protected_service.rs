//! An axum service protected by keyplan's layer, reading a local store.
//!
//! With `KEYPLAN_STORE`, `KEYPLAN_ENV` and `KEYPLAN_SERVICE` set (for example
//! after `keyplan apply` with a local store):
//!
//! ```sh
//! KEYPLAN_STORE=local:$PWD/.keyplan KEYPLAN_ENV=dev KEYPLAN_SERVICE=product-catalog \
//!   cargo run -p keyplan-runtime --features server,local --example protected_service
//! ```
//!
//! Without them it writes a demo store with one key into a temporary
//! directory and prints the `curl` commands to try.

use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Json, Router};
use keyplan_runtime::metrics::UsageCounters;
use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, KeyState, Layout, digest};
use keyplan_runtime::server::RequireApiKeyLayer;
use keyplan_runtime::{Caller, KeyRing};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _demo_dir;
    let builder = if std::env::var_os("KEYPLAN_STORE").is_some() {
        KeyRing::builder_from_env().await?
    } else {
        let dir = tempfile::tempdir()?;
        let key = "demo-gateway-key-0123456789abcdef";
        write_demo_store(dir.path(), key)?;
        println!("demo store in {}", dir.path().display());
        println!("try: curl -i -H 'x-api-key: {key}' http://127.0.0.1:3000/products");
        println!(" and: curl -i http://127.0.0.1:3000/products");
        _demo_dir = dir;
        KeyRing::builder("product-catalog")
            .local(_demo_dir.path())
            .environment("dev")
    };
    let counters = std::sync::Arc::new(UsageCounters::default());
    let ring = builder
        .refresh_every(Duration::from_secs(10))
        .metrics(counters.clone())
        .build()
        .await?;

    let status_ring = ring.clone();
    let app = Router::new()
        .route(
            "/products",
            get(|Extension(caller): Extension<Caller>| async move {
                format!(
                    "products for {} (key generation {}, {})\n",
                    caller.consumer, caller.generation, caller.state
                )
            }),
        )
        .layer(RequireApiKeyLayer::new(ring))
        // Outside the layer: an operator's view, with no key values in it.
        .route(
            "/keyplan/status",
            get(move || async move {
                let status = status_ring.status();
                let usage = counters.snapshot();
                Json(serde_json::json!({
                    "freshness": format!("{:?}", status.freshness),
                    "last_error": status.last_error,
                    "keys": status.keys.iter().map(|k| serde_json::json!({
                        "consumer": k.consumer, "generation": k.generation,
                        "state": k.state, "fingerprint": k.fingerprint,
                        "age_seconds": k.age.as_secs(),
                    })).collect::<Vec<_>>(),
                    "usage": usage.keys.iter().map(|u| serde_json::json!({
                        "consumer": u.consumer, "generation": u.generation,
                        "state": u.state, "count": u.count, "last_used": u.last_used,
                    })).collect::<Vec<_>>(),
                    "rejections": usage.rejections,
                }))
            }),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// What `keyplan apply` would write for one edge: product-catalog <- gateway.
fn write_demo_store(dir: &std::path::Path, key: &str) -> std::io::Result<()> {
    let layout = Layout::new("/keyplan", "dev");
    let now = jiff::Timestamp::now();
    let document = AcceptsDocument::new(vec![AcceptedKey {
        id: "demo-1".into(),
        generation: 1,
        sha256: digest(key.as_bytes()),
        state: KeyState::Current,
        due: now,
        staged: now,
        until: None,
    }]);
    let file = dir.join(
        layout
            .accepts("product-catalog", "gateway")
            .trim_start_matches('/'),
    );
    std::fs::create_dir_all(file.parent().expect("a parameter has a parent"))?;
    std::fs::write(file, document.to_json().expect("one key fits"))
}
