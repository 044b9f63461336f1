"""Records (bulk_uploader.records) behave as the dataclasses they replace: fields by position or name
with their defaults, a clear error for a missing or unknown one, == and hash() on the fields, a frozen
one's fields refused, a repr that shows what the fields say it shows; and every __init__ a class
writes for itself takes its fields in order, with their defaults, into the right attributes."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from dataclasses import field

import pytest

from bulk_uploader import audio, chat, errors, model, settle, transcode, verify
from bulk_uploader.auth import Credentials
from bulk_uploader.errors import ConfigError
from bulk_uploader.pipeline import sender
from bulk_uploader.records import FrozenRecord, Record, record
from bulk_uploader.shard import Shard
from bulk_uploader.transport import pool


@record(slots=True)
class Point(FrozenRecord):
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list, compare=False)
    note: str = field(default="", repr=False)


@record
class Counts(Record):
    seen: int = 0
    names: dict[str, int] = field(default_factory=dict)


@record(kw_only=True)
class Settings(FrozenRecord):
    size: int
    name: str = "n"


@record(eq=False)
class Handle(Record):
    name: str


def test_fields_are_taken_by_position_or_name_with_their_defaults() -> None:
    assert (Point(1).x, Point(1).y, Point(1).tags, Point(1).note) == (1, 0, [], "")
    assert Point(1, 2, ["a"], "n") == Point(y=2, x=1, tags=["a"], note="n")
    assert Counts().names is not Counts().names  # a factory's value is made for each record
    assert Settings(size=3).name == "n"
    assert dataclasses.astuple(Point(1, 2)) == (1, 2, [], "")
    assert dataclasses.replace(Point(1, 2), y=5) == Point(1, 5)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags", "note"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Point(), "Point needs x"),
    (lambda: Point(1, z=2), "Point has no field z"),
    (lambda: Point(1, x=2), "Point got x twice"),
    (lambda: Point(1, 2, [], "", 5), "Point takes 4 fields by position, 5 given"),
    (lambda: Settings(3), "Settings takes 0 fields by position, 1 given"),
])
def test_a_missing_unknown_or_extra_field_is_a_type_error_that_names_it(make: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        make()  # type: ignore[operator]


def test_a_frozen_record_refuses_assignment_and_deletion_and_survives_copy_and_pickle() -> None:
    point = Point(1, 2, ["a"])
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
        point.x = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'y'"):
        del point.y  # type: ignore[misc]
    with pytest.raises(AttributeError):
        point.other = 1  # type: ignore[attr-defined]  # slots: no other attribute either
    assert copy.copy(point) == point == pickle.loads(pickle.dumps(point))
    assert copy.deepcopy(point).tags == ["a"]
    counts = Counts()
    counts.seen += 1  # a mutable one takes assignment
    assert counts.seen == 1


def test_equality_and_hash_follow_the_compared_fields() -> None:
    assert Point(1, 2, ["a"]) == Point(1, 2, ["b"]) and hash(Point(1, 2, ["a"])) == hash(Point(1, 2, ["b"]))
    assert Point(1, 2) != Point(1, 3) and Point(1, 2) != (1, 2)
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Counts(1) == Counts(1) and Counts(1) != Counts(2)
    with pytest.raises(TypeError, match="unhashable"):
        hash(Counts())  # mutable, compared by value: not hashable, as a dataclass with eq
    a = Handle("a")
    assert a != Handle("a") and a == a and len({a, Handle("a")}) == 2  # eq=False: identity


def test_repr_shows_the_fields_the_declaration_shows() -> None:
    assert repr(Point(1, 2, note="hidden")) == "Point(x=1, y=2, tags=[])"
    assert repr(Credentials("Api-Key", "s3cret")) == "Credentials(scheme='Api-Key')"
    assert "s3cret" not in repr(Credentials("Api-Key", "s3cret"))


def test_post_init_checks_run_as_a_dataclass_runs_them() -> None:
    assert Shard(1, 2).contains("k") in (True, False)
    with pytest.raises(ConfigError, match="need 0 <= K < N"):
        Shard(2, 2)


def test_only_records_become_records() -> None:
    class Plain:
        x: int

    with pytest.raises(TypeError, match="Plain is not a Record"):
        record(Plain)


# Classes made once a row (or a call, a message, a connection) write their own __init__.
OWN_INIT = [model.ManifestRow, model.User, model.Job, model.RowResult, model.TalkRecord, audio.AudioInfo,
            audio.Probe, audio.Verdict, chat.ChatMessage, transcode.Plan, errors.CallFailure, settle._Ask,
            sender._Payload, pool.Connection, verify.RowCheck]


@pytest.mark.parametrize("cls", OWN_INIT, ids=lambda cls: cls.__name__)
def test_an_init_written_for_a_class_takes_its_fields_in_order_with_their_defaults(cls: type) -> None:
    assert "__init__" in cls.__dict__
    fields = dataclasses.fields(cls)
    parameters = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in fields]
    for f, p in zip(fields, parameters, strict=True):
        if f.default_factory is not dataclasses.MISSING:
            assert p.default is None, f.name  # None: a fresh value from the factory
        else:
            expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            assert p.default == expected, f.name
    values = [object() for _ in fields]
    by_position, by_name = cls(*values), cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    assert [getattr(by_position, f.name) for f in fields] == values == [getattr(by_name, f.name) for f in fields]
    required = [object() for f in fields if f.default is f.default_factory is dataclasses.MISSING]
    made = cls(*required)
    for f in fields[len(required):]:
        expected = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert getattr(made, f.name) == expected, f.name
    if issubclass(cls, FrozenRecord):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, fields[0].name, 1)
