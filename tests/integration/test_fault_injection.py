"""Faults at random under load, in every dispatch mode and interface (bench/faults.py).

A few seconds each here; ``python -m bench.faults`` runs a minute per mode and
interface.  The environment faults (a full log disk, a flood of idle connections,
slow readers) are dealt twice as often as the others, so that most of these short
runs meet one.  The seed and the counts are printed at the end of the pytest run;
``pytest --fault-seed N`` replays a seed.
"""

import random

import pytest

from bench import faults

SECONDS = 6.0


@pytest.fixture
def fault_seed(request):
    seed = request.config.getoption("--fault-seed")
    return seed if seed is not None else random.SystemRandom().randrange(1 << 32)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("interface", faults.INTERFACES)
def test_the_arbiter_stays_and_recovers_from_random_faults(dispatch, interface, fault_seed, tmp_path,
                                                           record_property):
    outcome = faults.run(dispatch, interface, SECONDS, fault_seed, tmp_path)
    record_property("fault injection", outcome.summary())
    for name, why in outcome.left_out.items():  # the same line from each test: printed once
        record_property("fault injection", f"{name} left out: {why}")
    print(outcome.summary())
    assert outcome.arbiter_exit is None, f"the arbiter exited with {outcome.arbiter_exit}"
    assert outcome.not_recovered == []
    assert outcome.arbiter_trouble == []
    assert outcome.not_logged == []
    assert [(r, outcome.fault_before(r.ended)) for r in outcome.failed] == []
    assert outcome.stop_code == 0
    # The load ran.  Not a rate: in ``reuseport`` a stopped worker holds its share of new
    # connections until it is killed (docs/dispatch.md), so a long SIGSTOP stalls every client.
    assert sum(outcome.faults.values()) >= 1 and outcome.requests >= 5 * faults.CLIENTS
