"""`python -m rlhf_operator`: the operator (kopf) with a liveness endpoint, standalone.

Cluster-wide by default; RLHF_WATCH_NAMESPACES=ns1,ns2 restricts it to those namespaces. It takes
no arguments (the settings are environment variables, as the chart sets them): `--help` lists
them, anything else is refused, so that `IMAGE --help` does not start an operator.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import kopf

LIVENESS = "http://0.0.0.0:8080/healthz"


def _settings_help() -> str:
    """One line per RLHF_* setting, from the settings' own descriptions."""
    from .settings import OperatorSettings

    lines = [f"  {field.description}" for field in OperatorSettings.model_fields.values() if field.description]
    lines.append("  RLHF_VERBOSE=1: kopf debug logging")
    lines.append(f"  RLHF_LIVENESS_ENDPOINT: kopf's liveness endpoint (default {LIVENESS})")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m rlhf_operator",
        description=(
            "The rlhf-operator: reconciles RLHFRuns into Kubeflow training jobs (kopf, standalone). "
            "It connects with the in-cluster service account, else $KUBECONFIG or ~/.kube/config."
        ),
        epilog="settings (environment variables):\n" + _settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser().parse_args(sys.argv[1:] if argv is None else argv)
    from .controller import handlers  # noqa: F401  (registers the handlers)
    from .settings import OperatorSettings

    settings = OperatorSettings.from_env(os.environ)
    kopf.configure(verbose=os.environ.get("RLHF_VERBOSE") == "1")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    namespaces = settings.watch_namespaces
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=os.environ.get("RLHF_LIVENESS_ENDPOINT", LIVENESS),
        memo=kopf.Memo(settings=settings),
    )


if __name__ == "__main__":
    main()
