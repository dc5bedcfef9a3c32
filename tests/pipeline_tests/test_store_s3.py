"""A real S3 API: runs whose store is ``s3://bucket/prefix`` on a local moto server (its server
mode, started here on 127.0.0.1; pyarrow reaches it through ``AWS_ENDPOINT_URL``): a run, a
resume after the driver is killed, a re-run of hits, a damaged object, missing credentials and a
bucket that does not exist."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import SharedCluster, attempts, cli_env, results_rows, run_cli, run_dirs
from PIL import Image
from pipeline_helpers import make_manifest

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "kontext-test"
PREFIX = "nightly/store"
STORE = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server that checks signatures: the bucket and an IAM user allowed s3:* are
    made with auth off, then every request must be signed by that user's keys."""
    import moto.settings

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
             "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="kontext-batch")
    iam.put_user_policy(UserName="kontext-batch", PolicyName="store", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="kontext-batch")["AccessKey"]
    saved = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is checked
    env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "AWS_EC2_METADATA_DISABLED": "true"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
    yield env, client
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
    server.stop()


@pytest.fixture(scope="module")
def cluster():
    shared = SharedCluster()
    yield shared
    shared.shutdown()


def _objects(client) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=PREFIX) for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def test_run_resume_and_rerun_on_s3(tmp_path: Path, s3, cluster) -> None:
    env, client = s3
    manifest = make_manifest(tmp_path / "m", products=3, variants=2)
    out = tmp_path / "out"

    killed = run_cli(manifest, out, cluster.address, "--store", STORE,
                     env=cli_env(**env, KONTEXT_TEST_KILL_AT="after-ledger-append:1"))
    assert killed.returncode == -9, killed.stdout + killed.stderr
    resumed = run_cli(manifest, out, cluster.address, "--store", STORE, env=cli_env(**env))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (run_dir,) = run_dirs(out)
    rows = results_rows(run_dir)
    assert [r["status"] for r in rows] == ["done"] * 6
    assert all(r["output_uri"].startswith(f"s3://{BUCKET}/{PREFIX}/objects/") for r in rows)
    ok = [a for a in attempts(run_dir) if a["outcome"] == "ok"]
    assert sorted(a["row_id"] for a in ok) == sorted(r["row_id"] for r in rows)  # each once

    stored = _objects(client)
    for r in rows:
        name = r["output_uri"].removeprefix(f"s3://{BUCKET}/")
        sidecar = json.loads(stored[name.rsplit(".", 1)[0] + ".json"])
        assert sidecar["bytes"] == len(stored[name]) > 0
    assert not (out / "store").exists()  # nothing of the store went to the local disk

    again = run_cli(manifest, out, cluster.address, "--store", STORE, env=cli_env(**env))
    assert again.returncode == 0, again.stdout + again.stderr
    second = run_dirs(out)[-1]
    assert second != run_dir
    assert [r["status"] for r in results_rows(second)] == ["cache-hit"] * 6


@pytest.mark.parametrize("damage, flags", [
    ("truncated", ()),                    # the cheap check on every hit: size vs the sidecar's
    ("same size", ("--verify-cache",)),   # remote hits are hashed in full when asked
])
def test_a_damaged_s3_object_is_recomputed_not_served(tmp_path: Path, s3, cluster, damage,
                                                      flags) -> None:
    env, client = s3
    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    store = f"{STORE}-{damage.replace(' ', '-')}"
    first = run_cli(manifest, out, cluster.address, "--store", store, env=cli_env(**env))
    assert first.returncode == 0, first.stdout + first.stderr
    rows = results_rows(run_dirs(out)[0])
    name = rows[0]["output_uri"].removeprefix(f"s3://{BUCKET}/")
    good = client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
    bad = good[: len(good) // 2] if damage == "truncated" else bytes(len(good))
    client.put_object(Bucket=BUCKET, Key=name, Body=bad)

    again = run_cli(manifest, out, cluster.address, "--store", store, *flags, env=cli_env(**env))
    assert again.returncode == 0, again.stdout + again.stderr
    second = results_rows(run_dirs(out)[-1])
    assert {r["row_id"]: r["status"] for r in second} == {rows[0]["row_id"]: "done",
                                                          rows[1]["row_id"]: "cache-hit"}
    assert "damaged" in second[0]["notes"]  # the repair is recorded on the row
    repaired = client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
    sidecar = json.loads(client.get_object(Bucket=BUCKET, Key=name.rsplit(".", 1)[0] + ".json")
                         ["Body"].read())
    assert sidecar["sha256"] == hashlib.sha256(repaired).hexdigest() and sidecar.get("repaired")
    # The same edit again (alone now, so rounding may move a pixel by one level)
    assert np.abs(_pixels(repaired) - _pixels(good)).max() <= 1


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)


def _refused_before_work(result, out: Path, *words: str) -> None:
    text = result.stdout + result.stderr
    assert result.returncode == 2, text
    assert "Traceback" not in text, text
    for word in words:
        assert word in text, text
    assert run_dirs(out) == []  # nothing was started


@pytest.mark.parametrize("credentials", ["missing", "wrong secret"])
def test_unusable_credentials_are_refused_before_work(tmp_path: Path, s3, cluster,
                                                      credentials) -> None:
    env, _ = s3
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    out = tmp_path / "out"
    if credentials == "missing":
        keys = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID",
                                                           "AWS_SECRET_ACCESS_KEY")}
    else:
        keys = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    nowhere = str(tmp_path / "no-aws-files")
    run_env = cli_env(**keys, AWS_SHARED_CREDENTIALS_FILE=nowhere, AWS_CONFIG_FILE=nowhere)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        if name not in keys:
            run_env.pop(name, None)
    result = run_cli(manifest, out, cluster.address, "--store", STORE, env=run_env)
    _refused_before_work(result, out, "--store", STORE, "credentials")


def test_a_bucket_that_does_not_exist_is_refused_before_work(tmp_path: Path, s3, cluster) -> None:
    env, _ = s3
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    out = tmp_path / "out"
    result = run_cli(manifest, out, cluster.address, "--store", "s3://no-such-bucket/x",
                     env=cli_env(**env))
    _refused_before_work(result, out, "no-such-bucket", "--store")
