"""
Tests for systemd's service notifications (L{socksd.service.systemd}):
C{READY=1}, C{RELOADING=1}, C{STOPPING=1} on a test socket, from a real
C{twistd socksd}; workers do not inherit systemd's variables.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from socksd.service.systemd import Notifier, notify, withoutSystemd
from socksd.service.workers import checkListens
from socksd.test._processes import Twistd, freePort


class NotifySocket:
    """A UNIX datagram socket that receives what systemd would."""

    def __init__(self, testCase: Any, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        testCase.addCleanup(self.sock.close)
        if abstract:
            name = f"socksd-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            directory = tempfile.mkdtemp(prefix="sdn")
            testCase.addCleanup(shutil.rmtree, directory)
            self.address = os.path.join(directory, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(30)

    def receive(self) -> list[str]:
        """The next message, as its lines."""
        return self.sock.recv(4096).decode("utf-8").split("\n")

    def receiveUntil(self, state: str) -> list[list[str]]:
        """Messages up to and including one with C{state}."""
        messages = []
        while True:
            message = self.receive()
            messages.append(message)
            if state in message:
                return messages


class NotifyTests(SynchronousTestCase):
    """
    L{notify} and L{Notifier}.
    """

    def test_path(self) -> None:
        """
        A message is one datagram to the path in C{NOTIFY_SOCKET}, its
        states one per line.
        """
        target = NotifySocket(self)
        self.assertTrue(
            notify("READY=1", "STATUS=serving", environ={"NOTIFY_SOCKET": target.address})
        )
        self.assertEqual(target.receive(), ["READY=1", "STATUS=serving"])

    def test_abstract(self) -> None:
        """
        An C{@} name is in the abstract namespace.
        """
        target = NotifySocket(self, abstract=True)
        notify("STOPPING=1", environ={"NOTIFY_SOCKET": target.address})
        self.assertEqual(target.receive(), ["STOPPING=1"])

    def test_noSocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET}, nothing is sent and a L{Notifier} is idle.
        """
        self.assertFalse(notify("READY=1", environ={}))
        notifier = Notifier({})
        self.assertFalse(notifier.active)
        notifier.ready()

    def test_notifierStates(self) -> None:
        """
        L{Notifier} says READY=1, RELOADING=1 with C{MONOTONIC_USEC}, and
        STOPPING=1, each with a status.
        """
        target = NotifySocket(self)
        notifier = Notifier({"NOTIFY_SOCKET": target.address})
        notifier.ready()
        notifier.reloading()
        notifier.reloaded()
        notifier.stopping("draining 3 connections")
        self.assertEqual(target.receive(), ["READY=1", "STATUS=serving"])
        reloading = target.receive()
        self.assertEqual(reloading[0], "RELOADING=1")
        self.assertRegex(reloading[1], r"^MONOTONIC_USEC=\d+$")
        self.assertEqual(target.receive(), ["READY=1", "STATUS=serving"])
        self.assertEqual(
            target.receive(), ["STOPPING=1", "STATUS=draining 3 connections"]
        )

    def test_unreachable(self) -> None:
        """
        A socket that is not there is logged once, not raised.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
        notifier.ready()
        notifier.stopping()
        self.assertEqual(
            len([e for e in events if e.get("address") == "/nonexistent/notify"]), 1
        )

    def test_workersEnvironment(self) -> None:
        """
        A worker's environment has none of systemd's variables; the
        systemd listen description can be shared by workers.
        """
        self.assertEqual(
            withoutSystemd(
                {"NOTIFY_SOCKET": "/run/x", "LISTEN_FDS": "1", "LISTEN_PID": "5",
                 "LISTEN_FDNAMES": "socksd", "PATH": "/bin"}
            ),
            {"PATH": "/bin"},
        )
        checkListens(["systemd:domain=INET:name=socksd"])


class NotifyProcessTests(SynchronousTestCase):
    """
    A real C{twistd socksd} with C{NOTIFY_SOCKET}.
    """

    def test_lifecycle(self) -> None:
        """
        socksd says READY=1 once it listens, RELOADING=1 then READY=1 on
        SIGHUP (with C{--rules}), STOPPING=1 on SIGTERM.
        """
        target = NotifySocket(self)
        rules = os.path.abspath(self.mktemp())
        with open(rules, "w") as writer:
            writer.write("")
        port = freePort()
        server = Twistd(
            self,
            ["--listen", f"tcp:{port}:interface=127.0.0.1", "--rules", rules],
            env={"NOTIFY_SOCKET": target.address},
        )
        self.assertIn("READY=1", target.receive())
        server.waitForListening()
        server.signal(signal.SIGHUP)
        reload = target.receiveUntil("READY=1")
        self.assertEqual(reload[0][0], "RELOADING=1")
        server.signal(signal.SIGTERM)
        self.assertIn("STOPPING=1", target.receive())
        server.wait()

    def test_workers(self) -> None:
        """
        With C{--workers 2}, the parent alone talks to systemd: the workers
        are started without C{NOTIFY_SOCKET}.
        """
        target = NotifySocket(self)
        port = freePort()
        server = Twistd(
            self,
            ["--listen", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"],
            env={"NOTIFY_SOCKET": target.address},
        )
        self.assertIn("READY=1", target.receive())
        server.waitForListening(2)
        pids = {int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", server.log())}
        self.assertEqual(len(pids), 2)
        for pid in pids:
            with open(f"/proc/{pid}/environ", "rb") as reader:
                environ = reader.read().split(b"\0")
            self.assertFalse([v for v in environ if v.startswith(b"NOTIFY_SOCKET=")])
        server.signal(signal.SIGTERM)
        self.assertIn("STOPPING=1", target.receive())
        server.wait()
        target.sock.settimeout(0.5)
        self.assertRaises(socket.timeout, target.receive)
