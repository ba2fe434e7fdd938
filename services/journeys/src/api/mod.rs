//! The gRPC surface of `cxloop.journeys.v1`: decode and validate requests into domain types,
//! authorize by permission, call the store and (for scorecards, coverage and effects) the
//! feedback service, and encode the answers.

pub mod convert;
pub mod scorecard;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cxloop_platform::db::{self, micros};
use cxloop_platform::error::{ApiError, ApiResult, Violations, resource_id};
use cxloop_platform::idempotency;
use cxloop_platform::paging::{PageSigner, request_args as page_of};
use cxloop_platform::period::{self, Range};
use cxloop_platform::{Caller, Permission, TenantId};
use cxloop_proto::common::v1 as common;
use cxloop_proto::journeys::v1 as pb;
use pb::journey_service_server::JourneyService;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::domain::backlog::{self, Capacity, Effect, ItemDoc, ItemStatus, StatusChange};
use crate::domain::map::{self, JourneyDoc};
use crate::domain::ownership::{DAY_US, OwnerRole, uncovered_days};
use crate::domain::{Subject, check_len};
use crate::feedback::Feedback;
use crate::store::{self, AssignmentFilter, AssignmentRow, ItemRow, JourneyRow, KpiRow, Store};
use convert::*;

/// Longest scorecard period, in days.
const MAX_SCORECARD_DAYS: i64 = 366;
/// Days before and after a change that effect measurement compares by default.
const EFFECT_WINDOW_DAYS: i64 = 28;

/// The journey service.
pub struct JourneyApi {
    store: Store,
    feedback: Feedback,
    pages: Arc<PageSigner>,
}

impl JourneyApi {
    /// An API over this store, reading metrics from this feedback service.
    pub fn new(store: Store, feedback: Feedback, pages: PageSigner) -> Self {
        Self {
            store,
            feedback,
            pages: Arc::new(pages),
        }
    }
}

fn caller<T>(req: &Request<T>, p: Permission) -> Result<Caller, Status> {
    let c = Caller::of(req)?;
    c.require(p)?;
    Ok(c)
}

fn mask(v: &mut Violations, m: Option<&prost_types::FieldMask>, allowed: &[&str]) -> Vec<String> {
    let Some(m) = m.filter(|m| !m.paths.is_empty()) else {
        v.add("update_mask", "is required: name the fields to change");
        return Vec::new();
    };
    for p in &m.paths {
        if !allowed.contains(&p.as_str()) {
            v.add(
                "update_mask",
                format!("{p:?} cannot be changed; allowed: {}", allowed.join(", ")),
            );
        }
    }
    m.paths.clone()
}

/// Today's start (00:00 UTC), µs.
fn today_start() -> i64 {
    db::now_micros().div_euclid(DAY_US) * DAY_US
}

/// A named period as stored and matched (one spelling per period); text that is not a period
/// is kept as it is, for the validation that follows to refuse with its field.
fn canonical_period(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    period::canonical_named(p).unwrap_or_else(|_| p.to_owned())
}

/// A reference in the request to something that does not exist is bad input naming the
/// field; any other failure (storage, say) stays what it is, so a client retries it.
fn missing_is_invalid(e: ApiError, field: String, what: &str) -> ApiError {
    match e {
        ApiError::NotFound { .. } => ApiError::invalid(field, what),
        other => other,
    }
}

impl JourneyApi {
    /// Checks that every touchpoint a stage lists is a live touchpoint of the feedback service
    /// (a mistyped id would leave the stage unmeasured without a word). One listing of the
    /// touchpoints, only when some stage names one.
    async fn check_stage_touchpoints(
        &self,
        c: &Caller,
        v: &mut Violations,
        stages: &[pb::Stage],
    ) -> ApiResult<()> {
        if stages.iter().all(|s| s.touchpoint_ids.is_empty()) {
            return Ok(());
        }
        let live: HashSet<String> = self
            .feedback
            .touchpoints(c, false)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        for (i, s) in stages.iter().enumerate() {
            for (k, t) in s.touchpoint_ids.iter().enumerate() {
                if !live.contains(t) {
                    v.add(
                        format!("journey.stages[{i}].touchpoint_ids[{k}]"),
                        format!("no touchpoint {t:?} in the feedback service"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks that a stage or journey subject exists in a live journey, and that a touchpoint
    /// subject exists in feedback.
    async fn check_subject(&self, caller: &Caller, field: &str, s: &Subject) -> ApiResult<()> {
        match s {
            Subject::Tenant => Ok(()),
            Subject::Journey(j) => self
                .store
                .get_journey(&caller.tenant, j, None)
                .await
                .map(|_| ())
                .map_err(|e| {
                    missing_is_invalid(e, format!("{field}.journey_id"), "no such journey")
                }),
            Subject::Stage { journey, stage } => {
                let j = self
                    .store
                    .get_journey(&caller.tenant, journey, None)
                    .await
                    .map_err(|e| {
                        missing_is_invalid(
                            e,
                            format!("{field}.stage.journey_id"),
                            "no such journey",
                        )
                    })?;
                if j.doc.stages.iter().any(|x| &x.id == stage) {
                    Ok(())
                } else {
                    Err(ApiError::invalid(
                        format!("{field}.stage.stage_id"),
                        "the journey has no such stage",
                    ))
                }
            }
            Subject::Touchpoint(t) => {
                if self.feedback.touchpoint_exists(caller, t).await? {
                    Ok(())
                } else {
                    Err(ApiError::invalid(
                        format!("{field}.touchpoint_id"),
                        "no such touchpoint in the feedback service",
                    ))
                }
            }
        }
    }

    /// Checks a KPI's survey, question and metric against the feedback service.
    async fn check_measure(
        &self,
        caller: &Caller,
        k: &crate::domain::kpi::KpiDoc,
    ) -> ApiResult<()> {
        let survey = self.feedback.survey(caller, &k.survey_id).await?;
        let Some(q) = survey.questions.iter().find(|q| q.key == k.question_key) else {
            return Err(ApiError::invalid(
                "kpi.survey.question_key",
                "the survey has no such question",
            ));
        };
        use cxloop_metrics::SurveyMetric::*;
        use cxloop_proto::feedback::v1::QuestionKind as Q;
        let fits = match (Q::try_from(q.kind).unwrap_or(Q::Unspecified), k.metric()) {
            (_, None) => false,
            (Q::Nps, Some(Nps | PromoterShare | DetractorShare | Mean)) => true,
            (Q::Csat, Some(Top2Share | Mean)) => true,
            (Q::Ces, Some(EasyShare | Mean)) => true,
            (Q::Rating, Some(Mean)) => true,
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(ApiError::invalid(
                "kpi.survey.metric",
                "the metric does not apply to the question's kind (NPS: NPS, shares, mean; CSAT: top-2 share, mean; CES: easy share, mean; rating: mean)",
            ))
        }
    }

    /// The maps the KPIs' subjects need (a journey's or a stage's touchpoints).
    async fn journeys_for(&self, tenant: &TenantId, kpis: &[KpiRow]) -> ApiResult<Vec<JourneyRow>> {
        let ids: Vec<&str> = kpis
            .iter()
            .filter_map(|k| k.doc.subject.journey())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.store.journeys_by_ids(tenant, &ids).await
    }

    async fn capacity_report(
        &self,
        tenant: &TenantId,
        period: &str,
    ) -> ApiResult<pb::CapacityReport> {
        let capacity = self.store.capacity(tenant, period).await?;
        let items: Vec<ItemDoc> = self
            .store
            .items_in_period(tenant, period)
            .await?
            .into_iter()
            .map(|r| r.doc)
            .collect();
        let c = Capacity::of(capacity, &items);
        Ok(pb::CapacityReport {
            period: period.into(),
            capacity_days: c.capacity,
            planned_days: c.planned,
            used_days: c.used,
            planned_share: c.planned_share(),
            used_share: c.used_share(),
            item_count: c.items as i32,
        })
    }

    async fn set_journey(
        &self,
        caller: &Caller,
        current: &JourneyRow,
        expected: i64,
        next: JourneyDoc,
        delete: bool,
    ) -> ApiResult<JourneyRow> {
        if expected != 0 && expected != current.revision {
            return Err(ApiError::precondition(
                "REVISION_CHANGED",
                format!("journeys/{}", current.id),
                format!(
                    "expected revision {expected}, the journey is at revision {}",
                    current.revision
                ),
            ));
        }
        let changes = if delete {
            vec!["deleted".to_string()]
        } else {
            map::changes(&current.doc, &next)
        };
        if changes.is_empty() {
            return Ok(current.clone());
        }
        let change = crate::store::Change {
            doc: &next,
            changes: &changes,
            by: &caller.subject,
            delete,
        };
        self.store
            .update_journey(&caller.tenant, current, &change)
            .await
    }
}

fn journey_fields(v: &mut Violations, j: &pb::Journey) {
    check_len(v, "journey.name", &j.name, 1, 200);
    check_len(v, "journey.description", &j.description, 0, 4000);
    journey_size(v, j);
}

/// Most encoded bytes of a journey map as sent. The per-field limits alone allow maps far
/// past the 4 MiB a request may have, and the answer adds an id of 38 bytes for each new stage
/// and pain point: a map of at most 3 MiB is answered within a client's default 4 MiB.
const MAX_JOURNEY_BYTES: usize = 3 * 1024 * 1024;

fn journey_size(v: &mut Violations, j: &pb::Journey) {
    use prost::Message;
    if j.encoded_len() > MAX_JOURNEY_BYTES {
        v.add(
            "journey",
            format!(
                "must be at most {MAX_JOURNEY_BYTES} bytes encoded (this one is {}): move \
                 detail into linked documents",
                j.encoded_len()
            ),
        );
    }
}

#[tonic::async_trait]
impl JourneyService for JourneyApi {
    async fn create_journey(
        &self,
        req: Request<pb::CreateJourneyRequest>,
    ) -> Result<Response<pb::CreateJourneyResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(j) = r.journey.as_ref() else {
            return Err(ApiError::invalid("journey", "is required").into());
        };
        journey_fields(&mut v, j);
        // Ids are assigned here, so the fingerprint is taken from the request as sent.
        let hash = idempotency::fingerprint(&j.encode_to_vec());
        let stages = map::order_stages(
            &mut v,
            "journey.stages",
            stage_inputs(&j.stages),
            &[],
            db::new_id,
        );
        v.finish()?;
        let request_id = request_id.unwrap_or_default();
        if let Some(id) = self
            .store
            .created_before(&c.tenant, store::CREATE_JOURNEY, &request_id, &hash)
            .await?
        {
            let row = self.store.get_journey(&c.tenant, &id, None).await?;
            return Ok(Response::new(pb::CreateJourneyResponse {
                journey: Some(journey_pb(&row)),
            }));
        }
        let mut v = Violations::new();
        self.check_stage_touchpoints(&c, &mut v, &j.stages).await?;
        v.finish()?;
        let doc = JourneyDoc {
            name: j.name.clone(),
            description: j.description.clone(),
            stages,
        };
        let row = self
            .store
            .create_journey(&c.tenant, &request_id, &hash, &doc, &c.subject)
            .await?;
        Ok(Response::new(pb::CreateJourneyResponse {
            journey: Some(journey_pb(&row)),
        }))
    }

    async fn get_journey(
        &self,
        req: Request<pb::GetJourneyRequest>,
    ) -> Result<Response<pb::GetJourneyResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let as_of = r
            .as_of_time
            .as_ref()
            .and_then(|t| parse_ts(&mut v, "as_of_time", t));
        v.finish()?;
        let row = self
            .store
            .get_journey(&c.tenant, resource_id("id", &r.id)?, as_of)
            .await?;
        Ok(Response::new(pb::GetJourneyResponse {
            journey: Some(journey_pb(&row)),
        }))
    }

    async fn list_journeys(
        &self,
        req: Request<pb::ListJourneysRequest>,
    ) -> Result<Response<pb::ListJourneysResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let (size, token) = page_of(r.page.as_ref());
        let listing = self.pages.listing(&c.tenant, "journeys");
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_journeys(&c.tenant, &page, |j| {
                cxloop_platform::paging::framed_len(&journey_pb(j))
            })
            .await?;
        let (items, page) = listing.finish(&page, rows, |j| j.id.clone(), |x| journey_pb(&x));
        Ok(Response::new(pb::ListJourneysResponse {
            journeys: items,
            page: Some(page),
        }))
    }

    async fn update_journey(
        &self,
        req: Request<pb::UpdateJourneyRequest>,
    ) -> Result<Response<pb::UpdateJourneyResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let paths = mask(
            &mut v,
            r.update_mask.as_ref(),
            &["name", "description", "stages"],
        );
        let Some(j) = r.journey.as_ref() else {
            return Err(ApiError::invalid("journey", "is required").into());
        };
        journey_size(&mut v, j);
        check_len(&mut v, "journey.id", &j.id, 1, 128);
        v.finish()?;
        let current = self.store.get_journey(&c.tenant, &j.id, None).await?;
        let mut next = current.doc.clone();
        let mut v = Violations::new();
        for p in &paths {
            match p.as_str() {
                "name" => {
                    check_len(&mut v, "journey.name", &j.name, 1, 200);
                    next.name = j.name.clone();
                }
                "description" => {
                    check_len(&mut v, "journey.description", &j.description, 0, 4000);
                    next.description = j.description.clone();
                }
                _ => {
                    next.stages = map::order_stages(
                        &mut v,
                        "journey.stages",
                        stage_inputs(&j.stages),
                        &current.doc.stages,
                        db::new_id,
                    );
                }
            }
        }
        v.finish()?;
        if paths.iter().any(|p| p == "stages") {
            let mut v = Violations::new();
            self.check_stage_touchpoints(&c, &mut v, &j.stages).await?;
            v.finish()?;
        }
        let row = self
            .set_journey(&c, &current, r.expected_revision, next, false)
            .await?;
        Ok(Response::new(pb::UpdateJourneyResponse {
            journey: Some(journey_pb(&row)),
        }))
    }

    async fn reorder_stages(
        &self,
        req: Request<pb::ReorderStagesRequest>,
    ) -> Result<Response<pb::ReorderStagesResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let current = self
            .store
            .get_journey(&c.tenant, resource_id("journey_id", &r.journey_id)?, None)
            .await?;
        let mut v = Violations::new();
        let stages = map::reorder(&mut v, &current.doc.stages, &r.stage_ids);
        v.finish()?;
        let next = JourneyDoc {
            stages,
            ..current.doc.clone()
        };
        let row = self
            .set_journey(&c, &current, r.expected_revision, next, false)
            .await?;
        Ok(Response::new(pb::ReorderStagesResponse {
            journey: Some(journey_pb(&row)),
        }))
    }

    async fn delete_journey(
        &self,
        req: Request<pb::DeleteJourneyRequest>,
    ) -> Result<Response<pb::DeleteJourneyResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let current = self
            .store
            .get_journey(&c.tenant, resource_id("id", &req.get_ref().id)?, None)
            .await?;
        let doc = current.doc.clone();
        self.set_journey(&c, &current, 0, doc, true).await?;
        Ok(Response::new(pb::DeleteJourneyResponse {}))
    }

    async fn list_journey_revisions(
        &self,
        req: Request<pb::ListJourneyRevisionsRequest>,
    ) -> Result<Response<pb::ListJourneyRevisionsResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let filters = format!("revisions|{}", r.journey_id);
        let (size, token) = page_of(r.page.as_ref());
        let listing = self.pages.listing(&c.tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_revisions(&c.tenant, resource_id("journey_id", &r.journey_id)?, &page)
            .await?;
        let (items, page) = listing.finish(&page, rows, |x| x.revision.to_string(), revision_pb);
        Ok(Response::new(pb::ListJourneyRevisionsResponse {
            revisions: items,
            page: Some(page),
        }))
    }

    async fn create_assignment(
        &self,
        req: Request<pb::CreateAssignmentRequest>,
    ) -> Result<Response<pb::CreateAssignmentResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(a) = r.assignment.as_ref() else {
            return Err(ApiError::invalid("assignment", "is required").into());
        };
        let row = assignment_input(&mut v, a);
        v.finish()?;
        let row = row.ok_or_else(|| ApiError::invalid("assignment", "is incomplete"))?;
        let hash = idempotency::fingerprint(&a.encode_to_vec());
        let request_id = request_id.unwrap_or_default();
        if let Some(id) = self
            .store
            .created_before(&c.tenant, store::CREATE_ASSIGNMENT, &request_id, &hash)
            .await?
        {
            let stored = self.store.get_assignment(&c.tenant, &id).await?;
            return Ok(Response::new(pb::CreateAssignmentResponse {
                assignment: Some(assignment_pb(&stored)),
            }));
        }
        self.check_subject(&c, "assignment.subject", &row.subject)
            .await?;
        let stored = self
            .store
            .create_assignment(&c.tenant, &request_id, &hash, &row)
            .await?;
        Ok(Response::new(pb::CreateAssignmentResponse {
            assignment: Some(assignment_pb(&stored)),
        }))
    }

    async fn list_assignments(
        &self,
        req: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let subject = r
            .subject
            .as_ref()
            .and_then(|s| parse_subject(&mut v, "subject", Some(s), true));
        let role = match r.role {
            0 => None,
            x => {
                let role = OwnerRole::from_code(x);
                if role.is_none() {
                    v.add("role", "must be a known OwnerRole");
                }
                role
            }
        };
        let active_at = r
            .active_at
            .as_ref()
            .and_then(|t| parse_ts(&mut v, "active_at", t));
        check_len(&mut v, "assignee_id", &r.assignee_id, 0, 128);
        v.finish()?;
        let f = AssignmentFilter {
            subject: subject.map(|s| s.key()),
            role,
            assignee: (!r.assignee_id.is_empty()).then(|| r.assignee_id.clone()),
            active_at,
        };
        let filters = format!(
            "assignments|{:?}|{:?}|{:?}|{:?}",
            f.subject,
            f.role.map(|r| r as i32),
            f.assignee,
            f.active_at
        );
        let (size, token) = page_of(r.page.as_ref());
        let listing = self.pages.listing(&c.tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self.store.list_assignments(&c.tenant, &f, &page).await?;
        let (items, page) = listing.finish(&page, rows, |a| a.id.clone(), |x| assignment_pb(&x));
        Ok(Response::new(pb::ListAssignmentsResponse {
            assignments: items,
            page: Some(page),
        }))
    }

    async fn end_assignment(
        &self,
        req: Request<pb::EndAssignmentRequest>,
    ) -> Result<Response<pb::EndAssignmentResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let end = match &r.end_time {
            Some(t) => parse_ts(&mut v, "end_time", t),
            None => {
                v.add("end_time", "is required");
                None
            }
        };
        v.finish()?;
        let row = self
            .store
            .end_assignment(
                &c.tenant,
                resource_id("id", &r.id)?,
                end.unwrap_or_default(),
            )
            .await?;
        Ok(Response::new(pb::EndAssignmentResponse {
            assignment: Some(assignment_pb(&row)),
        }))
    }

    async fn find_owners(
        &self,
        req: Request<pb::FindOwnersRequest>,
    ) -> Result<Response<pb::FindOwnersResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let subject = parse_subject(&mut v, "subject", r.subject.as_ref(), true);
        let role = OwnerRole::from_code(r.role);
        if role.is_none() {
            v.add("role", "must be a known OwnerRole");
        }
        let range = parse_period(&mut v, "period", r.period.as_ref(), 3660);
        v.finish()?;
        let (Some(subject), Some(role), Some((range, _))) = (subject, role, range) else {
            return Err(ApiError::invalid("period", "is required").into());
        };
        let rows = self.store.assignments_of(&c.tenant, &subject, role).await?;
        let owners = owner_shares(&rows, range);
        let spans: Vec<(i64, i64)> = rows
            .iter()
            .filter_map(|a| a.span.clip(micros(range.start), micros(range.end)))
            .collect();
        Ok(Response::new(pb::FindOwnersResponse {
            period: Some(range_pb(range)),
            owners,
            unowned_days: uncovered_days(&spans, micros(range.start), micros(range.end)),
        }))
    }

    async fn get_coverage_report(
        &self,
        req: Request<pb::GetCoverageReportRequest>,
    ) -> Result<Response<pb::GetCoverageReportResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        // The report lists feedback's touchpoints and surveys with the caller's identity:
        // refuse here, naming the permission, rather than relay feedback's refusal.
        c.require(Permission::ConfigRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let at = match &r.at_time {
            Some(t) => parse_ts(&mut v, "at_time", t),
            None => Some(db::now_micros()),
        };
        let window = match r.measured_within_days {
            0 => 90,
            d if (1..=3660).contains(&d) => i64::from(d),
            _ => {
                v.add("measured_within_days", "must be 0 (90) or 1-3660");
                90
            }
        };
        v.finish()?;
        let at = at.unwrap_or_default();
        // Deleted touchpoints matter only for a moment asked for: a report of now takes the
        // live ones (also when the two services' clocks differ a little).
        let past = r.at_time.is_some();
        Ok(Response::new(self.coverage(&c, at, window, past).await?))
    }

    async fn create_kpi(
        &self,
        req: Request<pb::CreateKpiRequest>,
    ) -> Result<Response<pb::CreateKpiResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(k) = r.kpi.as_ref() else {
            return Err(ApiError::invalid("kpi", "is required").into());
        };
        let doc = kpi_input(&mut v, k);
        v.finish()?;
        let doc = doc.ok_or_else(|| ApiError::invalid("kpi", "is incomplete"))?;
        let hash = idempotency::fingerprint(&k.encode_to_vec());
        let request_id = request_id.unwrap_or_default();
        if let Some(id) = self
            .store
            .created_before(&c.tenant, store::CREATE_KPI, &request_id, &hash)
            .await?
        {
            let row = self.store.get_kpi(&c.tenant, &id).await?;
            return Ok(Response::new(pb::CreateKpiResponse {
                kpi: Some(kpi_pb(&row)),
            }));
        }
        self.check_subject(&c, "kpi.subject", &doc.subject).await?;
        self.check_measure(&c, &doc).await?;
        let row = self
            .store
            .create_kpi(&c.tenant, &request_id, &hash, &doc)
            .await?;
        Ok(Response::new(pb::CreateKpiResponse {
            kpi: Some(kpi_pb(&row)),
        }))
    }

    async fn get_kpi(
        &self,
        req: Request<pb::GetKpiRequest>,
    ) -> Result<Response<pb::GetKpiResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let row = self
            .store
            .get_kpi(&c.tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetKpiResponse {
            kpi: Some(kpi_pb(&row)),
        }))
    }

    async fn list_kpis(
        &self,
        req: Request<pb::ListKpisRequest>,
    ) -> Result<Response<pb::ListKpisResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let subject = r
            .subject
            .as_ref()
            .and_then(|s| parse_subject(&mut v, "subject", Some(s), false))
            .map(|s| s.key());
        v.finish()?;
        let filters = format!("kpis|{subject:?}");
        let (size, token) = page_of(r.page.as_ref());
        let listing = self.pages.listing(&c.tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_kpis(&c.tenant, subject.as_deref(), &page)
            .await?;
        let (items, page) = listing.finish(&page, rows, |k| k.id.clone(), |x| kpi_pb(&x));
        Ok(Response::new(pb::ListKpisResponse {
            kpis: items,
            page: Some(page),
        }))
    }

    async fn update_kpi(
        &self,
        req: Request<pb::UpdateKpiRequest>,
    ) -> Result<Response<pb::UpdateKpiResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let paths = mask(
            &mut v,
            r.update_mask.as_ref(),
            &["name", "direction", "targets"],
        );
        let Some(k) = r.kpi.as_ref() else {
            return Err(ApiError::invalid("kpi", "is required").into());
        };
        check_len(&mut v, "kpi.id", &k.id, 1, 128);
        v.finish()?;
        // Read, change the masked fields, write if nobody wrote in between; else again from
        // the newer row, so that two updates of different fields both take effect.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.store.get_kpi(&c.tenant, &k.id).await?;
            let mut doc = current.doc.clone();
            let mut v = Violations::new();
            if paths.iter().any(|p| p == "name") {
                check_len(&mut v, "kpi.name", &k.name, 1, 200);
                doc.name = k.name.clone();
            }
            if paths.iter().any(|p| p == "direction") {
                match crate::domain::kpi::Direction::from_code(k.direction) {
                    Some(d) => doc.direction = d,
                    None => v.add(
                        "kpi.direction",
                        "must be DIRECTION_HIGHER_IS_BETTER or _LOWER_IS_BETTER",
                    ),
                }
            }
            if paths.iter().any(|p| p == "targets") {
                doc.targets = targets_input(&mut v, "kpi.targets", &k.targets);
            }
            let (metric, direction) = (doc.metric(), Some(doc.direction));
            crate::domain::kpi::check_targets(
                &mut v,
                "kpi.targets",
                metric,
                direction,
                &mut doc.targets,
            );
            v.finish()?;
            match self
                .store
                .update_kpi(&c.tenant, &k.id, current.updated_at, &doc)
                .await
            {
                Ok(row) => {
                    return Ok(Response::new(pb::UpdateKpiResponse {
                        kpi: Some(kpi_pb(&row)),
                    }));
                }
                Err(ApiError::FailedPrecondition { .. }) if attempt < 5 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn delete_kpi(
        &self,
        req: Request<pb::DeleteKpiRequest>,
    ) -> Result<Response<pb::DeleteKpiResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        self.store
            .delete_kpi(&c.tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::DeleteKpiResponse {}))
    }

    async fn get_scorecard(
        &self,
        req: Request<pb::GetScorecardRequest>,
    ) -> Result<Response<pb::GetScorecardResponse>, Status> {
        let c = caller(&req, Permission::MetricsRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let range = parse_period(&mut v, "period", r.period.as_ref(), MAX_SCORECARD_DAYS);
        let subject = if r.kpi_ids.is_empty() {
            let s = parse_subject(&mut v, "subject", r.subject.as_ref(), false);
            if r.subject.is_none() {
                v.add("kpi_ids", "name 1-500 KPIs, or set subject");
            }
            s
        } else {
            if r.kpi_ids.len() > 500 {
                v.add("kpi_ids", "at most 500 KPIs per call");
            } else {
                for (i, id) in r.kpi_ids.iter().enumerate() {
                    check_len(&mut v, &format!("kpi_ids[{i}]"), id, 1, 128);
                }
            }
            None
        };
        v.finish()?;
        let (range, _) = range.ok_or_else(|| ApiError::invalid("period", "is required"))?;
        let kpis = match subject {
            Some(s) => self.store.kpis_of_subjects(&c.tenant, &[s.key()]).await?,
            None => self.store.kpis_by_id(&c.tenant, &r.kpi_ids).await?,
        };
        let journeys = self.journeys_for(&c.tenant, &kpis).await?;
        let results =
            scorecard::score(&self.feedback, &c, &kpis, &journeys, range, r.daily).await?;
        Ok(Response::new(pb::GetScorecardResponse { results }))
    }

    async fn get_owner_scorecard(
        &self,
        req: Request<pb::GetOwnerScorecardRequest>,
    ) -> Result<Response<pb::GetOwnerScorecardResponse>, Status> {
        let c = caller(&req, Permission::MetricsRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        check_len(&mut v, "assignee_id", &r.assignee_id, 1, 128);
        let range = parse_period(&mut v, "period", r.period.as_ref(), MAX_SCORECARD_DAYS);
        v.finish()?;
        let (range, _) = range.ok_or_else(|| ApiError::invalid("period", "is required"))?;
        Ok(Response::new(
            self.owner_scorecard(&c, &r.assignee_id, range, r.daily)
                .await?,
        ))
    }

    async fn create_backlog_item(
        &self,
        req: Request<pb::CreateBacklogItemRequest>,
    ) -> Result<Response<pb::CreateBacklogItemResponse>, Status> {
        let c = caller(&req, Permission::BacklogWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let request_id = v.check(idempotency::parse_request_id("request_id", &r.request_id));
        let Some(i) = r.item.as_ref() else {
            return Err(ApiError::invalid("item", "is required").into());
        };
        if !(1..=5).contains(&i.source) {
            v.add("item.source", "must be a known ItemSource");
        }
        let subject = parse_subject(&mut v, "item.subject", i.subject.as_ref(), false);
        let doc = subject.map(|subject| ItemDoc {
            title: i.title.clone(),
            description: i.description.clone(),
            source: i.source,
            source_ref: i.source_ref.clone(),
            subject,
            owner: i
                .owner
                .as_ref()
                .map(|p| (p.id.clone(), p.display_name.clone())),
            kpi_id: i.kpi_id.clone(),
            expected_impact: i.expected_impact,
            effort_days: i.effort_days,
            reach: i.reach,
            confidence: i.confidence,
            planned_period: canonical_period(&i.planned_period),
            spent_days: i.spent_days,
            history: vec![StatusChange {
                status: ItemStatus::Proposed,
                at: db::now_micros(),
                by: c.subject.clone(),
                reason: String::new(),
            }],
            effect: None,
        });
        if let Some(d) = &doc {
            check_item(&mut v, d);
        }
        v.finish()?;
        let doc = doc.ok_or_else(|| ApiError::invalid("item", "is incomplete"))?;
        let hash = idempotency::fingerprint(&i.encode_to_vec());
        let request_id = request_id.unwrap_or_default();
        if let Some(id) = self
            .store
            .created_before(&c.tenant, store::CREATE_BACKLOG_ITEM, &request_id, &hash)
            .await?
        {
            let row = self.store.get_item(&c.tenant, &id).await?;
            return Ok(Response::new(pb::CreateBacklogItemResponse {
                item: Some(item_pb(&row)),
            }));
        }
        self.check_subject(&c, "item.subject", &doc.subject).await?;
        if !doc.kpi_id.is_empty() {
            self.store
                .get_kpi(&c.tenant, &doc.kpi_id)
                .await
                .map_err(|e| missing_is_invalid(e, "item.kpi_id".into(), "no such KPI"))?;
        }
        let row = self
            .store
            .create_item(&c.tenant, &request_id, &hash, &doc)
            .await?;
        Ok(Response::new(pb::CreateBacklogItemResponse {
            item: Some(item_pb(&row)),
        }))
    }

    async fn get_backlog_item(
        &self,
        req: Request<pb::GetBacklogItemRequest>,
    ) -> Result<Response<pb::GetBacklogItemResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let row = self
            .store
            .get_item(&c.tenant, resource_id("id", &req.get_ref().id)?)
            .await?;
        Ok(Response::new(pb::GetBacklogItemResponse {
            item: Some(item_pb(&row)),
        }))
    }

    async fn list_backlog_items(
        &self,
        req: Request<pb::ListBacklogItemsRequest>,
    ) -> Result<Response<pb::ListBacklogItemsResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let status = match r.status {
            0 => None,
            s if ItemStatus::from_code(s).is_some() => Some(s),
            _ => {
                v.add("status", "must be a known ItemStatus");
                None
            }
        };
        if !r.planned_period.is_empty()
            && let Err(e) = period::parse_named(&r.planned_period)
        {
            v.add("planned_period", e);
        }
        v.finish()?;
        let planned = canonical_period(&r.planned_period);
        let period = (!planned.is_empty()).then_some(planned.as_str());
        let filters = format!("items|{status:?}|{period:?}");
        let (size, token) = page_of(r.page.as_ref());
        let listing = self.pages.listing(&c.tenant, &filters);
        let page = listing.parse(size, token)?;
        let rows = self
            .store
            .list_items(&c.tenant, status, period, &page)
            .await?;
        let (items, page) = listing.finish(
            &page,
            rows,
            |i| crate::store::item_page_key(i.doc.priority(), &i.id),
            |x| item_pb(&x),
        );
        Ok(Response::new(pb::ListBacklogItemsResponse {
            items,
            page: Some(page),
        }))
    }

    async fn update_backlog_item(
        &self,
        req: Request<pb::UpdateBacklogItemRequest>,
    ) -> Result<Response<pb::UpdateBacklogItemResponse>, Status> {
        let c = caller(&req, Permission::BacklogWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let paths = mask(
            &mut v,
            r.update_mask.as_ref(),
            &[
                "title",
                "description",
                "owner",
                "kpi_id",
                "expected_impact",
                "effort_days",
                "reach",
                "confidence",
                "planned_period",
                "spent_days",
            ],
        );
        let Some(i) = r.item.as_ref() else {
            return Err(ApiError::invalid("item", "is required").into());
        };
        check_len(&mut v, "item.id", &i.id, 1, 128);
        v.finish()?;
        let current = self.store.get_item(&c.tenant, &i.id).await?;
        let mut d = current.doc.clone();
        for p in &paths {
            match p.as_str() {
                "title" => d.title = i.title.clone(),
                "description" => d.description = i.description.clone(),
                "owner" => {
                    d.owner = i
                        .owner
                        .as_ref()
                        .map(|p| (p.id.clone(), p.display_name.clone()))
                }
                "kpi_id" => d.kpi_id = i.kpi_id.clone(),
                "expected_impact" => d.expected_impact = i.expected_impact,
                "effort_days" => d.effort_days = i.effort_days,
                "reach" => d.reach = i.reach,
                "confidence" => d.confidence = i.confidence,
                "planned_period" => d.planned_period = canonical_period(&i.planned_period),
                _ => d.spent_days = i.spent_days,
            }
        }
        let mut v = Violations::new();
        check_item(&mut v, &d);
        v.finish()?;
        if d.kpi_id != current.doc.kpi_id && !d.kpi_id.is_empty() {
            self.store
                .get_kpi(&c.tenant, &d.kpi_id)
                .await
                .map_err(|e| missing_is_invalid(e, "item.kpi_id".into(), "no such KPI"))?;
        }
        let row = self
            .store
            .update_item(&c.tenant, &i.id, current.updated_at, &d)
            .await?;
        Ok(Response::new(pb::UpdateBacklogItemResponse {
            item: Some(item_pb(&row)),
        }))
    }

    async fn transition_backlog_item(
        &self,
        req: Request<pb::TransitionBacklogItemRequest>,
    ) -> Result<Response<pb::TransitionBacklogItemResponse>, Status> {
        let c = caller(&req, Permission::BacklogWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let to = ItemStatus::from_code(r.status);
        if to.is_none() || to == Some(ItemStatus::Proposed) {
            v.add("status", "must be ACCEPTED, IN_PROGRESS, DONE or REJECTED");
        }
        check_len(&mut v, "reason", &r.reason, 0, 1000);
        v.finish()?;
        let to = to.unwrap_or(ItemStatus::Rejected);
        let current = self
            .store
            .get_item(&c.tenant, resource_id("id", &r.id)?)
            .await?;
        let from = current.doc.status();
        if let Some(e) = backlog::transition_error(from, to, &r.reason) {
            return Err(if to == ItemStatus::Rejected
                && r.reason.trim().is_empty()
                && !from.is_closed()
            {
                ApiError::invalid("reason", e)
            } else {
                ApiError::precondition("STATUS_FLOW", format!("backlogItems/{}", r.id), e)
            }
            .into());
        }
        let mut d = current.doc.clone();
        d.history.push(StatusChange {
            status: to,
            at: db::now_micros(),
            by: c.subject.clone(),
            reason: r.reason.clone(),
        });
        let row = self
            .store
            .update_item(&c.tenant, &r.id, current.updated_at, &d)
            .await?;
        Ok(Response::new(pb::TransitionBacklogItemResponse {
            item: Some(item_pb(&row)),
        }))
    }

    async fn measure_backlog_item_effect(
        &self,
        req: Request<pb::MeasureBacklogItemEffectRequest>,
    ) -> Result<Response<pb::MeasureBacklogItemEffectResponse>, Status> {
        let c = caller(&req, Permission::BacklogWrite)?;
        c.require(Permission::MetricsRead)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let before = r
            .before
            .as_ref()
            .and_then(|p| parse_period(&mut v, "before", Some(p), 3660));
        let after = r
            .after
            .as_ref()
            .and_then(|p| parse_period(&mut v, "after", Some(p), 3660));
        v.finish()?;
        let item = self
            .store
            .get_item(&c.tenant, resource_id("id", &r.id)?)
            .await?;
        let row = self
            .measure_effect(&c, item, before.map(|b| b.0), after.map(|a| a.0))
            .await?;
        Ok(Response::new(pb::MeasureBacklogItemEffectResponse {
            item: Some(item_pb(&row)),
        }))
    }

    async fn set_capacity(
        &self,
        req: Request<pb::SetCapacityRequest>,
    ) -> Result<Response<pb::SetCapacityResponse>, Status> {
        let c = caller(&req, Permission::JourneysWrite)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        if let Err(e) = period::parse_named(&r.period) {
            v.add("period", e);
        }
        if !(r.capacity_days.is_finite() && (0.0..=1_000_000.0).contains(&r.capacity_days)) {
            v.add("capacity_days", "must be 0-1000000 person-days");
        }
        v.finish()?;
        let period = canonical_period(&r.period);
        self.store
            .set_capacity(&c.tenant, &period, r.capacity_days)
            .await?;
        Ok(Response::new(pb::SetCapacityResponse {
            report: Some(self.capacity_report(&c.tenant, &period).await?),
        }))
    }

    async fn get_capacity_report(
        &self,
        req: Request<pb::GetCapacityReportRequest>,
    ) -> Result<Response<pb::GetCapacityReportResponse>, Status> {
        let c = caller(&req, Permission::JourneysRead)?;
        let r = req.into_inner();
        if let Err(e) = period::parse_named(&r.period) {
            return Err(ApiError::invalid("period", e).into());
        }
        Ok(Response::new(pb::GetCapacityReportResponse {
            report: Some(
                self.capacity_report(&c.tenant, &canonical_period(&r.period))
                    .await?,
            ),
        }))
    }
}

/// The holders of a role during a range, with the part each covers.
fn owner_shares(rows: &[AssignmentRow], range: Range) -> Vec<pb::OwnerShare> {
    let (from, to) = (micros(range.start), micros(range.end));
    let len = (to - from) as f64;
    rows.iter()
        .filter_map(|a| {
            let (s, e) = a.span.clip(from, to)?;
            Some(pb::OwnerShare {
                assignment: Some(assignment_pb(a)),
                covered: Some(range_pb(range_us(s, e))),
                days: (e - s) as f64 / DAY_US as f64,
                share: (e - s) as f64 / len,
            })
        })
        .collect()
}

impl JourneyApi {
    async fn coverage(
        &self,
        c: &Caller,
        at: i64,
        window: i64,
        past: bool,
    ) -> ApiResult<pb::GetCoverageReportResponse> {
        // What existed at `at`: each journey's map as it was then (also of a journey deleted
        // since, not of one created since), and the touchpoints created by then and not yet
        // deleted.
        let journeys = self.store.journeys_at(&c.tenant, at).await?;
        let assignments = self.store.all_assignments(&c.tenant).await?;
        let mut touchpoints = self.feedback.touchpoints(c, past).await?;
        let micros_of = |t: &prost_types::Timestamp| {
            t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1000)
        };
        touchpoints.retain(|t| {
            t.create_time.as_ref().is_none_or(|ct| micros_of(ct) <= at)
                && t.delete_time.as_ref().is_none_or(|dt| micros_of(dt) > at)
        });
        // Sets, not scans: a tenant with thousands of touchpoints and assignments would
        // otherwise compare every subject with every assignment.
        let held_at: HashSet<(&Subject, OwnerRole)> = assignments
            .iter()
            .filter(|a| a.span.contains(at))
            .map(|a| (&a.subject, a.role))
            .collect();
        let held = |s: &Subject, role: OwnerRole| held_at.contains(&(s, role));
        let journeys_without_owner = journeys
            .iter()
            .filter(|j| !held(&Subject::Journey(j.id.clone()), OwnerRole::JourneyOwner))
            .map(|j| pb::UnownedSubject {
                subject: Some(subject_pb(&Subject::Journey(j.id.clone()))),
                name: j.doc.name.clone(),
            })
            .collect();
        let touchpoints_without_owner = touchpoints
            .iter()
            .filter(|t| {
                !held(
                    &Subject::Touchpoint(t.id.clone()),
                    OwnerRole::TouchpointOwner,
                )
            })
            .map(|t| pb::UnownedSubject {
                subject: Some(subject_pb(&Subject::Touchpoint(t.id.clone()))),
                name: t.name.clone(),
            })
            .collect();
        // A lapse: the latest assignment of a one-at-a-time role for a live subject that had
        // begun by `at` ended before it, and nobody holds the role then (one planned to start
        // later does not close a gap that is open at `at`).
        let live_journeys: HashSet<&str> = journeys.iter().map(|j| j.id.as_str()).collect();
        let live_touchpoints: HashSet<&str> = touchpoints.iter().map(|t| t.id.as_str()).collect();
        let live = |s: &Subject| match s {
            Subject::Tenant => true,
            Subject::Journey(j) => live_journeys.contains(j.as_str()),
            Subject::Stage { journey, .. } => live_journeys.contains(journey.as_str()),
            Subject::Touchpoint(t) => live_touchpoints.contains(t.as_str()),
        };
        let mut latest: HashMap<(&Subject, OwnerRole), &AssignmentRow> = HashMap::new();
        for a in assignments
            .iter()
            .filter(|a| a.role.exclusive() && a.span.start <= at)
        {
            let e = latest.entry((&a.subject, a.role)).or_insert(a);
            if a.span.start > e.span.start {
                *e = a;
            }
        }
        let mut lapsed: Vec<&AssignmentRow> = latest
            .into_values()
            .filter(|a| a.span.end.is_some_and(|e| e <= at))
            .filter(|a| live(&a.subject) && !held(&a.subject, a.role))
            .collect();
        lapsed.sort_by(|a, b| a.id.cmp(&b.id));
        let unmeasured_stages = self.unmeasured_stages(c, &journeys, at, window).await?;
        Ok(pb::GetCoverageReportResponse {
            at_time: Some(ts(at)),
            journeys_without_owner,
            touchpoints_without_owner,
            lapsed_assignments: lapsed.into_iter().map(assignment_pb).collect(),
            unmeasured_stages,
            has_cx_sponsor: held(&Subject::Tenant, OwnerRole::CxSponsor),
        })
    }

    /// Stages with no touchpoint, or whose touchpoints had no response to any survey in the
    /// `window` days up to and including the day of `at`.
    async fn unmeasured_stages(
        &self,
        c: &Caller,
        journeys: &[JourneyRow],
        at: i64,
        window: i64,
    ) -> ApiResult<Vec<pb::UnmeasuredStage>> {
        let end = (at.div_euclid(DAY_US) + 1) * DAY_US;
        let range = range_us(end - window * DAY_US, end);
        let wanted: HashSet<&str> = journeys
            .iter()
            .flat_map(|j| j.doc.stages.iter())
            .flat_map(|s| s.touchpoint_ids.iter().map(String::as_str))
            .collect();
        let mut queries = Vec::new();
        let mut of_query = Vec::new();
        if !wanted.is_empty() {
            for s in self.feedback.surveys(c).await? {
                for t in s
                    .touchpoint_ids
                    .iter()
                    .filter(|t| wanted.contains(t.as_str()))
                {
                    of_query.push(t.clone());
                    queries.push(cxloop_proto::feedback::v1::QueryMetricsRequest {
                        survey_id: s.id.clone(),
                        question_key: String::new(),
                        slice: Some(cxloop_proto::feedback::v1::Slice {
                            touchpoint_id: t.clone(),
                            ..Default::default()
                        }),
                        period: Some(common::Period {
                            kind: Some(common::period::Kind::Range(range_pb(range))),
                        }),
                        bucket: cxloop_proto::feedback::v1::Bucket::Total as i32,
                        view: cxloop_proto::feedback::v1::MetricsView::Histogram as i32,
                    });
                }
            }
        }
        let results = if queries.is_empty() {
            Vec::new()
        } else {
            self.feedback.query(c, queries).await?
        };
        let measured: HashSet<&str> = of_query
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.total.as_ref().is_some_and(|t| t.count > 0))
            .map(|(t, _)| t.as_str())
            .collect();
        let mut out = Vec::new();
        for j in journeys {
            for s in &j.doc.stages {
                let reason = if s.touchpoint_ids.is_empty() {
                    "no touchpoint"
                } else if !s
                    .touchpoint_ids
                    .iter()
                    .any(|t| measured.contains(t.as_str()))
                {
                    "no responses in the window"
                } else {
                    continue;
                };
                out.push(pb::UnmeasuredStage {
                    stage: Some(pb::StageRef {
                        journey_id: j.id.clone(),
                        stage_id: s.id.clone(),
                    }),
                    journey_name: j.doc.name.clone(),
                    stage_name: s.name.clone(),
                    reason: reason.into(),
                });
            }
        }
        Ok(out)
    }

    /// Everything an assignee owned (journey owner or touchpoint owner) during the range,
    /// with the KPIs of each subject (a journey's also those of its stages), all scored in one
    /// batched read.
    async fn owner_scorecard(
        &self,
        c: &Caller,
        assignee: &str,
        range: Range,
        daily: bool,
    ) -> ApiResult<pb::GetOwnerScorecardResponse> {
        let (from, to) = (micros(range.start), micros(range.end));
        let owned: Vec<AssignmentRow> = self
            .store
            .assignments_of_assignee(&c.tenant, assignee)
            .await?
            .into_iter()
            .filter(|a| matches!(a.role, OwnerRole::JourneyOwner | OwnerRole::TouchpointOwner))
            .filter(|a| a.span.clip(from, to).is_some())
            .collect();
        // The maps of the journeys owned (their stages are owned with them); the KPIs found
        // below are of those journeys, their stages, or owned touchpoints.
        let owned_journeys: Vec<&str> = owned
            .iter()
            .filter_map(|a| match &a.subject {
                Subject::Journey(j) => Some(j.as_str()),
                _ => None,
            })
            .collect();
        let journeys = self
            .store
            .journeys_by_ids(&c.tenant, &owned_journeys)
            .await?;
        let journey_by_id: HashMap<&str, &JourneyRow> =
            journeys.iter().map(|j| (j.id.as_str(), j)).collect();
        let subjects_of = |a: &AssignmentRow| -> Vec<String> {
            let mut keys = vec![a.subject.key()];
            if let Subject::Journey(j) = &a.subject
                && let Some(j) = journey_by_id.get(j.as_str())
            {
                keys.extend(j.doc.stages.iter().map(|s| {
                    Subject::Stage {
                        journey: j.id.clone(),
                        stage: s.id.clone(),
                    }
                    .key()
                }));
            }
            keys
        };
        let keys_of: Vec<Vec<String>> = owned.iter().map(subjects_of).collect();
        let all_keys: Vec<String> = keys_of.iter().flatten().cloned().collect();
        let kpis = self.store.kpis_of_subjects(&c.tenant, &all_keys).await?;
        let results = scorecard::score(&self.feedback, c, &kpis, &journeys, range, daily).await?;
        // Each KPI's result by its subject, so that an assignment's results are found by its
        // subjects' keys, in KPI order, without comparing every KPI with every subject.
        let mut results_of: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, k) in kpis.iter().enumerate() {
            results_of.entry(k.doc.subject.key()).or_default().push(i);
        }
        let shares = owner_shares(&owned, range);
        let out = keys_of
            .iter()
            .zip(shares)
            .map(|(keys, share)| {
                let mut of_assignment: Vec<usize> = keys
                    .iter()
                    .filter_map(|key| results_of.get(key))
                    .flatten()
                    .copied()
                    .collect();
                of_assignment.sort_unstable();
                of_assignment.dedup();
                pb::OwnedSubject {
                    ownership: Some(share),
                    results: of_assignment
                        .into_iter()
                        .map(|i| results[i].clone())
                        .collect(),
                }
            })
            .collect();
        Ok(pb::GetOwnerScorecardResponse {
            period: Some(range_pb(range)),
            owned: out,
        })
    }

    async fn measure_effect(
        &self,
        c: &Caller,
        item: ItemRow,
        before: Option<Range>,
        after: Option<Range>,
    ) -> ApiResult<ItemRow> {
        let d = &item.doc;
        let subject = format!("backlogItems/{}", item.id);
        if d.status() != ItemStatus::Done {
            return Err(ApiError::precondition(
                "NOT_DONE",
                subject,
                "only a done item has an effect to measure",
            ));
        }
        if d.kpi_id.is_empty() {
            return Err(ApiError::precondition(
                "NO_KPI",
                subject,
                "the item names no KPI to measure",
            ));
        }
        let kpi = self
            .store
            .get_kpi(&c.tenant, &d.kpi_id)
            .await
            .map_err(|e| match e {
                ApiError::NotFound { .. } => {
                    ApiError::precondition("NO_KPI", subject.clone(), "the item's KPI was deleted")
                }
                other => other,
            })?;
        let started = d.entered(ItemStatus::InProgress).unwrap_or(item.created_at);
        let done = d.entered(ItemStatus::Done).unwrap_or(item.updated_at);
        let window = EFFECT_WINDOW_DAYS * DAY_US;
        let before = before.unwrap_or_else(|| {
            let end = started.div_euclid(DAY_US) * DAY_US;
            range_us(end - window, end)
        });
        let after = match after {
            Some(a) => a,
            None => {
                let start = (done.div_euclid(DAY_US) + 1) * DAY_US;
                if start + window > today_start() {
                    return Err(ApiError::precondition(
                        "TOO_EARLY",
                        subject,
                        format!(
                            "the {EFFECT_WINDOW_DAYS} whole days after the item was done have not passed yet; give `after` explicitly to measure earlier"
                        ),
                    ));
                }
                range_us(start, start + window)
            }
        };
        // Before and after are compared as two independent samples: they must not share days
        // (and so responses).
        if before.intersect(&after).is_some() {
            return Err(ApiError::invalid(
                "after",
                "overlaps `before`; a before/after comparison needs two periods apart",
            ));
        }
        let journeys = self
            .journeys_for(&c.tenant, std::slice::from_ref(&kpi))
            .await?;
        let tps = scorecard::touchpoints_of(&kpi.doc.subject, &journeys);
        let mut reader = scorecard::HistogramReader::new();
        let b: Vec<_> = tps
            .iter()
            .map(|t| reader.want(&kpi.doc, t, before, false))
            .collect();
        let a: Vec<_> = tps
            .iter()
            .map(|t| reader.want(&kpi.doc, t, after, false))
            .collect();
        let h = reader.read(&self.feedback, c).await?;
        let (mut hb, mut ha) = (
            cxloop_metrics::Histogram::new(),
            cxloop_metrics::Histogram::new(),
        );
        for s in b {
            hb.merge(&h.total(s)?);
        }
        for s in a {
            ha.merge(&h.total(s)?);
        }
        let metric = kpi
            .doc
            .metric()
            .ok_or_else(|| ApiError::Internal("stored KPI has no metric".into()))?;
        let cmp = metric.compare(&hb, &ha);
        let mut doc = item.doc.clone();
        doc.effect = Some(Effect {
            kpi_id: kpi.id.clone(),
            metric: kpi.doc.metric,
            before: (micros(before.start), micros(before.end)),
            after: (micros(after.start), micros(after.end)),
            comparison: comparison_doc(&cmp),
            improved: kpi.doc.direction.sign() * cmp.difference > 0.0 && cmp.p_value < 0.05,
            at: db::now_micros(),
        });
        self.store
            .update_item(&c.tenant, &item.id, item.updated_at, &doc)
            .await
    }
}
