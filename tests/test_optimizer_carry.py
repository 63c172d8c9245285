"""`optimizer: carry`: AdamW's moments through a growth step, and into the grown member's optimizer.

The moments go through the weights' index maps (familyc.expand.moments): entries the weights copy keep
their moments, entries the weights scale by s get s x the first moment and s^2 x the second, new entries
get zero. Checked three ways: Adam's normalised update m / sqrt(v) of every grown entry is one its source
tensor had (or the entry is new, with zero moments); the second moment of m^2 is the square of the first
moment of m, whatever the operator; and the scales and zeros themselves on operators whose maps are known.
Then the whole round trip on torchtitan's own model and optimizer: the source's moments saved as a stage
saves them, grown on disk, and loaded into the grown model's fresh AdamW, whose LR stays its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan", reason="the moments are those of torchtitan's optimizer container")

from familyc.backend.keys import model_keys  # noqa: E402
from familyc.backend.moments import CARRIED_KIND, load_moments, moment_key, save_moments  # noqa: E402
from familyc.checkpoint.reader import load_state_dict  # noqa: E402
from familyc.expand.moments import MomentRecipes  # noqa: E402
from familyc.expand.operators import Expansion  # noqa: E402
from familyc.expand.stream import expand_checkpoint  # noqa: E402
from familyc.shape import ModelShape  # noqa: E402

XS = ModelShape(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=61)
WIDE = ModelShape(dim=48, n_layers=3, n_heads=6, n_kv_heads=3, ffn_dim=160, vocab_size=61)  # not a multiple
DOUBLE = ModelShape(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, ffn_dim=192, vocab_size=61)
DEEP = ModelShape(dim=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=61)
GROWTHS = [
    pytest.param(WIDE, "zero", "zero_insert", id="zero-wider-deeper"),
    pytest.param(WIDE, "split", "zero_insert", id="split-wider-deeper"),
    pytest.param(WIDE, "paired", "stack", id="paired-wider-stacked"),
    pytest.param(DOUBLE, "fpi", "none", id="fpi-double"),
    pytest.param(DOUBLE, "exact", "none", id="exact-double"),
    pytest.param(WIDE, "aki", "stack", id="aki-wider-stacked"),
    pytest.param(DEEP, "none", "interpolate", id="interpolate-deeper"),
]


def _state(shape: ModelShape, seed: int, transform=lambda t: t) -> dict[str, torch.Tensor]:
    """Random moments of a model of `shape` (first moment: signed; `transform` makes the second)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for fqn, dims in model_keys(shape).items():
        m = torch.randn(dims, generator=generator)
        out[moment_key(fqn, "exp_avg")] = m
        out[moment_key(fqn, "exp_avg_sq")] = transform(m)
        out[moment_key(fqn, "step")] = torch.tensor(float(7 + len(fqn)))
    return out


def _grow(recipes: MomentRecipes, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {t.key: t.compute(state.__getitem__) for t in recipes.targets(torch.float32)}


@pytest.mark.parametrize(("target", "width", "depth"), GROWTHS)
def test_the_second_moment_scales_as_the_square_of_the_first(target: ModelShape, width: str, depth: str) -> None:
    """With v = m^2 in the source, v' = m'^2 in the grown state: both moments go through the same map, v with
    the square of every scale, and new entries are zero in both."""
    recipes = MomentRecipes(XS, target, width=width, depth=depth, seed=3)
    grown = _grow(recipes, _state(XS, 0, transform=torch.square))
    assert set(grown) == set(recipes.target_keys())
    for fqn in model_keys(target):
        m, v = grown[moment_key(fqn, "exp_avg")], grown[moment_key(fqn, "exp_avg_sq")]
        torch.testing.assert_close(v, m.square(), rtol=1e-5, atol=1e-7, msg=fqn)


@pytest.mark.parametrize(("target", "width", "depth"), GROWTHS)
def test_every_grown_entry_keeps_a_normalised_update_of_its_source_or_starts_with_none(
        target: ModelShape, width: str, depth: str) -> None:
    """m' / sqrt(v') of each grown entry is m / sqrt(v) of an entry of its source tensor (the layer it is grown
    from, or for aki's new units the next one), or the entry is new: m' = v' = 0. The step counts are kept."""
    source = _state(XS, 1, transform=lambda m: torch.rand(m.shape, generator=torch.Generator().manual_seed(9)) + 0.1)
    recipes = MomentRecipes(XS, target, width=width, depth=depth, seed=5)
    grown = _grow(recipes, source)
    weights = {t.key: t.sources for t in Expansion(XS, target, width=width, depth=depth, seed=5).targets(torch.float32)}
    for fqn, sources in weights.items():
        m, v = grown[moment_key(fqn, "exp_avg")], grown[moment_key(fqn, "exp_avg_sq")]
        new = v == 0
        assert bool((m[new] == 0).all()), f"{fqn}: a first moment without a second"
        allowed = torch.cat([(source[moment_key(s, "exp_avg")] / source[moment_key(s, "exp_avg_sq")].sqrt()).flatten()
                             for s in sources]) if sources else torch.empty(0)
        ratios = (m[~new] / v[~new].sqrt()).flatten()
        if ratios.numel():
            nearest = (ratios[:, None] - allowed[None, :]).abs().min(dim=1).values
            assert float(nearest.max()) < 1e-5, fqn
        counted = sources[0] if sources else "tok_embeddings.weight"
        assert float(grown[moment_key(fqn, "step")]) == float(source[moment_key(counted, "step")])


def test_exact_doubling_halves_the_readers_moments_and_copies_the_writers() -> None:
    """exact x2: a reader column of a copied channel carries half the source's (its weight is halved): first
    moment / 2, second / 4; rows of copied units (wq's heads, w1's units) are copied as they are."""
    source = _state(XS, 2, transform=torch.square)
    grown = _grow(MomentRecipes(XS, DOUBLE, width="exact", depth="none", seed=0), source)
    maps = Expansion(XS, DOUBLE, width="exact", depth="none").maps
    dim, ffn = torch.tensor(maps.dim), torch.tensor(maps.ffn)
    for name, scale in (("exp_avg", 0.5), ("exp_avg_sq", 0.25)):
        w1 = source[moment_key("layers.0.feed_forward.w1.weight", name)]
        torch.testing.assert_close(grown[moment_key("layers.0.feed_forward.w1.weight", name)],
                                   w1[ffn][:, dim] * scale)
        emb = source[moment_key("tok_embeddings.weight", name)]
        torch.testing.assert_close(grown[moment_key("tok_embeddings.weight", name)], emb[:, dim])  # a lookup


def test_zero_width_keeps_the_old_block_and_gives_new_units_no_history() -> None:
    """zero: the old channels, heads and units keep their moments (each is its own only copy); every new entry,
    random reader or zero writer in the weights, and every entry of a zero_insert block, starts at zero."""
    source = _state(XS, 4, transform=torch.square)
    grown = _grow(MomentRecipes(XS, WIDE, width="zero", depth="zero_insert", seed=0), source)
    maps = Expansion(XS, WIDE, width="zero", depth="zero_insert").maps
    old_layer = next(i for i, layer in enumerate(maps.layers) if not layer.zero_output and layer.source == 0)
    new_layer = next(i for i, layer in enumerate(maps.layers) if layer.zero_output)
    key = "feed_forward.w1.weight"
    m = grown[moment_key(f"layers.{old_layer}.{key}", "exp_avg")]
    torch.testing.assert_close(m[:XS.ffn_dim, :XS.dim], source[moment_key(f"layers.0.{key}", "exp_avg")])
    assert bool((m[XS.ffn_dim:] == 0).all()) and bool((m[:, XS.dim:] == 0).all())
    for fqn in model_keys(WIDE):
        if fqn.startswith(f"layers.{new_layer}."):
            assert bool((grown[moment_key(fqn, "exp_avg")] == 0).all()), fqn
            assert bool((grown[moment_key(fqn, "exp_avg_sq")] == 0).all()), fqn


# --- the round trip on torchtitan's model and optimizer --------------------------------------------------------

def _trained(shape: ModelShape, lr: float, steps: int, seed: int) -> tuple[torch.nn.Module, object]:
    from torchtitan.components.optimizer import OptimizersContainer

    from familyc.backend.model import build_model, shape_args

    model = build_model(shape_args(shape, rope_theta=10000.0, norm_eps=1e-5, seq_len=16), seed=seed)
    optimizers = OptimizersContainer([model], torch.optim.AdamW,
                                     {"lr": lr, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1})
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, shape.vocab_size, (2, 16), generator=generator)
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizers.step()
        optimizers.zero_grad()
    return model, optimizers


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_grown_stage_loads_the_carried_moments_and_keeps_its_own_lr(tmp_path: Path) -> None:
    """Train the source 3 steps; save its moments as a stage does; grow them on disk (zero width, zero_insert
    depth); load them into the grown model's fresh AdamW (another LR). Every parameter's moments and step are
    the grown ones, and every parameter group's LR is the grown stage's, not the source's."""
    _, source_optimizers = _trained(XS, lr=1e-3, steps=3, seed=0)
    saved = tmp_path / "source" / "optimizer"
    assert save_moments(source_optimizers, saved) == 3 * len(model_keys(XS))
    recipes = MomentRecipes(XS, WIDE, width="zero", depth="zero_insert", seed=0)
    expand_checkpoint(saved, tmp_path / "grown", recipes, sidecar=None)
    expected = _grow(recipes, load_state_dict(saved))

    target, target_optimizers = _trained(WIDE, lr=4e-4, steps=0, seed=1)
    record = load_moments(target_optimizers, tmp_path / "grown")
    assert record["kind"] == CARRIED_KIND and record["tensors"] == 3 * len(model_keys(WIDE))
    assert record["group_lrs"] == [4e-4]
    (optimizer,) = target_optimizers
    assert [group["lr"] for group in optimizer.param_groups] == [4e-4]
    names = {param: fqn for fqn, param in target.named_parameters()}
    assert len(optimizer.state) == len(names)
    for param, state in optimizer.state.items():
        fqn = names[param]
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[name], expected[moment_key(fqn, name)], rtol=0, atol=0, msg=fqn)
        assert float(state["step"]) == 3.0
    assert any(bool((s["exp_avg"] != 0).any()) for s in optimizer.state.values())


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_growing_moments_from_a_folder_of_weights_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A member's weights where its moments should be: every missing key is named, nothing is written."""
    from torch.distributed.checkpoint.state_dict_saver import save

    from familyc.errors import CheckpointError

    model, _ = _trained(XS, lr=1e-3, steps=0, seed=0)
    save(model.state_dict(), checkpoint_id=str(tmp_path / "weights"))
    with pytest.raises(CheckpointError, match="missing key 'state.tok_embeddings.weight.step'") as info:
        expand_checkpoint(tmp_path / "weights", tmp_path / "grown",
                          MomentRecipes(XS, WIDE, width="zero", depth="zero_insert", seed=0), sidecar=None)
    assert len(info.value.problems) > 3 * len(model_keys(XS))  # every moment missing, every weight unexpected
    assert not (tmp_path / "grown").exists()
