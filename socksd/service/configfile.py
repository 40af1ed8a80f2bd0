"""
The configuration file of C{twistd socksd --config PATH}, and the types of
the options' values.

The file is TOML; its keys are the long option names, with the values of
the command line as TOML values::

    listen = ["tcp:1080:interface=0.0.0.0"]
    auth = "htpasswd:/etc/socksd/htpasswd"
    upstream = ["socks5h://127.0.0.1:9050"]
    max-connections-per-user = 10
    connect-timeout = 10
    extended-errors = true

    [[client]]
    action = "pass"
    from = ["10.0.0.0/8"]

The rules of a rules file (C{[[client]]}, C{[[destination]]},
C{client-default}, C{destination-default}) may sit in the same file.

L{configKeys} derives the table of keys and their types from the options
class itself (one place: a new option is a new key): a flag is a TOML
boolean, an option whose value has a type (an L{OptionType}) takes that
type, another option a string, and a repeatable option (an C{opt_} method
that takes a value) a string or a list of strings.  L{readConfig} reads a
file against that table; an unknown key, or a value of the wrong type, is
a L{ConfigError} naming the file, the line and the key.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping

from twisted.python import usage

__all__ = [
    "ConfigError",
    "ConfigKey",
    "Config",
    "OptionType",
    "Seconds",
    "Count",
    "Rate",
    "configKeys",
    "parseRate",
    "sectionLine",
    "readConfig",
    "RULES_KEYS",
    "NOT_CONFIG_KEYS",
]

#: The keys of the rules file's schema that a configuration file may hold.
RULES_KEYS = frozenset({"client", "destination", "client-default", "destination-default"})

#: Options that have no key in a configuration file: the file itself, the
#: workers' internal option, and those that only print.
NOT_CONFIG_KEYS = frozenset(
    {"config", "inherit-fds", "help", "version", "help-auth", "help-auth-type"}
)


_RATE_SUFFIXES = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parseRate(text: str) -> float:
    """
    Parse a bandwidth such as C{"500000"}, C{"500k"}, C{"2M"} or
    C{"2M/s"}: bytes per second, with decimal k, M and G suffixes.

    @raise ValueError: not a positive rate.
    """
    value = text.strip().lower().removesuffix("/s").removesuffix("b")
    suffix = value[-1:] if value[-1:] in ("k", "m", "g") else ""
    number = value[: len(value) - len(suffix)]
    try:
        rate = float(number) * _RATE_SUFFIXES[suffix]
    except ValueError:
        raise ValueError(f"{text!r} is not a number of bytes per second") from None
    if not (rate > 0 and rate != float("inf")):
        raise ValueError(f"{text!r} must be a positive number of bytes per second")
    return rate


class ConfigError(ValueError):
    """
    A configuration file that cannot be used.

    @ivar path: the file.
    @ivar line: the 1-based line of the problem, or L{None}.
    @ivar key: the key at fault, or L{None}.
    """

    def __init__(
        self, problem: str, path: str, line: int | None = None, key: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = path if line is None else f"{path} line {line}"
        super().__init__(f"{where}: {problem}")


class OptionType:
    """
    The type of an option's value: a C{coerce} callable for
    C{usage.Options.optParameters} (text from the command line) that also
    converts a configuration file's TOML value.

    Errors name the option, the value and what is expected, as usage
    errors (C{usage.Options} passes them through unchanged).

    @ivar option: the option's long name.
    @ivar expected: what a good value is, for messages.
    """

    expected = "a value"

    def __init__(self, option: str) -> None:
        self.option = option
        #: What usage.Options adds to the option's help: nothing (the help
        #: text says it).
        self.coerceDoc = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} --{self.option}>"

    def parse(self, text: str) -> Any:
        """
        Convert command-line text.

        @raise ValueError: not a good value.
        """
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """
        Convert a TOML value (by default, only a string, as text).

        @raise ValueError: not a good value.
        """
        if not isinstance(value, str):
            raise ValueError("not a string")
        return self.parse(value)

    def __call__(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError:
            raise usage.UsageError(
                f"--{self.option} {text!r}: expected {self.expected}"
            ) from None

    def fromConfig(self, value: Any) -> Any:
        """
        Convert a configuration file's value.

        @raise ValueError: with what is expected.
        """
        try:
            return self.convert(value)
        except ValueError:
            raise ValueError(f"expected {self.expected}, not {_toml(value)}") from None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


class Seconds(OptionType):
    """
    A number of seconds: greater than 0, or (with C{zero}) 0 or more.
    """

    def __init__(self, option: str, zero: str | None = None) -> None:
        """
        @param zero: what 0 means (C{"never"}, C{"no limit"}), when 0 is
            allowed.
        """
        self.zero = zero
        self.expected = (
            f"a number of seconds, 0 or more (0: {zero})"
            if zero
            else "a number of seconds greater than 0"
        )
        super().__init__(option)

    def parse(self, text: str) -> float:
        number = _number(text)
        if number < 0 or (number == 0 and not self.zero):
            raise ValueError(text)
        return number

    def convert(self, value: Any) -> float:
        if isinstance(value, str):
            raise ValueError(value)
        return self.parse(value)


class Count(OptionType):
    """A whole number, at least C{minimum}."""

    def __init__(self, option: str, minimum: int = 0, zero: str | None = None) -> None:
        self.minimum = minimum
        if minimum == 0 and zero:
            self.expected = f"a whole number, 0 or more (0: {zero})"
        else:
            self.expected = f"a whole number, {minimum} or more"
        super().__init__(option)

    def parse(self, text: str) -> int:
        if isinstance(text, bool):
            raise ValueError(text)
        number = int(text)
        if number < self.minimum:
            raise ValueError(text)
        return number

    def convert(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(value)
        return self.parse(value)


class Rate(OptionType):
    """Bytes per second: a number, or text with k, M, G suffixes (C{2M})."""

    expected = "bytes per second greater than 0, e.g. 500000, 500k or 2M"

    def parse(self, text: str) -> float:
        return parseRate(str(text))

    def convert(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(value)
        return self.parse(str(value))


@dataclass(frozen=True)
class ConfigKey:
    """
    One key of the configuration file.

    @ivar name: the key: the option's long name.
    @ivar kind: C{"flag"} (a boolean), C{"value"} (one value) or C{"list"}
        (a repeatable option: a string or a list of strings).
    @ivar type: the L{OptionType} of a value, or L{None} for text.
    """

    name: str
    kind: str
    type: OptionType | None = None

    def convert(self, value: Any) -> Any:
        """
        Check and convert the file's C{value}.

        @raise ValueError: naming what is expected.
        """
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, not {_toml(value)}")
            return value
        if self.kind == "list":
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(
                    f"expected a string or a list of strings, not {_toml(value)}"
                )
            return list(values)
        if self.type is not None:
            return self.type.fromConfig(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a string, not {_toml(value)}")
        return value


def _toml(value: Any) -> str:
    """A short rendering of a TOML value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def configKeys(optionsClass: type[usage.Options]) -> dict[str, ConfigKey]:
    """
    The keys of a configuration file for C{optionsClass}, derived from its
    C{optFlags}, C{optParameters} and C{opt_} methods (see the module
    docstring), without L{NOT_CONFIG_KEYS}.
    """
    from twisted.python.reflect import accumulateClassList

    keys: dict[str, ConfigKey] = {}
    flags: list[Any] = []
    parameters: list[Any] = []
    accumulateClassList(optionsClass, "optFlags", flags)
    accumulateClassList(optionsClass, "optParameters", parameters)
    for entry in flags:
        keys[entry[0]] = ConfigKey(entry[0], "flag")
    for entry in parameters:
        coerce = entry[4] if len(entry) > 4 else None
        keys[entry[0]] = ConfigKey(
            entry[0], "value", coerce if isinstance(coerce, OptionType) else None
        )
    for attribute in dir(optionsClass):
        if not attribute.startswith("opt_"):
            continue
        name = attribute[len("opt_") :].replace("_", "-")
        if name in keys:
            continue
        method = getattr(optionsClass, attribute)
        try:
            parameters = list(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            continue
        if len(parameters) == 2:  # self and the value
            keys[name] = ConfigKey(name, "list")
    for name in NOT_CONFIG_KEYS:
        keys.pop(name, None)
    return keys


@dataclass
class Config:
    """
    A configuration file, read.

    @ivar path: the file.
    @ivar values: the options it sets, by long name, converted.
    @ivar rules: its rules (the keys of L{RULES_KEYS}), as a rules
        document for L{socksd.policy}, or L{None} when it has none.
    @ivar lines: the line of each key, by name.
    """

    path: str
    values: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] | None = None
    lines: dict[str, int] = field(default_factory=dict)


def _keyLine(lines: list[str], key: str) -> int | None:
    """
    The 1-based line where the top-level C{key} is set (C{key = ...},
    C{key.sub = ...}, C{[key]} or C{[[key]]}), or L{None}.
    """
    quoted = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    assignment = re.compile(rf"^\s*{quoted}\s*[.=]")
    header = re.compile(rf"^\s*\[\[?\s*{quoted}\s*[\].]")
    inTable = False
    for number, line in enumerate(lines, 1):
        if header.match(line):
            return number
        if re.match(r"^\s*\[", line):
            inTable = True
            continue
        if not inTable and assignment.match(line):
            return number
    return None


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def readConfig(path: str, keys: Mapping[str, ConfigKey]) -> Config:
    """
    Read the configuration file at C{path} against the table C{keys} (see
    L{configKeys}).

    @raise ConfigError: the file cannot be read, is not TOML, or holds an
        unknown key or a value of the wrong type (naming the line and the
        key).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise ConfigError(
            f"cannot read the configuration file: {error.strerror or error}", path
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 ({error})", path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"not valid TOML: {error}", path) from None
    lines = text.splitlines()
    config = Config(path)
    rules: dict[str, Any] = {}
    for key, value in data.items():
        line = _keyLine(lines, key)
        if line is not None:
            config.lines[key] = line
        if key in RULES_KEYS:
            rules[key] = value
            continue
        entry = keys.get(key)
        if entry is None:
            raise ConfigError(
                f"unknown key {key!r}{_suggest(key, list(keys) + list(RULES_KEYS))}",
                path,
                line,
                key,
            )
        try:
            config.values[key] = entry.convert(value)
        except ValueError as error:
            raise ConfigError(f"{key}: {error}", path, line, key) from None
    if rules:
        config.rules = rules
    return config


def sectionLine(path: str, section: str, number: int, key: str | None = None) -> int | None:
    """
    The line of the C{number}th C{[[section]]} table of the file at
    C{path} (or of C{key} in it), for error messages; L{None} when it
    cannot be found.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    header = re.compile(rf"^\s*\[\[\s*{re.escape(section)}\s*\]\]")
    seen = 0
    for index, line in enumerate(lines):
        if header.match(line):
            seen += 1
            if seen == number:
                if key is None:
                    return index + 1
                assignment = re.compile(
                    rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*="
                )
                for offset, later in enumerate(lines[index + 1 :], index + 2):
                    if re.match(r"^\s*\[", later):
                        break
                    if assignment.match(later):
                        return offset
                return index + 1
    return None

