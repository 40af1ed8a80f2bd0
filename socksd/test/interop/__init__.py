"""
Interop tests: socksd against real clients and peers that no one here wrote
(curl, python-socks, tor-resolve, microsocks, Dante).

They are slow and need tools from Debian, so they run in their own tox
environment (C{tox -e interop}, which sets C{SOCKSD_INTEROP=1}); in the core
suite they skip.  A test whose tool is missing skips, naming the tool.
"""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SkipTest, TestCase

__all__ = ["InteropTestCase", "requireTool"]


def requireTool(name: str) -> str:
    """
    Find the executable C{name} on C{$PATH} (or in /usr/sbin, /sbin).

    @raise SkipTest: when it is not installed.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise SkipTest(f"{name} is not installed (.ci/run installs it from Debian)")
    return path


class InteropTestCase(TestCase):
    """
    A real-socket test that runs only in the interop environment.
    """

    def setUp(self) -> None:
        if not os.environ.get("SOCKSD_INTEROP"):
            raise SkipTest("interop tests run in tox -e interop (SOCKSD_INTEROP=1)")
        super().setUp()
