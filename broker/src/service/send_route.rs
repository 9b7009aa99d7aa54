//! The messaging service as served: the generated router, except SendMessage, whose
//! request is decoded as [`EncodedSendRequest`] — each message kept as the bytes it came
//! in, for [`crate::incoming_message`] to read — instead of the generated type's `Message`
//! values. On the wire nothing changes: the two types are the same message.

use std::convert::Infallible;
use std::task::Context;
use std::task::Poll;

use raftmq_proto::codec::BulkCodec;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use raftmq_proto::rocketmq::v2::messaging_service_server::SERVICE_NAME;
use raftmq_proto::send_request::EncodedSendRequest;
use raftmq_proto::send_request::SEND_MESSAGE_PATH;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::server::UnaryService;

use super::Messaging;
use crate::forward::MAX_GRPC_MESSAGE;

/// The messaging service's routes (see the module docs).
#[derive(Debug, Clone)]
pub struct MessagingRoutes {
    generated: MessagingServiceServer<Messaging>,
    messaging: Messaging,
}

impl MessagingRoutes {
    pub fn new(messaging: Messaging) -> Self {
        let generated = MessagingServiceServer::new(messaging.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        Self { generated, messaging }
    }
}

impl NamedService for MessagingRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

impl Service<http::Request<Body>> for MessagingRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != SEND_MESSAGE_PATH {
            return self.generated.call(req);
        }
        let method = SendMethod(self.messaging.clone());
        Box::pin(async move {
            let codec = BulkCodec::<pb::SendMessageResponse, EncodedSendRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_GRPC_MESSAGE), Some(MAX_GRPC_MESSAGE));
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// SendMessage with the request as [`EncodedSendRequest`].
struct SendMethod(Messaging);

impl UnaryService<EncodedSendRequest> for SendMethod {
    type Response = pb::SendMessageResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<EncodedSendRequest>) -> Self::Future {
        let messaging = self.0.clone();
        Box::pin(async move { messaging.send_encoded(req).await })
    }
}
