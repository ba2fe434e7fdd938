//! The gRPC face of the employee service: decode and validate each request into domain
//! values once, check the caller's permission, call the store or the report, encode the
//! answer. No call returns an individual answer: the store keeps none.

use cxloop_platform::error::{ApiError, ApiResult, Violations, check_len, resource_id};
use cxloop_platform::idempotency;
use cxloop_platform::paging::{PageSigner, request_args as page_args};
use cxloop_platform::{Caller, Permission, TenantId};
use cxloop_proto::common::v1 as common;
use cxloop_proto::employee::v1 as pb;
use pb::employee_service_server::EmployeeService;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::domain::{self, AnswerValue, Question, QuestionKind};
use crate::report::{self, plan_pb, ts};
use crate::store::cycles::{CycleRow, Submitted, SurveyRow, state};
use crate::store::people::{EmployeeRow, Outcome, RowResult, UnitInput, UnitRow};
use crate::store::{ActionPlanRow, INVITATION, Store};

/// Most rows in one sync call.
pub const MAX_SYNC_ROWS: usize = 10_000;

/// The EmployeeService implementation.
#[derive(Clone)]
pub struct EmployeeApi {
    store: Store,
    pages: PageSigner,
    cache: report::ResultsCache,
}

impl EmployeeApi {
    /// Whether an action plan's unit is in the caller's scope (in its cycle's tree).
    async fn plan_in_scope(
        &self,
        tenant: &TenantId,
        scope: &report::Scope,
        cycle_id: &str,
        unit_id: &str,
    ) -> ApiResult<bool> {
        if matches!(scope, report::Scope::All) {
            return Ok(true);
        }
        let (_, snap) = self.cache.snapshot(&self.store, tenant, cycle_id).await?;
        Ok(snap
            .tree
            .index_of(unit_id)
            .is_some_and(|u| scope.allows(&snap.tree, u)))
    }

    /// An API over this store.
    pub fn new(store: Store, pages: PageSigner) -> Self {
        Self {
            store,
            pages,
            cache: report::ResultsCache::default(),
        }
    }
}

fn auth<T>(req: &Request<T>, p: Permission) -> Result<TenantId, Status> {
    let caller = Caller::of(req)?;
    caller.require(p)?;
    Ok(caller.tenant)
}

/// The caller's tenant and the units they may read results and action plans of, after
/// checking permission `p`: every unit with `ExResultsReadAll`, else the units where the
/// people reporting to them work (the token's subject is their external HR id) and below.
async fn scoped<T>(
    store: &Store,
    req: &Request<T>,
    p: Permission,
) -> Result<(TenantId, report::Scope), Status> {
    let caller = Caller::of(req)?;
    caller.require(p)?;
    if caller.require(Permission::ExResultsReadAll).is_ok() {
        return Ok((caller.tenant, report::Scope::All));
    }
    let units = store.managed_units(&caller.tenant, &caller.subject).await?;
    Ok((caller.tenant, report::Scope::Below(units)))
}

fn to_micros(t: &prost_types::Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).map(|d| d.timestamp_micros())
}

/// Times an action-plan update is applied to a newer plan when another update wrote first.
const PLAN_UPDATE_ATTEMPTS: u32 = 5;

fn check_id(v: &mut Violations, field: &str, s: &str) {
    if s.is_empty() {
        v.add(field, "is required");
    } else if s.contains('\0') {
        v.add(field, "must not contain the NUL character (U+0000)");
    } else if s.chars().count() > 128 {
        v.add(field, "must be at most 128 characters");
    }
}

/// An external id as a sync result echoes it: its first 128 characters, the most a valid one
/// has. A row refused for a longer id would otherwise have its whole id sent back, up to the
/// request's size.
fn echoed(external_id: &str) -> String {
    match external_id.char_indices().nth(128) {
        Some((cut, _)) => external_id[..cut].to_owned(),
        None => external_id.to_owned(),
    }
}

/// Most encoded bytes of a sync answer's results before the refused rows' violations are
/// shortened: a client takes 4 MiB by default, and 10,000 rows of a mis-mapped export failing
/// every check would make some 6.5 MB (from the message layout).
const MAX_SYNC_ANSWER_BYTES: usize = 3_000_000;

/// The results of a sync, in row order. When they would pass [`MAX_SYNC_ANSWER_BYTES`], every
/// echoed external id is cut to 64 bytes (the index identifies the row) and each refused row
/// keeps only its first violation, its description cut to 100 bytes and followed by how many
/// more there were: the valid rows are stored either way, and a refused row sent again alone
/// shows all of its violations.
fn sync_results_pb(rows: Vec<RowResult>, ext: &[String]) -> Vec<pb::SyncResult> {
    use prost::Message;
    let mut results = sync_results_full(rows, ext);
    let bytes: usize = results.iter().map(|r| r.encoded_len() + 4).sum();
    if bytes > MAX_SYNC_ANSWER_BYTES {
        for r in &mut results {
            cut_bytes(&mut r.external_id, 64);
            if r.violations.is_empty() {
                continue;
            }
            let more = r.violations.len() - 1;
            r.violations.truncate(1);
            let first = &mut r.violations[0];
            cut_bytes(&mut first.description, 100);
            if more > 0 {
                first.description.push_str(&format!(" (and {more} more)"));
            }
        }
    }
    results
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut with "…".
fn cut_bytes(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max - '…'.len_utf8();
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

fn sync_results_full(rows: Vec<RowResult>, ext: &[String]) -> Vec<pb::SyncResult> {
    rows.into_iter()
        .enumerate()
        .map(|(i, (o, id, v))| pb::SyncResult {
            index: i as u32,
            external_id: ext.get(i).map(|e| echoed(e)).unwrap_or_default(),
            outcome: match o {
                Outcome::Created => pb::SyncOutcome::Created,
                Outcome::Updated => pb::SyncOutcome::Updated,
                Outcome::Unchanged => pb::SyncOutcome::Unchanged,
                Outcome::Invalid => pb::SyncOutcome::Invalid,
            } as i32,
            id,
            violations: v
                .into_iter()
                .map(|(field, description)| common::FieldViolation { field, description })
                .collect(),
        })
        .collect()
}

fn unit_pb(u: UnitRow) -> pb::OrgUnit {
    pb::OrgUnit {
        id: u.id,
        external_id: u.external_id,
        name: u.name,
        parent_id: u.parent_id,
        parent_external_id: u.parent_external_id,
        parent_since: Some(ts(u.parent_since)),
    }
}

fn employee_pb(e: EmployeeRow) -> pb::Employee {
    pb::Employee {
        id: e.id,
        external_id: e.external_id,
        display_name: e.display_name,
        email: e.email,
        org_unit_external_id: e.org_unit_external_id,
        manager_external_id: e.manager_external_id,
        stage: e.stage,
        tenure_band: e.tenure_band,
        location: e.location,
        role_family: e.role_family,
        erased: e.erased,
        create_time: Some(ts(e.created_at)),
        update_time: Some(ts(e.updated_at)),
    }
}

/// Checks one employee row; fields are prefixed with `employees[i].`.
fn employee_input(i: usize, e: &pb::Employee) -> Result<EmployeeRow, Vec<(String, String)>> {
    let mut v = Violations::new();
    let f = |name: &str| format!("employees[{i}].{name}");
    check_len(&mut v, &f("external_id"), &e.external_id, 1, 128);
    check_len(&mut v, &f("display_name"), &e.display_name, 1, 200);
    check_len(&mut v, &f("email"), &e.email, 0, 320);
    if !e.email.is_empty() && !e.email.contains('@') {
        v.add(f("email"), "is not an e-mail address");
    }
    check_len(
        &mut v,
        &f("org_unit_external_id"),
        &e.org_unit_external_id,
        1,
        128,
    );
    check_len(
        &mut v,
        &f("manager_external_id"),
        &e.manager_external_id,
        0,
        128,
    );
    if !domain::check_stage(e.stage) {
        v.add(
            f("stage"),
            "must be a known stage other than LIFECYCLE_STAGE_UNSPECIFIED",
        );
    }
    check_len(&mut v, &f("tenure_band"), &e.tenure_band, 0, 64);
    check_len(&mut v, &f("location"), &e.location, 0, 64);
    check_len(&mut v, &f("role_family"), &e.role_family, 0, 64);
    if !v.is_empty() {
        return Err(v.into_inner());
    }
    Ok(EmployeeRow {
        external_id: e.external_id.clone(),
        display_name: e.display_name.clone(),
        email: e.email.clone(),
        org_unit_external_id: e.org_unit_external_id.clone(),
        manager_external_id: e.manager_external_id.clone(),
        stage: e.stage,
        tenure_band: e.tenure_band.clone(),
        location: e.location.clone(),
        role_family: e.role_family.clone(),
        ..Default::default()
    })
}

fn question_pb(q: &Question) -> pb::Question {
    pb::Question {
        key: q.key.clone(),
        text: q.text.clone(),
        kind: q.kind.code(),
        driver: q.driver.clone(),
        engagement: q.engagement,
    }
}

fn survey_pb(s: SurveyRow) -> pb::Survey {
    pb::Survey {
        id: s.id,
        name: s.name,
        kind: s.kind,
        questions: s.questions.iter().map(question_pb).collect(),
        create_time: Some(ts(s.created_at)),
    }
}

fn cycle_pb(c: CycleRow) -> pb::Cycle {
    pb::Cycle {
        id: c.id,
        survey_id: c.survey_id,
        name: c.name,
        org_unit_id: c.org_unit_id,
        stages: c.stages,
        previous_cycle_id: c.previous_cycle_id,
        state: c.state,
        anonymity_threshold: c.threshold,
        invited: c.invited,
        launch_time: c.launched_at.map(ts),
        close_time: c.closed_at.map(ts),
        create_time: Some(ts(c.created_at)),
    }
}

fn parse_attribute(v: &mut Violations, field: &str, code: i32) -> Option<usize> {
    match pb::Attribute::try_from(code) {
        Ok(pb::Attribute::Unspecified) => None,
        Ok(pb::Attribute::TenureBand) => Some(0),
        Ok(pb::Attribute::Location) => Some(1),
        Ok(pb::Attribute::RoleFamily) => Some(2),
        Err(_) => {
            v.add(field, "must be a known attribute");
            None
        }
    }
}

fn check_due_date(v: &mut Violations, field: &str, s: &str) {
    if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() {
        v.add(field, "must be a date YYYY-MM-DD");
    }
}

fn check_status(v: &mut Violations, field: &str, code: i32) {
    if !(1..=4).contains(&code) {
        v.add(
            field,
            "must be a known status other than ACTION_PLAN_STATUS_UNSPECIFIED",
        );
    }
}

impl EmployeeApi {
    async fn launched_cycle(&self, tenant: &TenantId, id: &str) -> ApiResult<CycleRow> {
        if id.is_empty() {
            return Err(ApiError::invalid("cycle_id", "is required"));
        }
        self.store.get_cycle(tenant, id).await
    }
}

#[tonic::async_trait]
impl EmployeeService for EmployeeApi {
    async fn sync_org_units(
        &self,
        req: Request<pb::SyncOrgUnitsRequest>,
    ) -> Result<Response<pb::SyncOrgUnitsResponse>, Status> {
        let tenant = auth(&req, Permission::PeopleWrite)?;
        let r = req.into_inner();
        if r.units.is_empty() || r.units.len() > MAX_SYNC_ROWS {
            return Err(
                ApiError::invalid("units", format!("must have 1-{MAX_SYNC_ROWS} rows")).into(),
            );
        }
        let effective = match r.effective_time.as_ref() {
            None => cxloop_platform::db::now_micros(),
            Some(t) => to_micros(t)
                .ok_or_else(|| ApiError::invalid("effective_time", "is not a valid timestamp"))?,
        };
        let rows: Vec<Result<UnitInput, Vec<(String, String)>>> = r
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let mut v = Violations::new();
                check_len(
                    &mut v,
                    &format!("units[{i}].external_id"),
                    &u.external_id,
                    1,
                    128,
                );
                check_len(&mut v, &format!("units[{i}].name"), &u.name, 1, 200);
                check_len(
                    &mut v,
                    &format!("units[{i}].parent_external_id"),
                    &u.parent_external_id,
                    0,
                    128,
                );
                if u.parent_external_id == u.external_id && !u.external_id.is_empty() {
                    v.add(
                        format!("units[{i}].parent_external_id"),
                        "a unit cannot be its own parent",
                    );
                }
                if v.is_empty() {
                    Ok(UnitInput {
                        external_id: u.external_id.clone(),
                        name: u.name.clone(),
                        parent_external_id: u.parent_external_id.clone(),
                    })
                } else {
                    Err(v.into_inner())
                }
            })
            .collect();
        let ext: Vec<String> = r.units.iter().map(|u| u.external_id.clone()).collect();
        let results = self.store.sync_org_units(&tenant, effective, &rows).await?;
        Ok(Response::new(pb::SyncOrgUnitsResponse {
            results: sync_results_pb(results, &ext),
        }))
    }

    async fn list_org_units(
        &self,
        req: Request<pb::ListOrgUnitsRequest>,
    ) -> Result<Response<pb::ListOrgUnitsResponse>, Status> {
        let tenant = auth(&req, Permission::PeopleRead)?;
        let r = req.into_inner();
        let at = match r.as_of.as_ref() {
            None => cxloop_platform::db::now_micros(),
            Some(t) => to_micros(t)
                .ok_or_else(|| ApiError::invalid("as_of", "is not a valid timestamp"))?,
        };
        // "now" stays "now" across pages, so the next page's token still matches.
        let filters = match r.as_of.as_ref() {
            Some(_) => format!("org_units|{at}"),
            None => "org_units|now".to_string(),
        };
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self.store.list_org_units(&tenant, at, &page).await?;
        let (items, page) = listing.finish(&page, rows, |u| u.id.clone(), unit_pb);
        Ok(Response::new(pb::ListOrgUnitsResponse {
            org_units: items,
            page: Some(page),
        }))
    }

    async fn sync_employees(
        &self,
        req: Request<pb::SyncEmployeesRequest>,
    ) -> Result<Response<pb::SyncEmployeesResponse>, Status> {
        let tenant = auth(&req, Permission::PeopleWrite)?;
        let r = req.into_inner();
        if r.employees.is_empty() || r.employees.len() > MAX_SYNC_ROWS {
            return Err(ApiError::invalid(
                "employees",
                format!("must have 1-{MAX_SYNC_ROWS} rows"),
            )
            .into());
        }
        let rows: Vec<_> = r
            .employees
            .iter()
            .enumerate()
            .map(|(i, e)| employee_input(i, e))
            .collect();
        let ext: Vec<String> = r.employees.iter().map(|e| e.external_id.clone()).collect();
        let results = self.store.sync_employees(&tenant, &rows).await?;
        Ok(Response::new(pb::SyncEmployeesResponse {
            results: sync_results_pb(results, &ext),
        }))
    }

    async fn get_employee(
        &self,
        req: Request<pb::GetEmployeeRequest>,
    ) -> Result<Response<pb::GetEmployeeResponse>, Status> {
        let tenant = auth(&req, Permission::PeopleRead)?;
        let e = self
            .store
            .get_employee(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetEmployeeResponse {
            employee: Some(employee_pb(e)),
        }))
    }

    async fn list_employees(
        &self,
        req: Request<pb::ListEmployeesRequest>,
    ) -> Result<Response<pb::ListEmployeesResponse>, Status> {
        let tenant = auth(&req, Permission::PeopleRead)?;
        let r = req.into_inner();
        let filters = format!("employees|{}", r.org_unit_id);
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_employees(&tenant, &r.org_unit_id, &page)
            .await?;
        let (items, page) = listing.finish(&page, rows, |e| e.id.clone(), employee_pb);
        Ok(Response::new(pb::ListEmployeesResponse {
            employees: items,
            page: Some(page),
        }))
    }

    async fn erase_employee(
        &self,
        req: Request<pb::EraseEmployeeRequest>,
    ) -> Result<Response<pb::EraseEmployeeResponse>, Status> {
        let tenant = auth(&req, Permission::PeopleWrite)?;
        let e = self
            .store
            .erase_employee(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        tracing::info!(employee = %e.id, "employee's personal data erased");
        Ok(Response::new(pb::EraseEmployeeResponse {
            employee: Some(employee_pb(e)),
        }))
    }

    async fn get_anonymity_settings(
        &self,
        req: Request<pb::GetAnonymitySettingsRequest>,
    ) -> Result<Response<pb::GetAnonymitySettingsResponse>, Status> {
        let tenant = auth(&req, Permission::ExResultsRead)?;
        let threshold = Store::threshold(self.store.db(), &tenant).await?;
        Ok(Response::new(pb::GetAnonymitySettingsResponse {
            threshold,
        }))
    }

    async fn update_anonymity_settings(
        &self,
        req: Request<pb::UpdateAnonymitySettingsRequest>,
    ) -> Result<Response<pb::UpdateAnonymitySettingsResponse>, Status> {
        let tenant = auth(&req, Permission::ExSurveysWrite)?;
        let k = req.get_ref().threshold;
        if !(domain::MIN_THRESHOLD..=domain::MAX_THRESHOLD).contains(&k) {
            return Err(ApiError::invalid(
                "threshold",
                format!(
                    "must be {}-{}: anonymity cannot be switched off",
                    domain::MIN_THRESHOLD,
                    domain::MAX_THRESHOLD
                ),
            )
            .into());
        }
        self.store.set_threshold(&tenant, k).await?;
        Ok(Response::new(pb::UpdateAnonymitySettingsResponse {
            threshold: k,
        }))
    }

    async fn create_survey(
        &self,
        req: Request<pb::CreateSurveyRequest>,
    ) -> Result<Response<pb::CreateSurveyResponse>, Status> {
        let tenant = auth(&req, Permission::ExSurveysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(mut s) = r.survey else {
            return Err(ApiError::invalid("survey", "is required").into());
        };
        check_len(&mut v, "survey.name", &s.name, 1, 200);
        if !(1..=5).contains(&s.kind) {
            v.add(
                "survey.kind",
                "must be a known kind other than SURVEY_KIND_UNSPECIFIED",
            );
        }
        let mut questions = Vec::with_capacity(s.questions.len());
        for (i, q) in s.questions.iter().enumerate() {
            match QuestionKind::from_code(q.kind) {
                Some(kind) => questions.push(Question {
                    key: q.key.clone(),
                    text: q.text.clone(),
                    kind,
                    driver: q.driver.clone(),
                    engagement: q.engagement,
                }),
                None => v.add(
                    format!("survey.questions[{i}].kind"),
                    "must be a known kind other than QUESTION_KIND_UNSPECIFIED",
                ),
            }
        }
        if questions.len() == s.questions.len() {
            for (f, d) in domain::check_questions(&questions) {
                v.add(f, d);
            }
        }
        v.finish()?;
        s.id.clear();
        s.create_time = None;
        let hash = idempotency::fingerprint(&s.encode_to_vec());
        let row = self
            .store
            .create_survey(
                &tenant,
                &request_id.unwrap_or_default(),
                &hash,
                &s.name,
                s.kind,
                &questions,
            )
            .await?;
        Ok(Response::new(pb::CreateSurveyResponse {
            survey: Some(survey_pb(row)),
        }))
    }

    async fn get_survey(
        &self,
        req: Request<pb::GetSurveyRequest>,
    ) -> Result<Response<pb::GetSurveyResponse>, Status> {
        let tenant = auth(&req, Permission::ExResultsRead)
            .or_else(|_| auth(&req, Permission::ExSurveysWrite))?;
        let s = self
            .store
            .get_survey(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetSurveyResponse {
            survey: Some(survey_pb(s)),
        }))
    }

    async fn list_surveys(
        &self,
        req: Request<pb::ListSurveysRequest>,
    ) -> Result<Response<pb::ListSurveysResponse>, Status> {
        let tenant = auth(&req, Permission::ExResultsRead)
            .or_else(|_| auth(&req, Permission::ExSurveysWrite))?;
        let r = req.into_inner();
        let filters = "surveys";
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, filters);
        let page = listing.parse(size, token)?;
        let rows = self.store.list_surveys(&tenant, &page).await?;
        let (surveys, page) = listing.finish(&page, rows, |s| s.id.clone(), survey_pb);
        Ok(Response::new(pb::ListSurveysResponse {
            surveys,
            page: Some(page),
        }))
    }

    async fn create_cycle(
        &self,
        req: Request<pb::CreateCycleRequest>,
    ) -> Result<Response<pb::CreateCycleResponse>, Status> {
        let tenant = auth(&req, Permission::ExSurveysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(mut c) = r.cycle else {
            return Err(ApiError::invalid("cycle", "is required").into());
        };
        check_id(&mut v, "cycle.survey_id", &c.survey_id);
        check_len(&mut v, "cycle.name", &c.name, 1, 200);
        check_id(&mut v, "cycle.org_unit_id", &c.org_unit_id);
        // Five stages exist; a list of more repeats one, and is said once, not item by item.
        if c.stages.len() > 5 {
            v.add("cycle.stages", "must list each of at most 5 stages once");
        } else {
            for (i, s) in c.stages.iter().enumerate() {
                if !domain::check_stage(*s) {
                    v.add(format!("cycle.stages[{i}]"), "must be a known stage");
                }
            }
        }
        v.finish()?;
        let survey = self
            .store
            .get_survey(&tenant, &c.survey_id)
            .await
            .map_err(|e| match e {
                ApiError::NotFound { .. } => ApiError::invalid("cycle.survey_id", "no such survey"),
                other => other,
            })?;
        if !self.store.unit_exists(&tenant, &c.org_unit_id).await? {
            return Err(ApiError::invalid("cycle.org_unit_id", "no such org unit").into());
        }
        if !c.previous_cycle_id.is_empty() {
            let prev = self
                .store
                .get_cycle(&tenant, &c.previous_cycle_id)
                .await
                .map_err(|e| match e {
                    ApiError::NotFound { .. } => {
                        ApiError::invalid("cycle.previous_cycle_id", "no such cycle")
                    }
                    other => other,
                })?;
            if prev.survey_id != survey.id || prev.state == state::DRAFT {
                return Err(ApiError::invalid(
                    "cycle.previous_cycle_id",
                    "must be a launched cycle of the same survey",
                )
                .into());
            }
        }
        let mut stages = c.stages.clone();
        if stages.is_empty() {
            stages = domain::DEFAULT_STAGES.to_vec();
        }
        stages.sort_unstable();
        stages.dedup();
        c.id.clear();
        c.state = 0;
        c.anonymity_threshold = 0;
        c.invited = 0;
        c.launch_time = None;
        c.close_time = None;
        c.create_time = None;
        let hash = idempotency::fingerprint(&c.encode_to_vec());
        let row = self
            .store
            .create_cycle(
                &tenant,
                &request_id.unwrap_or_default(),
                &hash,
                &CycleRow {
                    survey_id: c.survey_id.clone(),
                    name: c.name.clone(),
                    org_unit_id: c.org_unit_id.clone(),
                    stages,
                    previous_cycle_id: c.previous_cycle_id.clone(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(Response::new(pb::CreateCycleResponse {
            cycle: Some(cycle_pb(row)),
        }))
    }

    async fn get_cycle(
        &self,
        req: Request<pb::GetCycleRequest>,
    ) -> Result<Response<pb::GetCycleResponse>, Status> {
        let tenant = auth(&req, Permission::ExResultsRead)
            .or_else(|_| auth(&req, Permission::ExSurveysWrite))?;
        let c = self
            .store
            .get_cycle(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetCycleResponse {
            cycle: Some(cycle_pb(c)),
        }))
    }

    async fn list_cycles(
        &self,
        req: Request<pb::ListCyclesRequest>,
    ) -> Result<Response<pb::ListCyclesResponse>, Status> {
        let tenant = auth(&req, Permission::ExResultsRead)
            .or_else(|_| auth(&req, Permission::ExSurveysWrite))?;
        let r = req.into_inner();
        let filters = format!("cycles|{}", r.survey_id);
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self.store.list_cycles(&tenant, &r.survey_id, &page).await?;
        let (items, page) = listing.finish(&page, rows, |c| c.id.clone(), cycle_pb);
        Ok(Response::new(pb::ListCyclesResponse {
            cycles: items,
            page: Some(page),
        }))
    }

    async fn launch_cycle(
        &self,
        req: Request<pb::LaunchCycleRequest>,
    ) -> Result<Response<pb::LaunchCycleResponse>, Status> {
        let tenant = auth(&req, Permission::ExSurveysWrite)?;
        let c = self
            .store
            .launch_cycle(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::LaunchCycleResponse {
            cycle: Some(cycle_pb(c)),
        }))
    }

    async fn close_cycle(
        &self,
        req: Request<pb::CloseCycleRequest>,
    ) -> Result<Response<pb::CloseCycleResponse>, Status> {
        let tenant = auth(&req, Permission::ExSurveysWrite)?;
        let c = self
            .store
            .close_cycle(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::CloseCycleResponse {
            cycle: Some(cycle_pb(c)),
        }))
    }

    async fn list_my_invitations(
        &self,
        req: Request<pb::ListMyInvitationsRequest>,
    ) -> Result<Response<pb::ListMyInvitationsResponse>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::ExAnswer)?;
        let Some(employee) = self
            .store
            .employee_by_external(&caller.tenant, &caller.subject)
            .await?
        else {
            return Ok(Response::new(pb::ListMyInvitationsResponse::default()));
        };
        let mut invitations = Vec::new();
        for (c, answered) in self.store.invitations(&caller.tenant, &employee).await? {
            let survey = self.store.get_survey(&caller.tenant, &c.survey_id).await?;
            invitations.push(pb::Invitation {
                cycle: Some(cycle_pb(c)),
                survey: Some(survey_pb(survey)),
                answered,
            });
        }
        Ok(Response::new(pb::ListMyInvitationsResponse { invitations }))
    }

    async fn submit_answers(
        &self,
        req: Request<pb::SubmitAnswersRequest>,
    ) -> Result<Response<pb::SubmitAnswersResponse>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::ExAnswer)?;
        let tenant = caller.tenant.clone();
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        check_id(&mut v, "cycle_id", &r.cycle_id);
        if r.answers.is_empty() || r.answers.len() > 200 {
            v.add("answers", "must have 1-200 answers");
        }
        let mut answers = Vec::with_capacity(r.answers.len());
        for (i, a) in r.answers.into_iter().enumerate() {
            match a.value {
                Some(pb::answer::Value::Score(s)) => {
                    answers.push((a.question_key, AnswerValue::Score(s)))
                }
                Some(pb::answer::Value::Text(t)) => {
                    answers.push((a.question_key, AnswerValue::Text(t)))
                }
                None => v.add(format!("answers[{i}]"), "set score or text"),
            }
        }
        v.finish()?;
        let cycle = self.store.get_cycle(&tenant, &r.cycle_id).await?;
        let survey = self
            .store
            .get_survey(&tenant, &cycle.survey_id)
            .await?
            .def();
        let submission =
            domain::check_submission(&survey, answers).map_err(ApiError::InvalidArgument)?;
        let Some(employee) = self
            .store
            .employee_by_external(&tenant, &caller.subject)
            .await?
        else {
            return Err(ApiError::not_found(INVITATION, r.cycle_id).into());
        };
        let contribution = domain::contribution(&survey, &submission);
        let outcome = self
            .store
            .submit(
                &tenant,
                &cycle.id,
                &employee,
                &request_id.unwrap_or_default(),
                &contribution,
                &submission,
            )
            .await?;
        Ok(Response::new(pb::SubmitAnswersResponse {
            duplicate: outcome == Submitted::Duplicate,
        }))
    }

    async fn get_results(
        &self,
        req: Request<pb::GetResultsRequest>,
    ) -> Result<Response<pb::GetResultsResponse>, Status> {
        let (tenant, scope) = scoped(&self.store, &req, Permission::ExResultsRead).await?;
        let r = req.into_inner();
        let mut v = Violations::new();
        check_id(&mut v, "cycle_id", &r.cycle_id);
        // Every violation in one answer: a missing group does not hide a bad cycle id.
        let Some(g) = r.group else {
            v.add("group", "is required");
            return Err(ApiError::InvalidArgument(v.into_inner()).into());
        };
        check_id(&mut v, "group.org_unit_id", &g.org_unit_id);
        let attr = parse_attribute(&mut v, "group.filter_attribute", g.filter_attribute);
        match attr {
            Some(_) if !g.include_descendants => v.add(
                "group.include_descendants",
                "a demographic filter applies to a unit with its descendants",
            ),
            Some(_) if g.filter_value.is_empty() || g.filter_value.chars().count() > 64 => v.add(
                "group.filter_value",
                "must be 1-64 characters with a filter",
            ),
            None if !g.filter_value.is_empty() => {
                v.add("group.filter_value", "needs filter_attribute")
            }
            _ => {}
        }
        v.finish()?;
        let cycle = self.launched_cycle(&tenant, &r.cycle_id).await?;
        let filter = attr.map(|a| (a, g.filter_value.clone()));
        let results =
            report::group_results(&self.cache, &self.store, &tenant, cycle, g, filter, &scope)
                .await?;
        Ok(Response::new(pb::GetResultsResponse {
            results: Some(results),
        }))
    }

    async fn get_results_tree(
        &self,
        req: Request<pb::GetResultsTreeRequest>,
    ) -> Result<Response<pb::GetResultsTreeResponse>, Status> {
        let (tenant, scope) = scoped(&self.store, &req, Permission::ExResultsRead).await?;
        let r = req.into_inner();
        let mut v = Violations::new();
        check_id(&mut v, "cycle_id", &r.cycle_id);
        let attr = parse_attribute(&mut v, "breakdown_attribute", r.breakdown_attribute);
        v.finish()?;
        let cycle = self.launched_cycle(&tenant, &r.cycle_id).await?;
        Ok(Response::new(
            report::tree_results(&self.cache, &self.store, &tenant, cycle, attr, &scope).await?,
        ))
    }

    async fn create_action_plan(
        &self,
        req: Request<pb::CreateActionPlanRequest>,
    ) -> Result<Response<pb::CreateActionPlanResponse>, Status> {
        let (tenant, scope) = scoped(&self.store, &req, Permission::ActionPlansWrite).await?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(mut p) = r.action_plan else {
            return Err(ApiError::invalid("action_plan", "is required").into());
        };
        check_id(&mut v, "action_plan.cycle_id", &p.cycle_id);
        check_id(&mut v, "action_plan.org_unit_id", &p.org_unit_id);
        check_len(&mut v, "action_plan.driver", &p.driver, 1, 64);
        check_len(&mut v, "action_plan.title", &p.title, 1, 200);
        check_len(&mut v, "action_plan.description", &p.description, 0, 4000);
        check_len(&mut v, "action_plan.owner", &p.owner, 1, 200);
        check_due_date(&mut v, "action_plan.due_date", &p.due_date);
        if p.status == 0 {
            p.status = 1;
        }
        check_status(&mut v, "action_plan.status", p.status);
        v.finish()?;
        let cycle = self
            .store
            .get_cycle(&tenant, &p.cycle_id)
            .await
            .map_err(|e| match e {
                ApiError::NotFound { .. } => {
                    ApiError::invalid("action_plan.cycle_id", "no such cycle")
                }
                other => other,
            })?;
        if cycle.state == state::DRAFT {
            return Err(ApiError::invalid(
                "action_plan.cycle_id",
                "the cycle has not been launched",
            )
            .into());
        }
        let (_, snap) = self.cache.snapshot(&self.store, &tenant, &cycle.id).await?;
        let Some(u) = snap.tree.index_of(&p.org_unit_id) else {
            return Err(
                ApiError::invalid("action_plan.org_unit_id", "is not a unit of the cycle").into(),
            );
        };
        if !scope.allows(&snap.tree, u) {
            return Err(report::out_of_scope(&p.org_unit_id).into());
        }
        let survey = self
            .store
            .get_survey(&tenant, &cycle.survey_id)
            .await?
            .def();
        if !survey.drivers().contains(&p.driver) {
            return Err(ApiError::invalid(
                "action_plan.driver",
                format!("the survey has no driver {:?}", p.driver),
            )
            .into());
        }
        p.id.clear();
        p.create_time = None;
        p.update_time = None;
        let hash = idempotency::fingerprint(&p.encode_to_vec());
        let row = self
            .store
            .create_action_plan(
                &tenant,
                &request_id.unwrap_or_default(),
                &hash,
                &ActionPlanRow {
                    id: String::new(),
                    cycle_id: p.cycle_id,
                    unit_id: p.org_unit_id,
                    driver: p.driver,
                    title: p.title,
                    description: p.description,
                    owner: p.owner,
                    due_date: p.due_date,
                    status: p.status,
                    created_at: 0,
                    updated_at: 0,
                },
            )
            .await?;
        Ok(Response::new(pb::CreateActionPlanResponse {
            action_plan: Some(plan_pb(&row)),
        }))
    }

    async fn get_action_plan(
        &self,
        req: Request<pb::GetActionPlanRequest>,
    ) -> Result<Response<pb::GetActionPlanResponse>, Status> {
        let (tenant, scope) = scoped(&self.store, &req, Permission::ExResultsRead).await?;
        let p = self
            .store
            .get_action_plan(&tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        if !self
            .plan_in_scope(&tenant, &scope, &p.cycle_id, &p.unit_id)
            .await?
        {
            return Err(report::out_of_scope(&p.unit_id).into());
        }
        Ok(Response::new(pb::GetActionPlanResponse {
            action_plan: Some(plan_pb(&p)),
        }))
    }

    async fn list_action_plans(
        &self,
        req: Request<pb::ListActionPlansRequest>,
    ) -> Result<Response<pb::ListActionPlansResponse>, Status> {
        let (tenant, scope) = scoped(&self.store, &req, Permission::ExResultsRead).await?;
        let r = req.into_inner();
        let filters =
            cxloop_platform::paging::filters_fingerprint("plans", &[&r.org_unit_id, &r.cycle_id]);
        let (size, token) = page_args(r.page.as_ref());
        let listing = self.pages.listing(&tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_action_plans(&tenant, &r.org_unit_id, &r.cycle_id, &page)
            .await?;
        let (plans, page) = listing.finish(&page, rows, |p| p.id.clone(), |p| plan_pb(&p));
        // A manager's page leaves out other units' plans (so it may hold fewer than asked;
        // the page token still continues after the last row read).
        let mut mine = Vec::with_capacity(plans.len());
        for p in plans {
            if self
                .plan_in_scope(&tenant, &scope, &p.cycle_id, &p.org_unit_id)
                .await?
            {
                mine.push(p);
            }
        }
        Ok(Response::new(pb::ListActionPlansResponse {
            action_plans: mine,
            page: Some(page),
        }))
    }

    async fn update_action_plan(
        &self,
        req: Request<pb::UpdateActionPlanRequest>,
    ) -> Result<Response<pb::UpdateActionPlanResponse>, Status> {
        let (tenant, scope) = scoped(&self.store, &req, Permission::ActionPlansWrite).await?;
        let r = req.into_inner();
        let Some(p) = r.action_plan else {
            return Err(ApiError::invalid("action_plan", "is required").into());
        };
        let allowed = ["title", "description", "owner", "due_date", "status"];
        let paths: Vec<String> = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        if paths.is_empty() {
            v.add(
                "update_mask",
                format!("name the fields to change: {}", allowed.join(", ")),
            );
        }
        let mut fields = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let f = path.strip_prefix("action_plan.").unwrap_or(path);
            if allowed.contains(&f) {
                fields.push(f.to_owned());
            } else {
                v.add(
                    format!("update_mask.paths[{i}]"),
                    format!("{f:?} cannot be updated"),
                );
            }
        }
        for f in &fields {
            match f.as_str() {
                "title" => check_len(&mut v, "action_plan.title", &p.title, 1, 200),
                "description" => {
                    check_len(&mut v, "action_plan.description", &p.description, 0, 4000)
                }
                "owner" => check_len(&mut v, "action_plan.owner", &p.owner, 1, 200),
                "due_date" => check_due_date(&mut v, "action_plan.due_date", &p.due_date),
                _ => check_status(&mut v, "action_plan.status", p.status),
            }
        }
        v.finish()?;
        let id = resource_id("action_plan.id", &p.id)?;
        // Read, change the masked fields, write if nobody wrote in between; else again from
        // the newer plan: two updates of different fields both take effect, and a status
        // change is checked against the status it really changes.
        let mut attempt = 0;
        let row = loop {
            attempt += 1;
            let mut row = self.store.get_action_plan(&tenant, id).await?;
            if !self
                .plan_in_scope(&tenant, &scope, &row.cycle_id, &row.unit_id)
                .await?
            {
                return Err(report::out_of_scope(&row.unit_id).into());
            }
            for f in &fields {
                match f.as_str() {
                    "title" => row.title = p.title.clone(),
                    "description" => row.description = p.description.clone(),
                    "owner" => row.owner = p.owner.clone(),
                    "due_date" => row.due_date = p.due_date.clone(),
                    _ => {
                        if !domain::action_plan_transition_ok(row.status, p.status) {
                            return Err(ApiError::precondition(
                                "STATUS_TRANSITION",
                                format!("action_plans/{}", row.id),
                                "status moves planned → in progress → done, or to cancelled from an open status",
                            )
                            .into());
                        }
                        row.status = p.status;
                    }
                }
            }
            match self.store.update_action_plan(&tenant, &row).await? {
                Some(row) => break row,
                None if attempt < PLAN_UPDATE_ATTEMPTS => continue,
                None => {
                    return Err(ApiError::precondition(
                        "PLAN_CHANGED",
                        format!("action_plans/{}", row.id),
                        "the plan kept changing while this update was applied; read it and retry",
                    )
                    .into());
                }
            }
        };
        Ok(Response::new(pb::UpdateActionPlanResponse {
            action_plan: Some(plan_pb(&row)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_sync_answer_keeps_one_short_violation_per_refused_row() {
        use prost::Message;
        // 10,000 refused rows of 128-character ids, each with ten long violations.
        let ext: Vec<String> = (0..10_000).map(|i| format!("{i:0128}")).collect();
        let rows: Vec<RowResult> = (0..10_000)
            .map(|i| {
                let v = (0..10)
                    .map(|k| (format!("employees[{i}].field{k}"), "é".repeat(150)))
                    .collect();
                (Outcome::Invalid, String::new(), v)
            })
            .collect();
        let results = sync_results_pb(rows, &ext);
        let bytes: usize = results.iter().map(|r| r.encoded_len() + 4).sum();
        assert!(bytes < 4 * 1024 * 1024 - 64 * 1024, "{bytes}");
        let first = &results[0].violations;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].field, "employees[0].field0");
        assert!(
            first[0].description.contains("and 9 more"),
            "{}",
            first[0].description
        );
        // A small answer keeps everything.
        let small = sync_results_pb(
            vec![(
                Outcome::Invalid,
                String::new(),
                vec![("a".into(), "x".into()), ("b".into(), "y".into())],
            )],
            &["e1".to_string()],
        );
        assert_eq!(small[0].violations.len(), 2);
    }

    #[test]
    fn a_sync_result_echoes_at_most_128_characters_of_an_external_id() {
        assert_eq!(echoed("hr-1"), "hr-1");
        let long = "\u{e9}".repeat(500);
        assert_eq!(echoed(&long).chars().count(), 128);
        assert_eq!(echoed(&"x".repeat(128)).len(), 128);
    }
}
