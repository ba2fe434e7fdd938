//! The `feedback.responses.recorded` event: stored as a reference, published in full.
//!
//! Each committed batch of responses leaves one outbox row. The row does not repeat the
//! responses (that doubled the bytes a bulk import wrote and fsynced, on the one thread every
//! write passes: a fifth to a quarter of its time): it stores their ids,
//! `{"response_ids":["…","…"]}`. The dispatcher publishes
//! `{"responses":[{"response_id":…, "survey_id":…, "touchpoint_id":…, "occurred_at_us":…,
//! "channel":…, "org_unit_id":…, "segment":…, "scores":{question key: score}}, …]}` in the
//! order of the ids. [`RecordedExpander`] gets that payload from [`RecentPayloads`], where the
//! writer leaves it after the commit, and otherwise (after a restart, or when the dispatcher
//! has fallen far behind) reads the responses back; responses are never changed or deleted
//! after they are stored, so both give what the batch stored. Reading them back for every
//! batch would cost more than storing the payload did (sqlx hands SQLite rows over one by
//! one). Rows in the old form (the full payload) pass through unchanged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cxloop_platform::db::stmt;
use cxloop_platform::outbox::{Event, EventExpander, PublishFuture};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult};

use super::ingest::RESPONSES_RECORDED;

const REFERENCE_PREFIX: &str = "{\"response_ids\":[";

/// The stored payload for a batch with these response ids (ids contain nothing JSON would
/// escape: they are UUIDs).
pub(crate) fn reference<'i>(ids: impl ExactSizeIterator<Item = &'i str>) -> String {
    let mut out = String::with_capacity(REFERENCE_PREFIX.len() + 2 + ids.len() * 39);
    out.push_str(REFERENCE_PREFIX);
    for (i, id) in ids.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(id);
        out.push('"');
    }
    out.push_str("]}");
    out
}

#[derive(serde::Deserialize)]
struct Reference {
    response_ids: Vec<String>,
}

/// The ids of a stored reference, or None for a payload in the full form.
fn referenced_ids(e: &Event) -> Option<Vec<String>> {
    if e.topic != RESPONSES_RECORDED || !e.payload.starts_with(REFERENCE_PREFIX) {
        return None;
    }
    serde_json::from_str::<Reference>(&e.payload)
        .ok()
        .map(|r| r.response_ids)
}

/// One response's entry in the published event, without its `response_id`, which
/// [`event_entry`] writes first: the request tasks encode this much before the writer has
/// given the response its id. The one definition of the entry's fields, for the payload the
/// writer hands over and for the one read back.
#[derive(serde::Serialize)]
pub(super) struct RecordedEvent<'a> {
    pub(super) survey_id: &'a str,
    pub(super) touchpoint_id: &'a str,
    pub(super) occurred_at_us: i64,
    pub(super) channel: i32,
    pub(super) org_unit_id: &'a str,
    pub(super) segment: &'a str,
    pub(super) scores: BTreeMap<&'a str, i32>,
}

impl RecordedEvent<'_> {
    /// Appends the entry's JSON object without its opening brace (see [`event_entry`]),
    /// encoding through `scratch`.
    pub(super) fn write_rest(&self, out: &mut String, scratch: &mut Vec<u8>) -> Result<(), String> {
        scratch.clear();
        serde_json::to_writer(&mut *scratch, self).map_err(|e| e.to_string())?;
        let json = std::str::from_utf8(scratch).map_err(|e| e.to_string())?;
        out.push_str(json.strip_prefix('{').unwrap_or(json));
        Ok(())
    }
}

/// Appends one response's entry of the batch event: `{"response_id":"<id>",` and the rest
/// from [`RecordedEvent::write_rest`] (ids contain nothing JSON would escape).
pub(super) fn event_entry(out: &mut String, id: &str, rest: &str) {
    out.push_str("{\"response_id\":\"");
    out.push_str(id);
    out.push_str("\",");
    out.push_str(rest);
}

/// The published payload, `{"responses": [entries]}`, from (id, rest) pairs.
pub(super) fn batch_payload<'e>(
    entries: impl Iterator<Item = (&'e str, &'e str)> + Clone,
) -> String {
    let size: usize = entries
        .clone()
        .map(|(id, rest)| 20 + id.len() + rest.len())
        .sum();
    let mut payload = String::with_capacity(16 + size);
    payload.push_str("{\"responses\":[");
    for (i, (id, rest)) in entries.enumerate() {
        if i > 0 {
            payload.push(',');
        }
        event_entry(&mut payload, id, rest);
    }
    payload.push_str("]}");
    payload
}

/// A stored answer as far as the event needs it (see `answers_json`).
#[derive(serde::Deserialize)]
struct StoredAnswer<'a> {
    #[serde(borrow)]
    k: std::borrow::Cow<'a, str>,
    s: Option<i32>,
}

const COLUMNS: &str =
    "id, survey_id, touchpoint_id, occurred_at, channel, org_unit_id, segment, answers";

/// A stored response's (id, entry without id) from a row of [`COLUMNS`].
fn stored_entry(r: &QueryResult, scratch: &mut Vec<u8>) -> Result<(String, String), String> {
    let get_s = |i| r.try_get_by_index::<String>(i).map_err(|e| e.to_string());
    let get_i = |i| r.try_get_by_index::<i64>(i).map_err(|e| e.to_string());
    let (survey_id, touchpoint_id, org_unit_id, segment) =
        (get_s(1)?, get_s(2)?, get_s(5)?, get_s(6)?);
    let answers = get_s(7)?;
    let stored: Vec<StoredAnswer<'_>> = serde_json::from_str(&answers)
        .map_err(|e| format!("stored answers cannot be read: {e}"))?;
    let mut rest = String::new();
    RecordedEvent {
        survey_id: &survey_id,
        touchpoint_id: &touchpoint_id,
        occurred_at_us: get_i(3)?,
        channel: i32::try_from(get_i(4)?).map_err(|e| e.to_string())?,
        org_unit_id: &org_unit_id,
        segment: &segment,
        scores: stored
            .iter()
            .filter_map(|a| Some((a.k.as_ref(), a.s?)))
            .collect(),
    }
    .write_rest(&mut rest, scratch)?;
    Ok((get_s(0)?, rest))
}

/// The published payload: the entries of `ids` found among `stored` ((id, rest) pairs), in
/// the order of `ids`. Others are left out: the read covers the ids' range, and on a
/// database shared by several writers another batch's responses can fall inside it.
fn payload(ids: &[String], stored: &[(String, String)]) -> String {
    let by_id: HashMap<&str, &str> = stored
        .iter()
        .map(|(id, rest)| (id.as_str(), rest.as_str()))
        .collect();
    for id in ids.iter().filter(|id| !by_id.contains_key(id.as_str())) {
        tracing::warn!(response_id = %id, "a recorded response was not found for its event");
    }
    batch_payload(
        ids.iter()
            .filter_map(|id| by_id.get(id.as_str()).map(|rest| (id.as_str(), *rest))),
    )
}

/// Most payload bytes [`RecentPayloads`] holds; past this the writer keeps no more until
/// the dispatcher has taken some, and those events are read back instead.
const MAX_RECENT_BYTES: usize = 16 << 20;

/// Published payloads of the events this process's writer committed, by event id, until the
/// dispatcher takes them.
#[derive(Default)]
pub struct RecentPayloads {
    inner: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    /// (event id, payload) in commit order, which is id order.
    entries: VecDeque<(String, String)>,
    bytes: usize,
}

impl RecentPayloads {
    /// Keeps a committed event's published payload, unless the store is full.
    pub(crate) fn keep(&self, event_id: String, payload: String) {
        if let Ok(mut r) = self.inner.lock()
            && r.bytes + payload.len() <= MAX_RECENT_BYTES
        {
            r.bytes += payload.len();
            r.entries.push_back((event_id, payload));
        }
    }

    /// The payload of this event, if kept. Events are published in id order, so what is kept
    /// for an older id will not be asked for again (it was read back instead) and goes.
    fn take(&self, event_id: &str) -> Option<String> {
        let mut r = self.inner.lock().ok()?;
        while let Some((id, _)) = r.entries.front() {
            if id.as_str() > event_id {
                return None;
            }
            let (id, payload) = r.entries.pop_front()?;
            r.bytes -= payload.len();
            if id == event_id {
                return Some(payload);
            }
        }
        None
    }
}

/// Expands stored references into published payloads (see the module docs).
pub struct RecordedExpander {
    recent: Arc<RecentPayloads>,
}

impl RecordedExpander {
    /// An expander that looks in `recent` before reading responses back.
    pub fn new(recent: Arc<RecentPayloads>) -> Self {
        Self { recent }
    }

    async fn expand_one(&self, db: &DatabaseConnection, e: &mut Event) -> Result<(), String> {
        if e.topic != RESPONSES_RECORDED || !e.payload.starts_with(REFERENCE_PREFIX) {
            return Ok(());
        }
        if let Some(payload) = self.recent.take(&e.id) {
            e.payload = payload;
            return Ok(());
        }
        read_back(db, e).await
    }
}

/// Replaces a stored reference by the published payload, from the stored responses.
async fn read_back(db: &DatabaseConnection, e: &mut Event) -> Result<(), String> {
    const EMPTY: &str = "{\"responses\":[]}";
    let Some(ids) = referenced_ids(e) else {
        // A reference that does not parse cannot be expanded, now or later; publishing it as
        // stored would hand consumers the wrong shape under this topic.
        tracing::error!(event_id = %e.id, "an outbox reference cannot be read; published without responses");
        e.payload = EMPTY.into();
        return Ok(());
    };
    let (Some(low), Some(high)) = (ids.iter().min(), ids.iter().max()) else {
        e.payload = EMPTY.into();
        return Ok(());
    };
    // A database error is retried with the whole group; a row that cannot be decoded never
    // will be, so it is left out (and logged) instead of holding up every later event.
    let rows = db
        .query_all_raw(stmt(
            db.get_database_backend(),
            &format!(
                "SELECT {COLUMNS} FROM fb_responses WHERE tenant_id = ? AND id >= ? AND id <= ? ORDER BY id"
            ),
            vec![e.tenant.clone().into(), low.clone().into(), high.clone().into()],
        ))
        .await
        .map_err(|err| err.to_string())?;
    let mut scratch = Vec::with_capacity(512);
    let stored: Vec<(String, String)> = rows
        .iter()
        .filter_map(|r| match stored_entry(r, &mut scratch) {
            Ok(entry) => Some(entry),
            Err(err) => {
                tracing::error!(event_id = %e.id, error = %err, "a stored response cannot be read for its event; left out");
                None
            }
        })
        .collect();
    e.payload = payload(&ids, &stored);
    Ok(())
}

impl EventExpander for RecordedExpander {
    fn expand<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        events: &'a mut [Event],
    ) -> PublishFuture<'a> {
        Box::pin(async move {
            for e in events.iter_mut() {
                self.expand_one(db, e).await?;
            }
            Ok(())
        })
    }

    fn weight(&self, e: &Event) -> usize {
        if e.topic == RESPONSES_RECORDED && e.payload.starts_with(REFERENCE_PREFIX) {
            // One comma between two ids; ids have none.
            1 + e.payload.bytes().filter(|b| *b == b',').count()
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored response's (id, entry without id) as [`stored_entry`] gives it.
    fn stored(id: &str, nps: i32) -> (String, String) {
        let mut rest = String::new();
        RecordedEvent {
            survey_id: "s",
            touchpoint_id: "t",
            occurred_at_us: 1_000_000,
            channel: 2,
            org_unit_id: "ou-1",
            segment: "family",
            scores: [("nps", nps)].into_iter().collect(),
        }
        .write_rest(&mut rest, &mut Vec::new())
        .unwrap();
        (id.into(), rest)
    }

    fn expander() -> RecordedExpander {
        RecordedExpander::new(Arc::default())
    }

    fn event(payload: String) -> Event {
        Event {
            id: "e".into(),
            tenant: "t".into(),
            topic: RESPONSES_RECORDED.into(),
            payload,
        }
    }

    #[test]
    fn the_batch_payload_is_the_list_of_its_entries() {
        let entries = [
            ("a", r#""x":1}"#),
            ("b", r#""y":[2,3]}"#),
            ("c", "\"z\":{}}"),
        ];
        for n in 0..=entries.len() {
            let payload = batch_payload(entries[..n].iter().copied());
            let parsed: serde_json::Value = serde_json::from_str(&payload).unwrap();
            let want = [
                serde_json::json!({"response_id": "a", "x": 1}),
                serde_json::json!({"response_id": "b", "y": [2, 3]}),
                serde_json::json!({"response_id": "c", "z": {}}),
            ];
            assert_eq!(parsed, serde_json::json!({ "responses": want[..n] }));
        }
    }

    #[test]
    fn a_reference_lists_the_ids_and_weighs_their_number() {
        for ids in [vec![], vec!["a"], vec!["a", "b", "c"]] {
            let e = event(reference(ids.iter().copied()));
            let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            assert_eq!(referenced_ids(&e), Some(want));
            assert_eq!(expander().weight(&e), ids.len().max(1));
        }
    }

    #[test]
    fn a_full_payload_and_other_topics_are_left_alone() {
        let full = event(r#"{"responses":[{"response_id":"a"}]}"#.into());
        assert_eq!(referenced_ids(&full), None);
        assert_eq!(expander().weight(&full), 1);
        let mut other = event(reference(["a", "b"].into_iter()));
        other.topic = "feedback.other".into();
        assert_eq!(referenced_ids(&other), None);
        assert_eq!(expander().weight(&other), 1);
    }

    #[test]
    fn the_payload_has_the_batch_responses_in_id_order_and_no_others() {
        // "b" lies inside the range of the batch's ids but belongs to another batch.
        let ids = vec!["a".to_string(), "c".to_string()];
        let rows = vec![stored("c", 10), stored("b", 0), stored("a", 3)];
        let got: serde_json::Value = serde_json::from_str(&payload(&ids, &rows)).unwrap();
        let entry = |id: &str, nps: i32| {
            serde_json::json!({"response_id": id, "survey_id": "s", "touchpoint_id": "t",
                "occurred_at_us": 1_000_000, "channel": 2, "org_unit_id": "ou-1",
                "segment": "family", "scores": {"nps": nps}})
        };
        assert_eq!(
            got,
            serde_json::json!({"responses": [entry("a", 3), entry("c", 10)]})
        );
    }

    /// A stored reference read back gives every field of the batch's responses, scores only,
    /// in the order of the ids, and no response of another batch inside their range: on
    /// SQLite, and on a fresh PostgreSQL database when `CXLOOP_TEST_DATABASE_URL` is set.
    #[tokio::test]
    async fn a_reference_is_read_back_from_the_stored_responses() {
        crate::test_databases::on_each(|url| async move { read_back_batch(&url).await }).await;
    }

    async fn read_back_batch(url: &str) {
        use crate::domain::AnswerValue;
        let db = cxloop_platform::db::connect(url).await.unwrap();
        crate::migrate(&db).await.unwrap();
        // (id, tenant, nps): "r-2" is another batch's, "r-3" another tenant's.
        let rows = [
            ("r-1", "acme", 3),
            ("r-2", "acme", 5),
            ("r-3", "beta", 7),
            ("r-4", "acme", 10),
        ];
        for (id, tenant, nps) in rows {
            let answers = super::super::answers_json(&[
                ("nps".into(), AnswerValue::Score(nps)),
                (
                    "why".into(),
                    AnswerValue::Text("a \"quoted\" reason".into()),
                ),
            ]);
            db.execute_raw(stmt(
                db.get_database_backend(),
                "INSERT INTO fb_responses (tenant_id, id, request_id, request_hash, survey_id, touchpoint_id, occurred_at, channel, org_unit_id, segment, customer_key, comment, answers, created_at) VALUES (?, ?, ?, '', 'sv', 'tp', 86400000000, 3, 'ou-9', 'senior', '', '', ?, 0)",
                vec![tenant.into(), id.into(), format!("req-{id}").into(), answers.into()],
            ))
            .await
            .unwrap();
        }
        let mut e = event(reference(["r-1", "r-4"].into_iter()));
        e.tenant = "acme".into();
        read_back(&db, &mut e).await.unwrap();
        let got: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        let entry = |id: &str, nps: i32| {
            serde_json::json!({"response_id": id, "survey_id": "sv", "touchpoint_id": "tp",
                "occurred_at_us": 86_400_000_000_i64, "channel": 3, "org_unit_id": "ou-9",
                "segment": "senior", "scores": {"nps": nps}})
        };
        assert_eq!(
            got,
            serde_json::json!({"responses": [entry("r-1", 3), entry("r-4", 10)]})
        );
    }

    #[tokio::test]
    async fn an_unreadable_reference_goes_out_without_responses() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let mut e = event("{\"response_ids\":[\"a\",".into());
        read_back(&db, &mut e).await.unwrap();
        assert_eq!(e.payload, "{\"responses\":[]}");
    }

    #[test]
    fn kept_payloads_are_taken_once_in_id_order() {
        let recent = RecentPayloads::default();
        recent.keep("e1".into(), "p1".into());
        recent.keep("e2".into(), "p2".into());
        recent.keep("e3".into(), "p3".into());
        // e1 was read back instead: asking for e2 lets it go.
        assert_eq!(recent.take("e2").as_deref(), Some("p2"));
        assert_eq!(recent.take("e1"), None);
        assert_eq!(recent.take("e2"), None);
        assert_eq!(recent.take("e3").as_deref(), Some("p3"));
        // Past the byte budget nothing more is kept.
        recent.keep("e4".into(), "x".repeat(MAX_RECENT_BYTES));
        recent.keep("e5".into(), "y".into());
        assert_eq!(recent.take("e4").map(|p| p.len()), Some(MAX_RECENT_BYTES));
        assert_eq!(recent.take("e5"), None);
        recent.keep("e6".into(), "z".into());
        assert_eq!(recent.take("e6").as_deref(), Some("z"));
    }
}
