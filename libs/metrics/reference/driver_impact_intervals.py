# Reference for relative_weights_with_intervals (libs/metrics/src/ex.rs): the percentile intervals of
# Johnson's relative weights when the sample covariance is redrawn from Wishart(S/df, df)/df, by scipy,
# 400,000 draws. Run with n = 200 (the default) and with n = 30: python3 driver_impact_intervals.py 30
import numpy as np
from scipy.stats import wishart
import sys
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
mu = np.array([65.0, 3.6, 3.4, 3.8])
S = np.array([[400.0, 12.0, 9.0, 7.0],
              [12.0, 0.64, 0.30, 0.20],
              [9.0, 0.30, 0.49, 0.15],
              [7.0, 0.20, 0.15, 0.81]])
def rw(C):
    d = np.sqrt(np.diag(C)); R = C / np.outer(d, d)
    rxx, rxy = R[1:,1:], R[1:,0]
    lam, V = np.linalg.eigh(rxx)
    half = V @ np.diag(np.sqrt(lam)) @ V.T
    beta = np.linalg.solve(half, rxy)
    raw = (half**2) @ (beta**2)
    return beta @ beta, raw
r2, raw = rw(S)
print("point r2", repr(r2), "raw", [repr(x) for x in raw], "rescaled", [repr(x) for x in raw / r2])
df = n - 1
rng = np.random.default_rng(1)
W = wishart.rvs(df=df, scale=S/df, size=400000, random_state=rng)
out = [rw(w) for w in W]
R2 = np.array([o[0] for o in out]); RAW = np.array([o[1] for o in out])
q = lambda x: (np.quantile(x, 0.025), np.quantile(x, 0.975), np.std(x, ddof=1))
print("r2", q(R2))
from scipy.stats import norm
z0 = norm.ppf(min(max((R2 < r2).mean(), 1e-3), 1 - 1e-3))
print("r2 bias-corrected", np.quantile(R2, norm.cdf(2 * z0 - 1.959964)), np.quantile(R2, norm.cdf(2 * z0 + 1.959964)))
for j in range(3):
    print("raw", j, q(RAW[:, j]), "rescaled", q(RAW[:, j] / R2))
print("sums", list(n * mu))
cross = (n - 1) * S + n * np.outer(mu, mu)
print("cross", [list(r) for r in cross])
