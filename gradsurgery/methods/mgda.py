"""MGDA: the min-norm point of the convex hull of the gradients (Désidéri 2012; Sener &
Koltun, NeurIPS 2018)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..core.checks import check
from ..core.families import Context, GramianWeighting, Scope
from ..core.method import Decision
from ..registry import register
from ..solvers.linalg import ZERO_RATIO, as_gramian_array
from ..solvers.min_norm import frank_wolfe, min_norm_point
from ..solvers.scaled_gramian import decision_gramian

__all__ = ["MGDA", "frank_wolfe_on_device", "mgda_weights"]

Solver = Literal["exact", "frank_wolfe"]
Normalization = Literal["none", "l2", "loss", "loss+"]


def mgda_weights(
    gramian: torch.Tensor | np.ndarray,
    *,
    solver: Solver = "exact",
    epsilon: float = 1e-3,
    max_iters: int = 100,
    normalizers: np.ndarray | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """MGDA's row weights from the Gramian, on the library's scale (``k·w``).

    Args:
        gramian: ``(k, k)`` Gramian.
        solver: ``"exact"`` (`gradsurgery.solvers.min_norm.min_norm_point`) or
            ``"frank_wolfe"`` (`gradsurgery.solvers.min_norm.frank_wolfe`).
        epsilon: Frank-Wolfe's stopping step.
        max_iters: Frank-Wolfe's iteration cap.
        normalizers: ``(k,)`` non-negative divisors ``n_i`` of the rows before the solve
            (``K ← D⁻¹KD⁻¹``); the returned weights are ``k·w_i/n_i``. A divisor below
            ``1e-100`` of the largest (a zero row) gives weight 0, as does one whose
            inverse overflows float64.

    Returns:
        ``(weights, info)``: ``(k,)`` float64 weights and the report details.
    """
    K = as_gramian_array(gramian)
    k = K.shape[0]
    inverse = np.ones(k)
    if normalizers is not None:
        # The solve sees the divisors relative to the largest (its weights do not depend on
        # K's scale); a divisor below ZERO_RATIO of the largest marks a zero row.
        top = float(normalizers.max())
        relative = normalizers / top if top > 0 else normalizers
        counted = relative > ZERO_RATIO
        inverse = np.zeros(k)
        inverse[counted] = 1.0 / relative[counted]
        K = inverse[:, None] * K * inverse[None, :]
        with np.errstate(over="ignore"):
            inverse = inverse / top if top > 0 else inverse
        inverse[~np.isfinite(inverse)] = 0.0  # subnormal divisors: weights beyond float64
    if solver == "exact":
        result = min_norm_point(K)
    else:
        result = frank_wolfe(K, epsilon=epsilon, max_iters=max_iters)
    weights = k * result.weights * inverse
    info: dict[str, Any] = {
        "w": result.weights.tolist(),
        "iterations": result.iterations,
        "kkt_residual": result.kkt_residual,
        "converged": result.converged,
        "dependent": result.dependent,
    }
    if normalizers is not None:
        info["normalizers"] = normalizers.tolist()
    return torch.from_numpy(weights), info


def frank_wolfe_on_device(
    gramian: torch.Tensor, *, epsilon: float = 1e-3, max_iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`gradsurgery.solvers.min_norm.frank_wolfe` in torch on the Gramian's device, with no
    host synchronisation: always ``max_iters`` iterations, the steps after the stopping
    rule fires being zero, so the result equals the host solver's (which stops there).

    Returns:
        ``(w, iterations, converged)``: the ``(k,)`` simplex point, then 0-d tensors with
        the iterations the host solver would have run and whether its rule fired.
    """
    K = gramian
    k = K.shape[0]
    w = torch.full((k,), 1.0 / k, dtype=K.dtype, device=K.device)
    done = torch.zeros((), dtype=torch.bool, device=K.device)
    iterations = torch.zeros((), dtype=torch.long, device=K.device)
    for _ in range(max_iters):
        Kw = K @ w
        # First index on ties, as NumPy's argmin; kept a (1,) tensor: indexing with a 0-d
        # tensor would read it on the host.
        t = Kw.argmin().reshape(1)
        a, b, c = Kw.gather(0, t)[0], w @ Kw, K.diagonal().gather(0, t)[0]
        denom = b + c - 2.0 * a  # positive wherever it is used (c > a and b > a)
        inner = torch.where(b <= a, 0.0, (b - a) / torch.where(denom > 0, denom, 1.0))
        gamma = torch.where(done, 0.0, torch.where(c <= a, 1.0, inner))
        iterations = iterations + (~done).long()
        w = ((1.0 - gamma) * w).index_add(0, t, gamma.reshape(1))
        done = done | (gamma < epsilon)
    return w, iterations, done


@register
class MGDA(GramianWeighting):
    r"""MGDA (Désidéri, C. R. Math. 2012, "Multiple-gradient descent algorithm (MGDA) for
    multiobjective optimization"; Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as
    Multi-Objective Optimization").

    The update is the point of the convex hull of the gradients closest to the origin:

    $$w^* = \arg\min_{w \in \Delta_k} \Big\lVert \sum_i w_i g_i \Big\rVert^2
    = \arg\min_{w \in \Delta_k} w^\top K w, \qquad d = k \sum_i w^*_i g_i .$$

    ``d = 0`` exactly when the point is Pareto-stationary; otherwise
    ``d·g_i ≥ ‖d‖²/k > 0`` for every objective, so no objective gets worse to first order.

    Solvers:

    * ``"exact"`` (default): an active-set method that meets the optimality conditions to
      ``1e-10`` (`gradsurgery.solvers.min_norm.min_norm_point`); exact for every ``k``.
    * ``"frank_wolfe"``: the paper's Algorithm 2 as in TorchJD — from ``w = 1/k``, step
      towards the vertex ``argmin_i (Kw)_i`` (first index on ties) with an exact line search,
      stop when the step is below ``epsilon`` or after ``max_iters`` iterations. Approximate.

    Gradient normalisation (Sener & Koltun; LibMTL's ``mgda_gn``): the rows are divided by
    ``n_i`` before the solve — ``"none"`` (``n_i = 1``, default), ``"l2"``
    (``n_i = ‖g_i‖``), ``"loss"`` (``n_i = L_i``), ``"loss+"`` (``n_i = L_i‖g_i‖``) — and
    the weights apply to the normalised rows, i.e. ``w_i/n_i`` on the original ones (as LibMTL
    combines the normalised rows). ``"loss"`` and ``"loss+"`` read the loss values from the
    table and need them positive. With ``"l2"`` or ``"loss+"`` the update no longer scales
    with the gradients (degree 0 in ``G``); a zero row keeps weight 0.

    Scale: the simplex weights are multiplied by ``k`` (``c = k``), so ``k`` identical rows
    give their sum. No state.

    Deliberate deviations from reference code:

    * LibMTL, nash-mtl and MMPareto (``find_min_norm_element``, from Sener's code) use a
      projected-gradient/line-search hybrid stopped after 250 iterations, and for ``k = 2``
      return ``(0.999, 0.001)`` instead of the vertex ``(1, 0)`` when ``K_12 ≥ K_11`` (and the
      mirror case); the exact solver returns the vertex.
    * When the rows are affinely dependent the weights are not unique (the update is);
      the exact solver returns weights with few non-zeros, e.g. ``(k, 0, …, 0)`` on identical
      rows, where Frank-Wolfe keeps ``1`` each.
    * An all-zero Gramian gives the uniform weights (update 0).

    With ``solver="frank_wolfe"`` and no normalisation it decides on the device
    (``sync=False``; `frank_wolfe_on_device`); report details are then ``w``,
    ``iterations`` and ``converged``.

    Args:
        solver: ``"exact"`` or ``"frank_wolfe"``.
        epsilon: Frank-Wolfe's stopping step (TorchJD's default ``1e-3``); unused by
            ``"exact"``.
        max_iters: Frank-Wolfe's iteration cap (TorchJD's default 100); unused by
            ``"exact"``.
        normalization: ``"none"``, ``"l2"``, ``"loss"`` or ``"loss+"``.
        scope: ``"block"`` or ``"global"`` (one decision on all blocks together, as the
            references on all shared parameters).

    Report details: ``w`` (the simplex weights), ``iterations``, ``kkt_residual`` (see
    `gradsurgery.solvers.min_norm.min_norm_kkt_residual`), ``converged``, ``dependent``
    (rows the exact solver left out as numerically dependent), and ``normalizers`` (the
    ``n_i``) unless ``normalization="none"``.
    """

    name = "mgda"
    on_device = True  # with solver="frank_wolfe" and no normalization (see host_only)
    on_device_settings: ClassVar[Mapping[str, Any]] = {"solver": "frank_wolfe"}

    def __init__(
        self,
        *,
        solver: Solver = "exact",
        epsilon: float = 1e-3,
        max_iters: int = 100,
        normalization: Normalization = "none",
        scope: Scope = "block",
    ) -> None:
        super().__init__(scope=scope)
        self.solver: Solver = check("solver", solver, "str", options=("exact", "frank_wolfe"))
        self.epsilon: float = check("epsilon", epsilon, "float", low=0.0, low_open=True)
        self.max_iters: int = check("max_iters", max_iters, "int", low=1)
        self.normalization: Normalization = check(
            "normalization", normalization, "str", options=("none", "l2", "loss", "loss+")
        )

    def reads_losses(self) -> bool:
        return self.normalization in ("loss", "loss+")

    def host_only(self) -> str | None:
        if self.solver != "frank_wolfe":
            return "MGDA's exact solver has a data-dependent active set; use solver='frank_wolfe'"
        if self.normalization != "none":
            return f"MGDA normalization={self.normalization!r} is computed on the host"
        return None

    def _normalizers(self, context: Context, K: np.ndarray, log_scale: float) -> np.ndarray | None:
        if self.normalization == "none":
            return None
        # The true norms: K is the Gramian divided by exp(log_scale) (see decision_gramian).
        norms: np.ndarray = np.sqrt(np.clip(np.diagonal(K), 0.0, None)) * math.exp(log_scale / 2)
        if self.normalization == "l2":
            return norms
        losses: np.ndarray = context.losses.numpy()
        if not (np.isfinite(losses).all() and (losses > 0).all()):
            raise ValueError(
                f"MGDA normalization={self.normalization!r} divides by the loss values, "
                f"which must be positive and finite; got {losses.tolist()}"
            )
        return losses if self.normalization == "loss" else losses * norms

    def weigh(self, context: Context) -> Decision:
        if not context.table.synchronous:  # sync=False: Frank-Wolfe on the device
            gram = context.gramian.to(torch.float64)
            top = gram.diagonal().max()
            w, iterations, converged = frank_wolfe_on_device(
                gram / torch.where(top > 0, top, 1.0),
                epsilon=self.epsilon,
                max_iters=self.max_iters,
            )
            details = {"w": w, "iterations": iterations, "converged": converged}
            return Decision(context.k * w, details=details)
        K, log_scale = decision_gramian(context)
        weights, info = mgda_weights(
            K,
            solver=self.solver,
            epsilon=self.epsilon,
            max_iters=self.max_iters,
            normalizers=self._normalizers(context, K, log_scale),
        )
        return Decision(weights, details=info)
