//! Counts the items of each ImportResponses message before it is decoded.
//!
//! Decoding multiplies tiny items: an empty item is two bytes on the wire and 296 bytes
//! decoded (the size of `RecordResponseRequest` on x86-64), so one 64 MiB message of them
//! would become some 10 GB before the handler could count them. This guard reads the gRPC
//! frames as they arrive, walks each message's top-level fields (a varint walk, nothing
//! allocated) and ends the call with INVALID_ARGUMENT on `items` as soon as a message is seen
//! to carry more than [`MAX_ITEMS_PER_MESSAGE`] items (the handler's own limit per message,
//! [`MAX_IMPORT_BATCH`](crate::api::MAX_IMPORT_BATCH)), before the message is complete and
//! handed on. So what the handler decodes and answers for one message stays bounded by
//! 10,000 items.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use cxloop_platform::error::ApiError;
use http_body::Frame;
use tonic::body::Body;

/// Most items one ImportResponses message may carry before the call is ended undecoded.
pub const MAX_ITEMS_PER_MESSAGE: u64 = crate::api::MAX_IMPORT_BATCH as u64;
/// The method whose request bodies are counted.
const IMPORT_PATH: &str = "/cxloop.feedback.v1.FeedbackService/ImportResponses";
/// `items` is field 1 of `ImportResponsesRequest`.
const ITEMS_FIELD: u64 = 1;

/// Wraps the feedback server: the bodies of ImportResponses calls are counted, every other
/// call passes unchanged.
#[derive(Clone)]
pub struct ImportGuard<S> {
    inner: S,
}

impl<S> ImportGuard<S> {
    /// Guards `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ImportGuard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for ImportGuard<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == IMPORT_PATH {
            self.inner
                .call(req.map(|b| Body::new(CountedBody::new(b, MAX_ITEMS_PER_MESSAGE))))
        } else {
            self.inner.call(req)
        }
    }
}

/// A request body whose gRPC messages are counted as they pass.
struct CountedBody {
    inner: Body,
    counter: ItemCounter,
    failed: bool,
}

impl CountedBody {
    fn new(inner: Body, limit: u64) -> Self {
        Self {
            inner,
            counter: ItemCounter::new(limit),
            failed: false,
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Err(message) = self.counter.feed(data)
        {
            self.failed = true;
            return Poll::Ready(Some(Err(ApiError::invalid(
                "items",
                format!(
                    "message {message} of the stream carries more than {MAX_ITEMS_PER_MESSAGE} items; \
                     nothing of it was read. Messages before it were committed: retry the \
                     stream in smaller messages with the same request ids"
                ),
            )
            .into())));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where the walk is in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the 5-byte gRPC message prefix (compression flag, big-endian length).
    Prefix { have: usize },
    /// Reading a field key (a varint).
    Key,
    /// Reading the length of a length-delimited field.
    Length { items: bool },
    /// Reading a varint value.
    Varint,
    /// Skipping bytes of the message: a field's value, or all that is left of a message
    /// that is compressed or that the walk cannot follow (prost reports what is wrong).
    Skip { n: u64 },
}

/// Counts field-1 entries per gRPC message over a byte stream split anywhere.
struct ItemCounter {
    limit: u64,
    state: State,
    prefix: [u8; 5],
    /// Bytes of the current message not yet walked.
    left: u64,
    /// The varint being read, and how many bits of it are in.
    varint: u64,
    shift: u32,
    /// Items of the current message so far.
    items: u64,
    /// Messages begun, counting from 1.
    message: u64,
}

impl ItemCounter {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            state: State::Prefix { have: 0 },
            prefix: [0; 5],
            left: 0,
            varint: 0,
            shift: 0,
            items: 0,
            message: 0,
        }
    }

    /// Walks `data`; `Err(m)` when message `m` (counting from 1) passes the limit.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), u64> {
        while !data.is_empty() {
            match self.state {
                State::Prefix { have } => {
                    let take = (5 - have).min(data.len());
                    self.prefix[have..have + take].copy_from_slice(&data[..take]);
                    data = &data[take..];
                    if have + take < 5 {
                        self.state = State::Prefix { have: have + take };
                        continue;
                    }
                    let len = u32::from_be_bytes([
                        self.prefix[1],
                        self.prefix[2],
                        self.prefix[3],
                        self.prefix[4],
                    ]);
                    self.message += 1;
                    self.items = 0;
                    self.left = u64::from(len);
                    self.state = if self.prefix[0] == 0 {
                        State::Key
                    } else {
                        // Compressed: this server accepts no compression, and tonic refuses
                        // the message undecoded.
                        State::Skip { n: self.left }
                    };
                    self.varint = 0;
                    self.shift = 0;
                }
                State::Skip { n: 0 } => self.state = State::Key,
                State::Skip { n } => {
                    let take = n.min(data.len() as u64) as usize;
                    data = &data[take..];
                    self.left -= take as u64;
                    self.state = State::Skip { n: n - take as u64 };
                }
                State::Key | State::Length { .. } | State::Varint => {
                    let b = data[0];
                    data = &data[1..];
                    self.left -= 1;
                    if self.shift >= 64 {
                        // Longer than any varint: not ours to judge.
                        self.state = State::Skip { n: self.left };
                        continue;
                    }
                    self.varint |= u64::from(b & 0x7f) << self.shift;
                    self.shift += 7;
                    if b & 0x80 != 0 {
                        if self.left == 0 {
                            self.state = State::Skip { n: 0 };
                        }
                        continue;
                    }
                    let value = std::mem::take(&mut self.varint);
                    self.shift = 0;
                    self.state = match self.state {
                        State::Key => match value & 7 {
                            0 => State::Varint,
                            1 => State::Skip { n: 8 },
                            2 => State::Length {
                                items: value >> 3 == ITEMS_FIELD,
                            },
                            5 => State::Skip { n: 4 },
                            // Groups or a wire type that does not exist.
                            _ => State::Skip { n: self.left },
                        },
                        State::Length { items } => {
                            if items {
                                self.items += 1;
                                if self.items > self.limit {
                                    return Err(self.message);
                                }
                            }
                            State::Skip { n: value }
                        }
                        _ => State::Key,
                    };
                    if let State::Skip { n } = self.state
                        && n > self.left
                    {
                        self.state = State::Skip { n: self.left };
                    }
                }
            }
            if self.left == 0 && !matches!(self.state, State::Prefix { .. }) {
                self.state = State::Prefix { have: 0 };
            }
        }
        // A message of length 0 has no bytes after its prefix.
        if self.left == 0 && !matches!(self.state, State::Prefix { .. }) {
            self.state = State::Prefix { have: 0 };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxloop_proto::feedback::v1 as pb;
    use prost::Message;

    /// The gRPC framing of `m`, uncompressed.
    fn framed(m: &pb::ImportResponsesRequest) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn item(i: usize) -> pb::RecordResponseRequest {
        pb::RecordResponseRequest {
            request_id: format!("r-{i}"),
            response: Some(pb::Response {
                survey_id: "s".repeat(i % 300),
                comment: "c".repeat(i * 37 % 200),
                ..Default::default()
            }),
        }
    }

    fn message(n: usize) -> pb::ImportResponsesRequest {
        pb::ImportResponsesRequest {
            items: (0..n).map(item).collect(),
        }
    }

    /// Feeds `bytes` in pieces of `piece` bytes.
    fn feed(c: &mut ItemCounter, bytes: &[u8], piece: usize) -> Result<(), u64> {
        bytes.chunks(piece).try_for_each(|p| c.feed(p))
    }

    #[test]
    fn messages_at_the_limit_pass_however_the_bytes_are_split() {
        let mut stream = Vec::new();
        for n in [0, 1, 5, 3, 0, 5] {
            stream.extend(framed(&message(n)));
        }
        for piece in [1, 2, 3, 5, 7, 64, 4096, stream.len()] {
            let mut c = ItemCounter::new(5);
            assert_eq!(feed(&mut c, &stream, piece), Ok(()), "piece {piece}");
            assert_eq!(c.message, 6);
            assert_eq!(c.items, 5);
            assert_eq!(c.state, State::Prefix { have: 0 });
        }
    }

    #[test]
    fn the_item_past_the_limit_ends_the_walk_with_its_message() {
        let mut stream = framed(&message(5));
        stream.extend(framed(&message(6)));
        for piece in [1, 3, 4096] {
            let mut c = ItemCounter::new(5);
            assert_eq!(feed(&mut c, &stream, piece), Err(2), "piece {piece}");
        }
    }

    #[test]
    fn tiny_items_are_counted_before_the_message_is_complete() {
        // Empty items: two bytes each. The walk stops at the sixth, long before the end.
        let m = pb::ImportResponsesRequest {
            items: vec![pb::RecordResponseRequest::default(); 1000],
        };
        let bytes = framed(&m);
        let mut c = ItemCounter::new(5);
        let stopped_at = bytes
            .chunks(1)
            .position(|p| c.feed(p).is_err())
            .expect("refused");
        assert_eq!(stopped_at, 5 + 6 * 2 - 1);
    }

    #[test]
    fn unknown_fields_and_nested_field_ones_are_not_items() {
        // An unknown varint, fixed32, fixed64 and length-delimited field around one item
        // whose own field 1 (request_id) must not count.
        let mut body = Vec::new();
        body.extend([0x10, 0x96, 0x01]); // field 2, varint 150
        body.extend([0x1d, 1, 2, 3, 4]); // field 3, fixed32
        body.extend([0x21, 1, 2, 3, 4, 5, 6, 7, 8]); // field 4, fixed64
        body.extend([0x2a, 2, 0x0a, 0]); // field 5, bytes
        let one = pb::RecordResponseRequest {
            request_id: "x".into(),
            ..Default::default()
        }
        .encode_to_vec();
        body.push(0x0a);
        body.push(one.len() as u8);
        body.extend(&one);
        let mut framed = vec![0];
        framed.extend((body.len() as u32).to_be_bytes());
        framed.extend(&body);
        let mut c = ItemCounter::new(1);
        assert_eq!(feed(&mut c, &framed, 1), Ok(()));
        assert_eq!(c.items, 1);
        assert_eq!(c.state, State::Prefix { have: 0 });
    }

    #[test]
    fn a_field_claiming_more_than_its_message_holds_stops_at_the_message_end() {
        // Item 1 claims 100 bytes in a message of 4; the next message is walked as usual.
        let mut stream = vec![0, 0, 0, 0, 4, 0x0a, 100, 1, 2];
        stream.extend(framed(&message(2)));
        let mut c = ItemCounter::new(2);
        assert_eq!(feed(&mut c, &stream, 1), Ok(()));
        assert_eq!((c.message, c.items), (2, 2));
    }

    #[test]
    fn compressed_messages_are_passed_over() {
        let mut bytes = framed(&message(9));
        bytes[0] = 1;
        let mut c = ItemCounter::new(2);
        assert_eq!(feed(&mut c, &bytes, 3), Ok(()));
        assert_eq!(c.state, State::Prefix { have: 0 });
    }
}
