"""`python -m rlhf_operator`: the operator (kopf) with a liveness endpoint, standalone.

Cluster-wide by default; RLHF_WATCH_NAMESPACES=ns1,ns2 restricts it to those namespaces.
"""

from __future__ import annotations

import logging
import os

import kopf

LIVENESS = "http://0.0.0.0:8080/healthz"


def main() -> None:
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
