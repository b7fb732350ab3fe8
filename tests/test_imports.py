"""The package's layers, read from its source (every import, lazy ones inside functions too): the
data and model layers import nothing above them, the stages are the top layer, and no two modules
import each other in a circle."""

import ast
import os

from helpers import ROOT

PACKAGE = os.path.join(ROOT, 'wsol_jax')
BASE = {'wsol_jax.errors', 'wsol_jax.annotations'}
# what each lower layer may import from the package, besides itself
ALLOWED = {'wsol_jax.models': BASE, 'wsol_jax.data': BASE | {'wsol_jax.parallel'}, 'wsol_jax.parallel': BASE}
STAGES = 'wsol_jax.stages'  # the top layer: what main.py runs
# Below the stages, only these import a stage: the entry points (the package's lazy API, the
# dispatcher, fit_weight_map).
IMPORT_STAGES = {'wsol_jax', 'wsol_jax.run', 'wsol_jax.fit'}
# The inference path: what loads, exports and applies a trained localiser.
INFERENCE = (
    'wsol_jax.localizer',
    'wsol_jax.predict',
    'wsol_jax.image_paths',
    'wsol_jax.inference',
    'wsol_jax.stages.export',
    'wsol_jax.stages.predict',
)


def _modules(on_import: bool = False) -> dict[str, set[str]]:
    """module name -> the wsol_jax modules it imports (`from wsol_jax.data import decode` counts as
    wsol_jax.data.decode, `from wsol_jax.data import Split` as wsol_jax.data); `on_import`: only
    those that importing it runs (outside functions)."""
    raw = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
            module = rel[: -len('.__init__')] if rel.endswith('.__init__') else rel
            raw[module] = []
            for node in _executed(ast.parse(open(path).read()), on_import):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('wsol_jax'):
                    raw[module] += [(node.module, a.name) for a in node.names]
                elif isinstance(node, ast.Import):
                    raw[module] += [(a.name, None) for a in node.names if a.name.startswith('wsol_jax')]
    resolve = lambda m, n: f'{m}.{n}' if n and f'{m}.{n}' in raw else m
    return {m: {resolve(*i) for i in imports} - {m} for m, imports in raw.items()}


def _executed(tree: ast.AST, on_import: bool = False):
    """The nodes of `tree` less the bodies of `if TYPE_CHECKING:` (imports for annotations only,
    never run); `on_import`: also less the bodies of functions."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_executed(child, on_import)])
            continue
        yield node
        if not (on_import and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            yield from _executed(node, on_import)


def _imported(module: str) -> set[str]:
    """Every package module that importing `module` and calling its functions can import: the
    closure of its imports, with the packages (`__init__.py`) above each module, which Python runs
    first (their imports at import time only: `wsol_jax.__getattr__` imports the API lazily)."""
    graph, on_import = _modules(), _modules(on_import=True)
    seen, todo = set(), [(module, graph)]
    while todo:
        m, imports = todo.pop()
        parents = {'.'.join(m.split('.')[:k]) for k in range(1, m.count('.') + 1)} & set(graph)
        for i, follow in [(i, graph) for i in imports.get(m, set())] + [(p, on_import) for p in parents]:
            if (i, follow is graph) not in seen:
                seen.add((i, follow is graph))
                todo.append((i, follow))
    return {i for i, _ in seen} - {module}


def _layer(module: str) -> str:
    return next((layer for layer in ALLOWED if module == layer or module.startswith(layer + '.')), '')


def test_lower_layers_import_nothing_above_them():
    graph = _modules()
    assert 'wsol_jax.data.split' in graph and 'wsol_jax.models.registry' in graph  # the walk found the package
    wrong = {
        (m, i)
        for m, imports in graph.items()
        if _layer(m)
        for i in imports
        if _layer(i) != _layer(m) and i not in ALLOWED[_layer(m)]
    }
    assert not wrong, sorted(wrong)


def test_no_import_circle():
    graph = _modules()
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError('import circle: ' + ' -> '.join(path[path.index(m) :] + [m]))
        if m in done or m not in graph:
            return
        path.append(m)
        for i in sorted(graph[m]):
            visit(i)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_the_stages_are_the_top_layer_and_their_table_imports_none_of_them():
    graph = _modules()
    assert {'wsol_jax.stages.train_f', 'wsol_jax.stages.predict'} <= set(graph)
    wrong = {
        (m, i)
        for m, imports in graph.items()
        if not (m == STAGES or m.startswith(STAGES + '.')) and m not in IMPORT_STAGES
        for i in imports
        if i == STAGES or i.startswith(STAGES + '.')
    }
    assert not wrong, sorted(wrong)
    # the table names each stage's module and imports it when the stage runs: main.py reads the
    # table before JAX starts, and export and predict import no training code through it
    assert graph[STAGES] <= {'wsol_jax.workdir'}, graph[STAGES]


def test_the_evaluators_registry_imports_none_of_them():
    """The config and the report read the registry (names, titles) without importing an evaluator;
    the evaluators import no stage (the stages rule above) and the report imports none of them."""
    graph = _modules()
    assert 'wsol_jax.evaluators.common' in graph and not graph['wsol_jax.evaluators']
    assert not {i for i in graph['wsol_jax.report'] | graph['wsol_jax.config'] if i.startswith('wsol_jax.evaluators.')}


def test_the_inference_path_imports_no_training_code():
    """The localiser, predict (the library and its stage), the export stage and inference build
    networks from `models.build`, read checkpoints (`train.checkpoint`: storage) and selection.json
    (`selection.load_selection`), and import nothing that trains, directly or through another
    module: no train state, optimiser, step, loop or budget, no training stage, no batches."""
    graph = _modules()
    training = {m for m in graph if m.startswith('wsol_jax.train.') and m != 'wsol_jax.train.checkpoint'}
    training |= {m for m in graph if m.startswith(STAGES + '.')} - set(INFERENCE)
    training |= {'wsol_jax.methods', 'wsol_jax.losses', 'wsol_jax.data.pipeline', 'wsol_jax.context'}
    training |= {'wsol_jax.fit', 'wsol_jax.run', 'wsol_jax.checks'}
    assert {'wsol_jax.train.state', 'wsol_jax.train.steps', 'wsol_jax.stages.select'} <= training
    for module in INFERENCE:
        assert module in graph
        imported = _imported(module)
        assert not imported & training, (module, sorted(imported & training))
    reached = _imported('wsol_jax.localizer')  # the closure reaches storage and the packages above
    assert {'wsol_jax.train.checkpoint', 'wsol_jax.models.resnet', 'wsol_jax.data', 'wsol_jax'} <= reached


def test_importing_the_inference_path_loads_no_training_code():
    """The same, by what Python loads: importing the inference path in a fresh interpreter brings in
    none of the training modules, nor optax (the optimisers) or flax.training (the train state)."""
    import json
    import subprocess
    import sys

    code = (
        'import json, sys\n'
        + ''.join(f'import {m}\n' for m in INFERENCE)
        + 'print(json.dumps(sorted(m for m in sys.modules if m.startswith(("wsol_jax", "optax", "flax")))))'
    )
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert set(INFERENCE) <= loaded and 'wsol_jax.train.checkpoint' in loaded
    assert not {m for m in loaded if m.startswith(('optax', 'flax.training'))}, sorted(loaded)
    training = {m for m in loaded if m.startswith('wsol_jax.train.') and m != 'wsol_jax.train.checkpoint'}
    training |= loaded & {'wsol_jax.methods', 'wsol_jax.losses', 'wsol_jax.data.pipeline', 'wsol_jax.context'}
    training |= {m for m in loaded if m.startswith('wsol_jax.stages.') and m not in INFERENCE}
    assert not training, sorted(training)
