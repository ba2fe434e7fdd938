//! Metrics through the public API against reference values computed independently (Python,
//! standard library: NPS = 100·(p₊ − p₋), Wald se = 100·sqrt((p₊ + p₋ − (p₊ − p₋)²)/n),
//! z = 1.959963984540054; Wilson for shares; two-sided normal p from statistics.NormalDist).

use cxloop_e2e::{at, import_one, record_nps, response, seed_survey, spawn, tenant, violations};
use cxloop_proto::common::v1 as common;
use cxloop_proto::feedback::v1 as pb;
use tonic::Code;

const A1: [i32; 10] = [10, 10, 9, 9, 9, 8, 7, 6, 3, 0]; // touchpoint A, 2026-03-02
const A2: [i32; 8] = [10, 9, 9, 8, 8, 7, 6, 5]; // touchpoint A, 2026-03-03
const B1: [i32; 6] = [6, 5, 4, 10, 2, 8]; // touchpoint B, 2026-03-02

fn named(p: &str) -> Option<common::Period> {
    Some(common::Period {
        kind: Some(common::period::Kind::Named(p.into())),
    })
}

fn value(b: &pb::MetricBucket, m: pb::Metric) -> common::Estimate {
    b.values
        .iter()
        .find(|v| v.metric == m as i32)
        .and_then(|v| v.estimate)
        .unwrap_or_else(|| panic!("no {m:?} in {b:?}"))
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-4, "{a} != {b}");
}

async fn seeded() -> (cxloop_e2e::TestApp, cxloop_e2e::Client, Vec<String>, String) {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["A", "B"]).await;
    let mut items = Vec::new();
    for (tp, day, scores) in [
        (0, "2026-03-02", &A1[..]),
        (0, "2026-03-03", &A2[..]),
        (1, "2026-03-02", &B1[..]),
    ] {
        for (i, s) in scores.iter().enumerate() {
            let mut answers = vec![("nps", *s)];
            if tp == 0 && day == "2026-03-02" && i < 5 {
                answers.push(("csat", [5, 4, 4, 3, 2][i]));
            }
            items.push(response(
                &format!("{tp}-{day}-{i}"),
                &survey,
                &tps[tp],
                at(&format!("{day}T{:02}:30:00Z", 8 + i)),
                &answers,
            ));
        }
    }
    let res = import_one(&mut c, items).await;
    assert_eq!(res.accepted, 24);
    (app, c, tps, survey)
}

#[tokio::test]
async fn nps_per_day_and_touchpoint_matches_reference_values() {
    let (app, mut c, tps, survey) = seeded().await;
    let res = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey.clone(),
            question_key: "nps".into(),
            slice: Some(pb::Slice {
                touchpoint_id: tps[0].clone(),
                ..Default::default()
            }),
            period: named("2026-W10"), // Monday 2026-03-02 to Sunday 2026-03-08
            bucket: pb::Bucket::Day as i32,
            view: pb::MetricsView::Full as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.kind, pb::QuestionKind::Nps as i32);
    assert_eq!(res.buckets.len(), 7);
    assert_eq!(
        res.buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
        vec![10, 8, 0, 0, 0, 0, 0]
    );
    // A1: n=10, 5 promoters, 3 detractors → NPS 20, se 27.5681, 95 % [-34.0325, 74.0325].
    let d1 = value(&res.buckets[0], pb::Metric::Nps);
    assert_eq!(d1.sample_size, 10);
    close(d1.value, 20.0);
    close(d1.standard_error, 27.568097504180443);
    close(d1.interval_low, -34.03247823048222);
    close(d1.interval_high, 74.03247823048221);
    assert_eq!(d1.method, common::IntervalMethod::Wald as i32);
    // A2: n=8 → NPS 12.5, [-41.5935, 66.5935].
    let d2 = value(&res.buckets[1], pb::Metric::Nps);
    close(d2.value, 12.5);
    close(d2.interval_low, -41.59354130647765);
    // No data: a bucket with n = 0 is reported, undefined, not a zero score.
    let empty = value(&res.buckets[2], pb::Metric::Nps);
    assert_eq!(empty.sample_size, 0);
    assert!(!empty.defined);
    // Whole week, A1 + A2: n=18 → 16.6667, [-21.8307, 55.1640].
    let total = value(res.total.as_ref().unwrap(), pb::Metric::Nps);
    assert_eq!(total.sample_size, 18);
    close(total.value, 16.666666666666664);
    close(total.interval_low, -21.830661787491053);
    close(total.interval_high, 55.16399512082438);
    // The histogram behind it.
    let h: Vec<(i32, u64)> = res
        .total
        .unwrap()
        .histogram
        .iter()
        .map(|s| (s.score, s.count))
        .collect();
    assert_eq!(
        h,
        vec![
            (0, 1),
            (3, 1),
            (5, 1),
            (6, 2),
            (7, 2),
            (8, 3),
            (9, 5),
            (10, 3)
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn slices_combine_and_all_slice_sums_touchpoints() {
    let (app, mut c, tps, survey) = seeded().await;
    let q = |slice: Option<pb::Slice>| pb::QueryMetricsRequest {
        survey_id: survey.clone(),
        question_key: "nps".into(),
        slice,
        period: named("2026-03-02"),
        bucket: pb::Bucket::Total as i32,
        view: pb::MetricsView::Full as i32,
    };
    // All touchpoints on 2026-03-02: A1 + B1, n=16 → NPS -6.25, [-50.3109, 37.8109].
    let all = c.query_metrics(q(None)).await.unwrap().into_inner();
    let e = value(all.total.as_ref().unwrap(), pb::Metric::Nps);
    assert_eq!(e.sample_size, 16);
    close(e.value, -6.25);
    close(e.interval_low, -50.31089247631935);
    // B alone: n=6 → NPS -50, interval clipped to the scale at -100; upper 11.1126.
    let b = c
        .query_metrics(q(Some(pb::Slice {
            touchpoint_id: tps[1].clone(),
            ..Default::default()
        })))
        .await
        .unwrap()
        .into_inner();
    let e = value(b.total.as_ref().unwrap(), pb::Metric::Nps);
    close(e.value, -50.0);
    close(e.interval_low, -100.0);
    close(e.interval_high, 11.112614338043166);
    // Two filters at once (touchpoint and segment) read the full-grain rollup: same answer.
    let both = c
        .query_metrics(q(Some(pb::Slice {
            touchpoint_id: tps[1].clone(),
            segment: "family".into(),
            channel: pb::Channel::Web as i32,
            ..Default::default()
        })))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(both.total, b.total);
    let none = c
        .query_metrics(q(Some(pb::Slice {
            touchpoint_id: tps[1].clone(),
            segment: "senior".into(),
            ..Default::default()
        })))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.total.unwrap().count, 0);
    // Response counts without a question.
    let counts = c
        .query_metrics(pb::QueryMetricsRequest {
            question_key: String::new(),
            ..q(None)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts.total.as_ref().unwrap().count, 16);
    assert!(counts.total.unwrap().values.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn csat_top2_uses_wilson() {
    let (app, mut c, _tps, survey) = seeded().await;
    let res = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey,
            question_key: "csat".into(),
            period: named("2026-03"),
            bucket: pb::Bucket::Month as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // [5,4,4,3,2]: 3 of 5 in 4-5 → 0.6, Wilson 95 % [0.2307, 0.8824].
    let e = value(&res.buckets[0], pb::Metric::Top2Share);
    assert_eq!(e.sample_size, 5);
    close(e.value, 0.6);
    close(e.interval_low, 0.2307242812760128);
    close(e.interval_high, 0.882379225767352);
    assert_eq!(e.method, common::IntervalMethod::Wilson as i32);
    // Mean 3.6, sd 1.140175, t(0.975, 4) = 2.776445 → [2.1843, 5.0157].
    let m = value(&res.buckets[0], pb::Metric::Mean);
    close(m.value, 3.6);
    close(
        m.interval_low,
        3.6 - 2.7764451051977987 * 1.140175425099138 / 5f64.sqrt(),
    );
    app.stop().await;
}

#[tokio::test]
async fn comparing_two_days_gives_difference_interval_and_p_value() {
    let (app, mut c, tps, survey) = seeded().await;
    let side = |day: &str| pb::ComparisonSide {
        slice: Some(pb::Slice {
            touchpoint_id: tps[0].clone(),
            ..Default::default()
        }),
        period: named(day),
    };
    let res = c
        .compare_metrics(pb::CompareMetricsRequest {
            survey_id: survey.clone(),
            question_key: "nps".into(),
            metric: pb::Metric::Nps as i32,
            a: Some(side("2026-03-02")),
            b: Some(side("2026-03-03")),
        })
        .await
        .unwrap()
        .into_inner()
        .comparison
        .unwrap();
    // 12.5 - 20 = -7.5, se = 100·sqrt(0.076 + 0.076172) = 39.0092, [-83.9567, 68.9567], p = 0.8475.
    close(res.difference, -7.5);
    close(res.standard_error, 39.009213655237915);
    close(res.interval_low, -83.95665382949439);
    close(res.interval_high, 68.95665382949439);
    close(res.p_value, 0.8475367705514583);
    assert_eq!(res.a.unwrap().sample_size, 10);
    assert_eq!(res.b.unwrap().sample_size, 8);
    // A metric that does not fit the question is refused with its field.
    let err = c
        .compare_metrics(pb::CompareMetricsRequest {
            survey_id: survey,
            question_key: "nps".into(),
            metric: pb::Metric::Top2Share as i32,
            a: Some(side("2026-03-02")),
            b: Some(side("2026-03-03")),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["metric"]);
    app.stop().await;
}

#[tokio::test]
async fn sides_that_share_responses_are_compared_without_counting_them_twice() {
    let (app, mut c, tps, survey) = seeded().await;
    let side = |touchpoint: Option<&String>, period: &str| pb::ComparisonSide {
        slice: touchpoint.map(|t| pb::Slice {
            touchpoint_id: t.clone(),
            ..Default::default()
        }),
        period: named(period),
    };
    let compare = |a: pb::ComparisonSide, b: pb::ComparisonSide| pb::CompareMetricsRequest {
        survey_id: survey.clone(),
        question_key: "nps".into(),
        metric: pb::Metric::Nps as i32,
        a: Some(a),
        b: Some(b),
    };
    // Touchpoint A against all touchpoints that day: b (A1) lies inside a (A1 + B1), so
    // b − a = (6/16)·(A1 − B1). Reference (numpy/scipy, that route): 26.25, se 15.6075,
    // [-4.3401, 56.8401], p 0.0926. Taken as independent samples it would be se 35.57,
    // p 0.461.
    let nested = c
        .compare_metrics(compare(
            side(None, "2026-03-02"),
            side(Some(&tps[0]), "2026-03-02"),
        ))
        .await
        .unwrap()
        .into_inner()
        .comparison
        .unwrap();
    close(nested.difference, 26.25);
    close(nested.standard_error, 15.607490189008608);
    close(nested.interval_low, -4.3401186595191135);
    close(nested.interval_high, 56.84011865951911);
    close(nested.p_value, 0.09259118708482192);
    assert_eq!(nested.a.unwrap().sample_size, 16);
    assert_eq!(nested.b.unwrap().sample_size, 10);
    // Touchpoint A over the week (A1 + A2) against everything on Monday (A1 + B1): they share
    // A1. Reference as Var(a) + Var(b) − 2 Cov(a, b): -22.9167, se 17.0542, p 0.1790.
    let partial = c
        .compare_metrics(compare(
            side(Some(&tps[0]), "2026-W10"),
            side(None, "2026-03-02"),
        ))
        .await
        .unwrap()
        .into_inner()
        .comparison
        .unwrap();
    close(partial.difference, -22.916666666666668);
    close(partial.standard_error, 17.054232214314226);
    close(partial.interval_low, -56.34234759070533);
    close(partial.interval_high, 10.509014257371991);
    close(partial.p_value, 0.179028443804213);
    // Two touchpoints share nothing: the independent comparison.
    let apart = c
        .compare_metrics(compare(
            side(Some(&tps[0]), "2026-03-02"),
            side(Some(&tps[1]), "2026-03-02"),
        ))
        .await
        .unwrap()
        .into_inner()
        .comparison
        .unwrap();
    // -50 − 20; se = 100·sqrt(0.76/10 + (5/6 − 0.25)/6).
    close(apart.difference, -70.0);
    close(
        apart.standard_error,
        100.0 * (0.76f64 / 10.0 + (5.0 / 6.0 - 0.25) / 6.0).sqrt(),
    );
    app.stop().await;
}

#[tokio::test]
async fn metric_requests_are_validated() {
    let (app, mut c, _tps, survey) = seeded().await;
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey.clone(),
            question_key: "nps".into(),
            period: Some(common::Period {
                kind: Some(common::period::Kind::Range(common::TimeRange {
                    start: Some(prost_types::Timestamp {
                        seconds: 1_772_409_600 + 3600,
                        nanos: 0,
                    }),
                    end: Some(prost_types::Timestamp {
                        seconds: 1_772_409_600 + 86_400,
                        nanos: 0,
                    }),
                })),
            }),
            bucket: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["period", "bucket"]);
    // Half a second past midnight is not a day boundary either.
    let range = |start: prost_types::Timestamp, end: Option<prost_types::Timestamp>| {
        Some(common::Period {
            kind: Some(common::period::Kind::Range(common::TimeRange {
                start: Some(start),
                end,
            })),
        })
    };
    let midnight = |nanos| prost_types::Timestamp {
        seconds: 1_772_409_600,
        nanos,
    };
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey.clone(),
            question_key: "nps".into(),
            period: range(
                midnight(500_000_000),
                Some(prost_types::Timestamp {
                    seconds: 1_772_409_600 + 86_400,
                    nanos: 0,
                }),
            ),
            bucket: pb::Bucket::Day as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["period"]);
    // A missing end is named as such.
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey.clone(),
            question_key: "nps".into(),
            period: range(midnight(0), None),
            bucket: pb::Bucket::Day as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["period.range.end"]);
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey.clone(),
            question_key: "why".into(),
            period: named("2026-Q1"),
            bucket: pb::Bucket::Quarter as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["question_key"]);
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey,
            question_key: "nps".into(),
            period: named("2026-Q5"),
            bucket: pb::Bucket::Quarter as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["period.named"]);
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: "nope".into(),
            question_key: "nps".into(),
            period: named("2026-Q1"),
            bucket: pb::Bucket::Quarter as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_answers_each_query_as_alone_and_names_bad_ones_by_position() {
    let (app, mut c, tps, survey) = seeded().await;
    let q = |tp: &str, period: &str| pb::QueryMetricsRequest {
        survey_id: survey.clone(),
        question_key: "nps".into(),
        slice: Some(pb::Slice {
            touchpoint_id: tp.into(),
            ..Default::default()
        }),
        period: named(period),
        bucket: pb::Bucket::Day as i32,
        view: pb::MetricsView::Full as i32,
    };
    let queries = vec![
        q(&tps[0], "2026-W10"),
        q(&tps[1], "2026-03-02"),
        q("", "2026-03"),
    ];
    let batch = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: queries.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 3);
    for (query, result) in queries.into_iter().zip(&batch.results) {
        let alone = c.query_metrics(query).await.unwrap().into_inner();
        assert_eq!(&alone, result);
    }
    // A1 + A2 over the week: NPS 16.6667 (see above); B1: -50.
    close(
        value(batch.results[0].total.as_ref().unwrap(), pb::Metric::Nps).value,
        16.666666666666664,
    );
    close(
        value(batch.results[1].total.as_ref().unwrap(), pb::Metric::Nps).value,
        -50.0,
    );
    let err = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: vec![q(&tps[0], "2026-W10"), q(&tps[0], "2026-W99")],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["queries[1].period.named"]);
    let mut unknown = q(&tps[0], "2026-W10");
    unknown.question_key = "nope".into();
    let err = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: vec![q(&tps[0], "2026-W10"), unknown],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["queries[1].question_key"]);
    let err = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest { queries: vec![] })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["queries"]);
    // Too many queries: refused on `queries` alone, none of them looked at.
    let err = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: vec![pb::QueryMetricsRequest::default(); 501],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["queries"]);
    // 101 years of days bucket by bucket is more than one answer should hold (36,600
    // buckets), in the full view, the histogram view or both together; packed in the dense
    // view it is fine.
    let year = |view: pb::MetricsView| pb::QueryMetricsRequest {
        period: named("2025"),
        view: view as i32,
        ..q(&tps[0], "2025")
    };
    let mixed: Vec<_> = (0..101)
        .map(|i| {
            year(if i % 2 == 0 {
                pb::MetricsView::Full
            } else {
                pb::MetricsView::Histogram
            })
        })
        .collect();
    for queries in [
        vec![year(pb::MetricsView::Full); 101],
        vec![year(pb::MetricsView::Histogram); 101],
        mixed,
    ] {
        let err = c
            .batch_query_metrics(pb::BatchQueryMetricsRequest { queries })
            .await
            .unwrap_err();
        assert_eq!(violations(&err), vec!["queries"]);
    }
    let counts = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: vec![year(pb::MetricsView::Dense); 101],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts.results.len(), 101);
    assert!(counts.results.iter().all(|r| r.dense.is_some()));
    // The dense view has a limit of its own: 500 queries of two years of days pass it.
    let two_years = pb::QueryMetricsRequest {
        period: Some(common::Period {
            kind: Some(common::period::Kind::Range(common::TimeRange {
                start: Some(prost_types::Timestamp {
                    seconds: at("2024-01-01T00:00:00Z").timestamp(),
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: at("2026-01-01T00:00:00Z").timestamp(),
                    nanos: 0,
                }),
            })),
        }),
        ..year(pb::MetricsView::Dense)
    };
    let err = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: vec![two_years; 500],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["queries"]);
    assert!(err.message().contains("dense"), "{}", err.message());
    app.stop().await;
}

#[tokio::test]
async fn slices_read_together_in_a_batch_equal_each_read_alone() {
    let (app, mut c, tps, survey) = seeded().await;
    let q = |slice: pb::Slice, bucket: pb::Bucket, view: pb::MetricsView| pb::QueryMetricsRequest {
        survey_id: survey.clone(),
        question_key: "nps".into(),
        slice: Some(slice),
        period: named("2026-03"),
        bucket: bucket as i32,
        view: view as i32,
    };
    let tp = |t: &str| pb::Slice {
        touchpoint_id: t.into(),
        ..Default::default()
    };
    // Same survey, question and days: touchpoint slices, the all-slice, a segment, and
    // totals are grouped into shared reads; a two-dimension slice goes alone.
    let queries = vec![
        q(tp(&tps[0]), pb::Bucket::Day, pb::MetricsView::Full),
        q(tp(&tps[1]), pb::Bucket::Day, pb::MetricsView::Histogram),
        q(
            pb::Slice::default(),
            pb::Bucket::Week,
            pb::MetricsView::Full,
        ),
        q(tp(&tps[0]), pb::Bucket::Total, pb::MetricsView::Full),
        q(tp(&tps[1]), pb::Bucket::Total, pb::MetricsView::Histogram),
        q(
            tp("no-such-touchpoint"),
            pb::Bucket::Total,
            pb::MetricsView::Full,
        ),
        q(
            pb::Slice {
                touchpoint_id: tps[0].clone(),
                segment: "family".into(),
                ..Default::default()
            },
            pb::Bucket::Day,
            pb::MetricsView::Full,
        ),
    ];
    let batch = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: queries.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), queries.len());
    for (query, result) in queries.into_iter().zip(&batch.results) {
        let alone = c.query_metrics(query).await.unwrap().into_inner();
        assert_eq!(&alone, result);
    }
    assert!(batch.results[1].buckets.iter().all(|b| b.values.is_empty()));
    assert!(batch.results[0].total.as_ref().unwrap().count > 0);
    assert_eq!(batch.results[5].total.as_ref().unwrap().count, 0);

    // The dense view holds the same counts as the full view's histograms, row by row.
    let dense = c
        .batch_query_metrics(pb::BatchQueryMetricsRequest {
            queries: vec![q(tp(&tps[0]), pb::Bucket::Day, pb::MetricsView::Dense)],
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .remove(0);
    assert!(dense.buckets.is_empty());
    let m = dense.dense.unwrap();
    assert_eq!((m.scale_min, m.scale_points), (0, 11));
    assert_eq!(m.counts.len(), 31 * 11);
    for (row, bucket) in m.counts.chunks(11).zip(&batch.results[0].buckets) {
        let mut expected = [0u64; 11];
        for sc in &bucket.histogram {
            expected[sc.score as usize] = sc.count;
        }
        assert_eq!(row, expected);
    }
    app.stop().await;
}

#[tokio::test]
async fn batched_slice_reads_follow_every_write_after_them() {
    // Single-dimension slices of a batch may be served from memory (the embedded mode): each
    // read must still equal the stored rollups after any later write. The reference is the
    // same touchpoint read as a two-dimension slice (every response here is on the web
    // channel), which always reads the database.
    let (app, mut c, tps, survey) = seeded().await;
    let q = |slice: pb::Slice| pb::QueryMetricsRequest {
        survey_id: survey.clone(),
        question_key: "nps".into(),
        slice: Some(slice),
        period: named("2026-03"),
        bucket: pb::Bucket::Day as i32,
        view: pb::MetricsView::Full as i32,
    };
    let marginal = pb::Slice {
        touchpoint_id: tps[0].clone(),
        ..Default::default()
    };
    let reference = pb::Slice {
        touchpoint_id: tps[0].clone(),
        channel: pb::Channel::Web as i32,
        ..Default::default()
    };
    let read = async |c: &mut cxloop_e2e::Client| {
        let r = c
            .batch_query_metrics(pb::BatchQueryMetricsRequest {
                queries: vec![q(marginal.clone()), q(reference.clone())],
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert_eq!(r[0].buckets, r[1].buckets);
        assert_eq!(r[0].total, r[1].total);
        r[0].total.as_ref().unwrap().count
    };
    let first = read(&mut c).await;
    assert!(first > 0);
    // A day already counted, a day with nobody yet, and a day before the period.
    record_nps(
        &mut c,
        "more-a",
        &survey,
        &tps[0],
        at("2026-03-02T20:00:00Z"),
        &[10, 10, 3],
    )
    .await;
    record_nps(
        &mut c,
        "more-b",
        &survey,
        &tps[0],
        at("2026-03-20T10:00:00Z"),
        &[9],
    )
    .await;
    record_nps(
        &mut c,
        "more-c",
        &survey,
        &tps[0],
        at("2026-02-20T10:00:00Z"),
        &[0],
    )
    .await;
    assert_eq!(read(&mut c).await, first + 4);
    // The unary path, and a retry that must not count twice.
    for _ in 0..2 {
        c.record_response(response(
            "one",
            &survey,
            &tps[0],
            at("2026-03-31T23:59:59Z"),
            &[("nps", 8)],
        ))
        .await
        .unwrap();
    }
    assert_eq!(read(&mut c).await, first + 5);
    app.stop().await;
}

/// A response is counted once whichever of its questions it answered: with a scored answer
/// its count rides on that answer's full-grain row, without one (free text only) on a row of
/// its own. Response counts over one filter (the slice rollup) and over combined filters
/// (the full-grain series) agree, and every measure's n is its own answers.
#[tokio::test]
async fn a_response_is_counted_once_whatever_it_answered() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["A", "B"]).await;
    let when = at("2026-04-01T09:00:00Z");
    let mut text_only = response("a-text", &survey, &tps[0], when, &[]);
    if let Some(r) = text_only.response.as_mut() {
        r.answers.push(pb::Answer {
            question_key: "why".into(),
            value: Some(pb::answer::Value::Text("Too slow".into())),
        });
    }
    let mut senior = response("a-senior", &survey, &tps[0], when, &[("csat", 2)]);
    if let Some(r) = senior.response.as_mut() {
        r.segment = "senior".into();
    }
    let items = vec![
        response("a-1", &survey, &tps[0], when, &[("nps", 9), ("csat", 4)]),
        response("a-2", &survey, &tps[0], when, &[("csat", 5)]),
        text_only,
        response("a-3", &survey, &tps[0], when, &[("value", 7), ("nps", 3)]),
        senior,
        response("b-1", &survey, &tps[1], when, &[("nps", 10)]),
    ];
    assert_eq!(import_one(&mut c, items).await.accepted, 6);
    // The unary path writes through the same rollups.
    c.record_response(response("a-4", &survey, &tps[0], when, &[("ces", 6)]))
        .await
        .unwrap();
    let count = |c: &mut cxloop_e2e::Client, key: &str, tp: usize, segment: &str| {
        let q = pb::QueryMetricsRequest {
            survey_id: survey.clone(),
            question_key: key.into(),
            slice: Some(pb::Slice {
                touchpoint_id: tps[tp].clone(),
                segment: segment.into(),
                ..Default::default()
            }),
            period: named("2026-04-01"),
            bucket: pb::Bucket::Total as i32,
            view: pb::MetricsView::Full as i32,
        };
        let mut c = c.clone();
        async move {
            c.query_metrics(q)
                .await
                .unwrap()
                .into_inner()
                .total
                .unwrap()
                .count
        }
    };
    // Touchpoint A: six responses, five of them in segment "family".
    assert_eq!(count(&mut c, "", 0, "").await, 6, "one filter");
    assert_eq!(count(&mut c, "", 0, "family").await, 5, "combined filters");
    assert_eq!(count(&mut c, "", 0, "senior").await, 1);
    assert_eq!(count(&mut c, "", 1, "family").await, 1);
    // Each measure counts its own answers, over one filter and over two.
    for (key, family, all) in [
        ("nps", 2, 2),
        ("csat", 2, 3),
        ("ces", 1, 1),
        ("value", 1, 1),
    ] {
        assert_eq!(count(&mut c, key, 0, "family").await, family, "{key}");
        assert_eq!(count(&mut c, key, 0, "").await, all, "{key}");
    }
    app.stop().await;
}
