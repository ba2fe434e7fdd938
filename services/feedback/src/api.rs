//! The gRPC face of the feedback service: decode and validate each request into domain
//! values once, check the caller's permission, call the store, encode the answer. No rule
//! lives here that the domain could own.

use std::sync::Arc;

use cxloop_metrics::Histogram;
use cxloop_platform::db::timestamp as ts;
use cxloop_platform::error::{ApiError, ApiResult, Violations, check_len, resource_id};
use cxloop_platform::idempotency;
use cxloop_platform::paging::{PageSigner, request_args as page_args};
use cxloop_platform::period::{self, BucketSize, Range};
use cxloop_platform::wire::{comparison_pb, estimate_pb};
use cxloop_platform::{Caller, Permission, TenantId};
use cxloop_proto::common::v1 as common;
use cxloop_proto::feedback::v1 as pb;
use pb::feedback_service_server::FeedbackService;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::metrics::{self as dm, MetricKind};
use crate::domain::{self, AnswerValue, NewResponse, Question, QuestionKind, SliceFilter};
use crate::store::cache::{DayCounts, SeriesRef, SliceDays, day_counts};
use crate::store::ingest::{Ingest, Outcome, Queued, distinct};
use crate::store::{
    HIST_WIDTH, ResponseFilter, ResponseRow, Store, SurveyInput, SurveyRow, TouchpointInput,
    TouchpointRow,
};

/// Most items in one ImportResponses message; a message of more ends the call before it is
/// decoded ([`crate::import_guard`]).
pub const MAX_IMPORT_BATCH: usize = 10_000;
/// Most items in one ImportResponses stream. The per-item results are held until the stream
/// ends and come back in one answer, which a client must be able to take: 25,000 items with
/// 36-character request ids are counted at 2.8 MB (112 bytes each, see
/// [`pending_result_bytes`]).
pub const MAX_IMPORT_STREAM: u64 = 25_000;
/// Most bytes of per-item results an import answer carries for the messages it stored.
/// gRPC clients refuse answers over 4 MiB unless told otherwise, and an import whose answer
/// is refused has been stored without the client learning what happened to each item. Long
/// request ids or many violations per item can pass that below [`MAX_IMPORT_STREAM`] items,
/// so a message whose results might pass this budget is refused whole instead of stored, with
/// short results ([`whole_message_refusal`]): at most 10,000 of those (about 1.1 MB) on top of
/// this budget keep every answer below 4 MiB.
pub const MAX_IMPORT_ANSWER_BYTES: usize = 3_000_000;
/// Longest metrics period, in days.
const MAX_METRIC_DAYS: i64 = 3660;

/// The FeedbackService implementation.
#[derive(Clone)]
pub struct FeedbackApi {
    store: Store,
    ingest: Ingest,
    pages: Arc<PageSigner>,
}

impl FeedbackApi {
    /// An API over this store and writer.
    pub fn new(store: Store, ingest: Ingest, pages: PageSigner) -> Self {
        Self {
            store,
            ingest,
            pages: Arc::new(pages),
        }
    }
}

fn auth<T>(req: &Request<T>, p: Permission) -> Result<TenantId, Status> {
    let caller = Caller::of(req)?;
    caller.require(p)?;
    Ok(caller.tenant)
}

fn to_utc(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
}

fn parse_channel(v: &mut Violations, field: &str, code: i32, allow_all: bool) -> i32 {
    match pb::Channel::try_from(code) {
        Ok(pb::Channel::Unspecified) if allow_all => 0,
        Ok(pb::Channel::Unspecified) | Err(_) => {
            v.add(
                field,
                "must be a known channel other than CHANNEL_UNSPECIFIED",
            );
            0
        }
        Ok(c) => c as i32,
    }
}

fn parse_range(v: &mut Violations, field: &str, p: Option<&common::Period>) -> Option<Range> {
    let Some(p) = p else {
        v.add(field, "is required");
        return None;
    };
    match &p.kind {
        None => {
            v.add(field, "set range or named");
            None
        }
        Some(common::period::Kind::Named(n)) => match period::parse_named(n) {
            Ok(r) => Some(r),
            Err(e) => {
                v.add(format!("{field}.named"), e);
                None
            }
        },
        Some(common::period::Kind::Range(r)) => {
            let start = r.start.as_ref().and_then(to_utc);
            let end = r.end.as_ref().and_then(to_utc);
            match (start, end) {
                (Some(start), Some(end)) if start < end => Some(Range { start, end }),
                (Some(_), Some(_)) => {
                    v.add(format!("{field}.range.end"), "must be after start");
                    None
                }
                (start, end) => {
                    for (end_name, parsed) in [("start", start), ("end", end)] {
                        if parsed.is_none() {
                            v.add(
                                format!("{field}.range.{end_name}"),
                                "is required and must be a valid timestamp",
                            );
                        }
                    }
                    None
                }
            }
        }
    }
}

fn parse_slice(v: &mut Violations, field: &str, s: Option<&pb::Slice>) -> SliceFilter {
    let Some(s) = s else {
        return SliceFilter::default();
    };
    check_len(
        v,
        &format!("{field}.touchpoint_id"),
        &s.touchpoint_id,
        0,
        128,
    );
    check_len(v, &format!("{field}.org_unit_id"), &s.org_unit_id, 0, 128);
    check_len(v, &format!("{field}.segment"), &s.segment, 0, 64);
    SliceFilter {
        touchpoint_id: s.touchpoint_id.clone(),
        org_unit_id: s.org_unit_id.clone(),
        channel: parse_channel(v, &format!("{field}.channel"), s.channel, true),
        segment: s.segment.clone(),
    }
}

// ---- touchpoints ----

fn touchpoint_pb(r: TouchpointRow) -> pb::Touchpoint {
    pb::Touchpoint {
        id: r.id,
        name: r.name,
        description: r.description,
        channel: r.channel,
        journey_stage_id: r.journey_stage_id,
        moment_of_truth: r.moment_of_truth,
        create_time: Some(ts(r.created_at)),
        update_time: Some(ts(r.updated_at)),
        delete_time: r.deleted_at.map(ts),
    }
}

fn touchpoint_input(v: &mut Violations, t: &pb::Touchpoint) -> TouchpointInput {
    check_len(v, "touchpoint.name", &t.name, 1, 200);
    check_len(v, "touchpoint.description", &t.description, 0, 2000);
    check_len(
        v,
        "touchpoint.journey_stage_id",
        &t.journey_stage_id,
        0,
        128,
    );
    TouchpointInput {
        name: t.name.clone(),
        description: t.description.clone(),
        channel: parse_channel(v, "touchpoint.channel", t.channel, false),
        journey_stage_id: t.journey_stage_id.clone(),
        moment_of_truth: t.moment_of_truth,
    }
}

fn mask_paths<'a>(
    v: &mut Violations,
    mask: Option<&'a prost_types::FieldMask>,
    prefix: &str,
    allowed: &[&str],
) -> Vec<&'a str> {
    let paths: Vec<&str> = mask
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if paths.is_empty() {
        v.add(
            "update_mask",
            format!("name the fields to change: {}", allowed.join(", ")),
        );
    }
    let mut out = Vec::new();
    for (i, p) in paths.into_iter().enumerate() {
        let p = p.strip_prefix(prefix).unwrap_or(p);
        if allowed.contains(&p) {
            out.push(p);
        } else {
            v.add(
                format!("update_mask.paths[{i}]"),
                format!("{p:?} cannot be updated; allowed: {}", allowed.join(", ")),
            );
        }
    }
    out
}

// ---- surveys ----

fn question_pb(q: &Question) -> pb::Question {
    let rating = q.kind == QuestionKind::Rating;
    pb::Question {
        key: q.key.clone(),
        text: q.text.clone(),
        kind: q.kind.code(),
        rating_min: if rating { q.min } else { 0 },
        rating_max: if rating { q.max } else { 0 },
        required: q.required,
    }
}

fn survey_pb(s: SurveyRow) -> pb::Survey {
    pb::Survey {
        id: s.id,
        name: s.name,
        description: s.description,
        questions: s.questions.iter().map(question_pb).collect(),
        touchpoint_ids: s.touchpoint_ids,
        create_time: Some(ts(s.created_at)),
        update_time: Some(ts(s.updated_at)),
    }
}

fn parse_questions(v: &mut Violations, qs: &[pb::Question]) -> Vec<Question> {
    if qs.is_empty() || qs.len() > MAX_QUESTIONS {
        v.add(
            "survey.questions",
            format!("must have 1-{MAX_QUESTIONS} questions"),
        );
        // Nothing more to say of each one: the request is refused, and checking an unbounded
        // list item by item would cost the server what the client chose.
        return Vec::new();
    }
    let mut out: Vec<Question> = Vec::new();
    for (i, q) in qs.iter().enumerate() {
        let Some(kind) = QuestionKind::from_code(q.kind) else {
            v.add(
                format!("survey.questions[{i}].kind"),
                "must be a known kind other than QUESTION_KIND_UNSPECIFIED",
            );
            continue;
        };
        match Question::new(
            &q.key,
            &q.text,
            kind,
            q.rating_min,
            q.rating_max,
            q.required,
        ) {
            Ok(q) => {
                if out.iter().any(|o| o.key == q.key) {
                    v.add(
                        format!("survey.questions[{i}].key"),
                        format!("duplicate key {:?}", q.key),
                    );
                }
                out.push(q);
            }
            Err(errs) => {
                for (f, d) in errs {
                    v.add(format!("survey.questions[{i}].{f}"), d);
                }
            }
        }
    }
    out
}

fn parse_touchpoint_ids(v: &mut Violations, ids: &[String]) -> Vec<String> {
    if ids.is_empty() || ids.len() > 500 {
        v.add("survey.touchpoint_ids", "must list 1-500 touchpoints");
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        check_len(v, &format!("survey.touchpoint_ids[{i}]"), id, 1, 128);
        if !seen.insert(id) {
            v.add(
                format!("survey.touchpoint_ids[{i}]"),
                "duplicate touchpoint",
            );
        }
    }
    ids.to_vec()
}

fn survey_input(v: &mut Violations, s: &pb::Survey) -> SurveyInput {
    check_len(v, "survey.name", &s.name, 1, 200);
    check_len(v, "survey.description", &s.description, 0, 2000);
    SurveyInput {
        name: s.name.clone(),
        description: s.description.clone(),
        questions: parse_questions(v, &s.questions),
        touchpoint_ids: parse_touchpoint_ids(v, &s.touchpoint_ids),
    }
}

// ---- responses ----

fn response_pb(r: ResponseRow) -> pb::Response {
    pb::Response {
        id: r.id,
        survey_id: r.survey_id,
        touchpoint_id: r.touchpoint_id,
        occurred_at: Some(ts(r.occurred_at)),
        channel: r.channel,
        org_unit_id: r.org_unit_id,
        segment: r.segment,
        customer_key: r.customer_key,
        comment: r.comment,
        answers: r
            .answers
            .into_iter()
            .map(|(k, a)| pb::Answer {
                question_key: k,
                value: Some(match a {
                    AnswerValue::Score(s) => pb::answer::Value::Score(s),
                    AnswerValue::Text(t) => pb::answer::Value::Text(t),
                }),
            })
            .collect(),
        request_id: r.request_id,
        create_time: Some(ts(r.created_at)),
    }
}

/// A refused item: its request id and the violations, with fields relative to the request
/// ("response.answers[1].score").
pub type Refusal = (String, Vec<(String, String)>);

impl FeedbackApi {
    /// Reads an import stream to its end: checks each message and hands its good items to the
    /// writer once the previous message's are committed (see [`IMPORT_IN_FLIGHT`]).
    async fn import_stream(
        &self,
        tenant: &TenantId,
        stream: &mut Streaming<pb::ImportResponsesRequest>,
        out: &mut pb::ImportResponsesResponse,
        in_flight: &mut std::collections::VecDeque<ImportedMessage>,
    ) -> Result<(), Status> {
        let mut index: u64 = 0;
        // The answer's results so far, in encoded bytes; for items handed to the writer, the
        // most their result can take.
        let mut answer_bytes = 0usize;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            let base = index;
            let count = msg.items.len();
            index += count as u64;
            // The message that passes a limit is the last one read: the results are held until
            // the answer, and a client that went on sending would grow them without end.
            if count > MAX_IMPORT_BATCH {
                // The server's import guard ends such a call before the message is decoded;
                // without it, a result per item of a huge message would be no answer either.
                return Err(ApiError::invalid(
                    "items",
                    format!("a message carries at most {MAX_IMPORT_BATCH} items"),
                )
                .into());
            }
            let mut refusal = if index > MAX_IMPORT_STREAM {
                Some(format!(
                    "a stream carries at most {MAX_IMPORT_STREAM} items; send the rest in another"
                ))
            } else {
                None
            };
            let mut results: Vec<Option<pb::ImportItemResult>> = Vec::with_capacity(count);
            let mut good = Vec::new();
            let mut good_at = Vec::new();
            let mut bounds = Vec::new();
            let mut bytes = 0usize;
            if refusal.is_none() {
                let parsed: Vec<Result<NewResponse, Refusal>> =
                    msg.items.into_iter().map(parse_new_response).collect();
                // The writer checks each item against its survey; checked here too, its
                // refusal is known with its size before the message is stored. The item still
                // goes to the writer, which decides (a retry of a stored response stays a
                // duplicate after its survey changed).
                let ok = || parsed.iter().filter_map(|p| p.as_ref().ok());
                let survey_ids = distinct(ok().map(|r| r.survey_id.as_str()));
                let touchpoint_ids = distinct(ok().map(|r| r.touchpoint_id.as_str()));
                let (surveys, live) = if survey_ids.is_empty() {
                    Default::default()
                } else {
                    self.store
                        .ingest_definitions(tenant, &survey_ids, &touchpoint_ids)
                        .await?
                };
                for (i, p) in parsed.into_iter().enumerate() {
                    let at = base + i as u64;
                    match p {
                        Ok(r) => {
                            let (_, v) = r.check_in(&surveys, &live);
                            let bound = pending_result_bytes(at, &r.request_id)
                                .max(refused_result_bytes(at, &r.request_id, &v));
                            bytes += bound;
                            bounds.push(bound);
                            good.push(r);
                            good_at.push(i);
                            results.push(None);
                        }
                        Err((request_id, v)) => {
                            let r = pb::ImportItemResult {
                                index: at,
                                request_id,
                                outcome: pb::ImportOutcome::Rejected as i32,
                                response_id: String::new(),
                                violations: violations_pb(v),
                            };
                            bytes += result_bytes(&r);
                            results.push(Some(r));
                        }
                    }
                }
                if answer_bytes + bytes > MAX_IMPORT_ANSWER_BYTES {
                    refusal = Some(if answer_bytes == 0 {
                        "this message's results alone would pass the answer's limit; send \
                         fewer items per message"
                            .into()
                    } else {
                        "the stream's answer is full; send this item and the rest in another \
                         stream"
                            .into()
                    });
                    good.clear();
                    good_at.clear();
                    bounds.clear();
                }
            }
            let last = refusal.is_some();
            if let Some(reason) = &refusal {
                results = (0..count)
                    .map(|i| Some(whole_message_refusal(base + i as u64, reason)))
                    .collect();
                bytes = results.iter().flatten().map(result_bytes).sum();
            }
            answer_bytes += bytes;
            // Committed while the next message is read and checked: the stream's request work
            // then overlaps the writer's commit instead of waiting for it. At most
            // IMPORT_IN_FLIGHT messages of a stream are queued at once.
            if in_flight.len() >= IMPORT_IN_FLIGHT
                && let Some(earlier) = in_flight.pop_front()
            {
                earlier.finish(&mut out.results).await?;
            }
            let request_ids: Vec<String> = good.iter().map(|g| g.request_id.clone()).collect();
            let commit = if good.is_empty() {
                None
            } else {
                Some(self.ingest.enqueue(tenant.clone(), good).await?)
            };
            in_flight.push_back(ImportedMessage {
                base,
                results,
                good_at,
                bounds,
                request_ids,
                commit,
            });
            if last {
                break;
            }
        }
        Ok(())
    }
}

/// Most messages of one import stream handed to the writer and not yet answered: one commits
/// while the next is read and checked. Two kept the writer no busier with two streams, and
/// the server's RSS after a 2M-row import went from 131-145 to 219-237 MiB (more messages
/// alive at once, and the allocator keeps their high-water mark).
const IMPORT_IN_FLIGHT: usize = 1;

/// One checked import message; its good items handed to the writer.
struct ImportedMessage {
    /// Position of its first item in the stream.
    base: u64,
    /// Per item: its result if it was refused before storage, else None.
    results: Vec<Option<pb::ImportItemResult>>,
    /// Positions (in the message) and request ids of the items handed to the writer.
    good_at: Vec<usize>,
    /// The most bytes each of those items' result may take (counted against the answer's
    /// budget before the message was stored).
    bounds: Vec<usize>,
    request_ids: Vec<String>,
    commit: Option<Queued>,
}

impl ImportedMessage {
    /// Waits for the commit and appends every item's result, in order.
    async fn finish(self, out: &mut Vec<pb::ImportItemResult>) -> Result<(), Status> {
        let Self {
            base,
            mut results,
            good_at,
            bounds,
            request_ids,
            commit,
        } = self;
        if let Some(commit) = commit {
            let outcomes = commit.outcomes().await?;
            for (((i, rid), o), bound) in good_at
                .into_iter()
                .zip(request_ids)
                .zip(outcomes)
                .zip(bounds)
            {
                let (outcome, response_id, violations) = match o {
                    Outcome::Accepted { id, .. } => (pb::ImportOutcome::Accepted, id, vec![]),
                    Outcome::Duplicate { id } => (pb::ImportOutcome::Duplicate, id, vec![]),
                    Outcome::Conflict => (
                        pb::ImportOutcome::Rejected,
                        String::new(),
                        vec![conflict_violation()],
                    ),
                    Outcome::Rejected(v) => (pb::ImportOutcome::Rejected, String::new(), v),
                };
                let mut result = pb::ImportItemResult {
                    index: base + i as u64,
                    request_id: rid,
                    outcome: outcome as i32,
                    response_id,
                    violations: violations_pb(violations),
                };
                if result_bytes(&result) > bound {
                    // The writer refused it for other reasons than the check before storing
                    // (its survey or touchpoint changed in between): said in short, so the
                    // answer stays within what was counted for it.
                    result.violations = violations_pb(vec![changed_violation()]);
                }
                results[i] = Some(result);
            }
        }
        out.extend(results.into_iter().flatten());
        Ok(())
    }
}

/// An item's result in an import answer, in encoded bytes (as an element of `results`).
fn result_bytes(r: &pb::ImportItemResult) -> usize {
    let n = r.encoded_len();
    1 + prost::length_delimiter_len(n) + n
}

/// The most bytes the result of an item handed to the writer can take when the check before
/// storing found nothing wrong: accepted or a duplicate (with the response's 36-character id),
/// a conflict, or a refusal for a change found only by the writer (each with one violation).
fn pending_result_bytes(index: u64, request_id: &str) -> usize {
    use prost::encoding::{encoded_len_varint, key_len, uint64};
    static OUTCOME: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        let with_id = pb::ImportItemResult {
            outcome: pb::ImportOutcome::Duplicate as i32,
            response_id: cxloop_platform::db::new_id(),
            ..Default::default()
        };
        let refused = |v: (String, String)| {
            pb::ImportItemResult {
                outcome: pb::ImportOutcome::Rejected as i32,
                violations: violations_pb(vec![v]),
                ..Default::default()
            }
            .encoded_len()
        };
        with_id
            .encoded_len()
            .max(refused(conflict_violation()))
            .max(refused(changed_violation()))
    });
    let id = request_id.len();
    let n =
        uint64::encoded_len(1, &index) + key_len(2) + encoded_len_varint(id as u64) + id + *OUTCOME;
    1 + prost::length_delimiter_len(n) + n
}

/// The most bytes of an item's result when it is refused with these violations.
fn refused_result_bytes(index: u64, request_id: &str, v: &[(String, String)]) -> usize {
    if v.is_empty() {
        return 0;
    }
    result_bytes(&pb::ImportItemResult {
        index,
        request_id: request_id.to_owned(),
        outcome: pb::ImportOutcome::Rejected as i32,
        response_id: String::new(),
        violations: violations_pb(v.to_vec()),
    })
}

/// The violation of an item the writer refused for a reason the check before storing did not
/// find, when the full reasons would not fit the answer.
fn changed_violation() -> (String, String) {
    (
        "response".to_string(),
        "its survey or touchpoint changed meanwhile; retry it".to_string(),
    )
}

/// The violation of an item whose request id was stored before with other content.
fn conflict_violation() -> (String, String) {
    (
        "request_id".to_string(),
        "was already used for a different response".to_string(),
    )
}

/// The result of each item of a message refused whole (past a limit of the message or the
/// stream): the index and the reason only. Such a message may carry 10,000 items whatever
/// their size, so its results echo no request id (the index identifies the item).
fn whole_message_refusal(index: u64, reason: &str) -> pb::ImportItemResult {
    pb::ImportItemResult {
        index,
        request_id: String::new(),
        outcome: pb::ImportOutcome::Rejected as i32,
        response_id: String::new(),
        violations: vec![common::FieldViolation {
            field: "items".into(),
            description: reason.into(),
        }],
    }
}

/// Most questions of a survey, and so most answers of a response.
const MAX_QUESTIONS: usize = 50;

/// The request id to echo in an item's refusal: as sent when it is a valid length, else its
/// first 128 characters. An import stream holds its refusals until it ends, so echoing an
/// id of any length would let a client make the server hold what it sent; the item's index
/// identifies it either way.
fn echoed(mut request_id: String) -> String {
    if let Some((cut, _)) = request_id.char_indices().nth(128) {
        request_id.truncate(cut);
    }
    request_id
}

/// Shape-checks one RecordResponse request into a domain value. Takes the request by value:
/// its strings move into the domain value instead of being copied (bulk import parses
/// millions of them).
pub fn parse_new_response(req: pb::RecordResponseRequest) -> Result<NewResponse, Refusal> {
    let mut v = Violations::new();
    let request_id = v.check(idempotency::parse_request_id("request_id", &req.request_id));
    let Some(mut r) = req.response else {
        v.add("response", "is required");
        return Err((echoed(req.request_id), v.into_inner()));
    };
    check_len(&mut v, "response.survey_id", &r.survey_id, 1, 128);
    check_len(&mut v, "response.touchpoint_id", &r.touchpoint_id, 1, 128);
    check_len(&mut v, "response.org_unit_id", &r.org_unit_id, 0, 128);
    check_len(&mut v, "response.segment", &r.segment, 0, 64);
    check_len(&mut v, "response.customer_key", &r.customer_key, 0, 128);
    check_len(&mut v, "response.comment", &r.comment, 0, 5000);
    let channel = parse_channel(&mut v, "response.channel", r.channel, false);
    let now = chrono::Utc::now();
    let occurred = match r.occurred_at.as_ref().map(to_utc) {
        None => {
            v.add("response.occurred_at", "is required");
            None
        }
        Some(None) => {
            v.add("response.occurred_at", "is not a valid timestamp");
            None
        }
        Some(Some(t)) if t > now + chrono::Duration::days(1) => {
            v.add("response.occurred_at", "is more than one day in the future");
            None
        }
        Some(Some(t)) if t.timestamp() < 946_684_800 => {
            v.add("response.occurred_at", "is before 2000-01-01");
            None
        }
        Some(Some(t)) => Some(cxloop_platform::db::micros(t)),
    };
    if r.answers.is_empty() {
        v.add("response.answers", "must have at least one answer");
    }
    if r.answers.len() > MAX_QUESTIONS {
        // A survey has at most MAX_QUESTIONS questions, so such a response cannot be valid;
        // saying so once keeps the refusal (and the work) bounded.
        v.add(
            "response.answers",
            format!("must have at most {MAX_QUESTIONS} answers, one per question"),
        );
        return Err((echoed(req.request_id), v.into_inner()));
    }
    // At most MAX_QUESTIONS answers (checked above), so a scan finds repeats without the
    // allocation of a set per response, and field paths are only built for a violation: bulk
    // imports parse millions of these.
    for (i, a) in r.answers.iter().enumerate() {
        if a.question_key.is_empty() || a.question_key.chars().count() > 64 {
            v.add(
                format!("response.answers[{i}].question_key"),
                "must be 1-64 characters",
            );
        }
        if r.answers[..i]
            .iter()
            .any(|b| b.question_key == a.question_key)
        {
            v.add(
                format!("response.answers[{i}].question_key"),
                "answers the same question twice",
            );
        }
        match &a.value {
            None => v.add(format!("response.answers[{i}]"), "set score or text"),
            Some(pb::answer::Value::Text(t)) if t.contains('\0') => v.add(
                format!("response.answers[{i}].text"),
                "must not contain the NUL character (U+0000)",
            ),
            Some(_) => {}
        }
    }
    if !v.is_empty() {
        return Err((echoed(req.request_id), v.into_inner()));
    }
    // The fingerprint covers what the client sent, without output-only fields, so a retry
    // matches and a reuse of the request id with other content does not.
    r.id.clear();
    r.request_id.clear();
    r.create_time = None;
    let request_hash = idempotency::fingerprint(&r.encode_to_vec());
    let answers = r
        .answers
        .into_iter()
        .filter_map(|a| {
            let value = match a.value? {
                pb::answer::Value::Score(s) => AnswerValue::Score(s),
                pb::answer::Value::Text(t) => AnswerValue::Text(t),
            };
            Some((a.question_key, value))
        })
        .collect();
    Ok(NewResponse {
        request_id: request_id.unwrap_or_default(),
        request_hash,
        survey_id: r.survey_id,
        touchpoint_id: r.touchpoint_id,
        occurred_at_us: occurred.unwrap_or_default(),
        channel,
        org_unit_id: r.org_unit_id,
        segment: r.segment,
        customer_key: r.customer_key,
        comment: r.comment,
        answers,
    })
}

fn accepted_pb(r: NewResponse, id: String, created_at: i64) -> pb::Response {
    response_pb(ResponseRow {
        id,
        request_id: r.request_id,
        survey_id: r.survey_id,
        touchpoint_id: r.touchpoint_id,
        occurred_at: r.occurred_at_us,
        channel: r.channel,
        org_unit_id: r.org_unit_id,
        segment: r.segment,
        customer_key: r.customer_key,
        comment: r.comment,
        answers: r.answers,
        created_at,
    })
}

fn violations_pb(v: Vec<(String, String)>) -> Vec<common::FieldViolation> {
    v.into_iter()
        .map(|(field, description)| common::FieldViolation { field, description })
        .collect()
}

// ---- metrics ----

fn bucket_pb(
    range: Range,
    kind: Option<QuestionKind>,
    h: &Histogram,
    with_values: bool,
) -> pb::MetricBucket {
    pb::MetricBucket {
        range: Some(common::TimeRange {
            start: Some(ts(range.start.timestamp_micros())),
            end: Some(ts(range.end.timestamp_micros())),
        }),
        count: h.total(),
        values: kind
            .filter(|_| with_values)
            .map(|k| {
                dm::estimates(k, h)
                    .into_iter()
                    .map(|(m, e)| pb::MetricValue {
                        metric: m.code(),
                        estimate: Some(estimate_pb(&e)),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        histogram: if kind.is_some() {
            h.iter()
                .map(|(score, count)| pb::ScoreCount { score, count })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn bucket_size(v: &mut Violations, field: &str, code: i32) -> BucketSize {
    match pb::Bucket::try_from(code) {
        Ok(pb::Bucket::Day) => BucketSize::Day,
        Ok(pb::Bucket::Week) => BucketSize::Week,
        Ok(pb::Bucket::Month) => BucketSize::Month,
        Ok(pb::Bucket::Quarter) => BucketSize::Quarter,
        Ok(pb::Bucket::Total) => BucketSize::Total,
        _ => {
            v.add(
                field,
                "must be BUCKET_DAY, _WEEK, _MONTH, _QUARTER or _TOTAL",
            );
            BucketSize::Total
        }
    }
}

fn check_metric_range(v: &mut Violations, field: &str, r: Option<Range>) -> Option<Range> {
    let r = r?;
    if !r.is_day_aligned() {
        v.add(
            field,
            "metrics are kept per UTC day: start and end must be at 00:00 UTC",
        );
        return None;
    }
    let (d0, d1) = r.days();
    if d1 - d0 > MAX_METRIC_DAYS {
        v.add(field, format!("must span at most {MAX_METRIC_DAYS} days"));
        return None;
    }
    Some(r)
}

/// Most queries in one BatchQueryMetrics call.
const MAX_BATCH_QUERIES: usize = 500;
/// Most buckets of the full and histogram views together in one BatchQueryMetrics call: a year
/// of days for each of 100 queries. A full-view NPS bucket takes at most about 350 bytes
/// (four estimates and the histogram) and a histogram-view one about 110, so such an answer
/// stays under 13 MB; without the limit 500 queries of ten years of days would make about
/// 200 MB of histogram answer (1.83 million buckets of 110 bytes).
const MAX_BATCH_VALUE_BUCKETS: usize = 36_600;
/// Most buckets of the dense view (one packed matrix of counts per query, at most 11 counts a
/// bucket, about 33 bytes a day of NPS) in one BatchQueryMetrics call: 500 queries of 366 days,
/// a year of daily histograms for every query of a full batch (what the journey service's
/// daily scorecards ask, their periods being at most 366 days), about 6 MB. Without it, 500
/// queries of ten years of days would make some 60 MB.
const MAX_BATCH_DENSE_BUCKETS: usize = MAX_BATCH_QUERIES * 366;

/// A validated QueryMetrics request.
struct MetricsQuery {
    survey_id: String,
    question_key: String,
    slice: SliceFilter,
    range: Range,
    size: BucketSize,
    /// False for METRICS_VIEW_HISTOGRAM and _DENSE.
    with_values: bool,
    /// True for METRICS_VIEW_DENSE.
    dense: bool,
}

/// Validates one metrics query; field paths start with `prefix` ("" or "queries[3].").
fn parse_metrics_query(
    v: &mut Violations,
    prefix: &str,
    r: &pb::QueryMetricsRequest,
) -> Option<MetricsQuery> {
    check_len(v, &format!("{prefix}survey_id"), &r.survey_id, 1, 128);
    let slice = parse_slice(v, &format!("{prefix}slice"), r.slice.as_ref());
    let range = parse_range(v, &format!("{prefix}period"), r.period.as_ref());
    let range = check_metric_range(v, &format!("{prefix}period"), range);
    let size = bucket_size(v, &format!("{prefix}bucket"), r.bucket);
    let view = pb::MetricsView::try_from(r.view).unwrap_or_else(|_| {
        v.add(format!("{prefix}view"), "must be a known MetricsView");
        pb::MetricsView::Full
    });
    let with_values = matches!(view, pb::MetricsView::Full | pb::MetricsView::Unspecified);
    let dense = view == pb::MetricsView::Dense;
    Some(MetricsQuery {
        survey_id: r.survey_id.clone(),
        question_key: r.question_key.clone(),
        slice,
        range: range?,
        size,
        with_values,
        dense,
    })
}

/// Puts a batch position in front of every field path of a validation error.
fn prefix_fields(e: ApiError, prefix: &str) -> ApiError {
    match e {
        ApiError::InvalidArgument(v) => ApiError::InvalidArgument(
            v.into_iter()
                .map(|(f, d)| (format!("{prefix}{f}"), d))
                .collect(),
        ),
        other => other,
    }
}

/// A question's scale as metrics see it: its kind (None for response counts) and its lowest
/// and highest point.
#[derive(Clone, Copy)]
struct Scale {
    kind: Option<QuestionKind>,
    min: i32,
    max: i32,
}

/// A query's answer from its slice's daily histograms (ascending by day).
fn respond(q: &MetricsQuery, scale: Scale, days: &[(i64, DayCounts)]) -> pb::QueryMetricsResponse {
    let kind = scale.kind;
    let points = usize::try_from(scale.max - scale.min + 1)
        .unwrap_or(1)
        .clamp(1, HIST_WIDTH);
    let mut buckets = Vec::new();
    let mut dense = Vec::new();
    let mut total = [0u64; HIST_WIDTH];
    let mut it = days.iter().peekable();
    // Counts are summed as arrays; a histogram is made once per bucket, and never for the
    // dense view (a scorecard's year of days).
    let mut h = Histogram::new();
    for b in q.range.buckets(q.size) {
        let end_day = period::day_of(b.end);
        let mut sum = [0u64; HIST_WIDTH];
        while let Some((_, day)) = it.next_if(|(d, _)| *d < end_day) {
            for (s, c) in sum.iter_mut().zip(day) {
                *s += c;
            }
        }
        for (t, c) in total.iter_mut().zip(&sum) {
            *t += c;
        }
        if q.dense {
            dense.extend_from_slice(&sum[..points]);
        } else {
            h.set_dense(scale.min, &sum);
            buckets.push(bucket_pb(b, kind, &h, q.with_values));
        }
    }
    h.set_dense(scale.min, &total);
    pb::QueryMetricsResponse {
        kind: kind.map_or(0, QuestionKind::code),
        buckets,
        total: Some(bucket_pb(q.range, kind, &h, q.with_values)),
        dense: q.dense.then_some(pb::DenseCounts {
            scale_min: scale.min,
            scale_points: points as i32,
            counts: dense,
        }),
    }
}

impl FeedbackApi {
    /// The question of a metrics call: its kind (None for response counts) and the lowest
    /// point of its scale.
    async fn question_scale(
        &self,
        tenant: &TenantId,
        survey_id: &str,
        key: &str,
    ) -> ApiResult<Scale> {
        let survey = self.store.get_survey_for_metrics(tenant, survey_id).await?;
        if key.is_empty() {
            return Ok(Scale {
                kind: None,
                min: 0,
                max: 0,
            });
        }
        match survey.questions.iter().find(|q| q.key == key) {
            None => Err(ApiError::invalid(
                "question_key",
                format!("the survey has no question {key:?}"),
            )),
            Some(q) if q.kind == QuestionKind::Text => Err(ApiError::invalid(
                "question_key",
                "a text question has no numeric metrics",
            )),
            Some(q) => Ok(Scale {
                kind: Some(q.kind),
                min: q.min,
                max: q.max,
            }),
        }
    }

    async fn run_metrics_query(
        &self,
        tenant: &TenantId,
        q: &MetricsQuery,
    ) -> ApiResult<pb::QueryMetricsResponse> {
        let scale = self
            .question_scale(tenant, &q.survey_id, &q.question_key)
            .await?;
        // A single-dimension slice in the embedded mode comes from the rollup cache, as in a
        // batch (a dashboard asks the same tiles again and again); the rest from the database.
        let cached_key = q
            .slice
            .marginal_key()
            .filter(|_| self.store.rollup_cache().is_some());
        let days: Vec<(i64, DayCounts)> = match cached_key {
            Some(key) => self
                .read_slices(
                    tenant,
                    &q.survey_id,
                    &q.question_key,
                    scale.min,
                    vec![key.clone()],
                    q.range.days(),
                    q.size == BucketSize::Total,
                )
                .await?
                .remove(&key)
                .unwrap_or_default(),
            None => self
                .store
                .daily_histograms(
                    tenant,
                    &q.survey_id,
                    &q.question_key,
                    scale.min,
                    &q.slice,
                    q.range.days(),
                )
                .await?
                .iter()
                .map(|(d, h)| (*d, day_counts(h, scale.min)))
                .collect(),
        };
        Ok(respond(q, scale, &days))
    }

    /// Answers a batch. Queries on single-dimension slices that share survey, question,
    /// days and total-or-not are read together in one statement (a scorecard's fifty
    /// touchpoints cost one read, not fifty); the rest one by one. Field paths of errors
    /// name the query.
    async fn run_batch(
        &self,
        tenant: &TenantId,
        parsed: &[MetricsQuery],
    ) -> ApiResult<Vec<pb::QueryMetricsResponse>> {
        use std::collections::{BTreeSet, HashMap};
        let at = |i: usize| move |e: ApiError| prefix_fields(e, &format!("queries[{i}]."));
        let mut scales: HashMap<(&str, &str), Scale> = HashMap::new();
        for (i, q) in parsed.iter().enumerate() {
            let k = (q.survey_id.as_str(), q.question_key.as_str());
            if let std::collections::hash_map::Entry::Vacant(e) = scales.entry(k) {
                let scale = self
                    .question_scale(tenant, &q.survey_id, &q.question_key)
                    .await
                    .map_err(at(i))?;
                e.insert(scale);
            }
        }
        let mut results: Vec<Option<pb::QueryMetricsResponse>> = vec![None; parsed.len()];
        type Group<'a> = (&'a str, &'a str, (i64, i64), bool);
        let mut groups: HashMap<Group<'_>, Vec<(usize, String)>> = HashMap::new();
        for (i, q) in parsed.iter().enumerate() {
            match q.slice.marginal_key() {
                Some(key) => groups
                    .entry((
                        q.survey_id.as_str(),
                        q.question_key.as_str(),
                        q.range.days(),
                        q.size == BucketSize::Total,
                    ))
                    .or_default()
                    .push((i, key)),
                None => {
                    results[i] = Some(self.run_metrics_query(tenant, q).await.map_err(at(i))?);
                }
            }
        }
        for ((survey, question, days, total), members) in groups {
            let scale = scales.get(&(survey, question)).copied().unwrap_or(Scale {
                kind: None,
                min: 0,
                max: 0,
            });
            let keys: Vec<String> = members
                .iter()
                .map(|(_, k)| k.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let by_key = self
                .read_slices(tenant, survey, question, scale.min, keys, days, total)
                .await?;
            for (i, k) in members {
                let days = by_key.get(&k).map(Vec::as_slice).unwrap_or(&[]);
                results[i] = Some(respond(&parsed[i], scale, days));
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Daily histograms of single-dimension slices: from the rollup cache where it holds
    /// them (the embedded mode), the rest read through the ingest writer into the cache; with
    /// no cache, from the database in two concurrent halves (SQLite runs each statement on
    /// its own thread, so a large group takes half the wall time).
    #[allow(clippy::too_many_arguments)]
    async fn read_slices(
        &self,
        tenant: &TenantId,
        survey: &str,
        question: &str,
        min: i32,
        keys: Vec<String>,
        days: (i64, i64),
        total: bool,
    ) -> ApiResult<SliceDays> {
        let mut by_key = SliceDays::with_capacity(keys.len());
        if let Some(cache) = self.store.rollup_cache() {
            let mut missing = Vec::new();
            for k in keys {
                let r = SeriesRef {
                    tenant: tenant.as_str(),
                    survey,
                    measure: question,
                    slice: &k,
                };
                match cache.get(r, days) {
                    Some(rows) => {
                        by_key.insert(k, rows);
                    }
                    None => missing.push(k),
                }
            }
            for chunk in missing.chunks(512) {
                by_key.extend(
                    self.ingest
                        .fill(tenant, survey, question, min, chunk.to_vec(), days)
                        .await?,
                );
            }
            return Ok(by_key);
        }
        for chunk in keys.chunks(512) {
            let (a, b) = chunk.split_at(chunk.len() / 2);
            let read = |part: &[String]| {
                let part = part.to_vec();
                async move {
                    if part.is_empty() {
                        return Ok(std::collections::HashMap::new());
                    }
                    self.store
                        .slice_histograms(tenant, survey, question, min, &part, days, total)
                        .await
                }
            };
            let (ra, rb) = tokio::join!(read(a), read(b));
            for (k, days) in ra?.into_iter().chain(rb?) {
                let rows = days.iter().map(|(d, h)| (*d, day_counts(h, min))).collect();
                by_key.insert(k, rows);
            }
        }
        Ok(by_key)
    }

    async fn histogram_total(
        &self,
        tenant: &TenantId,
        survey_id: &str,
        key: &str,
        min: i32,
        slice: &SliceFilter,
        range: Range,
    ) -> ApiResult<Histogram> {
        let mut total = Histogram::new();
        for (_, h) in self
            .store
            .daily_histograms(tenant, survey_id, key, min, slice, range.days())
            .await?
        {
            total.merge(&h);
        }
        Ok(total)
    }
}

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {
    async fn create_touchpoint(
        &self,
        req: Request<pb::CreateTouchpointRequest>,
    ) -> Result<Response<pb::CreateTouchpointResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(t) = r.touchpoint.as_ref() else {
            // Reported with what else is wrong (the request id), not instead of it.
            v.add("touchpoint", "is required");
            return Err(ApiError::InvalidArgument(v.into_inner()).into());
        };
        let input = touchpoint_input(&mut v, t);
        v.finish()?;
        let hash = idempotency::fingerprint(
            &touchpoint_pb(TouchpointRow {
                id: String::new(),
                name: input.name.clone(),
                description: input.description.clone(),
                channel: input.channel,
                journey_stage_id: input.journey_stage_id.clone(),
                moment_of_truth: input.moment_of_truth,
                created_at: 0,
                updated_at: 0,
                deleted_at: None,
            })
            .encode_to_vec(),
        );
        let row = self
            .store
            .create_touchpoint(&tenant, &request_id.unwrap_or_default(), &hash, &input)
            .await?;
        Ok(Response::new(pb::CreateTouchpointResponse {
            touchpoint: Some(touchpoint_pb(row)),
        }))
    }

    async fn get_touchpoint(
        &self,
        req: Request<pb::GetTouchpointRequest>,
    ) -> Result<Response<pb::GetTouchpointResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigRead)?;
        let row = self
            .store
            .get_touchpoint(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetTouchpointResponse {
            touchpoint: Some(touchpoint_pb(row)),
        }))
    }

    async fn list_touchpoints(
        &self,
        req: Request<pb::ListTouchpointsRequest>,
    ) -> Result<Response<pb::ListTouchpointsResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let channel = parse_channel(&mut v, "channel", r.channel, true);
        v.finish()?;
        // The live listing keeps the filter string it always had, so page tokens of
        // replicas not yet upgraded stay valid.
        let filters = if r.show_deleted {
            format!("touchpoints|{channel}|deleted")
        } else {
            format!("touchpoints|{channel}")
        };
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_touchpoints(&tenant, channel, r.show_deleted, &page)
            .await?;
        let (items, page) = listing.finish(&page, rows, |t| t.id.clone(), touchpoint_pb);
        Ok(Response::new(pb::ListTouchpointsResponse {
            touchpoints: items,
            page: Some(page),
        }))
    }

    async fn update_touchpoint(
        &self,
        req: Request<pb::UpdateTouchpointRequest>,
    ) -> Result<Response<pb::UpdateTouchpointResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigWrite)?;
        let r = req.into_inner();
        let Some(t) = r.touchpoint.as_ref() else {
            return Err(ApiError::invalid("touchpoint", "is required").into());
        };
        resource_id("touchpoint.id", &t.id)?;
        let mut v = Violations::new();
        let paths = mask_paths(
            &mut v,
            r.update_mask.as_ref(),
            "touchpoint.",
            &[
                "name",
                "description",
                "channel",
                "journey_stage_id",
                "moment_of_truth",
            ],
        );
        let mut field_v = Violations::new();
        let input = touchpoint_input(&mut field_v, t);
        for (field, desc) in field_v.into_inner() {
            let name = field.trim_start_matches("touchpoint.");
            if paths.contains(&name) {
                v.add(field, desc);
            }
        }
        v.finish()?;
        let row = self
            .store
            .update_touchpoint(&tenant, &t.id, |row| {
                for p in paths {
                    match p {
                        "name" => row.name = input.name.clone(),
                        "description" => row.description = input.description.clone(),
                        "channel" => row.channel = input.channel,
                        "journey_stage_id" => row.journey_stage_id = input.journey_stage_id.clone(),
                        _ => row.moment_of_truth = input.moment_of_truth,
                    }
                }
            })
            .await?;
        Ok(Response::new(pb::UpdateTouchpointResponse {
            touchpoint: Some(touchpoint_pb(row)),
        }))
    }

    async fn delete_touchpoint(
        &self,
        req: Request<pb::DeleteTouchpointRequest>,
    ) -> Result<Response<pb::DeleteTouchpointResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigWrite)?;
        self.store
            .delete_touchpoint(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::DeleteTouchpointResponse {}))
    }

    async fn create_survey(
        &self,
        req: Request<pb::CreateSurveyRequest>,
    ) -> Result<Response<pb::CreateSurveyResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(s) = r.survey.as_ref() else {
            // Reported with what else is wrong (the request id), not instead of it.
            v.add("survey", "is required");
            return Err(ApiError::InvalidArgument(v.into_inner()).into());
        };
        let input = survey_input(&mut v, s);
        v.finish()?;
        let mut canonical = s.clone();
        canonical.id.clear();
        canonical.create_time = None;
        canonical.update_time = None;
        let hash = idempotency::fingerprint(&canonical.encode_to_vec());
        let row = self
            .store
            .create_survey(&tenant, &request_id.unwrap_or_default(), &hash, &input)
            .await?;
        Ok(Response::new(pb::CreateSurveyResponse {
            survey: Some(survey_pb(row)),
        }))
    }

    async fn get_survey(
        &self,
        req: Request<pb::GetSurveyRequest>,
    ) -> Result<Response<pb::GetSurveyResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigRead)?;
        let row = self
            .store
            .get_survey(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetSurveyResponse {
            survey: Some(survey_pb(row)),
        }))
    }

    async fn list_surveys(
        &self,
        req: Request<pb::ListSurveysRequest>,
    ) -> Result<Response<pb::ListSurveysResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigRead)?;
        let r = req.into_inner();
        let filters = format!("surveys|{}", r.touchpoint_id);
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_surveys(&tenant, &r.touchpoint_id, &page)
            .await?;
        let (items, page) = listing.finish(&page, rows, |s| s.id.clone(), survey_pb);
        Ok(Response::new(pb::ListSurveysResponse {
            surveys: items,
            page: Some(page),
        }))
    }

    async fn update_survey(
        &self,
        req: Request<pb::UpdateSurveyRequest>,
    ) -> Result<Response<pb::UpdateSurveyResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigWrite)?;
        let r = req.into_inner();
        let Some(s) = r.survey.as_ref() else {
            return Err(ApiError::invalid("survey", "is required").into());
        };
        resource_id("survey.id", &s.id)?;
        let mut v = Violations::new();
        let paths = mask_paths(
            &mut v,
            r.update_mask.as_ref(),
            "survey.",
            &["name", "description", "questions", "touchpoint_ids"],
        );
        let mut field_v = Violations::new();
        let input = survey_input(&mut field_v, s);
        for (field, desc) in field_v.into_inner() {
            let top = field
                .trim_start_matches("survey.")
                .split(['.', '['])
                .next()
                .unwrap_or_default()
                .to_owned();
            if paths.contains(&top.as_str()) {
                v.add(field, desc);
            }
        }
        v.finish()?;
        let row = self
            .store
            .update_survey(&tenant, &s.id, |mut cur| {
                for p in &paths {
                    match *p {
                        "name" => cur.name = input.name.clone(),
                        "description" => cur.description = input.description.clone(),
                        "questions" => {
                            domain::check_question_change(&cur.questions, &input.questions)
                                .map_err(|(subject, description)| {
                                    ApiError::precondition("QUESTION_CHANGED", subject, description)
                                })?;
                            cur.questions = input.questions.clone();
                        }
                        _ => cur.touchpoint_ids = input.touchpoint_ids.clone(),
                    }
                }
                Ok(cur)
            })
            .await?;
        Ok(Response::new(pb::UpdateSurveyResponse {
            survey: Some(survey_pb(row)),
        }))
    }

    async fn delete_survey(
        &self,
        req: Request<pb::DeleteSurveyRequest>,
    ) -> Result<Response<pb::DeleteSurveyResponse>, Status> {
        let tenant = auth(&req, Permission::ConfigWrite)?;
        self.store
            .delete_survey(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::DeleteSurveyResponse {}))
    }

    async fn record_response(
        &self,
        req: Request<pb::RecordResponseRequest>,
    ) -> Result<Response<pb::RecordResponseResponse>, Status> {
        let tenant = auth(&req, Permission::ResponsesWrite)?;
        let item =
            parse_new_response(req.into_inner()).map_err(|(_, v)| ApiError::InvalidArgument(v))?;
        let outcome = self
            .ingest
            .submit(tenant.clone(), vec![item.clone()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("no outcome for the response".into()))?;
        let (response, duplicate) = match outcome {
            Outcome::Accepted { id, created_at } => (accepted_pb(item, id, created_at), false),
            Outcome::Duplicate { id } => (
                response_pb(self.store.get_response(&tenant, &id).await?),
                true,
            ),
            Outcome::Conflict => {
                return Err(ApiError::AlreadyExists(format!(
                    "request_id {:?} was already used for a different response",
                    item.request_id
                ))
                .into());
            }
            Outcome::Rejected(v) => return Err(ApiError::InvalidArgument(v).into()),
        };
        Ok(Response::new(pb::RecordResponseResponse {
            response: Some(response),
            duplicate,
        }))
    }

    async fn import_responses(
        &self,
        req: Request<Streaming<pb::ImportResponsesRequest>>,
    ) -> Result<Response<pb::ImportResponsesResponse>, Status> {
        let tenant = auth(&req, Permission::ResponsesWrite)?;
        let mut stream = req.into_inner();
        let mut out = pb::ImportResponsesResponse::default();
        let mut in_flight: std::collections::VecDeque<ImportedMessage> = Default::default();
        let read = self
            .import_stream(&tenant, &mut stream, &mut out, &mut in_flight)
            .await;
        // Also when the stream broke off or a commit failed: what was handed to the writer is
        // committed before the call ends, so a client that looks after the error (or
        // retries) finds it there, not appearing later.
        let mut finished = Ok(());
        while let Some(earlier) = in_flight.pop_front() {
            let done = earlier.finish(&mut out.results).await;
            if finished.is_ok() {
                finished = done;
            }
        }
        read?;
        finished?;
        for r in &out.results {
            match pb::ImportOutcome::try_from(r.outcome) {
                Ok(pb::ImportOutcome::Accepted) => out.accepted += 1,
                Ok(pb::ImportOutcome::Duplicate) => out.duplicates += 1,
                _ => out.rejected += 1,
            }
        }
        Ok(Response::new(out))
    }

    async fn get_response(
        &self,
        req: Request<pb::GetResponseRequest>,
    ) -> Result<Response<pb::GetResponseResponse>, Status> {
        let tenant = auth(&req, Permission::ResponsesRead)?;
        let row = self
            .store
            .get_response(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetResponseResponse {
            response: Some(response_pb(row)),
        }))
    }

    async fn list_responses(
        &self,
        req: Request<pb::ListResponsesRequest>,
    ) -> Result<Response<pb::ListResponsesResponse>, Status> {
        let tenant = auth(&req, Permission::ResponsesRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let slice = parse_slice(&mut v, "slice", r.slice.as_ref());
        let occurred = match r.occurred.as_ref() {
            None => None,
            Some(p) => parse_range(&mut v, "occurred", Some(p)),
        };
        v.finish()?;
        let filter = ResponseFilter {
            survey_id: r.survey_id.clone(),
            slice,
            occurred: occurred.map(|o| (o.start.timestamp_micros(), o.end.timestamp_micros())),
        };
        let fingerprint = cxloop_platform::paging::filters_fingerprint(
            "responses",
            &[
                &filter.survey_id,
                &filter.slice.touchpoint_id,
                &filter.slice.org_unit_id,
                &filter.slice.channel.to_string(),
                &filter.slice.segment,
                &format!("{:?}", filter.occurred),
            ],
        );
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &fingerprint);
        let page = listing.parse(size, token)?;
        let rows = self.store.list_responses(&tenant, &filter, &page).await?;
        let (items, page) = listing.finish(&page, rows, |r| r.id.clone(), response_pb);
        Ok(Response::new(pb::ListResponsesResponse {
            responses: items,
            page: Some(page),
        }))
    }

    async fn query_metrics(
        &self,
        req: Request<pb::QueryMetricsRequest>,
    ) -> Result<Response<pb::QueryMetricsResponse>, Status> {
        let tenant = auth(&req, Permission::MetricsRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let q = parse_metrics_query(&mut v, "", &r);
        v.finish()?;
        let q = q.ok_or_else(|| ApiError::invalid("period", "is required"))?;
        Ok(Response::new(self.run_metrics_query(&tenant, &q).await?))
    }

    async fn batch_query_metrics(
        &self,
        req: Request<pb::BatchQueryMetricsRequest>,
    ) -> Result<Response<pb::BatchQueryMetricsResponse>, Status> {
        let tenant = auth(&req, Permission::MetricsRead)?;
        let r = req.into_inner();
        // Refused before any query is looked at: a million empty queries would otherwise
        // each add their violations to the answer.
        if r.queries.is_empty() || r.queries.len() > MAX_BATCH_QUERIES {
            return Err(ApiError::invalid(
                "queries",
                format!("must hold 1-{MAX_BATCH_QUERIES} queries"),
            )
            .into());
        }
        let mut v = Violations::new();
        let parsed: Vec<Option<MetricsQuery>> = r
            .queries
            .iter()
            .enumerate()
            .map(|(i, q)| parse_metrics_query(&mut v, &format!("queries[{i}]."), q))
            .collect();
        v.finish()?;
        let parsed = parsed
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                q.ok_or_else(|| ApiError::invalid(format!("queries[{i}].period"), "is required"))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        // Buckets one by one are what make an answer large (four estimates and a histogram
        // each in the full view); a batch of long daily series could otherwise build hundreds
        // of megabytes. The dense view packs them.
        let buckets_of = |dense: bool| -> usize {
            parsed
                .iter()
                .filter(|q| q.dense == dense)
                .map(|q| q.range.buckets(q.size).len())
                .sum()
        };
        let dense = buckets_of(true);
        if dense > MAX_BATCH_DENSE_BUCKETS {
            return Err(ApiError::invalid(
                "queries",
                format!(
                    "ask for at most {MAX_BATCH_DENSE_BUCKETS} buckets of the dense view in one \
                     call (this asks for {dense}): split the batch or use coarser buckets"
                ),
            )
            .into());
        }
        let buckets = buckets_of(false);
        if buckets > MAX_BATCH_VALUE_BUCKETS {
            return Err(ApiError::invalid(
                "queries",
                format!(
                    "ask for at most {MAX_BATCH_VALUE_BUCKETS} buckets of the full and histogram \
                     views in one call (this asks for {buckets}): split the batch, use coarser \
                     buckets, or the dense view"
                ),
            )
            .into());
        }
        let results = self.run_batch(&tenant, &parsed).await?;
        Ok(Response::new(pb::BatchQueryMetricsResponse { results }))
    }

    async fn compare_metrics(
        &self,
        req: Request<pb::CompareMetricsRequest>,
    ) -> Result<Response<pb::CompareMetricsResponse>, Status> {
        let tenant = auth(&req, Permission::MetricsRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        check_len(&mut v, "survey_id", &r.survey_id, 1, 128);
        if r.question_key.is_empty() {
            v.add("question_key", "is required");
        }
        let metric = MetricKind::from_code(r.metric);
        if metric.is_none() {
            v.add(
                "metric",
                "must be a known metric other than METRIC_UNSPECIFIED",
            );
        }
        let mut side = |name: &str, s: Option<&pb::ComparisonSide>| {
            let Some(s) = s else {
                v.add(name, "is required");
                return None;
            };
            let slice = parse_slice(&mut v, &format!("{name}.slice"), s.slice.as_ref());
            let range = parse_range(&mut v, &format!("{name}.period"), s.period.as_ref());
            check_metric_range(&mut v, &format!("{name}.period"), range).map(|r| (slice, r))
        };
        let a = side("a", r.a.as_ref());
        let b = side("b", r.b.as_ref());
        v.finish()?;
        let (Some(metric), Some(a), Some(b)) = (metric, a, b) else {
            return Err(ApiError::invalid("a", "is required").into());
        };
        let Scale { kind, min, .. } = self
            .question_scale(&tenant, &r.survey_id, &r.question_key)
            .await?;
        let kind = kind.ok_or_else(|| ApiError::invalid("question_key", "is required"))?;
        if !dm::metrics_of(kind).contains(&metric) {
            return Err(ApiError::invalid(
                "metric",
                format!("does not apply to a {kind:?} question"),
            )
            .into());
        }
        // Sides may share responses (a touchpoint against the whole survey, a month against
        // its quarter); the comparison needs them apart. The shared part is read first:
        // responses are only ever added, so both sides, read after it, hold all of its
        // answers and taking it out of them is exact. (A response stored between the reads
        // counts as a side's own, as it would without any overlap.)
        let shared = match a.0.intersect(&b.0).zip(a.1.intersect(&b.1)) {
            Some((slice, range)) => {
                self.histogram_total(&tenant, &r.survey_id, &r.question_key, min, &slice, range)
                    .await?
            }
            None => Histogram::new(),
        };
        let ha = self
            .histogram_total(&tenant, &r.survey_id, &r.question_key, min, &a.0, a.1)
            .await?;
        let hb = self
            .histogram_total(&tenant, &r.survey_id, &r.question_key, min, &b.0, b.1)
            .await?;
        let c = metric.compare_overlapping(cxloop_metrics::Overlap {
            only_a: &ha.without(&shared),
            both: &shared,
            only_b: &hb.without(&shared),
        });
        Ok(Response::new(pb::CompareMetricsResponse {
            comparison: Some(comparison_pb(&c)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_answer_fits_four_mebibytes_with_a_refused_message_on_top() {
        // The longest reason, at the largest indexes a refused message can have.
        let reasons = [
            format!("a stream carries at most {MAX_IMPORT_STREAM} items; send the rest in another"),
            "this message's results alone would pass the answer's limit; send fewer items per \
             message"
                .to_string(),
        ];
        let refused: usize = reasons
            .iter()
            .map(|reason| {
                (0..MAX_IMPORT_BATCH as u64)
                    .map(|i| result_bytes(&whole_message_refusal(MAX_IMPORT_STREAM + i, reason)))
                    .sum()
            })
            .max()
            .unwrap_or_default();
        let counts = pb::ImportResponsesResponse {
            accepted: MAX_IMPORT_STREAM,
            duplicates: MAX_IMPORT_STREAM,
            rejected: MAX_IMPORT_STREAM,
            ..Default::default()
        }
        .encoded_len();
        assert!(MAX_IMPORT_ANSWER_BYTES + refused + counts < 4 * 1024 * 1024);
    }

    #[test]
    fn a_pending_item_is_counted_at_its_largest_result() {
        let rid = "r".repeat(128);
        let results = [
            pb::ImportItemResult {
                index: 24_999,
                request_id: rid.clone(),
                outcome: pb::ImportOutcome::Accepted as i32,
                response_id: cxloop_platform::db::new_id(),
                violations: vec![],
            },
            pb::ImportItemResult {
                index: 24_999,
                request_id: rid.clone(),
                outcome: pb::ImportOutcome::Rejected as i32,
                response_id: String::new(),
                violations: violations_pb(vec![conflict_violation()]),
            },
        ];
        let mut changed = results[1].clone();
        changed.violations = violations_pb(vec![changed_violation()]);
        let bound = pending_result_bytes(24_999, &rid);
        assert!(results.iter().all(|r| result_bytes(r) <= bound));
        assert_eq!(
            bound,
            results
                .iter()
                .chain([&changed])
                .map(result_bytes)
                .max()
                .unwrap_or_default()
        );
        // A refusal the check before storing found is counted at its own size.
        let v = vec![("response.answers".to_string(), "x".repeat(500))];
        assert!(refused_result_bytes(24_999, &rid, &v) > bound);
        assert_eq!(refused_result_bytes(24_999, &rid, &[]), 0);
        // The figures docs/api.md gives.
        assert_eq!(
            pending_result_bytes(24_999, &cxloop_platform::db::new_id()),
            112
        );
        assert_eq!(pending_result_bytes(24_999, &rid), 206);
        // 36-character ids: the stream's item limit is reached well inside the budget.
        let uuid = cxloop_platform::db::new_id();
        assert!(
            MAX_IMPORT_STREAM as usize * pending_result_bytes(24_999, &uuid)
                < MAX_IMPORT_ANSWER_BYTES
        );
    }

    #[test]
    fn a_metrics_bucket_takes_the_bytes_the_api_docs_give() {
        // A day of NPS answers on every point of the scale, thousands each: the largest
        // values a day's bucket carries (docs/api.md, "Message sizes").
        let mut h = Histogram::new();
        for score in 0..=10 {
            h.add(score, 100_000 + score as u64);
        }
        let day = period::parse_named("2026-11-24").unwrap_or_else(|e| panic!("{e}"));
        let size = |with_values| {
            let b = bucket_pb(day, Some(QuestionKind::Nps), &h, with_values);
            let n = b.encoded_len();
            1 + prost::length_delimiter_len(n) + n
        };
        let (full, histogram) = (size(true), size(false));
        assert!(full <= 360, "{full}");
        assert!(histogram <= 115, "{histogram}");
        // So the largest batch of buckets (36,600 of the full view) stays under 16 MB.
        assert!(MAX_BATCH_VALUE_BUCKETS * full < 16_000_000);
        // The dense view of a year of such days: 33 bytes a day, so the largest dense batch
        // (183,000 buckets) is about 6 MB.
        let year = pb::DenseCounts {
            scale_min: 0,
            scale_points: 11,
            counts: (0..366 * 11).map(|i| 100_000 + i as u64).collect(),
        };
        let per_day = year.encoded_len() as f64 / 366.0;
        assert!((33.0..34.0).contains(&per_day), "{per_day}");
        assert!((MAX_BATCH_DENSE_BUCKETS as f64 * per_day) < 6_300_000.0);
    }
}
