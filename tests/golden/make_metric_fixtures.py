"""Writes tests/golden/metrics.safetensors: an independent numpy/scipy/mpmath reference for the sample-quality
metrics of include/diffusion/metrics/ (Frechet distance, KID, precision/recall, streaming feature statistics).

Run: /usr/bin/python3 tests/golden/make_metric_fixtures.py   (Debian's numpy, scipy, mpmath; torch only to write
the safetensors file through safetensors_io.py). Deterministic: numpy.random.RandomState(seeds below).

How each reference is computed (none shares code or method with the C++):
  mean / covariance   numpy.mean, numpy.cov(rowvar=False) (two-pass, ddof = 1), as pytorch-fid's
                      calculate_activation_statistics
  Frechet distance    (1) pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of sigma1 @ sigma2, the
                          1e-6 diagonal offset when that is not finite, real part), re-typed here;
                      (2) a 50-digit mpmath evaluation from the features: mean and covariance in 50 digits, then a
                          symmetric eigendecomposition of S1 (mpmath.eigsy), R = V sqrt(L) V^T, the eigenvalues of
                          R S2 R and the sum of their square roots.
                      (2) is the truth the C++ is held to; (1) is what pytorch-fid would print.
  KID                 torch-fidelity's mmd2(..., "unbiased") over explicit kernel matrices
                      K = (X Y^T / D + 1)^3, on subsets drawn by numpy (stored as indices), mean and np.std;
                      cross-checked against clean-fid's kernel_distance arithmetic.
  precision/recall    direct differences sqrt(sum((a - b)^2)) (no Gram trick), radius = (k+1)-th smallest
                      distance including the zero to itself (torch-fidelity's kthvalue(k + 1), the reference's
                      np.partition(..)[:, k]), inside = d <= radius for some reference point. The script asserts
                      that no distance lies within 1e-9 (relative) of a radius, so rounding cannot flip a decision.

Layout (all F64; I64 for indices):
  fd.<case>.a, fd.<case>.b          features (n_a, D), (n_b, D)
  fd.<case>.mean_a, .cov_a, .mean_b, .cov_b   numpy statistics
  fd.<case>.scipy                   (1,) pytorch-fid's value on the numpy statistics
  fd.<case>.exact                   (1,) the mpmath value from the features
  fd.<case>.exact_trace_sqrt        (1,) tr((S_a S_b)^(1/2)) by mpmath from the features
  cases: "full" (D = 12, n = 100 / 80, well conditioned), "offset" (means ~1e4 with unit-scale spread: tests the
         streaming update's cancellation), "singular" (D = 32, n = 24 / 20: rank-deficient covariances)
  kid.x, kid.y                      features (120, 12), (100, 12)
  kid.subsets_x, kid.subsets_y      (10, 50) row indices (numpy RandomState(7).choice(..., replace=False))
  kid.values (10,), kid.mean (1,), kid.std (1,)
  pr.real (150, 6), pr.fake (120, 6), pr.k (1,) = 3
  pr.real_radius (150,), pr.fake_radius (120,)   k-NN radii (distances, not squared)
  pr.precision (1,), pr.recall (1,)
"""
import os
import sys

import mpmath
import numpy as np
import scipy.linalg
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402


def t64(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float64)))


def scalar(v):
    return t64(np.array([v], dtype=np.float64))


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    # pytorch-fid (src/pytorch_fid/fid_score.py, calculate_frechet_distance), same arithmetic.
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component %g" % np.max(np.abs(covmean.imag)))
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def exact_trace_sqrt(a, b, dps=50):
    """tr((A B)^(1/2)) for symmetric positive semi-definite mpmath matrices A and B."""
    mpmath.mp.dps = dps
    evals, evecs = mpmath.eigsy(a)
    n = a.rows
    root = mpmath.matrix(n, n)
    for k in range(n):
        lam = evals[k]
        s = mpmath.sqrt(lam) if lam > 0 else mpmath.mpf(0)
        for i in range(n):
            for j in range(n):
                root[i, j] += evecs[i, k] * s * evecs[j, k]
    m = root * b * root
    m = (m + m.T) / 2
    mu, _ = mpmath.eigsy(m)
    return sum((mpmath.sqrt(x) if x > 0 else mpmath.mpf(0)) for x in mu)


def exact_stats(x):
    """Mean and covariance (ddof = 1) of the float64 features x, in 50-digit arithmetic."""
    mpmath.mp.dps = 50
    n, d = x.shape
    rows = [[mpmath.mpf(float(v)) for v in row] for row in x]
    mean = [sum(r[j] for r in rows) / n for j in range(d)]
    cov = mpmath.matrix(d, d)
    for i in range(d):
        for j in range(i + 1):
            c = sum((r[i] - mean[i]) * (r[j] - mean[j]) for r in rows) / (n - 1)
            cov[i, j] = cov[j, i] = c
    return mean, cov


def exact_distance(a, b):
    """The Frechet distance of the Gaussian fits of feature sets a and b, everything in 50-digit arithmetic (the
    statistics too: a rank-deficient covariance stays exactly singular instead of picking up round-off
    eigenvalues whose square roots would enter the trace)."""
    mu1, s1 = exact_stats(a)
    mu2, s2 = exact_stats(b)
    mean_term = sum((p - q) ** 2 for p, q in zip(mu1, mu2))
    tr = sum(s1[i, i] + s2[i, i] for i in range(a.shape[1]))
    ts = exact_trace_sqrt(s1, s2)
    return float(mean_term + tr - 2 * ts), float(ts)


def gaussian_features(rng, n, d, shift, scale):
    mix = rng.normal(size=(d, d)) * scale / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def frechet_case(out, name, a, b):
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref_scipy = pytorch_fid_distance(mu_a, cov_a, mu_b, cov_b)
    ref_exact, ts = exact_distance(a, b)
    print(f"fd.{name}: D={a.shape[1]} n={a.shape[0]}/{b.shape[0]}  exact {ref_exact!r}  scipy {ref_scipy!r}  "
          f"rel diff {abs(ref_scipy - ref_exact) / abs(ref_exact):.3g}")
    for key, v in {"a": a, "b": b, "mean_a": mu_a, "mean_b": mu_b, "cov_a": cov_a, "cov_b": cov_b}.items():
        out[f"fd.{name}.{key}"] = t64(v)
    out[f"fd.{name}.scipy"] = scalar(ref_scipy)
    out[f"fd.{name}.exact"] = scalar(ref_exact)
    out[f"fd.{name}.exact_trace_sqrt"] = scalar(ts)


def mmd2_unbiased(x, y):
    # torch-fidelity metric_kid.py: polynomial_kernel (degree 3, gamma 1/D, coef0 1) and mmd2(..., "unbiased").
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m = x.shape[0]
    kt_xx = k_xx.sum() - np.trace(k_xx)
    kt_yy = k_yy.sum() - np.trace(k_yy)
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def clean_fid_term(x, y):
    # clean-fid's kernel_distance, one subset (x plays its feats2, y its feats1; the kernel is symmetric).
    n = x.shape[1]
    m = x.shape[0]
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    return ((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m


def kid_case(out):
    rng = np.random.RandomState(3)
    x = gaussian_features(rng, 120, 12, 0.0, 1.0)
    y = gaussian_features(rng, 100, 12, 0.3, 1.2)
    pick = np.random.RandomState(7)
    subsets, m = 10, 50
    sx = np.stack([pick.choice(x.shape[0], m, replace=False) for _ in range(subsets)])
    sy = np.stack([pick.choice(y.shape[0], m, replace=False) for _ in range(subsets)])
    values = np.array([mmd2_unbiased(x[sx[i]], y[sy[i]]) for i in range(subsets)])
    for i in range(subsets):
        alt = clean_fid_term(x[sx[i]], y[sy[i]])
        assert abs(alt - values[i]) <= 1e-12 * abs(values[i]) + 1e-15, (alt, values[i])
    print(f"kid: mean {values.mean()!r} std {values.std()!r}")
    out["kid.x"] = t64(x)
    out["kid.y"] = t64(y)
    out["kid.subsets_x"] = torch.from_numpy(sx.astype(np.int64))
    out["kid.subsets_y"] = torch.from_numpy(sy.astype(np.int64))
    out["kid.values"] = t64(values)
    out["kid.mean"] = scalar(values.mean())
    out["kid.std"] = scalar(values.std())


def pairwise(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def pr_case(out):
    rng = np.random.RandomState(11)
    k = 3
    real = rng.normal(size=(150, 6))
    fake = 1.3 * rng.normal(size=(120, 6)) + 0.4
    d_rr, d_ff, d_fr = pairwise(real, real), pairwise(fake, fake), pairwise(fake, real)
    # (k+1)-th smallest including self: torch-fidelity's kthvalue(k + 1), the reference's partition(..)[:, k].
    r_real = np.partition(d_rr, k, axis=1)[:, k]
    r_fake = np.partition(d_ff, k, axis=1)[:, k]
    assert np.allclose(r_real, np.sort(d_rr, axis=1)[:, k])
    precision = float((d_fr <= r_real[None, :]).any(axis=1).mean())
    recall = float((d_fr.T <= r_fake[None, :]).any(axis=1).mean())
    # No decision may depend on rounding.
    gap_p = np.abs(d_fr - r_real[None, :]) / r_real[None, :]
    gap_r = np.abs(d_fr.T - r_fake[None, :]) / r_fake[None, :]
    margin = min(gap_p.min(), gap_r.min())
    assert margin > 1e-9, margin
    # Radii: the k-th smallest distance to *other* points must be well separated from the (k+1)-th too.
    print(f"pr: precision {precision} recall {recall} (k = {k}, smallest relative margin {margin:.3g})")
    out["pr.real"] = t64(real)
    out["pr.fake"] = t64(fake)
    out["pr.k"] = scalar(k)
    out["pr.real_radius"] = t64(r_real)
    out["pr.fake_radius"] = t64(r_fake)
    out["pr.precision"] = scalar(precision)
    out["pr.recall"] = scalar(recall)


def main():
    out = {}
    rng = np.random.RandomState(1)
    frechet_case(out, "full", gaussian_features(rng, 100, 12, 0.0, 1.0), gaussian_features(rng, 80, 12, 0.5, 1.5))
    frechet_case(out, "offset", gaussian_features(rng, 100, 12, 1e4, 1.0), gaussian_features(rng, 80, 12, 1e4 + 0.5, 1.5))
    frechet_case(out, "singular", gaussian_features(rng, 24, 32, 0.0, 1.0), gaussian_features(rng, 20, 32, 0.2, 1.3))
    kid_case(out)
    pr_case(out)
    path = os.path.join(HERE, "metrics.safetensors")
    safetensors_io.save(path, out, {"generator": "tests/golden/make_metric_fixtures.py"})
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
