"""Tensor-parallel layers against the unsharded ones, in one process.

T "ranks" run as T threads; their Allreduce is a sum through a barrier
(`ThreadGroup`), so the layers run exactly the code they run under MPI. The
references are independent of the code under test: the one-process layers of
transformer.py, the same formulas written out in NumPy, and finite differences.
"""

import threading

import numpy as np
import pytest

from mpipipe.nn.layers import GELU, LayerNorm, Linear, Sequential, leaf_layers
from mpipipe.nn.model import ModelSpec, build_block, build_stage, cut_block, join_block_shards
from mpipipe.nn.tensor_parallel import (ColumnParallelLinear, RowParallelLinear, Split, TensorGroup,
                                     TensorParallelAttention, allreduces_per_block, shard_block)
from mpipipe.nn.transformer import CausalSelfAttention, transformer_block


class ThreadGroup(TensorGroup):
    """One thread's view of a T-thread tensor group: allreduce sums through a barrier."""

    def __init__(self, shared, rank):
        super().__init__(shared["size"], rank)
        self.shared = shared

    def allreduce(self, array):
        shared = self.shared
        shared["parts"][self.rank] = array.copy()
        shared["barrier"].wait(timeout=10)
        total = sum(shared["parts"])      # the same order on every rank
        shared["barrier"].wait(timeout=10)
        array[...] = total
        self.calls += 1
        self.bytes += array.nbytes
        return array


def run_ranks(size, work):
    """work(group) on `size` threads at once; their results in rank order."""
    shared = {"size": size, "parts": [None] * size, "barrier": threading.Barrier(size)}
    results, errors = [None] * size, []

    def one(rank):
        try:
            results[rank] = work(ThreadGroup(shared, rank))
        except BaseException as error:      # noqa: BLE001 (reported below)
            errors.append(error)
            shared["barrier"].abort()

    threads = [threading.Thread(target=one, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if errors:
        raise errors[0]
    return results


def test_split_cuts_q_k_v_each_and_joins_back():
    full = np.arange(2 * 12).reshape(2, 12)          # columns: q 0-3 | k 4-7 | v 8-11
    split = Split(axis=1, groups=3)
    shards = [split.shard(full, 2, t) for t in range(2)]
    assert shards[0][0].tolist() == [0, 1, 4, 5, 8, 9]          # first half of q, of k, of v
    assert shards[1][0].tolist() == [2, 3, 6, 7, 10, 11]
    assert (split.join(shards) == full).all()


@pytest.mark.parametrize("size", [2, 4])
def test_column_then_row_parallel_equals_the_two_linears(size):
    """x -> Linear -> GELU -> Linear, written out, against the two parallel layers."""
    rng = np.random.default_rng(0)
    up, down = Linear(8, 32, rng), Linear(32, 8, rng)
    up.params["b"][:] = rng.standard_normal(32)
    down.params["b"][:] = rng.standard_normal(8)
    x, dy = rng.standard_normal((3, 5, 8)), rng.standard_normal((3, 5, 8))
    h = x @ up.params["W"] + up.params["b"]
    gelu, gelu_cache = GELU().forward(h)
    y_expected = gelu @ down.params["W"] + down.params["b"]
    dgelu = dy @ down.params["W"].T
    dh = GELU().backward_input(dgelu, gelu_cache)
    dx_expected = dh @ up.params["W"].T

    def work(group):
        mlp = Sequential([ColumnParallelLinear(up, group), GELU(), RowParallelLinear(down, group)])
        y, cache = mlp.forward(x)
        dx = mlp.backward_input(dy, cache)
        mlp.backward_weight(dy, cache)
        return y, dx, {(i, k): v for i, leaf in enumerate(leaf_layers(mlp))
                       for k, v in leaf.grads.items()}

    results = run_ranks(size, work)
    for rank, (y, dx, grads) in enumerate(results):
        np.testing.assert_allclose(y, y_expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, dx_expected, rtol=1e-12, atol=1e-12)
        cols = slice(rank * 32 // size, (rank + 1) * 32 // size)
        np.testing.assert_allclose(grads[(0, "W")], x.reshape(-1, 8).T @ dh.reshape(-1, 32)[:, cols])
        np.testing.assert_allclose(grads[(2, "W")],
                                   gelu.reshape(-1, 32)[:, cols].T @ dy.reshape(-1, 8))
        # the row-parallel bias is whole on every rank and its gradient counted once
        np.testing.assert_allclose(grads[(2, "b")], dy.reshape(-1, 8).sum(axis=0))


def test_attention_shards_give_the_whole_attention():
    rng = np.random.default_rng(1)
    full = CausalSelfAttention(8, 4, rng)
    for layer in (full.qkv, full.out):
        layer.params["b"][:] = 0.1 * rng.standard_normal(layer.params["b"].shape)
    x, dy = rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 5, 8))
    y_full, cache = full.forward(x)
    dx_full = full.backward(dy, cache)

    def work(group):
        part = TensorParallelAttention(full, group)
        y, c = part.forward(x)
        dx = part.backward_input(dy, c)
        part.backward_weight(dy, c)
        return y, dx, part

    results = run_ranks(2, work)
    for y, dx, _ in results:
        np.testing.assert_allclose(y, y_full, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, dx_full, rtol=1e-12, atol=1e-12)
    joined = Split(1, 3).join([part.qkv.grads["W"] for *_, part in results])
    np.testing.assert_allclose(joined, full.qkv.grads["W"])
    np.testing.assert_allclose(Split(0).join([part.out.grads["W"] for *_, part in results]),
                               full.out.grads["W"])


def test_a_sharded_block_matches_finite_differences():
    """The input gradient of the whole tensor-parallel block, against (L(x+h) - L(x-h)) / 2h."""
    rng = np.random.default_rng(2)
    block = transformer_block(8, 2, rng)
    x, dy = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 4, 8))

    def work(group):
        shard = shard_block(block, group)
        y, cache = shard.forward(x)
        dx = shard.backward(dy, cache)
        probes = []
        for index in [(0, 0, 0), (1, 3, 7), (0, 2, 5)]:
            moved = []
            for sign in (1, -1):
                xh = x.copy()
                xh[index] += sign * 1e-6
                moved.append(float((shard.forward(xh)[0] * dy).sum()))
            probes.append((dx[index], (moved[0] - moved[1]) / 2e-6))
        return probes

    for probes in run_ranks(2, work):
        for analytic, numeric in probes:
            assert abs(analytic - numeric) < 1e-6 * max(1.0, abs(numeric))


def test_the_backward_collective_belongs_to_b_and_w_stays_local():
    rng = np.random.default_rng(3)
    block = transformer_block(8, 2, rng)
    x, dy = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 4, 8))

    def work(group):
        shard = shard_block(block, group)
        _, cache = shard.forward(x)
        after_forward = group.calls
        shard.backward_input(dy, cache)
        after_b = group.calls
        shard.backward_weight(dy, cache)
        return after_forward, after_b - after_forward, group.calls - after_b

    for forward, b, w in run_ranks(2, work):
        assert (forward, b, w) == (2, 2, 0)
        assert forward + b == allreduces_per_block()


def test_shards_of_the_seeded_model_join_back_to_it():
    spec = ModelSpec(input_dim=13, output_dim=13, hidden=8, layers=2, kind="gpt", heads=4,
                     seq_len=5)
    for index in range(spec.num_blocks):
        whole = build_stage(spec, [index]).flat_params
        for size in (1, 2, 4):
            shards = [build_stage(spec, [index], tensor=TensorGroup(size, t)).flat_params
                      for t in range(size)]
            assert (join_block_shards(spec, index, shards) == whole).all()
            for t in range(size):
                assert (cut_block(spec, index, whole, size, t) == shards[t]).all()
    sizes = [build_stage(spec, [1], tensor=TensorGroup(2, t)).flat_params.size for t in range(2)]
    whole = build_stage(spec, [1]).flat_params.size
    assert sizes[0] == sizes[1] < whole          # a block's shard is smaller than the block


def test_a_sharded_model_without_a_communicator_refuses_to_run():
    spec = ModelSpec(input_dim=13, output_dim=13, hidden=8, layers=1, kind="gpt", heads=2,
                     seq_len=5)
    block = build_block(spec, 1, TensorGroup(2, 0))
    with pytest.raises(RuntimeError, match="no communicator"):
        block.forward(np.zeros((1, 5, 8)))
    assert isinstance(block.layers[0].inner.layers[0], LayerNorm)    # replicated


def test_the_timeline_marks_the_time_in_all_reduces():
    from mpipipe.schedules.actions import Action, Event
    from mpipipe.plan.timeline import render

    events = [Event(0, Action("F", 0), 0.0, 10.0, 4.0), Event(0, Action("BW", 0), 10.0, 20.0)]
    row = render(events, 1, width=30, unit="ms").splitlines()[0]
    assert row == "rank 0 |F0    ~~~~BW0", row           # 10 columns a box, 4 of them talk
    assert "'~': the part of an action spent in tensor-parallel all-reduces" in render(events, 1)
