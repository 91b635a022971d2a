"""A callable's keyword arguments as command-line options, made from its signature and its docstring.

`tb-convviz log-checkpoints` offers ConvViz's options. Copied by hand they drifted (two were
missing); made here from ``ConvViz.__init__``'s type hints, defaults and the ``Args:`` section of
its docstring, a new ConvViz argument is on the command line, with its own help, without an edit
here. How an argument is written follows its type:

- ``bool``: ``--name`` when it defaults to False, ``--no-name`` when it defaults to True;
- ``int``, ``float`` (Optional: ``none`` gives None), ``str`` or what ``str`` converts to:
  ``--name VALUE``;
- an iterable of ``str`` (maybe among other choices): ``--name A B ...``;
- ``bool`` or a mapping of options: the flag above, and ``--name-options JSON`` (names lose a
  plural ``s``: ``--perturbation-options``);
- ``bool``, words (a ``Literal``) or a mapping of options: ``--name`` alone (True) or ``--name WORD``,
  and ``--name-options JSON`` (``--feature-vis all``);
- a mapping of names to callables: ``--name NAME=MODULE:FUNCTION``, repeatable (``--counterfactual``);
- an object of a class of this package, or a list of them (``metrics``): ``--name MODULE:ATTR ...``,
  each naming such an object or a list of them, all joined into one list.

Anything else (objects, callables alone, lists of objects) cannot be written on a command line and
is left out: `CommandLineOptions.skipped` names it.
"""
from __future__ import annotations

import argparse
import collections.abc
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Collection, Optional

NOT_GIVEN = object()  # an option absent from the command line: the callable keeps its own default


def argument_docs(target: Callable) -> dict[str, str]:
    """{argument: its text} from the Google-style ``Args:`` section of `target`'s docstring (a class:
    the class docstring), each text on one line."""
    lines = (inspect.getdoc(target) or "").splitlines()
    docs: dict[str, list[str]] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return {}
    indent: Optional[int] = None
    name = None
    for line in lines[start:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        entry = re.match(r"(\w+): (.*)", line.strip())
        if depth == indent and entry:
            name = entry.group(1)
            docs[name] = [entry.group(2)]
        elif name is not None:
            docs[name].append(line.strip())
    return {name: " ".join(parts) for name, parts in docs.items()}


def _help(text: str) -> str:
    """Docstring text as argparse help: reST quoting dropped, % escaped for argparse's formatting."""
    return text.replace("``", "").replace("`", "").replace("%", "%%")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"top_k\": 8}}', got {text!r}")
    return value


def _name_and_spec(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name or ":" not in spec:
        raise argparse.ArgumentTypeError(f"expected NAME=MODULE:FUNCTION, got {text!r}")
    return name, spec


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in its error messages
    return parse


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


@dataclass(frozen=True)
class Option:
    """One keyword argument on the command line: `add` puts it on a parser, `value` reads it back
    from the parsed arguments (NOT_GIVEN when absent), resolving MODULE:FUNCTION specs with `resolve`."""

    name: str
    add: Callable[[argparse.ArgumentParser], None]
    value: Callable[[argparse.Namespace, Callable[[str], Any]], Any]


def _flag(name: str, default: Any, doc: str) -> Option:
    if default is True:
        flag, const, text = f"--no-{_dashed(name)}", False, f"turn off (on by default): {doc}"
    else:
        flag, const, text = f"--{_dashed(name)}", True, doc
    return Option(
        name,
        lambda p: p.add_argument(flag, dest=name, action="store_const", const=const, default=NOT_GIVEN, help=_help(text)),
        lambda args, _resolve: getattr(args, name),
    )


def _switch_with_options(name: str, default: Any, doc: str) -> Option:
    """True/False or a dict of options: the flag, and ``--name-options JSON``, which turns it on."""
    switch = _flag(name, default, doc)
    flag = f"--{_dashed(_singular(name))}-options"
    dest = f"{name}__options"

    def add(p: argparse.ArgumentParser) -> None:
        switch.add(p)
        p.add_argument(flag, dest=dest, type=_json_object, metavar="JSON",
                       help=_help(f"the dict form of {name}, as a JSON object (turns it on): {doc}"))

    def value(args: argparse.Namespace, resolve: Callable[[str], Any]) -> Any:
        options, on = getattr(args, dest), switch.value(args, resolve)
        if options is not None and on is False:
            raise ValueError(f"{flag} and --no-{_dashed(name)} contradict each other")
        return options if options is not None else on

    return Option(name, add, value)


def _switch_word_or_options(name: str, default: Any, doc: str, words: tuple[str, ...]) -> Option:
    """True/False, one of `words`, or a dict of options: ``--name [WORD]`` and ``--name-options JSON``."""
    flag = f"--{_dashed(name)}"
    options_flag = f"--{_dashed(name)}-options"
    dest = f"{name}__options"
    if default is not False:
        raise ValueError(f"{name}: a switch with words must default to False")

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument(flag, dest=name, nargs="?", const=True, default=NOT_GIVEN, choices=list(words), metavar="|".join(words),
                       help=_help(f"turn on, or give one of {list(words)}: {doc}"))
        p.add_argument(options_flag, dest=dest, type=_json_object, metavar="JSON",
                       help=_help(f"the dict form of {name}, as a JSON object (turns it on): {doc}"))

    def value(args: argparse.Namespace, _resolve: Callable[[str], Any]) -> Any:
        options, on = getattr(args, dest), getattr(args, name)
        if options is not None and on is not NOT_GIVEN:
            raise ValueError(f"give {flag} or {options_flag}, not both")
        return options if options is not None else on

    return Option(name, add, value)


def _value(name: str, default: Any, doc: str, convert: Callable[[str], Any], optional: bool) -> Option:
    metavar = "N" if convert in (int, float) else name.rsplit("_", 1)[-1].upper()
    notes = [] if default is None else [f"default: {default}"]
    if optional and default is not None:
        convert = _or_none(convert)
        notes.append("none for None")
    text = f"{doc} ({'; '.join(notes)})" if notes else doc
    return Option(
        name,
        lambda p: p.add_argument(f"--{_dashed(name)}", dest=name, type=convert, default=NOT_GIVEN, metavar=metavar, help=_help(text)),
        lambda args, _resolve: getattr(args, name),
    )


def _names(name: str, doc: str) -> Option:
    return Option(
        name,
        lambda p: p.add_argument(f"--{_dashed(name)}", dest=name, nargs="+", default=NOT_GIVEN, metavar="NAME",
                                 help=_help(f"the list form of {name}, one or more names: {doc}")),
        lambda args, _resolve: getattr(args, name),
    )


def _callables(name: str, doc: str) -> Option:
    return Option(
        name,
        lambda p: p.add_argument(f"--{_dashed(_singular(name))}", dest=name, action="append", type=_name_and_spec,
                                 metavar="NAME=MODULE:FUNCTION", help=_help(f"one entry of {name}, repeatable: {doc}")),
        lambda args, resolve: NOT_GIVEN if getattr(args, name) is None else {n: resolve(spec) for n, spec in getattr(args, name)},
    )


def _objects(name: str, doc: str) -> Option:
    def value(args: argparse.Namespace, resolve: Callable[[str], Any]) -> Any:
        specs = getattr(args, name)
        if specs is NOT_GIVEN:
            return NOT_GIVEN
        found = [resolve(spec) for spec in specs]
        return [item for obj in found for item in (obj if isinstance(obj, (list, tuple)) else [obj])]

    return Option(
        name,
        lambda p: p.add_argument(f"--{_dashed(name)}", dest=name, nargs="+", default=NOT_GIVEN, metavar="MODULE:ATTR",
                                 help=_help(f"one or more MODULE:ATTR, each an object or a list of them: {doc}")),
        value,
    )


def _is_package_class(hint: Any) -> bool:
    return inspect.isclass(hint) and hint.__module__.split(".")[0] == __name__.split(".")[0]


def _is_iterable_of_str(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin in (list, tuple, collections.abc.Iterable, collections.abc.Sequence) and typing.get_args(hint)[:1] == (str,)


def _is_mapping_to_callables(hint: Any) -> bool:
    args = typing.get_args(hint)
    return (typing.get_origin(hint) is collections.abc.Mapping and args[0] is str
            and typing.get_origin(args[1]) is collections.abc.Callable)


def _option(name: str, hint: Any, default: Any, doc: str) -> Optional[Option]:
    """The option for one argument of type `hint`, or None when a command line cannot express it."""
    union = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    members = [m for m in union if m is not type(None)]
    optional = len(members) < len(union)
    if members == [bool]:
        return _flag(name, default, doc)
    if len(members) == 2 and bool in members and any(typing.get_origin(m) is collections.abc.Mapping for m in members):
        return _switch_with_options(name, default, doc)
    words = [m for m in members if typing.get_origin(m) is typing.Literal]
    if (len(members) == 3 and bool in members and len(words) == 1
            and any(typing.get_origin(m) is collections.abc.Mapping for m in members)):
        return _switch_word_or_options(name, default, doc, typing.get_args(words[0]))
    if len(members) == 1 and members[0] in (int, float):
        return _value(name, default, doc, members[0], optional)
    if str in members:
        return _value(name, default, doc, str, optional)
    if any(_is_iterable_of_str(m) for m in members):
        return _names(name, doc)
    if len(members) == 1 and _is_mapping_to_callables(members[0]):
        return _callables(name, doc)
    if any(_is_package_class(m) for m in members):
        return _objects(name, doc)
    return None


class CommandLineOptions:
    """`target`'s keyword arguments, but `exclude`, as command-line options: `add_to(parser)`, then
    `values(args, resolve)` → the keyword arguments given. `skipped`: the arguments no command line
    can express. An option whose argument the docstring does not describe is a ValueError naming it."""

    def __init__(self, target: Callable, exclude: Collection[str] = ()):
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        docs = argument_docs(target)
        self.options: list[Option] = []
        self.skipped: list[str] = []
        for name, parameter in inspect.signature(target).parameters.items():
            if name in exclude or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            option = _option(name, hints.get(name, Any), parameter.default, docs.get(name, ""))
            if option is None:
                self.skipped.append(name)
            elif name not in docs:
                raise ValueError(f"{getattr(target, '__name__', target)}'s docstring does not describe {name!r} under Args:")
            else:
                self.options.append(option)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        for option in self.options:
            option.add(parser)

    def values(self, args: argparse.Namespace, resolve: Callable[[str], Any]) -> dict[str, Any]:
        """The keyword arguments given on the command line (the others keep the target's defaults);
        a ValueError for options that contradict each other."""
        given = {option.name: option.value(args, resolve) for option in self.options}
        return {name: value for name, value in given.items() if value is not NOT_GIVEN}
