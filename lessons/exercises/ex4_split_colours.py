"""Exercise 4: which ranks talk to which? The colours for Comm.Split.

A run with pp pipeline stages and dp data-parallel replicas has pp * dp
ranks, laid out as (see mpipipe/comm/topology.py):

    world rank = dp_index * pp + pp_index

                 stage 0   stage 1   stage 2   stage 3
    replica 0:   rank 0    rank 1    rank 2    rank 3     (pp = 4, dp = 2)
    replica 1:   rank 4    rank 5    rank 6    rank 7

comm.Split(color, key) puts the ranks that pass the same colour into one
new communicator. Each row needs a pipeline communicator (Send/Recv of
activations between its stages), each column a data-parallel communicator
(Allreduce of that stage's gradients across replicas).

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex4
"""


def pipeline_colour(world_rank, pp, dp):
    """The colour that puts world_rank in the pipeline communicator of its replica (its row).

    Return a whole number >= 0, equal for the ranks of one replica and
    different between replicas. With pp = 4, dp = 2: ranks 0-3 share one
    colour, ranks 4-7 another.

    Hint: which replica is world_rank in? Undo the layout formula above.
    """
    raise NotImplementedError("write me: pipeline_colour")


def data_colour(world_rank, pp, dp):
    """The colour that puts world_rank in the data-parallel communicator of its stage (its column).

    Return a whole number >= 0, equal for the ranks holding the same stage
    and different between stages. With pp = 4, dp = 2: ranks 0 and 4 share
    one colour, ranks 1 and 5 another, and so on.

    Hint: which stage does world_rank hold?
    """
    raise NotImplementedError("write me: data_colour")
