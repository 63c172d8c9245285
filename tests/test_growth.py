"""The torch-free half of growth (familyc.growth): the index maps every operator copies units by."""

from __future__ import annotations

from familyc.growth.maps import counts, index_maps
from familyc.shape import ModelShape

VOCAB = 64


def test_maps_copy_whole_multiples_evenly_and_keep_old_units_in_place() -> None:
    src = ModelShape(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    dst = ModelShape(dim=48, n_layers=5, n_heads=12, n_kv_heads=2, ffn_dim=50, vocab_size=VOCAB)
    maps = index_maps(src, dst, depth="zero_insert", seed=7)
    assert maps.dim[:16] == tuple(range(16)) and set(counts(maps.dim, 16)) == {3}
    assert set(counts(maps.heads, 4)) == {3}
    for target, source in enumerate(maps.heads):  # each query head stays in its KV head's group
        assert source // src.n_rep == maps.kv[target // dst.n_rep]
    assert sorted(counts(maps.ffn, 24)) == [2] * 22 + [3] * 2
    assert [(s.source, s.zero_output) for s in maps.layers] == [(0, False), (0, True), (1, False), (1, True),
                                                                 (1, True)]
    assert index_maps(src, dst, depth="zero_insert", seed=7) == maps
    assert index_maps(src, dst, depth="zero_insert", seed=8) != maps
