//! One error type for every service's API and its one mapping to `tonic::Status` with
//! `google.rpc` details, so a client sees the same shape of error from every service.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

/// The result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

/// Everything that can go wrong in a call, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: nothing was changed. Each violation names the field by its path.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<(String, String)>),
    /// The resource does not exist for this tenant (also when it exists for another tenant).
    #[error("{kind} {id} not found")]
    NotFound {
        /// Resource type, e.g. "cxloop.feedback.v1.Survey".
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A create with a request_id that was used before with other content.
    #[error("{0}")]
    AlreadyExists(String),
    /// The resource is in a state that does not allow the call.
    #[error("failed precondition: {description}")]
    FailedPrecondition {
        /// Violation type, e.g. "QUESTION_KIND_CHANGED".
        kind: String,
        /// The resource it concerns.
        subject: String,
        /// What is wrong.
        description: String,
    },
    /// No valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Valid credentials without the permission for the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A dependency (database, another service) is down; the call can be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected storage error. The message never carries SQL.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(v: &[(String, String)]) -> String {
    v.iter()
        .map(|(f, d)| format!("{f}: {d}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// A single field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![(field.into(), description.into())])
    }

    /// A not-found error for a resource type and id.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// A state conflict.
    pub fn precondition(
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        ApiError::FailedPrecondition {
            kind: kind.into(),
            subject: subject.into(),
            description: description.into(),
        }
    }
}

/// Most bytes of field paths and descriptions an error's BadRequest details carry. An error
/// travels in the call's trailers, base64-encoded beside its message, and grpc-java and
/// grpc-core refuse trailers over 8 KiB (a journey map naming 45 unknown touchpoints would make
/// about 10 KB): the details stay under 3,500 bytes (about 4.7 KB encoded) and the message under 400.
const MAX_VIOLATION_BYTES: usize = 3_500;
/// Most bytes of an error's message (`grpc-message`), which lists the first violations.
const MAX_MESSAGE_BYTES: usize = 400;

/// The message and the details of an INVALID_ARGUMENT error, kept small enough for any
/// client's trailers: the first violations in full; when more did not fit, one more entry on
/// the first left-out field saying how many were left out.
/// Longest field path or description kept in an error, in bytes.
const MAX_VIOLATION_PART_BYTES: usize = 512;

fn shortened(mut s: String) -> String {
    if s.len() > MAX_VIOLATION_PART_BYTES {
        let mut cut = MAX_VIOLATION_PART_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn bounded_violations(v: Vec<(String, String)>) -> (String, Vec<FieldViolation>) {
    let total = v.len();
    let mut bytes = 0;
    let mut kept = Vec::new();
    let mut rest = v.into_iter();
    for (field, description) in rest.by_ref() {
        // A violation may quote what the client sent (a mask path, an id); a quote of a
        // megabyte would make the error itself too large to deliver.
        let (field, description) = (shortened(field), shortened(description));
        bytes += field.len() + description.len() + 8;
        if bytes > MAX_VIOLATION_BYTES && !kept.is_empty() {
            let left = total - kept.len();
            kept.push((
                field,
                format!(
                    "and {left} more violations (this one included) left out to keep the error \
                     small; fix the ones before and retry"
                ),
            ));
            break;
        }
        kept.push((field, description));
    }
    let mut message = format!("invalid argument: {}", describe(&kept));
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!(" … ({total} violations in the error's details)"));
    }
    let violations = kept
        .into_iter()
        .map(|(f, d)| FieldViolation::new(f, d))
        .collect();
    (message, violations)
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::InvalidArgument(v) => {
                let (message, violations) = bounded_violations(v);
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::NotFound { kind, id } => {
                // The id is the client's: a megabyte of it is not sent back, twice.
                let id = shortened(id);
                Status::with_error_details(
                    Code::NotFound,
                    format!("{kind} {id} not found"),
                    ErrorDetails::with_resource_info(kind, id, "", "not found"),
                )
            }
            ApiError::AlreadyExists(_) => Status::new(Code::AlreadyExists, message),
            ApiError::FailedPrecondition {
                kind,
                subject,
                description,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                    kind,
                    subject,
                    description,
                )]),
            ),
            ApiError::Unauthenticated(_) => Status::new(Code::Unauthenticated, message),
            ApiError::PermissionDenied(_) => Status::new(Code::PermissionDenied, message),
            ApiError::Unavailable(_) => Status::new(Code::Unavailable, message),
            ApiError::Internal(_) => Status::new(Code::Internal, message),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        // The full error goes to the log; the client gets no SQL text.
        tracing::error!(error = %e, "storage error");
        match e {
            sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => {
                ApiError::Unavailable("storage is unavailable, retry later".into())
            }
            // Contention, not a fault: SQLite's busy timeout ran out, PostgreSQL chose this
            // transaction as a deadlock or serialization victim, or another replica committed
            // the same key first (two replicas taking one new request id at the same moment).
            // Nothing was written; a retry succeeds, and finds the other's result.
            e if is_contention(&e.to_string()) => {
                ApiError::Unavailable("storage is busy, retry shortly".into())
            }
            // PostgreSQL refuses U+0000 in text. Text fields are checked for it where they are
            // parsed; this catches an id or filter that reaches a query unchecked.
            e if e
                .to_string()
                .contains("invalid byte sequence for encoding \"UTF8\": 0x00") =>
            {
                ApiError::InvalidArgument(vec![(
                    String::new(),
                    "text must not contain the NUL character (U+0000)".into(),
                )])
            }
            _ => ApiError::Internal("storage error".into()),
        }
    }
}

fn is_contention(message: &str) -> bool {
    [
        "database is locked",
        "database table is locked",
        "deadlock detected",
        "could not serialize access",
        // PostgreSQL's unique violation (SQLite's single writer per file never races on one).
        "duplicate key value violates unique constraint",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Collects field violations while a request is parsed, so a caller sees every problem at
/// once instead of one per round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// Records the violation of a result and returns its value, if any.
    pub fn check<T>(&mut self, r: Result<T, (String, String)>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(v) => {
                self.0.push(v);
                None
            }
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations recorded so far, as (field, description).
    pub fn into_inner(self) -> Vec<(String, String)> {
        self.0
    }

    /// Ok when nothing was recorded, otherwise INVALID_ARGUMENT with every violation.
    pub fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}

/// The id a Get, Update or Delete names, checked: required, at most 128 characters (longer
/// than any id given out) and without U+0000. Else INVALID_ARGUMENT on `field`, not a
/// NOT_FOUND that would echo a client's megabyte.
pub fn resource_id<'a>(field: &str, id: &'a str) -> ApiResult<&'a str> {
    let mut v = Violations::new();
    check_len(&mut v, field, id, 1, 128);
    v.finish()?;
    Ok(id)
}

/// Adds a violation when `s` is not `min..=max` characters long (the message says "at most"
/// when empty is allowed).
pub fn check_len(v: &mut Violations, field: &str, s: &str, min: usize, max: usize) {
    // PostgreSQL cannot store U+0000 in text; refused here it names its field instead of
    // failing the write that carries it.
    if s.contains('\0') {
        v.add(field, "must not contain the NUL character (U+0000)");
        return;
    }
    let n = s.chars().count();
    if n < min || n > max {
        if min == 0 {
            v.add(field, format!("must be at most {max} characters"));
        } else {
            v.add(field, format!("must be {min}-{max} characters"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_found_id_of_a_megabyte_comes_back_short() {
        let status = Status::from(ApiError::not_found(
            "cxloop.feedback.v1.Survey",
            "x".repeat(1 << 20),
        ));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().len() < 600, "{}", status.message().len());
        let info = status.get_details_resource_info().expect("resource info");
        assert_eq!(info.resource_type, "cxloop.feedback.v1.Survey");
        assert!(info.resource_name.len() <= MAX_VIOLATION_PART_BYTES + 3);
    }

    #[test]
    fn a_violation_quoting_a_megabyte_stays_small() {
        let huge = "é".repeat(500_000);
        let status = Status::from(ApiError::InvalidArgument(vec![(
            "update_mask.paths[0]".to_string(),
            format!("unknown field {huge:?}"),
        )]));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status
            .get_details_bad_request()
            .expect("bad request details");
        let v = &details.field_violations[0];
        assert_eq!(v.field, "update_mask.paths[0]");
        assert!(v.description.starts_with("unknown field \"éé"));
        assert!(v.description.len() <= MAX_VIOLATION_PART_BYTES + 3);
        assert!(status.message().len() < 4096);
    }

    #[test]
    fn a_long_list_of_violations_stays_small_enough_for_any_clients_trailers() {
        let many: Vec<(String, String)> = (0..1000)
            .map(|i| {
                (
                    format!("stages[{i}].touchpoint_ids[0]"),
                    format!("no touchpoint {i:036}"),
                )
            })
            .collect();
        let status = Status::from(ApiError::InvalidArgument(many));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().len() < MAX_MESSAGE_BYTES + 64,
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("1000 violations"),
            "{}",
            status.message()
        );
        assert!(status.details().len() < MAX_VIOLATION_BYTES + 512);
        let details = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("no details"));
        let v = &details.field_violations;
        assert_eq!(v[0].field, "stages[0].touchpoint_ids[0]");
        let last = v.last().unwrap_or_else(|| panic!("empty"));
        assert_eq!(
            last.field,
            format!("stages[{}].touchpoint_ids[0]", v.len() - 1)
        );
        assert!(
            last.description
                .contains(&format!("{} more", 1000 - v.len() + 1))
        );
        // A short list goes out whole, message and all.
        let few = ApiError::InvalidArgument(vec![
            ("a".into(), "bad".into()),
            ("b".into(), "worse".into()),
        ]);
        let status = Status::from(few);
        assert_eq!(status.message(), "invalid argument: a: bad; b: worse");
        let details = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("no details"));
        assert_eq!(details.field_violations.len(), 2);
    }

    #[test]
    fn contention_is_retryable_and_other_storage_errors_are_internal() {
        let code = |e: sea_orm::DbErr| tonic::Status::from(ApiError::from(e)).code();
        let exec = |m: &str| sea_orm::DbErr::Exec(sea_orm::RuntimeErr::Internal(m.into()));
        assert_eq!(
            code(exec(
                "error returned from database: (code: 5) database is locked"
            )),
            Code::Unavailable
        );
        assert_eq!(
            code(exec("error returned from database: deadlock detected")),
            Code::Unavailable
        );
        assert_eq!(
            code(exec(
                "error returned from database: duplicate key value violates unique constraint \"fb_responses_request\""
            )),
            Code::Unavailable
        );
        assert_eq!(code(exec("no such table: fb_x")), Code::Internal);
        // PostgreSQL refusing U+0000 in an id that reached a query unchecked: bad input.
        assert_eq!(
            code(exec(
                "error returned from database: invalid byte sequence for encoding \"UTF8\": 0x00"
            )),
            Code::InvalidArgument
        );
        // The client never sees the SQL or the driver's words.
        let status = tonic::Status::from(ApiError::from(exec("no such table: fb_x")));
        assert!(!status.message().contains("fb_x"), "{}", status.message());
    }
}
