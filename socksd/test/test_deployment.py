"""
docs/deployment.rst stays true: its metrics table names every series
socksd serves, its access-record table every field in order, its reply
table the vocabulary; the README links it; usage.rst documents the
options it relies on.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import socksd
from socksd.replies import COMMON_REPLY_NAMES
from socksd.server._log import ACCESS_FIELDS
from socksd.test.test_plugin import sourceTree


def source() -> Path:
    tree = sourceTree() or Path(socksd.__file__).resolve().parent.parent
    if not (tree / "docs" / "deployment.rst").is_file():
        raise SkipTest("needs socksd's docs/ from a checkout (set SOCKSD_SOURCE)")
    return tree


class DeploymentPageTests(SynchronousTestCase):
    """
    The deployment page against the code.
    """

    def setUp(self) -> None:
        self.tree = source()
        self.page = (self.tree / "docs" / "deployment.rst").read_text()

    def test_metrics(self) -> None:
        """
        Every series of a server's registry (with an upstream and the
        shared state) is in the metrics table, with the name Prometheus
        shows.
        """
        try:
            from socksd.service.metrics import Metrics
        except ImportError:  # pragma: no cover
            raise self.skipTest("prometheus_client is not installed")
        from socksd.upstream import DirectUpstream

        metrics = Metrics()
        metrics.watchUpstreams(lambda: DirectUpstream(None, None))
        metrics.sharedStateChanged(True)
        table = self.page[self.page.index("\nMetrics\n") :]
        names = set()
        for family in metrics.registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            names.add(name)
        names |= {"socksd_upstream_up", "socksd_upstream_failures_total"}
        for name in sorted(names):
            self.assertIn(f"``{name}``", table, name)

    def test_accessFields(self) -> None:
        """
        The access-record table lists every field, in order.
        """
        section = self.page[self.page.index("The fields, always") :]
        section = section[: section.index("``reply`` uses")]
        listed = re.findall(r"^``(\w+)``", section, re.M)
        self.assertEqual(tuple(listed), ACCESS_FIELDS)

    def test_replyVocabulary(self) -> None:
        """
        Every name a reply becomes is on the page.
        """
        for name in set(COMMON_REPLY_NAMES.values()):
            self.assertIn(f"``{name}``", self.page)

    def test_links(self) -> None:
        """
        The README links the page; the index lists it; usage.rst
        documents its options.
        """
        readme = (self.tree / "README.md").read_text()
        self.assertIn("docs/deployment.rst", readme)
        index = (self.tree / "docs" / "index.rst").read_text()
        self.assertIn("   deployment\n", index)
        usage = (self.tree / "docs" / "usage.rst").read_text()
        for option in ("--access-log", "--drain-timeout", "--agent-check", "--metrics"):
            self.assertIn(f"``{option} ", usage)
        self.assertIn("socksd.service.jsonlog.jsonLogger", usage)
        self.assertTrue((self.tree / "CHANGES.rst").is_file())
        self.assertIn(
            f"\n{socksd.__version__} ", (self.tree / "CHANGES.rst").read_text()
        )
