//! Bodies the proxy passes through: a request body that can be sent again when the first
//! backend refused the connection (it was never read), and a response body that keeps the
//! request counted until its last byte.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The proxy's response body.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A short text body.
pub fn text(s: impl Into<Bytes>) -> ProxyBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

/// A response of `status` with a short text body.
pub fn plain(status: http::StatusCode, s: impl Into<Bytes>) -> http::Response<ProxyBody> {
    let mut r = http::Response::new(text(s));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The incoming request body, held where a retry can take it back: the body moves into the
/// request sent upstream only when that request first reads it, so a request whose
/// connection was refused leaves it in place.
#[derive(Debug, Clone)]
pub struct Replayable {
    slot: Arc<Mutex<Option<Incoming>>>,
}

impl Replayable {
    /// Holds `body`.
    pub fn new(body: Incoming) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// A body for one attempt; `None` once an earlier attempt has read the body.
    pub fn attempt(&self) -> Option<AttemptBody> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.is_some().then(|| AttemptBody {
            slot: self.slot.clone(),
            taken: None,
        })
    }
}

/// One attempt's view of a [`Replayable`] body.
#[derive(Debug)]
pub struct AttemptBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    taken: Option<Incoming>,
}

impl AttemptBody {
    fn with_slot<R>(&self, f: impl FnOnce(Option<&Incoming>) -> R) -> R {
        match &self.taken {
            Some(b) => f(Some(b)),
            None => f(self.slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref()),
        }
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.taken.is_none() {
            let taken = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            match taken {
                Some(b) => self.taken = Some(b),
                // Another attempt read it: this one has nothing to send.
                None => return Poll::Ready(None),
            }
        }
        match self.taken.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.with_slot(|b| b.is_none_or(Body::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        self.with_slot(|b| b.map_or_else(|| SizeHint::with_exact(0), Body::size_hint))
    }
}

/// A response body that holds `guard` until it ends or is dropped.
pub struct Guarded<G> {
    inner: ProxyBody,
    guard: Option<G>,
}

impl<G> Guarded<G> {
    /// `inner`, holding `guard`.
    pub fn new(inner: ProxyBody, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<G: Unpin> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
