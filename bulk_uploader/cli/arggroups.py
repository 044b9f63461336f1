"""Options in groups: `OptionGroup`, the base of a frozen dataclass whose fields are typer
options, and `grouped_command`, which gives typer a flat signature (every field an option, shown
under its group's `panel` in --help) and hands the command one object per group, so a command
with thirty options has a handful of parameters and its body reads `speed.concurrency`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

from typer.models import OptionInfo

from bulk_uploader.records import FrozenRecord, record


class OptionGroup(FrozenRecord):
    """Base of the option groups; subclasses are records (`option_group`) and set `panel`.

    A group's fields cannot be assigned once it is made, as a frozen dataclass's cannot.
    """

    if TYPE_CHECKING:  # not at run time: _group_parameters' get_type_hints would evaluate it for each group
        panel: ClassVar[str]  # the --help panel its options appear under


_Group = TypeVar("_Group", bound=OptionGroup)


def option_group(group: type[_Group]) -> type[_Group]:
    """Make an OptionGroup subclass a dataclass whose methods are OptionGroup's (bulk_uploader.records)."""
    return record(group)


def _is_group(hint: object) -> bool:
    return isinstance(hint, type) and issubclass(hint, OptionGroup) and dataclasses.is_dataclass(hint)


def _group_parameters(group: type[OptionGroup]) -> Iterator[inspect.Parameter]:
    """The group's fields as keyword parameters annotated for typer, each in the group's panel."""
    hints = get_type_hints(group, include_extras=True)
    for field in dataclasses.fields(group):  # type: ignore[arg-type]  # _is_group checked it is a dataclass
        hint = hints[field.name]
        extras = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
        options = [extra for extra in extras if isinstance(extra, OptionInfo)]
        if len(options) != 1:
            raise TypeError(f"{group.__name__}.{field.name} needs one typer.Option in its annotation")
        # Set on the group's own option: every command that takes the group shows it in this panel.
        options[0].rich_help_panel = group.panel
        default = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        yield inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)


def grouped_command(func: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command whose parameters include option groups, for `app.command()`.

    Every parameter becomes keyword-only, which typer does not mind (it passes values by name)
    and which lets a required argument follow options that have defaults.
    """
    hints = get_type_hints(func, include_extras=True)
    groups: dict[str, type[OptionGroup]] = {}
    parameters: list[inspect.Parameter] = []
    for param in inspect.signature(func).parameters.values():
        hint = hints.get(param.name, param.annotation)
        if _is_group(hint):
            groups[param.name] = hint
            parameters.extend(_group_parameters(hint))
        else:
            parameters.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint))
    names = [p.name for p in parameters] + list(groups)
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise TypeError(f"{func.__name__}: more than one parameter or group field named {', '.join(clashes)}")
    fields = {name: [f.name for f in dataclasses.fields(group)] for name, group in groups.items()}  # type: ignore[arg-type]

    @functools.wraps(func)
    def command(**values: Any) -> None:
        for name, group in groups.items():
            values[name] = group(**{field: values.pop(field) for field in fields[name]})
        func(**values)

    # typer reads the options from the signature (inspect stops at __signature__ rather than
    # following __wrapped__ to func) and resolves their types through the annotations.
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command
