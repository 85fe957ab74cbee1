"""The switch history survives a controller restart: finished records go to a journal in
the state directory, and a new controller on that directory shows them on /v1/history."""

from __future__ import annotations

import asyncio
import json

import httpx

from controller.app import create_app
from controller.assemble import build_controller
from controller.core import HISTORY_FILE
from controller.history import Outcome, SwitchJournal, SwitchRecord
from testbed.faults import CUT_AT_HIGH, CUT_AT_LOW
from tests.controller.helpers import settings_for


def _record(to_cut: int) -> SwitchRecord:
    return SwitchRecord(
        strategy="switch_on_demand",
        from_cut=0,
        to_cut=to_cut,
        reason="manual",
        trigger_unix=1.0,
        outcome=Outcome.SWITCHED,
        ready_after_s=0.5,
        switched_after_s=0.6,
        unavailable_s=0.0,
    )


def test_the_journal_reads_back_what_it_wrote(tmp_path):
    path = tmp_path / "state" / HISTORY_FILE
    SwitchJournal(path, keep=10).append(_record(3))
    (back,) = SwitchJournal(path, keep=10).load()
    assert back == _record(3)
    assert back.outcome is Outcome.SWITCHED


def test_a_torn_or_foreign_line_is_skipped_and_the_rest_kept(tmp_path):
    path = tmp_path / HISTORY_FILE
    journal = SwitchJournal(path, keep=10)
    journal.append(_record(3))
    with path.open("a") as file:
        file.write('["not", "a record"]\n{"to_cut": 4}\n{"strategy": "switch_on_dem')
    journal = SwitchJournal(path, keep=10)
    assert [r.to_cut for r in journal.load()] == [3]
    journal.append(_record(5))  # after the torn line: still one record per line
    assert [r.to_cut for r in SwitchJournal(path, keep=10).load()] == [3, 5]


def test_a_journal_that_is_not_text_is_left_aside_not_a_crash(tmp_path):
    path = tmp_path / HISTORY_FILE
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert SwitchJournal(path, keep=10).load() == []


def test_the_journal_keeps_the_newest_and_stays_bounded(tmp_path):
    path = tmp_path / HISTORY_FILE
    journal = SwitchJournal(path, keep=3)
    for cut in range(10):
        journal.append(_record(cut))
    assert [r.to_cut for r in SwitchJournal(path, keep=3).load()] == [7, 8, 9]
    assert len(path.read_text().splitlines()) < 2 * 3


async def _history(controller) -> list[dict[str, object]]:
    """/v1/history from the controller's app, without starting the controller."""
    transport = httpx.ASGITransport(app=create_app(controller))
    async with httpx.AsyncClient(transport=transport, base_url="http://controller") as api:
        return (await api.get("/v1/history")).json()["switches"]


def test_a_restarted_controller_shows_the_switches_before_it(
    slow_edge_tiny, gateway, token, link, tmp_path
):
    state = tmp_path / "state"
    settings = settings_for(slow_edge_tiny, gateway, token, state, auto=False)
    first = build_controller(settings, link=link)

    async def one_switch() -> SwitchRecord:
        async with first.running():
            return await first.switch_to(CUT_AT_LOW)

    record = asyncio.run(one_switch())
    assert record.outcome is Outcome.SWITCHED, record

    second = build_controller(settings, link=link)
    assert not second.history, "this run's history starts empty"
    shown = asyncio.run(_history(second))
    assert [(s["from_cut"], s["to_cut"], s["outcome"]) for s in shown] == [
        (CUT_AT_HIGH, CUT_AT_LOW, "switched")
    ]
    assert shown[0] == json.loads(json.dumps(record.as_dict()))
