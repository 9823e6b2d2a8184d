"""Statistics over seeds: mean ± sample std (the tables), mean ± standard error, differences, and the verdict
rules of the claims suite.

A sign is claimed only where |Δ| > 2 SE, with SE(Δ) = √(SE_a² + SE_b²) for independent seeds.
"""

from __future__ import annotations

import math


def _mean_var(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample variance (None for fewer than 2 values)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, None
    return m, sum((x - m) ** 2 for x in xs) / (n - 1)


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than 2 values); (None, None) without values."""
    if not xs:
        return None, None
    m, var = _mean_var(xs)
    return m, None if var is None else math.sqrt(var)


def mean_se(xs: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample std / √n); None for fewer than 2 values."""
    m, var = _mean_var(xs)
    return m, None if var is None else math.sqrt(var / len(xs))


def diff(a: tuple[float, float | None], b: tuple[float, float | None]) -> tuple[float, float | None]:
    """Δ = b − a and its standard error √(SE_a² + SE_b²) (None where either is unknown)."""
    se = None if a[1] is None or b[1] is None else math.hypot(a[1], b[1])
    return b[0] - a[0], se


HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


def sign_verdict(delta: float, se: float | None, expect: str) -> str:
    """A sign claim (expect '+' or '-'): holds with the paper's sign and |Δ| > 2 SE, contradicted with the
    opposite sign and |Δ| > 2 SE, else inconclusive."""
    if se is None:
        return INCONCLUSIVE
    s = 1.0 if expect == "+" else -1.0
    if s * delta > 2 * se:
        return HOLDS
    if -s * delta > 2 * se:
        return CONTRADICTED
    return INCONCLUSIVE


def approx_verdict(delta: float, se: float | None, tol: float) -> str:
    """An "≈ / costs nothing" claim: holds if Δ ± 2 SE lies within ±tol, contradicted if the whole interval lies
    outside it (|Δ| − 2 SE > tol), else inconclusive."""
    if se is None:
        return INCONCLUSIVE
    if abs(delta) + 2 * se <= tol:
        return HOLDS
    if abs(delta) - 2 * se > tol:
        return CONTRADICTED
    return INCONCLUSIVE


def geq_verdict(delta: float, se: float | None, tol: float) -> str:
    """A "b ≥ a" claim (not worse): holds if Δ − 2 SE > −tol (b is at most tol points worse, or better),
    contradicted if Δ + 2 SE < −tol (b is worse by more than tol), else inconclusive."""
    if se is None:
        return INCONCLUSIVE
    if delta - 2 * se > -tol:
        return HOLDS
    if delta + 2 * se < -tol:
        return CONTRADICTED
    return INCONCLUSIVE


def shape_verdict(points: list[tuple[float, float | None]]) -> tuple[str, int, dict]:
    """A ∩ claim over ordered points (mean, SE): holds if the best interior point beats both ends by > 2 SE(Δ);
    contradicted if an end beats the best interior point by > 2 SE(Δ); else inconclusive.
    Returns (verdict, index of the best interior point, {"left": (Δ, SE), "right": (Δ, SE)})."""
    if len(points) < 3:
        raise ValueError(f"a shape claim needs at least 3 points, got {len(points)}")
    best = max(range(1, len(points) - 1), key=lambda i: points[i][0])
    left, right = diff(points[0], points[best]), diff(points[-1], points[best])  # Δ = interior − end
    detail = {"left": left, "right": right}
    if left[1] is None or right[1] is None:
        return INCONCLUSIVE, best, detail
    if left[0] > 2 * left[1] and right[0] > 2 * right[1]:
        return HOLDS, best, detail
    if left[0] < -2 * left[1] or right[0] < -2 * right[1]:
        return CONTRADICTED, best, detail
    return INCONCLUSIVE, best, detail
