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
    type Response = http::Response<RecordedBody<R>>;
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
        // Made before the answer: a call dropped while its handler runs (the client reset
        // it, or its grpc-timeout passed) is recorded when this is dropped, as CANCELLED.
        let mut finish = Finish {
            span: span.clone(),
            started,
            header_code: None,
            done: false,
        };
        Box::pin(
            async move {
                match fut.await {
                    Ok(res) => {
                        // An error before the first message is a trailers-only answer: its
                        // code is in the headers. Otherwise the code comes in the trailers,
                        // after the last message: the body records it when it ends.
                        finish.header_code = grpc_status(res.headers());
                        Ok(res.map(|inner| RecordedBody { inner, finish }))
                    }
                    Err(e) => {
                        // The service failed before producing a gRPC answer: transport-level.
                        finish.record(None, tonic::Code::Unknown);
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Records an RPC's gRPC status code and latency once, when its answer has ended.
struct Finish {
    span: tracing::Span,
    started: Instant,
    header_code: Option<i64>,
    done: bool,
}

impl Finish {
    /// Records the call with the trailers' code, else the headers', else `otherwise`.
    fn record(&mut self, trailer_code: Option<i64>, otherwise: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = trailer_code
            .or(self.header_code)
            .unwrap_or(i64::from(otherwise as i32));
        let latency_us = self.started.elapsed().as_micros() as i64;
        self.span.set_attribute("rpc.grpc.status_code", code);
        self.span.set_attribute("latency_us", latency_us);
        let _enter = self.span.enter();
        tracing::debug!(code, latency_us, "rpc finished");
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // An answer whose end was never polled: trailers-only (the code is in the headers), or
        // cut off part way (the client went away, or the server stopped).
        self.record(None, tonic::Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// An RPC's answer body, recording the call's status code and latency when it ends.
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        finish: Finish,
    }
}

impl<B: http_body::Body> http_body::Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish
                        .record(grpc_status(trailers), tonic::Code::Unknown);
                } else if this.inner.is_end_stream() {
                    // The last frame, and no trailers will follow: the headers' code, if any.
                    this.finish.record(None, tonic::Code::Unknown);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The body itself failed: the client sees the stream reset, not a status.
                this.finish.header_code = None;
                this.finish.record(None, tonic::Code::Unknown);
            }
            // Ended without trailers: the headers' code, else no status at all, which a
            // client reads as UNKNOWN.
            Poll::Ready(None) => this.finish.record(None, tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use tower::{Layer as _, Service as _};
    use tracing_subscriber::layer::Context as LayerContext;

    /// An answer body of prepared frames.
    struct Frames(VecDeque<http_body::Frame<&'static [u8]>>);

    impl http_body::Body for Frames {
        type Data = &'static [u8];
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn trailers(code: &str) -> http_body::Frame<&'static [u8]> {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        http_body::Frame::trailers(t)
    }

    /// Answers every call with the response `make` builds.
    #[derive(Clone)]
    struct Answer(fn() -> http::Response<Frames>);

    impl tower::Service<http::Request<()>> for Answer {
        type Response = http::Response<Frames>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok((self.0)()))
        }
    }

    /// The `code` of every "rpc finished" event.
    #[derive(Clone, Default)]
    struct Codes(Arc<Mutex<Vec<i64>>>);

    impl<S: tracing::Subscriber> Layer<S> for Codes {
        fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
            struct Code(Option<i64>);
            impl tracing::field::Visit for Code {
                fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
                    if field.name() == "code" {
                        self.0 = Some(value);
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            let mut code = Code(None);
            event.record(&mut code);
            if let Some(c) = code.0 {
                self.0.lock().unwrap().push(c);
            }
        }
    }

    /// Calls a service answering with `make`, reads that many frames of the body (`None`:
    /// to its end), drops it, and returns the codes recorded.
    async fn recorded(make: fn() -> http::Response<Frames>, frames: Option<usize>) -> Vec<i64> {
        let codes = Codes::default();
        let _guard = tracing_subscriber::registry()
            .with(codes.clone())
            .set_default();
        let mut svc = RpcSpanLayer.layer(Answer(make));
        let res = svc.call(http::Request::new(())).await.unwrap();
        let mut body = res.into_body();
        let mut read = 0;
        while frames.is_none_or(|n| read < n) {
            let frame = std::future::poll_fn(|cx| {
                http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
            })
            .await;
            if frame.is_none() {
                break;
            }
            read += 1;
        }
        assert!(codes.0.lock().unwrap().len() <= 1);
        drop(body);
        codes.0.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_stream_that_fails_after_its_messages_is_recorded_with_its_trailers_code() {
        let make = || {
            http::Response::new(Frames(VecDeque::from([
                http_body::Frame::data(&b"one message"[..]),
                http_body::Frame::data(&b"another"[..]),
                trailers("13"),
            ])))
        };
        assert_eq!(recorded(make, None).await, vec![13]);
    }

    #[tokio::test]
    async fn a_successful_call_is_recorded_once_with_code_0() {
        let make = || {
            http::Response::new(Frames(VecDeque::from([
                http_body::Frame::data(&b"answer"[..]),
                trailers("0"),
            ])))
        };
        assert_eq!(recorded(make, None).await, vec![0]);
    }

    #[tokio::test]
    async fn a_trailers_only_error_is_recorded_with_its_headers_code() {
        let make = || {
            let mut r = http::Response::new(Frames(VecDeque::new()));
            r.headers_mut().insert("grpc-status", "16".parse().unwrap());
            r
        };
        // The server never polls an empty body: the code is recorded when it is dropped.
        assert_eq!(recorded(make, Some(0)).await, vec![16]);
    }

    /// A handler that never answers.
    #[derive(Clone)]
    struct Never;

    impl tower::Service<http::Request<()>> for Never {
        type Response = http::Response<Frames>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::pending()
        }
    }

    #[test]
    fn a_call_dropped_before_its_answer_is_recorded_as_cancelled() {
        let codes = Codes::default();
        let _guard = tracing_subscriber::registry()
            .with(codes.clone())
            .set_default();
        let mut svc = RpcSpanLayer.layer(Never);
        let mut call = svc.call(http::Request::new(()));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(codes.0.lock().unwrap().is_empty());
        drop(call);
        assert_eq!(
            *codes.0.lock().unwrap(),
            [i64::from(tonic::Code::Cancelled as i32)]
        );
    }

    #[tokio::test]
    async fn an_answer_cut_off_part_way_is_recorded_as_cancelled() {
        let make = || {
            http::Response::new(Frames(VecDeque::from([
                http_body::Frame::data(&b"first"[..]),
                http_body::Frame::data(&b"never read"[..]),
                trailers("0"),
            ])))
        };
        assert_eq!(
            recorded(make, Some(1)).await,
            vec![i64::from(tonic::Code::Cancelled as i32)]
        );
    }
}
