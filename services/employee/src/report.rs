//! Results of a cycle as the API returns them: loads a cycle's snapshot and sums, asks the
//! anonymity rules which groups may be shown, computes the figures of those groups only, and
//! encodes them. A hidden group's figures are never computed, so they cannot leak by
//! mistake into a response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cxloop_platform::TenantId;
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::wire::{comparison_pb, estimate_pb};
use cxloop_proto::employee::v1 as pb;

use crate::domain::anonymity::{self, Hidden, Movers, SlicePlan, TreePlan};
use crate::domain::results::{self, GroupSums};
use crate::domain::{COMMENTS_MIN, IMPACT_MIN, QuestionKind, RESPONDENTS, SurveyDef};
use crate::store::cycles::{CycleRow, Respondents, Snapshot, state};
use crate::store::{ActionPlanRow, ORG_UNIT, Store};

/// Which units a caller may read results and action plans of.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every unit (admin, HR).
    All,
    /// These units (ids) and everything below them in a cycle's tree: a manager's own units.
    Below(Vec<String>),
}

impl Scope {
    /// Whether unit `u` of a cycle's tree is in scope.
    pub fn allows(&self, tree: &anonymity::Tree, u: usize) -> bool {
        match self {
            Scope::All => true,
            Scope::Below(units) => tree
                .ancestors_or_self(u)
                .any(|a| units.contains(&tree.ids[a])),
        }
    }
}

/// The error for a unit outside the caller's scope.
pub fn out_of_scope(unit_id: &str) -> ApiError {
    ApiError::PermissionDenied(format!(
        "org unit {unit_id} is not yours: a manager reads the units where the people reporting to them work, and the units below"
    ))
}

/// A group of a cycle, by unit index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    /// The unit's own members.
    Own(usize),
    /// The unit with its descendants.
    Rollup(usize),
    /// The rollup filtered by (attribute 0-2, value).
    Slice(usize, usize, String),
}

/// One cycle, loaded for results.
pub struct CycleView {
    /// The cycle.
    pub cycle: CycleRow,
    /// Its survey.
    pub survey: SurveyDef,
    /// Tree and cells at launch.
    pub snap: Arc<Snapshot>,
    /// The cache version the snapshot belongs to.
    pub version: Version,
    /// Tree decisions at the cycle's k.
    pub plan: Arc<TreePlan>,
    /// Slice decisions of the attribute asked for, if any.
    pub slices: Option<(usize, Arc<SlicePlan>)>,
}

impl CycleView {
    /// Loads a launched cycle and decides its groups (and the slices of `attr`, if any).
    pub async fn load(
        cache: &ResultsCache,
        store: &Store,
        tenant: &TenantId,
        cycle: CycleRow,
        attr: Option<usize>,
    ) -> ApiResult<Self> {
        if cycle.state == state::DRAFT {
            return Err(ApiError::precondition(
                "CYCLE_NOT_LAUNCHED",
                format!("cycles/{}", cycle.id),
                "a draft cycle has no results",
            ));
        }
        let survey = store.get_survey(tenant, &cycle.survey_id).await?.def();
        let (version, snap) = cache.snapshot(store, tenant, &cycle.id).await?;
        let movers = cache.movers(store, tenant, &cycle, version, &snap).await?;
        let (plan, slices) = cache.plans(tenant, &cycle, version, &snap, movers.as_ref(), attr);
        let slices = attr.zip(slices);
        Ok(Self {
            cycle,
            survey,
            snap,
            version,
            plan,
            slices,
        })
    }

    /// Whether the cycle still takes answers: then only response rates are published.
    pub fn is_open(&self) -> bool {
        self.cycle.state == state::OPEN
    }

    /// The group's decision: (hidden?, respondents, invited).
    pub fn status(&self, g: &Group) -> (Option<Hidden>, u64, u64) {
        match g {
            Group::Own(u) => (
                self.plan.own[*u],
                self.plan.n_own[*u],
                self.plan.invited_own[*u],
            ),
            Group::Rollup(u) => (
                self.plan.rollup[*u],
                self.plan.n_rollup[*u],
                self.plan.invited_rollup[*u],
            ),
            Group::Slice(u, _, v) => self
                .slices
                .as_ref()
                .and_then(|(_, s)| s.slices.get(&(*u, v.clone())))
                .map_or((Some(Hidden::TooFew), 0, 0), |s| (s.hidden, s.n, s.invited)),
        }
    }

    /// The same group in this cycle, by unit id (None when the unit was not in its tree).
    pub fn same_group(&self, other: &CycleView, g: &Group) -> Option<Group> {
        let id = |u: usize| other.snap.tree.ids.get(u).cloned().unwrap_or_default();
        match g {
            Group::Own(u) => self.snap.tree.index_of(&id(*u)).map(Group::Own),
            Group::Rollup(u) => self.snap.tree.index_of(&id(*u)).map(Group::Rollup),
            Group::Slice(u, a, v) => self
                .snap
                .tree
                .index_of(&id(*u))
                .map(|i| Group::Slice(i, *a, v.clone())),
        }
    }

    /// How many respondents the group changed by since the previous cycle (planned with
    /// the decisions, once per version).
    fn respondent_change(&self, g: &Group) -> u64 {
        let at = |v: &Vec<u64>, u: usize| v.get(u).copied().unwrap_or(0);
        match g {
            Group::Own(u) => at(&self.plan.change_own, *u),
            Group::Rollup(u) => at(&self.plan.change_rollup, *u),
            Group::Slice(u, _, v) => self
                .slices
                .as_ref()
                .and_then(|(_, s)| s.slices.get(&(*u, v.clone())))
                .map_or(0, |s| s.change),
        }
    }

    /// The unit indexes whose own sums make up a group.
    fn units_of(&self, g: &Group) -> Vec<usize> {
        match g {
            Group::Own(u) => vec![*u],
            Group::Rollup(u) | Group::Slice(u, _, _) => self.snap.tree.subtree(*u),
        }
    }
}

/// Sums of every unit of a cycle for one dimension, by (unit id, value).
pub type UnitSums = HashMap<(String, String), GroupSums>;

/// The sums of a group from its units' sums.
pub fn group_sums(view: &CycleView, sums: &UnitSums, g: &Group) -> GroupSums {
    let value = match g {
        Group::Slice(_, _, v) => v.clone(),
        _ => String::new(),
    };
    let mut out = GroupSums::default();
    for u in view.units_of(g) {
        if let Some(s) = sums.get(&(view.snap.tree.ids[u].clone(), value.clone())) {
            out.merge(s);
        }
    }
    out
}

/// The dimension number of an attribute index.
pub fn dim_of(g: &Group) -> i64 {
    match g {
        Group::Slice(_, a, _) => *a as i64 + 1,
        _ => 0,
    }
}

/// The previous cycle of a view, loaded for comparisons.
pub struct Previous {
    /// The previous cycle's view.
    pub view: CycleView,
    /// Its sums by dimension.
    pub sums: HashMap<i64, Arc<UnitSums>>,
}

/// Whether and against what a group's change can be shown.
pub enum ChangeBasis<'a> {
    /// The cycle has no previous cycle (or the group did not exist then).
    None,
    /// Hidden, for this reason.
    Hidden(pb::SuppressionReason, u32),
    /// Comparable with these sums.
    Against(&'a GroupSums),
}

/// Decides whether a shown group's change since the previous cycle may be shown; the
/// caller passes the previous cycle's sums of the same group.
pub fn change_basis<'a>(
    cur: &CycleView,
    prev: Option<&Previous>,
    g: &Group,
    prev_sums: Option<&'a GroupSums>,
) -> ChangeBasis<'a> {
    let Some(prev) = prev else {
        return ChangeBasis::None;
    };
    let Some(pg) = prev.view.same_group(cur, g) else {
        return ChangeBasis::None;
    };
    let k = cur.cycle.threshold;
    if prev.view.is_open() {
        // The previous figure still moves with each answer: two changes read either side of
        // one would give that answer away.
        return ChangeBasis::Hidden(pb::SuppressionReason::CycleOpen, 0);
    }
    if prev.view.status(&pg).0.is_some() {
        // Showing this cycle's figure and its change would give the hidden one away.
        return ChangeBasis::Hidden(
            pb::SuppressionReason::PreviousHidden,
            prev.view.cycle.threshold,
        );
    }
    let delta = cur.respondent_change(g);
    if delta > 0 && delta < u64::from(k) {
        // The change would be the answers of the few who joined or left. (R5 already hides
        // such a group; this keeps the change withheld should that rule ever be relaxed.)
        return ChangeBasis::Hidden(pb::SuppressionReason::MembershipChangeTooSmall, k);
    }
    match prev_sums {
        Some(s) => ChangeBasis::Against(s),
        None => ChangeBasis::None,
    }
}

/// The reason enum of a decision.
pub fn reason_pb(h: Hidden) -> pb::SuppressionReason {
    match h {
        Hidden::TooFew => pb::SuppressionReason::TooFewRespondents,
        Hidden::Complement => pb::SuppressionReason::ComplementTooSmall,
        Hidden::Protects => pb::SuppressionReason::ProtectsOtherGroup,
        Hidden::EnclosingHidden => pb::SuppressionReason::EnclosingGroupHidden,
        Hidden::Difference => pb::SuppressionReason::DifferenceTooSmall,
        Hidden::MembershipChange => pb::SuppressionReason::MembershipChangeTooSmall,
    }
}

fn suppressed(reason: pb::SuppressionReason, threshold: u32) -> pb::Suppression {
    pb::Suppression {
        reason: reason as i32,
        threshold,
    }
}

/// A figure withheld because its cycle still takes answers.
fn open_figure() -> pb::Figure {
    pb::Figure {
        result: Some(pb::figure::Result::Suppressed(suppressed(
            pb::SuppressionReason::CycleOpen,
            0,
        ))),
    }
}

/// A change withheld because a cycle still takes answers.
fn open_change() -> pb::Change {
    pb::Change {
        result: Some(pb::change::Result::Suppressed(suppressed(
            pb::SuppressionReason::CycleOpen,
            0,
        ))),
    }
}

/// While a cycle is open, every figure drawn from answers is replaced by its suppression,
/// keeping the shape (which figures exist) and the response rate: a result read after one
/// more answer must not differ from the one read before it by that answer.
fn withhold_answers(s: &mut pb::GroupSummary) {
    for f in [&mut s.engagement_index, &mut s.enps].into_iter().flatten() {
        *f = open_figure();
    }
    for c in [&mut s.engagement_change, &mut s.enps_change]
        .into_iter()
        .flatten()
    {
        *c = open_change();
    }
    for d in &mut s.drivers {
        if let Some(f) = &mut d.favourable {
            *f = open_figure();
        }
        if let Some(c) = &mut d.favourable_change {
            *c = open_change();
        }
    }
}

fn figure(e: &cxloop_metrics::Estimate) -> Option<pb::Figure> {
    Some(pb::Figure {
        result: Some(pb::figure::Result::Estimate(estimate_pb(e))),
    })
}

fn change_pb(
    basis: &ChangeBasis<'_>,
    c: Option<&cxloop_metrics::Comparison>,
) -> Option<pb::Change> {
    match basis {
        ChangeBasis::None => None,
        ChangeBasis::Hidden(r, k) => Some(pb::Change {
            result: Some(pb::change::Result::Suppressed(suppressed(*r, *k))),
        }),
        ChangeBasis::Against(_) => c.map(|c| pb::Change {
            result: Some(pb::change::Result::Comparison(comparison_pb(c))),
        }),
    }
}

/// The headline of a group: suppressed, or every figure with its change.
pub fn summary_pb(
    view: &CycleView,
    sums: Option<&GroupSums>,
    g: &Group,
    basis: &ChangeBasis<'_>,
    plans: &[ActionPlanRow],
    driver_changes: bool,
) -> pb::GroupSummary {
    let (hidden, _, invited) = view.status(g);
    let k = view.cycle.threshold;
    let (Some(sums), None) = (sums, hidden) else {
        return pb::GroupSummary {
            suppressed: Some(suppressed(reason_pb(hidden.unwrap_or(Hidden::TooFew)), k)),
            ..Default::default()
        };
    };
    let h = results::headline(&view.survey, sums, invited);
    let ch = match basis {
        ChangeBasis::Against(prev) => Some(results::headline_change(
            &view.survey,
            prev,
            sums,
            driver_changes,
        )),
        _ => None,
    };
    let mut summary = pb::GroupSummary {
        suppressed: None,
        response_rate: figure(&h.response_rate),
        engagement_index: h.engagement.as_ref().and_then(figure),
        engagement_change: h
            .engagement
            .as_ref()
            .and_then(|_| change_pb(basis, ch.as_ref().and_then(|c| c.engagement.as_ref()))),
        enps: h.enps.as_ref().and_then(figure),
        enps_change: h
            .enps
            .as_ref()
            .and_then(|_| change_pb(basis, ch.as_ref().and_then(|c| c.enps.as_ref()))),
        drivers: h
            .drivers
            .iter()
            .map(|(d, e)| pb::DriverFigure {
                driver: d.clone(),
                favourable: figure(e),
                favourable_change: if driver_changes {
                    change_pb(
                        basis,
                        ch.as_ref()
                            .and_then(|c| c.drivers.iter().find(|(x, _)| x == d).map(|(_, c)| c)),
                    )
                } else {
                    None
                },
                action_plans: plans
                    .iter()
                    .filter(|p| p.driver == *d)
                    .map(plan_pb)
                    .collect(),
            })
            .collect(),
    };
    if view.is_open() {
        withhold_answers(&mut summary);
    }
    summary
}

/// Most encoded bytes of comments one group's results carry: the rest of a GetResults answer
/// is small, so the answer stays under a client's default 4 MiB. A company-wide group of
/// 15,000 respondents writing a few hundred characters each would pass that.
const MAX_COMMENT_BYTES: usize = 2 * 1024 * 1024;

/// A shown group's comments, in their stored (random) order, as many as fit in `budget` bytes:
/// the same sample on every call, with the group's total.
fn comments_within(all: Vec<(String, String)>, budget: usize) -> pb::CommentsResult {
    use prost::Message;
    let total = u32::try_from(all.len()).unwrap_or(u32::MAX);
    let mut bytes = 0;
    let mut comments = Vec::new();
    for (question_key, text) in all {
        let c = pb::Comment { question_key, text };
        let n = c.encoded_len();
        bytes += 1 + prost::length_delimiter_len(n) + n;
        if bytes > budget {
            break;
        }
        comments.push(c);
    }
    pb::CommentsResult {
        suppressed: None,
        comments,
        total,
    }
}

/// An action plan on the wire.
pub fn plan_pb(p: &ActionPlanRow) -> pb::ActionPlan {
    pb::ActionPlan {
        id: p.id.clone(),
        cycle_id: p.cycle_id.clone(),
        org_unit_id: p.unit_id.clone(),
        driver: p.driver.clone(),
        title: p.title.clone(),
        description: p.description.clone(),
        owner: p.owner.clone(),
        due_date: p.due_date.clone(),
        status: p.status,
        create_time: Some(ts(p.created_at)),
        update_time: Some(ts(p.updated_at)),
    }
}

pub use cxloop_platform::db::timestamp as ts;

/// Loads the previous cycle of `cur` for these dimensions, if it has one.
pub async fn load_previous(
    cache: &ResultsCache,
    store: &Store,
    tenant: &TenantId,
    cur: &CycleView,
    dims: &[i64],
) -> ApiResult<Option<Previous>> {
    if cur.cycle.previous_cycle_id.is_empty() {
        return Ok(None);
    }
    let prev_cycle = store
        .get_cycle(tenant, &cur.cycle.previous_cycle_id)
        .await?;
    let attr = cur.slices.as_ref().map(|(a, _)| *a);
    let view = CycleView::load(cache, store, tenant, prev_cycle, attr).await?;
    let mut sums = HashMap::new();
    for d in dims {
        sums.insert(*d, cache.sums(store, tenant, &view, *d).await?);
    }
    Ok(Some(Previous { view, sums }))
}

/// Which data of a cycle a cache entry was built from: answered participants and erased
/// employees of the tenant. Both only grow, so equal counts mean equal data.
pub type Version = (i64, i64);

/// What is kept of one cycle between requests.
struct CycleData {
    version: Version,
    snap: Arc<Snapshot>,
    respondents: Option<Arc<Respondents>>,
    sums: HashMap<i64, Arc<UnitSums>>,
    /// Movers against a previous cycle, by (previous cycle id, its version).
    movers: HashMap<MoversKey, Arc<Movers>>,
    /// Decisions, by movers' key and attribute.
    plans: HashMap<PlanKey, Plans>,
    /// Headline sums per unit, by (dimension, value, rollup or own).
    headlines: HashMap<(i64, String, bool), Arc<Vec<GroupSums>>>,
    /// Driver impact with its bootstrap intervals, by (unit, with descendants).
    impacts: HashMap<(usize, bool), Option<Arc<results::Impact>>>,
}

/// A previous cycle's id and version.
type MoversKey = (String, Version);
/// What a cycle's decisions depend on besides its own version.
type PlanKey = (Option<MoversKey>, Option<usize>);
/// A cycle's tree decisions and the slice decisions of one attribute.
type Plans = (Arc<TreePlan>, Option<Arc<SlicePlan>>);

/// Per-process cache of the parts of results that only change when someone answers or is
/// erased: the launch snapshot with its counts, the sums and the respondent changes between
/// cycles. Every request checks the cycle's version with two indexed counts, so a replica
/// never serves results older than the database, and a closed cycle is read once.
#[derive(Clone, Default)]
pub struct ResultsCache {
    inner: Arc<Mutex<HashMap<(String, String), CycleData>>>,
}

/// Entries kept; beyond this the cache starts over (results stay correct, only slower).
const CACHE_CYCLES: usize = 64;

impl ResultsCache {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String), CycleData>) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update: start over.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                g.clear();
                g
            }
        };
        f(&mut guard)
    }

    /// Something kept for a cycle at `version`, if it is there.
    fn cached<T>(
        &self,
        tenant: &TenantId,
        cycle_id: &str,
        version: Version,
        get: impl FnOnce(&CycleData) -> Option<T>,
    ) -> Option<T> {
        let key = (tenant.as_str().to_owned(), cycle_id.to_owned());
        self.with(|m| m.get(&key).filter(|d| d.version == version).and_then(get))
    }

    /// Keeps something for a cycle at `version`; nothing if its entry has moved on to
    /// another version (or was dropped) in the meantime.
    fn keep(
        &self,
        tenant: &TenantId,
        cycle_id: &str,
        version: Version,
        put: impl FnOnce(&mut CycleData),
    ) {
        let key = (tenant.as_str().to_owned(), cycle_id.to_owned());
        self.with(|m| {
            if let Some(d) = m.get_mut(&key).filter(|d| d.version == version) {
                put(d);
            }
        });
    }

    /// The snapshot of a cycle at its current version.
    pub async fn snapshot(
        &self,
        store: &Store,
        tenant: &TenantId,
        cycle_id: &str,
    ) -> ApiResult<(Version, Arc<Snapshot>)> {
        let version = store.cycle_version(tenant, cycle_id).await?;
        let key = (tenant.as_str().to_owned(), cycle_id.to_owned());
        if let Some(snap) = self.with(|m| {
            m.get(&key)
                .filter(|d| d.version == version)
                .map(|d| d.snap.clone())
        }) {
            return Ok((version, snap));
        }
        let snap = Arc::new(store.snapshot(tenant, cycle_id).await?);
        self.with(|m| {
            if m.len() >= CACHE_CYCLES {
                m.clear();
            }
            m.insert(
                key,
                CycleData {
                    version,
                    snap: snap.clone(),
                    respondents: None,
                    sums: HashMap::new(),
                    movers: HashMap::new(),
                    plans: HashMap::new(),
                    headlines: HashMap::new(),
                    impacts: HashMap::new(),
                },
            );
        });
        Ok((version, snap))
    }

    /// Every sum of one dimension of a cycle.
    pub async fn sums(
        &self,
        store: &Store,
        tenant: &TenantId,
        view: &CycleView,
        dim: i64,
    ) -> ApiResult<Arc<UnitSums>> {
        let (id, version) = (view.cycle.id.as_str(), view.version);
        if let Some(s) = self.cached(tenant, id, version, |d| d.sums.get(&dim).cloned()) {
            return Ok(s);
        }
        let s = Arc::new(store.sums(tenant, id, dim, None, &[]).await?);
        self.keep(tenant, id, version, |d| {
            d.sums.insert(dim, s.clone());
        });
        Ok(s)
    }

    async fn respondents(
        &self,
        store: &Store,
        tenant: &TenantId,
        cycle_id: &str,
        version: Version,
    ) -> ApiResult<Arc<Respondents>> {
        if let Some(r) = self.cached(tenant, cycle_id, version, |d| d.respondents.clone()) {
            return Ok(r);
        }
        let r = Arc::new(store.respondents(tenant, cycle_id).await?);
        self.keep(tenant, cycle_id, version, |d| {
            d.respondents = Some(r.clone())
        });
        Ok(r)
    }

    /// The respondents of `cycle` (at `version`, with launch snapshot `snap`) who differ from
    /// its previous cycle's; None when it names no previous cycle.
    async fn movers(
        &self,
        store: &Store,
        tenant: &TenantId,
        cycle: &CycleRow,
        version: Version,
        snap: &Snapshot,
    ) -> ApiResult<Option<(MoversKey, Arc<Movers>)>> {
        if cycle.previous_cycle_id.is_empty() {
            return Ok(None);
        }
        let prev_id = cycle.previous_cycle_id.as_str();
        let prev_version = store.cycle_version(tenant, prev_id).await?;
        let mk = (prev_id.to_owned(), prev_version);
        if let Some(m) = self.cached(tenant, &cycle.id, version, |d| d.movers.get(&mk).cloned()) {
            return Ok(Some((mk, m)));
        }
        // The previous cycle's respondents are cached under its own entry, which must exist
        // for them to be kept: make sure it does. Its tree is the one its groups were
        // formed in.
        let (_, prev_snap) = self.snapshot(store, tenant, prev_id).await?;
        let prev_resp = self
            .respondents(store, tenant, prev_id, prev_version)
            .await?;
        let cur_resp = self.respondents(store, tenant, &cycle.id, version).await?;
        let m = Arc::new(Movers::between(
            &prev_snap.tree,
            &snap.tree,
            &prev_resp,
            &cur_resp,
        ));
        self.keep(tenant, &cycle.id, version, |d| {
            d.movers.insert(mk.clone(), m.clone());
        });
        Ok(Some((mk, m)))
    }

    /// Driver impact of a group (unit, with descendants or not), made once per version: its
    /// bootstrap takes milliseconds, and a closed cycle's impact never changes.
    pub fn impact(
        &self,
        tenant: &TenantId,
        view: &CycleView,
        group: (usize, bool),
        make: impl FnOnce() -> Option<results::Impact>,
    ) -> Option<Arc<results::Impact>> {
        let (id, version) = (view.cycle.id.as_str(), view.version);
        if let Some(hit) = self.cached(tenant, id, version, |d| d.impacts.get(&group).cloned()) {
            return hit;
        }
        let made = make().map(Arc::new);
        self.keep(tenant, id, version, |d| {
            d.impacts.insert(group, made.clone());
        });
        made
    }

    /// The headline sums (respondents, eNPS, engagement and driver sums) of every unit of a
    /// cycle for one dimension value: of its own members, or of its rollup (summed bottom-up).
    /// Made once per version: a dashboard asks for the same tree again and again.
    pub fn headlines(
        &self,
        tenant: &TenantId,
        view: &CycleView,
        sums: &UnitSums,
        dim: i64,
        value: &str,
        rollup: bool,
    ) -> Arc<Vec<GroupSums>> {
        let (id, version) = (view.cycle.id.as_str(), view.version);
        let hk = (dim, value.to_owned(), rollup);
        if let Some(h) = self.cached(tenant, id, version, |d| d.headlines.get(&hk).cloned()) {
            return h;
        }
        let enps = view.survey.enps_key();
        let headline_only = |g: &GroupSums| GroupSums {
            tallies: g
                .tallies
                .iter()
                .filter(|(m, _)| m.as_str() == RESPONDENTS || Some(m.as_str()) == enps)
                .map(|(m, h)| (m.clone(), *h))
                .collect(),
            moments: g
                .moments
                .iter()
                .filter(|(st, _)| st.starts_with("e:") || st.starts_with("f:"))
                .map(|(st, v)| (st.clone(), *v))
                .collect(),
        };
        let t = &view.snap.tree;
        let mut out: Vec<GroupSums> = t
            .ids
            .iter()
            .map(|id| {
                sums.get(&(id.clone(), value.to_owned()))
                    .map(headline_only)
                    .unwrap_or_default()
            })
            .collect();
        if rollup {
            for u in (1..t.len()).rev() {
                if let Some(p) = t.parent[u] {
                    let child = std::mem::take(&mut out[u]);
                    out[p].merge(&child);
                    out[u] = child;
                }
            }
        }
        let out = Arc::new(out);
        self.keep(tenant, id, version, |d| {
            d.headlines.insert(hk, out.clone());
        });
        out
    }

    /// The decisions of a cycle's groups (and of the slices of `attr`), planned once per
    /// version of the cycle and of its previous cycle: they depend on counts only.
    fn plans(
        &self,
        tenant: &TenantId,
        cycle: &CycleRow,
        version: Version,
        snap: &Snapshot,
        movers: Option<&(MoversKey, Arc<Movers>)>,
        attr: Option<usize>,
    ) -> (Arc<TreePlan>, Option<Arc<SlicePlan>>) {
        let pk = (movers.map(|(k, _)| k.clone()), attr);
        if let Some(p) = self.cached(tenant, &cycle.id, version, |d| d.plans.get(&pk).cloned()) {
            return p;
        }
        let len = snap.tree.len();
        let (mut answered, mut invited) = (vec![0u64; len], vec![0u64; len]);
        for c in &snap.cells {
            answered[c.unit] += c.answered;
            invited[c.unit] += c.invited;
        }
        let m = movers.map(|(_, m)| &**m);
        let tree = Arc::new(anonymity::plan_tree(
            &snap.tree,
            &answered,
            &invited,
            u64::from(cycle.threshold),
            m,
        ));
        let slices =
            attr.map(|a| Arc::new(anonymity::plan_slices(&snap.tree, &tree, &snap.cells, a, m)));
        let p = (tree, slices);
        self.keep(tenant, &cycle.id, version, |d| {
            d.plans.insert(pk, p.clone());
        });
        p
    }
}

/// Every result of one group.
pub async fn group_results(
    cache: &ResultsCache,
    store: &Store,
    tenant: &TenantId,
    cycle: CycleRow,
    selector: pb::GroupSelector,
    filter: Option<(usize, String)>,
    scope: &Scope,
) -> ApiResult<pb::GroupResults> {
    let unit_id = selector.org_unit_id.clone();
    let unit_id = unit_id.as_str();
    let include_descendants = selector.include_descendants;
    let view = CycleView::load(cache, store, tenant, cycle, filter.as_ref().map(|f| f.0)).await?;
    let u = view
        .snap
        .tree
        .index_of(unit_id)
        .ok_or_else(|| ApiError::not_found(ORG_UNIT, unit_id))?;
    if !scope.allows(&view.snap.tree, u) {
        return Err(out_of_scope(unit_id));
    }
    let g = match (&filter, include_descendants) {
        (Some((a, v)), _) => Group::Slice(u, *a, v.clone()),
        (None, true) => Group::Rollup(u),
        (None, false) => Group::Own(u),
    };
    let k = view.cycle.threshold;
    let (hidden, n, _) = view.status(&g);
    let dim = dim_of(&g);
    let shown = hidden.is_none();
    let sums = if shown {
        Some(group_sums(
            &view,
            &*cache.sums(store, tenant, &view, dim).await?,
            &g,
        ))
    } else {
        None
    };
    let prev = if shown {
        load_previous(cache, store, tenant, &view, &[dim]).await?
    } else {
        None
    };
    let prev_sums = prev.as_ref().and_then(|p| {
        let pg = p.view.same_group(&view, &g)?;
        Some(group_sums(&p.view, p.sums.get(&dim)?, &pg))
    });
    let basis = change_basis(&view, prev.as_ref(), &g, prev_sums.as_ref());
    let plans: Vec<ActionPlanRow> = match &prev {
        Some(p) => store
            .plans_after_cycle(tenant, &p.view.cycle.id)
            .await?
            .into_iter()
            .filter(|pl| pl.unit_id == unit_id)
            .collect(),
        None => Vec::new(),
    };
    let summary = summary_pb(&view, sums.as_ref(), &g, &basis, &plans, true);
    let questions = match &sums {
        Some(_) if view.is_open() => view
            .survey
            .questions
            .iter()
            .filter(|q| q.kind != QuestionKind::Comment)
            .map(|q| pb::QuestionFigure {
                question_key: q.key.clone(),
                driver: q.driver.clone(),
                favourable: Some(open_figure()),
                neutral: Some(open_figure()),
                unfavourable: Some(open_figure()),
                mean: Some(open_figure()),
                favourable_change: match basis {
                    ChangeBasis::None => None,
                    _ => Some(open_change()),
                },
            })
            .collect(),
        Some(s) => {
            let prev_q = match &basis {
                ChangeBasis::Against(p) => results::questions(&view.survey, p),
                _ => Vec::new(),
            };
            results::questions(&view.survey, s)
                .into_iter()
                .map(|q| {
                    let c = prev_q.iter().find(|p| p.key == q.key).map(|p| {
                        cxloop_metrics::compare_share(
                            p.favourable_count.0,
                            p.favourable_count.1,
                            q.favourable_count.0,
                            q.favourable_count.1,
                        )
                    });
                    pb::QuestionFigure {
                        question_key: q.key.clone(),
                        driver: q.driver.clone(),
                        favourable: figure(&q.favourable),
                        neutral: figure(&q.neutral),
                        unfavourable: figure(&q.unfavourable),
                        mean: figure(&q.mean),
                        favourable_change: change_pb(&basis, c.as_ref()),
                    }
                })
                .collect()
        }
        None => Vec::new(),
    };
    // Comments: their own threshold (10), applied with the same tree rules, so that no
    // difference of two comment lists is the comments of fewer than 10 people.
    let comments = if filter.is_some() {
        pb::CommentsResult {
            suppressed: Some(suppressed(pb::SuppressionReason::NotUnderFilter, k)),
            comments: Vec::new(),
            total: 0,
        }
    } else {
        let kc = COMMENTS_MIN.max(u64::from(k));
        let cplan = anonymity::plan_tree(
            &view.snap.tree,
            &view.plan.n_own,
            &view.plan.invited_own,
            kc,
            None,
        );
        let chidden = match g {
            Group::Own(u) => cplan.own[u],
            _ => cplan.rollup[u],
        };
        match (hidden, chidden) {
            (Some(h), _) => pb::CommentsResult {
                suppressed: Some(suppressed(reason_pb(h), k)),
                comments: Vec::new(),
                total: 0,
            },
            // A comment that is new since the last read would be the latest respondent's.
            (None, None) if view.is_open() => pb::CommentsResult {
                suppressed: Some(suppressed(pb::SuppressionReason::CycleOpen, 0)),
                comments: Vec::new(),
                total: 0,
            },
            (None, Some(_)) => pb::CommentsResult {
                suppressed: Some(suppressed(
                    pb::SuppressionReason::CommentsNeedTen,
                    kc as u32,
                )),
                comments: Vec::new(),
                total: 0,
            },
            (None, None) => {
                let units: Vec<String> = view
                    .units_of(&g)
                    .into_iter()
                    .map(|u| view.snap.tree.ids[u].clone())
                    .collect();
                let all = store.comments(tenant, &view.cycle.id, &units).await?;
                comments_within(all, MAX_COMMENT_BYTES)
            }
        }
    };
    let driver_impact = match (&sums, hidden) {
        (_, Some(h)) => pb::DriverImpact {
            suppressed: Some(suppressed(reason_pb(h), k)),
            ..Default::default()
        },
        _ if view.is_open() => pb::DriverImpact {
            suppressed: Some(suppressed(pb::SuppressionReason::CycleOpen, 0)),
            ..Default::default()
        },
        _ if filter.is_some() => pb::DriverImpact {
            suppressed: Some(suppressed(pb::SuppressionReason::NotUnderFilter, k)),
            ..Default::default()
        },
        _ if n < IMPACT_MIN => pb::DriverImpact {
            suppressed: Some(suppressed(
                pb::SuppressionReason::ImpactNeedsTwentyFive,
                IMPACT_MIN as u32,
            )),
            ..Default::default()
        },
        (Some(s), None) => match cache.impact(tenant, &view, (u, include_descendants), || {
            results::impact(&view.survey, s)
        }) {
            Some(impact) => pb::DriverImpact {
                suppressed: None,
                sample_size: s.respondents(),
                r_squared: impact.r_squared.value,
                r_squared_estimate: Some(estimate_pb(&impact.r_squared)),
                weights: impact
                    .weights
                    .iter()
                    .map(|(driver, raw, rescaled)| pb::DriverWeight {
                        driver: driver.clone(),
                        raw_weight: raw.value,
                        rescaled_weight: rescaled.value,
                        raw: Some(estimate_pb(raw)),
                        rescaled: Some(estimate_pb(rescaled)),
                    })
                    .collect(),
            },
            None => pb::DriverImpact {
                sample_size: s.respondents(),
                ..Default::default()
            },
        },
        (None, None) => pb::DriverImpact::default(),
    };
    Ok(pb::GroupResults {
        group: Some(selector),
        previous_cycle_id: view.cycle.previous_cycle_id.clone(),
        summary: Some(summary),
        questions,
        comments: Some(comments),
        driver_impact: Some(driver_impact),
    })
}

static EMPTY: std::sync::LazyLock<GroupSums> = std::sync::LazyLock::new(GroupSums::default);

/// Headline results of every unit of a cycle.
pub async fn tree_results(
    cache: &ResultsCache,
    store: &Store,
    tenant: &TenantId,
    cycle: CycleRow,
    attr: Option<usize>,
    scope: &Scope,
) -> ApiResult<pb::GetResultsTreeResponse> {
    let view = CycleView::load(cache, store, tenant, cycle, attr).await?;
    // Decisions are the whole tree's (they never depend on who asks); a manager receives
    // the part of it that is theirs.
    if !(0..view.snap.tree.len()).any(|u| scope.allows(&view.snap.tree, u)) {
        return Err(out_of_scope(&view.cycle.org_unit_id));
    }
    let mut dims = vec![0i64];
    if let Some(a) = attr {
        dims.push(a as i64 + 1);
    }
    let mut sums: HashMap<i64, Arc<UnitSums>> = HashMap::new();
    for d in &dims {
        sums.insert(*d, cache.sums(store, tenant, &view, *d).await?);
    }
    let prev = load_previous(cache, store, tenant, &view, &dims).await?;
    let tree = &view.snap.tree;
    let own = cache.headlines(tenant, &view, &sums[&0], 0, "", false);
    let roll = cache.headlines(tenant, &view, &sums[&0], 0, "", true);
    let prev_roll = prev
        .as_ref()
        .map(|p| cache.headlines(tenant, &p.view, &p.sums[&0], 0, "", true));
    let mut slice_sums: HashMap<String, Arc<Vec<GroupSums>>> = HashMap::new();
    let mut prev_slice_sums: HashMap<String, Arc<Vec<GroupSums>>> = HashMap::new();
    if let Some(a) = attr {
        let d = a as i64 + 1;
        let values: std::collections::BTreeSet<&String> =
            view.snap.cells.iter().map(|c| &c.attrs[a]).collect();
        for v in values {
            slice_sums.insert(
                v.clone(),
                cache.headlines(tenant, &view, &sums[&d], d, v, true),
            );
            if let Some((p, ps)) = prev.as_ref().and_then(|p| Some((p, p.sums.get(&d)?))) {
                prev_slice_sums.insert(v.clone(), cache.headlines(tenant, &p.view, ps, d, v, true));
            }
        }
    }
    let prev_index = |g: &Group| -> Option<usize> {
        let p = prev.as_ref()?;
        match p.view.same_group(&view, g)? {
            Group::Own(i) | Group::Rollup(i) | Group::Slice(i, _, _) => Some(i),
        }
    };
    let prev_own = prev
        .as_ref()
        .map(|p| cache.headlines(tenant, &p.view, &p.sums[&0], 0, "", false));
    let summary = |g: &Group, cur: &GroupSums, prev_sums: Option<&GroupSums>| {
        let basis = change_basis(&view, prev.as_ref(), g, prev_sums);
        summary_pb(&view, Some(cur), g, &basis, &[], false)
    };
    let mut units = Vec::with_capacity(tree.len());
    for u in (0..tree.len()).filter(|u| scope.allows(tree, *u)) {
        let g_roll = Group::Rollup(u);
        let g_own = Group::Own(u);
        let pr = prev_index(&g_roll).and_then(|i| prev_roll.as_ref().map(|r| &r[i]));
        let po = prev_index(&g_own).and_then(|i| prev_own.as_ref().map(|r| &r[i]));
        let mut slices = Vec::new();
        if let Some((a, plan)) = &view.slices {
            for v in plan.values_of(u) {
                let g = Group::Slice(u, *a, v.clone());
                let cur = slice_sums.get(v).map(|s| &s[u]).unwrap_or(&EMPTY);
                let ps = prev_index(&g).and_then(|i| prev_slice_sums.get(v).map(|s| &s[i]));
                slices.push(pb::SliceSummary {
                    value: v.clone(),
                    summary: Some(summary(&g, cur, ps)),
                });
            }
        }
        units.push(pb::UnitResults {
            org_unit_id: tree.ids[u].clone(),
            parent_id: tree.parent[u]
                .map(|p| tree.ids[p].clone())
                .unwrap_or_default(),
            name: view.snap.names[u].clone(),
            depth: tree.depth[u],
            with_descendants: Some(summary(&g_roll, &roll[u], pr)),
            own: Some(summary(&g_own, &own[u], po)),
            slices,
        });
    }
    Ok(pb::GetResultsTreeResponse {
        previous_cycle_id: view.cycle.previous_cycle_id.clone(),
        units,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_past_the_budget_are_left_out_and_counted() {
        // Each comment: key "q" and 100 characters, a 105-byte message plus its framing.
        let all: Vec<(String, String)> = (0..10)
            .map(|i| ("q".to_string(), format!("{i}").repeat(100)))
            .collect();
        let cut = comments_within(all.clone(), 350);
        assert_eq!((cut.comments.len(), cut.total), (3, 10));
        // The first ones in stored order: the same sample on every call.
        assert_eq!(cut.comments[2].text, all[2].1);
        let whole = comments_within(all, MAX_COMMENT_BYTES);
        assert_eq!((whole.comments.len(), whole.total), (10, 10));
    }
}
