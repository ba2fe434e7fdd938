//! The employee tables: the only module that knows them. People and the org tree are in
//! [`people`], surveys, cycles, participation and anonymous sums in [`cycles`], action plans
//! here.

pub mod cycles;
pub mod people;

use cxloop_platform::TenantId;
use cxloop_platform::db::{self, stmt};
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::idempotency::{self, Prior};
use cxloop_platform::paging::Page;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Value};

const IDEMPOTENCY: &str = "ex_idempotency";
/// Resource type names for NOT_FOUND details.
pub const ORG_UNIT: &str = "cxloop.employee.v1.OrgUnit";
/// Resource type name of employees.
pub const EMPLOYEE: &str = "cxloop.employee.v1.Employee";
/// Resource type name of surveys.
pub const SURVEY: &str = "cxloop.employee.v1.Survey";
/// Resource type name of cycles.
pub const CYCLE: &str = "cxloop.employee.v1.Cycle";
/// Resource type name of invitations (participation).
pub const INVITATION: &str = "cxloop.employee.v1.Invitation";
/// Resource type name of action plans.
pub const ACTION_PLAN: &str = "cxloop.employee.v1.ActionPlan";

/// Storage of the employee service.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

fn get<T: sea_orm::TryGetable>(r: &QueryResult, i: usize) -> ApiResult<T> {
    Ok(r.try_get_by_index(i)?)
}

/// A stored action plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionPlanRow {
    /// Id.
    pub id: String,
    /// Cycle.
    pub cycle_id: String,
    /// Unit.
    pub unit_id: String,
    /// Driver.
    pub driver: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Due date, YYYY-MM-DD.
    pub due_date: String,
    /// Status wire value.
    pub status: i32,
    /// Created, µs.
    pub created_at: i64,
    /// Updated, µs.
    pub updated_at: i64,
}

const PLAN_COLS: &str = "id, cycle_id, unit_id, driver, title, description, owner, due_date, status, created_at, updated_at";

fn plan_row(r: &QueryResult) -> ApiResult<ActionPlanRow> {
    Ok(ActionPlanRow {
        id: get(r, 0)?,
        cycle_id: get(r, 1)?,
        unit_id: get(r, 2)?,
        driver: get(r, 3)?,
        title: get(r, 4)?,
        description: get(r, 5)?,
        owner: get(r, 6)?,
        due_date: get(r, 7)?,
        status: get::<i64>(r, 8)? as i32,
        created_at: get(r, 9)?,
        updated_at: get(r, 10)?,
    })
}

impl Store {
    /// A store over this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The pool (for the modules of this store).
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    // ---- settings ----

    /// The tenant's anonymity threshold for new launches.
    pub async fn threshold<C: ConnectionTrait>(c: &C, tenant: &TenantId) -> ApiResult<u32> {
        let row = c
            .query_one_raw(stmt(
                c.get_database_backend(),
                "SELECT threshold FROM ex_settings WHERE tenant_id = ?",
                vec![tenant.as_str().into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => get::<i64>(&r, 0)? as u32,
            None => crate::domain::DEFAULT_THRESHOLD,
        })
    }

    /// Sets the tenant's threshold for launches from now on.
    pub async fn set_threshold(&self, tenant: &TenantId, k: u32) -> ApiResult<()> {
        self.db
            .execute_raw(stmt(
                self.backend(),
                "INSERT INTO ex_settings (tenant_id, threshold, updated_at) VALUES (?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET threshold = excluded.threshold, updated_at = excluded.updated_at",
                vec![
                    tenant.as_str().into(),
                    i64::from(k).into(),
                    db::now_micros().into(),
                ],
            ))
            .await?;
        Ok(())
    }

    // ---- action plans ----

    /// Creates an action plan once per request id.
    pub async fn create_action_plan(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        p: &ActionPlanRow,
    ) -> ApiResult<ActionPlanRow> {
        let txn = db::begin_write(&self.db).await?;
        if let Prior::Same(id) = idempotency::check(
            &txn,
            IDEMPOTENCY,
            tenant,
            "CreateActionPlan",
            request_id,
            hash,
        )
        .await?
        {
            txn.commit().await?;
            return self.get_action_plan(tenant, &id).await;
        }
        let id = db::new_id();
        let now = db::now_micros();
        txn.execute_raw(stmt(
            self.backend(),
            &format!("INSERT INTO ex_action_plans (tenant_id, {PLAN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            vec![
                tenant.as_str().into(),
                id.clone().into(),
                p.cycle_id.clone().into(),
                p.unit_id.clone().into(),
                p.driver.clone().into(),
                p.title.clone().into(),
                p.description.clone().into(),
                p.owner.clone().into(),
                p.due_date.clone().into(),
                i64::from(p.status).into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?;
        idempotency::remember(
            &txn,
            IDEMPOTENCY,
            tenant,
            "CreateActionPlan",
            request_id,
            hash,
            &id,
        )
        .await?;
        txn.commit().await?;
        Ok(ActionPlanRow {
            id,
            created_at: now,
            updated_at: now,
            ..p.clone()
        })
    }

    /// One action plan.
    pub async fn get_action_plan(&self, tenant: &TenantId, id: &str) -> ApiResult<ActionPlanRow> {
        let row = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                &format!("SELECT {PLAN_COLS} FROM ex_action_plans WHERE tenant_id = ? AND id = ?"),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(ACTION_PLAN, id))?;
        plan_row(&row)
    }

    /// A page of action plans by id, optionally for one unit and/or cycle.
    pub async fn list_action_plans(
        &self,
        tenant: &TenantId,
        unit_id: &str,
        cycle_id: &str,
        page: &Page,
    ) -> ApiResult<Vec<ActionPlanRow>> {
        let mut sql = format!("SELECT {PLAN_COLS} FROM ex_action_plans WHERE tenant_id = ?");
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        if !unit_id.is_empty() {
            sql.push_str(" AND unit_id = ?");
            values.push(unit_id.into());
        }
        if !cycle_id.is_empty() {
            sql.push_str(" AND cycle_id = ?");
            values.push(cycle_id.into());
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
        rows.iter().map(plan_row).collect()
    }

    /// Plans made after `cycle_id` for these units.
    pub async fn plans_after_cycle(
        &self,
        tenant: &TenantId,
        cycle_id: &str,
    ) -> ApiResult<Vec<ActionPlanRow>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                self.backend(),
                &format!("SELECT {PLAN_COLS} FROM ex_action_plans WHERE tenant_id = ? AND cycle_id = ? ORDER BY id"),
                vec![tenant.as_str().into(), cycle_id.into()],
            ))
            .await?;
        rows.iter().map(plan_row).collect()
    }

    /// Replaces a plan's changeable fields if nobody wrote it since it was read (its
    /// `updated_at` is still the one read): `None` when somebody did, so that the caller reads
    /// again and applies its change to the newer plan instead of overwriting it.
    pub async fn update_action_plan(
        &self,
        tenant: &TenantId,
        p: &ActionPlanRow,
    ) -> ApiResult<Option<ActionPlanRow>> {
        // Strictly later than the version read, also within one clock tick.
        let now = db::now_micros().max(p.updated_at + 1);
        let res = self
            .db
            .execute_raw(stmt(
                self.backend(),
                "UPDATE ex_action_plans SET title = ?, description = ?, owner = ?, due_date = ?, status = ?, updated_at = ? WHERE tenant_id = ? AND id = ? AND updated_at = ?",
                vec![
                    p.title.clone().into(),
                    p.description.clone().into(),
                    p.owner.clone().into(),
                    p.due_date.clone().into(),
                    i64::from(p.status).into(),
                    now.into(),
                    tenant.as_str().into(),
                    p.id.clone().into(),
                    p.updated_at.into(),
                ],
            ))
            .await?;
        if res.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(ActionPlanRow {
            updated_at: now,
            ..p.clone()
        }))
    }
}
