"""The arithmetic of bench/scale_model.py, against results known without it."""

from __future__ import annotations

import math
import random

import pytest

from bench import scale_model as m


def test_saturation_is_one_core_over_the_cost() -> None:
    assert m.saturation_rate(50.0) == pytest.approx(20_000)
    assert m.saturation_rate(50.0, 0.7) == pytest.approx(14_000)
    assert m.cores_fed(worker_us=200.0, arbiter_us=50.0) == pytest.approx(4.0)


def test_erlang_c_matches_textbook_values() -> None:
    # One server: P(wait) is the utilisation.  Two servers at 1 erlang: 1/3.
    assert m.erlang_c(1, 0.5) == pytest.approx(0.5)
    assert m.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # 10 servers at 8 erlangs: 0.409 (standard Erlang C table).
    assert m.erlang_c(10, 8.0) == pytest.approx(0.4087, abs=5e-4)


def test_one_queue_waits_less_than_a_queue_per_worker() -> None:
    waits = m.mm_waits(16, 0.8)
    assert waits["split_p_wait"] == pytest.approx(0.8)
    assert waits["split_mean_wait"] == pytest.approx(4.0)  # ρ/(1-ρ) services
    assert waits["pooled_p_wait"] < 0.35 and waits["pooled_mean_wait"] < 0.1


def test_balls_into_bins_grows_like_log_n_over_log_log_n() -> None:
    # n balls in n bins: the fullest holds about ln n / ln ln n (Gonnet), 3-5 at these sizes.
    fullest = m.expected_max_load(128, 128, trials=50, seed=3)
    assert 3.5 < fullest < 6.5
    assert math.log(128) / math.log(math.log(128)) < fullest
    # Many balls per bin: close to the mean.
    assert m.expected_max_load(100 * 16, 16, trials=20, seed=3) / 100 < 1.4


def test_memory_is_shared_pages_plus_arbiter_plus_workers() -> None:
    wsgi = m.MEMORY_MIB["clusterserve WSGI"]
    assert m.memory_mib("clusterserve WSGI", 10) == pytest.approx(
        wsgi["shared"] + wsgi["arbiter_uss"] + 10 * wsgi["worker_uss"])


def test_one_worker_reuseport_is_the_single_server_queue() -> None:
    """With one worker every placement is the same M/D/1 queue: Pollaczek-Khinchine."""
    workload = m.Workload(fast_ms=1.0, slow_ms=1.0, slow_share=0.0)
    runs = [m.simulate(p, 1, 0.5, 40_000, seed=7, workload=workload) for p in m.PLACEMENTS]
    expected = 0.5 * 1.0 / (2 * (1 - 0.5))  # M/D/1 mean wait: ρS / 2(1-ρ)
    for run in runs:
        assert run.mean_wait_ms == pytest.approx(expected, rel=0.1)
        assert run.per_worker == [40_000]


def test_simulation_is_seeded_and_the_slow_worker_hurts_only_reuseport() -> None:
    first = m.simulate("reuseport", 16, 0.5, 20_000, seed=5, slow_worker_speed=0.25)
    again = m.simulate("reuseport", 16, 0.5, 20_000, seed=5, slow_worker_speed=0.25)
    assert first == again
    pooled = m.simulate("one_queue_turns", 16, 0.5, 20_000, seed=5, slow_worker_speed=0.25)
    # A quarter-speed worker offered its 1/16 share at 50 % load cannot keep up: its queue grows.
    assert first.slow_worker_p99_wait_ms > 1000 and first.slow_worker_max_queue > 100
    assert pooled.slow_worker_p99_wait_ms < 60 and pooled.slow_worker_max_queue < 5
    assert pooled.slow_worker_share < first.slow_worker_share


def test_priority_wakes_pile_work_on_the_first_workers() -> None:
    turns = m.simulate("one_queue_turns", 16, 0.3, 20_000, seed=2)
    priority = m.simulate("one_queue_priority", 16, 0.3, 20_000, seed=2)
    assert priority.per_worker[0] > 2 * turns.per_worker[0]
    assert priority.idlest_offered_load < 0.05 < turns.idlest_offered_load


def test_kernel_wakes_the_first_registered_idle_epoll() -> None:
    """Real processes, real sockets on 127.0.0.1: the kernel behaviour the model assumes."""
    watching = m.wake_order(4, 12, re_register=False)
    turning = m.wake_order(4, 12, re_register=True)
    assert watching == [0] * 12
    assert sorted(turning.count(i) for i in range(4)) == [3, 3, 3, 3]


def test_workload_mean() -> None:
    workload = m.Workload(fast_ms=2.0, slow_ms=50.0, slow_share=0.05)
    assert workload.mean_ms == pytest.approx(4.4)
    rng = random.Random(0)
    draws = [workload.draw(rng) for _ in range(20_000)]
    assert sum(draws) / len(draws) == pytest.approx(4.4, rel=0.1)
