//! The journey service's only way to the feedback service: its gRPC API. Calls are made as
//! the caller, so feedback applies the same tenant and roles (the journey service never
//! widens what a caller may read). When feedback cannot be reached the call fails with
//! UNAVAILABLE saying so.
//!
//! Over the network (feedback in another process) a call carries the caller's own token and
//! trace context. In the embedded mode, where both services run in one process, the same API
//! is called in process: the request goes to feedback's implementation of the generated
//! `FeedbackService` trait with the caller already verified (what feedback's auth layer would
//! put there), without encoding, HTTP/2 or a loopback connection. Decoding feedback's answer
//! (a year of daily counts for each KPI of a scorecard) and the hop itself were a quarter to
//! a third of the server's CPU per owner scorecard (docs/decisions.md).

use cxloop_platform::Caller;
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_proto::feedback::v1 as fb;
use fb::feedback_service_client::FeedbackServiceClient;
use fb::feedback_service_server::FeedbackService;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

/// Most queries feedback takes in one BatchQueryMetrics call.
pub const MAX_BATCH: usize = 500;
/// Most BatchQueryMetrics calls one query runs at once: a scorecard of thousands of
/// (KPI, touchpoint) pairs would otherwise send dozens of batches together and hold all their
/// answers (up to ~6 MB each in the dense view) at the same time, and take every core of the
/// feedback service from other callers.
pub const BATCHES_AT_ONCE: usize = 4;

/// The way to the feedback service: a lazily connected channel, or its API in this process.
#[derive(Clone)]
pub struct Feedback {
    to: To,
    /// Where feedback answers, for error messages ("at URL" or "in this process").
    place: String,
}

#[derive(Clone)]
enum To {
    Network(Channel),
    InProcess(Arc<dyn FeedbackService>),
}

/// Calls one method of the feedback API as `caller`, over whichever way `self` has.
macro_rules! call {
    ($self:expr, $caller:expr, $method:ident, $body:expr) => {{
        let req = $self.request($caller, $body)?;
        match &$self.to {
            To::Network(channel) => $self.client(channel).$method(req).await,
            To::InProcess(api) => api.$method(req).await,
        }
    }};
}

impl Feedback {
    /// A gateway to the feedback service at `url` (connects on first use, reconnects after
    /// failures).
    pub fn new(url: &str) -> Result<Self, String> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("feedback address {url:?}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            to: To::Network(channel),
            place: format!("at {url}"),
        })
    }

    /// A gateway to the feedback API served by this same process.
    pub fn in_process(api: Arc<dyn FeedbackService>) -> Self {
        Self {
            to: To::InProcess(api),
            place: "in this process".into(),
        }
    }

    fn client(&self, channel: &Channel) -> FeedbackServiceClient<Channel> {
        FeedbackServiceClient::new(channel.clone()).max_decoding_message_size(256 * 1024 * 1024)
    }

    /// The request as `caller`: over the network with the caller's token (feedback verifies
    /// it again), in process with the verified caller itself, as feedback's auth layer would
    /// have left it.
    fn request<T>(&self, caller: &Caller, body: T) -> ApiResult<tonic::Request<T>> {
        let mut req = tonic::Request::new(body);
        match &self.to {
            To::Network(_) => {
                let value = format!("Bearer {}", caller.token).parse().map_err(|_| {
                    ApiError::Unauthenticated("token is not valid header text".into())
                })?;
                req.metadata_mut().insert("authorization", value);
                cxloop_platform::telemetry::inject_trace_context(req.metadata_mut());
            }
            To::InProcess(_) => {
                req.extensions_mut().insert(caller.clone());
            }
        }
        Ok(req)
    }

    fn error(&self, s: tonic::Status) -> ApiError {
        use tonic::Code::*;
        match s.code() {
            Unavailable | Unknown | Cancelled | DeadlineExceeded | ResourceExhausted | Aborted => {
                ApiError::Unavailable(format!(
                    "the feedback service {} is unavailable: {}",
                    self.place,
                    s.message()
                ))
            }
            Unimplemented => {
                ApiError::Unavailable(format!("no feedback service is served {}", self.place))
            }
            PermissionDenied => {
                ApiError::PermissionDenied(format!("the feedback service refused: {}", s.message()))
            }
            Unauthenticated => ApiError::Unauthenticated(s.message().to_owned()),
            NotFound => ApiError::precondition(
                "FEEDBACK_RESOURCE_MISSING",
                "feedback",
                format!("the feedback service no longer has it: {}", s.message()),
            ),
            _ => ApiError::precondition(
                "FEEDBACK_REFUSED",
                "feedback",
                format!("the feedback service refused the query: {}", s.message()),
            ),
        }
    }

    /// Runs any number of metrics queries in batches of [`MAX_BATCH`], at most
    /// [`BATCHES_AT_ONCE`] of them at a time; results in query order.
    pub async fn query(
        &self,
        caller: &Caller,
        queries: Vec<fb::QueryMetricsRequest>,
    ) -> ApiResult<Vec<fb::QueryMetricsResponse>> {
        let mut set = tokio::task::JoinSet::new();
        let chunks: Vec<Vec<fb::QueryMetricsRequest>> =
            queries.chunks(MAX_BATCH).map(<[_]>::to_vec).collect();
        let n = chunks.len();
        let mut parts: Vec<Option<Vec<fb::QueryMetricsResponse>>> = vec![None; n];
        let mut take = |done: Option<Result<(usize, ApiResult<_>), tokio::task::JoinError>>| {
            let Some(done) = done else {
                return Ok(());
            };
            let (i, res) = done.map_err(|e| ApiError::Internal(format!("metrics task: {e}")))?;
            let answer: Result<tonic::Response<fb::BatchQueryMetricsResponse>, tonic::Status> =
                res?;
            parts[i] = Some(answer.map_err(|s| self.error(s))?.into_inner().results);
            ApiResult::Ok(())
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            if set.len() >= BATCHES_AT_ONCE {
                take(set.join_next().await)?;
            }
            let body = fb::BatchQueryMetricsRequest { queries: chunk };
            let this = self.clone();
            let caller = caller.clone();
            set.spawn(async move {
                let res: ApiResult<_> =
                    async { Ok(call!(this, &caller, batch_query_metrics, body)) }.await;
                (i, res)
            });
        }
        while let Some(done) = set.join_next().await {
            take(Some(done))?;
        }
        Ok(parts.into_iter().flatten().flatten().collect())
    }

    /// A survey (to check a KPI's question and metric).
    pub async fn survey(&self, caller: &Caller, id: &str) -> ApiResult<fb::Survey> {
        match call!(
            self,
            caller,
            get_survey,
            fb::GetSurveyRequest { id: id.into() }
        ) {
            Ok(r) => r
                .into_inner()
                .survey
                .ok_or_else(|| ApiError::Internal("feedback returned no survey".into())),
            Err(s) if s.code() == tonic::Code::NotFound => Err(ApiError::invalid(
                "kpi.survey.survey_id",
                "no such survey in the feedback service",
            )),
            Err(s) => Err(self.error(s)),
        }
    }

    /// Whether a live touchpoint with this id exists.
    pub async fn touchpoint_exists(&self, caller: &Caller, id: &str) -> ApiResult<bool> {
        match call!(
            self,
            caller,
            get_touchpoint,
            fb::GetTouchpointRequest { id: id.into() }
        ) {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(self.error(s)),
        }
    }

    /// Every live survey.
    pub async fn surveys(&self, caller: &Caller) -> ApiResult<Vec<fb::Survey>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let body = fb::ListSurveysRequest {
                page: Some(cxloop_proto::common::v1::PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..Default::default()
            };
            let r = call!(self, caller, list_surveys, body)
                .map_err(|s| self.error(s))?
                .into_inner();
            out.extend(r.surveys);
            token = r.page.map(|p| p.next_page_token).unwrap_or_default();
            if token.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Every live touchpoint; with `show_deleted` also the deleted ones, with their
    /// `delete_time`.
    pub async fn touchpoints(
        &self,
        caller: &Caller,
        show_deleted: bool,
    ) -> ApiResult<Vec<fb::Touchpoint>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let body = fb::ListTouchpointsRequest {
                page: Some(cxloop_proto::common::v1::PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                channel: 0,
                show_deleted,
            };
            let r = call!(self, caller, list_touchpoints, body)
                .map_err(|s| self.error(s))?
                .into_inner();
            out.extend(r.touchpoints);
            token = r.page.map(|p| p.next_page_token).unwrap_or_default();
            if token.is_empty() {
                return Ok(out);
            }
        }
    }
}
