//! The journey service's only way to the feedback service: its gRPC API. Calls carry the
//! caller's own token, so feedback applies the same tenant and roles (the journey service
//! never widens what a caller may read), and the caller's trace context. When feedback
//! cannot be reached the call fails with UNAVAILABLE saying so.

use cxloop_platform::Caller;
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_proto::feedback::v1 as fb;
use fb::feedback_service_client::FeedbackServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Most queries feedback takes in one BatchQueryMetrics call.
pub const MAX_BATCH: usize = 500;

/// A lazily connected channel to the feedback service.
#[derive(Clone)]
pub struct Feedback {
    channel: Channel,
    url: String,
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
            channel,
            url: url.to_owned(),
        })
    }

    fn client(&self) -> FeedbackServiceClient<Channel> {
        FeedbackServiceClient::new(self.channel.clone())
            .max_decoding_message_size(256 * 1024 * 1024)
    }

    fn request<T>(&self, caller: &Caller, body: T) -> ApiResult<tonic::Request<T>> {
        let mut req = tonic::Request::new(body);
        let value = format!("Bearer {}", caller.token)
            .parse()
            .map_err(|_| ApiError::Unauthenticated("token is not valid header text".into()))?;
        req.metadata_mut().insert("authorization", value);
        cxloop_platform::telemetry::inject_trace_context(req.metadata_mut());
        Ok(req)
    }

    fn error(&self, s: tonic::Status) -> ApiError {
        use tonic::Code::*;
        match s.code() {
            Unavailable | Unknown | Cancelled | DeadlineExceeded | ResourceExhausted | Aborted => {
                ApiError::Unavailable(format!(
                    "the feedback service at {} is unavailable: {}",
                    self.url,
                    s.message()
                ))
            }
            Unimplemented => {
                ApiError::Unavailable(format!("no feedback service is served at {}", self.url))
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

    /// Runs any number of metrics queries in batches of [`MAX_BATCH`], the batches
    /// concurrently; results in query order.
    pub async fn query(
        &self,
        caller: &Caller,
        queries: Vec<fb::QueryMetricsRequest>,
    ) -> ApiResult<Vec<fb::QueryMetricsResponse>> {
        let mut set = tokio::task::JoinSet::new();
        let chunks: Vec<Vec<fb::QueryMetricsRequest>> =
            queries.chunks(MAX_BATCH).map(<[_]>::to_vec).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let req = self.request(caller, fb::BatchQueryMetricsRequest { queries: chunk })?;
            let mut client = self.client();
            set.spawn(async move { (i, client.batch_query_metrics(req).await) });
        }
        let mut parts: Vec<Option<Vec<fb::QueryMetricsResponse>>> = vec![None; n];
        while let Some(done) = set.join_next().await {
            let (i, res) = done.map_err(|e| ApiError::Internal(format!("metrics task: {e}")))?;
            parts[i] = Some(res.map_err(|s| self.error(s))?.into_inner().results);
        }
        Ok(parts.into_iter().flatten().flatten().collect())
    }

    /// A survey (to check a KPI's question and metric).
    pub async fn survey(&self, caller: &Caller, id: &str) -> ApiResult<fb::Survey> {
        let req = self.request(caller, fb::GetSurveyRequest { id: id.into() })?;
        match self.client().get_survey(req).await {
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
        let req = self.request(caller, fb::GetTouchpointRequest { id: id.into() })?;
        match self.client().get_touchpoint(req).await {
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
            let req = self.request(
                caller,
                fb::ListSurveysRequest {
                    page: Some(cxloop_proto::common::v1::PageRequest {
                        page_size: 1000,
                        page_token: token,
                    }),
                    ..Default::default()
                },
            )?;
            let r = self
                .client()
                .list_surveys(req)
                .await
                .map_err(|s| self.error(s))?
                .into_inner();
            out.extend(r.surveys);
            token = r.page.map(|p| p.next_page_token).unwrap_or_default();
            if token.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Every live touchpoint.
    pub async fn touchpoints(&self, caller: &Caller) -> ApiResult<Vec<fb::Touchpoint>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = self.request(
                caller,
                fb::ListTouchpointsRequest {
                    page: Some(cxloop_proto::common::v1::PageRequest {
                        page_size: 1000,
                        page_token: token,
                    }),
                    channel: 0,
                },
            )?;
            let r = self
                .client()
                .list_touchpoints(req)
                .await
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
