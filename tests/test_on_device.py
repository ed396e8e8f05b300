"""The on-device step: ``sync=False`` keeps the Gramian, decision and combine on the rows'
device with no host synchronisation.

"No host synchronisation" is checked on the ``meta`` device, whose tensors hold no data: any
read of a value on the host (``bool``, ``item``, ``tolist``, a copy to the CPU) raises there.
Equality with the host path is checked on the CPU, where both paths run.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn

import gradsurgery as gs
import gradsurgery.engines.gramian as gramian_engine
from gradsurgery.core.gramian import GramianPolicy
from gradsurgery.core.signals import SignalError
from gradsurgery.core.table import GradientTable
from gradsurgery.registry import get

ON_DEVICE = gs.available(on_device=True)


def _build(name: str) -> gs.Method:
    """The method with the settings that select its on-device path."""
    return gs.build({"method": name, **get(name).on_device_settings})


def test_the_closed_form_methods_decide_on_the_device() -> None:
    assert {"sum", "mean", "constant", "pcgrad", "gmp", "ogmge", "mgda"} <= set(ON_DEVICE)
    assert "cagrad" not in ON_DEVICE  # a solver: stays on the host
    assert gs.MGDA().host_only() is not None  # the exact solver is host-only
    assert gs.MGDA(solver="frank_wolfe").host_only() is None


def _inputs(
    name: str, device: str | torch.device, seed: int = 0, k: int = 4
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, dict[str, torch.Tensor]] | None]:
    """Rows, objective names and signals for one method (GMP: two modality blocks)."""
    gen = torch.Generator().manual_seed(seed)
    if name == "gmp":
        rows = {"v": torch.randn(2, 40, generator=gen), "a": torch.randn(2, 30, generator=gen)}
        conf = torch.rand(4, generator=gen, dtype=torch.float64)
        signals = {
            "v": {"cls": conf[0].to(device), "dom": conf[1].to(device)},
            "a": {"cls": conf[2].to(device), "dom": conf[3].to(device)},
        }
        return {b: m.to(device) for b, m in rows.items()}, ["cls", "dom"], signals
    if name == "ogmge":
        rows = {
            "v": torch.randn(1, 40, generator=gen, dtype=torch.float64),
            "a": torch.randn(1, 30, generator=gen, dtype=torch.float64),
        }
        conf = torch.rand(2, generator=gen, dtype=torch.float64)
        signals = {"v": {"cls": conf[0].to(device)}, "a": {"cls": conf[1].to(device)}}
        return {b: m.to(device) for b, m in rows.items()}, ["cls"], signals
    rows = {"trunk": torch.randn(k, 50, generator=gen, dtype=torch.float64).to(device)}
    return rows, [f"t{i}" for i in range(k)], None


def _apply(
    name: str, rows: dict[str, torch.Tensor], objectives: list[str], signals: object, sync: bool
) -> tuple[dict[str, torch.Tensor], gs.Report]:
    method = _build(name)
    table = GradientTable.from_matrices(rows, objectives)
    return method.apply(table, signals, on_nonfinite="skip", sync=sync)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ON_DEVICE)
def test_the_step_reads_nothing_on_the_host(name: str) -> None:
    rows, objectives, signals = _inputs(name, "meta")
    updates, report = _apply(name, rows, objectives, signals, sync=False)
    for block, matrix in rows.items():
        assert updates[block].device.type == "meta"
        assert updates[block].shape == (matrix.shape[1],)
        assert report[block].weights.device.type == "meta"


@pytest.mark.parametrize("name", ON_DEVICE)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6))
def test_the_device_step_equals_the_host_step(name: str, seed: int, k: int) -> None:
    rows, objectives, signals = _inputs(name, "cpu", seed, k)
    host, host_report = _apply(name, rows, objectives, signals, sync=True)
    device, device_report = _apply(name, rows, objectives, signals, sync=False)
    for block in rows:
        torch.testing.assert_close(device[block], host[block], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            device_report[block].weights, host_report[block].weights, rtol=1e-12, atol=1e-12
        )
        assert device_report[block].projected == host_report[block].projected
        assert device_report[block].changed == host_report[block].changed
    assert device_report.skipped is False


@pytest.mark.parametrize("engine", ["table", "gramian", "representation"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_backward_without_sync(engine: str, device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole step — passes, Gramian, decision, combine, ``.grad`` — on the meta device,
    and equal to the synchronised step on the CPU."""
    factorized = []
    product = gramian_engine._trace_product
    monkeypatch.setattr(
        gramian_engine, "_trace_product", lambda a, d: factorized.append(1) or product(a, d)
    )
    grads = {}
    for sync in (True, False) if device == "cpu" else (False,):
        torch.manual_seed(0)
        # Wide layers and a small batch: the gramian engine factorizes them (no rows).
        trunk = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64)).to(device)
        heads = nn.ModuleList(nn.Linear(64, 1) for _ in range(3)).to(device)
        z = trunk(torch.randn(4, 32).to(device))
        losses = {f"t{i}": head(z).pow(2).mean() for i, head in enumerate(heads)}
        report = gs.backward(
            losses,
            {"trunk": trunk},
            gs.PCGrad(seed=3),
            engine=engine,
            sync=sync,
            on_nonfinite="skip" if not sync else "raise",
            features={"trunk": z} if engine == "representation" else None,
        )
        assert report.engine == engine
        assert bool(factorized) == (engine == "gramian")  # layer Gramians from factors
        grads[sync] = [p.grad for p in trunk.parameters()]
        assert all(g is not None and g.device.type == device for g in grads[sync])
    if device == "cpu":  # the meta device holds no values to compare
        for a, b in zip(grads[True], grads[False]):
            torch.testing.assert_close(a, b)


def test_nonfinite_rows_write_the_plain_sum_and_the_report_says_skipped() -> None:
    rows = torch.tensor([[1.0, -2.0, 0.5], [float("nan"), 1.0, 0.0]], dtype=torch.float64)
    table = GradientTable.from_matrices({"b": rows})
    updates, report = gs.PCGrad().apply(table, on_nonfinite="skip", sync=False)
    assert torch.isnan(updates["b"][0]) and updates["b"][1] == -1.0
    assert report.skipped is True
    assert any("skipped" in note for note in report.notes)
    assert report["b"].projected == ()
    assert report["b"].weights.tolist() == [1.0, 1.0]


def test_an_overflowing_gramian_skips_the_step() -> None:
    rows = torch.tensor([[3e38, 0.0], [-3e38, 1.0]], dtype=torch.float32)
    table = GradientTable.from_matrices({"b": rows})
    _, report = gs.PCGrad().apply(table, on_nonfinite="skip", sync=False)
    assert report.skipped is True


def test_an_invalid_signal_skips_on_the_device_and_raises_on_the_host() -> None:
    rows, objectives, signals = _inputs("gmp", "cpu")
    assert signals is not None
    signals["v"]["cls"] = torch.tensor(1.5)
    with pytest.raises(SignalError, match="'v'.*'cls'"):
        _apply("gmp", rows, objectives, signals, sync=True)
    updates, report = _apply("gmp", rows, objectives, signals, sync=False)
    assert report.skipped is True
    torch.testing.assert_close(updates["v"], rows["v"].sum(0))
    signals["v"].pop("cls")
    with pytest.raises(SignalError, match="missing"):  # what the host knows still raises
        _apply("gmp", rows, objectives, signals, sync=False)


def test_the_report_is_read_when_accessed() -> None:
    rows, objectives, signals = _inputs("gmp", "cpu")
    _, report = _apply("gmp", rows, objectives, signals, sync=False)
    details = report["v"].details
    assert isinstance(details["rho"], torch.Tensor)  # not read yet
    view = report.to_dict()
    assert isinstance(view["blocks"]["v"]["details"]["rho"], float)
    assert isinstance(view["skipped"], bool)
    assert all(isinstance(v, float) for v in report.scalars().values())


def test_ogmge_noise_deviation_is_read_when_the_report_is() -> None:
    rows, objectives, signals = _inputs("ogmge", "cpu")
    _, report = _apply("ogmge", rows, objectives, signals, sync=False)
    stds = report.to_dict()["blocks"]["v"]["details"]["noise_std"]
    assert stds == [pytest.approx(float(rows["v"][0].std()))]


def test_host_methods_and_raising_are_refused_clearly() -> None:
    table = GradientTable.from_matrices({"b": torch.randn(3, 5)})
    with pytest.raises(ValueError, match=r"CAGrad.*host.*on_device=True"):
        gs.CAGrad().apply(table, on_nonfinite="skip", sync=False)
    with pytest.raises(ValueError, match="solver='frank_wolfe'"):
        gs.MGDA().apply(table, on_nonfinite="skip", sync=False)
    with pytest.raises(ValueError, match="on_nonfinite='skip'"):
        gs.PCGrad().apply(table, sync=False)
    trunk = nn.Linear(3, 3)
    z = trunk(torch.randn(4, 3))
    losses = {"a": z.sum(), "b": -z.sum()}
    with pytest.raises(ValueError, match="sync=False: UPGrad.*decides on the host"):
        gs.backward(losses, {"t": trunk}, gs.UPGrad(), sync=False, on_nonfinite="skip")
    with pytest.raises(ValueError, match="does not wait"):
        gs.backward(
            losses, {"t": trunk}, gs.Sum(), sync=False, on_nonfinite="skip",
            gramian=GramianPolicy(device="native"),
        )  # fmt: skip


def _gmp_step(method: gs.GMP) -> object:
    def step(
        gv: torch.Tensor, ga: torch.Tensor, conf: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        table = GradientTable.from_matrices({"v": gv, "a": ga}, ["cls", "dom"])
        signals = {"v": {"cls": conf[0], "dom": conf[1]}, "a": {"cls": conf[2], "dom": conf[3]}}
        updates, report = method.apply(table, signals, on_nonfinite="skip", sync=False)
        return updates["v"], updates["a"], report["v"].weights

    return step


@pytest.mark.slow
def test_a_compiled_step_captures_gramian_decision_and_combine() -> None:
    """``fullgraph=True`` fails on any graph break, so a captured step has no host sync."""
    method = gs.GMP()
    compiled = torch.compile(_gmp_step(method), fullgraph=True, backend="aot_eager")
    eager = _gmp_step(gs.GMP())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # new data each call: nothing is baked into the graph
        args = (torch.randn(2, 64, generator=gen), torch.randn(2, 32, generator=gen))
        conf = torch.rand(4, generator=gen)
        for got, want in zip(compiled(*args, conf), eager(*args, conf)):  # type: ignore[operator]
            torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_a_compiled_pcgrad_step_draws_fresh_orders() -> None:
    """PCGrad's generator is not traced: the draw stays outside the graph (a graph break,
    not a host sync), so every call visits in fresh orders, as in eager mode."""
    compiled_method, eager_method = gs.PCGrad(seed=5), gs.PCGrad(seed=5)

    def step(method: gs.PCGrad, rows: torch.Tensor) -> torch.Tensor:
        table = GradientTable.from_matrices({"b": rows})
        return method.apply(table, on_nonfinite="skip", sync=False)[0]["b"]

    compiled = torch.compile(step, backend="aot_eager")
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(4, 16, generator=gen)
    rows[1] = -rows[0] + 0.1 * rows[1]  # conflicts, so the order matters
    torch.testing.assert_close(compiled(compiled_method, rows), step(eager_method, rows))
    # The orders enter the graph as a tensor, not as constants: no recompilation per draw.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            torch.testing.assert_close(compiled(compiled_method, rows), step(eager_method, rows))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ON_DEVICE)
def test_no_synchronisation_on_cuda(name: str) -> None:
    """CUDA's sync debug mode turns any device-to-host wait into an error."""
    rows, objectives, signals = _inputs(name, "cuda")
    method = _build(name)
    table = GradientTable.from_matrices(rows, objectives)
    torch.cuda.set_sync_debug_mode("error")
    try:
        updates, _ = method.apply(table, signals, on_nonfinite="skip", sync=False)  # type: ignore[arg-type]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(u.is_cuda for u in updates.values())
