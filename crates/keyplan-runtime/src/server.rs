//! A tower middleware that lets a request through only with an accepted key.
//!
//! [`RequireApiKeyLayer`] wraps a service (an axum `Router`, a tonic server,
//! any `tower::Service` over `http::Request`) in [`RequireApiKey`]:
//!
//! - the key header (default `x-api-key`) is marked sensitive, so tracing
//!   layers and `Debug` do not print it;
//! - with an accepted key, the [`Caller`] is put into the request extensions
//!   and the inner service is called;
//! - otherwise the inner service is **never** called: the answer is a 401
//!   (a 503 while the key set is unavailable, which is not the caller's
//!   fault) with a small JSON body such as `{"error":"invalid_api_key"}`;
//! - a well-formed key that matches nothing makes the [`KeyRing`] re-read
//!   the store once (at most once per 10 s, single-flight) before refusing.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyplan_runtime::Error> {
//! use axum::{Extension, Router, routing::get, body::Body, http::{Request, StatusCode}};
//! use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, KeyState, Layout, digest};
//! use keyplan_runtime::{Caller, KeyRing, server::RequireApiKeyLayer};
//! use tower::ServiceExt as _;
//!
//! # let store = keyplan_runtime::source::MemoryStore::default();
//! # let now = jiff::Timestamp::now();
//! # let doc = AcceptsDocument::new(vec![AcceptedKey {
//! #     id: "k1".into(), generation: 1, sha256: digest(b"gateway-key-0123456789"),
//! #     state: KeyState::Current, due: now, staged: now, until: None,
//! # }]);
//! # store.put(Layout::new("/keyplan", "dev").accepts("catalog", "gateway"), doc.to_json().unwrap());
//! let ring = KeyRing::builder("catalog").store(store).environment("dev").build().await?;
//! let app = Router::new()
//!     .route("/products", get(|Extension(caller): Extension<Caller>| async move {
//!         format!("hello {}", caller.consumer)
//!     }))
//!     .layer(RequireApiKeyLayer::new(ring));
//!
//! let with_key = Request::get("/products").header("x-api-key", "gateway-key-0123456789")
//!     .body(Body::empty()).unwrap();
//! assert_eq!(app.clone().oneshot(with_key).await.unwrap().status(), StatusCode::OK);
//!
//! let without = Request::get("/products").body(Body::empty()).unwrap();
//! assert_eq!(app.oneshot(without).await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use zeroize::Zeroizing;

use crate::accepted::{Caller, Rejection, presented_key};
use crate::keyring::KeyRing;
use crate::source::BoxFuture;

/// The header that carries the key unless told otherwise.
pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// Applies [`RequireApiKey`] to a service.
#[derive(Clone, Debug)]
pub struct RequireApiKeyLayer {
    ring: KeyRing,
    header: HeaderName,
}

impl RequireApiKeyLayer {
    /// Checks the `x-api-key` header against `ring`.
    pub fn new(ring: KeyRing) -> Self {
        Self {
            ring,
            header: DEFAULT_HEADER,
        }
    }

    /// Reads the key from `header` instead.
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }
}

impl<S> Layer<S> for RequireApiKeyLayer {
    type Service = RequireApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKey {
            inner,
            ring: self.ring.clone(),
            header: self.header.clone(),
        }
    }
}

/// A service that calls `S` only for requests with an accepted key.
#[derive(Clone, Debug)]
pub struct RequireApiKey<S> {
    inner: S,
    ring: KeyRing,
    header: HeaderName,
}

impl<S> RequireApiKey<S> {
    /// Wraps `inner`, checking `x-api-key` against `ring`.
    pub fn new(inner: S, ring: KeyRing) -> Self {
        RequireApiKeyLayer::new(ring).layer(inner)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireApiKey<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<&'static str>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let header::Entry::Occupied(mut entry) = request.headers_mut().entry(&self.header) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
        let seen = self.ring.reads_completed();
        let values = request.headers().get_all(&self.header);
        let verdict = match presented_key(values.iter().map(HeaderValue::as_bytes)) {
            Err(rejection) => Verdict::Now(Err(rejection)),
            Ok(key) => match self.ring.check_key_at(key, jiff::Timestamp::now()) {
                Err(Rejection::Unknown) => {
                    // Re-read the store once and check again, off the fast path.
                    let key = Zeroizing::new(key.to_vec());
                    let ring = self.ring.clone();
                    Verdict::Later(Box::pin(async move {
                        ring.recheck_after_miss(&key, seen).await
                    }))
                }
                other => Verdict::Now(other),
            },
        };
        match verdict {
            Verdict::Now(result) => {
                self.ring.record(&result);
                match result {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                        ResponseFuture {
                            state: State::Calling {
                                future: self.inner.call(request),
                            },
                        }
                    }
                    Err(rejection) => ResponseFuture {
                        state: State::Refused {
                            rejection: Some(rejection),
                        },
                    },
                }
            }
            Verdict::Later(check) => {
                // Take the service that was made ready, leave a clone in its place.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Checking {
                        check,
                        ring: Some(self.ring.clone()),
                        inner: Some(ready),
                        request: Some(request),
                    },
                }
            }
        }
    }
}

enum Verdict {
    Now(Result<Caller, Rejection>),
    Later(BoxFuture<'static, Result<Caller, Rejection>>),
}

pin_project! {
    /// The response future of [`RequireApiKey`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Checking {
            check: BoxFuture<'static, Result<Caller, Rejection>>,
            ring: Option<KeyRing>,
            inner: Option<S>,
            request: Option<Request<ReqBody>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Refused {
            rejection: Option<Rejection>,
        },
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<&'static str>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking {
                    check,
                    ring,
                    inner,
                    request,
                } => {
                    let result = ready!(check.as_mut().poll(cx));
                    if let Some(ring) = ring.take() {
                        ring.record(&result);
                    }
                    match result {
                        Ok(caller) => {
                            let mut request = request.take().expect("polled after completion");
                            let mut inner = inner.take().expect("polled after completion");
                            request.extensions_mut().insert(caller);
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(rejection) => this.state.set(State::Refused {
                            rejection: Some(rejection),
                        }),
                    }
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Refused { rejection } => {
                    let rejection = rejection.take().expect("polled after completion");
                    return Poll::Ready(Ok(refusal(rejection)));
                }
            }
        }
    }
}

/// The answer to a refused request: 401 (503 while the key set is
/// unavailable) and a small JSON body that says why, never which key.
pub fn refusal<B: From<&'static str>>(rejection: Rejection) -> Response<B> {
    let (status, body) = match rejection {
        Rejection::Missing => (StatusCode::UNAUTHORIZED, r#"{"error":"missing_api_key"}"#),
        Rejection::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"api_keys_unavailable"}"#,
        ),
        Rejection::Repeated | Rejection::TooLong | Rejection::Malformed => {
            (StatusCode::UNAUTHORIZED, r#"{"error":"malformed_api_key"}"#)
        }
        _ => (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_api_key"}"#),
    };
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
