"""The ``bioflux`` command line: parses arguments and calls the library. No logic lives here.

Bad input (an out-of-range number, a missing file, an unreachable Ray cluster) ends with one line
``bioflux: error: ...`` on stderr and exit status 2, like argparse's own usage errors: commands
raise ``ValueError`` and ``main`` reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bioflux.serve import settings as serve_settings

DESCRIPTION = (
    "BioFlux: train, evaluate, serve and study predator and prey agents that learn in a shared "
    "grid world (multi-agent reinforcement learning with Ray RLlib)."
)
EPILOG = "Run 'bioflux COMMAND --help' for the options of a command."
#: Built-in policies (``bioflux.policies.BUILTINS``), named in the --predator/--prey help.
BUILTIN_POLICIES = ("random", "lotka_volterra")


#: Ray log messages that say nothing actionable on every run: (logger, text in the message).
#: Filtered in the CLI's own process (EnvRunner processes still print the deprecation one).
def _quiet_benign_ray_logs() -> None:
    from bioflux.ray_session import quiet_benign_ray_logs

    quiet_benign_ray_logs()


def _require_at_least(option: str, value: int | None, low: int) -> None:
    """``ValueError`` unless ``value`` (``None``: not given) is at least ``low``."""
    if value is not None and value < low:
        raise ValueError(f"{option} {value} is out of range; allowed: >= {low}")


def _ray_address(address: str | None) -> tuple[str | None, str]:
    """The Ray address in use and where it came from (``--address`` or ``$RAY_ADDRESS``)."""
    if address:
        return address, "--address"
    return os.environ.get("RAY_ADDRESS") or None, "$RAY_ADDRESS"


def _check_ray_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast when a ``host:port`` (or ``ray://host:port``) Ray address does not answer.

    ``ray.init`` would otherwise retry for a minute or more, logging from C++, before raising.
    Other forms (``auto``, ``local``, no address) are left to Ray.
    """
    import socket

    address, source = _ray_address(address)
    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if "://" in target or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s).close()
    except (OSError, OverflowError) as err:
        why = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise ValueError(
            f"cannot reach the Ray cluster at {address} ({source}): {why}; start it "
            "(ray start --head) or fix the address"
        ) from None


def _ray_connection_error(err: ConnectionError, address: str | None) -> ValueError | None:
    """A one-line error when ``err`` means Ray could not connect (Ray is not initialised)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return None  # a failure during the run, not a connection problem: keep the traceback
    address, source = _ray_address(address)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = f"at {address} ({source})" if address else "(local)"
    return ValueError(f"cannot connect to the Ray cluster {where}: {first}")


def _require_free_port(host: str, port: int) -> None:
    """Fail with one line, before anything claims to serve, when ``host:port`` is taken
    (uvicorn would print the URL first, then "address already in use" and exit 3)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as err:
            raise ValueError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; another program uses "
                "the port: choose another with --port"
            ) from None


def _experiment_for_policies(
    args: argparse.Namespace, default: str, env_updates: dict | None = None
):
    """The experiment a command plays ``--predator``/``--prey`` in: ``--config`` if given, else
    the world a trained policy was trained in (``bioflux.config.load_for_policies``); the
    choice is reported on stderr."""
    from bioflux import config

    exp, note = config.load_for_policies(
        args.config,
        args.set,
        {"predator": args.predator, "prey": args.prey},
        default=default,
        env_updates=env_updates,
    )
    if note:
        print(f"bioflux: {note}", file=sys.stderr, flush=True)
    return exp


def _policies(args: argparse.Namespace, exp) -> tuple:
    """``--predator``/``--prey`` as given, or, with ``--models``, the policies ``bioflux serve``
    would answer those names with (ensembles, ``ppo@<run>``, built-ins). The built-in
    ``lotka_volterra`` takes the coefficients of the experiment's ``lotka_volterra`` section."""
    if getattr(args, "models", None) is None:
        from bioflux.policies import lotka_volterra_policy

        coefficients = exp.lotka_volterra or {}
        return tuple(
            lotka_volterra_policy(species, **coefficients[species])
            if spec == "lotka_volterra" and species in coefficients
            else spec
            for spec, species in ((args.predator, "predator"), (args.prey, "prey"))
        )
    from bioflux.serve.inference import served_policy

    return (
        served_policy(args.models, args.predator, "predator"),
        served_policy(args.models, args.prey, "prey"),
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help, unless the default is empty (None, False, [])
    or the help already describes it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if (
            action.default is None
            or action.default is False
            or action.default == []
            or "(default" in help_text
        ):
            return action.help
        return super()._get_help_string(action)


def _packaged_configs() -> str:
    from importlib import resources

    files = resources.files("bioflux.configs").iterdir()
    return ", ".join(sorted(Path(f.name).stem for f in files if f.name.endswith(".yaml")))


def served_models_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="look --predator/--prey up as served names in this models folder, as `bioflux "
        "serve` would: an ensemble of its ensembles.yaml (e.g. mix), ppo, ppo@<run>, random",
    )


def _command(parent: argparse._SubParsersAction, name: str, help_text: str):
    return parent.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        formatter_class=_HelpFormatter,
    )


#: Help of --predator/--prey (``{}``: the species).
POLICY_HELP = (
    "{} policy: a built-in ("
    + ", ".join(BUILTIN_POLICIES)
    + ") or the path of a run folder, checkpoint or exported model"
)


def _config_args(
    p: argparse.ArgumentParser,
    default: str | None = "demo",
    example: str = "env.n_prey=50",
    model_world: str = "",
) -> None:
    """``--config`` and ``--set``. ``model_world``: the option defaults to the world of a
    trained --predator/--prey (``bioflux.config.load_for_policies``), described so."""
    packaged = _packaged_configs()
    if model_world:
        p.add_argument(
            "--config",
            default=None,
            help=f"experiment YAML: a path, or a packaged name ({packaged}) (default: the "
            f"env a trained --predator/--prey model was trained in{model_world}, with the "
            f"other sections of {default}; with built-in policies only: {default})",
        )
    else:
        p.add_argument(
            "--config",
            default=default,
            required=default is None,
            help=f"experiment YAML: a path, or a packaged name ({packaged})",
        )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value (repeatable; the value is YAML), e.g. --set {example}",
    )


def _policy_args(p: argparse.ArgumentParser, default: str | None) -> None:
    for species in ("predator", "prey"):
        p.add_argument(
            f"--{species}",
            default=default,
            required=default is None,
            help=POLICY_HELP.format(species),
        )


def _train_parser(sub: argparse._SubParsersAction) -> None:
    train = _command(sub, "train", "train an experiment config")
    _config_args(train, default=None, example="training.lr=1e-3")
    train.add_argument(
        "--output", type=Path, default=Path("runs"), help="folder of the run folders"
    )
    train.add_argument(
        "--models", type=Path, default=Path("models"), help="folder the trained models go to"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its newest checkpoint up to the stop criteria given now "
        "(the config must be the run's own config.yaml; only stop, and a curriculum stage's "
        "stop, may change; a curriculum continues the stage that was running)",
    )
    train.add_argument(
        "--address",
        default=None,
        help="Ray cluster address, e.g. 10.0.0.5:6379 (default: $RAY_ADDRESS, else a local Ray)",
    )
    train.add_argument(
        "--num-env-runners",
        type=int,
        default=None,
        help="Ray workers that sample, 0 = the driver (default: the config's "
        "resources.num_env_runners)",
    )
    train.add_argument(
        "--init-from",
        action="append",
        default=[],
        metavar="[SPECIES=]PATH",
        help="start the modules from a trained model (an exported model, run folder or "
        "checkpoint): PATH for every species, or species=PATH (repeatable); the same as "
        "--set training.init_from=...",
    )
    train.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from bioflux import config, training

    _require_at_least("--num-env-runners", args.num_env_runners, 0)
    if args.init_from:  # a --set, so the resume command Ctrl-C prints carries it too
        from bioflux.transfer import parse_init_from

        args.set = [*args.set, f"training.init_from={json.dumps(parse_init_from(args.init_from))}"]
    exp = config.load(args.config, args.set)  # validated before Ray starts
    _check_ray_reachable(args.address)
    try:
        summary = training.train(
            exp,
            output=args.output,
            models=args.models,
            resume=args.resume,
            address=args.address,
            num_env_runners=args.num_env_runners,
        )
    except ConnectionError as err:
        raise (_ray_connection_error(err, args.address) or err) from None
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, and how to continue
        print(f"bioflux: {training.interrupted(args, exp.name)}", file=sys.stderr, flush=True)
        return 130
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("run_dir", "iterations", "env_steps", "models", "learning_curves")
            },
            indent=2,
        )
    )
    return 0


def _study_parser(sub: argparse._SubParsersAction) -> None:
    study = _command(
        sub,
        "study",
        "train every approach of a study config on one world (Ray Tune trials), evaluate "
        "them against random opponents and in cross-play, and write the comparison report",
    )
    study.add_argument(
        "--config",
        default="study_demo",
        help="study config: a file or a packaged name (study_demo, study)",
    )
    study.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study value, e.g. budget.env_steps=20000",
    )
    study.add_argument(
        "--seeds", type=int, default=None, help="train seeds 0..K-1 (default: the config's seeds)"
    )
    study.add_argument(
        "--output",
        type=Path,
        default=Path("outputs/studies"),
        help="folder of the study folders (the study goes to <output>/<name>/)",
    )
    study.add_argument(
        "--resume", action="store_true", help="continue a study, skipping its finished trials"
    )
    study.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)",
    )
    study.add_argument(
        "--plan",
        action="store_true",
        help="do not run the study: time a short trial of every approach here and print the "
        "estimated time per trial, for cross-play and in total, and the peak memory per trial",
    )
    study.add_argument(
        "--plan-iterations",
        type=int,
        default=3,
        help="training iterations each approach's plan trial times (>= 2)",
    )
    study.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    from bioflux.study import load_study, run_study

    overrides = list(args.set)
    if args.seeds is not None:
        _require_at_least("--seeds", args.seeds, 1)
        overrides.append(f"seeds={list(range(args.seeds))}")
    study = load_study(args.config, overrides)  # every approach validated before Ray starts
    _check_ray_reachable(args.address)
    if args.plan:
        from bioflux.study.plan import plan_study, plan_table

        _require_at_least("--plan-iterations", args.plan_iterations, 2)
        plan = plan_study(study, iterations=args.plan_iterations, address=args.address)
        print(plan_table(plan))
        print(json.dumps(plan, indent=2))
        return 0
    doc = run_study(study, output=args.output, resume=args.resume, address=args.address)
    failed = doc.get("failed_trials", [])
    out = {"ranking": doc["ranking"], "files": doc["files"]}
    print(json.dumps({**out, "failed_trials": failed} if failed else out, indent=2))
    return 1 if failed else 0  # incomplete: `--resume` retries the failed trials


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    ev = _command(sub, "evaluate", "play any predator policy against any prey policy")
    _policy_args(ev, default=None)
    ev.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="episodes to play, >= 1 (default: the config's evaluation.episodes)",
    )
    ev.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first episode (default: the config's evaluation.seed)",
    )
    ev.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    served_models_arg(ev)
    ev.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder of the report (default: outputs/evaluation); without --out, when that "
        "holds an earlier report, the next free outputs/evaluation_<n>",
    )
    _config_args(ev, model_world=" (the predator's when both are)")
    ev.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bioflux import evaluation

    _require_at_least("--episodes", args.episodes, 1)
    exp = _experiment_for_policies(args, default="demo")
    predator, prey = _policies(args, exp)
    result = evaluation.evaluate(
        predator,
        prey,
        exp.env_config,
        episodes=exp.evaluation.episodes if args.episodes is None else args.episodes,
        seed=exp.evaluation.seed if args.seed is None else args.seed,
        greedy=args.greedy,
        progress=True,
    )
    out, note = evaluation.report_folder(args.out)
    print(f"bioflux: {note}", file=sys.stderr, flush=True)
    files = evaluation.write_report([result], out)
    print(evaluation.markdown_table(result))
    print(json.dumps(files, indent=2))
    return 0


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = _command(sub, "demo", "train the demo config, evaluate it and render an episode")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/demo"),
        help="folder of everything the demo writes (runs, models, report, episode GIF)",
    )
    demo.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the demo config (repeatable), e.g. --set stop.iterations=5",
    )
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bioflux.demo import run_demo

    run_demo(args.out, args.set)
    return 0


def _render_parser(sub: argparse._SubParsersAction) -> None:
    render = _command(sub, "render", "record one episode as a GIF or PNG strip")
    _policy_args(render, default="random")
    render.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/episode.gif"),
        help="file to write: .gif (animation) or .png (strip of frames)",
    )
    render.add_argument("--seed", type=int, default=0, help="seed of the episode")
    _config_args(render, model_world=" (the predator's when both are)")
    served_models_arg(render)
    render.set_defaults(func=_cmd_render)


def _cmd_render(args: argparse.Namespace) -> int:
    from bioflux import evaluation
    from bioflux.policies import load_policy

    exp = _experiment_for_policies(args, default="demo")
    predator, prey = _policies(args, exp)
    out = evaluation.record_episode(
        load_policy(predator, "predator") if isinstance(predator, str) else predator,
        load_policy(prey, "prey") if isinstance(prey, str) else prey,
        exp.env_config,
        args.out,
        seed=args.seed,
    )
    print(json.dumps(out, indent=2))
    return 0


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    srv = _command(sub, "serve", "serve trained policies over HTTP (Ray Serve)")
    srv.add_argument(
        "--models",
        default=serve_settings.MODELS_DIR,
        help="folder of exported models (bioflux train --models), or a URI: file:///abs/path "
        "or s3://bucket/prefix, mirrored into a local cache ($BIOFLUX_MODELS_CACHE, default "
        "~/.cache/bioflux/models; S3 credentials and endpoint from AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL)",
    )
    srv.add_argument("--host", default=serve_settings.HOST, help="address to listen on")
    srv.add_argument("--port", type=int, default=serve_settings.PORT, help="HTTP port")
    srv.add_argument(
        "--max-batch-size",
        type=int,
        default=serve_settings.MAX_BATCH_SIZE,
        help="most concurrent requests sharing one forward pass",
    )
    srv.add_argument(
        "--batch-wait-timeout-s",
        type=float,
        default=serve_settings.BATCH_WAIT_TIMEOUT_S,
        help="how long a batch waits for more requests",
    )
    srv.add_argument("--replicas", type=int, default=1, help="Serve replicas of the app")
    srv.add_argument(
        "--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)"
    )
    srv.add_argument(
        "--direct-ingress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the replica answers on --port itself, without Serve's proxy hop (Ray Serve's "
        "direct ingress, p50 ~1 ms). Default: on with a local Ray and 1 replica; off (Serve's "
        "proxy) on a cluster (--address / $RAY_ADDRESS) or with several replicas",
    )
    srv.add_argument(
        "--haproxy",
        action="store_true",
        help="serve HTTP through Ray Serve's HAProxy ingress (experimental in Ray 2.60), which "
        "replays a request whose replica died on another replica: with --replicas 2 or more a "
        "killed replica loses no request. Local Ray only; its stats page binds *:8404",
    )
    srv.add_argument(
        "--admin-token",
        default=None,
        help="bearer token for POST /v1/models/{name}/load and DELETE /v1/models/{name} "
        "(default: $BIOFLUX_ADMIN_TOKEN, safer: a flag shows in `ps`; without one those "
        "endpoints answer 403)",
    )
    srv.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from bioflux.serve.ingress import serve_until_stopped
    from bioflux.serve.storage import check_source, is_uri

    if is_uri(args.models):  # mirrored by each replica; checked here to fail before Ray starts
        check_source(args.models)
    elif not Path(args.models).is_dir():
        raise ValueError(f"--models {args.models} is not a directory")
    _check_ray_reachable(args.address)
    if not (args.address or os.environ.get("RAY_ADDRESS")):  # a local port: check it first
        _require_free_port(args.host, args.port)
    serve_until_stopped(
        args.models,
        address=args.address,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        direct_ingress=args.direct_ingress,
        haproxy=args.haproxy,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_timeout_s,
        admin_token=args.admin_token,
    )
    return 0


def _view_parser(sub: argparse._SubParsersAction) -> None:
    view = _command(sub, "view", "watch an episode live in the browser (no Ray Serve)")
    view.add_argument(
        "--models",
        type=Path,
        default=Path(serve_settings.MODELS_DIR),
        help="folder of exported models (built-in policies are always offered)",
    )
    view.add_argument("--host", default=serve_settings.HOST, help="address to listen on")
    view.add_argument("--port", type=int, default=serve_settings.VIEW_PORT, help="HTTP port")
    view.set_defaults(func=_cmd_view)


def _cmd_view(args: argparse.Namespace) -> int:
    from bioflux.serve.live_routes import run_view

    if not Path(args.models).is_dir():
        raise ValueError(f"--models {args.models} is not a directory")
    _require_free_port(args.host, args.port)
    print(
        f"live view of {args.models} on http://{args.host}:{args.port}/ ; Ctrl-C stops", flush=True
    )
    run_view(args.models, host=args.host, port=args.port)
    return 0


def _simulate_parser(sub: argparse._SubParsersAction) -> None:
    simulate = _command(sub, "simulate", "long ecology-mode episodes: population series per seed")
    _policy_args(simulate, default="lotka_volterra")
    simulate.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per episode, >= 1 (default: the config's env.max_steps)",
    )
    simulate.add_argument(
        "--seeds", type=int, default=1, help="number of seeds, >= 1 (config seed, seed+1, ...)"
    )
    simulate.add_argument("--greedy", action="store_true", help="argmax actions")
    simulate.add_argument(
        "--out", type=Path, default=Path("outputs/simulate"), help="folder of the series"
    )
    _config_args(
        simulate, default="ecology", model_world=" (the predator's when both are), in ecology mode"
    )
    served_models_arg(simulate)
    simulate.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bioflux.ecology.simulate import simulate

    _require_at_least("--steps", args.steps, 1)
    _require_at_least("--seeds", args.seeds, 1)
    exp = _experiment_for_policies(args, default="ecology", env_updates={"ecology": True})
    predator, prey = _policies(args, exp)
    result = simulate(
        exp.env_config,
        predator,
        prey,
        steps=exp.env_config.max_steps if args.steps is None else args.steps,
        seeds=range(exp.seed, exp.seed + args.seeds),
        out_dir=args.out,
        greedy=args.greedy,
        progress=True,
    )
    print(json.dumps({k: result[k] for k in ("per_seed", "survived", "files")}, indent=2))
    return 0


def _ecology_parser(sub: argparse._SubParsersAction) -> None:
    ecology = _command(sub, "ecology", "population-cycle analysis")
    eco_sub = ecology.add_subparsers(dest="ecology_command", required=True, metavar="COMMAND")
    analyze = _command(
        eco_sub, "analyze", "LV fit, cycle statistics and plots of a series (or a simulate folder)"
    )
    analyze.add_argument(
        "series", type=Path, help="a series CSV, or a simulate --out folder (mean over seeds)"
    )
    analyze.add_argument(
        "--reference",
        default=None,
        help="series to compare with: lynx_hare (the packaged Hudson's Bay data) or a CSV file",
    )
    analyze.add_argument(
        "--out", type=Path, default=None, help="output folder (default: next to the series)"
    )
    analyze.set_defaults(func=_cmd_ecology_analyze)
    cal = _command(
        eco_sub,
        "calibrate",
        "fit the ecology world's rules to a reference's cycles (Ray Tune + Optuna)",
    )
    cal.add_argument(
        "--reference", required=True, help="the data to fit: lynx_hare (Hudson's Bay records)"
    )
    cal.add_argument(
        "--config", default="ecology", help="the world to calibrate (its size, observation)"
    )
    cal.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of --config before the search starts from it (repeatable; the "
        "value is YAML), e.g. --set lotka_volterra.prey.beta=1.2",
    )
    cal.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="TERM=W",
        help="weigh one term of the objective (repeatable; 1 by default): lag, amplitude, "
        "shape_prey, shape_predator, regularity or cycles, e.g. --weight lag=3",
    )
    cal.add_argument("--trials", type=int, default=40, help="trials of the search")
    cal.add_argument("--seeds-per-trial", type=int, default=3, help="seeds each trial plays")
    cal.add_argument("--steps", type=int, default=1500, help="steps per seed")
    cal.add_argument("--burn-in", type=int, default=300, help="first steps left out")
    cal.add_argument("--scale", type=float, default=1.0, help="world side relative to --config's")
    cal.add_argument(
        "--validate-seeds", type=int, default=10, help="fresh seeds the best trial is checked on"
    )
    cal.add_argument(
        "--validate-steps",
        type=int,
        default=None,
        help="steps per validation seed (default: --steps)",
    )
    cal.add_argument("--max-concurrent", type=int, default=2, help="trials at once (1 CPU each)")
    cal.add_argument(
        "--rerank",
        type=int,
        default=5,
        help="replay this many of the best trials on fresh seeds and validate the best of "
        "them (0 or 1: the lowest search loss)",
    )
    cal.add_argument(
        "--rerank-seeds", type=int, default=6, help="seeds each re-ranked trial is replayed on"
    )
    cal.add_argument(
        "--choose-by",
        choices=("loss", "lag"),
        default="loss",
        help="how the replay picks the trial to validate: the lowest replay loss, or the most "
        "replay seeds with the lag within 0.03 of the data's (then the lowest loss)",
    )
    cal.add_argument(
        "--years",
        default=None,
        help="fit only these years START:END; the rest of the record is the held-out check",
    )
    cal.add_argument(
        "--narrow",
        type=float,
        default=None,
        help="search around --config's own values: each range cut to [v / F, v × F] (a local "
        "refinement of a calibrated config; default: the whole space)",
    )
    cal.add_argument("--seed", type=int, default=0, help="the searcher's seed")
    cal.add_argument("--out", type=Path, default=Path("outputs/calibrate"), help="output folder")
    cal.add_argument(
        "--resume", action="store_true", help="continue the calibration in --out (trials.jsonl)"
    )
    cal.set_defaults(func=_cmd_ecology_calibrate)


def _cmd_ecology_analyze(args: argparse.Namespace) -> int:
    from bioflux.ecology.analysis import REFERENCE_ALIASES, analyze
    from bioflux.ecology.simulate import load_for_analysis

    ref = args.reference
    if ref is not None and ref.lower() not in REFERENCE_ALIASES and not Path(ref).is_file():
        raise ValueError(
            f"--reference {ref} is neither a packaged reference ({', '.join(REFERENCE_ALIASES)}) "
            "nor an existing CSV file"
        )
    series, source = load_for_analysis(args.series)
    out = args.out if args.out is not None else source["default_out"]
    result = analyze(series, reference=args.reference, out_dir=out)
    result["source"] = {k: v for k, v in source.items() if k != "default_out"}
    print(json.dumps(result, indent=2))
    return 0


def _weights(items: list[str]) -> dict[str, float]:
    """``--weight TERM=W`` items as a dict (a malformed one: ``ValueError`` in one line)."""
    out = {}
    for item in items:
        term, sep, raw = item.partition("=")
        try:
            out[term.strip()] = float(raw)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--weight {item!r}: expected TERM=NUMBER, e.g. lag=3")
    return out


def _cmd_ecology_calibrate(args: argparse.Namespace) -> int:
    from bioflux.ecology.calibrate import CalibrationIncomplete, calibrate, reference_series

    reference_series(args.reference, args.years)  # a bad --reference fails before anything runs
    try:
        doc = calibrate(
            reference=args.reference,
            config=args.config,
            overrides=args.set,
            out_dir=args.out,
            trials=args.trials,
            seeds_per_trial=args.seeds_per_trial,
            steps=args.steps,
            burn_in=args.burn_in,
            scale=args.scale,
            validate_seeds=args.validate_seeds,
            validate_steps=args.validate_steps,
            max_concurrent=args.max_concurrent,
            years=args.years,
            seed=args.seed,
            resume=args.resume,
            rerank=args.rerank,
            rerank_seeds=args.rerank_seeds,
            choose_by=args.choose_by,
            narrow=args.narrow,
            weights=_weights(args.weight),
            log=lambda line: print(line, flush=True),
        )
    except CalibrationIncomplete as err:
        print(f"bioflux: calibration incomplete: {err}", file=sys.stderr)
        return 1
    val = doc["validation"]
    print(
        json.dumps(
            {
                "wall_s": doc["wall_s"],
                "search": doc["search"],
                "proof": val["proof"],
                "pooled_mean_cycle_shape": val["pooled_mean_cycle_shape"],
                "files": doc["files"],
            },
            indent=2,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``bioflux`` parser: each command's options are built beside the command
    (``_<command>_parser``), in the order ``bioflux --help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="bioflux", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _train_parser,
        _evaluate_parser,
        _demo_parser,
        _serve_parser,
        _view_parser,
        _render_parser,
        _simulate_parser,
        _ecology_parser,
        _study_parser,
    ):
        add(sub)
    return parser


#: Commands whose process only runs inference (the study's driver evaluates; its trials are
#: Ray actors with threads of their own): one torch thread each (``bioflux.threads``).
INFERENCE_COMMANDS = ("evaluate", "render", "simulate", "view", "study")

#: Commands whose result a seed must determine (they train).
SEEDED_COMMANDS = ("train", "study")


def _run_again_with_a_fixed_hash_seed() -> None:
    """Re-run this command with ``ray_session.TRAINING_HASH_SEED`` as ``PYTHONHASHSEED`` when it
    trains and the variable is unset (a value the user set is kept).

    RLlib orders agents by iterating sets of agent IDs, so with Python's per-process random
    string-hash seed two runs of one config and seed were different runs (RLlib's DQN learner
    batches agents in that order in this process). Ray workers get the same seed
    (``ray_session.init_ray``)."""
    if os.environ.get("PYTHONHASHSEED") is None and sys.argv[1:2] in [[c] for c in SEEDED_COMMANDS]:
        from bioflux.ray_session import TRAINING_HASH_SEED

        os.environ["PYTHONHASHSEED"] = TRAINING_HASH_SEED
        os.execv(sys.executable, [sys.executable, "-m", "bioflux", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `bioflux` command itself, not a caller passing arguments
        _run_again_with_a_fixed_hash_seed()
    args = build_parser().parse_args(argv)
    _quiet_benign_ray_logs()
    if args.command in INFERENCE_COMMANDS:  # small-MLP inference: bioflux/threads.py
        from bioflux.threads import use_inference_threads

        use_inference_threads()
    try:
        return args.func(args)
    except ValueError as err:  # bad input: a clear message, no traceback
        print(f"bioflux: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
