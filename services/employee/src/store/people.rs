//! Org units (with dated parent links) and employees, synced from HR.

use std::collections::HashMap;

use cxloop_platform::TenantId;
use cxloop_platform::db::{self, stmt};
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::paging::Page;
use sea_orm::{ConnectionTrait, Value};

use super::{EMPLOYEE, Store, get};
use crate::domain;

/// What a sync did with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Created.
    Created,
    /// Changed.
    Updated,
    /// Already so.
    Unchanged,
    /// Refused.
    Invalid,
}

/// The result of a sync row: outcome, server id, violations.
pub type RowResult = (Outcome, String, Vec<(String, String)>);

/// An org unit row to sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitInput {
    /// External id.
    pub external_id: String,
    /// Name.
    pub name: String,
    /// Parent's external id, "" for a root.
    pub parent_external_id: String,
}

/// A unit with its parent at some time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitRow {
    /// Id.
    pub id: String,
    /// External id.
    pub external_id: String,
    /// Name.
    pub name: String,
    /// Parent id ("" for a root).
    pub parent_id: String,
    /// Parent external id.
    pub parent_external_id: String,
    /// Since when, µs.
    pub parent_since: i64,
}

/// An employee as synced or stored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EmployeeRow {
    /// Id.
    pub id: String,
    /// External id ("" once erased).
    pub external_id: String,
    /// Name.
    pub display_name: String,
    /// E-mail.
    pub email: String,
    /// Unit server id.
    pub org_unit_id: String,
    /// Unit external id.
    pub org_unit_external_id: String,
    /// Manager external id.
    pub manager_external_id: String,
    /// Lifecycle stage wire value.
    pub stage: i32,
    /// Tenure band.
    pub tenure_band: String,
    /// Location.
    pub location: String,
    /// Role family.
    pub role_family: String,
    /// Erased.
    pub erased: bool,
    /// Created, µs.
    pub created_at: i64,
    /// Updated, µs.
    pub updated_at: i64,
}

const EMPLOYEE_COLS: &str = "e.id, e.external_id, e.display_name, e.email, e.org_unit_id, u.external_id, e.manager_external_id, e.stage, e.tenure_band, e.location, e.role_family, e.erased_at, e.created_at, e.updated_at";
const EMPLOYEE_FROM: &str =
    "ex_employees e LEFT JOIN ex_org_units u ON u.tenant_id = e.tenant_id AND u.id = e.org_unit_id";

fn employee_row(r: &sea_orm::QueryResult) -> ApiResult<EmployeeRow> {
    Ok(EmployeeRow {
        id: get(r, 0)?,
        external_id: get::<Option<String>>(r, 1)?.unwrap_or_default(),
        display_name: get(r, 2)?,
        email: get(r, 3)?,
        org_unit_id: get(r, 4)?,
        org_unit_external_id: get::<Option<String>>(r, 5)?.unwrap_or_default(),
        manager_external_id: get(r, 6)?,
        stage: get::<i64>(r, 7)? as i32,
        tenure_band: get(r, 8)?,
        location: get(r, 9)?,
        role_family: get(r, 10)?,
        erased: get::<Option<i64>>(r, 11)?.is_some(),
        created_at: get(r, 12)?,
        updated_at: get(r, 13)?,
    })
}

/// Every unit of the tenant: external id → (id, name).
async fn units_by_external<C: ConnectionTrait>(
    c: &C,
    tenant: &TenantId,
) -> ApiResult<HashMap<String, (String, String)>> {
    let rows = c
        .query_all_raw(stmt(
            c.get_database_backend(),
            "SELECT external_id, id, name FROM ex_org_units WHERE tenant_id = ?",
            vec![tenant.as_str().into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((get(r, 0)?, (get(r, 1)?, get(r, 2)?))))
        .collect()
}

/// Parent of every unit at time `at` (µs): unit id → (parent id, since).
pub async fn parents_at<C: ConnectionTrait>(
    c: &C,
    tenant: &TenantId,
    at: i64,
) -> ApiResult<HashMap<String, (String, i64)>> {
    let rows = c
        .query_all_raw(stmt(
            c.get_database_backend(),
            "SELECT unit_id, parent_id, valid_from FROM ex_org_unit_parents WHERE tenant_id = ? AND valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)",
            vec![tenant.as_str().into(), at.into(), at.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((get(r, 0)?, (get(r, 1)?, get(r, 2)?))))
        .collect()
}

/// Every dated parent link of the tenant's units.
async fn all_links<C: ConnectionTrait>(c: &C, tenant: &TenantId) -> ApiResult<domain::Links> {
    let rows = c
        .query_all_raw(stmt(
            c.get_database_backend(),
            "SELECT unit_id, parent_id, valid_from, valid_to FROM ex_org_unit_parents WHERE tenant_id = ?",
            vec![tenant.as_str().into()],
        ))
        .await?;
    let mut links = domain::Links::default();
    for r in &rows {
        let (unit, parent): (String, String) = (get(r, 0)?, get(r, 1)?);
        links.add(&unit, &parent, get(r, 2)?, get(r, 3)?);
    }
    Ok(links)
}

impl Store {
    /// Creates and updates units; a changed parent closes the current link at `effective`
    /// and opens a new one. Rows are checked in order against the tree as it would be after
    /// the rows before them, at the move's date and at every later dated move of another
    /// unit; a row that would make a cycle at any of those moments is refused.
    pub async fn sync_org_units(
        &self,
        tenant: &TenantId,
        effective: i64,
        rows: &[Result<UnitInput, Vec<(String, String)>>],
    ) -> ApiResult<Vec<RowResult>> {
        let txn = db::begin_write(&self.db).await?;
        let backend = txn.get_database_backend();
        let mut by_ext = units_by_external(&txn, tenant).await?;
        let mut links = all_links(&txn, tenant).await?;
        // New units of the batch get their ids first, so a row may name a later row as its
        // parent.
        let mut new_ids: HashMap<String, String> = HashMap::new();
        for r in rows.iter().flatten() {
            if !by_ext.contains_key(&r.external_id) && !new_ids.contains_key(&r.external_id) {
                new_ids.insert(r.external_id.clone(), db::new_id());
            }
        }
        let now = db::now_micros();
        let mut results = Vec::with_capacity(rows.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let r = match row {
                Ok(r) => r,
                Err(v) => {
                    results.push((Outcome::Invalid, String::new(), v.clone()));
                    continue;
                }
            };
            let field = |f: &str| format!("units[{i}].{f}");
            if let Some(first) = seen.insert(r.external_id.as_str(), i) {
                results.push((
                    Outcome::Invalid,
                    String::new(),
                    vec![(
                        field("external_id"),
                        format!("the same external id is also in units[{first}]"),
                    )],
                ));
                continue;
            }
            let existing = by_ext.get(&r.external_id).cloned();
            let id = existing
                .as_ref()
                .map(|(id, _)| id.clone())
                .or_else(|| new_ids.get(&r.external_id).cloned())
                .unwrap_or_default();
            let parent_id = if r.parent_external_id.is_empty() {
                String::new()
            } else if let Some((pid, _)) = by_ext.get(&r.parent_external_id) {
                pid.clone()
            } else if let Some(pid) = new_ids.get(&r.parent_external_id) {
                pid.clone()
            } else {
                results.push((
                    Outcome::Invalid,
                    String::new(),
                    vec![(
                        field("parent_external_id"),
                        format!("no org unit {:?}", r.parent_external_id),
                    )],
                ));
                continue;
            };
            let latest = links.latest(&id).map(|(p, since)| (p.to_owned(), since));
            let parent_changed =
                latest.as_ref().map(|(p, _)| p.as_str()) != Some(parent_id.as_str());
            let from = if existing.is_none() {
                i64::MIN / 2
            } else {
                effective
            };
            if parent_changed && links.move_makes_cycle(&id, &parent_id, from) {
                results.push((
                    Outcome::Invalid,
                    String::new(),
                    vec![(
                        field("parent_external_id"),
                        "would make the unit its own ancestor".into(),
                    )],
                ));
                continue;
            }
            if parent_changed && latest.is_some_and(|(_, since)| since >= effective) {
                results.push((
                    Outcome::Invalid,
                    String::new(),
                    vec![(
                        "effective_time".into(),
                        "is not after the unit's last move".into(),
                    )],
                ));
                continue;
            }
            let outcome = match &existing {
                None => {
                    txn.execute_raw(stmt(
                        backend,
                        "INSERT INTO ex_org_units (tenant_id, id, external_id, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                        vec![
                            tenant.as_str().into(),
                            id.clone().into(),
                            r.external_id.clone().into(),
                            r.name.clone().into(),
                            now.into(),
                            now.into(),
                        ],
                    ))
                    .await?;
                    by_ext.insert(r.external_id.clone(), (id.clone(), r.name.clone()));
                    Outcome::Created
                }
                Some((_, name)) if *name != r.name => {
                    txn.execute_raw(stmt(
                        backend,
                        "UPDATE ex_org_units SET name = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                        vec![
                            r.name.clone().into(),
                            now.into(),
                            tenant.as_str().into(),
                            id.clone().into(),
                        ],
                    ))
                    .await?;
                    by_ext.insert(r.external_id.clone(), (id.clone(), r.name.clone()));
                    Outcome::Updated
                }
                Some(_) if parent_changed => Outcome::Updated,
                Some(_) => Outcome::Unchanged,
            };
            if parent_changed {
                // A dated move: the old link ends where the new one starts, so the tree at
                // any earlier time is still the tree that was.
                txn.execute_raw(stmt(
                    backend,
                    "UPDATE ex_org_unit_parents SET valid_to = ? WHERE tenant_id = ? AND unit_id = ? AND valid_to IS NULL",
                    vec![effective.into(), tenant.as_str().into(), id.clone().into()],
                ))
                .await?;
                txn.execute_raw(stmt(
                    backend,
                    "INSERT INTO ex_org_unit_parents (tenant_id, unit_id, valid_from, valid_to, parent_id) VALUES (?, ?, ?, NULL, ?)",
                    vec![
                        tenant.as_str().into(),
                        id.clone().into(),
                        from.into(),
                        parent_id.clone().into(),
                    ],
                ))
                .await?;
                links.apply_move(&id, &parent_id, from);
            }
            results.push((outcome, id, Vec::new()));
        }
        txn.commit().await?;
        Ok(results)
    }

    /// Every unit with its parent at time `at`, ordered by id, one page.
    pub async fn list_org_units(
        &self,
        tenant: &TenantId,
        at: i64,
        page: &Page,
    ) -> ApiResult<Vec<UnitRow>> {
        let mut sql =
            "SELECT id, external_id, name FROM ex_org_units WHERE tenant_id = ?".to_string();
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        if let Some(after) = &page.after {
            sql.push_str(" AND id > ?");
            values.push(after.clone().into());
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.size + 1));
        let rows = self
            .db
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        let parents = parents_at(&self.db, tenant, at).await?;
        let ext: HashMap<String, String> = units_by_external(&self.db, tenant)
            .await?
            .into_iter()
            .map(|(e, (id, _))| (id, e))
            .collect();
        rows.iter()
            .map(|r| {
                let id: String = get(r, 0)?;
                let (parent_id, since) = parents.get(&id).cloned().unwrap_or_default();
                Ok(UnitRow {
                    parent_external_id: ext.get(&parent_id).cloned().unwrap_or_default(),
                    external_id: get(r, 1)?,
                    name: get(r, 2)?,
                    parent_id,
                    parent_since: since.max(0),
                    id,
                })
            })
            .collect()
    }

    /// Creates and updates employees by external id.
    pub async fn sync_employees(
        &self,
        tenant: &TenantId,
        rows: &[Result<EmployeeRow, Vec<(String, String)>>],
    ) -> ApiResult<Vec<RowResult>> {
        let txn = db::begin_write(&self.db).await?;
        let backend = txn.get_database_backend();
        let units = units_by_external(&txn, tenant).await?;
        let mut existing: HashMap<String, EmployeeRow> = HashMap::new();
        let exts: Vec<String> = rows
            .iter()
            .flatten()
            .map(|r| r.external_id.clone())
            .collect();
        for chunk in exts.chunks(500) {
            let mut values: Vec<Value> = vec![tenant.as_str().into()];
            let ph = db::in_list(&mut values, chunk.iter().map(|e| Value::from(e.clone())));
            let found = txn
                .query_all_raw(stmt(
                    backend,
                    &format!("SELECT {EMPLOYEE_COLS} FROM {EMPLOYEE_FROM} WHERE e.tenant_id = ? AND e.external_id IN ({ph})"),
                    values,
                ))
                .await?;
            for r in &found {
                let e = employee_row(r)?;
                existing.insert(e.external_id.clone(), e);
            }
        }
        let now = db::now_micros();
        let mut results = Vec::with_capacity(rows.len());
        let mut inserts: Vec<EmployeeRow> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let r = match row {
                Ok(r) => r,
                Err(v) => {
                    results.push((Outcome::Invalid, String::new(), v.clone()));
                    continue;
                }
            };
            if let Some(first) = seen.insert(r.external_id.as_str(), i) {
                results.push((
                    Outcome::Invalid,
                    String::new(),
                    vec![(
                        format!("employees[{i}].external_id"),
                        format!("the same external id is also in employees[{first}]"),
                    )],
                ));
                continue;
            }
            let Some((unit_id, _)) = units.get(&r.org_unit_external_id) else {
                results.push((
                    Outcome::Invalid,
                    String::new(),
                    vec![(
                        format!("employees[{i}].org_unit_external_id"),
                        format!("no org unit {:?}", r.org_unit_external_id),
                    )],
                ));
                continue;
            };
            let mut new = r.clone();
            new.org_unit_id = unit_id.clone();
            match existing.get(&r.external_id) {
                None => {
                    new.id = db::new_id();
                    new.created_at = now;
                    new.updated_at = now;
                    results.push((Outcome::Created, new.id.clone(), Vec::new()));
                    inserts.push(new);
                }
                Some(old) => {
                    let same = old.display_name == new.display_name
                        && old.email == new.email
                        && old.org_unit_id == new.org_unit_id
                        && old.manager_external_id == new.manager_external_id
                        && old.stage == new.stage
                        && old.tenure_band == new.tenure_band
                        && old.location == new.location
                        && old.role_family == new.role_family;
                    if same {
                        results.push((Outcome::Unchanged, old.id.clone(), Vec::new()));
                        continue;
                    }
                    txn.execute_raw(stmt(
                        backend,
                        "UPDATE ex_employees SET display_name = ?, email = ?, org_unit_id = ?, manager_external_id = ?, stage = ?, tenure_band = ?, location = ?, role_family = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                        vec![
                            new.display_name.clone().into(),
                            new.email.clone().into(),
                            new.org_unit_id.clone().into(),
                            new.manager_external_id.clone().into(),
                            i64::from(new.stage).into(),
                            new.tenure_band.clone().into(),
                            new.location.clone().into(),
                            new.role_family.clone().into(),
                            now.into(),
                            tenant.as_str().into(),
                            old.id.clone().into(),
                        ],
                    ))
                    .await?;
                    results.push((Outcome::Updated, old.id.clone(), Vec::new()));
                }
            }
        }
        const COLS: usize = 13;
        for chunk in db::pow2_chunks(&inserts, db::rows_per_statement(COLS)) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLS);
            for e in chunk {
                values.extend([
                    tenant.as_str().into(),
                    e.id.clone().into(),
                    e.external_id.clone().into(),
                    e.display_name.clone().into(),
                    e.email.clone().into(),
                    e.org_unit_id.clone().into(),
                    e.manager_external_id.clone().into(),
                    i64::from(e.stage).into(),
                    e.tenure_band.clone().into(),
                    e.location.clone().into(),
                    e.role_family.clone().into(),
                    now.into(),
                    now.into(),
                ]);
            }
            txn.execute_raw(stmt(
                backend,
                &format!(
                    "INSERT INTO ex_employees (tenant_id, id, external_id, display_name, email, org_unit_id, manager_external_id, stage, tenure_band, location, role_family, created_at, updated_at) VALUES {}",
                    db::row_placeholders(chunk.len(), COLS)
                ),
                values,
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(results)
    }

    /// One employee.
    pub async fn get_employee(&self, tenant: &TenantId, id: &str) -> ApiResult<EmployeeRow> {
        let row = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                &format!(
                    "SELECT {EMPLOYEE_COLS} FROM {EMPLOYEE_FROM} WHERE e.tenant_id = ? AND e.id = ?"
                ),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(EMPLOYEE, id))?;
        employee_row(&row)
    }

    /// The employee behind an `employee` token: its subject is the external id.
    pub async fn employee_by_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> ApiResult<Option<String>> {
        let row = self
            .db
            .query_one_raw(stmt(
                self.backend(),
                "SELECT id FROM ex_employees WHERE tenant_id = ? AND external_id = ? AND erased_at IS NULL",
                vec![tenant.as_str().into(), external_id.into()],
            ))
            .await?;
        row.map(|r| get(&r, 0)).transpose()
    }

    /// The units where the people reporting to this manager (by external HR id) now work.
    pub async fn managed_units(
        &self,
        tenant: &TenantId,
        manager_external_id: &str,
    ) -> ApiResult<Vec<String>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                self.backend(),
                "SELECT DISTINCT org_unit_id FROM ex_employees WHERE tenant_id = ? AND manager_external_id = ? AND erased_at IS NULL",
                vec![tenant.as_str().into(), manager_external_id.into()],
            ))
            .await?;
        rows.iter().map(|r| get(r, 0)).collect()
    }

    /// A page of employees by id, optionally of one unit.
    pub async fn list_employees(
        &self,
        tenant: &TenantId,
        unit_id: &str,
        page: &Page,
    ) -> ApiResult<Vec<EmployeeRow>> {
        let mut sql = format!("SELECT {EMPLOYEE_COLS} FROM {EMPLOYEE_FROM} WHERE e.tenant_id = ?");
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        if !unit_id.is_empty() {
            sql.push_str(" AND e.org_unit_id = ?");
            values.push(unit_id.into());
        }
        if let Some(after) = &page.after {
            sql.push_str(" AND e.id > ?");
            values.push(after.clone().into());
        }
        sql.push_str(&format!(" ORDER BY e.id LIMIT {}", page.size + 1));
        let rows = self
            .db
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        rows.iter().map(employee_row).collect()
    }

    /// Erases an employee's personal data. Their participation rows get a fresh random key
    /// in place of the employee id, the same in every cycle: respondent counts and the
    /// cross-cycle membership rules see exactly what they saw before, but nothing links the
    /// rows to the (now empty) person record any more.
    pub async fn erase_employee(&self, tenant: &TenantId, id: &str) -> ApiResult<EmployeeRow> {
        let txn = db::begin_write(&self.db).await?;
        let backend = txn.get_database_backend();
        let now = db::now_micros();
        let res = txn
            .execute_raw(stmt(
                backend,
                "UPDATE ex_employees SET external_id = NULL, display_name = '', email = '', manager_external_id = '', tenure_band = '', location = '', role_family = '', erased_at = ?, updated_at = ? WHERE tenant_id = ? AND id = ? AND erased_at IS NULL",
                vec![now.into(), now.into(), tenant.as_str().into(), id.into()],
            ))
            .await?;
        if res.rows_affected() == 0 {
            // Unknown, or erased before: the latter is fine to repeat.
            txn.commit().await?;
            let e = self.get_employee(tenant, id).await?;
            return Ok(e);
        }
        let alias = format!(
            "{}{}",
            crate::domain::anonymity::ERASED_PREFIX,
            uuid::Uuid::new_v4().simple()
        );
        txn.execute_raw(stmt(
            backend,
            "UPDATE ex_participation SET employee_id = ? WHERE tenant_id = ? AND employee_id = ?",
            vec![alias.into(), tenant.as_str().into(), id.into()],
        ))
        .await?;
        txn.commit().await?;
        self.get_employee(tenant, id).await
    }
}
