//! Figures of a group from its sums: engagement index, eNPS, driver favourability, question
//! shares, response rate, driver impact, and their changes between cycles. Which groups may
//! be shown at all is decided in [`super::anonymity`]; this module only computes.

use std::collections::HashMap;

use cxloop_metrics::ex::{CrossMoments, Moments, WeightEstimates};
use cxloop_metrics::{Comparison, Estimate, Histogram};

use super::{ENGAGEMENT_SQ, ENGAGEMENT_SUM, QuestionKind, RESPONDENTS, SurveyDef, driver_stat};

/// The sums of one group (one unit, or the sum of several units' sums).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupSums {
    /// Histogram columns h0..h10 per tally measure.
    pub tallies: HashMap<String, [u64; 11]>,
    /// Moment statistics.
    pub moments: HashMap<String, f64>,
}

impl GroupSums {
    /// Adds another group's sums (disjoint respondents).
    pub fn merge(&mut self, o: &GroupSums) {
        for (m, h) in &o.tallies {
            let e = self.tallies.entry(m.clone()).or_insert([0; 11]);
            for (a, b) in e.iter_mut().zip(h) {
                *a += b;
            }
        }
        for (s, v) in &o.moments {
            *self.moments.entry(s.clone()).or_default() += v;
        }
    }

    /// Respondents.
    pub fn respondents(&self) -> u64 {
        self.tallies.get(RESPONDENTS).map_or(0, |h| h[0])
    }

    fn histogram(&self, measure: &str) -> Histogram {
        let mut h = Histogram::new();
        if let Some(cols) = self.tallies.get(measure) {
            for (score, c) in cols.iter().enumerate() {
                h.add(score as i32, *c);
            }
        }
        h
    }

    fn moments_of(&self, sum: &str, sq: &str) -> Moments {
        Moments {
            n: self.respondents(),
            sum: self.moments.get(sum).copied().unwrap_or(0.0),
            sum_sq: self.moments.get(sq).copied().unwrap_or(0.0),
        }
    }

    /// Sums of the respondents' engagement scores.
    pub fn engagement(&self) -> Moments {
        self.moments_of(ENGAGEMENT_SUM, ENGAGEMENT_SQ)
    }

    /// Sums of the respondents' favourable shares of a driver.
    pub fn driver(&self, driver: &str) -> Moments {
        self.moments_of(&driver_stat(driver, false), &driver_stat(driver, true))
    }
}

/// Headline figures of a shown group.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    /// answered / invited.
    pub response_rate: Estimate,
    /// 0-100, if the survey has engagement questions.
    pub engagement: Option<Estimate>,
    /// -100..100, if the survey has an eNPS question.
    pub enps: Option<Estimate>,
    /// Favourable share per driver, in the survey's order.
    pub drivers: Vec<(String, Estimate)>,
}

/// Headline figures from a group's sums and its invited count.
pub fn headline(survey: &SurveyDef, sums: &GroupSums, invited: u64) -> Headline {
    let n = sums.respondents();
    Headline {
        response_rate: cxloop_metrics::share(n, invited),
        engagement: survey.has_engagement().then(|| {
            let mut e = cxloop_metrics::ex::mean_of(&sums.engagement());
            clip(&mut e, 0.0, 100.0);
            e
        }),
        enps: survey
            .enps_key()
            .map(|k| cxloop_metrics::nps(&sums.histogram(k))),
        drivers: survey
            .drivers()
            .into_iter()
            .map(|d| {
                let mut e = cxloop_metrics::ex::mean_of(&sums.driver(&d));
                clip(&mut e, 0.0, 1.0);
                (d, e)
            })
            .collect(),
    }
}

/// A t interval of a bounded score can reach past its bounds; the bounds are certain.
fn clip(e: &mut Estimate, lo: f64, hi: f64) {
    e.low = e.low.max(lo);
    e.high = e.high.min(hi);
}

/// Changes of the headline figures from `prev` to `cur` (same group, two cycles).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadlineChange {
    /// Engagement index, points.
    pub engagement: Option<Comparison>,
    /// eNPS, points.
    pub enps: Option<Comparison>,
    /// Driver favourable share, per driver present in both surveys.
    pub drivers: Vec<(String, Comparison)>,
}

/// Compares two cycles' sums of the same group (same survey). `drivers` false leaves the
/// driver comparisons out (the whole-tree overview shows them per group on request).
pub fn headline_change(
    survey: &SurveyDef,
    prev: &GroupSums,
    cur: &GroupSums,
    drivers: bool,
) -> HeadlineChange {
    HeadlineChange {
        engagement: survey
            .has_engagement()
            .then(|| cxloop_metrics::ex::compare_means_of(&prev.engagement(), &cur.engagement())),
        enps: survey
            .enps_key()
            .map(|k| cxloop_metrics::compare_nps(&prev.histogram(k), &cur.histogram(k))),
        drivers: if drivers {
            survey
                .drivers()
                .into_iter()
                .map(|d| {
                    let c = cxloop_metrics::ex::compare_means_of(&prev.driver(&d), &cur.driver(&d));
                    (d, c)
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// Figures of one question.
#[derive(Clone, Debug, PartialEq)]
pub struct QuestionFigures {
    /// Key.
    pub key: String,
    /// Driver.
    pub driver: String,
    /// Favourable share (4-5, or 9-10 for eNPS).
    pub favourable: Estimate,
    /// Neutral share (3, or 7-8).
    pub neutral: Estimate,
    /// Unfavourable share (1-2, or 0-6).
    pub unfavourable: Estimate,
    /// Mean score.
    pub mean: Estimate,
    /// (favourable, n) for comparisons.
    pub favourable_count: (u64, u64),
}

/// Figures of every scored question.
pub fn questions(survey: &SurveyDef, sums: &GroupSums) -> Vec<QuestionFigures> {
    survey
        .questions
        .iter()
        .filter(|q| q.kind != QuestionKind::Comment)
        .map(|q| {
            let h = sums.histogram(&q.key);
            let n = h.total();
            let (fav, neu, unfav) = match q.kind {
                QuestionKind::Enps => (
                    h.count_between(9, 10),
                    h.count_between(7, 8),
                    h.count_between(0, 6),
                ),
                _ => (
                    h.count_between(4, 5),
                    h.count_between(3, 3),
                    h.count_between(1, 2),
                ),
            };
            QuestionFigures {
                key: q.key.clone(),
                driver: q.driver.clone(),
                favourable: cxloop_metrics::share(fav, n),
                neutral: cxloop_metrics::share(neu, n),
                unfavourable: cxloop_metrics::share(unfav, n),
                mean: cxloop_metrics::mean(&h),
                favourable_count: (fav, n),
            }
        })
        .collect()
}

/// The cross sums of (engagement, driver means…) of a group, for driver impact.
pub fn cross_moments(survey: &SurveyDef, sums: &GroupSums) -> CrossMoments {
    let p = survey.drivers().len() + 1;
    let mut m = CrossMoments::new(p);
    m.n = sums.respondents();
    for i in 0..p {
        m.sums[i] = sums.moments.get(&format!("z:{i}")).copied().unwrap_or(0.0);
        for j in i..p {
            let v = sums
                .moments
                .get(&format!("zz:{i}:{j}"))
                .copied()
                .unwrap_or(0.0);
            m.cross[i][j] = v;
            m.cross[j][i] = v;
        }
    }
    m
}

/// Driver impact of a group, every figure with its interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Impact {
    /// R² of engagement on all drivers.
    pub r_squared: Estimate,
    /// (driver, raw weight, rescaled weight), largest raw weight first.
    pub weights: Vec<(String, Estimate, Estimate)>,
}

/// Driver impact of a group; None when the survey has no engagement index or drivers, or the
/// data are degenerate.
pub fn impact(survey: &SurveyDef, sums: &GroupSums) -> Option<Impact> {
    if !survey.has_engagement() || survey.drivers().is_empty() {
        return None;
    }
    let WeightEstimates {
        r_squared,
        raw,
        rescaled,
    } = cxloop_metrics::ex::relative_weights_with_intervals(
        &cross_moments(survey, sums),
        cxloop_metrics::ex::BOOTSTRAP_DRAWS,
    )?;
    let mut weights: Vec<(String, Estimate, Estimate)> = survey
        .drivers()
        .into_iter()
        .zip(raw.into_iter().zip(rescaled))
        .map(|(d, (r, s))| (d, r, s))
        .collect();
    weights.sort_by(|a, b| b.1.value.total_cmp(&a.1.value).then_with(|| a.0.cmp(&b.0)));
    Some(Impact { r_squared, weights })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Question, Submission, contribution};

    fn survey() -> SurveyDef {
        let q = |key: &str, kind, driver: &str, engagement| Question {
            key: key.into(),
            text: key.into(),
            kind,
            driver: driver.into(),
            engagement,
        };
        SurveyDef {
            id: "s".into(),
            questions: vec![
                q("e1", QuestionKind::Likert, "engagement", true),
                q("m1", QuestionKind::Likert, "manager", false),
                q("enps", QuestionKind::Enps, "", false),
            ],
        }
    }

    fn sums_of(rows: &[(i32, i32, i32)]) -> GroupSums {
        let s = survey();
        let mut g = GroupSums::default();
        for (e1, m1, enps) in rows {
            let c = contribution(
                &s,
                &Submission {
                    scores: vec![
                        ("e1".into(), *e1),
                        ("m1".into(), *m1),
                        ("enps".into(), *enps),
                    ],
                    comments: vec![],
                },
            );
            for (m, score) in c.tallies {
                g.tallies.entry(m).or_insert([0; 11])[score as usize] += 1;
            }
            for (st, v) in c.moments.into_iter().chain(c.cross) {
                *g.moments.entry(st).or_default() += v;
            }
        }
        g
    }

    #[test]
    fn headline_from_sums() {
        // Five respondents: e1 = [5,4,3,2,4] → engaged shares [1,1,0,0,1] → index 60;
        // m1 = [4,4,2,1,5] → manager favourable 0.6; eNPS [10,9,7,3,9] → 3 promoters, 1
        // detractor → 40.
        let g = sums_of(&[(5, 4, 10), (4, 4, 9), (3, 2, 7), (2, 1, 3), (4, 5, 9)]);
        let h = headline(&survey(), &g, 8);
        assert_eq!(g.respondents(), 5);
        assert_eq!(h.response_rate.value, 5.0 / 8.0);
        let e = h.engagement.unwrap_or_else(|| panic!("engagement"));
        assert!((e.value - 60.0).abs() < 1e-9);
        assert!(e.low >= 0.0 && e.high <= 100.0);
        assert!((h.enps.map_or(0.0, |e| e.value) - 40.0).abs() < 1e-9);
        assert_eq!(h.drivers[1].0, "manager");
        assert!((h.drivers[1].1.value - 0.6).abs() < 1e-12);
        let q = questions(&survey(), &g);
        assert_eq!(q[0].favourable_count, (3, 5));
        assert!((q[2].unfavourable.value - 0.2).abs() < 1e-12);
        // Sums of parts are the sums of the whole.
        let mut a = sums_of(&[(5, 4, 10), (4, 4, 9)]);
        a.merge(&sums_of(&[(3, 2, 7), (2, 1, 3), (4, 5, 9)]));
        assert_eq!(headline(&survey(), &a, 8), h);
    }
}
