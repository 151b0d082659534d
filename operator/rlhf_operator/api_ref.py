"""Where a kind lives in the Kubernetes API, and the core kinds the operator touches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiRef:
    """A kind's group (\"\" for core), version and plural: enough to build its URL."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


PVCS = ApiRef("", "v1", "persistentvolumeclaims")
CONFIGMAPS = ApiRef("", "v1", "configmaps")
EVENTS = ApiRef("", "v1", "events")
PODS = ApiRef("", "v1", "pods")
NETWORK_POLICIES = ApiRef("networking.k8s.io", "v1", "networkpolicies")
