import pytest

from mpipipe.errors import ConfigError
from mpipipe.topology import check_grid, grid, world_rank_of


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
