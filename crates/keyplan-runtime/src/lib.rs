//! keyplan-runtime: what services and consumers link to use the API keys that
//! `keyplan apply` manages.
//!
//! - **Services** hold a [`KeyRing`]: the digests of the keys they accept,
//!   read from `{prefix}/{env}/services/{service}/accepts` and re-read in the
//!   background. [`server::RequireApiKeyLayer`] checks `x-api-key` in any
//!   tower stack (axum included) and hands the [`Caller`] to the handler.
//! - **Consumers** hold [`ConsumerKeys`]: their keys, read from
//!   `{prefix}/{env}/consumers/{consumer}/keys`. [`client::SendWithApiKey`]
//!   sends a reqwest request with the right key and recovers from a rotation
//!   on a 401; [`client::AddApiKeyLayer`] does the same for tower clients.
//! - [`record`] defines the store layout and the `accepts` format; the CLI
//!   uses the same module, so the writer and every reader agree by construction.
//!
//! # Features
//!
//! | feature  | what it adds |
//! |----------|--------------|
//! | `local`  | [`source::LocalStore`], the directory store (`KEYPLAN_STORE=local:/dir`) |
//! | `ssm`    | [`source::SsmStore`] over an `aws_sdk_ssm::Client`; `from_env()` loads the default AWS configuration (aws-config) |
//! | `server` | [`server::RequireApiKeyLayer`] |
//! | `client` | [`client::SendWithApiKey`] (reqwest) and [`client::AddApiKeyLayer`] |
//!
//! No feature is on by default. Without any, the crate still has the key
//! ring, the refresh and the [`source::Source`] trait for a store of your own.
//!
//! # Failure behaviour
//!
//! - A read of the store that fails keeps the last good set; [`KeyRing::status`]
//!   reports it as [`Freshness::Stale`]. Only after the maximum age (a day by
//!   default) without a good read does a service stop accepting keys, so an
//!   SSM outage does not become an outage of every service.
//! - An `accepts` document with an unknown `v`, or that cannot be parsed,
//!   keeps the last good keys of that consumer and is listed in
//!   [`Status::problems`].
//! - A previous key is accepted until its `until` plus the skew allowance
//!   (a minute by default), never after.
//! - Key values never reach logs, errors or `Debug` output ([`ApiKey`]); the
//!   service side holds only digests and compares them in constant time.
//!
//! # Examples
//!
//! A service, configured from `KEYPLAN_STORE`, `KEYPLAN_PREFIX`, `KEYPLAN_ENV`
//! and `KEYPLAN_SERVICE`:
//!
//! ```no_run
//! # #[cfg(feature = "server")]
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Extension, Router, routing::get};
//! use keyplan_runtime::{Caller, KeyRing, server::RequireApiKeyLayer};
//!
//! let ring = KeyRing::from_env().await?;
//! let app: Router = Router::new()
//!     .route("/products", get(|Extension(caller): Extension<Caller>| async move {
//!         format!("products for {}", caller.consumer)
//!     }))
//!     .layer(RequireApiKeyLayer::new(ring));
//! # Ok(()) }
//! ```
//!
//! Checking a key by hand, with a store of your own (here a fixed one):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyplan_runtime::Error> {
//! use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, KeyState, Layout, digest};
//! use keyplan_runtime::source::{BoxFuture, Parameter, Source, SourceError};
//! use keyplan_runtime::{KeyRing, Rejection};
//!
//! #[derive(Debug)]
//! struct Fixed(String);
//! impl Source for Fixed {
//!     fn read_path<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
//!         let name = format!("{path}/gateway");
//!         Box::pin(async move { Ok(vec![Parameter { name, value: self.0.clone().into() }]) })
//!     }
//! }
//!
//! let now = jiff::Timestamp::now();
//! let doc = AcceptsDocument::new(vec![AcceptedKey {
//!     id: "k7".into(), generation: 7, sha256: digest(b"gateway-key-0123456789"),
//!     state: KeyState::Pending, due: now, staged: now, until: None,
//! }]);
//! let ring = KeyRing::builder("catalog")
//!     .store(Fixed(doc.to_json().unwrap()))
//!     .environment("prod")
//!     .build()
//!     .await?;
//! let caller = ring.authenticate([&b"gateway-key-0123456789"[..]]).await.unwrap();
//! assert_eq!((caller.consumer.as_str(), caller.state), ("gateway", KeyState::Pending));
//! assert_eq!(ring.check([&b"gateway-key-0123456789"[..]; 2]), Err(Rejection::Repeated));
//! # Ok(()) }
//! ```

mod accepted;
pub mod config;
mod consumer;
mod error;
mod keyring;
pub mod metrics;
pub mod record;
mod refresh;
mod secret;
pub mod source;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod server;

pub use accepted::{
    AcceptedSet, Caller, EdgeProblem, KeyInfo, MAX_HEADER_BYTES, MIN_KEY_BYTES, Rejection,
    presented_key,
};
pub use consumer::{ConsumerKeys, ConsumerKeysBuilder, DEFAULT_FALLBACK_WINDOW};
pub use error::Error;
pub use keyring::{
    DEFAULT_JITTER, DEFAULT_MAX_AGE, DEFAULT_MISS_REFRESH, DEFAULT_REFRESH, DEFAULT_SKEW,
    Freshness, KeyRing, KeyRingBuilder, Status,
};
pub use secret::ApiKey;
