//! The EX domain: survey definitions and their rules, what one anonymous submission adds to
//! its groups' sums, the org tree's rules, action plan states, and (in [`anonymity`]) which
//! groups a result may show. No tonic, no sea-orm: the API layer turns requests into these
//! types once and the store persists them.

pub mod anonymity;
pub mod results;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Why a text with U+0000 is refused: PostgreSQL cannot store it, and refused here it names
/// its field on either database.
const NUL_REFUSED: &str = "must not contain the NUL character (U+0000)";

/// Default anonymity threshold of a tenant.
pub const DEFAULT_THRESHOLD: u32 = 5;
/// No tenant may go below this: with 2 respondents, each knows the other's answers.
pub const MIN_THRESHOLD: u32 = 3;
/// Highest threshold accepted.
pub const MAX_THRESHOLD: u32 = 100;
/// Comments need at least this many respondents in the group.
pub const COMMENTS_MIN: u64 = 10;
/// Driver impact needs at least this many respondents.
pub const IMPACT_MIN: u64 = 25;

/// How a question is answered. The numbers are the wire values of `QuestionKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuestionKind {
    /// Agreement 1-5; favourable 4-5.
    Likert,
    /// 0-10 recommendation of the workplace.
    Enps,
    /// Free text.
    Comment,
}

impl QuestionKind {
    /// From the wire value; None for unspecified or unknown values.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Likert,
            2 => Self::Enps,
            3 => Self::Comment,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> i32 {
        match self {
            Self::Likert => 1,
            Self::Enps => 2,
            Self::Comment => 3,
        }
    }
}

/// One question, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Stable key.
    pub key: String,
    /// Text shown.
    pub text: String,
    /// How it is answered.
    pub kind: QuestionKind,
    /// Driver (Likert only).
    pub driver: String,
    /// Part of the engagement index.
    pub engagement: bool,
}

fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks a survey's questions; violations are (path relative to `survey.questions`, reason).
pub fn check_questions(qs: &[Question]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if qs.is_empty() || qs.len() > 100 {
        // Said once, without looking at each: a request of a million questions would
        // otherwise cost a million violations and a quadratic scan for repeated keys.
        v.push((
            "survey.questions".into(),
            "must have 1-100 questions".into(),
        ));
        return v;
    }
    for (i, q) in qs.iter().enumerate() {
        let at = |f: &str| format!("survey.questions[{i}].{f}");
        if !is_key(&q.key) {
            v.push((
                at("key"),
                "must be 1-64 characters of a-z, 0-9, '_' or '-'".into(),
            ));
        } else if qs[..i].iter().any(|o| o.key == q.key) {
            v.push((at("key"), format!("duplicate key {:?}", q.key)));
        }
        let n = q.text.chars().count();
        if n == 0 || n > 500 {
            v.push((at("text"), "must be 1-500 characters".into()));
        } else if q.text.contains('\0') {
            v.push((at("text"), NUL_REFUSED.into()));
        }
        match q.kind {
            QuestionKind::Likert if !is_key(&q.driver) => v.push((
                at("driver"),
                "a Likert question needs a driver of 1-64 characters of a-z, 0-9, '_' or '-'"
                    .into(),
            )),
            QuestionKind::Enps | QuestionKind::Comment if !q.driver.is_empty() => v.push((
                at("driver"),
                "only Likert questions belong to a driver".into(),
            )),
            _ => {}
        }
        if q.engagement && q.kind != QuestionKind::Likert {
            v.push((
                at("engagement"),
                "only Likert questions count for engagement".into(),
            ));
        }
        if q.kind == QuestionKind::Enps && qs[..i].iter().any(|o| o.kind == QuestionKind::Enps) {
            v.push((at("kind"), "a survey has at most one eNPS question".into()));
        }
    }
    let likert = qs.iter().any(|q| q.kind == QuestionKind::Likert);
    if likert && !qs.iter().any(|q| q.engagement) {
        v.push((
            "survey.questions".into(),
            "a survey with Likert questions needs at least one engagement question".into(),
        ));
    }
    if !qs.is_empty() && qs.iter().all(|q| q.kind == QuestionKind::Comment) {
        v.push((
            "survey.questions".into(),
            "a survey needs at least one Likert or eNPS question".into(),
        ));
    }
    v
}

/// A survey's definition, as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyDef {
    /// Id.
    pub id: String,
    /// Questions in order.
    pub questions: Vec<Question>,
}

impl SurveyDef {
    /// Drivers in order of first appearance.
    pub fn drivers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for q in &self.questions {
            if q.kind == QuestionKind::Likert && !out.contains(&q.driver) {
                out.push(q.driver.clone());
            }
        }
        out
    }

    /// The eNPS question's key, if any.
    pub fn enps_key(&self) -> Option<&str> {
        self.questions
            .iter()
            .find(|q| q.kind == QuestionKind::Enps)
            .map(|q| q.key.as_str())
    }

    /// True when the survey has engagement questions (so an engagement index).
    pub fn has_engagement(&self) -> bool {
        self.questions.iter().any(|q| q.engagement)
    }

    /// Keys of the questions whose answers are counted (Likert and eNPS).
    pub fn scored_keys(&self) -> impl Iterator<Item = &str> {
        self.questions
            .iter()
            .filter(|q| q.kind != QuestionKind::Comment)
            .map(|q| q.key.as_str())
    }

    /// Every sum a cycle of this survey keeps per group: tally measures (the respondent count
    /// "n" and one histogram per scored question) and moment statistics (see [`Contribution`]).
    /// `cross` adds the driver-impact sums, kept only for units without a demographic value.
    pub fn sum_names(&self, cross: bool) -> (Vec<String>, Vec<String>) {
        let mut measures = vec![RESPONDENTS.to_string()];
        measures.extend(self.scored_keys().map(str::to_owned));
        let mut stats = Vec::new();
        if self.has_engagement() {
            stats.push(ENGAGEMENT_SUM.to_string());
            stats.push(ENGAGEMENT_SQ.to_string());
        }
        let drivers = self.drivers();
        for d in &drivers {
            stats.push(driver_stat(d, false));
            stats.push(driver_stat(d, true));
        }
        if cross && self.has_engagement() && !drivers.is_empty() {
            let p = drivers.len() + 1;
            for i in 0..p {
                stats.push(format!("z:{i}"));
                for j in i..p {
                    stats.push(format!("zz:{i}:{j}"));
                }
            }
        }
        (measures, stats)
    }
}

/// The tally measure that counts respondents (in h0).
pub const RESPONDENTS: &str = "n";
/// Moment: Σ of respondents' engagement scores (0-100).
pub const ENGAGEMENT_SUM: &str = "e:s";
/// Moment: Σ of squared engagement scores.
pub const ENGAGEMENT_SQ: &str = "e:q";

/// Moment name of a driver's per-respondent favourable share (Σ, or Σ of squares).
pub fn driver_stat(driver: &str, squares: bool) -> String {
    format!("f:{driver}:{}", if squares { "q" } else { "s" })
}

/// One answer's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerValue {
    /// A score.
    Score(i32),
    /// Comment text.
    Text(String),
}

/// A submission checked against its survey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// (question key, score) for every Likert and eNPS question.
    pub scores: Vec<(String, i32)>,
    /// (question key, text) for answered comment questions.
    pub comments: Vec<(String, String)>,
}

/// Checks answers against the survey: every scored question answered once on its scale,
/// comments at most 2000 characters. Field paths are relative to the request.
pub fn check_submission(
    survey: &SurveyDef,
    answers: Vec<(String, AnswerValue)>,
) -> Result<Submission, Vec<(String, String)>> {
    let mut v = Vec::new();
    let mut scores = Vec::new();
    let mut comments = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, (key, value)) in answers.into_iter().enumerate() {
        let Some(q) = survey.questions.iter().find(|q| q.key == key) else {
            v.push((
                format!("answers[{i}].question_key"),
                format!("the survey has no question {key:?}"),
            ));
            continue;
        };
        if seen.contains(&key) {
            v.push((
                format!("answers[{i}].question_key"),
                "answers the same question twice".into(),
            ));
            continue;
        }
        seen.push(key.clone());
        match (q.kind, value) {
            (QuestionKind::Likert, AnswerValue::Score(s)) if (1..=5).contains(&s) => {
                scores.push((key, s))
            }
            (QuestionKind::Enps, AnswerValue::Score(s)) if (0..=10).contains(&s) => {
                scores.push((key, s))
            }
            (QuestionKind::Likert, AnswerValue::Score(_)) => {
                v.push((format!("answers[{i}].score"), "must be 1-5".into()))
            }
            (QuestionKind::Enps, AnswerValue::Score(_)) => {
                v.push((format!("answers[{i}].score"), "must be 0-10".into()))
            }
            (QuestionKind::Comment, AnswerValue::Text(t)) => {
                let n = t.chars().count();
                if n == 0 || n > 2000 {
                    v.push((
                        format!("answers[{i}].text"),
                        "must be 1-2000 characters".into(),
                    ));
                } else if t.contains('\0') {
                    v.push((format!("answers[{i}].text"), NUL_REFUSED.into()));
                } else {
                    comments.push((key, t));
                }
            }
            (QuestionKind::Comment, AnswerValue::Score(_)) => v.push((
                format!("answers[{i}].text"),
                "this is a comment question: send text".into(),
            )),
            (_, AnswerValue::Text(_)) => v.push((
                format!("answers[{i}].score"),
                "this question takes a score, not text".into(),
            )),
        }
    }
    for q in survey
        .questions
        .iter()
        .filter(|q| q.kind != QuestionKind::Comment)
    {
        if !seen.contains(&q.key) {
            v.push((
                "answers".into(),
                format!("question {:?} must be answered", q.key),
            ));
        }
    }
    if v.is_empty() {
        Ok(Submission { scores, comments })
    } else {
        Err(v)
    }
}

/// What one submission adds to the sums of each group it belongs to. Sums are all that is
/// kept of answers, so results of any group are sums of its units' sums.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    /// (tally measure, score): +1 in that histogram column. Includes ("n", 0).
    pub tallies: Vec<(String, i32)>,
    /// (moment stat, amount) kept for every group (with and without demographic value).
    pub moments: Vec<(String, f64)>,
    /// (moment stat, amount) kept only for groups without a demographic value: the sums of
    /// the vector z = (engagement, driver means…) and of its products, for driver impact.
    pub cross: Vec<(String, f64)>,
}

/// The per-respondent scores of a submission, and what they add to the sums.
///
/// - engagement score: 100 × the share of the respondent's engagement answers that are
///   favourable (4-5);
/// - per driver: the share of the respondent's answers to the driver's questions that are
///   favourable (its mean over respondents is the driver's favourable share), and the mean
///   score 1-5 of those answers (the predictor in driver impact).
pub fn contribution(survey: &SurveyDef, s: &Submission) -> Contribution {
    let score_of: HashMap<&str, i32> = s.scores.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut tallies = vec![(RESPONDENTS.to_string(), 0)];
    tallies.extend(s.scores.iter().cloned());
    let mut moments = Vec::new();
    let mut eng = (0u32, 0u32);
    let drivers = survey.drivers();
    let mut per_driver: Vec<(u32, u32, i32)> = vec![(0, 0, 0); drivers.len()];
    for q in &survey.questions {
        let Some(score) = score_of.get(q.key.as_str()).copied() else {
            continue;
        };
        if q.kind != QuestionKind::Likert {
            continue;
        }
        let fav = u32::from(score >= 4);
        if q.engagement {
            eng.0 += fav;
            eng.1 += 1;
        }
        if let Some(i) = drivers.iter().position(|d| *d == q.driver) {
            per_driver[i].0 += fav;
            per_driver[i].1 += 1;
            per_driver[i].2 += score;
        }
    }
    let e = (eng.1 > 0).then(|| 100.0 * f64::from(eng.0) / f64::from(eng.1));
    if let Some(e) = e {
        moments.push((ENGAGEMENT_SUM.to_string(), e));
        moments.push((ENGAGEMENT_SQ.to_string(), e * e));
    }
    let mut z = Vec::with_capacity(drivers.len() + 1);
    z.push(e.unwrap_or_default());
    for (d, (fav, n, sum)) in drivers.iter().zip(&per_driver) {
        let f = if *n > 0 {
            f64::from(*fav) / f64::from(*n)
        } else {
            0.0
        };
        moments.push((driver_stat(d, false), f));
        moments.push((driver_stat(d, true), f * f));
        z.push(if *n > 0 {
            f64::from(*sum) / f64::from(*n)
        } else {
            0.0
        });
    }
    let mut cross = Vec::new();
    if e.is_some() && !drivers.is_empty() {
        for i in 0..z.len() {
            cross.push((format!("z:{i}"), z[i]));
            for j in i..z.len() {
                cross.push((format!("zz:{i}:{j}"), z[i] * z[j]));
            }
        }
    }
    Contribution {
        tallies,
        moments,
        cross,
    }
}

/// Where an employee is in the lifecycle. The numbers are the wire values.
pub fn check_stage(code: i32) -> bool {
    (1..=5).contains(&code)
}

/// The stages a cycle invites when none are named: onboarding and employed.
pub const DEFAULT_STAGES: [i32; 2] = [2, 3];

/// The state of an action plan, by wire value: 1 planned, 2 in progress, 3 done, 4 cancelled.
pub fn action_plan_transition_ok(from: i32, to: i32) -> bool {
    from == to || matches!((from, to), (1, 2) | (1, 3) | (2, 3) | (1, 4) | (2, 4))
}

/// One dated parent link of a unit: under `parent` ("" for a root) from `from` (µs,
/// inclusive) until `to` (exclusive; `None` while it is the unit's latest link).
#[derive(Clone, Debug)]
struct Link {
    parent: String,
    from: i64,
    to: Option<i64>,
}

/// Every unit's dated parent links, as stored. A move may be dated in the future, so the tree
/// is not one tree but one per moment some unit moves; a change is checked against each.
#[derive(Clone, Debug, Default)]
pub struct Links {
    by_unit: HashMap<String, Vec<Link>>,
}

impl Links {
    /// Adds a stored link.
    pub fn add(&mut self, unit: &str, parent: &str, from: i64, to: Option<i64>) {
        self.by_unit.entry(unit.to_owned()).or_default().push(Link {
            parent: parent.to_owned(),
            from,
            to,
        });
    }

    /// The unit's latest link: (parent, since).
    pub fn latest(&self, unit: &str) -> Option<(&str, i64)> {
        self.by_unit
            .get(unit)?
            .iter()
            .find(|l| l.to.is_none())
            .map(|l| (l.parent.as_str(), l.from))
    }

    fn link_at(&self, unit: &str, at: i64) -> Option<&Link> {
        self.by_unit
            .get(unit)?
            .iter()
            .find(|l| l.from <= at && l.to.is_none_or(|t| t > at))
    }

    /// True when putting `unit` under `parent` from `from` on would make it its own ancestor
    /// at any moment from then. (Checking only the latest tree let a move effective now close
    /// a loop with another unit's move planned for later, and a cycle launched in between
    /// would have walked that loop.) The chain above `parent` is walked at `from`, then again
    /// each time one of the links it went through ends, so the cost is the chain's changes
    /// times its length, not the organisation's history.
    pub fn move_makes_cycle(&self, unit: &str, parent: &str, from: i64) -> bool {
        let mut at = from;
        loop {
            let mut next_change: Option<i64> = None;
            let mut here = parent;
            let mut steps = 0usize;
            while !here.is_empty() {
                if here == unit {
                    return true;
                }
                steps += 1;
                if steps > self.by_unit.len() + 1 {
                    // Already a loop further up; refuse rather than walk it.
                    return true;
                }
                let Some(link) = self.link_at(here, at) else {
                    break;
                };
                if let Some(to) = link.to {
                    next_change = Some(next_change.map_or(to, |n| n.min(to)));
                }
                here = &link.parent;
            }
            match next_change {
                Some(t) if t > at => at = t,
                _ => return false,
            }
        }
    }

    /// Moves `unit` under `parent` from `from`: its latest link ends there.
    pub fn apply_move(&mut self, unit: &str, parent: &str, from: i64) {
        let links = self.by_unit.entry(unit.to_owned()).or_default();
        for l in links.iter_mut().filter(|l| l.to.is_none()) {
            l.to = Some(from);
        }
        links.push(Link {
            parent: parent.to_owned(),
            from,
            to: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(key: &str, kind: QuestionKind, driver: &str, engagement: bool) -> Question {
        Question {
            key: key.into(),
            text: format!("Question {key}"),
            kind,
            driver: driver.into(),
            engagement,
        }
    }

    fn survey() -> SurveyDef {
        SurveyDef {
            id: "s".into(),
            questions: vec![
                q("proud", QuestionKind::Likert, "engagement", true),
                q("stay", QuestionKind::Likert, "engagement", true),
                q("mgr1", QuestionKind::Likert, "manager", false),
                q("mgr2", QuestionKind::Likert, "manager", false),
                q("enps", QuestionKind::Enps, "", false),
                q("why", QuestionKind::Comment, "", false),
            ],
        }
    }

    #[test]
    fn too_many_questions_are_refused_once_without_looking_at_each() {
        let many = vec![q("same", QuestionKind::Enps, "x", true); 100_000];
        let v = check_questions(&many);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "survey.questions");
    }

    #[test]
    fn question_rules() {
        assert!(check_questions(&survey().questions).is_empty());
        let bad = vec![
            q("a", QuestionKind::Likert, "", true),
            q("a", QuestionKind::Enps, "x", false),
            q("e2", QuestionKind::Enps, "", true),
        ];
        let fields: Vec<String> = check_questions(&bad).into_iter().map(|v| v.0).collect();
        assert!(fields.contains(&"survey.questions[0].driver".to_string()));
        assert!(fields.contains(&"survey.questions[1].key".to_string()));
        assert!(fields.contains(&"survey.questions[1].driver".to_string()));
        assert!(fields.contains(&"survey.questions[2].engagement".to_string()));
        assert!(fields.contains(&"survey.questions[2].kind".to_string()));
        let no_engagement = vec![q("m", QuestionKind::Likert, "manager", false)];
        assert_eq!(check_questions(&no_engagement).len(), 1);
    }

    #[test]
    fn submission_must_answer_every_scored_question_on_its_scale() {
        let s = survey();
        let ok = vec![
            ("proud".to_string(), AnswerValue::Score(5)),
            ("stay".into(), AnswerValue::Score(3)),
            ("mgr1".into(), AnswerValue::Score(4)),
            ("mgr2".into(), AnswerValue::Score(2)),
            ("enps".into(), AnswerValue::Score(9)),
            ("why".into(), AnswerValue::Text("Good team".into())),
        ];
        let sub = check_submission(&s, ok.clone()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(sub.comments.len(), 1);
        let mut bad = ok.clone();
        bad[0].1 = AnswerValue::Score(6);
        bad[4].1 = AnswerValue::Score(11);
        bad.remove(3);
        let errs = check_submission(&s, bad).err().unwrap_or_default();
        let fields: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            fields,
            vec!["answers[0].score", "answers[3].score", "answers"]
        );
    }

    #[test]
    fn contribution_is_per_respondent_shares_and_means() {
        let s = survey();
        let sub = Submission {
            scores: vec![
                ("proud".into(), 5),
                ("stay".into(), 3),
                ("mgr1".into(), 4),
                ("mgr2".into(), 2),
                ("enps".into(), 9),
            ],
            comments: vec![],
        };
        let c = contribution(&s, &sub);
        assert!(c.tallies.contains(&("n".into(), 0)));
        assert!(c.tallies.contains(&("enps".into(), 9)));
        let m: HashMap<String, f64> = c.moments.into_iter().collect();
        // Engagement: 1 of 2 favourable → 50.
        assert_eq!(m["e:s"], 50.0);
        assert_eq!(m["e:q"], 2500.0);
        // Manager: 1 of 2 favourable.
        assert_eq!(m["f:manager:s"], 0.5);
        let x: HashMap<String, f64> = c.cross.into_iter().collect();
        // z = (50, engagement-driver mean 4, manager mean 3).
        assert_eq!(x["z:0"], 50.0);
        assert_eq!(x["z:2"], 3.0);
        assert_eq!(x["zz:0:2"], 150.0);
        let (measures, stats) = s.sum_names(true);
        assert_eq!(measures.len(), 6);
        assert!(stats.contains(&"zz:2:2".to_string()));
    }

    #[test]
    fn cycles_in_the_tree_are_found() {
        let mut links = Links::default();
        for (u, p) in [("a", ""), ("b", "a"), ("c", "b")] {
            links.add(u, p, i64::MIN / 2, None);
        }
        assert!(links.move_makes_cycle("a", "c", 0));
        assert!(links.move_makes_cycle("b", "b", 0));
        assert!(!links.move_makes_cycle("c", "a", 0));
        assert!(!links.move_makes_cycle("new", "c", 0));
    }

    #[test]
    fn a_move_now_cannot_close_a_loop_with_a_move_planned_for_later() {
        let (now, later) = (1_000, 2_000);
        let mut links = Links::default();
        links.add("b", "", 0, None);
        links.add("a", "b", 0, None);
        // A leaves B for the top of the tree later.
        assert!(!links.move_makes_cycle("a", "", later));
        links.apply_move("a", "", later);
        assert_eq!(links.latest("a"), Some(("", later)));
        // In the latest tree A is a root, so B under A looks fine there; but between now and
        // later A is still under B.
        assert!(links.move_makes_cycle("b", "a", now));
        // From later on, B may go under A.
        assert!(!links.move_makes_cycle("b", "a", later + 1));
        assert_eq!(
            links.link_at("a", now).map(|l| l.parent.as_str()),
            Some("b")
        );
        assert_eq!(
            links.link_at("a", later).map(|l| l.parent.as_str()),
            Some("")
        );
        // A unit's own loop is refused at once.
        assert!(links.move_makes_cycle("b", "b", now));
        // The chain above the new parent is walked again when one of its links ends: x under
        // a is fine today, but a goes under d later, and d is under x.
        let mut links = Links::default();
        for (u, p) in [("x", ""), ("a", ""), ("d", "x")] {
            links.add(u, p, i64::MIN / 2, None);
        }
        links.apply_move("a", "d", later);
        assert!(links.move_makes_cycle("x", "a", now));
        assert!(links.move_makes_cycle("x", "d", now));
        assert!(!links.move_makes_cycle("a", "x", now));
        // Many dated moves elsewhere: a new unit under x is checked along x's chain only.
        for i in 0..10_000i64 {
            links.add(&format!("u{i}"), "", i64::MIN / 2, Some(i));
            links.add(&format!("u{i}"), "x", i, None);
        }
        assert!(!links.move_makes_cycle("new", "x", i64::MIN / 2));
    }

    #[test]
    fn action_plans_move_forward_only() {
        assert!(action_plan_transition_ok(1, 2));
        assert!(action_plan_transition_ok(2, 3));
        assert!(!action_plan_transition_ok(3, 2));
        assert!(!action_plan_transition_ok(4, 1));
        assert!(action_plan_transition_ok(2, 4));
    }
}
