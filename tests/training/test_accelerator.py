"""What the accelerator settings refuse before any training (eim.training.accelerator)."""

import pytest

from eim.errors import ConfigError
from eim.recipe import load_recipe
from eim.training.accelerator import check_partitioned_reads


def test_feature_cache_after_a_zero3_stage_is_refused():
    """ZeRO-3 leaves a stage's parameters partitioned: lavin_7b_eim's adapter stage would compute CLIP's
    features from partitioned weights, so the cache is refused with what to set. The first stage's
    cache is computed before anything is partitioned (clipcap_eim's st stage); ZeRO-2 partitions no
    weights; without the cache CLIP runs in the loop."""
    recipe = load_recipe("lavin_7b_eim", {"train.cache_clip_features": True})
    with pytest.raises(ConfigError, match=r"stage\(s\) adapter would compute CLIP's features .* "
                                          r"--train.cache_clip_features false"):
        check_partitioned_reads(recipe, partitioned=True)
    check_partitioned_reads(recipe, partitioned=False)
    check_partitioned_reads(load_recipe("lavin_7b_eim", {"train.cache_clip_features": False}), partitioned=True)
    check_partitioned_reads(load_recipe("clipcap_eim", {"train.cache_clip_features": True}), partitioned=True)
