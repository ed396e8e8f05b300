"""MoCo: multi-objective gradient correction (Fernando et al., ICLR 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.checks import check
from ..core.families import ElementwiseMethod
from ..core.gramian import combine, compute_gramian
from ..core.method import Decision
from ..core.signals import SignalMap
from ..core.table import BlockGradients, GradientTable
from ..registry import register
from ..solvers.scaled_gramian import scaled_gramian
from ..solvers.simplex import project_onto_simplex

__all__ = ["MoCo", "moco_lambda_step"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def moco_lambda_step(gramian: np.ndarray, lam: np.ndarray, gamma: float, rho: float) -> np.ndarray:
    """One projected step of MoCo's weights on the tracked Gramian ``YYᵀ``.

    ``λ ← Π_Δ(λ − γ (YYᵀ/s + ρ I) λ)`` with ``s`` the mean diagonal of ``YYᵀ`` (no scaling
    when it is zero).
    """
    k = gramian.shape[0]
    size = float(np.trace(gramian)) / k
    K = gramian / size if size > 0 else gramian
    return project_onto_simplex(lam - gamma * (K @ lam + rho * lam))


@dataclass
class _Track:
    """One block's tracked gradients and weights, rows in the order of ``objectives``."""

    objectives: tuple[str, ...]
    Y: torch.Tensor
    lam: np.ndarray

    def aligned(self, objectives: tuple[str, ...], shape: torch.Size) -> _Track | None:
        """The track with its rows in the order of ``objectives``; None if it does not fit."""
        if set(objectives) != set(self.objectives) or self.Y.shape != shape:
            return None
        if objectives == self.objectives:
            return self
        order = [self.objectives.index(name) for name in objectives]
        return _Track(objectives, self.Y[order], self.lam[order])


@register
class MoCo(ElementwiseMethod):
    r"""MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan, Chen; ICLR 2023, "Mitigating
    Gradient Bias in Multi-objective Learning: A Provably Convergent Approach").

    MoCo tracks each objective's gradient with a moving average and runs MGDA's weights as a
    projected-gradient iteration on the tracked rows ``Y`` (one row per objective):

    $$y_i \leftarrow y_i - \beta_t\,(y_i - g_i),\qquad
      \lambda \leftarrow \Pi_{\Delta}\big(\lambda - \gamma_t\,(YY^\top/s + \rho I)\,\lambda\big),
      \qquad d = k\, Y^\top\lambda ,$$

    with ``β_t = β / t^{σ_β}``, ``γ_t = γ / t^{σ_γ}`` (``t = 1, 2, …`` the step),
    ``Π_Δ`` the Euclidean projection onto the simplex and ``s`` the mean squared norm of the
    tracked rows.

    The update is a combination of *tracked* rows, not of this step's rows: MoCo is an
    element-wise method with a ``(k, P)`` buffer per block (its report's weights are the
    nominal ones; ``details["lambda"]`` holds λ).

    Deliberate deviations, each stated:

    * **Start.** ``Y`` starts at the first step's rows (LibMTL starts at 0, which makes the
      first updates ``β``-times too short) and λ at ``1/k``.
    * **Relative step.** ``YYᵀ`` is divided by its mean diagonal ``s`` before the λ step, so
      γ and ρ need no retuning with the losses' scale and the method is 1-homogeneous in the
      gradients (the paper's step ``γ YYᵀ`` has units of squared gradients).
    * **Scale.** ``d = k·Yᵀλ`` (λ sums to 1): ``k`` identical rows give their sum.
    * **Form.** The paper's form: no loss values. LibMTL's variant (rows replaced by
      ``L_i g_i/‖g_i‖``, softmax instead of the projection) is not offered.

    State: the step count, and per block ``Y`` (in the rows' working dtype, on their
    device) and λ, both kept by objective name (a reordered table is followed); a block's
    track restarts when its objectives or shape change.

    Args:
        beta: β of the tracking rate (LibMTL default 0.5).
        beta_sigma: σ_β, decay exponent of the tracking rate (0.5).
        gamma: γ of the λ step (0.1).
        gamma_sigma: σ_γ, decay exponent of the λ step (0.5).
        rho: ρ ≥ 0, regularisation of the λ step (0).

    Report details: ``lambda``, ``beta_t``, ``gamma_t``.
    """

    name = "moco"
    stateful = True

    def __init__(
        self,
        *,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
    ) -> None:
        super().__init__()
        self.beta: float = check("beta", beta, "float", low=0.0, high=1.0)
        self.beta_sigma: float = check("beta_sigma", beta_sigma, "float", low=0.0)
        self.gamma: float = check("gamma", gamma, "float", low=0.0)
        self.gamma_sigma: float = check("gamma_sigma", gamma_sigma, "float", low=0.0)
        self.rho: float = check("rho", rho, "float", low=0.0)
        self._step = 0
        self._objectives: tuple[str, ...] = ()
        self._tracks: dict[str, _Track] = {}

    def decide(self, table: GradientTable, signals: SignalMap | None) -> dict[str, Decision]:
        self._step += 1
        self._objectives = table.objectives
        return super().decide(table, signals)

    def transform(self, block: BlockGradients, decision: Decision) -> torch.Tensor:
        matrix = block.matrix
        work = matrix.to(torch.float32 if matrix.dtype in _LOW_PRECISION else matrix.dtype)
        k = work.shape[0]
        t = float(self._step)
        beta_t = self.beta / t**self.beta_sigma
        gamma_t = self.gamma / t**self.gamma_sigma
        names = self._objectives
        saved = self._tracks.get(block.name)
        track = saved.aligned(names, work.shape) if saved is not None else None
        if track is None or track.Y.dtype != work.dtype:
            track = _Track(names, work.clone(), np.full(k, 1.0 / k))
        else:
            Y = track.Y.to(work.device)
            track = _Track(names, Y + beta_t * (work - Y), track.lam)
        gramian, _ = scaled_gramian(compute_gramian(track.Y), [track.Y])
        track.lam = moco_lambda_step(gramian, track.lam, gamma_t, self.rho)
        self._tracks[block.name] = track
        decision.details.update(
            {"lambda": track.lam.tolist(), "beta_t": beta_t, "gamma_t": gamma_t}
        )
        weights = torch.from_numpy(k * track.lam)
        return combine(weights, track.Y).to(matrix.dtype)

    def reset(self) -> None:
        super().reset()
        self._step = 0
        self._tracks.clear()

    def _get_state(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "blocks": {
                name: {
                    "objectives": list(tr.objectives),
                    "Y": tr.Y.clone(),
                    "lambda": torch.from_numpy(tr.lam.copy()),
                }
                for name, tr in self._tracks.items()
            },
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._step = int(state["step"])
        self._tracks = {
            name: _Track(
                tuple(entry["objectives"]), entry["Y"].clone(), entry["lambda"].numpy().copy()
            )
            for name, entry in state["blocks"].items()
        }
