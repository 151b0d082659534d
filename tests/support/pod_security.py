"""A pure checker of the Kubernetes Pod Security Standards' `restricted` level (latest).

Neither validator the chart's tests use checks it: kubernetes-validate checks the schema only,
and checkov runs its own checks on Pods and workload kinds, not on the pod templates inside a
PyTorchJob or TrainJob. So the rules are written out here, one function per control, from
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Baseline, then
Restricted). `violations(pod_spec)` lists each broken control with the field that breaks it,
as the API server's admission message does ("violates PodSecurity ...").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

_BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

Check = Callable[[Mapping[str, Any]], Iterator[str]]


def _containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in _CONTAINER_LISTS:
        for container in pod.get(kind) or []:
            yield f"{kind}[{container.get('name')}]", container


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


# --- Baseline ------------------------------------------------------------------------------------


def _host_process(pod: Mapping[str, Any]) -> Iterator[str]:
    if (_sc(pod).get("windowsOptions") or {}).get("hostProcess"):
        yield "securityContext.windowsOptions.hostProcess must not be true"
    for where, c in _containers(pod):
        if (_sc(c).get("windowsOptions") or {}).get("hostProcess"):
            yield f"{where}.securityContext.windowsOptions.hostProcess must not be true"


def _host_namespaces(pod: Mapping[str, Any]) -> Iterator[str]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"{field} must not be true"


def _privileged(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, c in _containers(pod):
        if _sc(c).get("privileged"):
            yield f"{where}.securityContext.privileged must not be true"


def _baseline_capabilities(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, c in _containers(pod):
        added = set((_sc(c).get("capabilities") or {}).get("add") or ())
        if added - _BASELINE_CAPABILITIES:
            yield f"{where}.securityContext.capabilities.add: {sorted(added - _BASELINE_CAPABILITIES)} not allowed"


def _host_path(pod: Mapping[str, Any]) -> Iterator[str]:
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            yield f"volumes[{volume.get('name')}]: hostPath not allowed"


def _host_ports(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, c in _containers(pod):
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                yield f"{where}.ports: hostPort {port['hostPort']} not allowed"


def _app_armor(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, obj in [("pod", pod), *_containers(pod)]:
        profile = _sc(obj).get("appArmorProfile") or {}
        if profile.get("type") not in (None, "RuntimeDefault", "Localhost"):
            yield f"{where}.securityContext.appArmorProfile.type {profile.get('type')!r} not allowed"


def _selinux(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, obj in [("pod", pod), *_containers(pod)]:
        options = _sc(obj).get("seLinuxOptions") or {}
        if options.get("type", "") not in _SELINUX_TYPES:
            yield f"{where}.securityContext.seLinuxOptions.type {options.get('type')!r} not allowed"
        if options.get("user") or options.get("role"):
            yield f"{where}.securityContext.seLinuxOptions: user/role must not be set"


def _proc_mount(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, c in _containers(pod):
        if _sc(c).get("procMount") not in (None, "Default"):
            yield f"{where}.securityContext.procMount must be Default"


def _seccomp_not_unconfined(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, obj in [("pod", pod), *_containers(pod)]:
        if (_sc(obj).get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"{where}.securityContext.seccompProfile.type must not be Unconfined"


def _sysctls(pod: Mapping[str, Any]) -> Iterator[str]:
    for sysctl in _sc(pod).get("sysctls") or []:
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            yield f"securityContext.sysctls: {sysctl.get('name')} not allowed"


# --- Restricted ----------------------------------------------------------------------------------


def _volume_types(pod: Mapping[str, Any]) -> Iterator[str]:
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            yield f"volumes[{volume.get('name')}]: {sorted(kinds - _RESTRICTED_VOLUME_TYPES)} not allowed"


def _privilege_escalation(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, c in _containers(pod):
        if _sc(c).get("allowPrivilegeEscalation") is not False:
            yield f"{where}.securityContext.allowPrivilegeEscalation must be false"


def _run_as_non_root(pod: Mapping[str, Any]) -> Iterator[str]:
    pod_level = _sc(pod).get("runAsNonRoot")
    for where, c in _containers(pod):
        own = _sc(c).get("runAsNonRoot")
        if own is False or (own is None and pod_level is not True):
            yield f"{where}: runAsNonRoot must be true (pod or container securityContext)"


def _run_as_user(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, obj in [("pod", pod), *_containers(pod)]:
        if _sc(obj).get("runAsUser") == 0:
            yield f"{where}.securityContext.runAsUser must not be 0"


def _seccomp_set(pod: Mapping[str, Any]) -> Iterator[str]:
    allowed = ("RuntimeDefault", "Localhost")
    pod_ok = (_sc(pod).get("seccompProfile") or {}).get("type") in allowed
    for where, c in _containers(pod):
        own = (_sc(c).get("seccompProfile") or {}).get("type")
        if own is None and not pod_ok:
            yield f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container)"


def _restricted_capabilities(pod: Mapping[str, Any]) -> Iterator[str]:
    for where, c in _containers(pod):
        capabilities = _sc(c).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or ()):
            yield f"{where}.securityContext.capabilities.drop must include ALL"
        if set(capabilities.get("add") or ()) - {"NET_BIND_SERVICE"}:
            yield f"{where}.securityContext.capabilities.add may only hold NET_BIND_SERVICE"


BASELINE: tuple[Check, ...] = (
    _host_process,
    _host_namespaces,
    _privileged,
    _baseline_capabilities,
    _host_path,
    _host_ports,
    _app_armor,
    _selinux,
    _proc_mount,
    _seccomp_not_unconfined,
    _sysctls,
)
RESTRICTED: tuple[Check, ...] = (
    *BASELINE,
    _volume_types,
    _privilege_escalation,
    _run_as_non_root,
    _run_as_user,
    _seccomp_set,
    _restricted_capabilities,
)


def violations(pod_spec: Mapping[str, Any], level: tuple[Check, ...] = RESTRICTED) -> list[str]:
    """Every control of `level` that the pod spec breaks (empty: it is admitted)."""
    return [problem for check in level for problem in check(pod_spec)]
