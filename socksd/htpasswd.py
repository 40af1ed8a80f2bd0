"""
Passwords in Apache's htpasswd format: C{--auth htpasswd:PATH}.

An htpasswd file holds one C{user:hash} line per user, as Apache's
C{htpasswd} writes them (Debian's C{apache2-utils})::

    htpasswd -cB /etc/socksd/htpasswd alice      # bcrypt (preferred)
    htpasswd -5 /etc/socksd/htpasswd bob         # SHA-512-crypt

or as C{socksd hash-password} does.  The hashes understood:

  - bcrypt (C{$2y$}, C{$2b$}, C{$2a$}; C{htpasswd -B}), with the
    C{bcrypt} package (C{pip install 'socksd[htpasswd]'});
  - SHA-256-crypt and SHA-512-crypt (C{$5$}, C{$6$}; C{htpasswd -2}, C{-5}),
    computed here (L{shaCrypt});
  - Apache's MD5 (C{$apr1$}, C{htpasswd}'s default; L{apr1}) and SHA-1
    (C{{SHA}}), which are weak: socksd logs a warning for them.

Other lines (DES crypt, plain text) are refused when the file is read.

L{HtpasswdChecker} is a twisted.cred checker: each password is verified in
the reactor's thread pool (bcrypt takes milliseconds on purpose), never on
the reactor thread, and the file is read again when it changes (checked at
most once a second, at a login).  L{HtpasswdCheckerFactory} is its strcred
plugin (C{twisted/plugins/socksd_htpasswd.py}).  L{hashPassword} makes a
line's hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

__all__ = [
    "HtpasswdChecker",
    "HtpasswdCheckerFactory",
    "HashUnsupported",
    "verifyHash",
    "hashPassword",
    "shaCrypt",
    "apr1",
    "readHtpasswd",
]

log = Logger()

_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BCRYPT = ("$2y$", "$2b$", "$2a$")
_WEAK = ("$apr1$", "{SHA}")


class HashUnsupported(ValueError):
    """A hash socksd cannot check (or not without an extra)."""


def _encode64(data: bytes, groups: list[tuple[int, ...]]) -> bytes:
    out = bytearray()
    for group in groups:
        value = 0
        for index in group:
            value = (value << 8) | data[index]
        for _ in range(len(group) + 1):
            out.append(_ITOA64[value & 0x3F])
            value >>= 6
    return bytes(out)


_SHA256_GROUPS = [
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
    (31, 30),
]
_SHA512_GROUPS = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4),
    (47, 5, 26), (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51),
    (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
    (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19),
    (62, 20, 41), (63,),
]


def shaCrypt(password: bytes, setting: str) -> str:
    """
    SHA-crypt (Ulrich Drepper's C{$5$} SHA-256 and C{$6$} SHA-512 schemes,
    as glibc and C{htpasswd -2}/C{-5} compute them).

    @param setting: C{$5$SALT}, C{$6$rounds=N$SALT}, or a whole hash (its
        setting is used).
    @return: the hash.
    @raise HashUnsupported: not a C{$5$} or C{$6$} setting.
    """
    if setting.startswith("$5$"):
        name, groups, prefix = "sha256", _SHA256_GROUPS, "$5$"
    elif setting.startswith("$6$"):
        name, groups, prefix = "sha512", _SHA512_GROUPS, "$6$"
    else:
        raise HashUnsupported("not a SHA-crypt setting")
    rest = setting[3:]
    rounds = 5000
    explicit = False
    if rest.startswith("rounds="):
        text, _, rest = rest[len("rounds=") :].partition("$")
        if not text.isdigit():
            raise HashUnsupported("bad rounds= in a SHA-crypt hash")
        rounds = min(max(int(text), 1000), 999_999_999)
        explicit = True
    salt = rest.split("$", 1)[0][:16].encode("ascii")

    def digest(*parts: bytes) -> bytes:
        h = hashlib.new(name)
        for part in parts:
            h.update(part)
        return h.digest()

    size = hashlib.new(name).digest_size
    b = digest(password, salt, password)
    a = hashlib.new(name, password + salt)
    length = len(password)
    a.update((b * (length // size + 1))[:length])
    bits = length
    while bits:
        a.update(b if bits & 1 else password)
        bits >>= 1
    current = a.digest()
    dp = digest(password * length)
    p = (dp * (length // size + 1))[:length]
    ds = digest(salt * (16 + current[0]))
    s = (ds * (len(salt) // size + 1))[: len(salt)]
    for i in range(rounds):
        h = hashlib.new(name)
        h.update(p if i & 1 else current)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(current if i & 1 else p)
        current = h.digest()
    encoded = _encode64(current, groups).decode("ascii")
    roundsText = f"rounds={rounds}$" if explicit else ""
    return f"{prefix}{roundsText}{salt.decode('ascii')}${encoded}"


def apr1(password: bytes, setting: str) -> str:
    """
    Apache's MD5 hash (C{$apr1$SALT$...}, C{htpasswd -m}, the default).

    @raise HashUnsupported: not an C{$apr1$} setting.
    """
    magic = "$apr1$"
    if not setting.startswith(magic):
        raise HashUnsupported("not an $apr1$ setting")
    salt = setting[len(magic) :].split("$", 1)[0][:8].encode("ascii")
    context = hashlib.md5(password + magic.encode("ascii") + salt)
    final = hashlib.md5(password + salt + password).digest()
    for left in range(len(password), 0, -16):
        context.update(final[: min(16, left)])
    bits = len(password)
    while bits:
        context.update(b"\0" if bits & 1 else password[:1])
        bits >>= 1
    final = context.digest()
    for i in range(1000):
        step = hashlib.md5()
        step.update(password if i & 1 else final)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(password)
        step.update(final if i & 1 else password)
        final = step.digest()
    groups = [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5), (11,)]
    encoded = _encode64(final, groups).decode("ascii")
    return f"{magic}{salt.decode('ascii')}${encoded}"


def _bcrypt() -> Any:
    try:
        import bcrypt
    except ImportError:
        raise HashUnsupported(
            "bcrypt hashes need the bcrypt package: pip install 'socksd[htpasswd]'"
        ) from None
    return bcrypt


def _kind(hashed: str) -> str:
    """The kind of a hash, or raise L{HashUnsupported}."""
    if hashed.startswith(_BCRYPT):
        return "bcrypt"
    if hashed.startswith(("$5$", "$6$")):
        return "sha-crypt"
    if hashed.startswith("$apr1$"):
        return "apr1"
    if hashed.startswith("{SHA}"):
        return "sha1"
    raise HashUnsupported(
        "an unsupported hash (DES crypt or plain text); use htpasswd -B, -5 "
        "or socksd hash-password"
    )


def verifyHash(password: bytes, hashed: str) -> bool:
    """
    Does C{password} match C{hashed} (see the module docstring)?  Takes as
    long as the hash makes it: call it off the reactor thread.

    @raise HashUnsupported: a hash socksd cannot check.
    """
    kind = _kind(hashed)
    if kind == "bcrypt":
        return bool(_bcrypt().checkpw(password, hashed.encode("ascii")))
    if kind == "sha-crypt":
        computed = shaCrypt(password, hashed)
    elif kind == "apr1":
        computed = apr1(password, hashed)
    else:
        computed = "{SHA}" + base64.b64encode(hashlib.sha1(password).digest()).decode()
    return hmac.compare_digest(computed.encode("ascii"), hashed.encode("ascii"))


def hashPassword(password: bytes, scheme: str | None = None, cost: int = 10) -> str:
    """
    Hash C{password} for an htpasswd line.

    @param scheme: C{"bcrypt"} or C{"sha512"}; by default bcrypt where the
        C{bcrypt} package is installed, else SHA-512-crypt.
    @param cost: bcrypt's cost (4 to 31).
    @raise HashUnsupported: bcrypt asked for, and not installed.
    """
    if scheme is None:
        try:
            _bcrypt()
            scheme = "bcrypt"
        except HashUnsupported:
            scheme = "sha512"
    if scheme == "bcrypt":
        hashed = _bcrypt().hashpw(password, _bcrypt().gensalt(rounds=cost))
        return hashed.decode("ascii").replace("$2b$", "$2y$", 1)
    if scheme == "sha512":
        alphabet = _ITOA64.decode("ascii")
        salt = "".join(secrets.choice(alphabet) for _ in range(16))
        return shaCrypt(password, f"$6${salt}")
    raise ValueError(f"unknown scheme {scheme!r} (bcrypt or sha512)")


def readHtpasswd(path: str) -> dict[bytes, str]:
    """
    Read an htpasswd file.

    @return: each user's hash, by name (UTF-8 bytes).
    @raise ValueError: the file cannot be read, or a line is malformed or
        holds a hash socksd cannot check (naming the file and the line).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    users: dict[bytes, str] = {}
    weak = []
    for number, line in enumerate(raw.splitlines(), 1):
        text = line.strip()
        if not text or text.startswith(b"#"):
            continue
        name, colon, hashed = text.partition(b":")
        if not colon or not name:
            raise ValueError(f"{path} line {number}: expected USER:HASH")
        try:
            hashText = hashed.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{path} line {number}: the hash is not ASCII") from None
        try:
            kind = _kind(hashText)
            if kind == "bcrypt":
                _bcrypt()
        except HashUnsupported as error:
            raise ValueError(
                f"{path} line {number}: user {name.decode('utf-8', 'replace')!r} "
                f"has {error}"
            ) from None
        if hashText.startswith(_WEAK):
            weak.append(name.decode("utf-8", "replace"))
        users[name] = hashText
    if weak:
        log.warn(
            "{path}: users {users} have weak hashes (MD5 or SHA-1); prefer "
            "htpasswd -B (bcrypt)",
            path=path,
            users=", ".join(weak),
        )
    return users


def _stamp(path: str) -> Any:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Check usernames and passwords against an htpasswd file (see the module
    docstring).

    @ivar path: the file.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self, path: str, reactor: Any = None, checkInterval: float = 1.0
    ) -> None:
        """
        @param reactor: an C{IReactorThreads} and C{IReactorTime} (the
            global reactor, imported when first needed, by default).
        @param checkInterval: the least seconds between two checks of the
            file for changes.
        @raise ValueError: the file cannot be read or used.
        """
        self.path = path
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._lastCheck: float | None = None
        self._stampSeen = _stamp(path)
        self._users = readHtpasswd(path)

    def __repr__(self) -> str:
        return f"<HtpasswdChecker {self.path!r}: {len(self._users)} users>"

    def userCount(self) -> int:
        """How many users the file holds (the open-proxy guard asks)."""
        return len(self._users)

    def _clock(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def refresh(self) -> None:
        """Read the file again if it changed; a bad file keeps the old users."""
        reactor = self._clock()
        now = reactor.seconds()
        if self._lastCheck is not None and now - self._lastCheck < self._checkInterval:
            return
        self._lastCheck = now
        stamp = _stamp(self.path)
        if stamp == self._stampSeen:
            return
        self._stampSeen = stamp
        try:
            users = readHtpasswd(self.path)
        except ValueError as error:
            log.error(
                "keeping the previous users: {error}", error=str(error)
            )
            return
        self._users = users
        log.info(
            "read {count} users from {path}", count=len(users), path=self.path
        )

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        """
        Check C{credentials} (an C{IUsernamePassword}) in the reactor's
        thread pool.

        @return: a Deferred firing with the username, or failing with
            L{UnauthorizedLogin}.
        """
        self.refresh()
        username = credentials.username
        if isinstance(username, str):
            username = username.encode("utf-8")
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        hashed = self._users.get(username)
        if hashed is None:
            return fail(UnauthorizedLogin("unknown user"))
        from twisted.internet.threads import deferToThreadPool

        reactor = self._clock()

        def checked(matched: bool) -> bytes:
            if not matched:
                raise UnauthorizedLogin("wrong password")
            return username

        return deferToThreadPool(
            reactor, reactor.getThreadPool(), verifyHash, password, hashed
        ).addCallback(checked)


@implementer(ICheckerFactory, IPlugin)
class HtpasswdCheckerFactory:
    """
    The strcred plugin of C{--auth htpasswd:PATH}: an L{HtpasswdChecker}.
    """

    authType = "htpasswd"
    authHelp = (
        "An Apache htpasswd file (htpasswd -B: bcrypt, -2/-5: SHA-crypt; "
        "also $apr1$ and {SHA}), read again when it changes; passwords are "
        "verified in a thread pool."
    )
    argStringFormat = "The path of the htpasswd file."
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str) -> HtpasswdChecker:
        """
        @raise ValueError: no path, or a file that cannot be used.
        """
        if not argstring.strip():
            raise ValueError("htpasswd: needs the file's path, as htpasswd:PATH")
        return HtpasswdChecker(argstring)

