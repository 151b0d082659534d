"""The run's NetworkPolicy: only the run's own pods may connect to its stage pods. Pure.

A distributed stage listens on the rendezvous port (torchrun's c10d store, 23456 under
PyTorchJob, the MASTER_PORT of Trainer v2's torch runtime) and, for the collectives, on ports
NCCL/gloo pick at random; none of them authenticates its peers. So the policy selects every pod
of the run (the run label the launchers put on each pod) and admits ingress only from pods with
that same label in the same namespace, on any port (a port list would break NCCL). Egress is
not restricted: stages download models and datasets from a hub, report to W&B, and need DNS; a
cluster that must restrict egress adds its own policy (NetworkPolicies are additive).

Created once with the run's volume, owned by the run (deleted with it). Enforced only where
the cluster's network plugin implements NetworkPolicy; elsewhere it is inert.
"""

from __future__ import annotations

from typing import Any

from rlhf_api.naming import MANAGED_BY_LABEL, RUN_LABEL, child_name, labels
from rlhf_api.spec import RLHFRun

from ..api_ref import NETWORK_POLICIES
from .meta import object_meta

__all__ = ["NETWORK_POLICIES", "build_network_policy", "network_policy_name", "run_pod_selector"]


def network_policy_name(run_name: str) -> str:
    return child_name(run_name, "pods")


def run_pod_selector(run_name: str) -> dict[str, str]:
    """Every pod of the run, whatever stage and attempt (the labels the launchers set)."""
    run_labels = labels(run_name)
    return {key: run_labels[key] for key in (MANAGED_BY_LABEL, RUN_LABEL)}


def build_network_policy(run: RLHFRun, owner: dict[str, Any] | None) -> dict[str, Any]:
    name = run.metadata.name
    selector = {"matchLabels": run_pod_selector(name)}
    return {
        "apiVersion": f"{NETWORK_POLICIES.api_version}",
        "kind": "NetworkPolicy",
        "metadata": object_meta(run, network_policy_name(name), labels(name), owner),
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],
            # A peer with only a podSelector means: pods in this namespace matching it.
            "ingress": [{"from": [{"podSelector": selector}]}],
        },
    }
