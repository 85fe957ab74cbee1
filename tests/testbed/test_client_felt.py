"""What clients felt, computed on hand-made request traces with known answers."""

from __future__ import annotations

import pytest

from testbed.client_felt import change_reaction, flip_cost, reactions, switch_cost
from testbed.probe_client import RequestRecord


def request(
    sent: float, latency: float, cut: int, status: int = 200, codec: str | None = None
) -> RequestRecord:
    return RequestRecord(sent, sent + latency, status, status == 200, cut, codec=codec)


def drop_trace() -> list[RequestRecord]:
    """10 req/s. Cut 0 at 0.1 s until the change at 30 s; then the link is slow: requests
    at cut 0 take 3 s until cut 11 first completes at 32.5 s; cut 11 then serves at 0.2 s."""
    trace = []
    for step in range(600):
        sent = step / 10
        if sent < 30:
            trace.append(request(sent, 0.1, 0))
        elif sent < 32.3:
            trace.append(request(sent, 3.0, 0))
        else:
            trace.append(request(sent, 0.2, 11))
    return trace


def test_the_reaction_to_a_drop_is_measured_from_the_clients_side() -> None:
    reaction = change_reaction(drop_trace(), 30.0, 60.0, cut_before=0)
    assert reaction["settled_cut"] == 11
    assert reaction["moved"] is True
    assert reaction["to_right_cut_s"] == pytest.approx(2.5, abs=1e-6)  # 32.3 + 0.2 - 30
    assert reaction["steady_p99_s"] == pytest.approx(0.2)
    assert reaction["window_max_s"] == pytest.approx(3.0)
    assert reaction["window_p99_s"] == pytest.approx(3.0)
    assert reaction["p99_over_steady"] == pytest.approx(15.0)
    # 23 requests at 3 s, each 2.8 s over the settled cut's 0.2 s median.
    assert reaction["excess_request_s"] == pytest.approx(23 * 2.8, rel=1e-3)
    assert reaction["failed"] == 0


def test_a_cut_that_was_already_right_costs_no_time_to_reach() -> None:
    trace = [request(step / 10, 0.1, 0) for step in range(600)]
    reaction = change_reaction(trace, 30.0, 60.0, cut_before=0)
    assert reaction["moved"] is False
    assert reaction["to_right_cut_s"] == 0.0
    assert reaction["excess_request_s"] == pytest.approx(0.0)


def test_failures_count_in_the_phase() -> None:
    trace = drop_trace()
    trace[310] = request(31.0, 0.5, 0, status=503)
    assert change_reaction(trace, 30.0, 60.0, cut_before=0)["failed"] == 1


def test_reactions_chain_the_settled_cut_through_the_schedule() -> None:
    trace = drop_trace() + [request(60 + step / 10, 0.1, 0) for step in range(300)]
    found = reactions(trace, [0.0, 30.0, 60.0], 90.0)
    assert [(r["cut_before"], r["settled_cut"]) for r in found] == [(0, 11), (11, 0)]


def test_two_codecs_of_one_cut_are_two_options() -> None:
    """Cut 0 plain until 30 s, then the same cut with int8 (the gateway's codec header):
    the phase settles on 0/int8, a move, reached when 0/int8 first completes."""
    trace = [request(step / 10, 0.1, 0) for step in range(300)]
    trace += [request(30 + step / 10, 0.3 if step < 5 else 0.05, 0) for step in range(5)]
    trace += [request(30.5 + step / 10, 0.05, 0, codec="int8") for step in range(295)]
    reaction = change_reaction(trace, 30.0, 60.0, cut_before=0)
    assert (reaction["settled_cut"], reaction["moved"]) == ("0/int8", True)
    assert reaction["to_right_cut_s"] == pytest.approx(0.55, abs=1e-6)
    assert reaction["steady_p99_s"] == pytest.approx(0.05)
    none = request(1.0, 0.1, 0, codec="none")
    assert none.option == 0, "the plain codec is the plain cut"


def test_a_switch_shows_its_in_flight_and_first_requests() -> None:
    trace = [request(step / 10, 0.1, 0) for step in range(100)]
    trace += [request(10 + step / 10, 0.5 if step < 3 else 0.1, 11) for step in range(100)]
    cost = switch_cost(trace, 10.05, 11, steady_median_s=0.1)
    assert cost["in_flight_across"] == 1  # sent at 10.0, done at 10.1
    assert cost["first_on_new_max_s"] == pytest.approx(0.5)
    assert cost["first_on_new_p50_s"] == pytest.approx(0.1)


def test_flip_cost_shows_a_stall_at_every_flip() -> None:
    calm = [request(step / 50, 0.005, 0) for step in range(500)]
    flips = [(2.0 + i, 2.001 + i) for i in range(5)]
    assert flip_cost(calm, flips).median_excess_s == pytest.approx(0.0)
    stalled = [
        request(r.sent_s, 0.105 if any(a - 0.01 < r.sent_s <= b for a, b in flips) else 0.005, 0)
        for r in calm
    ]
    assert flip_cost(stalled, flips).median_excess_s == pytest.approx(0.1)
