"""The ``bioflux`` command line: parses arguments and calls the library. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from bioflux import config, training

    exp = config.load(args.config, args.set)  # validated before Ray starts
    summary = training.train(
        exp,
        output=args.output,
        models=args.models,
        resume=args.resume,
        address=args.address,
        num_env_runners=args.num_env_runners,
    )
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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bioflux import config, evaluation

    exp = config.load(args.config, args.set)
    result = evaluation.evaluate(
        args.predator,
        args.prey,
        exp.env_config,
        episodes=args.episodes or exp.evaluation.episodes,
        seed=exp.evaluation.seed if args.seed is None else args.seed,
        greedy=args.greedy,
        progress=True,
    )
    files = evaluation.write_report([result], args.out)
    print(evaluation.markdown_table(result))
    print(json.dumps(files, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bioflux.demo import run_demo

    run_demo(args.out, args.set)
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from bioflux import config, evaluation
    from bioflux.policies import load_policy

    exp = config.load(args.config, args.set)
    out = evaluation.record_episode(
        load_policy(args.predator, "predator"),
        load_policy(args.prey, "prey"),
        exp.env_config,
        args.out,
        seed=args.seed,
    )
    print(json.dumps(out, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    import ray
    from ray import serve

    from bioflux.serve.app import start

    if not Path(args.models).is_dir():
        raise ValueError(f"--models {args.models} is not a directory")
    port = args.port
    if args.direct_ingress:
        if args.address or args.replicas != 1:
            raise ValueError("--direct-ingress needs a local Ray (no --address) and 1 replica")
        from bioflux.serve.app import enable_direct_ingress

        port = enable_direct_ingress(args.port)
    ray.init(address=args.address, include_dashboard=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        start(
            args.models,
            host=args.host,
            port=port,
            max_batch_size=args.max_batch_size,
            batch_wait_timeout_s=args.batch_wait_timeout_s,
            num_replicas=args.replicas,
        )
        print(
            f"serving {args.models} on http://{args.host}:{args.port} (docs: /docs); Ctrl-C stops",
            flush=True,
        )
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bioflux import config
    from bioflux.ecology.simulate import simulate

    exp = config.load(args.config, args.set)
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} is out of range; allowed: >= 1")
    result = simulate(
        exp.env_config,
        args.predator,
        args.prey,
        steps=args.steps or exp.env_config.max_steps,
        seeds=range(exp.seed, exp.seed + args.seeds),
        out_dir=args.out,
        greedy=args.greedy,
        progress=True,
    )
    print(json.dumps({k: result[k] for k in ("per_seed", "survived", "files")}, indent=2))
    return 0


def _cmd_ecology_analyze(args: argparse.Namespace) -> int:
    from bioflux.ecology.analysis import analyze
    from bioflux.ecology.simulate import load_for_analysis

    series, source = load_for_analysis(args.series)
    out = args.out if args.out is not None else source["default_out"]
    result = analyze(series, reference=args.reference, out_dir=out)
    result["source"] = {k: v for k, v in source.items() if k != "default_out"}
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioflux", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def config_args(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
        p.add_argument(
            "--config",
            default=default,
            required=default is None,
            help="experiment YAML (a path, or a packaged name: demo, ppo, ...)",
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value, e.g. --set training.lr=1e-3",
        )

    train = sub.add_parser("train", help="train an experiment config")
    config_args(train, default=None)
    train.add_argument("--output", type=Path, default=Path("runs"), help="runs folder")
    train.add_argument("--models", type=Path, default=Path("models"), help="export folder")
    train.add_argument(
        "--resume", action="store_true", help="continue the run from its last checkpoint"
    )
    train.add_argument(
        "--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)"
    )
    train.add_argument("--num-env-runners", type=int, default=None)
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="any predator policy against any prey policy")
    ev.add_argument("--predator", required=True, help="'random' or a checkpoint/model path")
    ev.add_argument("--prey", required=True, help="'random' or a checkpoint/model path")
    ev.add_argument("--episodes", type=int, default=None)
    ev.add_argument("--seed", type=int, default=None)
    ev.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    ev.add_argument("--out", type=Path, default=Path("outputs/evaluation"))
    config_args(ev)
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="train the demo config, evaluate it, render an episode")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.set_defaults(func=_cmd_demo)

    srv = sub.add_parser("serve", help="serve trained policies over HTTP (Ray Serve)")
    srv.add_argument("--models", type=Path, default=Path("models"))
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max-batch-size", type=int, default=32)
    srv.add_argument("--batch-wait-timeout-s", type=float, default=0.002)
    srv.add_argument("--replicas", type=int, default=1)
    srv.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    srv.add_argument(
        "--direct-ingress",
        action="store_true",
        help="the replica answers on --port itself, without Serve's proxy hop "
        "(Ray Serve's experimental direct ingress; local Ray, 1 replica)",
    )
    srv.set_defaults(func=_cmd_serve)

    render = sub.add_parser("render", help="record one episode as a GIF or PNG strip")
    render.add_argument("--predator", default="random")
    render.add_argument("--prey", default="random")
    render.add_argument("--out", type=Path, default=Path("outputs/episode.gif"))
    render.add_argument("--seed", type=int, default=0)
    config_args(render)
    render.set_defaults(func=_cmd_render)

    simulate = sub.add_parser(
        "simulate", help="long ecology-mode episodes: population series per seed"
    )
    simulate.add_argument("--predator", default="lotka_volterra", help="built-in name or path")
    simulate.add_argument("--prey", default="lotka_volterra", help="built-in name or path")
    simulate.add_argument(
        "--steps", type=int, default=None, help="steps per episode (default: env.max_steps)"
    )
    simulate.add_argument(
        "--seeds", type=int, default=1, help="number of seeds (config seed, seed+1, ...)"
    )
    simulate.add_argument("--greedy", action="store_true", help="argmax actions")
    simulate.add_argument("--out", type=Path, default=Path("outputs/simulate"))
    config_args(simulate, default="ecology")
    simulate.set_defaults(func=_cmd_simulate)

    ecology = sub.add_parser("ecology", help="population-cycle analysis")
    eco_sub = ecology.add_subparsers(dest="ecology_command", required=True)
    analyze = eco_sub.add_parser(
        "analyze", help="LV fit, cycle statistics and plots of a series (or a simulate folder)"
    )
    analyze.add_argument(
        "series", type=Path, help="a series CSV, or a simulate --out folder (mean over seeds)"
    )
    analyze.add_argument("--reference", default=None, help="'lynx_hare' or a CSV to compare with")
    analyze.add_argument(
        "--out", type=Path, default=None, help="output folder (default: next to the series)"
    )
    analyze.set_defaults(func=_cmd_ecology_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: a clear message, no traceback
        print(f"bioflux: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
