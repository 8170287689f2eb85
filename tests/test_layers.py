"""The layer order of `jgen`, checked on the source with `ast` (no import, no jax: well under 1 s).

`LAYERS` is the order, lowest first. A module belongs to the entry whose name is its longest
dotted prefix (`jgen.train.loop` is run machinery although `jgen.train` is train core; the bare
`jgen` names only `jgen/__init__.py`). Three rules hold for every module under `jgen/`:

1. **Downward only**: a module imports modules of its own layer or lower layers, never a higher
   one. Importing `jgen.a.b` also runs the package `jgen.a` (its `__init__.py`), so that counts as
   an import of `jgen.a` too (except for a package that contains the importer).
2. **No cycle** in the graph of module-level imports, within a layer included.
3. **No function-local import of a jgen module**: imports inside a function (or a method) are for
   optional third-party dependencies only (torch, tensorflow_datasets ... with
   `# noqa: PLC0415`). A jgen import inside a function hides an upward import or a cycle.

Metrics sit below the families: they are pretrained feature networks (Inception, LPIPS, the
domain classifiers) and pure scores that import no family, and families use them as losses (the
VQ-GAN/KL first stage's perceptual loss, the consistency models' LPIPS distance). Families are
ordered among themselves by what they reuse: flow and gan need only the layers below; the
autoencoders' VQ-GAN/KL first stage composes gan's adversarial updates (gan < autoencoder);
autoregressive priors read a first stage's codes through `init_from` only (no import).
`jgen.convert`'s readers and name maps (published files onto jgen modules) use nn and the
autoencoders' networks, and Stable Diffusion applies LoRA and textual-inversion files with them
at sampling (autoencoder < convert < diffusion); the pipelines that write work directories
(`jgen.convert.pipeline`, `controlnet_pipeline`, `translation_pipeline`) are run machinery.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

# Lowest first. A row is (layer, module prefixes); a module may import its own row or a lower one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("L0 base", ("jgen.errors", "jgen.xla")),
    ("L1 blocks", ("jgen.ops", "jgen.nn", "jgen.data")),
    ("L2 train core", ("jgen.train",)),
    ("L3 metrics", ("jgen.metrics",)),
    ("L4a family flow", ("jgen.flow",)),
    ("L4b family gan", ("jgen.gan",)),
    ("L4c family autoencoder", ("jgen.autoencoder",)),
    ("L4d family autoregressive", ("jgen.autoregressive",)),
    ("L4e converters", ("jgen.convert",)),
    ("L4f family diffusion", ("jgen.diffusion",)),
    ("L5 run machinery", ("jgen.train.loop", "jgen.train.inference", "jgen.convert.pipeline",
                          "jgen.convert.controlnet_pipeline",
                          "jgen.convert.translation_pipeline", "jgen.export")),
    ("L6 entry points", ("jgen.run", "jgen.cli", "jgen.convert.__main__", "jgen")),
)


ROOT = pathlib.Path(__file__).resolve().parents[1]


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def layer_of(module: str, layers=LAYERS) -> int | None:
  """Index in `layers` of the longest prefix naming `module` (None when no entry does)."""
  best, best_len = None, -1
  for i, (_, prefixes) in enumerate(layers):
    for p in prefixes:
      hit = module == p or (p != "jgen" and module.startswith(p + "."))
      if hit and len(p) > best_len:
        best, best_len = i, len(p)
  return best


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> list[str]:
  """The jgen modules an import statement names (relative forms resolved)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names if a.name == "jgen" or a.name.startswith("jgen.")]
  if node.level:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    source = ".".join(base + ([node.module] if node.module else []))
  else:
    source = node.module or ""
  if source != "jgen" and not source.startswith("jgen."):
    return []
  return [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]


def _dynamic_target(node: ast.Call) -> list[str]:
  """`importlib.import_module("jgen....")` with a literal name is an import too."""
  func, args = node.func, node.args
  name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
  if (name == "import_module" and args and isinstance(args[0], ast.Constant)
      and isinstance(args[0].value, str) and args[0].value.startswith("jgen.")):
    return [args[0].value]
  return []


def _with_packages(target: str, importer: str) -> list[str]:
  """`target` and the packages importing it runs, less those containing `importer`."""
  parts = target.split(".")
  out = [".".join(parts[:k]) for k in range(2, len(parts) + 1)]
  return [m for m in out if not importer.startswith(m + ".")]


def _imports(tree: ast.AST, calls: bool):
  """(import statement or call, inside a function?) of a module, in one pass. Imports are
  statements, so only statements are walked unless `calls` (the text has `import_module(`)."""
  stack = [(tree, False)]
  keep = ast.AST if calls else (ast.stmt, ast.excepthandler, ast.match_case)
  while stack:
    node, in_function = stack.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
      yield node, in_function
    inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    stack.extend((child, inner) for child in ast.iter_child_nodes(node)
                 if isinstance(child, keep))


def import_graph(root: pathlib.Path = ROOT):
  """(module -> file, module-level edges {(importer, imported, file)}, local imports)."""
  files = {module_name(p, root): p for p in sorted((root / "jgen").rglob("*.py"))}
  known = set(files)
  edges, local = set(), set()
  for module, path in files.items():
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    rel = str(path.relative_to(root))
    for node, in_function in _imports(tree, "import_module(" in text):
      if isinstance(node, ast.Call):
        targets = _dynamic_target(node)
      else:
        targets = _targets(node, module, path.name == "__init__.py", known)
      for target in targets:
        if in_function:
          local.add((rel, target))
        else:
          edges.update((module, m, rel) for m in _with_packages(target, module) if m != module)
  return files, edges, local


def upward_imports(files, edges, layers=LAYERS) -> set[tuple[str, str]]:
  """(file, imported module) of every import of a higher layer, and of unassigned modules."""
  out = set()
  for importer, imported, rel in edges:
    a, b = layer_of(importer, layers), layer_of(imported, layers)
    if a is None or b is None or b > a:
      out.add((rel, imported))
  return out


def find_cycle(edges) -> list[str] | None:
  """One cycle of the module graph (`[m0, m1, ..., m0]`), or None (iterative DFS)."""
  graph: dict[str, set[str]] = {}
  for importer, imported, *_ in edges:
    graph.setdefault(importer, set()).add(imported)
  color: dict[str, int] = {}  # 1 on the stack, 2 done
  for start in sorted(graph):
    if color.get(start):
      continue
    stack, path = [(start, iter(sorted(graph.get(start, ()))))], [start]
    color[start] = 1
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        color[node] = 2
        stack.pop()
        path.pop()
      elif color.get(child) == 1:
        return path[path.index(child):] + [child]
      elif not color.get(child):
        color[child] = 1
        stack.append((child, iter(sorted(graph.get(child, ())))))
        path.append(child)
  return None


def _lines(pairs) -> str:
  return "\n".join(f"  {rel} imports {module}" for rel, module in pairs)


@pytest.fixture(scope="module")
def graph():
  return import_graph()


def test_every_module_has_a_layer(graph):
  files, _, _ = graph
  assert not [m for m in files if layer_of(m) is None]


def test_no_upward_import(graph):
  files, edges, _ = graph
  bad = sorted(upward_imports(files, edges))
  assert not bad, "upward (or unassigned) imports:\n" + _lines(bad)


def test_no_cycle(graph):
  _, edges, _ = graph
  cycle = find_cycle(edges)
  assert cycle is None, " -> ".join(cycle)


def test_no_function_local_jgen_import(graph):
  _, _, local = graph
  bad = sorted(local)
  assert not bad, "function-local imports of jgen modules:\n" + _lines(bad)


def _tree(tmp_path, sources: dict[str, str]) -> pathlib.Path:
  for rel, text in sources.items():
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
  return tmp_path


def test_checks_catch_violations(tmp_path):
  """A synthetic package with an upward import, a cycle and a function-local import."""
  root = _tree(tmp_path, {
      "jgen/__init__.py": "",
      "jgen/nn/__init__.py": "",
      "jgen/nn/a.py": "import jgen.gan.g as g\n",               # L1 -> L3: upward
      "jgen/gan/__init__.py": "",
      "jgen/gan/g.py": "from . import h\n",                      # relative, same package
      "jgen/gan/h.py": "from .g import X\n",                     # h -> g -> h: cycle
      "jgen/train/__init__.py": "",
      "jgen/train/s.py": "def f():\n  from ..metrics import fid\n  import torch\n",
      "jgen/train/t.py": "import importlib\nimportlib.import_module('jgen.train.s')\n",
      "jgen/metrics/__init__.py": "",
      "jgen/metrics/fid.py": "",
  })
  files, edges, local = import_graph(root)
  assert upward_imports(files, edges) == {("jgen/nn/a.py", "jgen.gan.g"),
                                          ("jgen/nn/a.py", "jgen.gan")}
  assert find_cycle(edges) in (["jgen.gan.g", "jgen.gan.h", "jgen.gan.g"],
                               ["jgen.gan.h", "jgen.gan.g", "jgen.gan.h"])
  assert local == {("jgen/train/s.py", "jgen.metrics.fid")}
  assert ("jgen.train.t", "jgen.train.s", "jgen/train/t.py") in edges
  assert find_cycle({("a", "b", ""), ("b", "c", "")}) is None


def test_layer_of_longest_prefix():
  assert LAYERS[layer_of("jgen.train.loop")][0].startswith("L5")
  assert LAYERS[layer_of("jgen.train.state")][0].startswith("L2")
  assert LAYERS[layer_of("jgen")][0].startswith("L6")
  assert layer_of("jgen.somewhere_new") is None
