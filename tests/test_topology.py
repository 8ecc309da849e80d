import pytest

from mpipipe.errors import ConfigError
from mpipipe.comm.topology import check_grid, colours, communicators, coordinates, grid, world_rank_of


def test_layout_replica_major():
    assert [world_rank_of(s, 0, 4) for s in range(4)] == [0, 1, 2, 3]
    assert [world_rank_of(s, 1, 4) for s in range(4)] == [4, 5, 6, 7]
    ranks = sorted(world_rank_of(s, d, 3) for s in range(3) for d in range(5))
    assert ranks == list(range(15))


def test_grid_picture_names_every_rank_once():
    text = grid(4, 2)
    assert "replica 1:  rank 4  rank 5  rank 6  rank 7" in text
    assert all(text.count(f"rank {r} ") + text.count(f"rank {r}\n") >= 1 for r in range(8))


@pytest.mark.parametrize("size,pp,dp,message", [
    (4, 3, 1, "cannot form a pp=3 x dp=1 grid"),
    (4, 0, 1, "at least 1"),
    (4, 2, 3, "mpiexec -n 6"),
])
def test_check_grid(size, pp, dp, message):
    with pytest.raises(ConfigError, match=message):
        check_grid(size, pp, dp)


def test_tensor_ranks_vary_fastest_then_stages_then_replicas():
    assert [world_rank_of(s, d, 2, t, 2) for d in range(2) for s in range(2) for t in range(2)] \
        == list(range(8))
    assert coordinates(6, 2, 2) == (0, 1, 1)          # tp_index 0 of stage 1 of replica 1
    assert all(world_rank_of(*coordinates(r, 4, 3)[1:], 3, coordinates(r, 4, 3)[0], 4) == r
               for r in range(24))


def test_the_communicators_of_a_3d_grid():
    groups = communicators(2, 2, 2)
    assert groups["tensor"] == [[0, 1], [2, 3], [4, 5], [6, 7]]    # a stage's shards
    assert groups["pipe"] == [[0, 2], [1, 3], [4, 6], [5, 7]]      # one shard index, a replica
    assert groups["data"] == [[0, 4], [1, 5], [2, 6], [3, 7]]      # one shard of a stage
    assert colours(5, 2, 2) == {"tensor": 2, "pipe": 3, "data": 1}
    text = grid(2, 2, 2)
    assert "replica 1:  [ 4 5 ]  [ 6 7 ]" in text
    assert "0 2 | 1 3 | 4 6 | 5 7" in text and "0 4 | 1 5 | 2 6 | 3 7" in text
    assert "world rank = (dp_index * 2 + pp_index) * 2 + tp_index" in text


def test_check_grid_names_the_product():
    with pytest.raises(ConfigError, match="cannot form a tp=2 x pp=2 x dp=2 grid, which needs 8"):
        check_grid(6, 2, 2, 2)
    assert check_grid(8, None, 2, 2) == (2, 2)
