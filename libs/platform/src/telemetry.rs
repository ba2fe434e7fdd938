//! Telemetry: logs (pretty for people, JSON for machines), one span per RPC with method,
//! tenant, gRPC status code and latency (the last two as attributes of the exported span and
//! fields of the closing debug event), W3C trace context taken from incoming calls, and
//! OTLP trace export when an endpoint is configured.

use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace exporter alive; flushes it on drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. `log_format` is "pretty" or "json"; `otlp_endpoint`
/// empty disables export. Safe to call more than once (later calls only return a guard).
pub fn init(log_format: &str, otlp_endpoint: &str) -> Result<TelemetryGuard, String> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = if log_format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let mut provider = None;
    let otel_layer = if otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(otlp_endpoint.to_owned())
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let p = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build();
        let tracer = p.tracer("cxloop");
        provider = Some(p);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // A second init (tests start many servers in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    Ok(TelemetryGuard { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Tower layer: one span per RPC.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcSpanLayer;

impl<S> tower::Layer<S> for RpcSpanLayer {
    type Service = RpcSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcSpan { inner }
    }
}

/// The service made by [`RpcSpanLayer`].
#[derive(Clone, Debug)]
pub struct RpcSpan<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RpcSpan<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Code and latency are known only at the end, when no log line of the call is left to
        // carry them: they go to the exported span as attributes and to the closing debug
        // event, not into the span's fields (the JSON log layer re-formats all of a span's
        // fields on every `record`, which cost ~4 % of a small call's CPU).
        let span = tracing::info_span!(
            "rpc",
            method = %req.uri().path(),
            tenant = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        let fut = {
            let _enter = span.enter();
            inner.call(req)
        };
        let span2 = span.clone();
        Box::pin(
            async move {
                let res = fut.await;
                // Unary errors come as trailers-only responses: the code is in the headers.
                // Successful calls put "0" in the trailers, which this layer does not read.
                let code: i64 = match &res {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    // The service failed before producing a gRPC answer: transport-level.
                    Err(_) => i64::from(tonic::Code::Unknown as i32),
                };
                let latency_us = started.elapsed().as_micros() as i64;
                span2.set_attribute("rpc.grpc.status_code", code);
                span2.set_attribute("latency_us", latency_us);
                tracing::debug!(code, latency_us, "rpc finished");
                res
            }
            .instrument(span),
        )
    }
}

/// Puts the current span's W3C trace context (`traceparent`) into an outgoing call's
/// metadata, so a call from one service to another continues the caller's trace.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);
    impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                value.parse(),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}
