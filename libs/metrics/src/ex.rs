//! Employee-experience maths: means from additive moments (engagement index, driver
//! favourability), their comparison between cycles, and driver impact by Johnson's relative
//! weights. The employee service stores only sums (n, Σx, Σx², Σxᵢxⱼ) per group, never a
//! respondent's row, so everything here works from sums; sums of parts add up to the sums of
//! the whole, like histograms do.

use crate::{CONFIDENCE, Comparison, Estimate, Method, t975, untestable};

/// Additive sums of one per-respondent variable: count, sum and sum of squares.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    /// Respondents.
    pub n: u64,
    /// Σx.
    pub sum: f64,
    /// Σx².
    pub sum_sq: f64,
}

impl Moments {
    /// Adds one observation.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// Adds the sums of another group (disjoint respondents).
    pub fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
    }

    /// Mean and unbiased variance (0 for n < 2), from the stored sums. Values are bounded
    /// (0-100 or 1-5), so the one-pass formula is accurate enough except for a group whose
    /// values are all the same: rounding then leaves a variance of up to 1e-11 × mean² (300,000
    /// respondents at 4.2 summed one by one), which would make a real test of two constant
    /// groups. Below 1e-10 × mean² the variance is taken as 0; a real one is at least about
    /// (step between values)² / n, far above that for any group size.
    fn mean_var(&self) -> (f64, f64) {
        if self.n == 0 {
            return (0.0, 0.0);
        }
        let n = self.n as f64;
        let m = self.sum / n;
        if self.n < 2 {
            return (m, 0.0);
        }
        let var = ((self.sum_sq - n * m * m) / (n - 1.0)).max(0.0);
        (m, if var <= 1e-10 * m * m { 0.0 } else { var })
    }
}

/// The mean of a per-respondent variable with a Student t interval, from its sums.
pub fn mean_of(m: &Moments) -> Estimate {
    let (mean, var) = m.mean_var();
    match m.n {
        0 => Estimate::empty(Method::StudentT),
        1 => Estimate {
            value: mean,
            n: 1,
            low: mean,
            high: mean,
            ..Estimate::empty(Method::StudentT)
        },
        n => {
            let se = (var / n as f64).sqrt();
            let t = t975(n - 1);
            Estimate {
                value: mean,
                n,
                confidence: CONFIDENCE,
                low: mean - t * se,
                high: mean + t * se,
                standard_error: se,
                method: Method::StudentT,
                defined: true,
            }
        }
    }
}

/// Mean b − a with Welch's t test, from sums (two independent groups).
pub fn compare_means_of(a: &Moments, b: &Moments) -> Comparison {
    let (ea, eb) = (mean_of(a), mean_of(b));
    if a.n < 2 || b.n < 2 {
        return untestable(ea, eb);
    }
    let (_, va) = a.mean_var();
    let (_, vb) = b.mean_var();
    let (qa, qb) = (va / a.n as f64, vb / b.n as f64);
    let se = (qa + qb).sqrt();
    if se <= 0.0 {
        return untestable(ea, eb);
    }
    let df = (qa + qb).powi(2) / (qa * qa / (a.n - 1) as f64 + qb * qb / (b.n - 1) as f64);
    crate::t_comparison(ea, eb, se, df)
}

/// Sums of a vector of per-respondent variables: n, Σzᵢ and Σzᵢzⱼ (full square matrix).
#[derive(Clone, Debug, PartialEq)]
pub struct CrossMoments {
    /// Respondents.
    pub n: u64,
    /// Σzᵢ per variable.
    pub sums: Vec<f64>,
    /// Σzᵢzⱼ, row-major, symmetric.
    pub cross: Vec<Vec<f64>>,
}

impl CrossMoments {
    /// Empty sums of `p` variables.
    pub fn new(p: usize) -> Self {
        Self {
            n: 0,
            sums: vec![0.0; p],
            cross: vec![vec![0.0; p]; p],
        }
    }

    /// Adds one respondent's vector (must have the same length).
    pub fn add(&mut self, z: &[f64]) {
        self.n += 1;
        for (i, zi) in z.iter().enumerate() {
            self.sums[i] += zi;
            for (j, zj) in z.iter().enumerate() {
                self.cross[i][j] += zi * zj;
            }
        }
    }

    /// The correlation matrix, or None when a variable has no variance (or n < 3).
    pub fn correlations(&self) -> Option<Vec<Vec<f64>>> {
        if self.n < 3 {
            return None;
        }
        let n = self.n as f64;
        let p = self.sums.len();
        let cov = |i: usize, j: usize| self.cross[i][j] - self.sums[i] * self.sums[j] / n;
        let sd: Vec<f64> = (0..p).map(|i| cov(i, i).max(0.0).sqrt()).collect();
        // A variable that never varies (everyone answered 4) has no correlation to speak of.
        if sd.iter().any(|s| *s <= 1e-9 * n.sqrt()) {
            return None;
        }
        Some(
            (0..p)
                .map(|i| (0..p).map(|j| cov(i, j) / (sd[i] * sd[j])).collect())
                .collect(),
        )
    }
}

/// Driver impact by Johnson's relative weights (Johnson 2000, "A heuristic method for
/// estimating the relative weight of predictor variables in multiple regression").
#[derive(Clone, Debug, PartialEq)]
pub struct RelativeWeights {
    /// R² of the regression of the outcome on all predictors.
    pub r_squared: f64,
    /// One raw weight per predictor; they sum to R².
    pub raw: Vec<f64>,
}

/// Relative weights of predictors 1..p for the outcome 0, from the sums of the vector
/// (outcome, predictors…). None when the correlation matrix is degenerate (no variance,
/// perfectly collinear drivers, or n < 3).
pub fn relative_weights(m: &CrossMoments) -> Option<RelativeWeights> {
    let r = m.correlations()?;
    let p = r.len().checked_sub(1).filter(|p| *p > 0)?;
    let rxx: Vec<Vec<f64>> = (1..=p).map(|i| r[i][1..].to_vec()).collect();
    let rxy: Vec<f64> = (1..=p).map(|i| r[i][0]).collect();
    let (values, vectors) = symmetric_eigen(&rxx);
    if values.iter().any(|v| *v <= 1e-10) {
        return None;
    }
    // Λ = Rxx^½ = V diag(√λ) Vᵀ: the correlations between the predictors and their closest
    // orthogonal counterparts Z. β = Λ⁻¹ rxy regresses the outcome on Z (Z is orthonormal,
    // so R² = Σβ²), and each predictor's weight is Σₖ Λⱼₖ² βₖ².
    let lam = |f: &dyn Fn(f64) -> f64| -> Vec<Vec<f64>> {
        (0..p)
            .map(|i| {
                (0..p)
                    .map(|j| {
                        (0..p)
                            .map(|k| vectors[i][k] * f(values[k]) * vectors[j][k])
                            .sum()
                    })
                    .collect()
            })
            .collect()
    };
    let half = lam(&|v: f64| v.sqrt());
    let inv_half = lam(&|v: f64| 1.0 / v.sqrt());
    let beta: Vec<f64> = (0..p)
        .map(|i| (0..p).map(|j| inv_half[i][j] * rxy[j]).sum())
        .collect();
    let raw: Vec<f64> = (0..p)
        .map(|j| (0..p).map(|k| half[j][k].powi(2) * beta[k].powi(2)).sum())
        .collect();
    Some(RelativeWeights {
        r_squared: beta.iter().map(|b| b * b).sum(),
        raw,
    })
}

/// Eigenvalues and eigenvectors (as columns: `vectors[i][k]` is component i of vector k) of a
/// small symmetric matrix, by cyclic Jacobi rotations. Drivers are few (under 20), so the
/// O(p³) sweeps cost microseconds.
pub fn symmetric_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let p = a.len();
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let mut v: Vec<Vec<f64>> = (0..p)
        .map(|i| (0..p).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..p)
            .flat_map(|i| (0..p).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for i in 0..p {
            for j in i + 1..p {
                if m[i][j].abs() < 1e-300 {
                    continue;
                }
                // The rotation angle that zeroes m[i][j] (Numerical Recipes' stable form).
                let theta = (m[j][j] - m[i][i]) / (2.0 * m[i][j]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in m.iter_mut() {
                    let (mki, mkj) = (row[i], row[j]);
                    row[i] = c * mki - s * mkj;
                    row[j] = s * mki + c * mkj;
                }
                let (ri, rj) = (m[i].clone(), m[j].clone());
                for (k, (mik, mjk)) in ri.iter().zip(&rj).enumerate() {
                    m[i][k] = c * mik - s * mjk;
                    m[j][k] = s * mik + c * mjk;
                }
                for row in v.iter_mut() {
                    let (vki, vkj) = (row[i], row[j]);
                    row[i] = c * vki - s * vkj;
                    row[j] = s * vki + c * vkj;
                }
            }
        }
    }
    ((0..p).map(|i| m[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    //! Reference values were computed independently with numpy 2 (np.corrcoef,
    //! np.linalg.eigh, np.linalg.solve) from the inputs beside each assertion; the script is
    //! reproduced in the comments.
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} != {b} (tol {tol})");
    }

    /// Groups whose members all gave the same value have no variance, whatever rounding the
    /// one-pass sums leave: two of them cannot be tested against each other, and a mean of
    /// one has a zero-width interval, not a spurious one.
    #[test]
    fn constant_groups_have_no_variance() {
        let group = |x: f64, n: usize| {
            let mut m = Moments::default();
            for _ in 0..n {
                m.add(x);
            }
            m
        };
        for (x, n) in [(4.2, 1000), (3.7, 300_000), (66.666_666_666_666_67, 1000)] {
            let e = mean_of(&group(x, n));
            assert_eq!((e.low, e.high), (e.value, e.value), "{x} × {n}");
        }
        let c = compare_means_of(&group(4.2, 1000), &group(4.6, 1000));
        assert_eq!((c.p_value, c.defined), (1.0, false));
        // One different answer among a thousand is variance, and is tested.
        let mut b = group(4.6, 999);
        b.add(4.2);
        let c = compare_means_of(&group(4.2, 1000), &b);
        assert!(c.defined && c.p_value < 1e-6, "{c:?}");
    }

    /// (engagement 0-100, driver means x1, x2, x3) of ten respondents.
    const DATA: [[f64; 4]; 10] = [
        [80.0, 4.0, 3.5, 4.5],
        [60.0, 3.0, 3.0, 4.0],
        [100.0, 5.0, 4.5, 4.0],
        [40.0, 2.5, 3.0, 3.0],
        [70.0, 3.5, 4.0, 3.5],
        [90.0, 4.5, 4.0, 5.0],
        [50.0, 3.0, 2.5, 3.5],
        [20.0, 2.0, 2.0, 2.5],
        [75.0, 4.0, 3.0, 4.0],
        [65.0, 3.5, 3.5, 3.0],
    ];

    #[test]
    fn jacobi_matches_numpy_eigh() {
        // np.linalg.eigh([[4,1,2],[1,3,0.5],[2,0.5,5]])[0] = [2.09652162, 3.07222395, 6.83125443]
        let a = vec![
            vec![4.0, 1.0, 2.0],
            vec![1.0, 3.0, 0.5],
            vec![2.0, 0.5, 5.0],
        ];
        let (mut values, vectors) = symmetric_eigen(&a);
        // A v = λ v for every pair.
        for (k, lambda) in values.iter().enumerate() {
            for (i, row) in a.iter().enumerate() {
                let av: f64 = (0..3).map(|j| row[j] * vectors[j][k]).sum();
                close(av, lambda * vectors[i][k], 1e-10);
            }
        }
        values.sort_by(f64::total_cmp);
        close(values[0], 2.096_521_62, 1e-8);
        close(values[1], 3.072_223_95, 1e-8);
        close(values[2], 6.831_254_43, 1e-8);
    }

    #[test]
    fn relative_weights_match_numpy() {
        // R = np.corrcoef(DATA.T); Rxx = R[1:,1:]; rxy = R[1:,0]; w, V = eigh(Rxx);
        // L = V diag(sqrt w) Vᵀ; beta = solve(L, rxy); raw = (L**2) @ beta**2
        // → R² 0.98783774 (= rxyᵀ Rxx⁻¹ rxy), raw [0.40262552, 0.32540923, 0.25980299].
        let mut m = CrossMoments::new(4);
        for row in DATA {
            m.add(&row);
        }
        // The sums the store would hold: n 10, Σ [650, 35, 33, 37], Σzz[0][0] 47350.
        assert_eq!(m.n, 10);
        close(m.sums[0], 650.0, 0.0);
        close(m.cross[0][0], 47_350.0, 0.0);
        close(m.cross[1][3], 134.25, 1e-12);
        let rw = relative_weights(&m).unwrap_or_else(|| panic!("defined"));
        close(rw.r_squared, 0.987_837_739_262_372_6, 1e-9);
        close(rw.raw[0], 0.402_625_52, 1e-8);
        close(rw.raw[1], 0.325_409_23, 1e-8);
        close(rw.raw[2], 0.259_802_99, 1e-8);
        close(rw.raw.iter().sum::<f64>(), rw.r_squared, 1e-12);
    }

    #[test]
    fn relative_weights_refuse_degenerate_input() {
        let mut m = CrossMoments::new(3);
        for i in 0..10 {
            // x2 is x1 exactly: perfectly collinear drivers.
            let x = f64::from(i % 5);
            m.add(&[x * 10.0 + f64::from(i), x, x]);
        }
        assert!(relative_weights(&m).is_none());
        let mut flat = CrossMoments::new(2);
        for _ in 0..10 {
            flat.add(&[50.0, 4.0]);
        }
        assert!(relative_weights(&flat).is_none());
    }

    #[test]
    fn mean_of_moments_has_a_t_interval() {
        // Engagement of DATA: mean 65, sd 23.804761 (ddof 1), se 7.527727;
        // t(0.975, 9) = 2.262157 (scipy.stats.t.ppf) → [47.971100, 82.028900].
        let mut m = Moments::default();
        for row in DATA {
            m.add(row[0]);
        }
        let e = mean_of(&m);
        assert_eq!(e.n, 10);
        close(e.value, 65.0, 1e-12);
        close(e.standard_error, 7.527_726_527_090_81, 1e-9);
        close(e.low, 47.971_099_517_586_154, 1e-5);
        close(e.high, 82.028_900_482_413_85, 1e-5);
        let mut one = Moments::default();
        one.add(3.0);
        assert!(!mean_of(&one).defined);
        assert!(!mean_of(&Moments::default()).defined);
        // Sums of parts are the sums of the whole.
        let (mut a, mut b) = (Moments::default(), Moments::default());
        for (i, row) in DATA.iter().enumerate() {
            if i < 4 { a.add(row[0]) } else { b.add(row[0]) }
        }
        a.merge(&b);
        assert_eq!(a, m);
    }

    #[test]
    fn comparing_means_of_moments_is_welch() {
        // a = [80,60,100,40,70], b = [90,50,20,75,65]: means 70 and 60, variances 500 and 712.5
        // (numpy var ddof=1); se = sqrt(100 + 142.5) = 15.572412;
        // df = 242.5² / (100²/4 + 142.5²/4) = 7.761600.
        let (mut a, mut b) = (Moments::default(), Moments::default());
        for row in &DATA[..5] {
            a.add(row[0]);
        }
        for row in &DATA[5..] {
            b.add(row[0]);
        }
        let c = compare_means_of(&a, &b);
        close(c.difference, -10.0, 1e-12);
        close(c.standard_error, 15.572_411_502_397_436, 1e-9);
        close(c.degrees_of_freedom, 7.761_600_329_964_941, 1e-9);
        assert!(c.p_value > 0.5 && c.p_value < 0.6, "{}", c.p_value);
    }
}
