"""A throwaway certificate authority and a server certificate for 127.0.0.1 (tests serving TLS),
made with the openssl command line (no Python dependency)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def write_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) in `folder`; the server certificate names 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a TLS certificate")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, request = folder / "server.crt", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", *_EC, "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=test-cluster-ca")
    run("req", *_EC, "-keyout", str(key), "-out", str(request), "-subj", "/CN=kubernetes")
    run(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "1", "-extfile", str(extensions),
    )  # fmt: skip
    return ca, cert, key


def write_client_cert(folder: Path, user: str) -> tuple[Path, Path]:
    """(client.crt, client.key) for `user`, signed by the CA write_ca_and_server_cert made in `folder`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a TLS certificate")
    cert, key, request = folder / "client.crt", folder / "client.key", folder / "client.csr"
    extensions = folder / "client.ext"
    extensions.write_text("extendedKeyUsage=clientAuth\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", *_EC, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={user}/O=rlhf")
    run(
        "x509", "-req", "-in", str(request), "-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key"),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(extensions),
    )  # fmt: skip
    return cert, key
