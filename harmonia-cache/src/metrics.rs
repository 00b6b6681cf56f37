//! Prometheus metrics: request counts and latency by route template, bytes and NARs served.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::{Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: requests by `method`, `path` (route template) and `status`.
pub const REQUESTS_TOTAL: &str = "harmonia_http_requests_total";
/// Histogram: time until the response head is ready, in seconds.
pub const REQUEST_DURATION: &str = "harmonia_http_request_duration_seconds";
/// Counter: NAR bytes sent to clients (after compression, if any).
pub const NAR_BYTES_TOTAL: &str = "harmonia_nar_bytes_served_total";
/// Counter: NAR responses whose body was sent completely.
pub const NARS_TOTAL: &str = "harmonia_nars_served_total";

const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Installs the global recorder and starts its upkeep task; returns the handle `/metrics` renders.
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), DURATION_BUCKETS)
        .context("configuring metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    metrics::describe_counter!(REQUESTS_TOTAL, "Total number of HTTP requests");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency until the response head"
    );
    metrics::describe_counter!(NAR_BYTES_TOTAL, metrics::Unit::Bytes, "NAR bytes sent");
    metrics::describe_counter!(NARS_TOTAL, "NARs sent completely");
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// The request counter and latency histogram of one (method, status, route) combination.
struct RouteMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles by (method, status) and route template, registered on first use.
///
/// Looking a handle up through `counter!` with labels builds and hashes a label key (several
/// allocations) on every request; this map keeps the handles instead. Bounded: methods and
/// statuses are small fixed sets, and routes are the router's templates plus "unmatched".
type HandleMap = HashMap<(&'static str, u16), HashMap<Box<str>, RouteMetrics>>;

static HANDLES: LazyLock<Mutex<HandleMap>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn record(method: &'static str, status: StatusCode, path: &str, elapsed: Duration) {
    let mut handles = HANDLES.lock().unwrap_or_else(|p| p.into_inner());
    let by_route = handles.entry((method, status.as_u16())).or_default();
    if !by_route.contains_key(path) {
        let labels = [
            ("method", method.to_owned()),
            ("path", path.to_owned()),
            ("status", status.as_str().to_owned()),
        ];
        let metrics = RouteMetrics {
            requests: metrics::counter!(REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(REQUEST_DURATION, &labels[..2]),
        };
        by_route.insert(path.into(), metrics);
    }
    if let Some(m) = by_route.get(path) {
        m.requests.increment(1);
        m.duration.record(elapsed.as_secs_f64());
    }
}

/// Layer recording the request counter and latency histogram of every request.
///
/// A hand-written layer rather than `axum::middleware::from_fn`, which boxes a future and clones
/// the inner route (another allocation) on every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

/// The service [`TrackLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let start = Instant::now();
        let method = method_label(req.method());
        let route = match req.extensions().get::<MatchedPath>() {
            // The catch-all serves several kinds of files: label them apart.
            Some(m) if m.as_str() == "/{file}" => {
                Route::Static(crate::narinfo::route_label(req.uri().path()))
            }
            Some(m) => Route::Matched(m.clone()),
            None => Route::Static("unmatched"),
        };
        TrackFuture {
            inner: self.inner.call(req),
            start,
            method,
            route,
        }
    }
}

/// The response future of [`Track`]: records the metrics when the response head is ready.
pub struct TrackFuture<F> {
    inner: F,
    start: Instant,
    method: &'static str,
    route: Route,
}

/// The route template a request is counted under.
enum Route {
    Matched(MatchedPath),
    Static(&'static str),
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(res) = ready!(Pin::new(&mut this.inner).poll(cx));
        let path = match &this.route {
            Route::Matched(m) => m.as_str(),
            Route::Static(label) => label,
        };
        record(this.method, res.status(), path, this.start.elapsed());
        Poll::Ready(Ok(res))
    }
}
