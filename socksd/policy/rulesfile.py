"""
The rules file: reading a TOML rules document and compiling it into
L{Policy <socksd.policy.Policy>} arguments, and L{RulesError} for a rule
that cannot be compiled.  The schema is in L{socksd.policy}'s docstring.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Callable, Mapping

from socksd.policy.rules import Action, ClientRule, DestinationRule

__all__ = [
    "RulesError",
]


class RulesError(ValueError):
    """
    A rule that cannot be compiled: a bad rules file or a bad option.

    @ivar source: the file name (or option name) the rule came from.
    @ivar section: C{"client"}, C{"destination"}, or L{None} for the file
        as a whole.
    @ivar number: the rule's 1-based position in its section, or L{None}.
    @ivar problem: what is wrong.
    """

    def __init__(
        self,
        problem: str,
        source: str | None = None,
        section: str | None = None,
        number: int | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.section = section
        self.number = number
        where = []
        if source is not None:
            where.append(source)
        if section is not None and number is not None:
            where.append(f"{section} rule {number}")
        elif section is not None:
            where.append(section)
        super().__init__(": ".join(where + [problem]))


def _loadToml(source: str | bytes | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """
    Read TOML from a path (C{os.PathLike}) or from text (C{str}/C{bytes}).

    @return: the parsed document and a name for error messages.
    """
    if isinstance(source, os.PathLike):
        name = os.fspath(source)
        try:
            with open(name, "rb") as f:
                raw = f.read()
        except OSError as error:
            raise RulesError(
                f"cannot read the rules file ({error.strerror or error})", name
            ) from None
    elif isinstance(source, (bytes, str)):
        name = "<rules>"
        raw = (
            source.encode("utf-8", "surrogateescape")
            if isinstance(source, str)
            else source
        )
    else:
        raise TypeError(
            f"rules must be a path or TOML text, not {type(source).__name__}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RulesError(f"not UTF-8 ({error})", name) from None
    try:
        return tomllib.loads(text), name
    except tomllib.TOMLDecodeError as error:
        hint = ""
        if isinstance(source, str) and "\n" not in source and "=" not in source:
            hint = " (to read a file, pass a pathlib.Path)"
        raise RulesError(f"not valid TOML: {error}{hint}", name) from None


_CLIENT_KEYS = {"action": "action", "from": "clients", "name": "name"}
_DESTINATION_KEYS = {
    "action": "action",
    "to": "to",
    "ports": "ports",
    "commands": "commands",
    "users": "users",
    "from": "clients",
    "bind-address": "bindAddress",
    "bandwidth": "bandwidth",
    "quota": "quota",
    "name": "name",
}
_TOP_KEYS = {
    "client",
    "destination",
    "deny-private-destinations",
    "client-default",
    "destination-default",
}


def _compileSection(
    data: dict[str, Any],
    section: str,
    keys: Mapping[str, str],
    build: Callable[..., Any],
    source: str,
) -> list[Any]:
    """Compile the C{[[section]]} tables of a rules document."""
    tables = data.get(section, [])
    if not isinstance(tables, list):
        raise RulesError(
            f"write [[{section}]] (an array of tables), not [{section}]", source
        )
    rules = []
    for number, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            raise RulesError("a rule must be a table", source, section, number)
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise RulesError(
                f"unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})",
                source,
                section,
                number,
            )
        if "action" not in table:
            raise RulesError(
                "'action' is required ('pass' or 'block')", source, section, number
            )
        if "name" in table and not isinstance(table["name"], str):
            raise RulesError("'name' must be a string", source, section, number)
        arguments = {keys[key]: value for key, value in table.items()}
        arguments.setdefault("name", f"{section} rule {number} ({source})")
        try:
            rules.append(build(**arguments))
        except (ValueError, TypeError) as error:
            raise RulesError(str(error), source, section, number) from None
    return rules


def _default(data: dict[str, Any], key: str, source: str) -> Action:
    """Read C{client-default} or C{destination-default}."""
    try:
        return Action.parse(data.get(key, "pass"))
    except ValueError as error:
        raise RulesError(f"{key}: {error}", source) from None


def _compileDocument(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Compile a parsed rules document into L{Policy} arguments."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise RulesError(
            f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})",
            source,
        )
    denyPrivate = data.get("deny-private-destinations", False)
    if not isinstance(denyPrivate, bool):
        raise RulesError("deny-private-destinations must be true or false", source)
    return dict(
        clientRules=_compileSection(
            data, "client", _CLIENT_KEYS, ClientRule.parse, source
        ),
        destinationRules=_compileSection(
            data, "destination", _DESTINATION_KEYS, DestinationRule.parse, source
        ),
        denyPrivate=denyPrivate,
        clientDefault=_default(data, "client-default", source),
        destinationDefault=_default(data, "destination-default", source),
    )


def _stricter(*actions: Action) -> Action:
    """C{block} if any of C{actions} is C{block}."""
    return Action.BLOCK if Action.BLOCK in actions else Action.PASS
