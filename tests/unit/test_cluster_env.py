"""``hack/cluster.sh env --json`` states the same variables as the shell form ``env``.

Programs (tests/support.py) read the JSON; people ``eval`` the exports. Both are printed
from a copy of the script in a temporary repository, so the state they read (mode, MLflow
URI) is the test's own and no cluster is needed; awkward characters in the paths check
both quotings.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_PATH = "/usr/bin:/bin"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding only what ``cluster.sh env`` reads: the script and versions."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    repo = tmp_path / "re po 'x' \"y\""
    (repo / "hack").mkdir(parents=True)
    for name in ("cluster.sh", "seaweedfs.sh", "versions.env"):
        shutil.copy2(ROOT / "hack" / name, repo / "hack" / name)
    return repo


def _run(repo: Path, *args: str, cache: Path) -> str:
    env = {"PATH": BASE_PATH, "HOME": str(repo), "MODELWORKS_CACHE": str(cache)}
    return subprocess.run(
        [str(repo / "hack" / "cluster.sh"), *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=30,
    ).stdout


def _evaluated(repo: Path, cache: Path) -> dict[str, str]:
    """What ``eval "$(hack/cluster.sh env)"`` leaves in a bash whose PATH is BASE_PATH."""
    script = 'eval "$("$0" env)" && env -0'
    env = {"PATH": BASE_PATH, "HOME": str(repo), "MODELWORKS_CACHE": str(cache)}
    out = subprocess.run(
        ["bash", "-c", script, str(repo / "hack" / "cluster.sh")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=30,
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@pytest.mark.parametrize("mode", ["node", "control-plane"])
def test_env_json_matches_the_shell_form(repo: Path, tmp_path: Path, mode: str) -> None:
    state = repo / ".cluster"
    state.mkdir()
    (state / "mode").write_text(f"{mode}\n")
    (state / "mlflow-uri").write_text("http://10.42.0.1:15000\n")
    cache = tmp_path / "cache \\ with\ttab"

    as_json = json.loads(_run(repo, "env", "--json", cache=cache))
    shell_form = _run(repo, "env", cache=cache)

    exported = re.findall(r"^export ([A-Z_]+)=", shell_form, flags=re.MULTILINE)
    assert list(as_json) == exported
    expected = {"KUBECONFIG", "PATH", "MODELWORKS_MLFLOW_TRACKING_URI"}
    if mode == "node":
        expected |= {"CONTAINERD_ADDRESS", "CONTAINER_RUNTIME_ENDPOINT"}
    assert set(as_json) == expected

    evaluated = _evaluated(repo, cache)
    assert {key: evaluated[key] for key in as_json} == as_json
    assert as_json["KUBECONFIG"] == str(state / "kubeconfig")
    assert as_json["PATH"].startswith(str(cache / "bin") + "/k8s-")
    assert as_json["PATH"].endswith(":" + BASE_PATH)
    assert as_json["MODELWORKS_MLFLOW_TRACKING_URI"] == "http://10.42.0.1:15000"


def test_env_without_state_prints_the_basics(repo: Path, tmp_path: Path) -> None:
    as_json = json.loads(_run(repo, "env", "--json", cache=tmp_path / "cache"))
    assert {"KUBECONFIG", "PATH"} <= set(as_json)
    assert "MODELWORKS_MLFLOW_TRACKING_URI" not in as_json
    assert not (repo / ".cluster").exists(), "env must only print"


def test_env_rejects_unknown_options(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _run(repo, "env", "--yaml", cache=tmp_path / "cache")
    assert "--json" in failed.value.stderr


def test_env_exports_the_object_store_once_it_has_run(repo: Path, tmp_path: Path) -> None:
    state = repo / ".cluster"
    (state / "seaweedfs").mkdir(parents=True)
    (state / "mode").write_text("node\n")
    (state / "s3-endpoint").write_text("http://10.42.0.1:18333\n")
    (state / "seaweedfs" / "credentials").write_text(
        "AWS_ACCESS_KEY_ID=MWKEYID\nAWS_SECRET_ACCESS_KEY=0123abcd\n"
    )
    cache = tmp_path / "cache"

    as_json = json.loads(_run(repo, "env", "--json", cache=cache))

    assert {k: v for k, v in as_json.items() if k.startswith("MODELWORKS_S3_")} == {
        "MODELWORKS_S3_ENDPOINT": "http://10.42.0.1:18333",
        "MODELWORKS_S3_ACCESS_KEY_ID": "MWKEYID",
        "MODELWORKS_S3_SECRET_ACCESS_KEY": "0123abcd",
        "MODELWORKS_S3_BUCKET": "modelworks",
    }
    evaluated = _evaluated(repo, cache)
    assert {key: evaluated[key] for key in as_json} == as_json
