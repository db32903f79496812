//! Sending the right key: a reqwest helper ([`SendWithApiKey`]) and a tower
//! layer for tower-based clients ([`AddApiKeyLayer`]).
//!
//! Both take the key from [`ConsumerKeys`] at each request and mark the header
//! value sensitive. On a 401 they make [`ConsumerKeys`] re-read the store
//! (single-flight, at most once per 10 s); the reqwest helper then retries an
//! idempotent request with the new key, and with the key it replaced if that
//! changed within the fallback window, each once. Tower clients get the same
//! retry with the new key from [`RetryUnauthorized`] in a
//! `tower::retry::RetryLayer` outside the layer (their bodies must be `Clone`).
//!
//! # Examples
//!
//! ```no_run
//! # async fn call() -> Result<(), Box<dyn std::error::Error>> {
//! use keyplan_runtime::ConsumerKeys;
//! use keyplan_runtime::client::SendWithApiKey as _;
//!
//! let keys = ConsumerKeys::from_env().await?;   // KEYPLAN_CONSUMER=gateway ...
//! let http = reqwest::Client::new();
//! let products = http
//!     .get("http://product-catalog.internal/products")
//!     .send_with_api_key(&keys, "product-catalog")
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::consumer::ConsumerKeys;
use crate::error::Error;
use crate::secret::ApiKey;
use crate::source::BoxFuture;

/// The header that carries the key unless told otherwise.
pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// Why a request sent with a key failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No key for the service (see [`Error::NoKey`]).
    #[error(transparent)]
    Key(#[from] Error),
    /// The key cannot be a header value (not visible ASCII).
    #[error("the key for `{0}` cannot be sent in a header")]
    InvalidKey(String),
    /// The request could not be built or sent.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// The key as a header value, marked sensitive.
fn header_value(key: &ApiKey, service: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(key.expose())
        .map_err(|_| ClientError::InvalidKey(service.to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Whether a request may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends a reqwest request with the consumer's key for a service.
pub trait SendWithApiKey {
    /// Sends the request with the key for `service` in `x-api-key`.
    ///
    /// On a 401: one refresh of `keys`, then, for an idempotent request whose
    /// body can be cloned, a retry with the new key and one with the key it
    /// replaced (within the fallback window). The last answer is returned,
    /// a 401 included.
    ///
    /// # Errors
    /// No key for `service`, or reqwest's error.
    fn send_with_api_key(
        self,
        keys: &ConsumerKeys,
        service: &str,
    ) -> impl Future<Output = Result<reqwest::Response, ClientError>> + Send;

    /// As [`SendWithApiKey::send_with_api_key`], with the key in `header`.
    ///
    /// # Errors
    /// As [`SendWithApiKey::send_with_api_key`].
    fn send_with_api_key_in(
        self,
        keys: &ConsumerKeys,
        service: &str,
        header: HeaderName,
    ) -> impl Future<Output = Result<reqwest::Response, ClientError>> + Send;
}

impl SendWithApiKey for reqwest::RequestBuilder {
    fn send_with_api_key(
        self,
        keys: &ConsumerKeys,
        service: &str,
    ) -> impl Future<Output = Result<reqwest::Response, ClientError>> + Send {
        self.send_with_api_key_in(keys, service, DEFAULT_HEADER)
    }

    fn send_with_api_key_in(
        self,
        keys: &ConsumerKeys,
        service: &str,
        header: HeaderName,
    ) -> impl Future<Output = Result<reqwest::Response, ClientError>> + Send {
        let keys = keys.clone();
        let service = service.to_owned();
        async move {
            let (client, request) = self.build_split();
            let mut request = request?;
            let key = keys.key_for(&service)?;
            let template = if is_idempotent(request.method()) {
                request.try_clone()
            } else {
                None
            };
            request
                .headers_mut()
                .insert(header.clone(), header_value(&key, &service)?);
            let mut response = client.execute(request).await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            // Refresh even when the request cannot be retried: the next one gets the new key.
            let candidates = keys.after_unauthorized(&service, &key).await;
            let Some(template) = template else {
                return Ok(response);
            };
            for candidate in candidates {
                let Some(mut retry) = template.try_clone() else {
                    break;
                };
                retry
                    .headers_mut()
                    .insert(header.clone(), header_value(&candidate, &service)?);
                response = client.execute(retry).await?;
                if response.status() != StatusCode::UNAUTHORIZED {
                    break;
                }
            }
            Ok(response)
        }
    }
}

/// Adds the consumer's key for one service to every request of a tower client.
///
/// On a 401 the response is returned as it is, after [`ConsumerKeys`] has
/// re-read the store, so the next request carries the new key (a tower
/// request body cannot in general be sent twice; wrap the client in a retry
/// layer if your bodies can).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
/// use keyplan_runtime::{ConsumerKeys, client::AddApiKeyLayer};
/// use tower::{ServiceBuilder, ServiceExt as _, service_fn};
/// use http::{Request, Response};
///
/// # let store = keyplan_runtime::source::MemoryStore::default();
/// # store.put("/keyplan/dev/consumers/gateway/keys/catalog", "gateway-key-0123456789");
/// let keys = ConsumerKeys::builder("gateway").store(store).environment("dev").build().await?;
/// let client = ServiceBuilder::new()
///     .layer(AddApiKeyLayer::new(keys, "catalog"))
///     .service(service_fn(|request: Request<String>| async move {
///         assert!(request.headers()["x-api-key"].is_sensitive());
///         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
///     }));
/// client.oneshot(Request::new(String::new())).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AddApiKeyLayer {
    keys: ConsumerKeys,
    service: String,
    header: HeaderName,
}

impl AddApiKeyLayer {
    /// Adds the key for `service` in `x-api-key`.
    pub fn new(keys: ConsumerKeys, service: impl Into<String>) -> Self {
        Self {
            keys,
            service: service.into(),
            header: DEFAULT_HEADER,
        }
    }

    /// Puts the key in `header` instead.
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }
}

impl<S> Layer<S> for AddApiKeyLayer {
    type Service = AddApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddApiKey {
            inner,
            keys: self.keys.clone(),
            service: self.service.clone(),
            header: self.header.clone(),
        }
    }
}

/// A tower client service that adds the consumer's key; see [`AddApiKeyLayer`].
#[derive(Clone, Debug)]
pub struct AddApiKey<S> {
    inner: S,
    keys: ConsumerKeys,
    service: String,
    header: HeaderName,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AddApiKey<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Response<ResBody>, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let key = match self
            .keys
            .key_for(&self.service)
            .map_err(ClientError::from)
            .and_then(|key| header_value(&key, &self.service).map(|value| (key, value)))
        {
            Ok((key, value)) => {
                request.headers_mut().insert(self.header.clone(), value);
                key
            }
            Err(error) => return Box::pin(async move { Err(error.into()) }),
        };
        let future = self.inner.call(request);
        let keys = self.keys.clone();
        let service = self.service.clone();
        Box::pin(async move {
            let response = future.await.map_err(Into::into)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                keys.after_unauthorized(&service, &key).await;
            }
            Ok(response)
        })
    }
}

/// A [`tower::retry::Policy`] for tower clients: after a 401 on an
/// idempotent request, send it once more. Put it outside
/// [`AddApiKeyLayer`], which has refreshed the keys by the time the 401
/// comes back, so the retry carries the new key. The request body must be
/// `Clone` to be sent twice; other requests are never retried.
///
/// ```
/// # #[cfg(feature = "server")]
/// # async fn call(keys: keyplan_runtime::ConsumerKeys) {
/// use keyplan_runtime::client::{AddApiKeyLayer, RetryUnauthorized};
///
/// let transport = tower::service_fn(|_: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let client = tower::ServiceBuilder::new()
///     .layer(tower::retry::RetryLayer::new(RetryUnauthorized::once()))
///     .layer(AddApiKeyLayer::new(keys, "product-catalog"))
///     .service(transport);
/// # let _ = client;
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RetryUnauthorized {
    remaining: usize,
}

impl RetryUnauthorized {
    /// One retry per request.
    pub fn once() -> Self {
        Self { remaining: 1 }
    }
}

impl<B: Clone, R, E> tower::retry::Policy<Request<B>, Response<R>, E> for RetryUnauthorized {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response)
                if response.status() == StatusCode::UNAUTHORIZED
                    && self.remaining > 0
                    && is_idempotent(request.method()) =>
            {
                self.remaining -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        if !is_idempotent(request.method()) {
            return None;
        }
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    }
}
