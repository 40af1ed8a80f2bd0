"""
The C{socksd} command, for what C{twistd socksd} does not cover::

    socksd --version                       socksd, Twisted, Python, the reactor
    socksd check --config /etc/socksd.toml parse and check everything, and
                                           the open-proxy guard, without
                                           listening
    socksd hash-password --user alice      an htpasswd line for alice
    socksd run [OPTIONS]                   twistd -n socksd OPTIONS

C{twistd socksd} stays the way to run the server (C{socksd run} is a thin
alias of C{twistd -n socksd}).  L{main} is the console script's entry
point.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Sequence, TextIO

from twisted.python import usage

from socksd.service.options import Options, versionText

__all__ = ["main", "CommandOptions", "checkOptions", "hashPasswordLine"]


class CheckOptions(Options):
    """C{socksd check}: the options of C{twistd socksd}."""

    program = "socksd check"
    exitOnUsageError = False
    synopsis = "[twistd socksd options, e.g. --config PATH]"


class HashPasswordOptions(usage.Options):
    """C{socksd hash-password}."""

    synopsis = "[--user NAME] [--sha512] [--cost N] [--file PATH]"
    longdesc = (
        "Read a password (twice from a terminal, else one line from standard "
        "input) and write an htpasswd line for it: bcrypt where the bcrypt "
        "package is installed (pip install 'socksd[htpasswd]'), else "
        "SHA-512-crypt.  With --file, add the line to that file (replacing "
        "the user's old one), as htpasswd does."
    )
    optFlags = [["sha512", None, "Use SHA-512-crypt even where bcrypt is installed."]]
    optParameters = [
        ["user", "u", None, "The user name [default: ask]."],
        ["cost", None, 10, "bcrypt's cost (4 to 16).", int],
        ["file", None, None, "Add the line to this htpasswd file."],
    ]

    def postOptions(self) -> None:
        if not 4 <= self["cost"] <= 16:
            raise usage.UsageError(f"--cost {self['cost']}: expected 4 to 16")
        if self["user"] is not None and (":" in self["user"] or not self["user"]):
            raise usage.UsageError(
                f"--user {self['user']!r}: a user name cannot be empty or hold ':'"
            )


class CommandOptions(usage.Options):
    """The C{socksd} command's options."""

    synopsis = "socksd [--version] COMMAND [options]"
    longdesc = (
        "Commands: check (parse and check a configuration without "
        "listening), hash-password (an htpasswd line), run (twistd -n "
        "socksd).  The server itself runs as: twistd -n socksd [options]."
    )
    subCommands = [
        ["check", None, CheckOptions, "Parse and check a configuration (twistd socksd's options) without listening."],
        ["hash-password", None, HashPasswordOptions, "Write an htpasswd line for a password."],
        ["run", None, usage.Options, "Run the server: twistd -n socksd OPTIONS."],
    ]

    def opt_version(self) -> None:
        """Display the versions of socksd, Twisted and Python, and exit."""
        print(versionText())
        sys.exit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a command: check, hash-password or run")


def checkOptions(options: Options, out: TextIO) -> None:
    """Tell what a checked configuration does."""
    from socksd.service.guard import listensBeyondLoopback

    for description in options["listen"]:
        where = "other hosts too" if listensBeyondLoopback(description) else "this host only"
        out.write(f"listen {description} ({where})\n")
    if options.get("credCheckers"):
        out.write(f"auth: {len(options['credCheckers'])} checker(s)\n")
    upstreams = ", ".join(options["upstreams"]) or "direct"
    out.write(f"upstream: {_redact(upstreams)}\n")
    for route in options["routes"]:
        out.write(f"route {_redact(route)}\n")
    policy = options["policy"]
    if policy is not None:
        out.write(
            f"rules: {len(policy.clientRules)} client, "
            f"{len(policy.destinationRules)} destination\n"
        )
    out.write("configuration OK\n")


def _redact(text: str) -> str:
    import re

    return re.sub(r"(://[^:@/,]*:)[^@/,]*@", r"\1***@", text)


def _readPassword(stdin: TextIO) -> str:
    """The password: asked twice on a terminal, else one line of stdin."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise usage.UsageError("the passwords differ")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise usage.UsageError("empty password")
    return password


def hashPasswordLine(user: str, password: str, sha512: bool = False, cost: int = 10) -> str:
    """The htpasswd line C{user:HASH} for C{password}."""
    from socksd.htpasswd import hashPassword

    scheme = "sha512" if sha512 else None
    return f"{user}:{hashPassword(password.encode('utf-8'), scheme, cost)}"


def _writeEntry(path: str, user: str, line: str) -> None:
    """Add C{line} to the htpasswd file C{path}, replacing C{user}'s."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [old for old in lines if old.partition(":")[0] != user]
    temporary = f"{path}.tmp{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(kept + [line]) + "\n")
    os.replace(temporary, path)


def _hashPassword(options: HashPasswordOptions, stdin: TextIO, out: TextIO) -> None:
    from socksd.htpasswd import HashUnsupported

    user = options["user"]
    if user is None:
        if not stdin.isatty():
            raise usage.UsageError("--user is needed when the password comes from a pipe")
        user = input("User: ").strip()
        if not user or ":" in user:
            raise usage.UsageError("a user name cannot be empty or hold ':'")
    password = _readPassword(stdin)
    try:
        line = hashPasswordLine(user, password, options["sha512"], options["cost"])
    except HashUnsupported as error:
        raise usage.UsageError(str(error))
    if options["file"]:
        try:
            _writeEntry(options["file"], user, line)
        except OSError as error:
            raise usage.UsageError(
                f"--file {options['file']}: {error.strerror or error}"
            )
        out.write(f"{user} written to {options['file']}\n")
    else:
        out.write(line + "\n")


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run the C{socksd} command.

    @return: the exit status (also raised as C{SystemExit} by the console
        script's wrapper): 0, or 2 for a usage error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if argv[:1] == ["run"]:
        from twisted.scripts.twistd import run

        sys.argv = ["twistd", "-n", "socksd", *argv[1:]]
        run()
        return 0
    options = CommandOptions()
    try:
        options.parseOptions(argv)
        if options.subCommand == "check":
            checkOptions(options.subOptions, out)
        elif options.subCommand == "hash-password":
            _hashPassword(options.subOptions, stdin, out)
    except usage.UsageError as error:
        command = f"socksd {options.subCommand}" if options.subCommand else "socksd"
        err.write(f"{command}: error: {error}\n({command} --help lists the options)\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
