"""The wire format and the record."""

from __future__ import annotations

import dataclasses

import pytest
from qtasks.errors import MalformedMessage
from qtasks.messages import Message, Record, Status

STEP = {"id": "s2", "name": "u", "args": [], "kwargs": {}, "queue": "default", "priority": 0}


def test_message_round_trips_through_the_wire_dict() -> None:
    message = Message(name="t", args=[1], kwargs={"a": 2}, headers={"h": "v"}, priority=3, eta=5.0, chain=[STEP])
    assert Message.from_wire(message.to_wire()) == message
    assert set(message.to_wire()) == {f.name for f in dataclasses.fields(Message)} | {"v"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"priority": True}, "field 'priority' has the wrong type bool"),
        ({"attempt": 0}, "attempt must be at least 1"),
        ({"headers": {"h": 1}}, "headers must map strings to strings"),
        ({"name": ""}, "empty task name or id"),
        ({"eta": "soon"}, "field 'eta' has the wrong type str"),
        ({"extra": 1}, "unknown field(s): 'extra'"),
        ({"chain": [1]}, "a chain step must be an object with exactly args, id, kwargs, name, priority, queue"),
        ({"chain": [{"id": "s", "name": "u"}]}, "a chain step must be an object with exactly"),
        ({"chain": [{**STEP, "args": {}}]}, "chain step field 'args' has the wrong type"),
    ],
)
def test_bad_wire_data_is_rejected_with_the_reason(change: dict[str, object], reason: str) -> None:
    wire = {**Message(name="t").to_wire(), **change}
    with pytest.raises(MalformedMessage) as err:
        Message.from_wire(wire)
    assert reason in str(err.value)


def test_next_step_appends_the_result_and_carries_the_rest() -> None:
    last = {**STEP, "id": "s3", "args": [7]}
    step = Message(name="t", chain=[STEP, last]).next_step(41)
    assert step is not None and (step.id, step.name, step.args, step.chain) == ("s2", "u", [41], [last])
    assert Message(name="t").next_step(1) is None


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(MalformedMessage, match=r"missing field\(s\): args, kwargs"):
        Message.from_wire({"v": 1, "id": "x", "name": "t"})


def test_record_dict_holds_every_field_and_statuses_compare_as_text() -> None:
    record = Record(id="00000000-0000-0000-0000-000000000001", name="t", status=Status.CANCELLED, reason="why")
    assert set(record.to_dict()) == {f.name for f in dataclasses.fields(Record)}
    assert Record.from_dict(record.to_dict()) == record
    assert record.status == "cancelled" and record.cancel_reason == "why" and record.task_name == "t"
    assert str(record.uuid) == record.id
    assert {s for s in Status if s.final} == {"success", "error", "cancelled", "dead"}
