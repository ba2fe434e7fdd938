//! A bare tonic echo service for the baseline of (b): it decodes the very message a
//! `RecordResponse` call sends (`RecordResponseRequest`) and sends it back, with no auth, no
//! span, no storage. Against the health Check (an empty request, a two-byte answer) it adds
//! what any gRPC server pays for carrying that message: protobuf decoding and encoding and
//! the bytes on the wire, so the ratio (b)/(a) measures what cxloop adds on top of carrying
//! the same call. No proto file: the service is mounted by hand on tonic's generic server
//! with the generated message type and prost's codec, the way generated servers do it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use cxloop_proto::feedback::v1 as pb;
use tonic::codegen::{BoxFuture, Service, http};

/// The echo method's path.
pub const PATH: &str = "/cxloop.bench.v1.EchoService/Echo";

/// The service: `Echo(RecordResponseRequest) returns (RecordResponseRequest)`.
#[derive(Clone, Copy, Default)]
pub struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "cxloop.bench.v1.EchoService";
}

#[derive(Clone, Copy)]
struct Echo;

impl tonic::server::UnaryService<pb::RecordResponseRequest> for Echo {
    type Response = pb::RecordResponseRequest;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::RecordResponseRequest>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("only Echo is served here").into_http())
            });
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(Echo, req).await)
        })
    }
}

/// A client of [`EchoServer`].
#[derive(Clone)]
pub struct EchoClient {
    inner: tonic::client::Grpc<tonic::transport::Channel>,
}

impl EchoClient {
    /// A client over this channel.
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// One Echo call; returns the message the server sent back.
    pub async fn echo(
        &mut self,
        message: pb::RecordResponseRequest,
    ) -> Result<pb::RecordResponseRequest, tonic::Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(PATH);
        let codec = tonic_prost::ProstCodec::default();
        Ok(self
            .inner
            .unary(tonic::Request::new(message), path, codec)
            .await?
            .into_inner())
    }
}
