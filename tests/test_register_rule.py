"""The registration upsert (`gateway.domain.rules.register_agent`) keeps every field of the
stored agent that the command does not set.

The rule builds its `Agent` field by field (cheaper than `dataclasses.replace`, issue 13), so a
field added to `Agent` later and forgotten there would be reset to its default on every
heartbeat. The stored agent here holds a distinct object in every field, whatever fields
`Agent` has, and the result must hold the same objects in every field the command leaves alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.domain import commands as c
from gateway.domain.model import Agent
from gateway.domain.rules import register_agent

SET_BY_COMMAND = {"status", "last_seen", "capabilities", "offers", "needs"}
"""Replaced on every registration; `current_task` and `working_on` only when given."""


def command(**body: object) -> c.RegisterAgent:
    return c.RegisterAgent.parse({"agentId": "a1", "status": "busy", **body}, now_ms=1_700_000_000_000)


@pytest.mark.parametrize("given", [{}, {"currentTask": "t-2", "workingOn": "src/x.ts"}])
def test_registration_keeps_every_field_it_does_not_set(given: dict[str, str]) -> None:
    fields: dict[str, Any] = {f.name: object() for f in dataclasses.fields(Agent)}
    stored = Agent(**{**fields, "agent_id": "a1"})
    cmd = command(capabilities=["py"], **given)

    agent = register_agent(stored, cmd)

    kept = {f.name for f in dataclasses.fields(Agent)} - SET_BY_COMMAND
    if given:
        kept -= {"current_task", "working_on"}
        assert (agent.current_task, agent.working_on) == ("t-2", "src/x.ts")
    assert {name for name in kept if getattr(agent, name) is not getattr(stored, name)} == set()
    assert agent.status == "busy"
    assert agent.capabilities == ["py"]
    assert agent.last_seen == "2023-11-14T22:13:20.000Z"


def test_a_first_registration_starts_from_the_defaults() -> None:
    agent = register_agent(None, command())

    assert agent.agent_id == "a1"
    assert (agent.current_task, agent.working_on, agent.extra) == (None, None, {})
