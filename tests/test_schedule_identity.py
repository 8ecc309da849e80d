"""The planner may get faster, never different: every schedule, lowered, is the same
action list, message for message, as the one recorded in tests/data/schedule_hashes.json.

The file holds one short sha256 per case (a schedule, P, m, chunks), written once from
the code before the planner was sped up:

    .venv/bin/python tests/test_schedule_identity.py --write

Rewrite it only for a change that is meant to change a schedule, and say so in the
commit. A case that was refused then (ConfigError) must still be refused.
"""

import hashlib
import json
import os
import sys

import pytest

from mpipipe.errors import ConfigError
from mpipipe.schedules import GENERATORS, make_schedule, validate

HASHES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "schedule_hashes.json")
REFUSED = "refused"


def cases():
    """Some hundreds of (name, P, m, chunks): small and odd sizes, where off-by-ones
    live, and a few larger ones, where a faster planner takes other paths."""
    sizes = [(P, m) for P in (1, 2, 3, 4, 5, 6, 8) for m in (1, 2, 3, 4, 5, 7, 8, 12, 16)]
    sizes += [(16, 16), (16, 48), (16, 64), (32, 128), (64, 256)]
    for name in GENERATORS:
        for P, m in sizes:
            chunks = {"interleaved": (2, 3), "looped-bfs": (2, 3)}.get(name, (None,))
            for V in chunks:
                yield name, P, m, V


def key(name, P, m, V):
    return f"{name} P={P} m={m}" + (f" V={V}" if V else "")


def fingerprint(name, P, m, V):
    """sha256 (16 hex digits) of the lowered lists and where each stage lives."""
    try:
        schedule = validate(make_schedule(name, P, m, V))
    except ConfigError:
        return REFUSED
    text = repr(schedule.stage_map) + "\n" + "\n".join(
        " ".join(f"{a.kind},{a.microbatch},{a.chunk},{a.peer},{int(a.pairs_with_next)}"
                 for a in program) for program in schedule.programs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded():
    with open(HASHES) as data:
        return json.load(data)


def test_the_record_covers_every_case_and_some_run():
    record = recorded()
    assert set(record) == {key(*case) for case in cases()}
    assert sum(value != REFUSED for value in record.values()) > 300


@pytest.mark.parametrize("name", list(GENERATORS))
def test_every_schedule_is_the_one_recorded(name):
    record = recorded()
    differ = [key(*case) for case in cases() if case[0] == name
              and fingerprint(*case) != record[key(*case)]]
    assert not differ, f"{len(differ)} {name} schedules differ from the record: {differ[:5]}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    with open(HASHES, "w") as out:
        json.dump({key(*case): fingerprint(*case) for case in cases()}, out, indent=0,
                  sort_keys=True)
        out.write("\n")
    print(f"wrote {HASHES}")
