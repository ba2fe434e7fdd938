//! The feedback tables: the only module that knows them. Reads and writes for touchpoints and
//! surveys, reads of responses and rollups; response ingestion is in [`ingest`].

pub mod cache;
mod checkpoint;
mod conn;
pub(crate) mod events;
mod flush;
pub mod ingest;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cxloop_metrics::Histogram;
use cxloop_platform::TenantId;
use cxloop_platform::db::{self, stmt};
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::idempotency::{self, Prior};
use cxloop_platform::paging::Page;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Value};

use crate::domain::{AnswerValue, Question, SliceFilter, SurveyDef};

const IDEMPOTENCY: &str = "fb_idempotency";
/// Resource type names for NOT_FOUND details.
pub const TOUCHPOINT: &str = "cxloop.feedback.v1.Touchpoint";
/// Resource type name of surveys.
pub const SURVEY: &str = "cxloop.feedback.v1.Survey";
/// Resource type name of responses.
pub const RESPONSE: &str = "cxloop.feedback.v1.Response";

/// A stored touchpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TouchpointRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Channel wire value.
    pub channel: i32,
    /// Journey stage reference.
    pub journey_stage_id: String,
    /// Moment of truth.
    pub moment_of_truth: bool,
    /// Created, µs.
    pub created_at: i64,
    /// Updated, µs.
    pub updated_at: i64,
    /// Deleted, µs; `None` while live.
    pub deleted_at: Option<i64>,
}

/// Touchpoint fields a client sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TouchpointInput {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Channel wire value.
    pub channel: i32,
    /// Journey stage reference.
    pub journey_stage_id: String,
    /// Moment of truth.
    pub moment_of_truth: bool,
}

/// A stored survey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Questions.
    pub questions: Vec<Question>,
    /// Touchpoints, in the order given.
    pub touchpoint_ids: Vec<String>,
    /// Created, µs.
    pub created_at: i64,
    /// Updated, µs.
    pub updated_at: i64,
}

/// Survey fields a client sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyInput {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Questions.
    pub questions: Vec<Question>,
    /// Touchpoints.
    pub touchpoint_ids: Vec<String>,
}

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseRow {
    /// Id.
    pub id: String,
    /// Client request id.
    pub request_id: String,
    /// Survey.
    pub survey_id: String,
    /// Touchpoint.
    pub touchpoint_id: String,
    /// Occurred, µs.
    pub occurred_at: i64,
    /// Channel wire value.
    pub channel: i32,
    /// Org unit.
    pub org_unit_id: String,
    /// Segment.
    pub segment: String,
    /// Customer key.
    pub customer_key: String,
    /// Comment.
    pub comment: String,
    /// Answers.
    pub answers: Vec<(String, AnswerValue)>,
    /// Stored, µs.
    pub created_at: i64,
}

/// Filters of ListResponses.
#[derive(Clone, Debug, Default)]
pub struct ResponseFilter {
    /// Survey id, or empty.
    pub survey_id: String,
    /// Slice.
    pub slice: SliceFilter,
    /// occurred_at range in µs [from, to), if any.
    pub occurred: Option<(i64, i64)>,
}

/// A SELECT's conditions with their bound values, so list and rollup queries add the same
/// filters the same way.
struct Conditions {
    sql: String,
    values: Vec<Value>,
}

impl Conditions {
    /// `select` must end in a WHERE clause's first condition with one placeholder (the tenant).
    fn new(select: String, tenant: &TenantId) -> Self {
        Self {
            sql: select,
            values: vec![tenant.as_str().into()],
        }
    }

    fn eq(&mut self, col: &str, v: impl Into<Value>) {
        self.sql.push_str(&format!(" AND {col} = ?"));
        self.values.push(v.into());
    }

    /// The slice's set dimensions, on tables with touchpoint_id, org_unit_id, channel, segment.
    fn slice(&mut self, s: &SliceFilter) {
        if !s.touchpoint_id.is_empty() {
            self.eq("touchpoint_id", s.touchpoint_id.clone());
        }
        if !s.org_unit_id.is_empty() {
            self.eq("org_unit_id", s.org_unit_id.clone());
        }
        if s.channel != 0 {
            self.eq("channel", i64::from(s.channel));
        }
        if !s.segment.is_empty() {
            self.eq("segment", s.segment.clone());
        }
    }

    /// Keyset paging by id: one row more than the page, to tell whether another page exists.
    fn page(mut self, page: &Page) -> Self {
        if let Some(after) = &page.after {
            self.sql.push_str(" AND id > ?");
            self.values.push(after.clone().into());
        }
        self.sql
            .push_str(&format!(" ORDER BY id LIMIT {}", page.size + 1));
        self
    }

    fn statement(self, backend: DbBackend) -> sea_orm::Statement {
        stmt(backend, &self.sql, self.values)
    }
}

/// Storage of the feedback service.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Bumped after every committed change to a survey or touchpoint, so that ingestion
    /// drops its cached definitions.
    config_version: Arc<AtomicU64>,
    /// Daily slice histograms in memory (embedded SQLite only: one writer).
    cache: Option<Arc<cache::RollupCache>>,
}

fn get<T: sea_orm::TryGetable>(r: &QueryResult, i: usize) -> ApiResult<T> {
    Ok(r.try_get_by_index(i)?)
}

fn corrupt(what: &str) -> ApiError {
    tracing::error!(what, "stored document cannot be read");
    ApiError::Internal(format!("stored {what} cannot be read"))
}

/// Stored form of answers: compact JSON, `[{"k":"nps","s":9},{"k":"why","t":"…"}]`.
/// Written by hand: this runs for every ingested response, and a serde_json::Value tree per
/// answer cost more than the insert itself.
pub(crate) fn answers_json(answers: &[(String, AnswerValue)]) -> String {
    let mut out = String::with_capacity(16 + answers.len() * 24);
    out.push('[');
    for (i, (k, v)) in answers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"k\":");
        push_json_str(&mut out, k);
        match v {
            AnswerValue::Score(s) => {
                out.push_str(",\"s\":");
                out.push_str(&s.to_string());
            }
            AnswerValue::Text(t) => {
                out.push_str(",\"t\":");
                push_json_str(&mut out, t);
            }
        }
        out.push('}');
    }
    out.push(']');
    out
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; a plain key needs no escaping at all.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

fn answers_from_json(s: &str) -> ApiResult<Vec<(String, AnswerValue)>> {
    let v: Vec<serde_json::Value> = serde_json::from_str(s).map_err(|_| corrupt("answers"))?;
    v.into_iter()
        .map(|a| {
            let k = a
                .get("k")
                .and_then(|k| k.as_str())
                .ok_or_else(|| corrupt("answers"))?;
            let value = if let Some(s) = a.get("s").and_then(|s| s.as_i64()) {
                AnswerValue::Score(i32::try_from(s).map_err(|_| corrupt("answers"))?)
            } else {
                AnswerValue::Text(
                    a.get("t")
                        .and_then(|t| t.as_str())
                        .ok_or_else(|| corrupt("answers"))?
                        .to_owned(),
                )
            };
            Ok((k.to_owned(), value))
        })
        .collect()
}

const TOUCHPOINT_COLS: &str = "id, name, description, channel, journey_stage_id, moment_of_truth, created_at, updated_at, deleted_at";

fn touchpoint_row(r: &QueryResult) -> ApiResult<TouchpointRow> {
    Ok(TouchpointRow {
        id: get(r, 0)?,
        name: get(r, 1)?,
        description: get(r, 2)?,
        channel: get::<i64>(r, 3)? as i32,
        journey_stage_id: get(r, 4)?,
        moment_of_truth: get::<i64>(r, 5)? != 0,
        created_at: get(r, 6)?,
        updated_at: get(r, 7)?,
        deleted_at: get(r, 8)?,
    })
}

const RESPONSE_COLS: &str = "id, request_id, survey_id, touchpoint_id, occurred_at, channel, org_unit_id, segment, customer_key, comment, answers, created_at";

fn response_row(r: &QueryResult) -> ApiResult<ResponseRow> {
    Ok(ResponseRow {
        id: get(r, 0)?,
        request_id: get(r, 1)?,
        survey_id: get(r, 2)?,
        touchpoint_id: get(r, 3)?,
        occurred_at: get(r, 4)?,
        channel: get::<i64>(r, 5)? as i32,
        org_unit_id: get(r, 6)?,
        segment: get(r, 7)?,
        customer_key: get(r, 8)?,
        comment: get(r, 9)?,
        answers: answers_from_json(&get::<String>(r, 10)?)?,
        created_at: get(r, 11)?,
    })
}

/// Most ids in one `IN (…)` list: a batch names as many surveys and touchpoints as its
/// clients chose, and SQLite refuses a statement of more than 32,766 variables (the list is
/// padded to a power of two), which would fail the whole batch for every caller in it.
const IN_LIST_MAX: usize = 4096;

/// Locks a row for the rest of a write transaction before it is read to be changed. On
/// SQLite the write transaction (BEGIN IMMEDIATE) already excludes every other writer; on
/// PostgreSQL, at READ COMMITTED, a plain read would let two updates both read the old row
/// and the later write back what the earlier one changed.
async fn lock_row<C: ConnectionTrait>(
    c: &C,
    table: &str,
    tenant: &TenantId,
    id: &str,
) -> ApiResult<()> {
    if c.get_database_backend() == sea_orm::DbBackend::Postgres {
        c.query_one_raw(stmt(
            c.get_database_backend(),
            &format!("SELECT id FROM {table} WHERE tenant_id = ? AND id = ? FOR UPDATE"),
            vec![tenant.as_str().into(), id.into()],
        ))
        .await?;
    }
    Ok(())
}

impl Store {
    /// A store over this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        // SQLite means the embedded mode: this process is the file's only writer, so the
        // rollup cache can follow every commit (see `cache`).
        let cache = (db.get_database_backend() == DbBackend::Sqlite)
            .then(|| Arc::new(cache::RollupCache::default()));
        Self {
            db,
            config_version: Arc::new(AtomicU64::new(0)),
            cache,
        }
    }

    /// The in-memory rollup cache, when this process is the only writer.
    pub fn rollup_cache(&self) -> Option<Arc<cache::RollupCache>> {
        self.cache.clone()
    }

    /// The counter ingestion watches for survey and touchpoint changes.
    pub fn config_version(&self) -> Arc<AtomicU64> {
        self.config_version.clone()
    }

    fn changed(&self) {
        self.config_version.fetch_add(1, Ordering::AcqRel);
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    // ---- touchpoints ----

    /// Creates a touchpoint once per request id.
    pub async fn create_touchpoint(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        input: &TouchpointInput,
    ) -> ApiResult<TouchpointRow> {
        let txn = db::begin_write(&self.db).await?;
        if let Prior::Same(id) = idempotency::check(
            &txn,
            IDEMPOTENCY,
            tenant,
            "CreateTouchpoint",
            request_id,
            hash,
        )
        .await?
        {
            txn.commit().await?;
            return self.get_touchpoint_any(tenant, &id).await;
        }
        let id = db::new_id();
        let now = db::now_micros();
        txn.execute_raw(stmt(
            self.backend(),
            "INSERT INTO fb_touchpoints (tenant_id, id, name, description, channel, journey_stage_id, moment_of_truth, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                tenant.as_str().into(),
                id.clone().into(),
                input.name.clone().into(),
                input.description.clone().into(),
                i64::from(input.channel).into(),
                input.journey_stage_id.clone().into(),
                i64::from(input.moment_of_truth).into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?;
        idempotency::remember(
            &txn,
            IDEMPOTENCY,
            tenant,
            "CreateTouchpoint",
            request_id,
            hash,
            &id,
        )
        .await?;
        txn.commit().await?;
        self.changed();
        Ok(TouchpointRow {
            id,
            name: input.name.clone(),
            description: input.description.clone(),
            channel: input.channel,
            journey_stage_id: input.journey_stage_id.clone(),
            moment_of_truth: input.moment_of_truth,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        })
    }

    /// A touchpoint, also when deleted (to answer a retried create).
    async fn get_touchpoint_any(&self, tenant: &TenantId, id: &str) -> ApiResult<TouchpointRow> {
        let row = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                &format!(
                    "SELECT {TOUCHPOINT_COLS} FROM fb_touchpoints WHERE tenant_id = ? AND id = ?"
                ),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(TOUCHPOINT, id))?;
        touchpoint_row(&row)
    }

    /// A live touchpoint.
    pub async fn get_touchpoint(&self, tenant: &TenantId, id: &str) -> ApiResult<TouchpointRow> {
        let row = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                &format!("SELECT {TOUCHPOINT_COLS} FROM fb_touchpoints WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL"),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(TOUCHPOINT, id))?;
        touchpoint_row(&row)
    }

    /// A page of live touchpoints, by id (creation order).
    pub async fn list_touchpoints(
        &self,
        tenant: &TenantId,
        channel: i32,
        show_deleted: bool,
        page: &Page,
    ) -> ApiResult<Vec<TouchpointRow>> {
        let live = if show_deleted {
            ""
        } else {
            " AND deleted_at IS NULL"
        };
        let mut q = Conditions::new(
            format!("SELECT {TOUCHPOINT_COLS} FROM fb_touchpoints WHERE tenant_id = ?{live}"),
            tenant,
        );
        if channel != 0 {
            q.eq("channel", i64::from(channel));
        }
        let rows = self
            .db
            .query_all_raw(q.page(page).statement(self.backend()))
            .await?;
        rows.iter().map(touchpoint_row).collect()
    }

    /// Changes a live touchpoint: `change` edits the stored row, read in the same write
    /// transaction (and on PostgreSQL locked), so two concurrent updates of different fields
    /// both take effect instead of the later one writing back the fields the earlier changed.
    pub async fn update_touchpoint(
        &self,
        tenant: &TenantId,
        id: &str,
        change: impl FnOnce(&mut TouchpointRow),
    ) -> ApiResult<TouchpointRow> {
        let txn = db::begin_write(&self.db).await?;
        lock_row(&txn, "fb_touchpoints", tenant, id).await?;
        let mut row = txn
            .query_one_raw(stmt(
                self.backend(),
                &format!("SELECT {TOUCHPOINT_COLS} FROM fb_touchpoints WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL"),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .map(|r| touchpoint_row(&r))
            .transpose()?
            .ok_or_else(|| ApiError::not_found(TOUCHPOINT, id))?;
        change(&mut row);
        let now = db::now_micros();
        let res = txn
            .execute_raw(stmt(
                self.backend(),
                "UPDATE fb_touchpoints SET name = ?, description = ?, channel = ?, journey_stage_id = ?, moment_of_truth = ?, updated_at = ? WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL",
                vec![
                    row.name.clone().into(),
                    row.description.clone().into(),
                    i64::from(row.channel).into(),
                    row.journey_stage_id.clone().into(),
                    i64::from(row.moment_of_truth).into(),
                    now.into(),
                    tenant.as_str().into(),
                    row.id.clone().into(),
                ],
            ))
            .await?;
        if res.rows_affected() == 0 {
            return Err(ApiError::not_found(TOUCHPOINT, row.id.clone()));
        }
        txn.commit().await?;
        self.changed();
        Ok(TouchpointRow {
            updated_at: now,
            ..row
        })
    }

    /// Marks a touchpoint deleted; its responses stay.
    pub async fn delete_touchpoint(&self, tenant: &TenantId, id: &str) -> ApiResult<()> {
        let res = self
            .db
            .execute_raw(stmt(
                self.backend(),
                "UPDATE fb_touchpoints SET deleted_at = ? WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL",
                vec![db::now_micros().into(), tenant.as_str().into(), id.into()],
            ))
            .await?;
        if res.rows_affected() == 0 {
            return Err(ApiError::not_found(TOUCHPOINT, id));
        }
        self.changed();
        Ok(())
    }

    /// Ids among these that are live touchpoints of the tenant.
    pub async fn live_touchpoints<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        ids: &[String],
    ) -> ApiResult<Vec<String>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_LIST_MAX) {
            let mut values: Vec<Value> = vec![tenant.as_str().into()];
            let ids_in = db::in_list(&mut values, chunk.iter().map(|i| Value::from(i.clone())));
            let rows = c
                .query_all_raw(stmt(
                    c.get_database_backend(),
                    &format!(
                        "SELECT id FROM fb_touchpoints WHERE tenant_id = ? AND deleted_at IS NULL AND id IN ({ids_in})"
                    ),
                    values,
                ))
                .await?;
            for r in &rows {
                out.push(get::<String>(r, 0)?);
            }
        }
        Ok(out)
    }

    // ---- surveys ----

    /// Every id of `ids` not in `kept` must name a live touchpoint.
    async fn check_touchpoints<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        ids: &[String],
        kept: &[String],
    ) -> ApiResult<()> {
        let live: std::collections::HashSet<String> = Self::live_touchpoints(c, tenant, ids)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !live.contains(*id) && !kept.contains(id))
            .map(|(i, id)| {
                (
                    format!("survey.touchpoint_ids[{i}]"),
                    format!("no touchpoint {id:?}"),
                )
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(missing))
        }
    }

    async fn write_survey_touchpoints<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        survey_id: &str,
        ids: &[String],
    ) -> ApiResult<()> {
        c.execute_raw(stmt(
            c.get_database_backend(),
            "DELETE FROM fb_survey_touchpoints WHERE tenant_id = ? AND survey_id = ?",
            vec![tenant.as_str().into(), survey_id.into()],
        ))
        .await?;
        if ids.is_empty() {
            return Ok(());
        }
        let mut values: Vec<Value> = Vec::new();
        for (i, t) in ids.iter().enumerate() {
            values.push(tenant.as_str().into());
            values.push(survey_id.into());
            values.push(t.clone().into());
            values.push((i as i64).into());
        }
        c.execute_raw(stmt(
            c.get_database_backend(),
            &format!(
                "INSERT INTO fb_survey_touchpoints (tenant_id, survey_id, touchpoint_id, position) VALUES {}",
                db::row_placeholders(ids.len(), 4)
            ),
            values,
        ))
        .await?;
        Ok(())
    }

    /// Creates a survey once per request id.
    pub async fn create_survey(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        input: &SurveyInput,
    ) -> ApiResult<SurveyRow> {
        let txn = db::begin_write(&self.db).await?;
        if let Prior::Same(id) =
            idempotency::check(&txn, IDEMPOTENCY, tenant, "CreateSurvey", request_id, hash).await?
        {
            txn.commit().await?;
            return self.get_survey_any(tenant, &id).await;
        }
        Self::check_touchpoints(&txn, tenant, &input.touchpoint_ids, &[]).await?;
        let id = db::new_id();
        let now = db::now_micros();
        let questions = serde_json::to_string(&input.questions)
            .map_err(|e| ApiError::Internal(format!("encoding questions: {e}")))?;
        txn.execute_raw(stmt(
            self.backend(),
            "INSERT INTO fb_surveys (tenant_id, id, name, description, questions, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                tenant.as_str().into(),
                id.clone().into(),
                input.name.clone().into(),
                input.description.clone().into(),
                questions.into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?;
        Self::write_survey_touchpoints(&txn, tenant, &id, &input.touchpoint_ids).await?;
        idempotency::remember(
            &txn,
            IDEMPOTENCY,
            tenant,
            "CreateSurvey",
            request_id,
            hash,
            &id,
        )
        .await?;
        txn.commit().await?;
        self.changed();
        Ok(SurveyRow {
            id,
            name: input.name.clone(),
            description: input.description.clone(),
            questions: input.questions.clone(),
            touchpoint_ids: input.touchpoint_ids.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn load_surveys<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        where_sql: &str,
        mut values: Vec<Value>,
        limit: Option<u64>,
    ) -> ApiResult<Vec<(SurveyRow, bool)>> {
        values.insert(0, tenant.as_str().into());
        let mut sql = format!(
            "SELECT id, name, description, questions, created_at, updated_at, deleted_at FROM fb_surveys WHERE tenant_id = ? {where_sql} ORDER BY id"
        );
        if let Some(l) = limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let rows = c
            .query_all_raw(stmt(c.get_database_backend(), &sql, values))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let questions: Vec<Question> =
                serde_json::from_str(&get::<String>(r, 3)?).map_err(|_| corrupt("questions"))?;
            let deleted: Option<i64> = get(r, 6)?;
            out.push((
                SurveyRow {
                    id: get(r, 0)?,
                    name: get(r, 1)?,
                    description: get(r, 2)?,
                    questions,
                    touchpoint_ids: Vec::new(),
                    created_at: get(r, 4)?,
                    updated_at: get(r, 5)?,
                },
                deleted.is_some(),
            ));
        }
        if !out.is_empty() {
            let mut values: Vec<Value> = vec![tenant.as_str().into()];
            let ids_in = db::in_list(
                &mut values,
                out.iter().map(|(s, _)| Value::from(s.id.clone())),
            );
            let rows = c
                .query_all_raw(stmt(
                    c.get_database_backend(),
                    &format!(
                        "SELECT survey_id, touchpoint_id FROM fb_survey_touchpoints WHERE tenant_id = ? AND survey_id IN ({ids_in}) ORDER BY survey_id, position"
                    ),
                    values,
                ))
                .await?;
            for r in &rows {
                let sid: String = get(r, 0)?;
                let tid: String = get(r, 1)?;
                if let Some((s, _)) = out.iter_mut().find(|(s, _)| s.id == sid) {
                    s.touchpoint_ids.push(tid);
                }
            }
        }
        Ok(out)
    }

    /// A survey for metrics: deleted surveys keep their history, so they still answer.
    pub async fn get_survey_for_metrics(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> ApiResult<SurveyRow> {
        self.get_survey_any(tenant, id).await
    }

    async fn get_survey_any(&self, tenant: &TenantId, id: &str) -> ApiResult<SurveyRow> {
        Self::load_survey(&self.db, tenant, id, false).await
    }

    /// A live survey.
    pub async fn get_survey(&self, tenant: &TenantId, id: &str) -> ApiResult<SurveyRow> {
        Self::load_survey(&self.db, tenant, id, true).await
    }

    /// One survey, only if live when `live_only`.
    async fn load_survey<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        id: &str,
        live_only: bool,
    ) -> ApiResult<SurveyRow> {
        let condition = if live_only {
            "AND id = ? AND deleted_at IS NULL"
        } else {
            "AND id = ?"
        };
        Self::load_surveys(c, tenant, condition, vec![id.into()], None)
            .await?
            .into_iter()
            .next()
            .map(|(s, _)| s)
            .ok_or_else(|| ApiError::not_found(SURVEY, id))
    }

    /// The survey definitions and the live touchpoints among these ids, as the ingest writer
    /// checks responses against them; read through this store's connection.
    pub async fn ingest_definitions(
        &self,
        tenant: &TenantId,
        survey_ids: &[String],
        touchpoint_ids: &[String],
    ) -> ApiResult<(Vec<SurveyDef>, Vec<String>)> {
        Ok((
            Self::survey_defs(&self.db, tenant, survey_ids).await?,
            Self::live_touchpoints(&self.db, tenant, touchpoint_ids).await?,
        ))
    }

    /// Survey definitions by id, deleted ones included (ingest refuses those with a reason).
    pub async fn survey_defs<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        ids: &[String],
    ) -> ApiResult<Vec<SurveyDef>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_LIST_MAX) {
            let mut values: Vec<Value> = Vec::new();
            let ids_in = db::in_list(&mut values, chunk.iter().map(|i| Value::from(i.clone())));
            let rows =
                Self::load_surveys(c, tenant, &format!("AND id IN ({ids_in})"), values, None)
                    .await?;
            out.extend(rows.into_iter().map(|(s, deleted)| SurveyDef {
                id: s.id,
                questions: s.questions,
                touchpoint_ids: s.touchpoint_ids,
                deleted,
            }));
        }
        Ok(out)
    }

    /// A page of live surveys, optionally only those asked at a touchpoint.
    pub async fn list_surveys(
        &self,
        tenant: &TenantId,
        touchpoint_id: &str,
        page: &Page,
    ) -> ApiResult<Vec<SurveyRow>> {
        let mut where_sql = String::from("AND deleted_at IS NULL");
        let mut values: Vec<Value> = Vec::new();
        if !touchpoint_id.is_empty() {
            where_sql.push_str(
                " AND id IN (SELECT survey_id FROM fb_survey_touchpoints WHERE tenant_id = ? AND touchpoint_id = ?)",
            );
            values.push(tenant.as_str().into());
            values.push(touchpoint_id.into());
        }
        if let Some(after) = &page.after {
            where_sql.push_str(" AND id > ?");
            values.push(after.clone().into());
        }
        Ok(
            Self::load_surveys(&self.db, tenant, &where_sql, values, Some(page.size + 1))
                .await?
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
        )
    }

    /// Replaces a live survey's fields after `check` approves the change against the stored
    /// survey, in one transaction.
    pub async fn update_survey(
        &self,
        tenant: &TenantId,
        id: &str,
        change: impl FnOnce(SurveyRow) -> ApiResult<SurveyRow>,
    ) -> ApiResult<SurveyRow> {
        let txn = db::begin_write(&self.db).await?;
        lock_row(&txn, "fb_surveys", tenant, id).await?;
        let current = Self::load_survey(&txn, tenant, id, true).await?;
        let touchpoints_before = current.touchpoint_ids.clone();
        let mut next = change(current)?;
        if next.touchpoint_ids != touchpoints_before {
            // Only touchpoints new to the survey must be live: one deleted since it was added
            // stays listed (its responses stay too), and a client sending the list back with
            // one more id must not be refused for the one it did not change.
            Self::check_touchpoints(&txn, tenant, &next.touchpoint_ids, &touchpoints_before)
                .await?;
            Self::write_survey_touchpoints(&txn, tenant, id, &next.touchpoint_ids).await?;
        }
        next.updated_at = db::now_micros();
        let questions = serde_json::to_string(&next.questions)
            .map_err(|e| ApiError::Internal(format!("encoding questions: {e}")))?;
        txn.execute_raw(stmt(
            self.backend(),
            "UPDATE fb_surveys SET name = ?, description = ?, questions = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
            vec![
                next.name.clone().into(),
                next.description.clone().into(),
                questions.into(),
                next.updated_at.into(),
                tenant.as_str().into(),
                id.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        self.changed();
        Ok(next)
    }

    /// Marks a survey deleted; its responses stay.
    pub async fn delete_survey(&self, tenant: &TenantId, id: &str) -> ApiResult<()> {
        let res = self
            .db
            .execute_raw(stmt(
                self.backend(),
                "UPDATE fb_surveys SET deleted_at = ? WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL",
                vec![db::now_micros().into(), tenant.as_str().into(), id.into()],
            ))
            .await?;
        if res.rows_affected() == 0 {
            return Err(ApiError::not_found(SURVEY, id));
        }
        self.changed();
        Ok(())
    }

    // ---- responses ----

    /// One response.
    pub async fn get_response(&self, tenant: &TenantId, id: &str) -> ApiResult<ResponseRow> {
        let row = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                &format!("SELECT {RESPONSE_COLS} FROM fb_responses WHERE tenant_id = ? AND id = ?"),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(RESPONSE, id))?;
        response_row(&row)
    }

    /// A page of responses by id (storage order).
    pub async fn list_responses(
        &self,
        tenant: &TenantId,
        f: &ResponseFilter,
        page: &Page,
    ) -> ApiResult<Vec<ResponseRow>> {
        let mut q = Conditions::new(
            format!("SELECT {RESPONSE_COLS} FROM fb_responses WHERE tenant_id = ?"),
            tenant,
        );
        if !f.survey_id.is_empty() {
            q.eq("survey_id", f.survey_id.clone());
        }
        q.slice(&f.slice);
        if let Some((from, to)) = f.occurred {
            q.sql.push_str(" AND occurred_at >= ? AND occurred_at < ?");
            q.values.push(from.into());
            q.values.push(to.into());
        }
        let rows = self
            .db
            .query_all_raw(q.page(page).statement(self.backend()))
            .await?;
        rows.iter().map(response_row).collect()
    }

    // ---- rollups ----

    /// Per-day histograms of one measure (a question key, or "" for response counts, whose
    /// scale starts at `min`) over days [from, to), for a slice. Reads rollups only: the cost
    /// grows with days, not with the number of responses.
    pub async fn daily_histograms(
        &self,
        tenant: &TenantId,
        survey_id: &str,
        measure: &str,
        min: i32,
        slice: &SliceFilter,
        days: (i64, i64),
    ) -> ApiResult<Vec<(i64, Histogram)>> {
        let marginal = slice.marginal_key();
        let grouped = marginal.is_none();
        let mut q = match marginal {
            Some(key) => {
                let mut q = Conditions::new(
                    format!(
                        "SELECT day, {} FROM fb_rollup_slices WHERE tenant_id = ?",
                        hist_columns()
                    ),
                    tenant,
                );
                q.eq("survey_id", survey_id);
                q.eq("measure", measure);
                q.eq("slice", key);
                q
            }
            None => {
                // The series matching the filters (of one measure, or of all), then their days.
                let series_of = |measure: Option<&str>| {
                    let mut c = Conditions::new(
                        "SELECT id FROM fb_rollup_series WHERE tenant_id = ?".into(),
                        tenant,
                    );
                    c.eq("survey_id", survey_id);
                    if let Some(m) = measure {
                        c.eq("measure", m);
                    }
                    c.slice(slice);
                    c
                };
                // Since m0004 a response with a scored answer is counted in `n` of its first
                // answer's series, one without in h0 of the measure "" (as every response was
                // before): a count adds up h0 of the "" series and `n` of the others, exact
                // also for rows an older version writes during a rolling upgrade. (The "" rows'
                // `n` is added too: 0 as written now, the count itself in a database that ran
                // the first form of m0004, which moved it there.)
                let mut counted = None;
                let (series, sums): (Conditions, Vec<String>) = if measure.is_empty() {
                    let count = series_of(Some(COUNT_MEASURE));
                    let sum = format!(
                        "CAST(SUM(CASE WHEN series IN ({}) THEN h0 + n ELSE n END) AS BIGINT)",
                        count.sql
                    );
                    counted = Some(count.values);
                    let sums = std::iter::once(sum)
                        .chain((1..HIST_WIDTH).map(|_| "CAST(0 AS BIGINT)".to_owned()))
                        .collect();
                    (series_of(None), sums)
                } else {
                    let sums = (0..HIST_WIDTH)
                        .map(|i| format!("CAST(SUM(h{i}) AS BIGINT)"))
                        .collect();
                    (series_of(Some(measure)), sums)
                };
                let mut q = Conditions::new(
                    format!(
                        "SELECT day, {} FROM fb_rollup_series_days WHERE tenant_id = ? AND series IN ({})",
                        sums.join(", "),
                        series.sql
                    ),
                    tenant,
                );
                // Placeholders in the order they appear: the select list's first.
                if let Some(mut first) = counted {
                    first.append(&mut q.values);
                    q.values = first;
                }
                q.values.extend(series.values);
                q
            }
        };
        q.sql.push_str(" AND day >= ? AND day < ?");
        q.values.push(days.0.into());
        q.values.push(days.1.into());
        // A series per combination of the unfiltered dimensions: sum them per day.
        if grouped {
            q.sql.push_str(" GROUP BY day");
        }
        q.sql.push_str(" ORDER BY day");
        let rows = self.db.query_all_raw(q.statement(self.backend())).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let day: i64 = get(r, 0)?;
            let mut h = Histogram::new();
            for i in 0..HIST_WIDTH {
                let n: i64 = get(r, i + 1)?;
                // Columns past the scale's last point hold 0 and have no score.
                if n > 0 {
                    h.add(min + i as i32, n as u64);
                }
            }
            out.push((day, h));
        }
        Ok(out)
    }
}

impl Store {
    /// Daily histograms of many single-dimension slices (rollup keys) of one measure in one
    /// statement, by key; with `total_only` each key gets one entry (at the first day) that
    /// sums the whole range, added up by the database. A batch of scorecard queries reads a
    /// year of 50 touchpoints in one statement instead of fifty.
    #[allow(clippy::too_many_arguments)]
    pub async fn slice_histograms(
        &self,
        tenant: &TenantId,
        survey_id: &str,
        measure: &str,
        min: i32,
        keys: &[String],
        days: (i64, i64),
        total_only: bool,
    ) -> ApiResult<std::collections::HashMap<String, Vec<(i64, Histogram)>>> {
        let mut values: Vec<Value> = vec![
            tenant.as_str().into(),
            survey_id.into(),
            measure.into(),
            days.0.into(),
            days.1.into(),
        ];
        let list = db::in_list(&mut values, keys.iter().map(|k| Value::from(k.clone())));
        let filter = format!(
            "FROM fb_rollup_slices WHERE tenant_id = ? AND survey_id = ? AND measure = ? AND day >= ? AND day < ? AND slice IN ({list})"
        );
        // One row per slice, its days packed into text: SQLite hands rows from its worker
        // thread to the async side one at a time, and a year of fifty slices as 18,000 rows
        // cost a thread wake-up each, far more than packing and parsing them.
        let fields = if total_only {
            let sums: Vec<String> = (0..HIST_WIDTH)
                .map(|i| format!("CAST(SUM(h{i}) AS BIGINT)"))
                .collect();
            format!("MIN(day) || ',' || {}", sums.join(" || ',' || "))
        } else {
            let cols: Vec<String> = (0..HIST_WIDTH).map(|i| format!("h{i}")).collect();
            match self.backend() {
                DbBackend::Postgres => format!(
                    "string_agg(day || ',' || {}, ';')",
                    cols.join(" || ',' || ")
                ),
                // One printf per row is far fewer VM steps than twenty-two concatenations.
                _ => format!(
                    "group_concat(printf('{}', day, {}), ';')",
                    ["%d"; HIST_WIDTH + 1].join(","),
                    cols.join(", ")
                ),
            }
        };
        let sql = format!("SELECT slice, {fields} {filter} GROUP BY slice");
        let rows = self
            .db
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let mut out: std::collections::HashMap<String, Vec<(i64, Histogram)>> =
            std::collections::HashMap::with_capacity(keys.len());
        let bad = || ApiError::Internal("malformed packed rollup row".into());
        for r in &rows {
            let key: String = get(r, 0)?;
            let packed: String = get(r, 1)?;
            let mut series = Vec::new();
            for day_row in packed.split(';') {
                let mut nums = day_row.split(',').map(|x| x.parse::<i64>());
                let day = nums.next().ok_or_else(bad)?.map_err(|_| bad())?;
                let mut counts = [0u64; HIST_WIDTH];
                for (slot, n) in counts.iter_mut().zip(nums) {
                    *slot = n.map_err(|_| bad())?.max(0) as u64;
                }
                series.push((day, Histogram::from_dense(min, &counts)));
            }
            series.sort_by_key(|(d, _)| *d);
            out.insert(key, series);
        }
        Ok(out)
    }
}

/// Histogram columns of a rollup row.
pub(crate) const HIST_WIDTH: usize = crate::domain::MAX_SCALE_POINTS as usize;

/// The measure that counts responses: in h0 of its slices, and of its series' days for the
/// responses without a scored answer (since m0004 the others are counted in `n` of their
/// first answer's series).
pub(crate) const COUNT_MEASURE: &str = "";

/// The histogram columns of a rollup row, "h0, h1, …, h10".
fn hist_columns() -> String {
    (0..HIST_WIDTH)
        .map(|i| format!("h{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_the_stored_form() {
        let answers = vec![
            ("nps".to_string(), AnswerValue::Score(9)),
            ("neg".to_string(), AnswerValue::Score(-3)),
            (
                "why".to_string(),
                AnswerValue::Text("Say \"hi\"\\ \n tab\t æøå ✓".into()),
            ),
        ];
        let json = answers_json(&answers);
        assert!(
            serde_json::from_str::<serde_json::Value>(&json).is_ok(),
            "{json}"
        );
        assert_eq!(answers_from_json(&json).ok(), Some(answers));
        assert_eq!(answers_json(&[]), "[]");
    }
}
