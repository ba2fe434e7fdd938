//! Clients with a bearer token, as `cxloop demo`, the end-to-end tests and the load
//! generator use them.

use cxloop_proto::feedback::v1::feedback_service_client::FeedbackServiceClient;
use cxloop_proto::journeys::v1::journey_service_client::JourneyServiceClient;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A feedback client with a bearer token.
pub type Client = FeedbackServiceClient<InterceptedService<Channel, Bearer>>;

/// A journeys client with a bearer token.
pub type JourneysClient = JourneyServiceClient<InterceptedService<Channel, Bearer>>;

/// Largest message the clients accept (long daily series are large).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

async fn channel(addr: &str, token: &str) -> Result<(Channel, Bearer), String> {
    if !addr.starts_with("http://") {
        return Err(format!(
            "address {addr}: give it as http://HOST:PORT, e.g. http://127.0.0.1:50051 (cxloop speaks plain-text HTTP/2; TLS belongs to a proxy in front of it)"
        ));
    }
    let channel = Channel::from_shared(addr.to_owned())
        .map_err(|e| format!("address {addr}: {e}"))?
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot reach {addr}: {} (is `cxloop serve` running?)",
                causes(&e)
            )
        })?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token is not valid header text".to_string())?;
    Ok((channel, Bearer(value)))
}

/// An error with its causes: a transport error alone says only "transport error", its
/// sources say "Connection refused" or "failed to lookup address".
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// Connects a feedback client to `addr` (e.g. "http://127.0.0.1:50051") with a token.
pub async fn connect(addr: &str, token: &str) -> Result<Client, String> {
    let (channel, bearer) = channel(addr, token).await?;
    Ok(FeedbackServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE))
}

/// Connects a journeys client to `addr` with a token.
pub async fn connect_journeys(addr: &str, token: &str) -> Result<JourneysClient, String> {
    let (channel, bearer) = channel(addr, token).await?;
    Ok(JourneyServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE))
}

/// An employee-service client with a bearer token.
pub type EmployeeClient =
    cxloop_proto::employee::v1::employee_service_client::EmployeeServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Bearer>,
    >;

/// Connects an employee-service client to `addr` with a token.
pub async fn connect_employee(addr: &str, token: &str) -> Result<EmployeeClient, String> {
    let (channel, bearer) = channel(addr, token).await?;
    Ok(
        cxloop_proto::employee::v1::employee_service_client::EmployeeServiceClient::with_interceptor(
            channel, bearer,
        )
        .max_decoding_message_size(MAX_MESSAGE),
    )
}
