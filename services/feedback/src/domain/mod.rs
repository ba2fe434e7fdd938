//! The feedback domain: questions and their scales, surveys, responses as validated values,
//! slices, and which metrics a question kind has. No tonic, no sea-orm: the API layer turns
//! requests into these types once, and the store persists them.

pub mod metrics;

use serde::{Deserialize, Serialize};

/// Most points a scale may have (0-10 is 11 points). Rollups keep one count per point, so
/// every metric of any slice comes from a fixed-width row.
pub const MAX_SCALE_POINTS: i32 = 11;
/// Largest absolute value of a custom rating scale's bounds.
pub const MAX_RATING_BOUND: i32 = 1_000_000;

/// What a question measures. The numbers are the wire values of `QuestionKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuestionKind {
    /// 0-10 likelihood to recommend.
    Nps,
    /// 1-5 satisfaction.
    Csat,
    /// 1-7 customer effort ("made it easy").
    Ces,
    /// Integer rating on its own scale.
    Rating,
    /// Free text.
    Text,
}

impl QuestionKind {
    /// From the wire value; None for unspecified or unknown values.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Nps,
            2 => Self::Csat,
            3 => Self::Ces,
            4 => Self::Rating,
            5 => Self::Text,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> i32 {
        match self {
            Self::Nps => 1,
            Self::Csat => 2,
            Self::Ces => 3,
            Self::Rating => 4,
            Self::Text => 5,
        }
    }
}

/// One question of a survey, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Stable key within the survey.
    pub key: String,
    /// Text shown to the customer.
    pub text: String,
    /// What it measures.
    pub kind: QuestionKind,
    /// Lowest score (fixed by kind except for ratings).
    pub min: i32,
    /// Highest score.
    pub max: i32,
    /// Must be answered.
    pub required: bool,
}

impl Question {
    /// Builds a question, fixing the scale of the standard kinds. Errors are (field, reason)
    /// relative to the question.
    pub fn new(
        key: &str,
        text: &str,
        kind: QuestionKind,
        rating_min: i32,
        rating_max: i32,
        required: bool,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut errs = Vec::new();
        if key.is_empty()
            || key.len() > 64
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            errs.push((
                "key",
                "must be 1-64 characters of a-z, 0-9, '_' or '-'".to_string(),
            ));
        }
        let text_len = text.chars().count();
        if text_len == 0 || text_len > 500 {
            errs.push(("text", "must be 1-500 characters".to_string()));
        } else if text.contains('\0') {
            // PostgreSQL cannot store it; refused here it names its field on either database.
            errs.push((
                "text",
                "must not contain the NUL character (U+0000)".to_string(),
            ));
        }
        let (min, max) = match kind {
            QuestionKind::Nps => (0, 10),
            QuestionKind::Csat => (1, 5),
            QuestionKind::Ces => (1, 7),
            QuestionKind::Text => (0, 0),
            QuestionKind::Rating => {
                // Bounded so that arithmetic on scores never nears i32's limits.
                for (field, value) in [("rating_min", rating_min), ("rating_max", rating_max)] {
                    if !(-MAX_RATING_BOUND..=MAX_RATING_BOUND).contains(&value) {
                        errs.push((
                            field,
                            format!("must be between -{MAX_RATING_BOUND} and {MAX_RATING_BOUND}"),
                        ));
                    }
                }
                let span = i64::from(rating_max) - i64::from(rating_min);
                if !(1..=i64::from(MAX_SCALE_POINTS - 1)).contains(&span) {
                    errs.push((
                        "rating_max",
                        format!("a rating scale has 2-{MAX_SCALE_POINTS} points: rating_max - rating_min must be 1-{}", MAX_SCALE_POINTS - 1),
                    ));
                }
                (rating_min, rating_max)
            }
        };
        if errs.is_empty() {
            Ok(Self {
                key: key.to_owned(),
                text: text.to_owned(),
                kind,
                min,
                max,
                required,
            })
        } else {
            Err(errs)
        }
    }

    /// Checks an answer against the question's scale.
    pub fn check(&self, answer: &AnswerValue) -> Result<(), String> {
        match (self.kind, answer) {
            (QuestionKind::Text, AnswerValue::Text(t)) => {
                if t.chars().count() > 5000 {
                    Err("text must be at most 5000 characters".into())
                } else if self.required && t.trim().is_empty() {
                    // Blank text would count as answered and tell nothing.
                    Err(format!(
                        "required question {:?} needs text that is not blank",
                        self.key
                    ))
                } else {
                    Ok(())
                }
            }
            (QuestionKind::Text, AnswerValue::Score(_)) => {
                Err("this is a text question: send text, not a score".into())
            }
            (_, AnswerValue::Text(_)) => Err(format!(
                "this question takes a score {}-{}, not text",
                self.min, self.max
            )),
            (_, AnswerValue::Score(s)) => {
                if (self.min..=self.max).contains(s) {
                    Ok(())
                } else {
                    Err(format!(
                        "score {s} is outside the question's scale {}-{}",
                        self.min, self.max
                    ))
                }
            }
        }
    }
}

/// A survey's definition, as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyDef {
    /// Survey id.
    pub id: String,
    /// Questions in order.
    pub questions: Vec<Question>,
    /// Touchpoints where it is asked.
    pub touchpoint_ids: Vec<String>,
    /// Deleted surveys accept no new responses.
    pub deleted: bool,
}

impl SurveyDef {
    /// The question with this key.
    pub fn question(&self, key: &str) -> Option<&Question> {
        self.questions.iter().find(|q| q.key == key)
    }
}

/// Checks a survey update: questions may be added and reworded, never removed or changed in
/// kind or scale, because stored answers and rollups are keyed by them.
/// The error's subject names the stored question as `questions/{key}`, the same for both
/// kinds of refusal.
pub fn check_question_change(old: &[Question], new: &[Question]) -> Result<(), (String, String)> {
    for q in old {
        match new.iter().find(|n| n.key == q.key) {
            None => {
                return Err((
                    format!("questions/{}", q.key),
                    format!(
                        "question {:?} has answers keyed by it and cannot be removed",
                        q.key
                    ),
                ));
            }
            Some(n) if n.kind != q.kind || n.min != q.min || n.max != q.max => {
                return Err((
                    format!("questions/{}", q.key),
                    format!("question {:?} cannot change its kind or scale", q.key),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One answer's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerValue {
    /// A score on the question's scale.
    Score(i32),
    /// Free text.
    Text(String),
}

/// A response whose shape is valid; checking it against its survey happens at ingest,
/// where the survey's current definition is read in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewResponse {
    /// Client request id, unique per tenant.
    pub request_id: String,
    /// Fingerprint of the request's content, to tell a retry from a reuse.
    pub request_hash: String,
    /// Survey id.
    pub survey_id: String,
    /// Touchpoint id.
    pub touchpoint_id: String,
    /// When the contact happened, microseconds since the epoch (UTC).
    pub occurred_at_us: i64,
    /// Channel wire value (validated).
    pub channel: i32,
    /// Org unit, may be empty.
    pub org_unit_id: String,
    /// Segment, may be empty.
    pub segment: String,
    /// Pseudonymous customer key, may be empty.
    pub customer_key: String,
    /// Comment, may be empty.
    pub comment: String,
    /// Answers by question key, in request order.
    pub answers: Vec<(String, AnswerValue)>,
}

impl NewResponse {
    /// Finds the response's survey among `surveys` and checks the response against it and the
    /// live touchpoints: the survey (when found and the response fits it) and the violations.
    pub fn check_in<'s>(
        &self,
        surveys: &'s [SurveyDef],
        live_touchpoints: &[String],
    ) -> (Option<&'s SurveyDef>, Vec<(String, String)>) {
        let survey = surveys.iter().find(|s| s.id == self.survey_id);
        let violations = match survey {
            None => vec![(
                "response.survey_id".to_string(),
                format!("no survey {:?}", self.survey_id),
            )],
            Some(s) => self.check_against(s, live_touchpoints.contains(&self.touchpoint_id)),
        };
        (survey.filter(|_| violations.is_empty()), violations)
    }

    /// Checks the response against its survey. Field paths are relative to the request item.
    pub fn check_against(&self, survey: &SurveyDef, touchpoint_ok: bool) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if survey.deleted {
            v.push(("response.survey_id".into(), "the survey was deleted".into()));
            return v;
        }
        if !survey.touchpoint_ids.contains(&self.touchpoint_id) {
            v.push((
                "response.touchpoint_id".into(),
                "is not one of the survey's touchpoints".into(),
            ));
        } else if !touchpoint_ok {
            v.push((
                "response.touchpoint_id".into(),
                "the touchpoint was deleted".into(),
            ));
        }
        for (i, (key, value)) in self.answers.iter().enumerate() {
            match survey.question(key) {
                None => v.push((
                    format!("response.answers[{i}].question_key"),
                    format!("the survey has no question {key:?}"),
                )),
                Some(q) => {
                    if let Err(e) = q.check(value) {
                        let field = match value {
                            AnswerValue::Score(_) => "score",
                            AnswerValue::Text(_) => "text",
                        };
                        v.push((format!("response.answers[{i}].{field}"), e));
                    }
                }
            }
        }
        for q in survey.questions.iter().filter(|q| q.required) {
            if !self.answers.iter().any(|(k, _)| *k == q.key) {
                v.push((
                    "response.answers".into(),
                    format!("required question {:?} is not answered", q.key),
                ));
            }
        }
        v
    }

    /// Scores by question key (text answers excluded).
    pub fn scores(&self) -> impl Iterator<Item = (&str, i32)> {
        self.answers.iter().filter_map(|(k, v)| match v {
            AnswerValue::Score(s) => Some((k.as_str(), *s)),
            AnswerValue::Text(_) => None,
        })
    }
}

/// The stored key of a single-dimension rollup slice: t (touchpoint), o (org unit),
/// c (channel) or s (segment), a colon, and the value. The all-slice's key is "".
pub fn slice_key(dimension: char, value: impl std::fmt::Display) -> String {
    format!("{dimension}:{value}")
}

/// Which responses a metric covers. Empty fields mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceFilter {
    /// Touchpoint id.
    pub touchpoint_id: String,
    /// Org unit id.
    pub org_unit_id: String,
    /// Channel wire value; 0 means all.
    pub channel: i32,
    /// Segment.
    pub segment: String,
}

impl SliceFilter {
    /// The key of the single-dimension rollup that answers this filter, or None when two or
    /// more dimensions are filtered (then the full-grain rollup answers it).
    pub fn marginal_key(&self) -> Option<String> {
        let set: Vec<String> = [
            (!self.touchpoint_id.is_empty()).then(|| slice_key('t', &self.touchpoint_id)),
            (!self.org_unit_id.is_empty()).then(|| slice_key('o', &self.org_unit_id)),
            (self.channel != 0).then(|| slice_key('c', self.channel)),
            (!self.segment.is_empty()).then(|| slice_key('s', &self.segment)),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.len() {
            0 => Some(String::new()),
            1 => set.into_iter().next(),
            _ => None,
        }
    }

    /// The responses both filters select, or None when none can match both (a dimension
    /// set to two different values).
    pub fn intersect(&self, other: &SliceFilter) -> Option<SliceFilter> {
        fn both<T: PartialEq + Clone>(a: &T, b: &T, all: &T) -> Option<T> {
            match (a == all, b == all) {
                (true, _) => Some(b.clone()),
                (_, true) => Some(a.clone()),
                _ => (a == b).then(|| a.clone()),
            }
        }
        Some(SliceFilter {
            touchpoint_id: both(&self.touchpoint_id, &other.touchpoint_id, &String::new())?,
            org_unit_id: both(&self.org_unit_id, &other.org_unit_id, &String::new())?,
            channel: both(&self.channel, &other.channel, &0)?,
            segment: both(&self.segment, &other.segment, &String::new())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: QuestionKind) -> Question {
        Question::new("q", "How?", kind, 1, 10, false).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_rating_scale_stays_far_from_the_integer_limits() {
        let errs = Question::new(
            "q",
            "How?",
            QuestionKind::Rating,
            2_147_483_640,
            2_147_483_647,
            false,
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, vec!["rating_min", "rating_max"]);
        assert!(
            Question::new(
                "q",
                "How?",
                QuestionKind::Rating,
                -1_000_000,
                -999_990,
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn two_slices_meet_where_no_dimension_disagrees() {
        let tp = |t: &str| SliceFilter {
            touchpoint_id: t.into(),
            ..SliceFilter::default()
        };
        let email = SliceFilter {
            channel: 2,
            ..SliceFilter::default()
        };
        let all = SliceFilter::default();
        assert_eq!(all.intersect(&tp("t1")), Some(tp("t1")));
        assert_eq!(tp("t1").intersect(&all), Some(tp("t1")));
        assert_eq!(tp("t1").intersect(&tp("t1")), Some(tp("t1")));
        assert_eq!(tp("t1").intersect(&tp("t2")), None);
        assert_eq!(
            tp("t1").intersect(&email),
            Some(SliceFilter {
                touchpoint_id: "t1".into(),
                channel: 2,
                ..SliceFilter::default()
            })
        );
        let sms = SliceFilter {
            channel: 3,
            ..SliceFilter::default()
        };
        assert_eq!(email.intersect(&sms), None);
    }

    #[test]
    fn scales_are_fixed_by_kind() {
        assert_eq!(
            (q(QuestionKind::Nps).min, q(QuestionKind::Nps).max),
            (0, 10)
        );
        assert!(q(QuestionKind::Nps).check(&AnswerValue::Score(10)).is_ok());
        assert!(q(QuestionKind::Nps).check(&AnswerValue::Score(11)).is_err());
        assert!(q(QuestionKind::Csat).check(&AnswerValue::Score(0)).is_err());
        assert!(q(QuestionKind::Ces).check(&AnswerValue::Score(7)).is_ok());
        assert!(
            q(QuestionKind::Rating)
                .check(&AnswerValue::Score(10))
                .is_ok()
        );
        assert!(q(QuestionKind::Text).check(&AnswerValue::Score(1)).is_err());
        assert!(Question::new("r", "x", QuestionKind::Rating, 5, 5, false).is_err());
        assert!(Question::new("Bad Key", "x", QuestionKind::Nps, 0, 0, false).is_err());
    }

    #[test]
    fn a_question_cannot_change_kind_or_disappear() {
        let old = vec![q(QuestionKind::Nps)];
        assert!(check_question_change(&old, &[q(QuestionKind::Csat)]).is_err());
        assert!(check_question_change(&old, &[]).is_err());
        let mut reworded = q(QuestionKind::Nps);
        reworded.text = "Would you recommend us?".into();
        assert!(check_question_change(&old, &[reworded]).is_ok());
    }

    #[test]
    fn a_required_text_question_needs_text() {
        let why = Question::new("why", "Why?", QuestionKind::Text, 0, 0, true)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let note = Question::new("note", "Anything else?", QuestionKind::Text, 0, 0, false)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let survey = SurveyDef {
            id: "s".into(),
            questions: vec![why, note],
            touchpoint_ids: vec!["t".into()],
            deleted: false,
        };
        let with = |why: &str, note: &str| NewResponse {
            request_id: "r".into(),
            request_hash: String::new(),
            survey_id: "s".into(),
            touchpoint_id: "t".into(),
            occurred_at_us: 0,
            channel: 1,
            org_unit_id: String::new(),
            segment: String::new(),
            customer_key: String::new(),
            comment: String::new(),
            answers: vec![
                ("why".into(), AnswerValue::Text(why.into())),
                ("note".into(), AnswerValue::Text(note.into())),
            ],
        };
        assert!(
            with("Friendly staff", "")
                .check_against(&survey, true)
                .is_empty()
        );
        let blank = with(" \n\t", "");
        let v = blank.check_against(&survey, true);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "response.answers[0].text");
    }

    #[test]
    fn marginal_key_only_for_zero_or_one_dimension() {
        let mut f = SliceFilter::default();
        assert_eq!(f.marginal_key(), Some(String::new()));
        f.channel = 3;
        assert_eq!(f.marginal_key(), Some("c:3".into()));
        f.segment = "family".into();
        assert_eq!(f.marginal_key(), None);
    }
}
