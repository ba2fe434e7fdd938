//! The `jr_*` tables. Every statement is scoped by tenant; writes that check a rule against
//! other rows (revision numbers, overlapping ownership) run in one write transaction, which
//! on SQLite is `BEGIN IMMEDIATE` and on PostgreSQL also takes an advisory lock on the thing
//! being changed, so two concurrent writers cannot both pass the check.

use cxloop_platform::TenantId;
use cxloop_platform::db::{self, stmt};
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::idempotency::{self, Prior};
use cxloop_platform::paging::{self, Page};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult, Value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::Subject;
use crate::domain::backlog::ItemDoc;
use crate::domain::kpi::KpiDoc;
use crate::domain::map::JourneyDoc;
use crate::domain::ownership::{OwnerRole, Span};

const IDEMPOTENCY: &str = "jr_idempotency";
/// The operations under which creates remember their request ids.
pub const CREATE_JOURNEY: &str = "CreateJourney";
/// See [`CREATE_JOURNEY`].
pub const CREATE_ASSIGNMENT: &str = "CreateAssignment";
/// See [`CREATE_JOURNEY`].
pub const CREATE_KPI: &str = "CreateKpi";
/// See [`CREATE_JOURNEY`].
pub const CREATE_BACKLOG_ITEM: &str = "CreateBacklogItem";
/// Resource names for NOT_FOUND details.
pub const JOURNEY: &str = "cxloop.journeys.v1.Journey";
/// See [`JOURNEY`].
pub const ASSIGNMENT: &str = "cxloop.journeys.v1.Assignment";
/// See [`JOURNEY`].
pub const KPI: &str = "cxloop.journeys.v1.Kpi";
/// See [`JOURNEY`].
pub const ITEM: &str = "cxloop.journeys.v1.BacklogItem";

/// One revision of a journey.
#[derive(Clone, Debug)]
pub struct JourneyRow {
    /// Id.
    pub id: String,
    /// Revision number.
    pub revision: i64,
    /// The map.
    pub doc: JourneyDoc,
    /// When the journey was created (µs).
    pub created_at: i64,
    /// When this revision was written (µs).
    pub changed_at: i64,
    /// Who wrote it.
    pub changed_by: String,
}

/// A change to write as a new revision.
pub struct Change<'a> {
    /// The map after the change.
    pub doc: &'a JourneyDoc,
    /// What changed, for the log.
    pub changes: &'a [String],
    /// Who changed it.
    pub by: &'a str,
    /// True when the change deletes the journey.
    pub delete: bool,
}

/// A revision log entry.
#[derive(Clone, Debug)]
pub struct RevisionRow {
    /// Revision number.
    pub revision: i64,
    /// When (µs).
    pub changed_at: i64,
    /// Who.
    pub changed_by: String,
    /// What changed.
    pub changes: Vec<String>,
}

/// An assignment.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignmentRow {
    /// Id.
    pub id: String,
    /// Subject.
    pub subject: Subject,
    /// Role.
    pub role: OwnerRole,
    /// "person" or "team".
    pub assignee_kind: String,
    /// Person or org unit id.
    pub assignee_id: String,
    /// Display name.
    pub assignee_name: String,
    /// Dates.
    pub span: Span,
    /// Created (µs).
    pub created_at: i64,
}

/// A KPI.
#[derive(Clone, Debug)]
pub struct KpiRow {
    /// Id.
    pub id: String,
    /// The KPI.
    pub doc: KpiDoc,
    /// Created (µs).
    pub created_at: i64,
    /// Changed (µs).
    pub updated_at: i64,
}

/// A backlog item.
#[derive(Clone, Debug)]
pub struct ItemRow {
    /// Id.
    pub id: String,
    /// The item.
    pub doc: ItemDoc,
    /// Created (µs).
    pub created_at: i64,
    /// Changed (µs); also the optimistic-lock token of updates.
    pub updated_at: i64,
}

/// Filters of ListAssignments.
#[derive(Default)]
pub struct AssignmentFilter {
    /// Subject key.
    pub subject: Option<String>,
    /// Role.
    pub role: Option<OwnerRole>,
    /// Assignee id.
    pub assignee: Option<String>,
    /// Running at (µs).
    pub active_at: Option<i64>,
}

/// What a create found or made.
enum Created {
    /// The same request was done before and made this resource.
    Before(String),
    /// Made now, with this id at this time (µs).
    Now {
        /// The new id.
        id: String,
        /// When.
        at: i64,
    },
}

fn to_json<T: Serialize>(t: &T) -> ApiResult<String> {
    serde_json::to_string(t).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

fn from_json<T: DeserializeOwned>(s: &str) -> ApiResult<T> {
    serde_json::from_str(s).map_err(|e| ApiError::Internal(format!("stored document: {e}")))
}

/// Subject keys per KPI read (see [`Store::kpis_of_subjects`]).
const SUBJECTS_PER_READ: usize = 4096;

/// The journey service's storage.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

const JOURNEY_COLS: &str =
    "r.journey_id, r.revision, r.doc, j.created_at, r.changed_at, r.changed_by";
const ASSIGNMENT_COLS: &str =
    "id, subject, role, assignee_kind, assignee_id, assignee_name, start_at, end_at, created_at";

fn journey_row(r: &QueryResult) -> ApiResult<JourneyRow> {
    Ok(JourneyRow {
        id: r.try_get_by_index(0)?,
        revision: r.try_get_by_index(1)?,
        doc: from_json(&r.try_get_by_index::<String>(2)?)?,
        created_at: r.try_get_by_index(3)?,
        changed_at: r.try_get_by_index(4)?,
        changed_by: r.try_get_by_index(5)?,
    })
}

fn assignment_row(r: &QueryResult) -> ApiResult<AssignmentRow> {
    let subject: String = r.try_get_by_index(1)?;
    let role: i64 = r.try_get_by_index(2)?;
    Ok(AssignmentRow {
        id: r.try_get_by_index(0)?,
        subject: Subject::from_key(&subject)
            .ok_or_else(|| ApiError::Internal(format!("stored subject {subject:?}")))?,
        role: OwnerRole::from_code(role as i32)
            .ok_or_else(|| ApiError::Internal(format!("stored role {role}")))?,
        assignee_kind: r.try_get_by_index(3)?,
        assignee_id: r.try_get_by_index(4)?,
        assignee_name: r.try_get_by_index(5)?,
        span: Span {
            start: r.try_get_by_index(6)?,
            end: r.try_get_by_index(7)?,
        },
        created_at: r.try_get_by_index(8)?,
    })
}

fn kpi_row(r: &QueryResult) -> ApiResult<KpiRow> {
    Ok(KpiRow {
        id: r.try_get_by_index(0)?,
        doc: from_json(&r.try_get_by_index::<String>(1)?)?,
        created_at: r.try_get_by_index(2)?,
        updated_at: r.try_get_by_index(3)?,
    })
}

fn item_row(r: &QueryResult) -> ApiResult<ItemRow> {
    Ok(ItemRow {
        id: r.try_get_by_index(0)?,
        doc: from_json(&r.try_get_by_index::<String>(1)?)?,
        created_at: r.try_get_by_index(2)?,
        updated_at: r.try_get_by_index(3)?,
    })
}

/// The key a page token carries for items ordered by priority (descending), then id.
pub fn item_page_key(priority: f64, id: &str) -> String {
    format!("{priority}|{id}")
}

impl Store {
    /// A store over a pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// On PostgreSQL, serialises writers of one key until the transaction ends (SQLite's
    /// BEGIN IMMEDIATE already serialises every writer).
    async fn lock(&self, txn: &DatabaseTransaction, key: &str) -> ApiResult<()> {
        if self.backend() == DbBackend::Postgres {
            txn.execute_raw(stmt(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
                vec![key.into()],
            ))
            .await?;
        }
        Ok(())
    }

    async fn prior<C: ConnectionTrait>(
        &self,
        c: &C,
        tenant: &TenantId,
        op: &str,
        request_id: &str,
        hash: &str,
    ) -> ApiResult<Option<String>> {
        Ok(
            match idempotency::check(c, IDEMPOTENCY, tenant, op, request_id, hash).await? {
                Prior::Same(id) => Some(id),
                Prior::None => None,
            },
        )
    }

    /// The resource a create with this request id made before, when it was this request:
    /// a retry is answered from it before the request is checked against what changed since
    /// (a stage removed, the feedback service unreachable). Another request under the same
    /// id is ALREADY_EXISTS. The write path checks again inside its transaction.
    pub async fn created_before(
        &self,
        tenant: &TenantId,
        op: &str,
        request_id: &str,
        hash: &str,
    ) -> ApiResult<Option<String>> {
        self.prior(&self.db, tenant, op, request_id, hash).await
    }

    /// The frame of every create: in one write transaction, a retry with the same request id
    /// finds the first resource's id; otherwise `insert` writes the new resource under a
    /// fresh id and time, and the request id is remembered with it.
    async fn create_once(
        &self,
        tenant: &TenantId,
        op: &str,
        request_id: &str,
        hash: &str,
        insert: impl AsyncFnOnce(&DatabaseTransaction, &str, i64) -> ApiResult<()>,
    ) -> ApiResult<Created> {
        let txn = db::begin_write(&self.db).await?;
        // On PostgreSQL, calls with one request id take turns from here (SQLite's write
        // transactions already do): a retry sent while the first call still runs waits for it
        // and then finds its result, instead of failing on what that call wrote meanwhile.
        self.lock(
            &txn,
            &format!("request|{}|{op}|{request_id}", tenant.as_str()),
        )
        .await?;
        if let Some(id) = self.prior(&txn, tenant, op, request_id, hash).await? {
            txn.commit().await?;
            return Ok(Created::Before(id));
        }
        let id = db::new_id();
        let now = db::now_micros();
        insert(&txn, &id, now).await?;
        idempotency::remember(&txn, IDEMPOTENCY, tenant, op, request_id, hash, &id).await?;
        txn.commit().await?;
        Ok(Created::Now { id, at: now })
    }

    // ---- journeys ----

    /// Creates a journey (revision 1).
    pub async fn create_journey(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        doc: &JourneyDoc,
        by: &str,
    ) -> ApiResult<JourneyRow> {
        let insert = async |txn: &DatabaseTransaction, id: &str, now: i64| {
            txn.execute_raw(stmt(
                self.backend(),
                "INSERT INTO jr_journeys (tenant_id, id, revision, created_at) VALUES (?, ?, 1, ?)",
                vec![tenant.as_str().into(), id.into(), now.into()],
            ))
            .await?;
            let change = Change {
                doc,
                changes: &["created".into()],
                by,
                delete: false,
            };
            self.insert_revision(txn, tenant, id, 1, now, &change).await
        };
        match self
            .create_once(tenant, CREATE_JOURNEY, request_id, hash, insert)
            .await?
        {
            Created::Before(id) => self.get_journey(tenant, &id, None).await,
            Created::Now { id, at } => Ok(JourneyRow {
                id,
                revision: 1,
                doc: doc.clone(),
                created_at: at,
                changed_at: at,
                changed_by: by.into(),
            }),
        }
    }

    async fn insert_revision(
        &self,
        txn: &DatabaseTransaction,
        tenant: &TenantId,
        id: &str,
        revision: i64,
        at: i64,
        c: &Change<'_>,
    ) -> ApiResult<()> {
        txn.execute_raw(stmt(
            self.backend(),
            "INSERT INTO jr_journey_revisions (tenant_id, journey_id, revision, changed_at, changed_by, changes, deleted, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                tenant.as_str().into(),
                id.into(),
                revision.into(),
                at.into(),
                c.by.into(),
                to_json(&c.changes)?.into(),
                i64::from(c.delete).into(),
                to_json(c.doc)?.into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// A live journey's current revision, or the revision current at `as_of` (µs), which
    /// may be of a journey deleted since.
    pub async fn get_journey(
        &self,
        tenant: &TenantId,
        id: &str,
        as_of: Option<i64>,
    ) -> ApiResult<JourneyRow> {
        let (sql, values): (String, Vec<Value>) = match as_of {
            None => (
                format!(
                    "SELECT {JOURNEY_COLS} FROM jr_journeys j JOIN jr_journey_revisions r ON r.tenant_id = j.tenant_id AND r.journey_id = j.id AND r.revision = j.revision WHERE j.tenant_id = ? AND j.id = ? AND j.deleted_at IS NULL"
                ),
                vec![tenant.as_str().into(), id.into()],
            ),
            Some(t) => (
                format!(
                    "SELECT {JOURNEY_COLS}, r.deleted FROM jr_journeys j JOIN jr_journey_revisions r ON r.tenant_id = j.tenant_id AND r.journey_id = j.id WHERE j.tenant_id = ? AND j.id = ? AND r.changed_at <= ? ORDER BY r.revision DESC LIMIT 1"
                ),
                vec![tenant.as_str().into(), id.into(), t.into()],
            ),
        };
        let row = self
            .db
            .query_one_raw(stmt(self.backend(), &sql, values))
            .await?
            .ok_or_else(|| ApiError::not_found(JOURNEY, id))?;
        if as_of.is_some() && row.try_get_by_index::<i64>(6)? != 0 {
            return Err(ApiError::not_found(JOURNEY, id));
        }
        journey_row(&row)
    }

    /// Live journeys by id, one page: up to `page.size` + 1 rows, read a few at a time and
    /// no more once the page is full by its byte budget (`framed` gives a row's size as sent;
    /// see [`paging::page_is_full`]). A map may be 3 MiB, and a page of 1,000 such maps read
    /// whole would hold gigabytes for a page that sends one.
    pub async fn list_journeys(
        &self,
        tenant: &TenantId,
        page: &Page,
        framed: impl Fn(&JourneyRow) -> usize,
    ) -> ApiResult<Vec<JourneyRow>> {
        self.journeys_in_chunks(tenant, page, 16, framed).await
    }

    async fn journeys_in_chunks(
        &self,
        tenant: &TenantId,
        page: &Page,
        chunk: u64,
        framed: impl Fn(&JourneyRow) -> usize,
    ) -> ApiResult<Vec<JourneyRow>> {
        let wanted = page.size + 1;
        let mut out: Vec<JourneyRow> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut after = page.after.clone();
        loop {
            let mut values: Vec<Value> = vec![tenant.as_str().into()];
            let mut sql = format!(
                "SELECT {JOURNEY_COLS} FROM jr_journeys j JOIN jr_journey_revisions r ON r.tenant_id = j.tenant_id AND r.journey_id = j.id AND r.revision = j.revision WHERE j.tenant_id = ? AND j.deleted_at IS NULL"
            );
            if let Some(after) = &after {
                sql.push_str(" AND j.id > ?");
                values.push(after.clone().into());
            }
            let limit = chunk.min(wanted - out.len() as u64);
            sql.push_str(&format!(" ORDER BY j.id LIMIT {limit}"));
            let rows = self
                .db
                .query_all_raw(stmt(self.backend(), &sql, values))
                .await?;
            let read = rows.len() as u64;
            for r in &rows {
                let row = journey_row(r)?;
                sizes.push(framed(&row));
                out.push(row);
            }
            if read < limit
                || out.len() as u64 >= wanted
                || paging::page_is_full(sizes.iter().copied())
            {
                return Ok(out);
            }
            after = out.last().map(|j| j.id.clone());
        }
    }

    /// Every journey as it was at `at` (µs): the revision current then, of each journey
    /// created by then and not deleted at that moment (it may be deleted since).
    pub async fn journeys_at(&self, tenant: &TenantId, at: i64) -> ApiResult<Vec<JourneyRow>> {
        let sql = format!(
            "SELECT {JOURNEY_COLS} FROM jr_journeys j JOIN jr_journey_revisions r ON r.tenant_id = j.tenant_id AND r.journey_id = j.id \
             WHERE j.tenant_id = ? AND j.created_at <= ? AND r.deleted = 0 AND r.revision = \
             (SELECT MAX(x.revision) FROM jr_journey_revisions x WHERE x.tenant_id = j.tenant_id AND x.journey_id = j.id AND x.changed_at <= ?) \
             ORDER BY j.id"
        );
        let rows = self
            .db
            .query_all_raw(stmt(
                self.backend(),
                &sql,
                vec![tenant.as_str().into(), at.into(), at.into()],
            ))
            .await?;
        rows.iter().map(journey_row).collect()
    }

    /// The live journeys of these ids at their current revisions, in id order (ids that name
    /// no live journey are left out), in chunks of [`SUBJECTS_PER_READ`]: a scorecard reads the
    /// maps its KPIs need, not every map of the tenant.
    pub async fn journeys_by_ids(
        &self,
        tenant: &TenantId,
        ids: &[&str],
    ) -> ApiResult<Vec<JourneyRow>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SUBJECTS_PER_READ) {
            let mut values: Vec<Value> = vec![tenant.as_str().into()];
            let list = db::in_list(&mut values, chunk.iter().map(|id| Value::from(*id)));
            let sql = format!(
                "SELECT {JOURNEY_COLS} FROM jr_journeys j JOIN jr_journey_revisions r ON r.tenant_id = j.tenant_id AND r.journey_id = j.id AND r.revision = j.revision WHERE j.tenant_id = ? AND j.deleted_at IS NULL AND j.id IN ({list}) ORDER BY j.id"
            );
            let rows = self
                .db
                .query_all_raw(stmt(self.backend(), &sql, values))
                .await?;
            for r in &rows {
                out.push(journey_row(r)?);
            }
        }
        Ok(out)
    }

    /// Writes a new revision if the current one is still `base` (the one the change was
    /// computed from); otherwise FAILED_PRECONDITION, so no change is lost.
    pub async fn update_journey(
        &self,
        tenant: &TenantId,
        current: &JourneyRow,
        change: &Change<'_>,
    ) -> ApiResult<JourneyRow> {
        let (id, base, delete) = (current.id.as_str(), current.revision, change.delete);
        let txn = db::begin_write(&self.db).await?;
        let now = db::now_micros();
        let res = txn
            .execute_raw(stmt(
                self.backend(),
                &format!(
                    "UPDATE jr_journeys SET revision = revision + 1{} WHERE tenant_id = ? AND id = ? AND revision = ? AND deleted_at IS NULL",
                    if delete { ", deleted_at = ?" } else { "" }
                ),
                if delete {
                    vec![now.into(), tenant.as_str().into(), id.into(), base.into()]
                } else {
                    vec![tenant.as_str().into(), id.into(), base.into()]
                },
            ))
            .await?;
        if res.rows_affected() == 0 {
            drop(txn);
            // Gone, or changed since it was read.
            self.get_journey(tenant, id, None).await?;
            return Err(ApiError::precondition(
                "REVISION_CHANGED",
                format!("journeys/{id}"),
                format!("the journey changed after revision {base}; read it again and retry"),
            ));
        }
        self.insert_revision(&txn, tenant, id, base + 1, now, change)
            .await?;
        txn.commit().await?;
        Ok(JourneyRow {
            id: id.into(),
            revision: base + 1,
            doc: change.doc.clone(),
            created_at: current.created_at,
            changed_at: now,
            changed_by: change.by.into(),
        })
    }

    /// Revisions newest first; `page.after` is a revision number.
    pub async fn list_revisions(
        &self,
        tenant: &TenantId,
        id: &str,
        page: &Page,
    ) -> ApiResult<Vec<RevisionRow>> {
        let exists = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                "SELECT 1 FROM jr_journeys WHERE tenant_id = ? AND id = ?",
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?;
        if exists.is_none() {
            return Err(ApiError::not_found(JOURNEY, id));
        }
        let before: i64 = match &page.after {
            Some(a) => a
                .parse()
                .map_err(|_| ApiError::invalid("page.page_token", "not a token of this call"))?,
            None => i64::MAX,
        };
        let rows = self
            .db
            .query_all_raw(stmt(
                self.backend(),
                &format!("SELECT revision, changed_at, changed_by, changes FROM jr_journey_revisions WHERE tenant_id = ? AND journey_id = ? AND revision < ? ORDER BY revision DESC LIMIT {}", page.size + 1),
                vec![tenant.as_str().into(), id.into(), before.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RevisionRow {
                    revision: r.try_get_by_index(0)?,
                    changed_at: r.try_get_by_index(1)?,
                    changed_by: r.try_get_by_index(2)?,
                    changes: from_json(&r.try_get_by_index::<String>(3)?)?,
                })
            })
            .collect()
    }

    // ---- ownership ----

    /// Creates an assignment; for a one-at-a-time role, refuses a period that overlaps
    /// another holder's (INVALID_ARGUMENT on `assignment.start_time`).
    pub async fn create_assignment(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        a: &AssignmentRow,
    ) -> ApiResult<AssignmentRow> {
        let subject = a.subject.key();
        let insert = async |txn: &DatabaseTransaction, id: &str, now: i64| {
            if a.role.exclusive() {
                self.lock(
                    txn,
                    &format!("{}|{subject}|{}", tenant.as_str(), a.role as i32),
                )
                .await?;
                let others = self
                    .assignments_where(
                        txn,
                        tenant,
                        "subject = ? AND role = ?",
                        vec![subject.clone().into(), (a.role as i64).into()],
                    )
                    .await?;
                if let Some(o) = others.iter().find(|o| o.span.overlaps(&a.span)) {
                    return Err(ApiError::invalid(
                        "assignment.start_time",
                        format!(
                            "the period overlaps assignment {} of {} ({}); a role held by one at a time cannot overlap: end that one first",
                            o.id, o.assignee_name, o.assignee_id
                        ),
                    ));
                }
            }
            txn.execute_raw(stmt(
                self.backend(),
                &format!("INSERT INTO jr_assignments (tenant_id, {ASSIGNMENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                vec![
                    tenant.as_str().into(),
                    id.into(),
                    subject.clone().into(),
                    (a.role as i64).into(),
                    a.assignee_kind.clone().into(),
                    a.assignee_id.clone().into(),
                    a.assignee_name.clone().into(),
                    a.span.start.into(),
                    a.span.end.into(),
                    now.into(),
                ],
            ))
            .await?;
            Ok(())
        };
        match self
            .create_once(tenant, CREATE_ASSIGNMENT, request_id, hash, insert)
            .await?
        {
            Created::Before(id) => self.get_assignment(tenant, &id).await,
            Created::Now { id, at } => Ok(AssignmentRow {
                id,
                created_at: at,
                ..a.clone()
            }),
        }
    }

    async fn assignments_where<C: ConnectionTrait>(
        &self,
        c: &C,
        tenant: &TenantId,
        cond: &str,
        mut values: Vec<Value>,
    ) -> ApiResult<Vec<AssignmentRow>> {
        values.insert(0, tenant.as_str().into());
        let rows = c
            .query_all_raw(stmt(
                self.backend(),
                &format!("SELECT {ASSIGNMENT_COLS} FROM jr_assignments WHERE tenant_id = ? AND {cond} ORDER BY start_at, id"),
                values,
            ))
            .await?;
        rows.iter().map(assignment_row).collect()
    }

    /// One assignment.
    pub async fn get_assignment(&self, tenant: &TenantId, id: &str) -> ApiResult<AssignmentRow> {
        self.assignments_where(&self.db, tenant, "id = ?", vec![id.into()])
            .await?
            .pop()
            .ok_or_else(|| ApiError::not_found(ASSIGNMENT, id))
    }

    /// Assignments matching the filters, by id, one page.
    pub async fn list_assignments(
        &self,
        tenant: &TenantId,
        f: &AssignmentFilter,
        page: &Page,
    ) -> ApiResult<Vec<AssignmentRow>> {
        let mut sql = format!("SELECT {ASSIGNMENT_COLS} FROM jr_assignments WHERE tenant_id = ?");
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        if let Some(s) = &f.subject {
            sql.push_str(" AND subject = ?");
            values.push(s.clone().into());
        }
        if let Some(r) = f.role {
            sql.push_str(" AND role = ?");
            values.push((r as i64).into());
        }
        if let Some(a) = &f.assignee {
            sql.push_str(" AND assignee_id = ?");
            values.push(a.clone().into());
        }
        if let Some(t) = f.active_at {
            sql.push_str(" AND start_at <= ? AND (end_at IS NULL OR end_at > ?)");
            values.push(t.into());
            values.push(t.into());
        }
        if let Some(after) = &page.after {
            sql.push_str(" AND id > ?");
            values.push(after.clone().into());
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.size + 1));
        let rows = self
            .db
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        rows.iter().map(assignment_row).collect()
    }

    /// Every assignment of one person or team, by start.
    pub async fn assignments_of_assignee(
        &self,
        tenant: &TenantId,
        assignee: &str,
    ) -> ApiResult<Vec<AssignmentRow>> {
        self.assignments_where(&self.db, tenant, "assignee_id = ?", vec![assignee.into()])
            .await
    }

    /// Every assignment of the tenant, by start.
    pub async fn all_assignments(&self, tenant: &TenantId) -> ApiResult<Vec<AssignmentRow>> {
        self.assignments_where(&self.db, tenant, "1 = 1", Vec::new())
            .await
    }

    /// Assignments of one subject and role, by start.
    pub async fn assignments_of(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        role: OwnerRole,
    ) -> ApiResult<Vec<AssignmentRow>> {
        self.assignments_where(
            &self.db,
            tenant,
            "subject = ? AND role = ?",
            vec![subject.key().into(), (role as i64).into()],
        )
        .await
    }

    /// Ends an assignment at `end`, which must be after its start and not after an end
    /// already set (shortening never creates an overlap).
    pub async fn end_assignment(
        &self,
        tenant: &TenantId,
        id: &str,
        end: i64,
    ) -> ApiResult<AssignmentRow> {
        let txn = db::begin_write(&self.db).await?;
        let a = self
            .assignments_where(&txn, tenant, "id = ?", vec![id.into()])
            .await?
            .pop()
            .ok_or_else(|| ApiError::not_found(ASSIGNMENT, id))?;
        if end <= a.span.start {
            return Err(ApiError::invalid(
                "end_time",
                "must be after the assignment's start",
            ));
        }
        if let Some(e) = a.span.end
            && end > e
        {
            return Err(ApiError::invalid(
                "end_time",
                "the assignment already ends earlier; an end can be moved earlier, not later",
            ));
        }
        // Guarded in the statement too: on PostgreSQL two calls may both have read the open
        // end above, and the later one must not move the end past the earlier one's (an
        // assignment made in between may start there).
        let updated = txn
            .execute_raw(stmt(
                self.backend(),
                "UPDATE jr_assignments SET end_at = ? WHERE tenant_id = ? AND id = ? AND (end_at IS NULL OR end_at >= ?)",
                vec![end.into(), tenant.as_str().into(), id.into(), end.into()],
            ))
            .await?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::invalid(
                "end_time",
                "the assignment already ends earlier; an end can be moved earlier, not later",
            ));
        }
        txn.commit().await?;
        Ok(AssignmentRow {
            span: Span {
                start: a.span.start,
                end: Some(end),
            },
            ..a
        })
    }

    // ---- KPIs ----

    /// Creates a KPI.
    pub async fn create_kpi(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        doc: &KpiDoc,
    ) -> ApiResult<KpiRow> {
        let insert = async |txn: &DatabaseTransaction, id: &str, now: i64| {
            txn.execute_raw(stmt(
                self.backend(),
                "INSERT INTO jr_kpis (tenant_id, id, subject, doc, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    tenant.as_str().into(),
                    id.into(),
                    doc.subject.key().into(),
                    to_json(doc)?.into(),
                    now.into(),
                    now.into(),
                ],
            ))
            .await?;
            Ok(())
        };
        match self
            .create_once(tenant, CREATE_KPI, request_id, hash, insert)
            .await?
        {
            Created::Before(id) => self.get_kpi(tenant, &id).await,
            Created::Now { id, at } => Ok(KpiRow {
                id,
                doc: doc.clone(),
                created_at: at,
                updated_at: at,
            }),
        }
    }

    /// A live KPI.
    pub async fn get_kpi(&self, tenant: &TenantId, id: &str) -> ApiResult<KpiRow> {
        self.kpis_where(tenant, "id = ?", vec![id.into()], None)
            .await?
            .pop()
            .ok_or_else(|| ApiError::not_found(KPI, id))
    }

    async fn kpis_where(
        &self,
        tenant: &TenantId,
        cond: &str,
        mut values: Vec<Value>,
        limit: Option<u64>,
    ) -> ApiResult<Vec<KpiRow>> {
        values.insert(0, tenant.as_str().into());
        let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let rows = self
            .db
            .query_all_raw(stmt(
                self.backend(),
                &format!("SELECT id, doc, created_at, updated_at FROM jr_kpis WHERE tenant_id = ? AND deleted_at IS NULL AND {cond} ORDER BY id{limit}"),
                values,
            ))
            .await?;
        rows.iter().map(kpi_row).collect()
    }

    /// Live KPIs, optionally of one subject (key), one page.
    pub async fn list_kpis(
        &self,
        tenant: &TenantId,
        subject: Option<&str>,
        page: &Page,
    ) -> ApiResult<Vec<KpiRow>> {
        let mut cond = String::from("1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(s) = subject {
            cond.push_str(" AND subject = ?");
            values.push(s.into());
        }
        if let Some(a) = &page.after {
            cond.push_str(" AND id > ?");
            values.push(a.clone().into());
        }
        self.kpis_where(tenant, &cond, values, Some(page.size + 1))
            .await
    }

    /// Live KPIs of any of these subjects (keys), in chunks of [`SUBJECTS_PER_READ`].
    pub async fn kpis_of_subjects(
        &self,
        tenant: &TenantId,
        subjects: &[String],
    ) -> ApiResult<Vec<KpiRow>> {
        // In chunks: an owner of many journeys has thousands of subject keys (each owned
        // journey, each of its stages, each owned touchpoint), and one IN list padded to a
        // power of two would pass SQLite's 32,766 parameters past 16,384 of them.
        let mut out = Vec::new();
        for chunk in subjects.chunks(SUBJECTS_PER_READ) {
            let mut values = Vec::new();
            let list = db::in_list(&mut values, chunk.iter().map(|s| Value::from(s.clone())));
            out.extend(
                self.kpis_where(tenant, &format!("subject IN ({list})"), values, None)
                    .await?,
            );
        }
        // In id order, as one read gives them; once each, also when a subject key came twice
        // in different chunks (an owner holding one journey twice).
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// Live KPIs by id, in the order asked; NOT_FOUND names the first missing one.
    pub async fn kpis_by_id(&self, tenant: &TenantId, ids: &[String]) -> ApiResult<Vec<KpiRow>> {
        let mut values = Vec::new();
        let list = db::in_list(&mut values, ids.iter().map(|s| Value::from(s.clone())));
        let found = self
            .kpis_where(tenant, &format!("id IN ({list})"), values, None)
            .await?;
        ids.iter()
            .map(|id| {
                found
                    .iter()
                    .find(|k| &k.id == id)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(KPI, id.clone()))
            })
            .collect()
    }

    /// Replaces a live KPI's document.
    /// Replaces a KPI's definition if it is still the one changed at `seen` (µs): a write in
    /// between is FAILED_PRECONDITION `KPI_CHANGED`, never silently undone.
    pub async fn update_kpi(
        &self,
        tenant: &TenantId,
        id: &str,
        seen: i64,
        doc: &KpiDoc,
    ) -> ApiResult<KpiRow> {
        let now = db::now_micros().max(seen + 1);
        let res = self
            .db
            .execute_raw(stmt(
                self.backend(),
                "UPDATE jr_kpis SET doc = ?, updated_at = ? WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL AND updated_at = ?",
                vec![
                    to_json(doc)?.into(),
                    now.into(),
                    tenant.as_str().into(),
                    id.into(),
                    seen.into(),
                ],
            ))
            .await?;
        if res.rows_affected() == 0 {
            self.get_kpi(tenant, id).await?;
            return Err(ApiError::precondition(
                "KPI_CHANGED",
                format!("kpis/{id}"),
                "the KPI changed while this call ran; read it again and retry",
            ));
        }
        self.get_kpi(tenant, id).await
    }

    /// Deletes a KPI (soft: backlog items that name it keep their measured effects).
    pub async fn delete_kpi(&self, tenant: &TenantId, id: &str) -> ApiResult<()> {
        let res = self
            .db
            .execute_raw(stmt(
                self.backend(),
                "UPDATE jr_kpis SET deleted_at = ? WHERE tenant_id = ? AND id = ? AND deleted_at IS NULL",
                vec![db::now_micros().into(), tenant.as_str().into(), id.into()],
            ))
            .await?;
        if res.rows_affected() == 0 {
            return Err(ApiError::not_found(KPI, id));
        }
        Ok(())
    }

    // ---- backlog ----

    /// Creates an item.
    pub async fn create_item(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        doc: &ItemDoc,
    ) -> ApiResult<ItemRow> {
        let insert = async |txn: &DatabaseTransaction, id: &str, now: i64| {
            txn.execute_raw(stmt(
                self.backend(),
                "INSERT INTO jr_backlog_items (tenant_id, id, status, planned_period, priority, doc, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                vec![
                    tenant.as_str().into(),
                    id.into(),
                    i64::from(doc.status().code()).into(),
                    doc.planned_period.clone().into(),
                    doc.priority().into(),
                    to_json(doc)?.into(),
                    now.into(),
                    now.into(),
                ],
            ))
            .await?;
            Ok(())
        };
        match self
            .create_once(tenant, CREATE_BACKLOG_ITEM, request_id, hash, insert)
            .await?
        {
            Created::Before(id) => self.get_item(tenant, &id).await,
            Created::Now { id, at } => Ok(ItemRow {
                id,
                doc: doc.clone(),
                created_at: at,
                updated_at: at,
            }),
        }
    }

    async fn items_where(
        &self,
        tenant: &TenantId,
        cond: &str,
        mut values: Vec<Value>,
        limit: Option<u64>,
    ) -> ApiResult<Vec<ItemRow>> {
        values.insert(0, tenant.as_str().into());
        let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let rows = self
            .db
            .query_all_raw(stmt(
                self.backend(),
                &format!("SELECT id, doc, created_at, updated_at FROM jr_backlog_items WHERE tenant_id = ? AND {cond} ORDER BY priority DESC, id{limit}"),
                values,
            ))
            .await?;
        rows.iter().map(item_row).collect()
    }

    /// One item.
    pub async fn get_item(&self, tenant: &TenantId, id: &str) -> ApiResult<ItemRow> {
        self.items_where(tenant, "id = ?", vec![id.into()], None)
            .await?
            .pop()
            .ok_or_else(|| ApiError::not_found(ITEM, id))
    }

    /// Items by priority (highest first), then id; one page.
    pub async fn list_items(
        &self,
        tenant: &TenantId,
        status: Option<i32>,
        period: Option<&str>,
        page: &Page,
    ) -> ApiResult<Vec<ItemRow>> {
        let mut cond = String::from("1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(s) = status {
            cond.push_str(" AND status = ?");
            values.push(i64::from(s).into());
        }
        if let Some(p) = period {
            cond.push_str(" AND planned_period = ?");
            values.push(p.into());
        }
        if let Some(after) = &page.after {
            let bad = || ApiError::invalid("page.page_token", "not a token of this call");
            let (p, id) = after.split_once('|').ok_or_else(bad)?;
            let p: f64 = p.parse().map_err(|_| bad())?;
            cond.push_str(" AND (priority < ? OR (priority = ? AND id > ?))");
            values.push(p.into());
            values.push(p.into());
            values.push(id.into());
        }
        self.items_where(tenant, &cond, values, Some(page.size + 1))
            .await
    }

    /// Every item planned in a period.
    pub async fn items_in_period(
        &self,
        tenant: &TenantId,
        period: &str,
    ) -> ApiResult<Vec<ItemRow>> {
        self.items_where(tenant, "planned_period = ?", vec![period.into()], None)
            .await
    }

    /// Replaces an item's document if it was not changed since `seen` (its updated_at).
    pub async fn update_item(
        &self,
        tenant: &TenantId,
        id: &str,
        seen: i64,
        doc: &ItemDoc,
    ) -> ApiResult<ItemRow> {
        let now = db::now_micros().max(seen + 1);
        let res = self
            .db
            .execute_raw(stmt(
                self.backend(),
                "UPDATE jr_backlog_items SET status = ?, planned_period = ?, priority = ?, doc = ?, updated_at = ? WHERE tenant_id = ? AND id = ? AND updated_at = ?",
                vec![
                    i64::from(doc.status().code()).into(),
                    doc.planned_period.clone().into(),
                    doc.priority().into(),
                    to_json(doc)?.into(),
                    now.into(),
                    tenant.as_str().into(),
                    id.into(),
                    seen.into(),
                ],
            ))
            .await?;
        if res.rows_affected() == 0 {
            self.get_item(tenant, id).await?;
            return Err(ApiError::precondition(
                "ITEM_CHANGED",
                format!("backlogItems/{id}"),
                "the item changed while this call ran; read it again and retry",
            ));
        }
        self.get_item(tenant, id).await
    }

    /// Sets a period's capacity.
    pub async fn set_capacity(&self, tenant: &TenantId, period: &str, days: f64) -> ApiResult<()> {
        self.db
            .execute_raw(stmt(
                self.backend(),
                "INSERT INTO jr_capacity (tenant_id, period, capacity_days, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, period) DO UPDATE SET capacity_days = excluded.capacity_days, updated_at = excluded.updated_at",
                vec![tenant.as_str().into(), period.into(), days.into(), db::now_micros().into()],
            ))
            .await?;
        Ok(())
    }

    /// A period's capacity, 0 when none was set.
    pub async fn capacity(&self, tenant: &TenantId, period: &str) -> ApiResult<f64> {
        Ok(self
            .db
            .query_one_raw(stmt(
                self.backend(),
                "SELECT capacity_days FROM jr_capacity WHERE tenant_id = ? AND period = ?",
                vec![tenant.as_str().into(), period.into()],
            ))
            .await?
            .map(|r| r.try_get_by_index::<f64>(0))
            .transpose()?
            .unwrap_or(0.0))
    }
}
