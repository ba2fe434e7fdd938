//! Laws the rollups rely on: a slice's histogram is the sum of its parts' histograms, in any
//! grouping and order, and every metric of the merged parts equals the metric of the whole.

use cxloop_metrics::{Histogram, mean, nps, share};
use proptest::prelude::*;

fn of(scores: &[i32]) -> Histogram {
    scores.iter().map(|s| (*s, 1)).collect()
}

proptest! {
    #[test]
    fn merge_is_associative_and_commutative(a in prop::collection::vec(0..=10i32, 0..60),
                                           b in prop::collection::vec(0..=10i32, 0..60),
                                           c in prop::collection::vec(0..=10i32, 0..60)) {
        let (ha, hb, hc) = (of(&a), of(&b), of(&c));
        let mut left = ha.clone(); left.merge(&hb); left.merge(&hc);
        let mut bc = hb.clone(); bc.merge(&hc);
        let mut right = ha.clone(); right.merge(&bc);
        prop_assert_eq!(&left, &right);
        let mut ba = hb.clone(); ba.merge(&ha);
        let mut ab = ha.clone(); ab.merge(&hb);
        prop_assert_eq!(ab, ba);
        prop_assert_eq!(left.total(), (a.len() + b.len() + c.len()) as u64);
    }

    #[test]
    fn parts_sum_to_the_whole(scores in prop::collection::vec(0..=10i32, 1..300),
                              cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut bounds: Vec<usize> = cuts.iter().map(|i| i.index(scores.len() + 1)).collect();
        bounds.push(0);
        bounds.push(scores.len());
        bounds.sort_unstable();
        let mut merged = Histogram::new();
        for w in bounds.windows(2) {
            merged.merge(&of(&scores[w[0]..w[1]]));
        }
        let whole = of(&scores);
        prop_assert_eq!(&merged, &whole);
        let (m, w) = (nps(&merged), nps(&whole));
        prop_assert!((m.value - w.value).abs() < 1e-9 && (m.low - w.low).abs() < 1e-9);
        prop_assert!((mean(&merged).value - mean(&whole).value).abs() < 1e-9);
        let top = |h: &Histogram| share(h.count_between(9, 10), h.total()).value;
        prop_assert!((top(&merged) - top(&whole)).abs() < 1e-12);
    }

    #[test]
    fn intervals_contain_the_value_and_stay_on_the_scale(scores in prop::collection::vec(0..=10i32, 1..200)) {
        let h = of(&scores);
        let e = nps(&h);
        prop_assert!(e.low <= e.value && e.value <= e.high);
        prop_assert!(e.low >= -100.0 && e.high <= 100.0);
        let s = share(h.count_between(9, 10), h.total());
        prop_assert!(s.low >= 0.0 && s.high <= 1.0 && s.low <= s.value && s.value <= s.high);
        let m = mean(&h);
        prop_assert!(m.low <= m.value + 1e-12 && m.value <= m.high + 1e-12);
    }
}
