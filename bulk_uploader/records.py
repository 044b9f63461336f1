"""Records: dataclasses whose methods are written once, here, rather than compiled for each class.

`@dataclass` writes a class's methods (__init__, __repr__, __eq__, __hash__, a frozen class's
__setattr__ and __delattr__) as source text and compiles it when its module is imported, so every
command paid for the methods of every class it loaded, made or not. A record is a dataclass all the
same (its fields declared with types and defaults; dataclasses.fields, replace and astuple work),
whose methods come from its base and read the fields the decorator noted once:

    @record class RunStats(Record)              mutable; == compares the fields; not hashable
    @record(slots=True) class Destination(FrozenRecord)
                                                fields cannot be assigned (FrozenInstanceError);
                                                == and hash() on the fields
    @record(eq=False)                           == and hash() by identity, as object's

The base's __init__ takes the fields by position or name, with their defaults and factories, and
calls __post_init__ if the class has one; being general, it is slower than one written for the
class. A class made once a row (Job, RowResult, Probe...) writes its own __init__ in its body
(compiled with its module, cached like the rest of it); tests/test_records.py checks that each
takes the fields in order with their defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

_R = TypeVar("_R", bound=type)


class Record:
    """Base of mutable records: the generic methods, over the fields `record` noted on the class."""

    __slots__ = ()
    if TYPE_CHECKING:  # not at run time: typing.get_type_hints of an option group would evaluate them
        # Noted by `record` on each class: (name, default, default factory) of each field in order,
        # the names __init__ takes by position, the values == compares, the names repr() shows.
        _record_fields: ClassVar[tuple[tuple[str, Any, Any], ...]]
        _record_positional: ClassVar[tuple[str, ...]]
        _record_values: ClassVar[Callable[[Any], Any]]
        _record_shown: ClassVar[tuple[str, ...]]

    def __init__(self, *args: Any, **values: Any) -> None:
        cls = type(self)
        if len(args) > len(cls._record_positional):
            raise TypeError(f"{cls.__name__} takes {len(cls._record_positional)} fields by position, "
                            f"{len(args)} given")
        for name, value in zip(cls._record_positional, args, strict=False):
            if name in values:
                raise TypeError(f"{cls.__name__} got {name} twice")
            values[name] = value
        set_ = object.__setattr__  # a frozen record refuses its own __setattr__
        for name, default, factory in cls._record_fields:
            if name in values:
                value = values.pop(name)
            elif default is not MISSING:
                value = default
            elif factory is not MISSING:
                value = factory()
            else:
                raise TypeError(f"{cls.__name__} needs {name}")
            set_(self, name, value)
        if values:
            raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(values))}")
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._record_shown)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._record_values(self) == self._record_values(other)

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as a dataclass with eq


class FrozenRecord(Record):
    """Base of records whose fields cannot be assigned once made; hashed on the fields == compares."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._record_values(self))

    # copy and pickle set a record's state with setattr, which a frozen one refuses.
    def __getstate__(self) -> list[Any]:
        return [getattr(self, name) for name, _, _ in self._record_fields]

    def __setstate__(self, state: list[Any]) -> None:
        for (name, _, _), value in zip(self._record_fields, state, strict=True):
            object.__setattr__(self, name, value)


@overload
def record(cls: _R, /) -> _R: ...
@overload
def record(*, slots: bool = False, eq: bool = True, kw_only: bool = False) -> Callable[[_R], _R]: ...
def record(cls: Any = None, /, *, slots: bool = False, eq: bool = True, kw_only: bool = False) -> Any:
    """Make a Record (or FrozenRecord) subclass a dataclass that keeps its base's methods: its own
    __init__ if it writes one, the base's for the rest. `slots` gives it __slots__ of its fields."""

    def make(cls: _R) -> _R:
        if not issubclass(cls, Record):
            raise TypeError(f"{cls.__name__} is not a Record")
        cls = dataclasses.dataclass(init=False, repr=False, eq=False, slots=slots, kw_only=kw_only)(cls)
        fields = dataclasses.fields(cls)
        cls._record_fields = tuple((f.name, f.default, f.default_factory) for f in fields)
        cls._record_positional = tuple(f.name for f in fields if not f.kw_only)
        compared = [f.name for f in fields if f.compare]
        cls._record_values = attrgetter(*compared) if compared else _nothing
        cls._record_shown = tuple(f.name for f in fields if f.repr)
        if not eq:
            cls.__eq__ = object.__eq__  # type: ignore[assignment]
            cls.__hash__ = object.__hash__  # type: ignore[assignment]
        return cls

    return make if cls is None else make(cls)


def _nothing(_: object) -> tuple[()]:
    return ()
