"""Check what one mpipipe batch job wrote: its summary JSON and its rank layout.

    python check_job.py JOB.out --summary JOB.json --pp 2 --dp 2 --steps 6 \
        [--tp 2] [--first-step 3] [--reference OTHER.json] [--nodes 2] [--gpus 0,1]

Prints one line saying what was checked, and exits 1 with the reasons if
anything is off. Used by run_jobs.sh; needs nothing beyond Python.

The summary is the last line `mpipipe train --json` printed, saved by the
batch script: it must have the asked-for tp, pp and dp, one finite loss per step
run (steps first_step+1 .. steps), and, given --reference (another job's
summary of the same model and data), the same losses for the same steps to
round-off, whatever its pp, dp or micro-batches: a pipelined, data-parallel,
resumed run is the single-process run re-ordered.

The rank layout is the table the batch script prints before training: one row
per rank with its tensor shard, stage, replica, node and visible GPUs. Each
rank must sit where world rank = (replica * pp + stage) * tp + shard puts it,
every tensor group on one node, and every replica on one node.
"""

import argparse
import json
import math
import re
import sys

ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def rank_rows(out_text):
    """(rank, shard, stage, replica, node, local rank, GPUs) rows of the last layout table."""
    tables = out_text.split("== rank layout:")
    if len(tables) < 2:
        return []
    rows = []
    for line in tables[-1].splitlines()[2:]:
        m = ROW.match(line)
        if not m:
            break
        rank, shard, stage, replica = (int(g) for g in m.groups()[:4])
        rows.append((rank, shard, stage, replica) + m.groups()[4:])
    return rows


def check(args):
    problems, said = [], []
    s = json.load(open(args.summary))
    if (s.get("tp", 1), s.get("pp"), s.get("dp")) != (args.tp, args.pp, args.dp):
        problems.append(f"tp={s.get('tp', 1)} pp={s.get('pp')} dp={s.get('dp')}, expected "
                        f"tp={args.tp} pp={args.pp} dp={args.dp}")
    if (s.get("first_step"), s.get("steps")) != (args.first_step, args.steps):
        problems.append(f"steps {s.get('first_step')}..{s.get('steps')}, "
                        f"expected {args.first_step}..{args.steps}")
    losses = s.get("losses") or []
    want = args.steps - args.first_step
    if len(losses) != want:
        problems.append(f"{len(losses)} losses, expected {want}")
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses):
        problems.append(f"non-finite losses: {losses}")
    said.append(f"tp={s.get('tp', 1)} pp={s.get('pp')} dp={s.get('dp')}, steps {s.get('first_step')}..{s.get('steps')}, "
                f"{len(losses)} finite losses, final {losses[-1] if losses else float('nan'):.6f}")
    if args.reference:
        ref = json.load(open(args.reference))["losses"][args.first_step:args.steps]
        if len(ref) != len(losses) or any(
                not math.isclose(a, b, rel_tol=1e-8) for a, b in zip(losses, ref)):
            problems.append(f"losses {losses} differ from the reference's {ref}")
        else:
            said.append("same losses as the reference run")

    rows = rank_rows(open(args.out).read())
    tp, pp = args.tp, args.pp
    if len(rows) != tp * pp * args.dp:
        problems.append(f"rank layout has {len(rows)} rows, expected {tp * pp * args.dp}")
    replica_nodes, group_nodes = {}, {}
    for rank, shard, stage, replica, node, _local, gpus in rows:
        if (shard, stage, replica) != (rank % tp, rank // tp % pp, rank // (tp * pp)):
            problems.append(f"rank {rank} shown as shard {shard} stage {stage} replica {replica}")
        replica_nodes.setdefault(replica, set()).add(node)
        group_nodes.setdefault((replica, stage), set()).add(node)
        if args.gpus is not None and gpus != args.gpus:
            problems.append(f"rank {rank} sees GPUs {gpus}, expected all of its node's: {args.gpus}")
    split = {r: n for r, n in replica_nodes.items() if len(n) > 1}
    if split:
        problems.append(f"replicas spanning nodes: {split}")
    split = {g: n for g, n in group_nodes.items() if len(n) > 1}
    if split:
        problems.append(f"tensor groups (replica, stage) spanning nodes: {split}")
    nodes = sorted(set().union(*replica_nodes.values())) if replica_nodes else []
    if args.nodes is not None and len(nodes) != args.nodes:
        problems.append(f"ranks on {len(nodes)} node(s) {nodes}, expected {args.nodes}")
    if rows:
        said.append("layout: " + ", ".join(
            f"replica {r} on {'+'.join(sorted(n))}" for r, n in sorted(replica_nodes.items()))
            + (f", each tensor group of {tp} on one node" if tp > 1 else "")
            + (f", every rank sees GPUs {args.gpus}" if args.gpus is not None else ""))
    return problems, said


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the job's .out file")
    p.add_argument("--summary", required=True, help="the job's summary JSON")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, required=True)
    p.add_argument("--dp", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--first-step", type=int, default=0)
    p.add_argument("--reference", help="another job's summary: the losses must agree")
    p.add_argument("--nodes", type=int, help="nodes the ranks must be spread over")
    p.add_argument("--gpus", help="the GPUs every rank must see, e.g. 0,1")
    args = p.parse_args()
    try:
        problems, said = check(args)
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems, said = [f"cannot read the job's files: {e!r}"], []
    if problems:
        print("summary check FAILED: " + "; ".join(problems))
        sys.exit(1)
    print("summary ok: " + "; ".join(said))


if __name__ == "__main__":
    main()
