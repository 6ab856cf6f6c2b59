"""A per-cause bias that corrects what fine-tuning and quantisation did to the cause's prior.

The answer's cause is decided by its first token (the causes' first letters differ), so the
quantised model's choice is the highest of eight scores (``FieldDecoder.cause_scores``). On
cases of the training distribution those scores lean towards some causes: a 135M model with
one epoch learns the frequent signal shapes better than the mixed ones. A bias per cause,
fitted by multinomial logistic regression on generated cases of a seed no training or
evaluation file uses, corrects that lean without touching the weights; it is stored in the
adapter's manifest and added at decoding time. L2 keeps it small where the data says little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.contract import ProbableCause

CAUSES = [c.value for c in ProbableCause]


@dataclass(frozen=True)
class Fit:
    bias: dict[str, float]
    accuracy_before: float
    accuracy_after: float
    loss_before: float
    loss_after: float


def _loss_and_steps(
    scores: np.ndarray, labels: np.ndarray, bias: np.ndarray, l2: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean cross-entropy plus ``l2 * |bias|^2``, its gradient and Hessian in the bias."""
    logits = scores + bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean() + l2 * bias @ bias
    onehot = np.eye(scores.shape[1])[labels]
    gradient = (p - onehot).mean(axis=0) + 2 * l2 * bias
    hessian = (np.einsum("ni,ij->ij", p, np.eye(len(bias))) - p.T @ p) / n
    return float(loss), gradient, hessian + 2 * l2 * np.eye(len(bias))


def accuracy(scores: np.ndarray, labels: np.ndarray, bias: np.ndarray | None = None) -> float:
    chosen = (scores if bias is None else scores + bias).argmax(axis=1)
    return float((chosen == labels).mean())


def fit_bias(scores: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> Fit:
    """Newton's method on the bias (8 parameters, a convex loss: a few steps converge).

    ``scores``: one row per case, one column per cause in ``CAUSES`` order; ``labels``: the
    right cause's column."""
    if scores.ndim != 2 or scores.shape[1] != len(CAUSES) or len(labels) != len(scores):
        raise ValueError(f"scores must be (cases, {len(CAUSES)}) with one label per case")
    if l2 <= 0:
        raise ValueError("l2 must be positive: the loss is flat along a common shift")
    bias = np.zeros(len(CAUSES))
    before = _loss_and_steps(scores, labels, bias, l2)[0]
    for _ in range(50):
        _, gradient, hessian = _loss_and_steps(scores, labels, bias, l2)
        step = np.linalg.solve(hessian, gradient)
        bias -= step
        if np.abs(step).max() < 1e-8:
            break
    return Fit(
        bias={cause: round(float(b), 4) for cause, b in zip(CAUSES, bias, strict=True)},
        accuracy_before=accuracy(scores, labels),
        accuracy_after=accuracy(scores, labels, bias),
        loss_before=before,
        loss_after=_loss_and_steps(scores, labels, bias, l2)[0],
    )
