"""A rendered stage pod as `podman run` arguments, the way the kubelet would run it.

Only what the operator's stage pods use is translated, and anything else is refused (so a new
pod field cannot be silently dropped here): the pod's user, group and fsGroup, the container's
security context, its command and plain env, and the volumes it mounts: the run's claim (a
host directory, group-owned by fsGroup as the kubelet's fsGroup ownership change leaves it),
the ConfigMap (its data as files, read-only), emptyDirs (memory-backed ones as tmpfs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_POD_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy", "seccompProfile"}
_CONTAINER_SECURITY = {"allowPrivilegeEscalation", "privileged", "readOnlyRootFilesystem", "capabilities"}


def security_flags(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The pod's and the container's security context as podman flags."""
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    unknown = (set(pod_sc) - _POD_SECURITY) | (set(sc) - _CONTAINER_SECURITY)
    assert not unknown, f"not translated: {sorted(unknown)}"
    assert (pod_sc.get("seccompProfile") or {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}  # podman's
    assert pod_sc.get("runAsNonRoot") and pod_sc["runAsUser"] != 0
    flags = ["--user", f"{pod_sc['runAsUser']}:{pod_sc.get('runAsGroup', 0)}"]
    if "fsGroup" in pod_sc:
        flags += ["--group-add", str(pod_sc["fsGroup"])]  # the kubelet adds it as a supplementary group
    if sc.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # only what the pod mounts is writable
    assert sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged")
    flags += ["--security-opt", "no-new-privileges"]
    assert sc.get("capabilities") == {"drop": ["ALL"]}
    flags += ["--cap-drop", "all"]
    return flags


def volume_flags(
    pod: dict[str, Any],
    container: dict[str, Any],
    claims: dict[str, Path],
    configmaps: dict[str, dict[str, Any]],
    scratch: Path,
) -> list[str]:
    """-v/--tmpfs for each mount. claims: claimName -> host dir; configmaps: name -> object;
    scratch: a host directory for the ConfigMaps' files and the disk-backed emptyDirs."""
    fs_group = (pod.get("securityContext") or {}).get("fsGroup")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    flags: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        assert set(mount) <= {"name", "mountPath", "readOnly"}, mount
        options = "ro" if mount.get("readOnly") else "rw"
        if "persistentVolumeClaim" in volume:
            host = claims[volume["persistentVolumeClaim"]["claimName"]]
            if fs_group is not None:  # the kubelet's fsGroup change: group-owned, setgid, group-writable
                os.chown(host, -1, fs_group)
                host.chmod(0o2775)
            flags += ["-v", f"{host}:{target}:{options}"]
        elif "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["data"]
            host = scratch / f"configmap-{mount['name']}"
            host.mkdir(exist_ok=True)
            for key, value in data.items():
                (host / key).write_text(value)
                (host / key).chmod(0o644)
            host.chmod(0o755)
            flags += ["-v", f"{host}:{target}:{options}"]
        elif "emptyDir" in volume:
            empty = volume["emptyDir"]
            if empty.get("medium") == "Memory":
                size = f",size={tmpfs_size(empty['sizeLimit'])}" if "sizeLimit" in empty else ""
                flags += ["--tmpfs", f"{target}:rw,mode=1777{size}"]
            else:  # on the node's disk; the kubelet makes it world-writable
                host = scratch / f"emptydir-{mount['name']}"
                host.mkdir(exist_ok=True)
                host.chmod(0o777)
                flags += ["-v", f"{host}:{target}:{options}"]
        else:
            raise AssertionError(f"volume kind not translated: {volume}")
    return flags


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def tmpfs_size(quantity: str) -> int:
    """A Kubernetes quantity (1Gi, 512Mi, 2G) in bytes, as tmpfs' size= takes it."""
    for suffix, factor in _SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def env_flags(container: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for entry in container.get("env") or []:
        assert "value" in entry, f"only plain values here (no Secret in the test run): {entry}"
        flags += ["-e", f"{entry['name']}={entry['value']}"]
    return flags


def command_flags(container: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(flags, arguments): the container's command replaces the image's entrypoint."""
    command = [*container.get("command", []), *container.get("args", [])]
    assert command, "the operator always sets the command"
    return ["--entrypoint", command[0]], command[1:]
