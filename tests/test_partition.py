import itertools

import pytest

from mpipipe.errors import ConfigError
from mpipipe.nn.model import ModelSpec, block_param_counts, build_block
from mpipipe.plan.partition import balanced_by_params, block_ranges, make_partition, uniform


def test_uniform_gives_the_remainder_to_the_first_stages():
    assert uniform(8, 3) == [3, 3, 2]
    assert uniform(8, 4) == [2, 2, 2, 2]
    assert uniform(5, 5) == [1] * 5


def brute_force_best(counts, stages):
    """The lightest possible heaviest stage, trying every set of cut points."""
    best = None
    for cuts in itertools.combinations(range(1, len(counts)), stages - 1):
        edges = (0,) + cuts + (len(counts),)
        heaviest = max(sum(counts[a:b]) for a, b in zip(edges, edges[1:]))
        best = heaviest if best is None else min(best, heaviest)
    return best


@pytest.mark.parametrize("counts", [[5, 1, 1, 1, 1, 5], [10, 2, 3, 7, 1, 1, 9], [1] * 6,
                                    [100, 1, 1, 1]])
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_params_partition_is_optimal(counts, stages):
    sizes = balanced_by_params(counts, stages)
    assert sum(sizes) == len(counts) and len(sizes) == stages and min(sizes) >= 1
    heaviest = max(sum(counts[r.start:r.stop]) for r in block_ranges(sizes))
    assert heaviest == brute_force_best(counts, stages)


def test_param_counts_match_the_built_blocks():
    spec = ModelSpec(input_dim=3, output_dim=5, hidden=7, layers=4, layernorm=True)
    built = [sum(p.size for l in build_block(spec, i).layers for p in l.params.values())
             for i in range(spec.layers)]
    assert block_param_counts(spec) == built


@pytest.mark.parametrize("how,message", [
    ([2, 2], "2 entries for 3 stages"),
    ([4, 0, 4], "at least one block"),
    ([3, 3, 3], "covers 9 blocks, the model has 8"),
    ("zigzag", "unknown partition"),
])
def test_bad_partitions(how, message):
    with pytest.raises(ConfigError, match=message):
        make_partition(how, [1] * 8, 3)


def test_more_stages_than_layers():
    for how in ("uniform", "params"):
        with pytest.raises(ConfigError, match="4 pipeline stages but the model has only 3 layers"):
            make_partition(how, [1, 1, 1], 4)
