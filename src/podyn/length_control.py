"""The length-controlled win rate (method.md §6, after AlpacaEval 2): a logistic model of the
judgement on the standardised length difference, evaluated at zero length difference.

With y_i in [0, 1] the judgement of prompt i (1 win, 0.5 tie, 0 loss, or a probability) and
d_i = len(response_i) - len(baseline_i) in characters, x_i = d_i / sd(d) and

    P(win | x) = sigmoid(b + w x),

(b, w) maximise the Bernoulli log-likelihood of the y_i (fractional y are allowed) with a weak
ridge penalty ``ridge * w**2 / 2`` on the slope only, which keeps w finite when the judgements
are separated by length. The length-controlled win rate is sigmoid(b): the chance of winning
at equal length. The difference is scaled but not centred, so that x = 0 means equal length.
With no length difference (or w = 0) it equals the raw win rate.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def length_controlled_win_rate(
    scores: np.ndarray, length_diff: np.ndarray, ridge: float = 1e-3, iterations: int = 100
) -> float:
    """sigmoid(b) of the fitted model; NaN scores (invalid prompts) are left out."""
    scores, length_diff = np.asarray(scores, dtype=float), np.asarray(length_diff, dtype=float)
    keep = ~np.isnan(scores)
    y, d = scores[keep], length_diff[keep]
    if len(y) == 0:
        return float("nan")
    if np.all(y == y[0]) and y[0] in (0.0, 1.0):
        return float(y[0])  # the likelihood's supremum is at b = +-inf whatever w
    sd = d.std()
    x = d / sd if sd > 0 else np.zeros_like(d)
    features = np.stack([np.ones_like(x), x], axis=1)
    penalty = np.array([0.0, ridge])
    theta = np.array([np.log(y.mean() / (1 - y.mean())) if 0 < y.mean() < 1 else 0.0, 0.0])

    def loss(t: np.ndarray) -> float:
        z = features @ t
        return float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * ridge * t[1] ** 2)

    current = loss(theta)
    for _ in range(iterations):
        p = _sigmoid(features @ theta)
        grad = features.T @ (p - y) / len(y) + penalty * theta
        hess = (features * (p * (1 - p))[:, None]).T @ features / len(y) + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        scale = 1.0
        while scale > 1e-8:  # backtracking: the Newton step on a convex loss, never uphill
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        theta, improvement, current = candidate, current - value, value
        if improvement < 1e-14 and np.abs(grad).max() < 1e-10:
            break
    return float(_sigmoid(np.array(theta[0])))
