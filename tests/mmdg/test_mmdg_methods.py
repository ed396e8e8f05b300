"""The MMDG loop's recipes: objectives and signals per method, ablation configs and table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmdg.compare import ABLATION, ablation_table, run_comparison
from mmdg.features import load_dg_splits
from mmdg.train import RECIPES, RunConfig, RunResult, load_config, objectives, recipe_for, train_run

import gradsurgery as gs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mmdg"
ABLATION_CONFIGS = sorted((EXAMPLE / "configs" / "ablation").glob("*.yaml"))


def test_every_multimodal_method_has_a_recipe() -> None:
    for name in gs.available():
        method = gs.build(name)
        if method.needs_signals or name in ("mmpareto",):
            assert name in RECIPES, name  # every method that reads signals is fed
        recipe = recipe_for(method) if name in RECIPES or not method.needs_signals else None
        if recipe is not None and method.max_objectives == 1:
            assert recipe.layout == "single", name


def test_methods_without_signals_get_cls_and_dom_or_one_objective() -> None:
    assert recipe_for(gs.build("pcgrad")).layout == "cls_dom"
    assert recipe_for(gs.build("sum")).signals == "none"
    assert recipe_for(gs.build("mmpareto")).layout == "unimodal"


def test_a_method_whose_signals_the_loop_does_not_know_is_refused() -> None:
    class Oracle(gs.CrossBlockMethod):
        name = "oracle"
        needs_signals = ("a number only an oracle knows",)

        def decide(self, table, signals):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(ValueError, match="only an oracle knows"):
        recipe_for(Oracle())


def _terms() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    return torch.tensor(1.0), {"a": torch.tensor(2.0), "v": torch.tensor(3.0)}, torch.tensor(4.0)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("cls_dom", {"cls": 6.0, "dom": 4.0}),
        ("single", {"loss": 10.0}),
        ("unimodal", {"mm": 5.0, "uni_a": 2.0, "uni_v": 3.0}),
        ("prototype", {"cls": 6.0, "dom": 4.0, "proto_a": 0.5, "proto_v": 0.25}),
    ],
)
def test_objective_layouts(layout: str, expected: dict[str, float]) -> None:
    fused, heads, dom = _terms()
    proto = {"a": torch.tensor(0.5), "v": torch.tensor(0.25)}
    got = objectives(layout, fused, heads, dom, proto)  # type: ignore[arg-type]
    assert {k: float(v) for k, v in got.items()} == expected
    total = sum(float(v) for v in got.values())
    assert total == pytest.approx(10.0 + (0.75 if layout == "prototype" else 0.0))


def test_probe_heads_stay_in_the_multimodal_objective() -> None:
    fused, heads, dom = _terms()
    got = objectives("unimodal", fused, heads, None, heads_reach_encoders=False)
    assert {k: float(v) for k, v in got.items()} == {"mm": 6.0}
    with pytest.raises(ValueError, match="prototypical losses"):
        objectives("prototype", fused, heads, dom)


@pytest.mark.parametrize("name", ["agm", "pmr", "cggm", "mmpareto"])
def test_the_new_methods_read_their_signals(tiny: Path, name: str) -> None:
    cfg = load_config(EXAMPLE / "configs" / f"{name}.yaml").with_overrides(epochs=2, batch_size=32)
    result = train_run(cfg, load_dg_splits(tiny, target="d0"), seed=0)
    last = result.trajectory[-1]
    if name == "agm":
        assert {"coeff/m1", "coeff/m2"} <= set(last)
    if name == "cggm":
        assert 0.0 <= last["B/m1"] <= 1.0
    assert result.val["fused"] > 0.25  # above chance (4 classes) after two epochs


def test_representation_engine_config(tiny: Path) -> None:
    cfg = load_config(EXAMPLE / "configs" / "variants" / "gmp_representation.yaml")
    assert cfg.engine == "representation"
    result = train_run(
        cfg.with_overrides(epochs=2, batch_size=32), load_dg_splits(tiny, "d0"), seed=0
    )
    assert {"k/m1", "p/m1"} <= set(result.trajectory[-1])
    with pytest.raises(ValueError, match="engine must be one of"):
        RunConfig("x", "gmp", engine="fast")


@pytest.mark.parametrize(
    "path",
    sorted((EXAMPLE / "configs").rglob("*.y*ml")) + sorted((EXAMPLE / "configs").rglob("*.toml")),
    ids=lambda p: str(p.relative_to(EXAMPLE / "configs")),
)
def test_every_shipped_config_builds_its_method(path: Path) -> None:
    cfg = load_config(path)
    method = gs.build(cfg.method)
    assert recipe_for(method) is not None
    assert cfg.name == (path.stem if path.parent.name != "ablation" else f"gmp/{path.stem}")


def test_ablation_configs_are_the_paper_rows() -> None:
    names = {load_config(p).name for p in ABLATION_CONFIGS}
    assert names == {n for n in ABLATION if n.startswith("gmp/")}
    for path in ABLATION_CONFIGS:
        method = load_config(path).method
        assert isinstance(method, dict) and method["method"] == "gmp"
        assert gs.build(method).hyperparameters()["alpha_k"] == 2.0


def _result(config: str, target: str, seed: int, acc: float) -> RunResult:
    return RunResult(config, target, seed, {"fused": acc}, {"fused": acc}, 0, [], 1.0)


def test_ablation_table_reads_variants_against_full_gmp() -> None:
    runs = [
        _result(name, t, s, acc + 0.01 * s + (0.02 if t == "b" else 0.0))
        for name, acc in (("joint", 0.5), ("gmp", 0.6), ("gmp/igdm_only", 0.55))
        for t in ("a", "b")
        for s in (0, 1)
    ]
    table = ablation_table(runs)
    lines = table.splitlines()
    assert [line.split(" | ")[1] for line in lines[2:]] == ["`joint`", "`gmp/igdm_only`", "`gmp`"]
    assert "| -0.050 | [-0.050, -0.050] | yes |" in lines[3]
    assert ablation_table([r for r in runs if r.config != "gmp/igdm_only"]) == ""


@pytest.mark.slow
def test_worker_processes_give_the_same_results(tiny: Path) -> None:
    cfg = RunConfig("gmp", {"method": "gmp"}, train={"epochs": 1, "batch_size": 32})
    kwargs = {"seeds": [0, 1], "targets": ["d0"], "progress": False}
    alone = run_comparison(tiny, [cfg], **kwargs)  # type: ignore[arg-type]
    pooled = run_comparison(tiny, [cfg], workers=2, **kwargs)  # type: ignore[arg-type]
    assert [(r.seed, r.test) for r in alone] == [(r.seed, r.test) for r in pooled]
