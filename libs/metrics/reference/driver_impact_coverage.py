# How often the driver-impact intervals (parametric Wishart bootstrap) cover the population
# values: 300 samples of multivariate normal data at n = 30 and n = 100 from the covariance S
# below, 1,000 draws each, with plain and with bias-corrected (BC) percentiles. Printed
# 2026-12-04 (numpy 2.4.6, scipy 1.17.1), columns R2, w1, w2, w3:
#   30 percentile [0.893 0.927 0.94  0.94 ] bias-corrected [0.95  0.88  0.923 0.89 ]
#   100 percentile [0.917 0.98  0.92  0.927] bias-corrected [0.94  0.973 0.92  0.937]
# cxloop uses BC for R2 and plain percentiles for the weights.
import numpy as np
from scipy.stats import wishart, norm
S = np.array([[400.0, 12.0, 9.0, 7.0],[12.0, 0.64, 0.30, 0.20],[9.0, 0.30, 0.49, 0.15],[7.0, 0.20, 0.15, 0.81]])
def rw(C):
    d = np.sqrt(np.diag(C)); R = C / np.outer(d, d)
    rxx, rxy = R[1:,1:], R[1:,0]
    lam, V = np.linalg.eigh(rxx)
    half = V @ np.diag(np.sqrt(lam)) @ V.T
    beta = np.linalg.solve(half, rxy)
    return np.concatenate([[beta @ beta], (half**2) @ (beta**2)])
truth = rw(S)
rng = np.random.default_rng(7)
for n in (30, 100):
    hp = np.zeros(4); hb = np.zeros(4); reps = 300
    for _ in range(reps):
        x = rng.multivariate_normal(np.zeros(4), S, size=n)
        s = np.cov(x, rowvar=False); pt = rw(s)
        W = wishart.rvs(df=n-1, scale=s/(n-1), size=1000, random_state=rng)
        d = np.array([rw(w) for w in W])
        lo, hi = np.quantile(d, 0.025, axis=0), np.quantile(d, 0.975, axis=0)
        hp += (lo <= truth) & (truth <= hi)
        z0 = norm.ppf(np.clip((d < pt).mean(axis=0), 1e-3, 1 - 1e-3))
        ql, qh = norm.cdf(2*z0 - 1.959964), norm.cdf(2*z0 + 1.959964)
        lo2 = np.array([np.quantile(d[:, j], ql[j]) for j in range(4)])
        hi2 = np.array([np.quantile(d[:, j], qh[j]) for j in range(4)])
        hb += (lo2 <= truth) & (truth <= hi2)
    print(n, "percentile", np.round(hp / reps, 3), "bias-corrected", np.round(hb / reps, 3))
