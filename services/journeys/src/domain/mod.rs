//! The journey service's rules, free of transport and storage: journey maps and their
//! revisions, dated ownership, KPI targets and scorecard status, the improvement backlog and
//! its capacity. The api module turns requests into these types; the store keeps them.

pub mod backlog;
pub mod kpi;
pub mod map;
pub mod ownership;

use serde::{Deserialize, Serialize};

/// What an owner, a KPI or a backlog item is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// The whole tenant.
    Tenant,
    /// A journey.
    Journey(String),
    /// A stage of a journey.
    Stage {
        /// The journey.
        journey: String,
        /// The stage.
        stage: String,
    },
    /// A touchpoint of the feedback service.
    Touchpoint(String),
}

impl Subject {
    /// The stored form, also used in filters: "tenant", "journey:ID", "stage:JID/SID",
    /// "touchpoint:ID".
    pub fn key(&self) -> String {
        match self {
            Subject::Tenant => "tenant".into(),
            Subject::Journey(j) => format!("journey:{j}"),
            Subject::Stage { journey, stage } => format!("stage:{journey}/{stage}"),
            Subject::Touchpoint(t) => format!("touchpoint:{t}"),
        }
    }

    /// Parses the stored form.
    pub fn from_key(key: &str) -> Option<Self> {
        if key == "tenant" {
            return Some(Subject::Tenant);
        }
        let (kind, rest) = key.split_once(':')?;
        match kind {
            "journey" => Some(Subject::Journey(rest.into())),
            "touchpoint" => Some(Subject::Touchpoint(rest.into())),
            "stage" => {
                let (journey, stage) = rest.split_once('/')?;
                Some(Subject::Stage {
                    journey: journey.into(),
                    stage: stage.into(),
                })
            }
            _ => None,
        }
    }

    /// The journey it belongs to, if any.
    pub fn journey(&self) -> Option<&str> {
        match self {
            Subject::Journey(j) | Subject::Stage { journey: j, .. } => Some(j),
            _ => None,
        }
    }
}

pub use cxloop_platform::error::check_len;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_keys_round_trip() {
        for s in [
            Subject::Tenant,
            Subject::Journey("j1".into()),
            Subject::Stage {
                journey: "j1".into(),
                stage: "s1".into(),
            },
            Subject::Touchpoint("t1".into()),
        ] {
            assert_eq!(Subject::from_key(&s.key()), Some(s));
        }
        assert_eq!(Subject::from_key("stage:nojourney"), None);
        assert_eq!(Subject::from_key("planet:x"), None);
    }
}
