"""The scaled-out backends together: records in the test's database, Redis, and S3 (moto)."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.integration.blobs.conftest import REGION
from tests.integration.queue.redis_server import RedisServer

DEFINITION = """
    key: big
    name: Big
    flows:
      digest:
        trigger: {type: webhook, sync: true}
        steps:
          - id: digest
            action: code.run
            inputs:
              source: |
                import hashlib
                def run(context, raw):
                    return {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
                            "padding": "x" * 50000}
              args: {raw: "{{ trigger.raw }}"}
          - id: response
            action: webhook.respond
            inputs:
              body: {sha256: "{{ steps.digest.sha256 }}", size: "{{ steps.digest.size }}"}
"""


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server.url
    server.stop()


def test_webhook_through_redis_and_s3(
    start_service, definition, redis_url, moto_url, bucket, s3_admin
):
    service = start_service(
        SPLICE_QUEUE_URL=redis_url,
        SPLICE_BLOB_URL=f"s3://{bucket}/splice?endpoint_url={moto_url}&region={REGION}",
        SPLICE_SPILL_THRESHOLD="1024",
    )
    url = service.deploy(definition(DEFINITION)).webhooks["digest"]
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "queue": "ok"}
    body = os.urandom(2 * 1024 * 1024)
    response = service.client.post(url, content=body, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    execution_id = response.headers["x-splice-execution-id"]
    record = service.runtime.store.get_execution(execution_id)
    assert record.status == "succeeded"
    keys = {
        item["Key"]
        for item in s3_admin.list_objects_v2(Bucket=bucket, Prefix="splice/").get("Contents", [])
    }
    assert f"splice/executions/{execution_id}/request-body" in keys
    runs = {run.step_id: run for run in service.runtime.store.step_runs(execution_id)}
    assert runs["digest"].output_blob is not None  # spilled: larger than 1 KiB
    assert f"splice/{runs['digest'].output_blob}" in keys
