"""The `rlhf` command: validate, crd, render, run, report, compare, estimate, status, logs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from rlhf_api.validation import RunInvalid, parse_run


def _load(path: str) -> Any:
    try:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
    except OSError as error:
        raise RunInvalid([f"{path}: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise RunInvalid([f"{path}: not valid YAML: {error}"]) from None
    if len(documents) != 1:
        raise RunInvalid([f"{path}: expected exactly one RLHFRun document, found {len(documents)}"])
    return documents[0]


def _errors(path: str, error: RunInvalid) -> int:
    print(f"{path}: invalid RLHFRun ({len(error.errors)} error{'s' * (len(error.errors) != 1)})", file=sys.stderr)
    for line in error.errors:
        print(f"  {line}", file=sys.stderr)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            run = parse_run(_load(path))
        except RunInvalid as error:
            status = _errors(path, error)
            continue
        print(f"{path}: valid RLHFRun '{run.metadata.name}' (pipeline: {' -> '.join(run.spec.pipeline)})")
    return status


def cmd_crd(args: argparse.Namespace) -> int:
    from rlhf_operator.crd import crd_yaml

    text = crd_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from rlhf_operator.render import render
    from rlhf_operator.settings import OperatorSettings

    try:
        run = parse_run(_load(args.file))
    except RunInvalid as error:
        return _errors(args.file, error)
    settings = OperatorSettings.from_env(os.environ)
    if args.trainer_image:
        settings = settings.model_copy(update={"trainer_image": args.trainer_image})
    try:
        objects = render(run, settings, namespace=args.namespace)
    except ValueError as error:  # e.g. --namespace contradicts metadata.namespace
        print(f"rlhf: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .local.runner import LocalRun, TrainerMissing, check_trainer, exit_code

    try:
        run = parse_run(_load(args.file))
    except RunInvalid as error:
        return _errors(args.file, error)
    try:
        check_trainer()
    except TrainerMissing as error:
        print(f"rlhf: error: {error}", file=sys.stderr)
        return 2
    status = LocalRun(run, Path(args.workdir), nproc=args.nproc, display=_display()).execute()
    return exit_code(status)


def cmd_estimate(args: argparse.Namespace) -> int:
    from rlhf_operator.estimate.catalog import hub_cache_dirs, lookup
    from rlhf_operator.estimate.memory import GIB, estimate_run, render_table

    try:
        run = parse_run(_load(args.file))
    except RunInvalid as error:
        return _errors(args.file, error)
    caches = hub_cache_dirs()
    estimates = estimate_run(run, lambda name: lookup(name, caches), accelerator=args.accelerator)
    print(render_table(estimates))
    over = [e for e in estimates if e.fits is False]
    for e in over:
        print(f"rlhf: {e.stage} will not fit: about {e.total / GIB:.1f} GiB per GPU", file=sys.stderr)
    return 1 if over else 0


def _display() -> Any:
    """Live bars on a terminal that can redraw; plain, throttled lines in logs and pipes."""
    from rich.console import Console

    from .local.display import PlainDisplay
    from .local.live import LiveDisplay

    console = Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveDisplay(console)
    return PlainDisplay(sys.stdout)


def cmd_report(args: argparse.Namespace) -> int:
    from .report.build import NotARunDirectory, write_report
    from .report.scalars import ReportDependencyMissing

    try:
        path = write_report(args.dir)
    except (NotARunDirectory, ReportDependencyMissing) as error:
        print(f"rlhf: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} (plots in {path.parent / 'plots'})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .local.runner import TrainerMissing, check_trainer
    from .rerun_comparison import NothingToCompare, run_compare, summary_line

    try:
        check_trainer()
        code = run_compare(Path(args.dir), args.prompts, args.max_new_tokens)
    except (TrainerMissing, NothingToCompare) as error:
        print(f"rlhf: error: {error}", file=sys.stderr)
        return 2
    if code != 0:
        return code
    print(summary_line(Path(args.dir)))
    return cmd_report(args) if (Path(args.dir) / "report.json").is_file() else 0


def cmd_serve_reward(args: argparse.Namespace) -> int:
    """`rlhf serve-reward MODEL_DIR ...`: runs the trainer's server (it needs torch) in this process's place."""
    from .local.runner import TrainerMissing, check_trainer

    try:
        check_trainer()
    except TrainerMissing as error:
        print(f"rlhf: error: {error}", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, "-m", "rlhf_trainer", "serve-reward", *args.args])


def _cluster(args: argparse.Namespace) -> Any:
    from .cluster.client import Cluster

    return Cluster(args.kubeconfig, args.context)


def _cluster_errors(action: Any) -> int:
    """Run a cluster read; turn the ways it fails into one line on stderr."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from .cluster.client import NotFound

    try:
        code: int = action()
        return code
    except (ConnectionError, NotFound) as error:
        print(f"rlhf: error: {error}", file=sys.stderr)
    except ApiException as error:
        print(f"rlhf: error: the API server answered {error.status} {error.reason}", file=sys.stderr)
    except HTTPError as error:
        print(f"rlhf: error: cannot reach the API server: {error}", file=sys.stderr)
    return 1


def _watch_display() -> Any:
    """`rlhf status -w`: live bars on a terminal that can redraw, else a plain line per change."""
    from rich.console import Console

    from .cluster.watch_display import BarsWatch, PlainWatch

    console = Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return BarsWatch(console)
    return PlainWatch(sys.stdout)


def cmd_status(args: argparse.Namespace) -> int:
    import datetime as dt

    from rich.console import Console

    from .cluster.view import render

    def show() -> int:
        cluster = _cluster(args)
        namespace = args.namespace or cluster.default_namespace
        if args.watch:
            from .cluster.watch_display import follow

            return follow(cluster.watch_run(namespace, args.name), _watch_display())
        observed = cluster.observe(namespace, args.name)
        Console(highlight=False).print(render(observed, dt.datetime.now(dt.UTC)))
        return 0

    return _cluster_errors(show)


def cmd_logs(args: argparse.Namespace) -> int:
    def stream() -> int:
        cluster = _cluster(args)
        namespace = args.namespace or cluster.default_namespace
        pod, container, stage = cluster.stage_pod(namespace, args.name, args.stage, args.attempt)
        print(f"==> {stage}: pod {pod}, container {container}", file=sys.stderr, flush=True)
        lines = cluster.log_lines(namespace, pod, container, args.follow, args.tail, timestamps=not args.raw)
        try:
            if args.raw:
                for line in lines:
                    print(line, flush=True)
            else:
                from .cluster.log_view import LogClock, show_log

                clock = LogClock()
                show_log(lines, stage, _log_display(clock), clock)
        except KeyboardInterrupt:
            return 130
        return 0

    return _cluster_errors(stream)


def _log_display(clock: Any) -> Any:
    """`rlhf logs`: progress as live bars on a terminal that can redraw, else plain progress lines."""
    from rich.console import Console

    from .cluster.log_view import BarsLog, PlainLog

    console = Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return BarsLog(console, clock)
    return PlainLog(sys.stdout, clock)


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="the run's namespace (default: the kubeconfig context's)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def build_parser(prog: str = "rlhf") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "RLHFRun tools: validate, generate the CRD, render, run locally, report, estimate GPU memory; "
            "follow runs on a cluster."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check RLHFRun files; errors are listed by field path")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    crd = sub.add_parser("crd", help="print the RLHFRun CustomResourceDefinition")
    crd.add_argument("-o", "--output", help="write to this file instead of stdout")
    crd.set_defaults(func=cmd_crd)

    render = sub.add_parser("render", help="print the Kubernetes objects the operator creates for a run")
    render.add_argument("file", metavar="FILE")
    render.add_argument("-n", "--namespace", help="namespace to render into")
    render.add_argument(
        "--trainer-image", help="default trainer image (else RLHF_TRAINER_IMAGE or the built-in default)"
    )
    render.set_defaults(func=cmd_render)

    run = sub.add_parser("run", help="run the stages on this machine (no cluster)")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--workdir", default="runs", help="outputs go to WORKDIR/<run-name>/ (default: ./runs)")
    run.add_argument("--nproc", type=int, help="processes per stage (default: workers x GPUs per worker, at least 1)")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write DIR/report.html: curves, timeline, metrics, comparison")
    report.add_argument("dir", metavar="DIR", help="a run directory, e.g. runs/quickstart")
    report.set_defaults(func=cmd_report)

    compare = sub.add_parser(
        "compare", help="compare the final stage's starting and trained model on held-out prompts (DIR/eval/)"
    )
    compare.add_argument("dir", metavar="DIR", help="a run directory, e.g. runs/quickstart")
    compare.add_argument("--prompts", type=int, help="held-out prompts to compare on (default: as planned, 128)")
    compare.add_argument("--max-new-tokens", type=int, help="tokens generated per prompt (default: as planned)")
    compare.set_defaults(func=cmd_compare)

    serve = sub.add_parser(
        "serve-reward",
        help="serve a reward stage's model over HTTP for remote reward sources (MODEL_DIR [--host H] [--port P] ...)",
        add_help=False,
    )
    serve.add_argument("args", nargs=argparse.REMAINDER, help="MODEL_DIR and the server's options (see --help)")
    serve.set_defaults(func=cmd_serve_reward)

    status = sub.add_parser("status", help="a run on the cluster: phase, stages, conditions, what it waits on")
    status.add_argument("name", metavar="NAME")
    status.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="follow the run live (bars, ETA, numbers; plain lines without a terminal) until it ends; "
        "exit 0 if it succeeded, 1 if it failed",
    )
    _cluster_options(status)
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="the log of a stage's Master pod on the cluster")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("--stage", help="sft, reward, ppo or dpo (default: the current stage)")
    logs.add_argument("--attempt", type=int, help="which attempt's job (default: the latest)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming until the container ends")
    logs.add_argument("--tail", type=int, help="only the last N lines")
    logs.add_argument(
        "--raw",
        action="store_true",
        help="the log as written, progress events as their @@rlhf JSON lines (default: shown as rlhf run shows them)",
    )
    _cluster_options(logs)
    logs.set_defaults(func=cmd_logs)

    from rlhf_api.spec import ACCELERATOR_PRODUCTS

    estimate = sub.add_parser(
        "estimate", help="GPU memory per GPU each stage needs, against its GPU (exit 1 when one will not fit)"
    )
    estimate.add_argument("file", metavar="FILE")
    estimate.add_argument(
        "--accelerator",
        choices=sorted(ACCELERATOR_PRODUCTS),
        help="size every stage for this GPU (default: each stage's placement.nodePool.accelerator)",
    )
    estimate.set_defaults(func=cmd_estimate)
    return parser


def main(argv: list[str] | None = None, prog: str = "rlhf") -> int:
    rest = sys.argv[1:] if argv is None else argv
    if rest[:1] == ["serve-reward"]:  # every option is the server's, --help included
        return cmd_serve_reward(argparse.Namespace(args=rest[1:]))
    args = build_parser(prog).parse_args(argv)
    code: int = args.func(args)
    return code


def kubectl_main() -> int:
    """`kubectl rlhf ...`: kubectl runs `kubectl-rlhf` from PATH as its `rlhf` plugin."""
    return main(prog="kubectl rlhf")


if __name__ == "__main__":
    sys.exit(main())
