//! Scoring KPIs: each KPI's touchpoints are resolved from the current journey maps, the
//! daily score histograms of every (survey, question, touchpoint) are read from the feedback
//! service in batched calls (never one call per KPI or per day), summed per KPI, and turned
//! into estimates, statuses, attainment and trends with the same maths feedback uses.

use std::collections::HashMap;

use cxloop_metrics::{Histogram, SurveyMetric};
use cxloop_platform::Caller;
use cxloop_platform::db::micros;
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::period::Range;
use cxloop_proto::feedback::v1 as fb;
use cxloop_proto::journeys::v1 as pb;

use super::convert::{kpi_pb, range_pb, target_pb};
use crate::domain::Subject;
use crate::domain::kpi::{self, KpiDoc};
use crate::feedback::Feedback;
use crate::store::{JourneyRow, KpiRow};
use cxloop_platform::wire::{comparison_pb, estimate_pb};

/// The feedback touchpoints a KPI's subject covers under the current maps: a touchpoint
/// itself, a stage's touchpoints, or every touchpoint of a journey's stages (once each).
pub fn touchpoints_of(subject: &Subject, journeys: &[JourneyRow]) -> Vec<String> {
    let journey = |id: &str| journeys.iter().find(|j| j.id == id);
    let mut out: Vec<String> = match subject {
        Subject::Touchpoint(t) => vec![t.clone()],
        Subject::Stage { journey: j, stage } => journey(j)
            .and_then(|j| j.doc.stages.iter().find(|s| &s.id == stage))
            .map(|s| s.touchpoint_ids.clone())
            .unwrap_or_default(),
        Subject::Journey(j) => journey(j)
            .map(|j| {
                j.doc
                    .stages
                    .iter()
                    .flat_map(|s| s.touchpoint_ids.iter().cloned())
                    .collect()
            })
            .unwrap_or_default(),
        Subject::Tenant => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out
}

/// Histograms of one (survey, question) over a set of touchpoints, read in one go.
pub struct HistogramReader {
    queries: Vec<fb::QueryMetricsRequest>,
    index: HashMap<(String, String, String, i64, i64, i32), usize>,
    /// Day rows the daily series asked for add up to.
    day_rows: i64,
}

/// Most distinct feedback queries one call may need: KPIs × the touchpoints they cover, for
/// the period and the one before. A scorecard of 500 KPIs on a few touchpoints each is far
/// below; 200 KPIs on a journey of thousands of touchpoints is not, and one such call would
/// hold gigabytes.
pub const MAX_QUERIES: usize = 20_000;
/// Most day rows of daily series one call may need (each up to 11 counts): a year of days
/// for 1,000 touchpoint series (× 11 counts × 8 bytes ≈ 32 MB in flight).
pub const MAX_DAY_ROWS: i64 = 366 * 1_000;

/// A handle to a requested histogram series.
#[derive(Clone, Copy)]
pub struct Series(usize);

fn period_pb(r: Range) -> cxloop_proto::common::v1::Period {
    cxloop_proto::common::v1::Period {
        kind: Some(cxloop_proto::common::v1::period::Kind::Range(range_pb(r))),
    }
}

impl HistogramReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self {
            queries: Vec::new(),
            index: HashMap::new(),
            day_rows: 0,
        }
    }

    /// Asks for one touchpoint's histograms over `range`, per day or as one total. The same
    /// request made twice is asked once.
    pub fn want(&mut self, k: &KpiDoc, touchpoint: &str, range: Range, daily: bool) -> Series {
        let bucket = if daily {
            fb::Bucket::Day
        } else {
            fb::Bucket::Total
        } as i32;
        let key = (
            k.survey_id.clone(),
            k.question_key.clone(),
            touchpoint.to_owned(),
            micros(range.start),
            micros(range.end),
            bucket,
        );
        let next = self.queries.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            if daily {
                let (first, end) = range.days();
                self.day_rows += end - first;
            }
            self.queries.push(fb::QueryMetricsRequest {
                survey_id: k.survey_id.clone(),
                question_key: k.question_key.clone(),
                slice: Some(fb::Slice {
                    touchpoint_id: touchpoint.to_owned(),
                    ..Default::default()
                }),
                period: Some(period_pb(range)),
                bucket,
                view: if daily {
                    fb::MetricsView::Dense
                } else {
                    fb::MetricsView::Histogram
                } as i32,
            });
        }
        Series(i)
    }

    /// Runs every query asked for.
    pub async fn read(self, feedback: &Feedback, caller: &Caller) -> ApiResult<Histograms> {
        if self.queries.len() > MAX_QUERIES || self.day_rows > MAX_DAY_ROWS {
            return Err(ApiError::precondition(
                "TOO_LARGE",
                "scorecard",
                format!(
                    "these KPIs cover {} touchpoint series ({} day rows of daily series), more than one call reads (at most {MAX_QUERIES} series and {MAX_DAY_ROWS} day rows): ask for fewer KPIs, a shorter period, or without daily series",
                    self.queries.len(),
                    self.day_rows
                ),
            ));
        }
        let results = if self.queries.is_empty() {
            Vec::new()
        } else {
            feedback.query(caller, self.queries).await?
        };
        Ok(Histograms { results })
    }
}

/// The answers of a [`HistogramReader`].
pub struct Histograms {
    results: Vec<fb::QueryMetricsResponse>,
}

fn hist(b: &fb::MetricBucket) -> Histogram {
    b.histogram.iter().map(|s| (s.score, s.count)).collect()
}

impl Histograms {
    fn result(&self, s: Series) -> ApiResult<&fb::QueryMetricsResponse> {
        self.results
            .get(s.0)
            .ok_or_else(|| ApiError::Internal("feedback returned fewer results than asked".into()))
    }

    /// The whole-range histogram of a series.
    pub fn total(&self, s: Series) -> ApiResult<Histogram> {
        Ok(self.result(s)?.total.as_ref().map(hist).unwrap_or_default())
    }

    /// Adds a daily series (read as a dense matrix) into per-day dense sums.
    pub fn add_days(&self, s: Series, days: &mut DenseDays) -> ApiResult<()> {
        let Some(dense) = self.result(s)?.dense.as_ref() else {
            return Err(ApiError::Internal(
                "feedback returned no dense counts".into(),
            ));
        };
        let points = dense.scale_points.max(1) as usize;
        if days.points == 0 {
            (days.min, days.points) = (dense.scale_min, points);
            days.counts = vec![0; days.days * points];
        }
        if (days.min, days.points) != (dense.scale_min, points) {
            return Err(ApiError::Internal(
                "one KPI's series have different scales".into(),
            ));
        }
        for (sum, c) in days.counts.iter_mut().zip(&dense.counts) {
            *sum += c;
        }
        Ok(())
    }
}

impl Default for HistogramReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-day counts of one KPI summed over its touchpoints: `days` rows of `points` counts.
pub struct DenseDays {
    days: usize,
    min: i32,
    points: usize,
    counts: Vec<u64>,
}

impl DenseDays {
    fn new(days: usize) -> Self {
        Self {
            days,
            min: 0,
            points: 0,
            counts: Vec::new(),
        }
    }

    /// The day rows (none when no series was added).
    fn rows(&self) -> impl Iterator<Item = &[u64]> {
        self.counts.chunks(self.points.max(1))
    }
}

struct Plan {
    current: Vec<Series>,
    previous: Vec<Series>,
}

/// Scores KPIs for a period: one batched read of the feedback service for all of them.
pub async fn score(
    feedback: &Feedback,
    caller: &Caller,
    kpis: &[KpiRow],
    journeys: &[JourneyRow],
    range: Range,
    daily: bool,
) -> ApiResult<Vec<pb::KpiResult>> {
    let previous = range.previous();
    let mut reader = HistogramReader::new();
    let plans: Vec<Plan> = kpis
        .iter()
        .map(|k| {
            let tps = touchpoints_of(&k.doc.subject, journeys);
            Plan {
                current: tps
                    .iter()
                    .map(|t| reader.want(&k.doc, t, range, daily))
                    .collect(),
                previous: tps
                    .iter()
                    .map(|t| reader.want(&k.doc, t, previous, false))
                    .collect(),
            }
        })
        .collect();
    let h = reader.read(feedback, caller).await?;
    let day_ranges = range.buckets(cxloop_platform::period::BucketSize::Day);
    kpis.iter()
        .zip(plans)
        .map(|(k, plan)| {
            let mut total = Histogram::new();
            let mut days = DenseDays::new(if daily { day_ranges.len() } else { 0 });
            for s in &plan.current {
                if daily {
                    h.add_days(*s, &mut days)?;
                } else {
                    total.merge(&h.total(*s)?);
                }
            }
            if daily && days.points > 0 {
                let mut sums = vec![0u64; days.points];
                for row in days.rows() {
                    for (a, b) in sums.iter_mut().zip(row) {
                        *a += b;
                    }
                }
                total = Histogram::from_dense(days.min, &sums);
            }
            let mut prev = Histogram::new();
            for s in &plan.previous {
                prev.merge(&h.total(*s)?);
            }
            Ok(result(
                k,
                range,
                previous,
                &total,
                &prev,
                &day_ranges,
                &days,
            ))
        })
        .collect()
}

fn result(
    k: &KpiRow,
    range: Range,
    previous: Range,
    total: &Histogram,
    prev: &Histogram,
    day_ranges: &[Range],
    days: &DenseDays,
) -> pb::KpiResult {
    let doc = &k.doc;
    let metric = doc.metric().unwrap_or(SurveyMetric::Mean);
    let actual = metric.estimate(total);
    let target = doc.target_for(micros(range.start), micros(range.end));
    let status = kpi::status(doc.direction, &actual, target);
    let (mut attainment, mut att_low, mut att_high) = (0.0, 0.0, 0.0);
    if let Some(t) = target
        && actual.n > 0
    {
        attainment = kpi::attainment(doc.direction, actual.value, t);
        let a = kpi::attainment(doc.direction, actual.low, t);
        let b = kpi::attainment(doc.direction, actual.high, t);
        (att_low, att_high) = (a.min(b), a.max(b));
    }
    let trend = (total.total() > 0 && prev.total() > 0).then(|| {
        let c = metric.compare(prev, total);
        let better = doc.direction.sign() * c.difference;
        pb::Trend {
            previous_period: Some(range_pb(previous)),
            comparison: Some(comparison_pb(&c)),
            improved: better > 0.0 && c.p_value < 0.05,
            worsened: better < 0.0 && c.p_value < 0.05,
        }
    });
    // Days without any series (a KPI with no touchpoints) are all zero.
    let zero = vec![0u64; days.points.max(1)];
    let mut running = zero.clone();
    let rows = days.rows().chain(std::iter::repeat(zero.as_slice()));
    // Two histograms refilled per day: a year of fifty KPIs is 36,500 estimates.
    let (mut h_td, mut h_day) = (Histogram::new(), Histogram::new());
    let points = day_ranges
        .iter()
        .take(days.days)
        .zip(rows)
        .map(|(r, row)| {
            for (a, b) in running.iter_mut().zip(row) {
                *a += b;
            }
            h_td.set_dense(days.min, &running);
            h_day.set_dense(days.min, row);
            let td = metric.estimate(&h_td);
            let day = metric.estimate(&h_day);
            pb::DailyPoint {
                epoch_day: micros(r.start).div_euclid(86_400_000_000),
                day_value: Some(estimate_pb(&day)),
                to_date: Some(estimate_pb(&td)),
                to_date_status: kpi::status(doc.direction, &td, target) as i32,
            }
        })
        .collect();
    let benchmark = target
        .and_then(|t| t.competitor_benchmark)
        .filter(|_| actual.n > 0);
    pb::KpiResult {
        kpi: Some(kpi_pb(k)),
        period: Some(range_pb(range)),
        actual: Some(estimate_pb(&actual)),
        target: target.map(target_pb),
        attainment,
        attainment_low: att_low,
        attainment_high: att_high,
        status: status as i32,
        trend,
        days: points,
        gap_to_competitor: benchmark.map(|c| actual.value - c),
        competitor_gap: benchmark.map(|c| {
            estimate_pb(&cxloop_metrics::Estimate {
                value: actual.value - c,
                low: actual.low - c,
                high: actual.high - c,
                ..actual
            })
        }),
    }
}
