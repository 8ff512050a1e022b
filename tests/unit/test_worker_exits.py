import signal

import pytest

from clusterserve.worker_exits import ExitReason, exit_status, signal_name, unasked


@pytest.mark.parametrize(("number", "name"), [
    (signal.SIGKILL, "SIGKILL"),
    (signal.SIGRTMIN, "SIGRTMIN"),
    (signal.SIGRTMIN + 6, "SIGRTMIN+6"),
    (signal.SIGRTMAX, "SIGRTMAX"),
    (99, "signal 99"),
])
def test_every_signal_a_process_can_die_of_has_a_name(number, name):
    assert signal_name(number) == name
    assert exit_status(-number) == f"was killed by {name}"
    assert unasked(-number).reason is ExitReason.CRASH and unasked(-number).detail == name
