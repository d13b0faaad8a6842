//! Operations endpoints and request metrics (SPEC §12).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use agentnexus_app::App;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ],
            )
            .expect("valid buckets")
            .set_buckets_for_metric(
                Matcher::Full("agentnexus_webhook_latency_seconds".into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
                ],
            )
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (several apps in one test process).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts every request and times it, labelled by route (not raw path) and status, and writes
/// the access log line (see [`set_access_log`]).
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let took = start.elapsed();
    RequestMetrics::record(&method, route, response.status(), took);
    access_log(&method, route, response.status(), took);
    response
}

type AccessSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Lines waiting to be written, and where they go.
struct AccessLog {
    sink: AccessSink,
    waiting: std::sync::Mutex<Vec<u8>>,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// How often waiting access-log lines are written, and how many bytes make a batch be written
/// at once.
const ACCESS_FLUSH: Duration = Duration::from_millis(100);
const ACCESS_BATCH: usize = 256 * 1024;

/// Where the access log goes: one JSON line a request, in the shape of the other log lines
/// (`timestamp`, `level`, `target` `agentnexus::access`), with its `method`, `route` (the
/// pattern, `/approvals/{token}`, never the path, so no token or id reaches the log), `status`
/// and `latency_us`. Set once by `serve`; off while `AGENTNEXUS_LOG` turns the target off.
///
/// A request appends its line to a buffer that a thread hands to `sink` every 100 ms (or at
/// 256 KiB), rather than logging through `tracing`: an event a request, formatted by its JSON
/// layer and handed to the logging thread one by one (waking it each time), cost the evaluate
/// path 4-9 % of its throughput on a 2-core machine (docs/performance.md).
pub fn set_access_log(sink: impl Fn(&[u8]) + Send + Sync + 'static) {
    let log = AccessLog {
        sink: Box::new(sink),
        waiting: std::sync::Mutex::new(Vec::with_capacity(ACCESS_BATCH)),
    };
    if ACCESS_LOG.set(log).is_ok() {
        let _ = std::thread::Builder::new()
            .name("agentnexus-access".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(ACCESS_FLUSH);
                    flush_access_log();
                }
            });
    }
}

/// Writes the access-log lines still waiting (at shutdown, so none is lost).
pub fn flush_access_log() {
    if let Some(log) = ACCESS_LOG.get() {
        let batch = std::mem::take(&mut *log.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        if !batch.is_empty() {
            (log.sink)(&batch);
        }
    }
}

fn access_log(method: &Method, route: &str, status: StatusCode, took: Duration) {
    let Some(log) = ACCESS_LOG.get() else {
        return;
    };
    if !tracing::enabled!(target: "agentnexus::access", tracing::Level::INFO) {
        return;
    }
    use std::io::Write;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // Methods are HTTP tokens and routes are this server's own patterns: neither holds a
    // character JSON must escape; a route that did would be written through serde_json.
    let route = if route.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        std::borrow::Cow::Borrowed(route)
    } else {
        let quoted = serde_json::to_string(route).unwrap_or_default();
        std::borrow::Cow::Owned(quoted.trim_matches('"').to_owned())
    };
    let mut waiting = log.waiting.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(
        waiting,
        "{{\"timestamp\":\"{now}\",\"level\":\"INFO\",\"method\":\"{}\",\"route\":\"{route}\",\
         \"status\":{},\"latency_us\":{},\"target\":\"agentnexus::access\"}}",
        method.as_str(),
        status.as_u16(),
        took.as_micros(),
    );
    if waiting.len() >= ACCESS_BATCH {
        let batch = std::mem::take(&mut *waiting);
        drop(waiting);
        (log.sink)(&batch);
    }
}

/// The request metrics' handles by route, then method and status. Registering a labelled
/// metric builds, hashes and looks up its key on every call; routes, methods and statuses are
/// few, so their handles are kept.
struct RequestMetrics {
    counter: Counter,
    histogram: Histogram,
    method: Method,
    status: StatusCode,
}

type ByRoute = HashMap<Box<str>, Vec<RequestMetrics>>;

impl RequestMetrics {
    fn record(method: &Method, route: &str, status: StatusCode, took: Duration) {
        static HANDLES: LazyLock<RwLock<ByRoute>> = LazyLock::new(Default::default);
        let took = took.as_secs_f64();
        let find = |handles: &ByRoute| {
            handles
                .get(route)?
                .iter()
                .find(|m| m.method == method && m.status == status)
                .map(|m| {
                    m.counter.increment(1);
                    m.histogram.record(took);
                })
        };
        if find(&HANDLES.read().expect("metric handles")).is_some() {
            return;
        }
        let mut handles = HANDLES.write().expect("metric handles");
        if find(&handles).is_none() {
            let (m, r) = (method.as_str().to_owned(), route.to_owned());
            let found = RequestMetrics {
                counter: metrics::counter!("agentnexus_http_requests_total",
                    "method" => m.clone(), "route" => r.clone(), "status" => status.as_str().to_owned()),
                histogram: metrics::histogram!("agentnexus_http_request_duration_seconds",
                    "method" => m, "route" => r),
                method: method.clone(),
                status,
            };
            found.counter.increment(1);
            found.histogram.record(took);
            handles.entry(route.into()).or_default().push(found);
        }
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "ok", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = String),
        (status = 503, description = "the store does not answer", body = String)))]
pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.store.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}
