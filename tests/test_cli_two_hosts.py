"""``neukonfig prepare`` and ``neukonfig certs`` for a Pi + server deployment: each host
profiles its own side, the cloud's profile is handed to the edge, and the certificates
come in one directory per host."""

from __future__ import annotations

import json
from pathlib import Path

from neukonfig.tls import TlsDir
from tests.cli_run import assert_clean_error, neukonfig


def _prepare(workdir: Path, *extra: str | Path) -> None:
    result = neukonfig(
        "prepare", "--model", "tiny", "--workdir", workdir, "--profile-repeats", "1", *extra
    )
    assert result.returncode == 0, result.stderr


def test_each_host_profiles_its_own_side_and_the_edge_takes_the_clouds(tmp_path: Path) -> None:
    server, edge = tmp_path / "server", tmp_path / "edge"
    _prepare(server, "--side", "cloud")
    assert (server / "partitions" / "manifest.json").is_file()
    assert not list(server.glob("*edge*profile.json")), "the server profiled the edge side"
    cloud = json.loads((server / "cloud-profile.json").read_text())
    assert cloud["roles"] == ["cloud"]

    handed = tmp_path / "handed-cloud-profile.json"
    handed.write_bytes((server / "cloud-profile.json").read_bytes())
    _prepare(edge, "--side", "edge", "--cloud-profile", handed, "--edge-slowdown", "4")
    assert json.loads((edge / "edge-profile.json").read_text())["roles"] == ["edge"]
    assert (edge / "cloud-profile.json").read_bytes() == handed.read_bytes()
    assert (edge / "partitions" / "weights.bin").read_bytes() == (
        server / "partitions" / "weights.bin"
    ).read_bytes(), "the two hosts' partitions differ"

    planned = neukonfig(
        "plan",
        edge / "partitions",
        "--profile-edge",
        edge / "edge-profile.json",
        "--profile-cloud",
        edge / "cloud-profile.json",
        "--bandwidth",
        "50mbit",
        "--json",
    )
    assert planned.returncode == 0, planned.stderr


def test_the_edge_side_needs_a_cloud_profile_of_the_same_model(tmp_path: Path) -> None:
    assert_clean_error(
        neukonfig("prepare", "--model", "tiny", "--workdir", tmp_path, "--side", "edge"),
        "--cloud-profile",
        "--side cloud",
    )
    edge_only = tmp_path / "edge-only"
    _prepare(edge_only, "--side", "both")
    assert_clean_error(
        neukonfig(
            "prepare",
            "--model",
            "tiny",
            "--workdir",
            tmp_path / "other",
            "--side",
            "edge",
            "--cloud-profile",
            edge_only / "edge-profile.json",
        ),
        "holds no cloud profile",
    )


def test_certs_writes_one_directory_per_host_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = neukonfig("certs", "--out", out, "--cloud-hosts", "198.51.100.7,server.lan")
    assert made.returncode == 0, made.stderr
    for side in ("edge", "cloud"):
        tls = TlsDir(out / side)
        tls.client_context()  # loads: the certificate and key match, the CA parses
        assert (tls.key.stat().st_mode & 0o777) == 0o600
    assert not (out / "edge" / "ca-key.pem").exists()
    assert not (out / "cloud" / "ca-key.pem").exists()
    assert_clean_error(neukonfig("certs", "--out", out), "exists")
