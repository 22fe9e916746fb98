"""The package's shape: no import cycle inside ``bioflux/``, and pure-numpy layers stay free of
Ray Tune/RLlib at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bioflux

PACKAGE = Path(bioflux.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Every ``bioflux`` module imported anywhere in the file (functions included: lazy imports
    hide cycles too), except under ``if TYPE_CHECKING:``, which never runs."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m == "bioflux" or m.startswith("bioflux.")}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        # ``from pkg import name`` names a module only when that module exists
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "bioflux.algorithms" in graph["bioflux.training"]  # imported inside train()
    assert "bioflux.config" not in graph["bioflux.algorithms.common"]  # TYPE_CHECKING only


def test_no_import_cycle_inside_the_package():
    assert find_cycle(import_graph()) is None


def test_policies_and_inference_do_not_import_ray_tune_or_rllib():
    code = (
        "import sys, bioflux.policies, bioflux.serve.inference, bioflux.rollout, "
        "bioflux.artifacts, bioflux.serve.settings\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ray.tune', 'ray.rllib'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


ALGORITHMS_DIR = PACKAGE / "algorithms"
#: The flat modules ``algorithms/`` may hold: the registry and the plug-in contract.
ALGORITHMS_FLAT = {"__init__.py", "common.py"}
#: The package of what several algorithms share (samplers, replay, callbacks).
SHARED = "shared"


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_policies_import_nothing_from_algorithms():
    """Hand-written policy modules live beside ``policies`` (``policy_modules``): the layers
    that act with policies never reach up into the algorithms that train them."""
    graph = import_graph()
    for low in ("bioflux.policies", "bioflux.policy_modules.lotka_volterra", "bioflux.rollout"):
        up = {m for m in _closure(graph, low) if m.startswith("bioflux.algorithms")}
        assert not up, f"{low} imports {sorted(up)}"


def test_algorithms_hold_one_package_per_algorithm_and_the_shared_one():
    from bioflux.algorithms import ALGORITHMS

    flat = {p.name for p in ALGORITHMS_DIR.glob("*.py")}
    assert flat == ALGORITHMS_FLAT
    packages = {p.name for p in ALGORITHMS_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALGORITHMS) | {SHARED}
    stray = {p.name for p in ALGORITHMS_DIR.iterdir() if p.is_dir()} - packages - {"__pycache__"}
    assert not stray
    configs = PACKAGE / "configs"
    for name, module in ALGORITHMS.items():
        # one word everywhere: registry key, package, configs/<name>.yaml
        assert module == f"bioflux.algorithms.{name}"
        assert (configs / f"{name}.yaml").is_file(), name


def _algorithm_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["bioflux", "algorithms"] else None


def test_nothing_outside_an_algorithm_imports_its_internals():
    """Outside ``bioflux.algorithms``, code sees the registry, the contract (``common``) and a
    package's face (its ``__init__``); an algorithm's modules are its own. Inside, algorithm
    packages (and the contract) may use ``shared``, never each other's modules."""
    graph = import_graph()
    bad = []
    for source, targets in graph.items():
        own = _algorithm_package(source)
        for target in targets:
            pkg = _algorithm_package(target)
            if pkg is None or pkg == "common" or target == f"bioflux.algorithms.{pkg}":
                continue  # not an algorithm module, the contract, or a package's face
            if pkg == own or (pkg == SHARED and own is not None):
                continue
            bad.append(f"{source} -> {target}")
    assert not bad, bad


def test_every_plugin_states_how_it_trains():
    from bioflux.algorithms import ALGORITHMS, get_algorithm
    from bioflux.algorithms.common import RLlibPlugin, SelfTrainingPlugin

    kinds = {name: type(get_algorithm(name)) for name in ALGORITHMS}
    assert kinds == {
        "ppo": RLlibPlugin,
        "epsilon_greedy": RLlibPlugin,
        "maddpg": RLlibPlugin,
        "lotka_volterra": SelfTrainingPlugin,
    }
    for name in ALGORITHMS:
        plugin = get_algorithm(name)
        assert plugin.trains_through_rllib == isinstance(plugin, RLlibPlugin)


def test_moved_module_paths_still_import():
    """``bioflux.algorithms.MOVED``: every flat path of before the one-package-per-algorithm
    layout imports and holds the names of the modules that replaced it."""
    import importlib

    from bioflux.algorithms import MOVED

    for old, targets in MOVED.items():
        assert not (PACKAGE.parent / (old.replace(".", "/") + ".py")).exists(), old
        module = importlib.import_module(old)
        for target in targets:
            new = importlib.import_module(target)
            public = {k for k in vars(new) if not k.startswith("_")}
            assert public <= set(vars(module)), (old, target)


#: Class paths that RLlib checkpoints written before the move pickle (module specs, learner,
#: config, EnvRunner, callback and replay classes) → where the class lives now.
CHECKPOINT_CLASS_PATHS = {
    "bioflux.algorithms.ppo_learner.PerModuleEpochsPPOTorchLearner": "ppo.learner",
    "bioflux.algorithms.bf16_learner.BF16PPOTorchLearner": "ppo.bf16_learner",
    "bioflux.algorithms.agent_row_ppo_config.AgentRowMinibatchPPOConfig": "ppo.algorithm",
    "bioflux.algorithms.columnar_ppo.ColumnarPPOConfig": "ppo.algorithm",
    "bioflux.algorithms.columnar_ppo.ColumnarPPO": "ppo.algorithm",
    "bioflux.algorithms.columnar_env_runner.ColumnarEnvRunner": "ppo.env_runner",
    "bioflux.algorithms.batched_env_runner.BatchedCoreEnvRunner": "shared.batched_env_runner",
    "bioflux.algorithms.callbacks.EpisodeStatsCallback": "shared.callbacks",
    "bioflux.algorithms.columnar_dqn.ColumnarDQNConfig": "epsilon_greedy.algorithm",
    "bioflux.algorithms.columnar_dqn.ColumnarDQN": "epsilon_greedy.algorithm",
    "bioflux.algorithms.transition_env_runner.TransitionEnvRunner": "epsilon_greedy.env_runner",
    "bioflux.algorithms.epsilon_greedy.EpsilonGreedyQModule": "epsilon_greedy.modules",
    "bioflux.algorithms.epsilon_greedy.SeededMultiAgentEpisodeReplayBuffer": (
        "epsilon_greedy.replay"
    ),
    "bioflux.algorithms.lotka_volterra.LotkaVolterraModule": (
        "bioflux.policy_modules.lotka_volterra"
    ),
}


def test_classes_pickled_by_their_old_paths_still_load():
    """A checkpoint pickles a class as a global (module path and name): the old paths must
    unpickle to the very classes that live in the new modules."""
    import importlib
    import pickle

    for path, home in CHECKPOINT_CLASS_PATHS.items():
        module, name = path.rsplit(".", 1)
        loaded = pickle.loads(f"c{module}\n{name}\n.".encode())  # protocol 0: GLOBAL
        home = home if home.startswith("bioflux.") else f"bioflux.algorithms.{home}"
        assert loaded is getattr(importlib.import_module(home), name), path


def test_artifacts_is_the_disk_layout_only():
    """Ray's set-up (``ray_session``) and learning curves (``learning_curves``) live elsewhere;
    their old names still resolve from ``artifacts`` (lazily, without an import edge)."""
    import bioflux.artifacts as artifacts
    import bioflux.learning_curves
    import bioflux.ray_session

    assert import_graph()["bioflux.artifacts"] <= {"bioflux.envs", "bioflux.envs.config"}
    source = (PACKAGE / "artifacts.py").read_text()
    assert "matplotlib" not in source and "import ray" not in source
    assert artifacts.init_ray is bioflux.ray_session.init_ray
    assert artifacts.plot_learning_curves is bioflux.learning_curves.plot_learning_curves


def test_the_cli_owns_no_ray_lifecycle():
    """``bioflux serve``'s Ray start, deployment and shutdown live in ``serve.ingress``."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    calls = {
        f"{n.func.value.id}.{n.func.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
    }
    assert not calls & {"ray.init", "ray.shutdown", "serve.run", "serve.delete", "serve.start"}


def test_moved_serve_and_ecology_names_still_import():
    from bioflux.ecology import analysis, cycles, fit, plots, series
    from bioflux.serve import app, inference, ingress, observations, schemas

    assert app.start is ingress.start and app.SERVE_APP_NAME == ingress.SERVE_APP_NAME
    assert app.PredictRequest is schemas.PredictRequest
    assert inference.validate_state is observations.validate_state
    assert inference.ObservationError is observations.ObservationError
    assert analysis.fit_lotka_volterra is fit.fit_lotka_volterra
    assert analysis.cycle_statistics is cycles.cycle_statistics
    assert analysis.plot_analysis is plots.plot_analysis
    assert analysis.PopulationSeries is series.PopulationSeries
    assert analysis.REFERENCE_ALIASES is series.REFERENCE_ALIASES
