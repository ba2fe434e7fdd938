//! Surveys, cycles, the launch snapshot, anonymous answering and the sums results are made
//! of.

use std::collections::{HashMap, HashSet};

use cxloop_platform::TenantId;
use cxloop_platform::db::{self, stmt};
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::idempotency::{self, Prior};
use cxloop_platform::paging::Page;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value};
use sha2::{Digest, Sha256};

use super::people::parents_at;
use super::{CYCLE, IDEMPOTENCY, INVITATION, SURVEY, Store, get};
use crate::domain::anonymity::{Cell, Tree};
use crate::domain::results::GroupSums;
use crate::domain::{Contribution, Question, Submission, SurveyDef};

/// A stored survey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Kind wire value.
    pub kind: i32,
    /// Questions.
    pub questions: Vec<Question>,
    /// Created, µs.
    pub created_at: i64,
}

impl SurveyRow {
    /// The definition the rules use.
    pub fn def(&self) -> SurveyDef {
        SurveyDef {
            id: self.id.clone(),
            questions: self.questions.clone(),
        }
    }
}

/// Cycle states by wire value.
pub mod state {
    /// Draft.
    pub const DRAFT: i32 = 1;
    /// Open.
    pub const OPEN: i32 = 2;
    /// Closed.
    pub const CLOSED: i32 = 3;
}

/// A stored cycle.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CycleRow {
    /// Id.
    pub id: String,
    /// Survey.
    pub survey_id: String,
    /// Name.
    pub name: String,
    /// Root unit.
    pub org_unit_id: String,
    /// Lifecycle stages invited.
    pub stages: Vec<i32>,
    /// Compared with.
    pub previous_cycle_id: String,
    /// State wire value.
    pub state: i32,
    /// k frozen at launch (0 before).
    pub threshold: u32,
    /// Invited at launch.
    pub invited: u64,
    /// Launched, µs.
    pub launched_at: Option<i64>,
    /// Closed, µs.
    pub closed_at: Option<i64>,
    /// Created, µs.
    pub created_at: i64,
}

const CYCLE_COLS: &str = "id, survey_id, name, org_unit_id, stages, previous_cycle_id, state, threshold, invited, launched_at, closed_at, created_at";

fn cycle_row(r: &sea_orm::QueryResult) -> ApiResult<CycleRow> {
    let stages: String = get(r, 4)?;
    Ok(CycleRow {
        id: get(r, 0)?,
        survey_id: get(r, 1)?,
        name: get(r, 2)?,
        org_unit_id: get(r, 3)?,
        stages: serde_json::from_str(&stages)
            .map_err(|_| ApiError::Internal("stored stages cannot be read".into()))?,
        previous_cycle_id: get(r, 5)?,
        state: get::<i64>(r, 6)? as i32,
        threshold: get::<i64>(r, 7)? as u32,
        invited: get::<i64>(r, 8)? as u64,
        launched_at: get(r, 9)?,
        closed_at: get(r, 10)?,
        created_at: get(r, 11)?,
    })
}

fn survey_row(r: &sea_orm::QueryResult) -> ApiResult<SurveyRow> {
    let q: String = get(r, 3)?;
    Ok(SurveyRow {
        id: get(r, 0)?,
        name: get(r, 1)?,
        kind: get::<i64>(r, 2)? as i32,
        questions: serde_json::from_str(&q)
            .map_err(|_| ApiError::Internal("stored questions cannot be read".into()))?,
        created_at: get(r, 4)?,
    })
}

/// Answered participants: (participant key, unit, tenure band / location / role family).
pub type Respondents = Vec<(String, String, [String; 3])>;

/// Dimension numbers of the sums: 0 = no attribute, 1 tenure band, 2 location, 3 role family.
pub const DIMS: [i64; 4] = [0, 1, 2, 3];

/// What a submission did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Counted now.
    Counted,
    /// A retry of a counted submission.
    Duplicate,
}

/// A cycle's snapshot for results: tree, cells and sums.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The tree at launch.
    pub tree: Tree,
    /// Unit names at launch, by index.
    pub names: Vec<String>,
    /// Invited/answered per full cell.
    pub cells: Vec<Cell>,
}

fn request_key(cycle_id: &str, request_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(cycle_id.as_bytes());
    h.update([0u8]);
    h.update(request_id.as_bytes());
    hex::encode(h.finalize())
}

impl Store {
    // ---- surveys ----

    /// Creates a survey once per request id.
    pub async fn create_survey(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        name: &str,
        kind: i32,
        questions: &[Question],
    ) -> ApiResult<SurveyRow> {
        let txn = db::begin_write(self.db()).await?;
        if let Prior::Same(id) =
            idempotency::check(&txn, IDEMPOTENCY, tenant, "CreateSurvey", request_id, hash).await?
        {
            txn.commit().await?;
            return self.get_survey(tenant, &id).await;
        }
        let id = db::new_id();
        let now = db::now_micros();
        let q = serde_json::to_string(questions)
            .map_err(|e| ApiError::Internal(format!("encoding questions: {e}")))?;
        txn.execute_raw(stmt(
            txn.get_database_backend(),
            "INSERT INTO ex_surveys (tenant_id, id, name, kind, questions, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                tenant.as_str().into(),
                id.clone().into(),
                name.into(),
                i64::from(kind).into(),
                q.into(),
                now.into(),
            ],
        ))
        .await?;
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
        Ok(SurveyRow {
            id,
            name: name.into(),
            kind,
            questions: questions.to_vec(),
            created_at: now,
        })
    }

    /// One survey.
    pub async fn get_survey(&self, tenant: &TenantId, id: &str) -> ApiResult<SurveyRow> {
        let row = self
            .db()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT id, name, kind, questions, created_at FROM ex_surveys WHERE tenant_id = ? AND id = ?",
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(SURVEY, id))?;
        survey_row(&row)
    }

    /// A page of surveys by id.
    pub async fn list_surveys(&self, tenant: &TenantId, page: &Page) -> ApiResult<Vec<SurveyRow>> {
        let mut sql =
            "SELECT id, name, kind, questions, created_at FROM ex_surveys WHERE tenant_id = ?"
                .to_string();
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        if let Some(after) = &page.after {
            sql.push_str(" AND id > ?");
            values.push(after.clone().into());
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.size + 1));
        let rows = self
            .db()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        rows.iter().map(survey_row).collect()
    }

    // ---- cycles ----

    /// Creates a draft cycle once per request id. The caller checked survey, unit and
    /// previous cycle.
    pub async fn create_cycle(
        &self,
        tenant: &TenantId,
        request_id: &str,
        hash: &str,
        c: &CycleRow,
    ) -> ApiResult<CycleRow> {
        let txn = db::begin_write(self.db()).await?;
        if let Prior::Same(id) =
            idempotency::check(&txn, IDEMPOTENCY, tenant, "CreateCycle", request_id, hash).await?
        {
            txn.commit().await?;
            return self.get_cycle(tenant, &id).await;
        }
        let id = db::new_id();
        let now = db::now_micros();
        let stages = serde_json::to_string(&c.stages)
            .map_err(|e| ApiError::Internal(format!("encoding stages: {e}")))?;
        txn.execute_raw(stmt(
            txn.get_database_backend(),
            &format!("INSERT INTO ex_cycles (tenant_id, {CYCLE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, NULL, NULL, ?)"),
            vec![
                tenant.as_str().into(),
                id.clone().into(),
                c.survey_id.clone().into(),
                c.name.clone().into(),
                c.org_unit_id.clone().into(),
                stages.into(),
                c.previous_cycle_id.clone().into(),
                i64::from(state::DRAFT).into(),
                now.into(),
            ],
        ))
        .await?;
        idempotency::remember(
            &txn,
            IDEMPOTENCY,
            tenant,
            "CreateCycle",
            request_id,
            hash,
            &id,
        )
        .await?;
        txn.commit().await?;
        Ok(CycleRow {
            id,
            state: state::DRAFT,
            created_at: now,
            ..c.clone()
        })
    }

    /// One cycle.
    pub async fn get_cycle(&self, tenant: &TenantId, id: &str) -> ApiResult<CycleRow> {
        Self::cycle_in(self.db(), tenant, id).await
    }

    async fn cycle_in<C: ConnectionTrait>(
        c: &C,
        tenant: &TenantId,
        id: &str,
    ) -> ApiResult<CycleRow> {
        let row = c
            .query_one_raw(stmt(
                c.get_database_backend(),
                &format!("SELECT {CYCLE_COLS} FROM ex_cycles WHERE tenant_id = ? AND id = ?"),
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(CYCLE, id))?;
        cycle_row(&row)
    }

    /// A page of cycles by id, optionally of one survey.
    pub async fn list_cycles(
        &self,
        tenant: &TenantId,
        survey_id: &str,
        page: &Page,
    ) -> ApiResult<Vec<CycleRow>> {
        let mut sql = format!("SELECT {CYCLE_COLS} FROM ex_cycles WHERE tenant_id = ?");
        let mut values: Vec<Value> = vec![tenant.as_str().into()];
        if !survey_id.is_empty() {
            sql.push_str(" AND survey_id = ?");
            values.push(survey_id.into());
        }
        if let Some(after) = &page.after {
            sql.push_str(" AND id > ?");
            values.push(after.clone().into());
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.size + 1));
        let rows = self
            .db()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?;
        rows.iter().map(cycle_row).collect()
    }

    /// True when the unit exists for the tenant.
    pub async fn unit_exists(&self, tenant: &TenantId, id: &str) -> ApiResult<bool> {
        Ok(self
            .db()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT 1 FROM ex_org_units WHERE tenant_id = ? AND id = ?",
                vec![tenant.as_str().into(), id.into()],
            ))
            .await?
            .is_some())
    }

    /// Launches a draft cycle: freezes the threshold, the tree under the cycle's unit, and
    /// every invited person's unit and attributes; creates every sum row with zeros.
    pub async fn launch_cycle(&self, tenant: &TenantId, id: &str) -> ApiResult<CycleRow> {
        let txn = db::begin_write(self.db()).await?;
        let backend = txn.get_database_backend();
        // Taking the draft → open step first locks the cycle's row: of two concurrent
        // launches, the second waits and then finds it open.
        let claimed = txn
            .execute_raw(stmt(
                backend,
                "UPDATE ex_cycles SET state = ? WHERE tenant_id = ? AND id = ? AND state = ?",
                vec![
                    i64::from(state::OPEN).into(),
                    tenant.as_str().into(),
                    id.into(),
                    i64::from(state::DRAFT).into(),
                ],
            ))
            .await?
            .rows_affected();
        let cycle = Self::cycle_in(&txn, tenant, id).await?;
        if claimed == 0 {
            txn.commit().await?;
            return match cycle.state {
                state::OPEN => Ok(cycle),
                _ => Err(ApiError::precondition(
                    "CYCLE_CLOSED",
                    format!("cycles/{id}"),
                    "a closed cycle cannot be launched again",
                )),
            };
        }
        let survey = {
            let row = txn
                .query_one_raw(stmt(
                    backend,
                    "SELECT id, name, kind, questions, created_at FROM ex_surveys WHERE tenant_id = ? AND id = ?",
                    vec![tenant.as_str().into(), cycle.survey_id.clone().into()],
                ))
                .await?
                .ok_or_else(|| ApiError::not_found(SURVEY, cycle.survey_id.clone()))?;
            survey_row(&row)?.def()
        };
        let k = Self::threshold(&txn, tenant).await?;
        let now = db::now_micros();
        // The tree under the cycle's unit, as of now, parents before children.
        let parents = parents_at(&txn, tenant, now).await?;
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for (u, (p, _)) in &parents {
            children.entry(p.as_str()).or_default().push(u.as_str());
        }
        for c in children.values_mut() {
            c.sort_unstable();
        }
        let mut order: Vec<String> = vec![cycle.org_unit_id.clone()];
        // Syncs refuse loops at every dated moment; the visited set keeps the walk finite
        // even so, should the stored links ever hold one.
        let mut seen: HashSet<String> = HashSet::from([cycle.org_unit_id.clone()]);
        let mut i = 0;
        while i < order.len() {
            if let Some(cs) = children.get(order[i].as_str()) {
                for c in cs {
                    if seen.insert((*c).to_owned()) {
                        order.push((*c).to_owned());
                    }
                }
            }
            i += 1;
        }
        // A cycle is compared with the latest cycle of its survey launched before it over an
        // overlapping part of the tree (its unit, a unit above it, or one below it). One that
        // names none gets that one; one that names another is refused: comparing with an older
        // cycle would leave this cycle's groups unchecked against the latest, and the few
        // people who changed between those two could be read off by hand. The rule must not
        // depend on what whoever creates the cycle names. A cycle of another department is no
        // comparison: none of its groups would match.
        let mut cycle = cycle;
        let latest = {
            let mut overlapping: HashSet<&str> = order.iter().map(String::as_str).collect();
            let mut up = parents.get(&cycle.org_unit_id).map(|(p, _)| p.as_str());
            while let Some(u) = up.filter(|u| !u.is_empty() && overlapping.insert(u)) {
                up = parents.get(u).map(|(p, _)| p.as_str());
            }
            let earlier = txn
                .query_all_raw(stmt(
                    backend,
                    "SELECT id, org_unit_id, closed_at FROM ex_cycles WHERE tenant_id = ? AND survey_id = ? AND id <> ? AND launched_at IS NOT NULL ORDER BY launched_at DESC, id DESC",
                    vec![
                        tenant.as_str().into(),
                        cycle.survey_id.clone().into(),
                        id.into(),
                    ],
                ))
                .await?;
            let mut latest = None;
            for r in &earlier {
                let unit: String = get(r, 1)?;
                if overlapping.contains(unit.as_str()) {
                    latest = Some((get::<String>(r, 0)?, get::<Option<i64>>(r, 2)?.is_some()));
                    break;
                }
            }
            // Its respondents are what this cycle's groups are checked against, and they
            // must be final: were this cycle closed first, every later answer to the earlier
            // one would change which of this cycle's groups are shown, and groups read before
            // and after could be subtracted from each other.
            if let Some((l, false)) = &latest {
                return Err(ApiError::precondition(
                    "PREVIOUS_OPEN",
                    format!("cycles/{id}"),
                    format!(
                        "the latest cycle of this survey over these units, cycles/{l}, is still open: close it before launching this one"
                    ),
                ));
            }
            latest.map(|(l, _)| l)
        };
        match (cycle.previous_cycle_id.is_empty(), latest) {
            (true, Some(latest)) => {
                cycle.previous_cycle_id = latest;
                txn.execute_raw(stmt(
                    backend,
                    "UPDATE ex_cycles SET previous_cycle_id = ? WHERE tenant_id = ? AND id = ?",
                    vec![
                        cycle.previous_cycle_id.clone().into(),
                        tenant.as_str().into(),
                        id.into(),
                    ],
                ))
                .await?;
            }
            (false, latest) if latest.as_deref() != Some(cycle.previous_cycle_id.as_str()) => {
                // Dropped without commit: the cycle stays a draft.
                return Err(ApiError::precondition(
                    "PREVIOUS_NOT_LATEST",
                    format!("cycles/{id}"),
                    match latest {
                        Some(l) => format!(
                            "the previous cycle must be the latest launched cycle of this survey over these units, cycles/{l}, or left empty for it"
                        ),
                        None => "no launched cycle of this survey covers these units: leave previous_cycle_id empty".to_owned(),
                    },
                ));
            }
            _ => {}
        }
        let names: HashMap<String, String> = txn
            .query_all_raw(stmt(
                backend,
                "SELECT id, name FROM ex_org_units WHERE tenant_id = ?",
                vec![tenant.as_str().into()],
            ))
            .await?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
            .collect::<ApiResult<_>>()?;
        let rows: Vec<(String, String, String, i64)> = order
            .iter()
            .enumerate()
            .map(|(pos, u)| {
                let parent = if pos == 0 {
                    String::new()
                } else {
                    parents.get(u).map(|p| p.0.clone()).unwrap_or_default()
                };
                (
                    u.clone(),
                    parent,
                    names.get(u).cloned().unwrap_or_default(),
                    pos as i64,
                )
            })
            .collect();
        for chunk in db::pow2_chunks(&rows, db::rows_per_statement(6)) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
            for (u, p, n, pos) in chunk {
                values.extend([
                    tenant.as_str().into(),
                    id.into(),
                    u.clone().into(),
                    p.clone().into(),
                    n.clone().into(),
                    (*pos).into(),
                ]);
            }
            txn.execute_raw(stmt(
                backend,
                &format!("INSERT INTO ex_cycle_units (tenant_id, cycle_id, unit_id, parent_id, name, position) VALUES {}", db::row_placeholders(chunk.len(), 6)),
                values,
            ))
            .await?;
        }
        // Invitees: people of those units in the cycle's stages, as they are now.
        let in_tree: HashSet<&str> = order.iter().map(String::as_str).collect();
        let employees = txn
            .query_all_raw(stmt(
                backend,
                "SELECT id, org_unit_id, stage, tenure_band, location, role_family FROM ex_employees WHERE tenant_id = ? AND erased_at IS NULL",
                vec![tenant.as_str().into()],
            ))
            .await?;
        let mut invitees: Vec<(String, String, [String; 3])> = Vec::new();
        for r in &employees {
            let unit: String = get(r, 1)?;
            let stage = get::<i64>(r, 2)? as i32;
            if in_tree.contains(unit.as_str()) && cycle.stages.contains(&stage) {
                invitees.push((get(r, 0)?, unit, [get(r, 3)?, get(r, 4)?, get(r, 5)?]));
            }
        }
        for chunk in db::pow2_chunks(&invitees, db::rows_per_statement(9)) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 9);
            for (e, u, a) in chunk {
                values.extend([
                    tenant.as_str().into(),
                    id.into(),
                    e.clone().into(),
                    u.clone().into(),
                    a[0].clone().into(),
                    a[1].clone().into(),
                    a[2].clone().into(),
                    0i64.into(),
                    "".into(),
                ]);
            }
            txn.execute_raw(stmt(
                backend,
                &format!("INSERT INTO ex_participation (tenant_id, cycle_id, employee_id, unit_id, tenure_band, location, role_family, answered, request_key) VALUES {}", db::row_placeholders(chunk.len(), 9)),
                values,
            ))
            .await?;
        }
        // Every sum row a submission can touch exists from now on, with zeros: no row is ever
        // created by an answer, so neither row order nor row existence tells anything.
        let mut groups: HashSet<(String, i64, String)> = HashSet::new();
        for (_, u, a) in &invitees {
            groups.insert((u.clone(), 0, String::new()));
            for d in 1..=3 {
                groups.insert((u.clone(), d, a[(d - 1) as usize].clone()));
            }
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort();
        let (measures, stats) = survey.sum_names(false);
        let (_, all_stats) = survey.sum_names(true);
        let mut tally_rows: Vec<(&str, i64, &str, &str)> = Vec::new();
        let mut moment_rows: Vec<(&str, i64, &str, &str)> = Vec::new();
        for (u, d, v) in &groups {
            for m in &measures {
                tally_rows.push((u, *d, v, m));
            }
            for s in if *d == 0 { &all_stats } else { &stats } {
                moment_rows.push((u, *d, v, s));
            }
        }
        for chunk in db::pow2_chunks(&tally_rows, db::rows_per_statement(17)) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
            for (u, d, v, m) in chunk {
                values.extend([
                    tenant.as_str().into(),
                    id.into(),
                    (*u).into(),
                    (*d).into(),
                    (*v).into(),
                    (*m).into(),
                ]);
            }
            let rows =
                vec!["(?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"; chunk.len()].join(", ");
            txn.execute_raw(stmt(
                backend,
                &format!("INSERT INTO ex_tallies (tenant_id, cycle_id, unit_id, dim, value, measure, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10) VALUES {rows}"),
                values,
            ))
            .await?;
        }
        for chunk in db::pow2_chunks(&moment_rows, db::rows_per_statement(7)) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
            for (u, d, v, s) in chunk {
                values.extend([
                    tenant.as_str().into(),
                    id.into(),
                    (*u).into(),
                    (*d).into(),
                    (*v).into(),
                    (*s).into(),
                ]);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?, 0.0)"; chunk.len()].join(", ");
            txn.execute_raw(stmt(
                backend,
                &format!("INSERT INTO ex_moments (tenant_id, cycle_id, unit_id, dim, value, stat, total) VALUES {rows}"),
                values,
            ))
            .await?;
        }
        txn.execute_raw(stmt(
            backend,
            "UPDATE ex_cycles SET state = ?, threshold = ?, invited = ?, launched_at = ? WHERE tenant_id = ? AND id = ?",
            vec![
                i64::from(state::OPEN).into(),
                i64::from(k).into(),
                (invitees.len() as i64).into(),
                now.into(),
                tenant.as_str().into(),
                id.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        Ok(CycleRow {
            state: state::OPEN,
            threshold: k,
            invited: invitees.len() as u64,
            launched_at: Some(now),
            ..cycle
        })
    }

    /// Closes an open cycle.
    pub async fn close_cycle(&self, tenant: &TenantId, id: &str) -> ApiResult<CycleRow> {
        let now = db::now_micros();
        let res = self
            .db()
            .execute_raw(stmt(
                self.backend(),
                "UPDATE ex_cycles SET state = ?, closed_at = ? WHERE tenant_id = ? AND id = ? AND state = ?",
                vec![
                    i64::from(state::CLOSED).into(),
                    now.into(),
                    tenant.as_str().into(),
                    id.into(),
                    i64::from(state::OPEN).into(),
                ],
            ))
            .await?;
        let c = self.get_cycle(tenant, id).await?;
        if res.rows_affected() == 0 && c.state != state::CLOSED {
            return Err(ApiError::precondition(
                "CYCLE_NOT_OPEN",
                format!("cycles/{id}"),
                "only an open cycle can be closed",
            ));
        }
        Ok(c)
    }

    // ---- answering ----

    /// Open cycles an employee is invited to, with whether they answered.
    pub async fn invitations(
        &self,
        tenant: &TenantId,
        employee_id: &str,
    ) -> ApiResult<Vec<(CycleRow, bool)>> {
        let rows = self
            .db()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT cycle_id, answered FROM ex_participation WHERE tenant_id = ? AND employee_id = ? ORDER BY cycle_id",
                vec![tenant.as_str().into(), employee_id.into()],
            ))
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let c = self.get_cycle(tenant, &get::<String>(r, 0)?).await?;
            if c.state == state::OPEN {
                out.push((c, get::<i64>(r, 1)? != 0));
            }
        }
        Ok(out)
    }

    /// Counts one submission: marks the participant answered and adds the answers to the
    /// sums of the participant's launch groups, in one transaction. The guarded update
    /// (`answered = 0`) lets only one of two concurrent submissions through.
    pub async fn submit(
        &self,
        tenant: &TenantId,
        cycle_id: &str,
        employee_id: &str,
        request_id: &str,
        contribution: &Contribution,
        submission: &Submission,
    ) -> ApiResult<Submitted> {
        let key = request_key(cycle_id, request_id);
        let txn = db::begin_write(self.db()).await?;
        let backend = txn.get_database_backend();
        if backend == sea_orm::DbBackend::Postgres {
            // Held until commit, so CloseCycle (an UPDATE of this row) waits for a submission
            // that found the cycle open, and a submission after it finds it closed: no answer
            // lands after the figures were published. A share lock: submissions do not wait
            // for each other. SQLite's write transactions are serialised already.
            txn.query_one_raw(stmt(
                backend,
                "SELECT id FROM ex_cycles WHERE tenant_id = ? AND id = ? FOR SHARE",
                vec![tenant.as_str().into(), cycle_id.into()],
            ))
            .await?;
        }
        let cycle = Self::cycle_in(&txn, tenant, cycle_id).await?;
        if cycle.state != state::OPEN {
            return Err(ApiError::precondition(
                "CYCLE_NOT_OPEN",
                format!("cycles/{cycle_id}"),
                "answers are taken only while the cycle is open",
            ));
        }
        let res = txn
            .execute_raw(stmt(
                backend,
                "UPDATE ex_participation SET answered = 1, request_key = ? WHERE tenant_id = ? AND cycle_id = ? AND employee_id = ? AND answered = 0",
                vec![
                    key.clone().into(),
                    tenant.as_str().into(),
                    cycle_id.into(),
                    employee_id.into(),
                ],
            ))
            .await?;
        let row = txn
            .query_one_raw(stmt(
                backend,
                "SELECT unit_id, tenure_band, location, role_family, request_key FROM ex_participation WHERE tenant_id = ? AND cycle_id = ? AND employee_id = ?",
                vec![tenant.as_str().into(), cycle_id.into(), employee_id.into()],
            ))
            .await?
            .ok_or_else(|| ApiError::not_found(INVITATION, cycle_id))?;
        if res.rows_affected() == 0 {
            let prior: String = get(&row, 4)?;
            txn.commit().await?;
            return if prior == key {
                Ok(Submitted::Duplicate)
            } else {
                Err(ApiError::precondition(
                    "ALREADY_ANSWERED",
                    format!("cycles/{cycle_id}"),
                    "you have already answered this cycle",
                ))
            };
        }
        let unit: String = get(&row, 0)?;
        let attrs: [String; 3] = [get(&row, 1)?, get(&row, 2)?, get(&row, 3)?];
        add_sums(&txn, tenant, cycle_id, &unit, &attrs, contribution).await?;
        if !submission.comments.is_empty() {
            let mut values: Vec<Value> = Vec::new();
            for (q, text) in &submission.comments {
                values.extend([
                    tenant.as_str().into(),
                    cycle_id.into(),
                    unit.clone().into(),
                    q.clone().into(),
                    // Random, not time-ordered: the key must not tell when it was written.
                    uuid::Uuid::new_v4().to_string().into(),
                    text.clone().into(),
                ]);
            }
            txn.execute_raw(stmt(
                backend,
                &format!(
                    "INSERT INTO ex_comments (tenant_id, cycle_id, unit_id, question_key, id, body) VALUES {}",
                    db::row_placeholders(submission.comments.len(), 6)
                ),
                values,
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(Submitted::Counted)
    }

    // ---- results ----

    /// The tree and the invited/answered counts per full cell of a launched cycle.
    pub async fn snapshot(&self, tenant: &TenantId, cycle_id: &str) -> ApiResult<Snapshot> {
        let units = self
            .db()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT unit_id, parent_id, name FROM ex_cycle_units WHERE tenant_id = ? AND cycle_id = ? ORDER BY position",
                vec![tenant.as_str().into(), cycle_id.into()],
            ))
            .await?;
        let mut rows = Vec::with_capacity(units.len());
        let mut names = Vec::with_capacity(units.len());
        for r in &units {
            rows.push((get::<String>(r, 0)?, get::<String>(r, 1)?));
            names.push(get::<String>(r, 2)?);
        }
        let tree = Tree::new(&rows);
        let agg = self
            .db()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT unit_id, tenure_band, location, role_family, COUNT(*), CAST(SUM(answered) AS BIGINT) FROM ex_participation WHERE tenant_id = ? AND cycle_id = ? GROUP BY unit_id, tenure_band, location, role_family",
                vec![tenant.as_str().into(), cycle_id.into()],
            ))
            .await?;
        let mut cells = Vec::with_capacity(agg.len());
        for r in &agg {
            let unit: String = get(r, 0)?;
            let Some(u) = tree.index_of(&unit) else {
                continue;
            };
            cells.push(Cell {
                unit: u,
                attrs: [get(r, 1)?, get(r, 2)?, get(r, 3)?],
                invited: get::<i64>(r, 4)? as u64,
                answered: get::<Option<i64>>(r, 5)?.unwrap_or(0) as u64,
            });
        }
        Ok(Snapshot { tree, names, cells })
    }

    /// Sums per (unit, value) of one dimension, optionally only some measures and stats
    /// (by prefix: "" for all).
    pub async fn sums(
        &self,
        tenant: &TenantId,
        cycle_id: &str,
        dim: i64,
        measures: Option<&[&str]>,
        stat_prefixes: &[&str],
    ) -> ApiResult<HashMap<(String, String), GroupSums>> {
        let mut out: HashMap<(String, String), GroupSums> = HashMap::new();
        let mut sql = "SELECT unit_id, value, measure, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10 FROM ex_tallies WHERE tenant_id = ? AND cycle_id = ? AND dim = ?".to_string();
        let mut values: Vec<Value> = vec![tenant.as_str().into(), cycle_id.into(), dim.into()];
        if let Some(ms) = measures {
            let ph = db::in_list(&mut values, ms.iter().map(|m| Value::from(*m)));
            sql.push_str(&format!(" AND measure IN ({ph})"));
        }
        for r in self
            .db()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?
        {
            let mut h = [0u64; 11];
            for (i, c) in h.iter_mut().enumerate() {
                *c = get::<i64>(&r, 3 + i)? as u64;
            }
            let g = out.entry((get(&r, 0)?, get(&r, 1)?)).or_default();
            g.tallies.insert(get(&r, 2)?, h);
        }
        let mut sql = "SELECT unit_id, value, stat, total FROM ex_moments WHERE tenant_id = ? AND cycle_id = ? AND dim = ?".to_string();
        let mut values: Vec<Value> = vec![tenant.as_str().into(), cycle_id.into(), dim.into()];
        if !stat_prefixes.is_empty() {
            let conds: Vec<String> = stat_prefixes
                .iter()
                .map(|p| {
                    values.push(format!("{p}%").into());
                    "stat LIKE ?".to_string()
                })
                .collect();
            sql.push_str(&format!(" AND ({})", conds.join(" OR ")));
        }
        for r in self
            .db()
            .query_all_raw(stmt(self.backend(), &sql, values))
            .await?
        {
            let g = out.entry((get(&r, 0)?, get(&r, 1)?)).or_default();
            g.moments.insert(get(&r, 2)?, get(&r, 3)?);
        }
        Ok(out)
    }

    /// The version of a cycle's results data: (answered participants, erased employees of
    /// the tenant). Two index-only counts; both numbers only grow.
    pub async fn cycle_version(&self, tenant: &TenantId, cycle_id: &str) -> ApiResult<(i64, i64)> {
        let answered = self
            .db()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT COUNT(*) FROM ex_participation WHERE tenant_id = ? AND cycle_id = ? AND answered = 1",
                vec![tenant.as_str().into(), cycle_id.into()],
            ))
            .await?
            .map(|r| get::<i64>(&r, 0))
            .transpose()?
            .unwrap_or(0);
        let erased = self
            .db()
            .query_one_raw(stmt(
                self.backend(),
                "SELECT COUNT(*) FROM ex_employees WHERE tenant_id = ? AND erased_at IS NOT NULL",
                vec![tenant.as_str().into()],
            ))
            .await?
            .map(|r| get::<i64>(&r, 0))
            .transpose()?
            .unwrap_or(0);
        Ok((answered, erased))
    }

    /// Answered participants of a cycle: (participant key, unit, attributes). Used only to
    /// count how much a group's respondents changed between cycles.
    pub async fn respondents(&self, tenant: &TenantId, cycle_id: &str) -> ApiResult<Respondents> {
        let rows = self
            .db()
            .query_all_raw(stmt(
                self.backend(),
                "SELECT employee_id, unit_id, tenure_band, location, role_family FROM ex_participation WHERE tenant_id = ? AND cycle_id = ? AND answered = 1",
                vec![tenant.as_str().into(), cycle_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, [get(r, 2)?, get(r, 3)?, get(r, 4)?])))
            .collect()
    }

    /// Comments of these units, in key (random) order.
    pub async fn comments(
        &self,
        tenant: &TenantId,
        cycle_id: &str,
        units: &[String],
    ) -> ApiResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in units.chunks(256) {
            let mut values: Vec<Value> = vec![tenant.as_str().into(), cycle_id.into()];
            let ph = db::in_list(&mut values, chunk.iter().map(|u| Value::from(u.clone())));
            let rows = self
                .db()
                .query_all_raw(stmt(
                    self.backend(),
                    &format!("SELECT question_key, body, id FROM ex_comments WHERE tenant_id = ? AND cycle_id = ? AND unit_id IN ({ph})"),
                    values,
                ))
                .await?;
            for r in &rows {
                out.push((
                    get::<String>(r, 2)?,
                    get::<String>(r, 0)?,
                    get::<String>(r, 1)?,
                ));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, q, b)| (q, b)).collect())
    }
}

/// Adds a contribution to the participant's four groups (no attribute, and one per
/// attribute) in multi-row upserts. The rows exist since launch; the upsert form only lets
/// one statement touch many rows.
async fn add_sums(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    cycle_id: &str,
    unit: &str,
    attrs: &[String; 3],
    c: &Contribution,
) -> ApiResult<()> {
    let backend = txn.get_database_backend();
    let groups: [(i64, &str); 4] = [
        (0, ""),
        (1, attrs[0].as_str()),
        (2, attrs[1].as_str()),
        (3, attrs[2].as_str()),
    ];
    let mut tallies: Vec<Value> = Vec::new();
    let mut rows = 0usize;
    for (d, v) in groups {
        for (m, score) in &c.tallies {
            let mut h = [0i64; 11];
            if let Some(slot) = usize::try_from(*score).ok().and_then(|s| h.get_mut(s)) {
                *slot = 1;
            }
            tallies.extend([
                tenant.as_str().into(),
                cycle_id.into(),
                unit.into(),
                d.into(),
                v.into(),
                m.clone().into(),
            ]);
            tallies.extend(h.iter().map(|x| Value::from(*x)));
            rows += 1;
        }
    }
    txn.execute_raw(stmt(
        backend,
        &format!(
            "INSERT INTO ex_tallies (tenant_id, cycle_id, unit_id, dim, value, measure, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10) VALUES {} ON CONFLICT (tenant_id, cycle_id, dim, unit_id, value, measure) DO UPDATE SET h0 = ex_tallies.h0 + excluded.h0, h1 = ex_tallies.h1 + excluded.h1, h2 = ex_tallies.h2 + excluded.h2, h3 = ex_tallies.h3 + excluded.h3, h4 = ex_tallies.h4 + excluded.h4, h5 = ex_tallies.h5 + excluded.h5, h6 = ex_tallies.h6 + excluded.h6, h7 = ex_tallies.h7 + excluded.h7, h8 = ex_tallies.h8 + excluded.h8, h9 = ex_tallies.h9 + excluded.h9, h10 = ex_tallies.h10 + excluded.h10",
            db::row_placeholders(rows, 17)
        ),
        tallies,
    ))
    .await?;
    let mut moments: Vec<Value> = Vec::new();
    let mut rows = 0usize;
    for (d, v) in groups {
        let cross: &[(String, f64)] = if d == 0 { &c.cross } else { &[] };
        for (s, x) in c.moments.iter().chain(cross) {
            moments.extend([
                tenant.as_str().into(),
                cycle_id.into(),
                unit.into(),
                d.into(),
                v.into(),
                s.clone().into(),
                (*x).into(),
            ]);
            rows += 1;
        }
    }
    if rows > 0 {
        txn.execute_raw(stmt(
            backend,
            &format!(
                "INSERT INTO ex_moments (tenant_id, cycle_id, unit_id, dim, value, stat, total) VALUES {} ON CONFLICT (tenant_id, cycle_id, dim, unit_id, value, stat) DO UPDATE SET total = ex_moments.total + excluded.total",
                db::row_placeholders(rows, 7)
            ),
            moments,
        ))
        .await?;
    }
    Ok(())
}
