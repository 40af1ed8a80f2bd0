"""
socksd's layers (the "Layers" table of the design document): every module imports
only from its own layer and the layers below it, the sans-IO layers import
nothing from Twisted, and no socksd modules import each other in a cycle.

The source is read with L{ast}, never imported, so an import inside a
function, a method or a C{try} block counts as much as one at the top of a
module.  Only the bodies of C{if TYPE_CHECKING:} blocks are left out: they
never run.

Two choices of the walker, both the usual ones of import-linter and pydeps:

  - C{from socksd.server import relay} imports the module
    C{socksd.server.relay} when there is one, else the name from
    C{socksd.server} (its C{__init__.py});
  - importing C{socksd.server.relay} also runs C{socksd/server/__init__.py},
    but that implicit edge is not counted: a package whose C{__init__}
    re-exports its own submodules would otherwise always be a cycle.

Imports by a computed name (C{__import__}, C{importlib}) and the module
named as a string in the twistd plugin's C{ServiceMaker} are not seen.

To place a new module, add its name to L{LAYERS}.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase


@dataclass(frozen=True)
class Layer:
    """
    One row of the layers table.

    @ivar name: the layer's name, as error messages spell it.
    @ivar patterns: the modules of the layer.  C{"socksd.wire.*"} is the
        module or package C{socksd.wire} and everything under it;
        C{"socksd"} without C{.*} is that one module only.  Where several
        patterns match a module, the longest one wins.
    @ivar sansIO: the layer imports nothing from Twisted or zope.
    @ivar testsOnly: no module of the package outside this layer may import
        it (tests may).
    """

    name: str
    patterns: tuple[str, ...]
    sansIO: bool = False
    testsOnly: bool = False


#: The layers, bottom first: a module may import from its own layer and
#: from the layers before it in this tuple, never from one after it.
#: A layer's rank is its index here.
LAYERS: tuple[Layer, ...] = (
    # socksd/__init__.py imports nothing, and every import of any socksd
    # module runs it, so it belongs at the bottom.  socksd.onion checks
    # destination names (.onion, RFC 7686): pure functions of a name that
    # import only socksd.errors, used by resolvers, upstreams and Tor's
    # server commands alike.
    Layer(
        "model",
        ("socksd", "socksd.address.*", "socksd.errors.*", "socksd.onion.*"),
        sansIO=True,
    ),
    Layer("wire", ("socksd.wire.*",), sansIO=True),
    Layer("replies", ("socksd.replies.*",), sansIO=True),
    Layer("handshakes", ("socksd.handshake.*",), sansIO=True),
    Layer("interfaces", ("socksd.interfaces.*",)),
    # socksd.ratelimit's token buckets enforce the bandwidth a policy's
    # Decision grants, per user or client as isolation keys are; below the
    # server, so both the relays and an application's policy can use them.
    Layer(
        "policy and auth",
        (
            "socksd.policy.*",
            "socksd.auth.*",
            "socksd.isolation.*",
            "socksd.ratelimit.*",
            "socksd.htpasswd.*",
            "socksd.gssapi.*",
            "socksd.throttle.*",
            "socksd.checkers.*",
        ),
    ),
    # socksd.dtls is DTLS over a datagram socket (pyOpenSSL, memory BIOs),
    # which the SOCKS6 client and the server's DTLS relay port share.
    Layer("client", ("socksd.client.*", "socksd.dtls.*")),
    # socksd.chain only re-exports names of socksd.upstream (compatibility).
    Layer(
        "upstreams and resolvers",
        ("socksd.upstream.*", "socksd.resolve.*", "socksd.chain.*"),
    ),
    Layer("server", ("socksd.server.*",)),
    # Fleet-wide state (Redis) and quotas, wired into a server's factory
    # through its seams (limits, bandwidth, socks6Sessions); the service
    # builds it from the options.
    Layer("shared", ("socksd.shared.*",)),
    # The public test doubles: above everything they fake, below the
    # service, and imported by tests alone.
    Layer("testing", ("socksd.testing.*",), testsOnly=True),
    # socksd.metrics is service wiring: tap builds it, the factory only
    # holds it, metricsService is a strports service, and it reads
    # socksd.server._log.
    Layer(
        "service",
        ("socksd.service.*", "socksd.tap.*", "socksd.metrics.*", "twisted.plugins.*"),
    ),
)

#: Top-level packages the sans-IO layers must not import.
NOT_SANS_IO = frozenset({"twisted", "zope"})


@dataclass(frozen=True)
class Module:
    """
    One source file to check.

    @ivar name: the dotted module name (C{"socksd"} for C{socksd/__init__.py}).
    @ivar path: where it is, relative to the directory holding C{socksd/}.
    @ivar isPackage: it is a package's C{__init__.py}.
    """

    name: str
    path: str
    source: str
    isPackage: bool


@dataclass(frozen=True)
class Statement:
    """
    One import: C{import base} (no C{names}) or C{from base import names}.

    @ivar base: an absolute dotted name (relative imports are resolved).
    """

    base: str
    names: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Import:
    """
    A module of the walk importing another: C{source -> target} at
    C{location} (C{"socksd/upstream.py:12"}).
    """

    source: str
    target: str
    location: str


def layerOf(moduleName: str, layers: tuple[Layer, ...] = LAYERS) -> int | None:
    """
    Find the rank (index in C{layers}) of the layer that holds C{moduleName}
    by its longest matching pattern; L{None} if no pattern matches.
    """
    best: tuple[int, int] | None = None
    for rank, layer in enumerate(layers):
        for pattern in layer.patterns:
            stem = pattern.removesuffix(".*")
            matches = moduleName == stem or (
                pattern.endswith(".*") and moduleName.startswith(stem + ".")
            )
            if matches and (best is None or len(stem) > best[0]):
                best = (len(stem), rank)
    return None if best is None else best[1]


def packageModules(root: Path) -> list[Module]:
    """
    Read every module of socksd under C{root}: C{socksd/**.py} except the
    tests in C{socksd/test/}, and the plugins C{twisted/plugins/socksd_*.py}.
    """
    paths = [
        path
        for path in (root / "socksd").rglob("*.py")
        if path.relative_to(root).parts[:2] != ("socksd", "test")
    ]
    paths.extend((root / "twisted" / "plugins").glob("socksd_*.py"))
    modules = []
    for path in sorted(paths):
        parts = list(path.relative_to(root).with_suffix("").parts)
        isPackage = parts[-1] == "__init__"
        if isPackage:
            parts.pop()
        modules.append(
            Module(
                name=".".join(parts),
                path=path.relative_to(root).as_posix(),
                source=path.read_text(encoding="utf-8"),
                isPackage=isPackage,
            )
        )
    return modules


def isTypeChecking(test: ast.expr) -> bool:
    """
    Is C{test} the condition C{TYPE_CHECKING} or C{typing.TYPE_CHECKING}?
    """
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportFinder(ast.NodeVisitor):
    """
    Collect every import statement of a module, at any depth, except in
    the bodies of C{if TYPE_CHECKING:} (their C{else} branches count).
    """

    def __init__(self, module: Module) -> None:
        self.module = module
        self.statements: list[Statement] = []

    def visit_If(self, node: ast.If) -> None:
        if not isTypeChecking(node.test):
            self.generic_visit(node)
            return
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.statements.append(Statement(alias.name, (), node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            base = self.resolveRelative(node.level, base, node.lineno)
        names = tuple(alias.name for alias in node.names)
        self.statements.append(Statement(base, names, node.lineno))

    def resolveRelative(self, level: int, relative: str, line: int) -> str:
        """
        Make C{from .relative import ...} (C{level} dots) absolute.
        """
        package = self.module.name.split(".")
        if not self.module.isPackage:
            package.pop()
        if level - 1 >= len(package):
            raise ValueError(
                f"{self.module.path}:{line}: relative import beyond the top package"
            )
        parts = package[: len(package) - (level - 1)]
        if relative:
            parts.append(relative)
        return ".".join(parts)


def statementsIn(module: Module) -> list[Statement]:
    """
    Every import statement in C{module}'s source, relative ones made
    absolute, C{TYPE_CHECKING} blocks left out.
    """
    finder = _ImportFinder(module)
    finder.visit(ast.parse(module.source, filename=module.path))
    return finder.statements


def longestKnownPrefix(name: str, known: frozenset[str]) -> str | None:
    """
    The longest of C{name}, its parent package, its grandparent... that is
    in C{known}; L{None} if none is.
    """
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def targetsOf(statement: Statement, known: frozenset[str]) -> set[str]:
    """
    The modules in C{known} that C{statement} imports: C{from p import n}
    imports the module C{p.n} if it is one, and C{p} otherwise.
    """
    candidates = [statement.base]
    if statement.names:
        candidates = [
            f"{statement.base}.{name}"
            if f"{statement.base}.{name}" in known
            else statement.base
            for name in statement.names
        ]
    found = {longestKnownPrefix(candidate, known) for candidate in candidates}
    return {target for target in found if target is not None}


def importsAmong(modules: Iterable[Module]) -> list[Import]:
    """
    Every import of one of C{modules} by another, with where it is.  A
    module importing itself is left out.
    """
    modules = list(modules)
    known = frozenset(module.name for module in modules)
    imports = []
    for module in modules:
        for statement in statementsIn(module):
            for target in sorted(targetsOf(statement, known)):
                if target != module.name:
                    imports.append(
                        Import(module.name, target, f"{module.path}:{statement.line}")
                    )
    return imports


def edgesOf(imports: Iterable[Import]) -> dict[tuple[str, str], list[str]]:
    """
    Group C{imports} by C{(source, target)}, each with all its locations.
    """
    edges: dict[tuple[str, str], list[str]] = {}
    for each in imports:
        edges.setdefault((each.source, each.target), []).append(each.location)
    return edges


def stronglyConnected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """
    Tarjan's algorithm, iteratively: the strongly connected components of
    C{graph} (node to successors), each sorted.
    """
    index: dict[str, int] = {}
    lowLink: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = lowLink[start] = len(index)
        stack.append(start)
        onStack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = lowLink[successor] = len(index)
                    stack.append(successor)
                    onStack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in onStack:
                    lowLink[node] = min(lowLink[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowLink[parent] = min(lowLink[parent], lowLink[node])
                if lowLink[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        onStack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def shortestPath(
    graph: Mapping[str, Iterable[str]], start: str, end: str, within: set[str]
) -> list[str] | None:
    """
    A shortest path from C{start} to C{end} through nodes of C{within} only,
    by breadth-first search; L{None} if there is none.
    """
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == end:
            path = [node]
            while (step := previous[path[-1]]) is not None:
                path.append(step)
            return path[::-1]
        for successor in sorted(graph.get(node, ())):
            if successor in within and successor not in previous:
                previous[successor] = node
                queue.append(successor)
    return None


def cyclesOf(edges: Mapping[tuple[str, str], object]) -> list[list[str]]:
    """
    Import cycles, as paths C{[a, b, ..., a]}: for every edge that is part
    of a cycle, a shortest cycle through it (each cycle once).  Every edge
    that takes part in any cycle is in at least one of them.
    """
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    cycles: dict[tuple[str, ...], list[str]] = {}
    for component in stronglyConnected(graph):
        members = set(component)
        if len(members) < 2:
            continue
        for source, target in sorted(edges):
            if source in members and target in members:
                back = shortestPath(graph, target, source, members)
                assert back is not None
                cycle = [source] + back
                start = cycle.index(min(cycle[:-1]))
                key = tuple(cycle[start:-1] + cycle[:start])
                cycles.setdefault(key, list(key) + [key[0]])
    return [cycles[key] for key in sorted(cycles)]


def describeCycles(edges: Mapping[tuple[str, str], list[str]]) -> list[str]:
    """
    One paragraph for each cycle in C{edges}: the path, then each of its
    imports with where it is.
    """
    paragraphs = []
    for cycle in cyclesOf(edges):
        lines = [" -> ".join(cycle)]
        for source, target in itertools.pairwise(cycle):
            where = ", ".join(edges[source, target])
            lines.append(f"    {source} -> {target}  at {where}")
        paragraphs.append("\n".join(lines))
    return paragraphs


def layerViolations(
    edges: Mapping[tuple[str, str], list[str]], layers: tuple[Layer, ...] = LAYERS
) -> list[str]:
    """
    Every import in C{edges} of a higher layer, or of a tests-only layer
    from outside it, as C{"a -> b (layer x imports layer y) at file:line"}.
    Modules in no layer are left to L{unplacedModules}.
    """
    violations = []
    for (source, target), locations in sorted(edges.items()):
        sourceRank, targetRank = layerOf(source, layers), layerOf(target, layers)
        if sourceRank is None or targetRank is None:
            continue
        sourceLayer, targetLayer = layers[sourceRank], layers[targetRank]
        why = f"layer {sourceLayer.name} imports layer {targetLayer.name}"
        if targetLayer.testsOnly and targetRank != sourceRank:
            why += ", which only tests may import"
        elif targetRank <= sourceRank:
            continue
        violations.append(f"{source} -> {target} ({why}) at {', '.join(locations)}")
    return violations


def notSansIO(
    modules: Iterable[Module], layers: tuple[Layer, ...] = LAYERS
) -> list[str]:
    """
    Every import of Twisted or zope by a module of a sans-IO layer, as
    C{"file:line: module imports name (layer x)"}.
    """
    found = []
    for module in modules:
        rank = layerOf(module.name, layers)
        if rank is None or not layers[rank].sansIO:
            continue
        for statement in statementsIn(module):
            if statement.base.split(".")[0] in NOT_SANS_IO:
                found.append(
                    f"{module.path}:{statement.line}: {module.name} imports"
                    f" {statement.base} (layer {layers[rank].name})"
                )
    return found


def unplacedModules(
    modules: Iterable[Module], layers: tuple[Layer, ...] = LAYERS
) -> list[str]:
    """
    The modules in C{modules} that no layer holds, with their files.
    """
    return [
        f"{module.name} ({module.path})"
        for module in modules
        if layerOf(module.name, layers) is None
    ]


@cache
def socksdModules() -> tuple[Module, ...]:
    """
    socksd's own modules, read from the tree this test file is in (a
    checkout or an installed copy: both hold C{socksd/} and
    C{twisted/plugins/socksd_*.py} side by side).
    """
    return tuple(packageModules(Path(__file__).resolve().parents[2]))


def synthetic(sources: Mapping[str, str]) -> list[Module]:
    """
    Modules from source text for the walker's own tests: a name ending in
    C{".__init__"} is a package.
    """
    modules = []
    for name, source in sources.items():
        isPackage = name.endswith(".__init__")
        name = name.removesuffix(".__init__")
        path = name.replace(".", "/") + ("/__init__.py" if isPackage else ".py")
        modules.append(Module(name, path, source, isPackage))
    return modules


class LayersTests(SynchronousTestCase):
    """
    socksd's modules follow the layers table and import no cycles.
    """

    def setUp(self) -> None:
        self.modules = socksdModules()
        self.edges = edgesOf(importsAmong(self.modules))

    def test_walkerFindsThePackage(self) -> None:
        """
        The walk reads socksd's modules from its package tree (and the
        twistd plugins) and not its tests, so the other tests here cannot
        pass on an empty walk.
        """
        names = {module.name for module in self.modules}
        for expected in [
            "socksd",
            "socksd.address",
            "socksd.wire.socks5",
            "socksd.server",
            "socksd.tap",
            "socksd.testing",
            "twisted.plugins.socksd_plugin",
        ]:
            self.assertIn(expected, names)
        self.assertEqual(
            [name for name in names if name.startswith("socksd.test.")], []
        )
        self.assertEqual([name for name in names if name == "socksd.test"], [])
        self.assertTrue(self.edges)

    def test_everyModulePlaced(self) -> None:
        """
        Every module of the package is in a layer of L{LAYERS}: a new module
        must be placed there.
        """
        unplaced = unplacedModules(self.modules)
        if unplaced:
            self.fail(
                f"{len(unplaced)} modules in no layer (add them to LAYERS):\n"
                + "\n".join(unplaced)
            )

    def test_noCycles(self) -> None:
        """
        No socksd modules import each other in a cycle, by imports at any
        depth of a module (C{TYPE_CHECKING} blocks aside).
        """
        cycles = describeCycles(self.edges)
        if cycles:
            self.fail(f"{len(cycles)} import cycles:\n" + "\n".join(cycles))

    def test_layersOnlyImportDown(self) -> None:
        """
        No module imports a module of a higher layer, and only tests import
        C{socksd.testing}.
        """
        violations = layerViolations(self.edges)
        if violations:
            self.fail(
                f"{len(violations)} imports against the layers:\n"
                + "\n".join(violations)
            )

    def test_sansIOLayersImportNoTwisted(self) -> None:
        """
        The modules of the model, wire, replies and handshakes layers import
        nothing from Twisted or zope.
        """
        self.assertEqual(
            {layer.name for layer in LAYERS if layer.sansIO},
            {"model", "wire", "replies", "handshakes"},
        )
        found = notSansIO(self.modules)
        if found:
            self.fail(
                f"{len(found)} Twisted or zope imports in sans-IO layers:\n"
                + "\n".join(found)
            )


class LayersTableTests(SynchronousTestCase):
    """
    L{LAYERS} places modules by their longest matching pattern.
    """

    def test_longestPatternWins(self) -> None:
        """
        A module is in the layer of its longest matching pattern, a package
        pattern (C{.*}) holds the package and everything under it, and the
        bare root C{socksd} holds only C{socksd/__init__.py}.
        """
        names = {
            "socksd": "model",
            "socksd.onion": "model",
            "socksd.wire": "wire",
            "socksd.wire._buffer": "wire",
            "socksd.handshake.socks5": "handshakes",
            "socksd.policy.rules": "policy and auth",
            "socksd.server.relay.splice": "server",
            "socksd.testing": "testing",
            "socksd.metrics": "service",
            "twisted.plugins.socksd_plugin": "service",
        }
        for name, layer in names.items():
            rank = layerOf(name)
            self.assertIsNotNone(rank, name)
            self.assertEqual(LAYERS[rank].name, layer, name)
        self.assertIsNone(layerOf("socksd.nonesuch"))
        self.assertIsNone(layerOf("socksd.wirex"))
        self.assertIsNone(layerOf("twisted.internet"))
        inner = (Layer("low", ("a.*",)), Layer("high", ("a.b.*",)))
        self.assertEqual(layerOf("a.b.c", inner), 1)
        self.assertEqual(layerOf("a.c", inner), 0)

    def test_patternsUnique(self) -> None:
        """
        No pattern is in two layers, and the layer names are distinct.
        """
        patterns = [pattern for layer in LAYERS for pattern in layer.patterns]
        self.assertEqual(len(patterns), len(set(patterns)))
        self.assertEqual(len(LAYERS), len({layer.name for layer in LAYERS}))


class WalkerTests(SynchronousTestCase):
    """
    The import walker, on source text: it sees every import that can run,
    resolves relative ones, and finds cycles and violations.
    """

    def test_importsAtAnyDepth(self) -> None:
        """
        Imports inside functions, methods, classes, C{try}/C{except},
        C{with} and ordinary C{if} blocks are found, with their lines.
        """
        source = (
            "import socksd.a\n"
            "def f():\n"
            "    from socksd import b\n"
            "class C:\n"
            "    import socksd.c as c\n"
            "    def m(self):\n"
            "        try:\n"
            "            import socksd.d\n"
            "        except ImportError:\n"
            "            from socksd.e import thing\n"
            "        with open('x'):\n"
            "            if 1:\n"
            "                import socksd.f\n"
        )
        modules = synthetic(
            {"socksd.m": source, **{f"socksd.{n}": "" for n in "abcdef"}}
        )
        found = {(i.target, i.location) for i in importsAmong(modules)}
        self.assertEqual(
            found,
            {
                ("socksd.a", "socksd/m.py:1"),
                ("socksd.b", "socksd/m.py:3"),
                ("socksd.c", "socksd/m.py:5"),
                ("socksd.d", "socksd/m.py:8"),
                ("socksd.e", "socksd/m.py:10"),
                ("socksd.f", "socksd/m.py:13"),
            },
        )

    def test_typeCheckingLeftOut(self) -> None:
        """
        The bodies of C{if TYPE_CHECKING:} and C{if typing.TYPE_CHECKING:}
        are left out, their C{else} branches are not.
        """
        source = (
            "import typing\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    import socksd.a\n"
            "    import twisted.internet\n"
            "else:\n"
            "    import socksd.b\n"
            "def f():\n"
            "    if typing.TYPE_CHECKING:\n"
            "        from socksd import c\n"
        )
        modules = synthetic({"socksd.m": source, **{f"socksd.{n}": "" for n in "abc"}})
        self.assertEqual(
            [(i.target, i.location) for i in importsAmong(modules)],
            [("socksd.b", "socksd/m.py:7")],
        )
        self.assertEqual(
            [s.base for s in statementsIn(modules[0])], ["typing", "typing", "socksd.b"]
        )

    def test_relativeImportsResolved(self) -> None:
        """
        Relative imports are made absolute from a module's package, or from
        the package itself in an C{__init__.py}.
        """
        modules = synthetic(
            {
                "socksd.__init__": "",
                "socksd.errors": "",
                "socksd.server.__init__": "from .factory import F\nfrom . import relay\n",
                "socksd.server.factory": "from ._log import log\nfrom .. import errors\n",
                "socksd.server._log": "",
                "socksd.server.relay": "from . import Name\n",
            }
        )
        found = {(i.source, i.target, i.location) for i in importsAmong(modules)}
        self.assertEqual(
            found,
            {
                (
                    "socksd.server",
                    "socksd.server.factory",
                    "socksd/server/__init__.py:1",
                ),
                ("socksd.server", "socksd.server.relay", "socksd/server/__init__.py:2"),
                (
                    "socksd.server.factory",
                    "socksd.server._log",
                    "socksd/server/factory.py:1",
                ),
                (
                    "socksd.server.factory",
                    "socksd.errors",
                    "socksd/server/factory.py:2",
                ),
                ("socksd.server.relay", "socksd.server", "socksd/server/relay.py:1"),
            },
        )
        [beyond] = synthetic({"socksd.server.relay": "from ... import nothing\n"})
        self.assertRaises(ValueError, statementsIn, beyond)

    def test_fromImportOfModuleOrName(self) -> None:
        """
        C{from p import n} imports the module C{p.n} if there is one, else
        C{p}; an import of a name inside a module imports that module; and
        imports from outside the walk are not edges.
        """
        modules = synthetic(
            {
                "socksd.server.__init__": "X = 1\n",
                "socksd.server.relay": "",
                "socksd.m": (
                    "from socksd.server import relay, X\n"
                    "import socksd.server.relay.Thing\n"
                    "from twisted.internet import defer\n"
                ),
            }
        )
        found = sorted((i.target, i.location) for i in importsAmong(modules))
        self.assertEqual(
            found,
            [
                ("socksd.server", "socksd/m.py:1"),
                ("socksd.server.relay", "socksd/m.py:1"),
                ("socksd.server.relay", "socksd/m.py:2"),
            ],
        )

    def test_cycleFound(self) -> None:
        """
        A cycle through a function-level import is reported as its path,
        each import with its line; a module importing into the cycle is not
        part of it, and an acyclic graph has no cycles.
        """
        modules = synthetic(
            {
                "socksd.a": "import socksd.b\n",
                "socksd.b": "\n\ndef f():\n    from socksd import c\n",
                "socksd.c": "import socksd.a\n",
                "socksd.d": "import socksd.a\n",
            }
        )
        edges = edgesOf(importsAmong(modules))
        self.assertEqual(
            cyclesOf(edges), [["socksd.a", "socksd.b", "socksd.c", "socksd.a"]]
        )
        self.assertEqual(
            describeCycles(edges),
            [
                (
                    "socksd.a -> socksd.b -> socksd.c -> socksd.a\n"
                    "    socksd.a -> socksd.b  at socksd/a.py:1\n"
                    "    socksd.b -> socksd.c  at socksd/b.py:4\n"
                    "    socksd.c -> socksd.a  at socksd/c.py:1"
                )
            ],
        )
        del edges["socksd.c", "socksd.a"]
        self.assertEqual(cyclesOf(edges), [])

    def test_everyCycleEdgeReported(self) -> None:
        """
        Two cycles sharing a module are both reported.
        """
        edges = {
            ("a", "b"): ["a.py:1"],
            ("b", "a"): ["b.py:1"],
            ("b", "c"): ["b.py:2"],
            ("c", "b"): ["c.py:1"],
        }
        self.assertEqual(cyclesOf(edges), [["a", "b", "a"], ["b", "c", "b"]])

    def test_violationsFound(self) -> None:
        """
        An import of a higher layer, and of C{socksd.testing} from outside
        it, are violations with their locations; imports down and within a
        layer are not.
        """
        edges = {
            ("socksd.wire.socks5", "socksd.server.relay"): ["socksd/wire/socks5.py:3"],
            ("socksd.tap", "socksd.testing"): ["socksd/tap.py:9", "socksd/tap.py:12"],
            ("socksd.server.relay", "socksd.wire.socks5"): ["socksd/server/relay.py:1"],
            ("socksd.upstream", "socksd.chain"): ["socksd/upstream.py:5"],
            ("socksd.testing", "socksd.server"): ["socksd/testing.py:5"],
        }
        self.assertEqual(
            layerViolations(edges),
            [
                (
                    "socksd.tap -> socksd.testing (layer service imports layer testing,"
                    " which only tests may import) at socksd/tap.py:9, socksd/tap.py:12"
                ),
                (
                    "socksd.wire.socks5 -> socksd.server.relay (layer wire imports layer"
                    " server) at socksd/wire/socks5.py:3"
                ),
            ],
        )

    def test_twistedInSansIOFound(self) -> None:
        """
        A function-level Twisted or zope import in a sans-IO layer is found;
        one in a higher layer is not.
        """
        modules = synthetic(
            {
                "socksd.wire.socks5": "def f():\n    from twisted.internet import defer\n",
                "socksd.address": "import zope.interface\n",
                "socksd.server.relay": "import twisted\n",
            }
        )
        self.assertEqual(
            notSansIO(modules),
            [
                (
                    "socksd/wire/socks5.py:2: socksd.wire.socks5 imports"
                    " twisted.internet (layer wire)"
                ),
                (
                    "socksd/address.py:1: socksd.address imports zope.interface"
                    " (layer model)"
                ),
            ],
        )
        self.assertEqual(
            unplacedModules(synthetic({"socksd.nonesuch": ""})),
            ["socksd.nonesuch (socksd/nonesuch.py)"],
        )
