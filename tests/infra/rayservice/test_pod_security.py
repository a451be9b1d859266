"""Ray pods under the restricted profile with a read-only root: what each container gets,
that every path Ray 2.60 writes by default is a writable mount, and Ray + Serve running
for real with nothing else writable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from infra.config import PROJECT_ROOT
from infra.pod_security import container_security_context
from infra.program.render import program_objects
from infra.rayservice.manifest import CACHE_ENV, RAY_GID, RAY_HOME, RAY_UID
from policy.rules import RAYSERVICE, pod_security_restricted
from serve_apps.auth.keys import hash_key, new_key
from tests.infra.helpers import STACKS
from tests.k8s_schemas import validation_errors

DRIVER = Path(__file__).with_name("readonly_root_driver.py")


def _rayservices(stack: str, **overrides: Any) -> list[dict[str, Any]]:
    return [o for o in program_objects(stack, overrides) if o["kind"] == "RayService"]


def _pods(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def _writable_mounts(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mount path -> emptyDir of every writable emptyDir the Ray container mounts."""
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v}
    ray = pod["containers"][0]
    return {
        m["mountPath"]: empty_dirs[m["name"]]
        for m in ray["volumeMounts"]
        if m["name"] in empty_dirs and not m.get("readOnly")
    }


def _covered(path: str, mounts: dict[str, Any]) -> bool:
    return any(PurePosixPath(path).is_relative_to(mount) for mount in mounts)


@pytest.mark.parametrize("log_shipping", [True, False])
@pytest.mark.parametrize("stack", STACKS)
def test_every_ray_container_runs_restricted_and_read_only(stack: str, log_shipping: bool) -> None:
    for rayservice in _rayservices(stack, logShipping=log_shipping):
        assert validation_errors(rayservice) == []  # the pinned KubeRay CRD takes it
        assert pod_security_restricted(RAYSERVICE, rayservice, {}) == []
        for pod in _pods(rayservice):
            # The rayproject images' `ray` user, whatever the image's USER says.
            assert pod["securityContext"]["runAsUser"] == RAY_UID == 1000
            assert pod["securityContext"]["runAsGroup"] == RAY_GID == 100
            assert pod["securityContext"]["runAsNonRoot"] is True
            names = [c["name"] for c in pod["containers"]]
            assert names[1:] == (["log-shipper"] if log_shipping else [])
            for container in pod["containers"]:
                assert container["securityContext"] == container_security_context()
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
                assert container["resources"]["limits"]["memory"]
                assert container["resources"]["requests"]["cpu"]
            if log_shipping:  # the shipper only reads Ray's logs
                (shipper_mount,) = pod["containers"][1]["volumeMounts"]
                assert shipper_mount == {
                    "name": "ray-logs",
                    "mountPath": "/tmp/ray",
                    "readOnly": True,
                }
            mounts = _writable_mounts(pod)
            assert set(mounts) == {"/tmp", "/tmp/ray", f"{RAY_HOME}/.cache", "/dev/shm"}
            # Plasma's shared memory is RAM, bounded by the container's memory limit.
            limit = pod["containers"][0]["resources"]["limits"]["memory"]
            assert mounts["/dev/shm"] == {"medium": "Memory", "sizeLimit": limit}


def test_the_autoscaler_sidecar_gets_the_same_profile_and_rays_log_volume() -> None:
    for stack in STACKS:
        for rayservice in _rayservices(stack):
            cluster = rayservice["spec"]["rayClusterConfig"]
            assert cluster["enableInTreeAutoscaling"] is True  # so KubeRay adds the sidecar
            options = cluster["autoscalerOptions"]
            assert options["securityContext"] == container_security_context()
            assert options["resources"]["limits"]["memory"]
            assert options["resources"]["requests"]["cpu"]
            # KubeRay mounts its /tmp/ray on the head's volume of that path: the same one.
            head = cluster["headGroupSpec"]["template"]["spec"]
            volumes = {v["name"] for v in head["volumes"] if "emptyDir" in v}
            head_mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
            for mount in options["volumeMounts"]:
                assert mount["name"] in volumes
                assert head_mounts[mount["mountPath"]] == mount["name"]
            without = json.loads(json.dumps(rayservice))
            del without["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
            assert "head pod: container 'autoscaler' root filesystem is writable" in (
                pod_security_restricted(RAYSERVICE, without, {})
            )


# Where Ray 2.60 and the libraries in our images write by default, each as the library
# itself resolves it, in a process with the Ray container's environment.
_RESOLVE = """
import json, tempfile
import huggingface_hub.constants as hf
import matplotlib
import torch.hub
from ray._common.utils import get_default_ray_temp_dir, get_default_system_temp_dir
from ray._private.services import determine_plasma_store_config
from ray.serve._private import constants as serve

session_root = get_default_ray_temp_dir()
plasma_dir, _, _ = determine_plasma_store_config(100 * 1024 * 1024, tempfile.gettempdir())
print(json.dumps({
    "Ray session root (logs, sockets, runtime envs, spilled objects)": session_root,
    "Ray's system temp dir (lock files)": get_default_system_temp_dir(),
    "object store": plasma_dir,
    "Python tempfile": tempfile.gettempdir(),
    "HAProxy config": serve.RAY_SERVE_HAPROXY_CONFIG_FILE_LOC,
    "HAProxy admin socket": serve.RAY_SERVE_HAPROXY_SOCKET_PATH,
    "HAProxy metrics socket": serve.RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH,
    "HAProxy server state": serve.RAY_SERVE_HAPROXY_SERVER_STATE_FILE,
    "Hugging Face cache": hf.HF_HUB_CACHE,
    "torch hub": torch.hub.get_dir(),
    "matplotlib config": matplotlib.get_configdir(),
}))
"""


def test_every_path_ray_writes_by_default_is_a_writable_mount(tmp_path: Path) -> None:
    (rayservice,) = _rayservices("dev")
    head = _pods(rayservice)[0]
    mounts = _writable_mounts(head)
    # The pod's home stands at a temporary path here (libraries create their dirs in it).
    home = tmp_path / "home"
    home.mkdir()
    env = {e["name"]: e["value"] for e in head["containers"][0]["env"] if "value" in e}
    env = {k: v.replace(RAY_HOME, str(home)) for k, v in env.items()}
    env |= {"HOME": str(home), "PATH": os.environ["PATH"], "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {
        what: path.replace(str(home), RAY_HOME)
        for what, path in json.loads(done.stdout.splitlines()[-1]).items()
    }
    assert resolved["Ray session root (logs, sockets, runtime envs, spilled objects)"] == (
        "/tmp/ray"
    )
    assert resolved["object store"] == "/dev/shm"
    uncovered = {what: path for what, path in resolved.items() if not _covered(path, mounts)}
    assert uncovered == {}
    # Caches of libraries not in this venv (numba, triton, CUDA's JIT) by their own vars.
    assert all(_covered(path, mounts) for path in CACHE_ENV.values())


# -- Ray for real, with nothing but the pod's emptyDirs writable --------------------------

_SETUP = r"""
set -eu
ip link set lo up
# The image's /home: read-only, as the image ships it; the API-key Secret beside it.
mount -t tmpfs -o mode=755 image-home /home
mkdir -p "$POD_HOME" /home/secrets
cp "$KEYS_SOURCE" /home/secrets/keys.json
for mount in $WRITABLE; do case "$mount" in /home/*) mkdir -p "$mount" ;; esac; done
mount -o remount,ro /home
mount -o remount,bind,ro /
for mount in $WRITABLE; do
  mkdir -p "$mount" 2>/dev/null || true
  mount -t tmpfs -o mode=1777 emptydir "$mount"
done
exec "$@"
"""


def _user_namespaces() -> bool:
    probe = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork",
             "--mount-proc", "true"]  # fmt: skip
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.integration
@pytest.mark.skipif(
    not _user_namespaces(), reason="needs unprivileged user namespaces to mount a read-only root"
)
def test_ray_and_serve_run_with_only_the_pods_emptydirs_writable(tmp_path: Path) -> None:
    """In a namespace of its own (as root there: the filesystem, not the uid, is under
    test), `/` read-only and tmpfs at each emptyDir mount: a Ray head with the Ray
    container's env starts and serves through HAProxy and the API-key middleware, and
    nothing it runs logs a read-only filesystem."""
    (rayservice,) = _rayservices("dev")
    head = _pods(rayservice)[0]
    writable = sorted(_writable_mounts(head), key=lambda m: m.count("/"))
    hidden = [m for m in writable for path in (sys.executable, str(PROJECT_ROOT))
              if Path(path).resolve().is_relative_to(m)]  # fmt: skip
    if hidden:  # the emptyDir tmpfs would hide this checkout's own interpreter and code
        pytest.skip(f"this checkout lives under {hidden[0]}, which the test mounts a tmpfs over")
    key = new_key()
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"test": hash_key(key)}))
    pod_env = {e["name"]: e["value"] for e in head["containers"][0]["env"] if "value" in e}
    env = {
        **pod_env,
        "HOME": RAY_HOME,
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJECT_ROOT),
        "RAYSERVE_API_KEYS_FILE": "/home/secrets/keys.json",
        # What KubeRay sets from `authOptions` (no token file under a read-only home).
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": new_key(),
        "POD_HOME": RAY_HOME,
        "KEYS_SOURCE": str(keys),
        "WRITABLE": " ".join(writable),
        "WRITABLE_MOUNTS": json.dumps([m for m in writable if m != "/dev/shm"]),
        "TEST_API_KEY": key,
    }
    # Its own PID namespace too: the driver's `ray stop --force` then sees (and stops) only
    # the Ray it started, never another cluster on this machine (`make run`, other tests).
    command = ["unshare", "--user", "--map-root-user", "--mount", "--net"]
    command += ["--pid", "--fork", "--mount-proc"]
    command += ["sh", "-c", _SETUP, "setup", sys.executable, str(DRIVER)]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=480, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["ray_start"] == 0, result["ray_start_output"]
    assert "error" not in result, result
    assert result["answers"] == {"keyed": 200, "unkeyed": 401, "healthz": 200}, result
    assert result["read_only_errors"] == []
    assert result["used"]["/tmp/ray"], result  # the session went where the pod mounts it
