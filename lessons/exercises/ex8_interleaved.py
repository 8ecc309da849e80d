"""Exercise 8: interleaving, which rank holds what and in which order it starts.

With V chunks per rank, the model is cut into P x V stages, and each rank
holds V of them, spread out so that a micro-batch loops through the ranks V
times (Megatron-LM's interleaved schedule; see mpipipe/schedules/interleaved.py
once you have tried):

                 chunk 0    chunk 1
    rank 0:      stage 0    stage 4          (P = 4 ranks, V = 2)
    rank 1:      stage 1    stage 5
    rank 2:      stage 2    stage 6
    rank 3:      stage 3    stage 7

Each rank runs m x V forwards, one per (micro-batch, chunk), then as many
backwards, in 1F1B's pattern: a warm-up of forwards, then one forward one
backward, then the backwards left. You write the placement and the warm-up;
the grader builds the rest of the schedule on your warm-ups and plays it out.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex8
"""


def rank_and_chunk(stage, num_ranks):
    """Which rank holds `stage`, and as which of its chunks: return (rank, chunk).

    For example, with the table above, rank_and_chunk(5, 4) is (1, 1).

    Hint: stages 0 .. P-1 are the ranks' chunks 0, stages P .. 2P-1 their
    chunks 1, and so on: think of // and %.
    """
    raise NotImplementedError("write me: rank_and_chunk")


def warmup(rank, num_ranks, num_microbatches, num_chunks):
    """The forwards `rank` runs before its first backward: a list of (micro-batch, chunk).

    The order: micro-batches go in groups of P (num_ranks). A rank runs a
    group through its chunk 0, then the same group through its chunk 1, ...,
    through its chunk V-1, then the next group through chunk 0, and so on.
    With P = 2, V = 2, m = 4 every rank's forwards, in order, are
        (0, 0) (1, 0) (0, 1) (1, 1) (2, 0) (3, 0) (2, 1) (3, 1)
    and its warm-up is the first few of them. (num_microbatches is a
    multiple of num_ranks.)

    How many: rank r's first backward waits for micro-batch 0's gradient,
    which comes only after micro-batch 0 went through all P x V stages.
    Until then rank r stays busy with forwards. The last rank's first
    backward is of micro-batch 0 on its last chunk, right after that
    forward, so its warm-up is the first group through its chunks 0 .. V-2:
    (V - 1) x P forwards. Each rank before it needs two more than the rank
    after it (one for the activation going down, one for the gradient
    coming back up), and no rank has more than m x V.

    Hint: too few and a backward comes before the forward it needs (the
    grader names the rank); too many and the rank holds more activations
    than it needs to; the grader also checks the step stays as short when
    messages take time.
    """
    raise NotImplementedError("write me: warmup")
