"""Exercise 4, solution: the colours for Comm.Split.

Layout: world rank = dp_index * pp + pp_index, so
    dp_index = world_rank // pp   (which replica)
    pp_index = world_rank %  pp   (which stage)
"""


def pipeline_colour(world_rank, pp, dp):
    """A pipeline communicator holds the stages of one replica: colour = the replica."""
    return world_rank // pp


def data_colour(world_rank, pp, dp):
    """A data-parallel communicator holds one stage of every replica: colour = the stage."""
    return world_rank % pp
