//! Response ingestion with group commit. Every RecordResponse and every ImportResponses batch
//! becomes a job on one queue; a single writer task takes all jobs waiting at that moment and
//! commits them in one transaction: the responses, their rollup increments and their outbox
//! events together. Callers are answered only after the commit, so an acknowledged response
//! is durable, and concurrent callers share one fsync instead of queueing for one each.
//!
//! The writer runs on a thread of its own and, in the embedded mode, writes through a SQLite
//! connection of its own called directly (`store/conn.rs`): every hand-over between threads
//! in the serial path costs more than the SQL it carries. There its commits do not wait for
//! the disk: the flusher (`store/flush.rs`) fsyncs the WAL and then answers, while the writer
//! goes on with the next batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cxloop_platform::TenantId;
use cxloop_platform::db;
use cxloop_platform::error::{ApiError, ApiResult};
use cxloop_platform::outbox::Event;
use foldhash::HashMap as FastMap;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, mpsc, oneshot};

use super::cache::{RollupCache, SeriesRef, SliceDays, day_counts};
use super::checkpoint::Checkpointer;
use super::conn::{Conn, Param, Txn};
use super::events::{self, RecentPayloads};
use super::flush::{self, Flusher, Reply};
use super::{COUNT_MEASURE, HIST_WIDTH, Store, answers_json};
use crate::domain::{NewResponse, SurveyDef, slice_key};

/// Most response rows committed in one transaction.
const MAX_BATCH_ROWS: usize = 20_000;
/// Times the writer yields its thread while gathering a batch before it commits what it has
/// (group commit without a timer).
const GATHER_YIELDS: usize = 4;
const DAY_US: i64 = 86_400_000_000;
/// Topic of the event each committed batch of responses leaves in the outbox.
pub const RESPONSES_RECORDED: &str = "feedback.responses.recorded";

/// What happened to one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now, with this id and storage time.
    Accepted {
        /// New response id.
        id: String,
        /// Storage time, µs.
        created_at: i64,
    },
    /// The request id was stored before with the same content.
    Duplicate {
        /// The stored response's id.
        id: String,
    },
    /// The request id was stored before with other content.
    Conflict,
    /// Refused: (field, reason) pairs.
    Rejected(Vec<(String, String)>),
}

struct Job {
    tenant: TenantId,
    items: Vec<NewResponse>,
    /// The items' encodings, in the same order.
    prepared: Prepared,
    reply: oneshot::Sender<ApiResult<Vec<Outcome>>>,
}

/// What a job's items are stored and announced as if they are accepted, encoded by the
/// caller's task before the job is queued: the writer is the one thread every write passes,
/// while the request tasks run on the other cores (a bulk import kept the writer busy 93 % of
/// the time and the rest of the server under half of a core). The writer only adds each
/// accepted item's id: ids are given in commit order, so that a listing in id order sees a
/// response committed after it started at its end (docs/api.md, paging). Each kind of text is
/// one buffer for the whole job, not small strings per item: small blocks allocated on the
/// request threads and freed by the writer fragmented the allocator's arenas (RSS after a
/// 9.8M-row import rose from ~135 to 155-197 MiB); a buffer this large is mapped and
/// unmapped whole.
#[derive(Default)]
struct Prepared {
    /// The answers as stored, item after item; `answer_ends[i]` ends item i's.
    answers: String,
    answer_ends: Vec<usize>,
    /// Each item's entry in the batch event without its id: the JSON object's other members
    /// and its closing brace, no opening brace; `event_ends[i]` ends item i's.
    events: String,
    event_ends: Vec<usize>,
}

/// One item's part of [`Prepared`].
#[derive(Clone, Copy)]
struct PreparedItem<'p> {
    answers_json: &'p str,
    /// See [`Prepared::events`]; [`events::event_entry`] completes it.
    event_rest: &'p str,
}

impl Prepared {
    fn of(items: &[NewResponse]) -> ApiResult<Self> {
        let mut p = Prepared {
            answer_ends: Vec::with_capacity(items.len()),
            event_ends: Vec::with_capacity(items.len()),
            ..Default::default()
        };
        let mut scratch = Vec::with_capacity(512);
        for r in items {
            p.answers.push_str(&answers_json(&r.answers));
            p.answer_ends.push(p.answers.len());
            events::RecordedEvent {
                survey_id: &r.survey_id,
                touchpoint_id: &r.touchpoint_id,
                occurred_at_us: r.occurred_at_us,
                channel: r.channel,
                org_unit_id: &r.org_unit_id,
                segment: &r.segment,
                scores: r.scores().collect(),
            }
            .write_rest(&mut p.events, &mut scratch)
            .map_err(|e| ApiError::Internal(format!("encoding the event: {e}")))?;
            p.event_ends.push(p.events.len());
        }
        Ok(p)
    }

    fn items(&self) -> impl Iterator<Item = PreparedItem<'_>> {
        let starts = |ends: &[usize], i: usize| if i == 0 { 0 } else { ends[i - 1] };
        (0..self.answer_ends.len()).map(move |i| PreparedItem {
            answers_json: &self.answers[starts(&self.answer_ends, i)..self.answer_ends[i]],
            event_rest: &self.events[starts(&self.event_ends, i)..self.event_ends[i]],
        })
    }
}

/// A read of daily slice histograms into the rollup cache, done by the writer between two
/// commits so that what is cached is exactly the committed state.
struct Fill {
    tenant: TenantId,
    survey: String,
    measure: String,
    min: i32,
    keys: Vec<String>,
    days: (i64, i64),
    reply: oneshot::Sender<ApiResult<SliceDays>>,
}

enum Work {
    Write(Job),
    Fill(Fill),
}

/// Items queued by [`Ingest::enqueue`], to be answered once they are committed.
pub struct Queued {
    rx: oneshot::Receiver<ApiResult<Vec<Outcome>>>,
}

impl Queued {
    /// Waits for the commit (and, on SQLite, its fsync): one outcome per item, in order.
    pub async fn outcomes(self) -> ApiResult<Vec<Outcome>> {
        self.rx
            .await
            .map_err(|_| ApiError::Unavailable("the writer stopped before answering".into()))?
    }
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Work>,
}

impl Ingest {
    /// Starts the writer task. `wake` is notified after each commit (the outbox dispatcher
    /// listens); each committed batch event's published payload is left in `recent` for it.
    /// The thread ends when every handle is dropped, after finishing queued jobs.
    pub fn start(
        db: DatabaseConnection,
        sqlite_file: Option<PathBuf>,
        single_writer_lock: Option<std::fs::File>,
        wake: Arc<Notify>,
        config_version: Arc<AtomicU64>,
        cache: Option<Arc<RollupCache>>,
        recent: Arc<RecentPayloads>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        // The writer gets a thread of its own: on the shared runtime every wake-up between
        // its statements waited behind the request tasks that were ready, and that queueing,
        // not SQLite, was most of a commit's time under concurrent ingest.
        let spawned = std::thread::Builder::new()
            .name("cxloop-ingest".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let conn = Conn::open(db, sqlite_file.as_deref());
                        rt.block_on(run(conn, rx, wake, config_version, cache, recent));
                        // Released only once the writer has committed its last batch.
                        drop(single_writer_lock);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the ingest writer"),
                }
            });
        if let Err(e) = spawned {
            // Calls then fail with UNAVAILABLE (the queue has no reader): nothing is lost.
            tracing::error!(error = %e, "cannot start the ingest writer thread");
        }
        Self { tx }
    }

    /// Reads daily histograms of these slices into the rollup cache (through the writer:
    /// see [`RollupCache`]) and returns them.
    #[allow(clippy::too_many_arguments)]
    pub async fn fill(
        &self,
        tenant: &TenantId,
        survey: &str,
        measure: &str,
        min: i32,
        keys: Vec<String>,
        days: (i64, i64),
    ) -> ApiResult<SliceDays> {
        self.ask(|reply| {
            Work::Fill(Fill {
                tenant: tenant.clone(),
                survey: survey.to_owned(),
                measure: measure.to_owned(),
                min,
                keys,
                days,
                reply,
            })
        })
        .await
    }

    /// Stores items (already shape-checked) and returns one outcome per item, in order.
    pub async fn submit(
        &self,
        tenant: TenantId,
        items: Vec<NewResponse>,
    ) -> ApiResult<Vec<Outcome>> {
        self.enqueue(tenant, items).await?.outcomes().await
    }

    /// Queues items (already shape-checked) for the writer and returns at once; the writer
    /// commits them whether or not anyone waits. Jobs are committed in the order they were
    /// queued, so a caller that queues several sees its ids and duplicates in that order.
    pub async fn enqueue(&self, tenant: TenantId, items: Vec<NewResponse>) -> ApiResult<Queued> {
        let prepared = Prepared::of(&items)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Write(Job {
                tenant,
                items,
                prepared,
                reply,
            }))
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        Ok(Queued { rx })
    }

    /// Queues work for the writer and waits for its answer.
    async fn ask<T>(
        &self,
        work: impl FnOnce(oneshot::Sender<ApiResult<T>>) -> Work,
    ) -> ApiResult<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(work(reply))
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("the writer stopped before answering".into()))?
    }
}

/// What the writer keeps between commits.
struct WriterState {
    defs: Definitions,
    series: SeriesIds,
    /// Where committed events' published payloads go (see store/events.rs).
    recent: Arc<RecentPayloads>,
}

async fn run(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Work>,
    wake: Arc<Notify>,
    config_version: Arc<AtomicU64>,
    cache: Option<Arc<RollupCache>>,
    recent: Arc<RecentPayloads>,
) {
    let mut state = WriterState {
        defs: Definitions::new(config_version),
        series: SeriesIds::default(),
        recent,
    };
    let reader = Store::new(conn.pool().clone());
    let checkpointer = conn.sqlite_file().and_then(|file| match Checkpointer::start(file) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no background checkpointer; the writer checkpoints itself");
            None
        }
    });
    let flusher = conn.wal_file().map(|wal| Flusher::start(wal, wake.clone()));
    while let Some(work) = rx.recv().await {
        let first = match work {
            Work::Fill(f) => {
                fill(&reader, cache.as_deref(), f).await;
                continue;
            }
            Work::Write(j) => j,
        };
        let mut rows = first.items.len();
        let mut jobs = vec![first];
        // A fill waiting behind writes runs after their commit, in queue order.
        let mut after = None;
        // When the queue is empty, let the request threads that are ready run first (a few
        // yields of this thread, no sleep): callers answered by the last commit are usually
        // about to send their next item, and one commit for all of them costs about what one
        // for a few does (the commit's cost hardly depends on its size).
        let mut idle_yields = 0;
        while rows < MAX_BATCH_ROWS {
            match rx.try_recv() {
                Ok(Work::Write(j)) => {
                    rows += j.items.len();
                    jobs.push(j);
                    idle_yields = 0;
                }
                Ok(Work::Fill(f)) => {
                    after = Some(f);
                    break;
                }
                Err(_) if idle_yields < GATHER_YIELDS => {
                    idle_yields += 1;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        if flusher.as_ref().is_some_and(Flusher::failed) {
            for job in jobs {
                let _ = job.reply.send(Err(flush::flush_failed()));
            }
            // Reads go on after a failed flush; the one queued behind these writes too.
            if let Some(f) = after {
                fill(&reader, cache.as_deref(), f).await;
            }
            continue;
        }
        let started = Instant::now();
        let result = commit(&mut conn, &mut state, &jobs, cache.as_deref()).await;
        tracing::debug!(
            rows,
            jobs = jobs.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "ingest batch committed"
        );
        // Answers the callers of a commit that succeeded, once it is durable.
        let answer = |jobs: Vec<Job>, outcomes: Vec<Vec<Outcome>>| {
            if let Some(c) = &checkpointer {
                c.committed();
            }
            let replies: Vec<Reply> = jobs.into_iter().map(|j| j.reply).zip(outcomes).collect();
            match &flusher {
                // Answered (and the dispatcher woken) once the WAL is on disk.
                Some(f) => f.submit(replies),
                None => {
                    for (reply, out) in replies {
                        let _ = reply.send(Ok(out));
                    }
                    wake.notify_one();
                }
            }
        };
        let refuse = |jobs: Vec<Job>, e: &ApiError| {
            tracing::error!(error = %e, jobs = jobs.len(), "ingest batch failed; nothing of it was stored");
            // The commit itself may have failed after reaching the disk: trust no cached
            // series.
            if let Some(c) = &cache {
                c.clear();
            }
            let message = e.to_string();
            for job in jobs {
                let err = match e {
                    ApiError::Unavailable(_) => ApiError::Unavailable(message.clone()),
                    _ => ApiError::Internal(
                        "storing responses failed; retry with the same request_id".into(),
                    ),
                };
                let _ = job.reply.send(Err(err));
            }
        };
        match result {
            Ok(outcomes) => answer(jobs, outcomes),
            // One caller's content can fail a commit for everyone in it (a value the database
            // refuses though validation let it through, a request id another replica took a
            // moment before): commit each job alone, so the others are stored and only that
            // caller gets the error.
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, jobs = jobs.len(), "ingest batch failed; committing its jobs one by one");
                if let Some(c) = &cache {
                    c.clear();
                }
                for job in jobs {
                    match commit(
                        &mut conn,
                        &mut state,
                        std::slice::from_ref(&job),
                        cache.as_deref(),
                    )
                    .await
                    {
                        Ok(outcomes) => answer(vec![job], outcomes),
                        Err(e) => refuse(vec![job], &e),
                    }
                }
            }
            Err(e) => refuse(jobs, &e),
        }
        if let Some(f) = after {
            fill(&reader, cache.as_deref(), f).await;
        }
    }
}

/// Reads a fill's slices and, with a cache, keeps them there.
async fn fill(reader: &Store, cache: Option<&RollupCache>, f: Fill) {
    let read = reader
        .slice_histograms(
            &f.tenant, &f.survey, &f.measure, f.min, &f.keys, f.days, false,
        )
        .await
        .map(|by_key| {
            let mut out: SliceDays = by_key
                .into_iter()
                .map(|(k, days)| {
                    let rows = days
                        .iter()
                        .map(|(d, h)| (*d, day_counts(h, f.min)))
                        .collect();
                    (k, rows)
                })
                .collect();
            for key in &f.keys {
                out.entry(key.clone()).or_default();
            }
            out
        });
    if let (Ok(by_key), Some(cache)) = (&read, cache) {
        for (key, rows) in by_key {
            let r = SeriesRef {
                tenant: f.tenant.as_str(),
                survey: &f.survey,
                measure: &f.measure,
                slice: key,
            };
            cache.install(r, f.days, rows);
        }
    }
    let _ = f.reply.send(read);
}

/// The distinct ids among these, owned (a batch has thousands of items and a few ids).
pub(crate) fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: foldhash::HashSet<&str> = ids.collect();
    set.into_iter().map(str::to_owned).collect()
}

/// How long a cached survey definition or live touchpoint is trusted. Changes made in this
/// process clear the cache at once; changes made by another replica are seen within this time.
const DEFINITION_TTL: Duration = Duration::from_secs(5);

/// Survey definitions and live touchpoints as ingestion last read them: every batch needs
/// them, and reading them per batch would cost more than writing the batch.
struct Definitions {
    version: Arc<AtomicU64>,
    seen: u64,
    surveys: HashMap<(TenantId, String), (SurveyDef, Instant)>,
    touchpoints: HashMap<(TenantId, String), Instant>,
}

impl Definitions {
    fn new(version: Arc<AtomicU64>) -> Self {
        Self {
            seen: version.load(Ordering::Acquire),
            version,
            surveys: HashMap::new(),
            touchpoints: HashMap::new(),
        }
    }

    fn expire(&mut self) {
        let v = self.version.load(Ordering::Acquire);
        if v != self.seen {
            self.seen = v;
            self.surveys.clear();
            self.touchpoints.clear();
        }
        let now = Instant::now();
        self.surveys
            .retain(|_, (_, at)| now.duration_since(*at) < DEFINITION_TTL);
        self.touchpoints
            .retain(|_, at| now.duration_since(*at) < DEFINITION_TTL);
    }

    async fn surveys(
        &mut self,
        c: &DatabaseConnection,
        tenant: &TenantId,
        ids: &[String],
    ) -> ApiResult<Vec<SurveyDef>> {
        self.expire();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !self.surveys.contains_key(&(tenant.clone(), (*id).clone())))
            .cloned()
            .collect();
        // Unknown ids are not remembered: a survey created a moment later must be found.
        for def in Store::survey_defs(c, tenant, &missing).await? {
            self.surveys
                .insert((tenant.clone(), def.id.clone()), (def, Instant::now()));
        }
        Ok(ids
            .iter()
            .filter_map(|id| {
                self.surveys
                    .get(&(tenant.clone(), id.clone()))
                    .map(|(d, _)| d.clone())
            })
            .collect())
    }

    async fn live_touchpoints(
        &mut self,
        c: &DatabaseConnection,
        tenant: &TenantId,
        ids: &[String],
    ) -> ApiResult<Vec<String>> {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| {
                !self
                    .touchpoints
                    .contains_key(&(tenant.clone(), (*id).clone()))
            })
            .cloned()
            .collect();
        for id in Store::live_touchpoints(c, tenant, &missing).await? {
            self.touchpoints
                .insert((tenant.clone(), id), Instant::now());
        }
        Ok(ids
            .iter()
            .filter(|id| {
                self.touchpoints
                    .contains_key(&(tenant.clone(), (*id).clone()))
            })
            .cloned()
            .collect())
    }
}

/// How many series ids the writer keeps in memory (about 200 bytes each); past this it
/// forgets them all and reads them again as batches need them.
const MAX_KNOWN_SERIES: usize = 50_000;

/// Ids of the full-grain rollup series the writer has seen committed, so that a batch looks
/// up or creates only the series it is the first to touch.
#[derive(Default)]
struct SeriesIds {
    known: FastMap<String, i64>,
}

impl SeriesIds {
    fn name(tenant: &TenantId, key: &SeriesKey<'_>) -> String {
        use std::fmt::Write;
        let (survey, measure, tp, ou, ch, seg) = *key;
        // Each part prefixed by its length: no two keys give the same name, whatever
        // characters the client's org units and segments contain.
        let mut name = format!("{ch}");
        for part in [tenant.as_str(), survey, measure, tp, ou, seg] {
            let _ = write!(name, ";{}:{part}", part.len());
        }
        name
    }

    /// The ids of every series of the batch's cells; those read or created in this
    /// transaction are added to `new`, to be remembered once it has committed.
    async fn resolve(
        &self,
        txn: &Txn<'_>,
        tenant: &TenantId,
        inc: &Increments<'_>,
        new: &mut Vec<(String, i64)>,
    ) -> ApiResult<FastMap<SeriesIdx, i64>> {
        let mut ids: FastMap<SeriesIdx, i64> = FastMap::default();
        for (series, _) in inc.cells.keys() {
            if ids.contains_key(series) {
                continue;
            }
            let key = inc.series_key(series);
            let name = Self::name(tenant, &key);
            let id = match self.known.get(&name) {
                Some(id) => *id,
                None => {
                    let id = txn.series_id(tenant, &key).await?;
                    new.push((name, id));
                    id
                }
            };
            ids.insert(*series, id);
        }
        Ok(ids)
    }

    fn remember(&mut self, new: Vec<(String, i64)>) {
        if self.known.len() + new.len() > MAX_KNOWN_SERIES {
            self.known.clear();
        }
        self.known.extend(new);
    }
}

/// A single-dimension slice of a response, its value numbered by the batch's [`Names`];
/// rendered to its stored key ("", "t:…", "o:…", "c:…", "s:…") once per distinct row, not
/// once per response.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SliceOf {
    All,
    Touchpoint(u32),
    OrgUnit(u32),
    Channel(i32),
    Segment(u32),
}

/// A full-grain rollup series: (survey, measure, touchpoint, org unit, channel, segment).
pub(super) type SeriesKey<'a> = (&'a str, &'a str, &'a str, &'a str, i32, &'a str);
/// The same with its strings numbered by the batch's [`Names`].
type SeriesIdx = (u32, u32, u32, u32, i32, u32);
type Counts = [i64; HIST_WIDTH];

/// A full-grain rollup row's increments: the measure's histogram, and how many responses
/// this row counts (see [`Increments::add`]).
#[derive(Default)]
struct Cell {
    hist: Counts,
    n: i64,
}

/// The strings of a batch's rollup keys (ids, question keys), numbered in order of first
/// sight, so that the keys aggregated per response are tuples of numbers. Hashing and
/// comparing five 36-character ids for each of a response's cells was a sixth of the
/// writer's time in a bulk import.
#[derive(Default)]
struct Names<'a> {
    numbers: FastMap<&'a str, u32>,
    names: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn number(&mut self, name: &'a str) -> u32 {
        *self.numbers.entry(name).or_insert_with(|| {
            self.names.push(name);
            (self.names.len() - 1) as u32
        })
    }

    fn name(&self, number: u32) -> &'a str {
        self.names[number as usize]
    }
}

/// Rollup rows touched by a batch: (survey, measure, slice, day) and (series, day), each
/// with its histogram increments.
#[derive(Default)]
struct Increments<'a> {
    names: Names<'a>,
    slices: FastMap<(u32, u32, SliceOf, i64), Counts>,
    cells: FastMap<(SeriesIdx, i64), Cell>,
}

impl<'a> Increments<'a> {
    /// Sized for `n` responses: a sparse batch has about as many cells as responses, and
    /// growing the maps step by step rehashed them several times per bulk-import batch.
    fn for_responses(n: usize) -> Self {
        Self {
            names: Names::default(),
            slices: FastMap::with_capacity_and_hasher(n / 2, Default::default()),
            cells: FastMap::with_capacity_and_hasher(n, Default::default()),
        }
    }

    fn add(&mut self, r: &'a NewResponse, survey: &SurveyDef) {
        let day = r.occurred_at_us.div_euclid(DAY_US);
        let names = &mut self.names;
        let (sv, tp, ou, seg) = (
            names.number(&r.survey_id),
            names.number(&r.touchpoint_id),
            names.number(&r.org_unit_id),
            names.number(&r.segment),
        );
        // Each scored answer counts under its question key, in the column of its point on
        // the question's scale. The response itself is counted once, in `n` of its first
        // scored answer's cell; only a response without one gets a cell of the measure ""
        // (the response count, in h0 as before m0004) for it. A cell per response for its
        // count alone was a third of a sparse import's rollup rows.
        let mut counted = false;
        for (k, s) in r.scores() {
            let Some(column) = survey
                .question(k)
                .and_then(|q| usize::try_from(s - q.min).ok().filter(|i| *i < HIST_WIDTH))
            else {
                continue;
            };
            let m = names.number(k);
            let cell = self
                .cells
                .entry(((sv, m, tp, ou, r.channel, seg), day))
                .or_default();
            cell.hist[column] += 1;
            if !counted {
                cell.n += 1;
                counted = true;
            }
        }
        if !counted {
            let m = names.number(COUNT_MEASURE);
            self.cells
                .entry(((sv, m, tp, ou, r.channel, seg), day))
                .or_default()
                .hist[0] += 1;
        }
    }

    /// Derives the single-dimension slices from the cells: a slice is the sum of its cells,
    /// and a batch has far fewer distinct cells than responses. The slices keep the response
    /// count as a measure of its own (in h0 of measure ""): the responses of the "" cells
    /// plus the `n` of the others.
    fn fill_slices(&mut self) {
        let count = self.names.number(COUNT_MEASURE);
        for (((survey, measure, tp, ou, ch, seg), day), cell) in &self.cells {
            let slices = [
                SliceOf::All,
                SliceOf::Touchpoint(*tp),
                SliceOf::OrgUnit(*ou),
                SliceOf::Channel(*ch),
                SliceOf::Segment(*seg),
            ];
            for slice in slices {
                let row = self
                    .slices
                    .entry((*survey, *measure, slice, *day))
                    .or_insert([0; HIST_WIDTH]);
                for (sum, c) in row.iter_mut().zip(&cell.hist) {
                    *sum += c;
                }
                if cell.n != 0 {
                    self.slices
                        .entry((*survey, count, slice, *day))
                        .or_insert([0; HIST_WIDTH])[0] += cell.n;
                }
            }
        }
    }

    fn series_key(&self, s: &SeriesIdx) -> SeriesKey<'a> {
        let n = |i| self.names.name(i);
        (n(s.0), n(s.1), n(s.2), n(s.3), s.4, n(s.5))
    }

    /// The slice's stored key.
    fn slice_key(&self, slice: SliceOf) -> String {
        match slice {
            SliceOf::All => String::new(),
            SliceOf::Touchpoint(t) => slice_key('t', self.names.name(t)),
            SliceOf::OrgUnit(o) => slice_key('o', self.names.name(o)),
            SliceOf::Channel(c) => slice_key('c', c),
            SliceOf::Segment(s) => slice_key('s', self.names.name(s)),
        }
    }

    /// The slice rows as (survey, measure, stored slice key, day, increments).
    fn slice_rows(&self) -> impl Iterator<Item = (&'a str, &'a str, String, i64, &Counts)> {
        self.slices
            .iter()
            .map(|((survey, measure, slice, day), counts)| {
                (
                    self.names.name(*survey),
                    self.names.name(*measure),
                    self.slice_key(*slice),
                    *day,
                    counts,
                )
            })
    }
}

async fn commit(
    conn: &mut Conn,
    writer: &mut WriterState,
    jobs: &[Job],
    cache: Option<&RollupCache>,
) -> ApiResult<Vec<Vec<Outcome>>> {
    let WriterState {
        defs,
        series,
        recent,
    } = writer;
    let mut all = Vec::with_capacity(jobs.len());
    // Jobs of one tenant are decided together so that duplicates across jobs are caught.
    let mut by_tenant: Vec<(&TenantId, Vec<usize>)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        match by_tenant.iter_mut().find(|(t, _)| *t == &j.tenant) {
            Some((_, v)) => v.push(i),
            None => by_tenant.push((&j.tenant, vec![i])),
        }
    }
    // Definitions are read before the write transaction begins (they are cached for seconds
    // anyway), so the transaction holds the write lock only while it writes.
    let mut groups = Vec::with_capacity(by_tenant.len());
    for (tenant, idx) in by_tenant {
        let items: Vec<&NewResponse> = idx.iter().flat_map(|i| jobs[*i].items.iter()).collect();
        let prepared: Vec<PreparedItem<'_>> =
            idx.iter().flat_map(|i| jobs[*i].prepared.items()).collect();
        let survey_ids = distinct(items.iter().map(|r| r.survey_id.as_str()));
        let surveys = defs.surveys(conn.pool(), tenant, &survey_ids).await?;
        let tp_ids = distinct(items.iter().map(|r| r.touchpoint_id.as_str()));
        let live = defs.live_touchpoints(conn.pool(), tenant, &tp_ids).await?;
        groups.push((tenant, idx, items, prepared, surveys, live));
    }
    let txn = Txn::begin(conn).await?;
    let mut outcomes: Vec<Option<Vec<Outcome>>> = vec![None; jobs.len()];
    let mut written: Vec<(&TenantId, Increments<'_>)> = Vec::new();
    let mut new_series = Vec::new();
    let mut events = Vec::new();
    for (tenant, idx, items, prepared, surveys, live) in groups {
        let batch = Batch {
            tenant,
            items: &items,
            prepared: &prepared,
            surveys: &surveys,
            live_tps: &live,
        };
        let (decided, inc, event) = decide_and_write(&txn, batch, series, &mut new_series).await?;
        written.push((tenant, inc));
        events.extend(event);
        let mut it = decided.into_iter();
        for i in idx {
            outcomes[i] = Some(it.by_ref().take(jobs[i].items.len()).collect());
        }
    }
    txn.commit().await?;
    // Only now: a series created by a transaction that rolled back does not exist, and an
    // event that rolled back is never published.
    series.remember(new_series);
    for (id, payload) in events {
        recent.keep(id, payload);
    }
    if let Some(cache) = cache {
        for (tenant, inc) in &written {
            if cache.holds(tenant.as_str()) {
                cache.apply(tenant.as_str(), inc.slice_rows());
            }
        }
    }
    for o in outcomes {
        all.push(o.unwrap_or_default());
    }
    Ok(all)
}

/// One tenant's items of a commit, with what they are checked against.
struct Batch<'b, 'a> {
    tenant: &'b TenantId,
    items: &'b [&'a NewResponse],
    prepared: &'b [PreparedItem<'a>],
    surveys: &'b [SurveyDef],
    live_tps: &'b [String],
}

/// The outcomes of a batch's items, the rollup increments written and the batch event's
/// (id, published payload), if any item was accepted.
type Decided<'a> = (Vec<Outcome>, Increments<'a>, Option<(String, String)>);

/// Decides each item, writes the accepted ones with their rollups and outbox event, and
/// returns what [`Decided`] says.
async fn decide_and_write<'a>(
    txn: &Txn<'_>,
    batch: Batch<'_, 'a>,
    series: &SeriesIds,
    new_series: &mut Vec<(String, i64)>,
) -> ApiResult<Decided<'a>> {
    let Batch {
        tenant,
        items,
        prepared,
        surveys,
        live_tps,
    } = batch;
    // Earlier responses with these request ids. On the direct path they are not looked up
    // one by one: the insert below searches the request-id index anyway and reports the rows
    // whose id is taken, and only those (and the items refused here) are looked up. The
    // writer does 5 % fewer instructions per imported row this way (docs/decisions.md).
    let find_taken_on_insert = txn.reports_unchanged_rows();
    let stored = if find_taken_on_insert {
        HashMap::new()
    } else {
        txn.known_requests(tenant, items.iter().map(|r| r.request_id.as_str()))
            .await?
    };
    // Request ids accepted earlier in this batch (index into `accepted`): a later item with
    // the same id is a retry of that one.
    let mut this_batch: FastMap<&str, usize> =
        FastMap::with_capacity_and_hasher(items.len(), Default::default());

    let now = db::now_micros();
    let mut outcomes = Vec::with_capacity(items.len());
    let mut accepted: Vec<AcceptedItem<'a, '_, 'a>> = Vec::with_capacity(items.len());
    for (r, p) in items.iter().zip(prepared.iter().copied()) {
        let earlier = match (
            stored.get(&r.request_id),
            this_batch.get(r.request_id.as_str()),
        ) {
            (Some((id, hash)), _) => Some((id.as_str(), hash.as_str())),
            (None, Some(&i)) => Some((accepted[i].2.as_str(), accepted[i].0.request_hash.as_str())),
            (None, None) => None,
        };
        if let Some((id, hash)) = earlier {
            outcomes.push(if hash == r.request_hash {
                Outcome::Duplicate { id: id.to_owned() }
            } else {
                Outcome::Conflict
            });
            continue;
        }
        let (survey, violations) = r.check_in(surveys, live_tps);
        let Some(survey) = survey else {
            outcomes.push(Outcome::Rejected(violations));
            continue;
        };
        let id = db::new_id();
        this_batch.insert(&r.request_id, accepted.len());
        outcomes.push(Outcome::Accepted {
            id: id.clone(),
            created_at: now,
        });
        accepted.push((r, p, id, survey));
    }
    let mut responses = txn.insert(
        "INSERT INTO fb_responses (tenant_id, id, request_id, request_hash, survey_id, touchpoint_id, occurred_at, channel, org_unit_id, segment, customer_key, comment, answers, created_at)",
        14,
        if find_taken_on_insert {
            "ON CONFLICT (tenant_id, request_id) DO NOTHING"
        } else {
            ""
        },
    );
    for (r, p, id, _) in &accepted {
        responses.row([
            Param::from(tenant.as_str()),
            id.as_str().into(),
            r.request_id.as_str().into(),
            r.request_hash.as_str().into(),
            r.survey_id.as_str().into(),
            r.touchpoint_id.as_str().into(),
            r.occurred_at_us.into(),
            i64::from(r.channel).into(),
            r.org_unit_id.as_str().into(),
            r.segment.as_str().into(),
            r.customer_key.as_str().into(),
            r.comment.as_str().into(),
            p.answers_json.into(),
            now.into(),
        ])?;
    }
    let taken = responses.finish_reporting_unchanged().await?;
    if find_taken_on_insert {
        settle_stored_retries(txn, tenant, items, &taken, &mut outcomes, &mut accepted).await?;
    }
    if accepted.is_empty() {
        return Ok((outcomes, Increments::default(), None));
    }

    let mut inc = Increments::for_responses(accepted.len());
    for (r, _, _, survey) in &accepted {
        inc.add(r, survey);
    }
    inc.fill_slices();
    let ids = series.resolve(txn, tenant, &inc, new_series).await?;
    write_increments(txn, tenant, &inc, &ids).await?;

    // One event per committed batch: consumers get every response, and a bulk import does
    // not double its writes with one outbox row per response. It is stored as the list of
    // the responses' ids, and published as {"responses": [each accepted item's id and
    // prepared entry]}, which is handed to the dispatcher in memory (store/events.rs).
    let published = events::batch_payload(
        accepted
            .iter()
            .map(|(_, p, id, _)| (id.as_str(), p.event_rest)),
    );
    let event = Event {
        id: db::new_id(),
        tenant: tenant.to_string(),
        topic: RESPONSES_RECORDED.into(),
        payload: events::reference(accepted.iter().map(|(_, _, id, _)| id.as_str())),
    };
    let event_id = event.id.clone();
    let mut outbox = txn.insert(
        "INSERT INTO fb_outbox (id, tenant_id, topic, payload, created_at)",
        5,
        "",
    );
    outbox.row([
        Param::from(event.id),
        event.tenant.into(),
        event.topic.into(),
        event.payload.into(),
        now.into(),
    ])?;
    outbox.finish().await?;
    Ok((outcomes, inc, Some((event_id, published))))
}

/// An item accepted, with its prepared entry, new id and survey.
type AcceptedItem<'r, 's, 'a> = (&'r NewResponse, PreparedItem<'a>, String, &'s SurveyDef);

/// On the direct path, after the insert: the items whose request id an earlier commit
/// stored, found as the accepted rows the insert left unchanged (`taken`, positions in
/// `accepted`) and among the refused items (an identical retry stays a retry after the survey
/// changed; the lookup runs after the insert, so it tells this batch's own rows apart). Every item of the batch with such an id retries that stored response, exactly
/// as if it had been looked up first: a duplicate of it when the content is the same, else
/// a conflict; none of them is accepted.
async fn settle_stored_retries(
    txn: &Txn<'_>,
    tenant: &TenantId,
    items: &[&NewResponse],
    taken: &[usize],
    outcomes: &mut [Outcome],
    accepted: &mut Vec<AcceptedItem<'_, '_, '_>>,
) -> ApiResult<()> {
    let refused = items
        .iter()
        .zip(outcomes.iter())
        .filter(|(_, o)| matches!(o, Outcome::Rejected(_)))
        .map(|(r, _)| r.request_id.as_str());
    let ask: Vec<&str> = taken
        .iter()
        .map(|&i| accepted[i].0.request_id.as_str())
        .chain(refused)
        .collect();
    if ask.is_empty() {
        return Ok(());
    }
    let mut stored = txn.known_requests(tenant, ask.into_iter()).await?;
    if !stored.is_empty() {
        // A refused item's id may name the response this batch has just inserted for a later
        // item with that id: that one is new, not an earlier response.
        let ours: foldhash::HashSet<&str> = accepted.iter().map(|a| a.2.as_str()).collect();
        stored.retain(|_, (id, _)| !ours.contains(id.as_str()));
    }
    if let Some(&i) = taken
        .iter()
        .find(|&&i| !stored.contains_key(&accepted[i].0.request_id))
    {
        // The index refused the row, yet holds no such id: nothing of the batch is trusted.
        return Err(ApiError::Internal(format!(
            "request id {:?} was refused as taken but is not stored",
            accepted[i].0.request_id
        )));
    }
    if stored.is_empty() {
        return Ok(());
    }
    for (r, outcome) in items.iter().zip(outcomes.iter_mut()) {
        if let Some((id, hash)) = stored.get(&r.request_id) {
            *outcome = if *hash == r.request_hash {
                Outcome::Duplicate { id: id.clone() }
            } else {
                Outcome::Conflict
            };
        }
    }
    accepted.retain(|(r, ..)| !stored.contains_key(&r.request_id));
    Ok(())
}

/// Adds a batch's increments to the rollup tables.
async fn write_increments(
    txn: &Txn<'_>,
    tenant: &TenantId,
    inc: &Increments<'_>,
    series: &FastMap<SeriesIdx, i64>,
) -> ApiResult<()> {
    // `columns` added up on conflict: the histogram's, and the series days' response count.
    let upsert = |table: &str, keys: &str, width: usize, columns: &[String]| {
        let merge: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
            .collect();
        txn.insert(
            &format!(
                "INSERT INTO {table} (tenant_id, {keys}, {})",
                columns.join(", ")
            ),
            width + columns.len(),
            &format!(
                "ON CONFLICT (tenant_id, {keys}) DO UPDATE SET {}",
                merge.join(", ")
            ),
        )
    };
    let hist: Vec<String> = (0..HIST_WIDTH).map(|i| format!("h{i}")).collect();
    let mut slices = upsert(
        "fb_rollup_slices",
        "survey_id, measure, slice, day",
        5,
        &hist,
    );
    for (survey, measure, slice, day, counts) in inc.slice_rows() {
        slices.row(
            [
                Param::from(tenant.as_str()),
                Param::from(survey),
                Param::from(measure),
                slice.into(),
                day.into(),
            ]
            .into_iter()
            .chain(counts.iter().map(|c| Param::from(*c))),
        )?;
    }
    slices.finish().await?;
    let with_n: Vec<String> = std::iter::once("n".to_owned()).chain(hist).collect();
    let mut cells = upsert("fb_rollup_series_days", "series, day", 3, &with_n);
    // In key order: consecutive upserts land on the same pages.
    let mut rows: Vec<(i64, i64, &Cell)> = inc
        .cells
        .iter()
        .filter_map(|((key, day), cell)| Some((*series.get(key)?, *day, cell)))
        .collect();
    rows.sort_unstable_by_key(|(id, day, _)| (*id, *day));
    for (id, day, cell) in rows {
        cells.row(
            [
                Param::from(tenant.as_str()),
                id.into(),
                day.into(),
                cell.n.into(),
            ]
            .into_iter()
            .chain(cell.hist.iter().map(|c| Param::from(*c))),
        )?;
    }
    cells.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_item_gets_its_answers_and_event_entry() {
        use crate::domain::AnswerValue;
        let item = |n: i32, org_unit: &str| NewResponse {
            request_id: format!("r{n}"),
            request_hash: String::new(),
            survey_id: "s".into(),
            touchpoint_id: "t".into(),
            occurred_at_us: 1_000_000 * i64::from(n),
            channel: 1,
            org_unit_id: org_unit.into(),
            segment: String::new(),
            customer_key: String::new(),
            comment: String::new(),
            answers: vec![
                ("nps".into(), AnswerValue::Score(n)),
                (
                    "why".into(),
                    AnswerValue::Text("ünïcode, \"quoted\"".into()),
                ),
            ],
        };
        let items = vec![item(3, "ou-1"), item(9, "öu-2"), item(10, "")];
        let prepared = Prepared::of(&items).unwrap();
        let got: Vec<PreparedItem<'_>> = prepared.items().collect();
        assert_eq!(got.len(), 3);
        for (r, p) in items.iter().zip(&got) {
            assert_eq!(p.answers_json, answers_json(&r.answers));
            let mut entry = String::new();
            events::event_entry(
                &mut entry,
                "01a222e9-065b-75f8-9698-8477de9ab707",
                p.event_rest,
            );
            let event: serde_json::Value = serde_json::from_str(&entry).unwrap();
            assert_eq!(event["response_id"], "01a222e9-065b-75f8-9698-8477de9ab707");
            assert_eq!(event["org_unit_id"], r.org_unit_id.as_str());
            assert_eq!(event["occurred_at_us"], r.occurred_at_us);
            let nps = r.scores().next().unwrap().1;
            assert_eq!(event["scores"], serde_json::json!({ "nps": nps }));
        }
    }
}
