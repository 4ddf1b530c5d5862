"""Imports go one way: no cycle between packages, and the report never imports
the server (nor either wing the other).

Every module under diskbench/ is parsed with ``ast`` (imports inside functions
count: a lazy import is a dependency all the same) and its imports are drawn
as a graph of nodes: each subpackage (``diskbench.server``, ``diskbench.client``,
``diskbench.report``) is one node, each module of the shared core is a node of
its own (``diskbench.protocol``, ``diskbench.ledger``, ...). A failure names the
offending edge: which file, which line, which import.
"""
import ast
import collections
import os

from tests.helpers import REPO

PACKAGE = "diskbench"
#: The subpackages, one node each (every module of the core is a node itself).
WINGS = ("server", "client", "report")
#: (importer, imported) node pairs that must never appear.
FORBIDDEN = (
    ("diskbench.report", "diskbench.server"),   # the server calls the report, not back
    ("diskbench.report", "diskbench.client"),
    ("diskbench.client", "diskbench.server"),
    ("diskbench.server", "diskbench.client"),
)

Edge = collections.namedtuple("Edge", "source target path line imported")


def _modules():
    """{dotted module name: path relative to the repository} under diskbench/."""
    out = {}
    for folder, dirs, files in os.walk(os.path.join(REPO, PACKAGE)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(folder, name), REPO)
                dotted = path[:-len(".py")].replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[:-len(".__init__")]
                out[dotted] = path
    return out


def _imports(dotted, path, modules):
    """(line, module imported) of every import in the file, at any depth."""
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read(), path)
    package = dotted if path.endswith("__init__.py") else dotted.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from the importing module's package up
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:   # "from pkg import module" imports the module
                full = "%s.%s" % (base, alias.name)
                yield node.lineno, full if full in modules else base


def node_of(dotted):
    """The graph node of a module: ``diskbench.`` and its first part, so its
    subpackage (one of WINGS) or the core module itself."""
    return ".".join(dotted.split(".")[:2])


def edges():
    """Every import between two different nodes, as an Edge."""
    modules = _modules()
    out = []
    for dotted, path in sorted(modules.items()):
        for line, imported in _imports(dotted, path, modules):
            if imported != PACKAGE and not imported.startswith(PACKAGE + "."):
                continue
            source, target = node_of(dotted), node_of(imported)
            if source != target:
                out.append(Edge(source, target, path, line, imported))
    return out


def _said(edge):
    return "%s -> %s (%s line %d imports %s)" % (
        edge.source, edge.target, edge.path, edge.line, edge.imported)


def find_cycle(all_edges):
    """The edges of one cycle between nodes, or [] when there is none."""
    graph = collections.defaultdict(dict)
    for e in all_edges:
        graph[e.source].setdefault(e.target, e)
    done, on_path = set(), []

    def visit(node):   # depth first; the path so far is on_path
        on_path.append(node)
        for target in sorted(graph[node]):
            if target in on_path:
                start = on_path.index(target)
                loop = on_path[start:] + [target]
                return [graph[a][b] for a, b in zip(loop, loop[1:])]
            if target not in done:
                found = visit(target)
                if found:
                    return found
        on_path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done:
            found = visit(node)
            if found:
                return found
    return []


def test_the_scan_sees_imports_at_every_depth_and_of_every_package():
    """The scanner finds what it must (else the tests below prove nothing): a
    module-level import, an import inside a function (launch.py builds the
    client's parser lazily), and every wing importing the core."""
    found = edges()
    said = set((e.source, e.target) for e in found)
    assert ("diskbench.launchargs", "diskbench.client") in said       # inside a function
    assert ("diskbench.server", "diskbench.report") in said       # the server calls it
    for wing in WINGS:   # each stands on the core
        assert any(source == "diskbench." + wing and (target.split(".") + [""])[1] not in WINGS
                   for source, target in said), wing
    assert len(_modules()) > 40


def test_the_package_graph_has_no_cycle():
    """Between packages (and the core's modules) imports go one way: a cycle is
    named edge by edge, with the file and line of each import."""
    cycle = find_cycle(edges())
    assert cycle == [], "import cycle: " + "; ".join(_said(e) for e in cycle)


def test_the_report_never_imports_the_server_and_the_wings_never_each_other():
    """The report is built and rendered without the server (a re-render replays
    perf.jsonl into the core's ledger); client and server share only the core."""
    bad = [_said(e) for e in edges() if (e.source, e.target) in FORBIDDEN]
    assert bad == [], "forbidden imports: " + "; ".join(bad)


def test_a_cycle_is_found_and_named():
    """find_cycle itself: a made-up loop is found with its edges in order."""
    made = [Edge("a", "b", "a.py", 1, "b"), Edge("b", "c", "b.py", 2, "c"),
            Edge("c", "a", "c.py", 3, "a"), Edge("c", "d", "c.py", 4, "d")]
    assert [(e.source, e.target) for e in find_cycle(made)] == [
        ("a", "b"), ("b", "c"), ("c", "a")]
    assert find_cycle(made[:2] + made[3:]) == []
