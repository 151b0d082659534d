"""The `rlhf` command: validate, crd, render, run."""

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
    from .crd import crd_yaml

    text = crd_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .manifests.render import render
    from .settings import OperatorSettings

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
    status = LocalRun(run, Path(args.workdir), nproc=args.nproc).execute()
    return exit_code(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf", description="RLHFRun tools: validate, generate the CRD, render, run locally."
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
