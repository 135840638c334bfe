"""Record the exact CreateCluster request of the real Cloud SDK (``gcloud``).

gcloud is pointed at a capture server on 127.0.0.1 (``CLOUDSDK_API_ENDPOINT_OVERRIDES_CONTAINER``,
``..._SERVICEUSAGE``) with a fake access token (``CLOUDSDK_AUTH_ACCESS_TOKEN``) and a throwaway
``CLOUDSDK_CONFIG``; nothing leaves the machine. The server answers the service-enabled check,
accepts the create with a DONE operation, and serves the cluster back so ``--async`` exits 0.

``python -m tests.gcloud_capture`` rewrites the golden file
``tests/data/gcloud_create_cluster.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

GOLDEN = Path(__file__).parent / "data" / "gcloud_create_cluster.json"
LAB_FLAGS = [
    "--machine-type=n1-standard-4",
    "--enable-autoscaling",
    "--min-nodes=1",
    "--max-nodes=3",
    "--num-nodes=1",
]
"""GSP777's ``gcloud container clusters create`` flags (DESIGN.md, the lab)."""
TOKEN = "fake-access-token"


def gcloud_path() -> str | None:
    return shutil.which("gcloud")


def gcloud_version(gcloud: str) -> str:
    out = subprocess.run(
        [gcloud, "version", "--format=json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tempfile.gettempdir(), "http://127.0.0.1:9/"),
        check=False,
    )
    try:
        return str(json.loads(out.stdout).get("Google Cloud SDK", "unknown"))
    except ValueError:
        return "unknown"


def _env(config_dir: str, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    env.update(
        CLOUDSDK_CONFIG=config_dir,
        CLOUDSDK_API_ENDPOINT_OVERRIDES_CONTAINER=url,
        CLOUDSDK_API_ENDPOINT_OVERRIDES_SERVICEUSAGE=url,
        CLOUDSDK_AUTH_ACCESS_TOKEN=TOKEN,
        CLOUDSDK_CORE_PROJECT="proj",
        CLOUDSDK_CORE_DISABLE_PROMPTS="1",
        CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="1",
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="1",
    )
    return env


def capture(gcloud: str, cluster: str = "lab", zone: str = "us-central1-a") -> dict[str, Any]:
    """Run the lab's command against the capture server; the CreateCluster body it sent."""
    seen: list[tuple[str, str, dict[str, Any], str | None]] = []
    created: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            path = urlsplit(self.path).path
            seen.append((self.command, path, body, self.headers.get("Authorization")))
            code, reply = 200, {}
            if "/services/" in path:
                reply = {"name": path.removeprefix("/v1/"), "state": "ENABLED"}
            elif self.command == "POST" and path.endswith("/clusters"):
                created.update(body["cluster"], status="PROVISIONING")
                reply = {"name": "operation-1", "operationType": "CREATE_CLUSTER", "status": "DONE"}
            elif self.command == "GET" and path.endswith(f"/clusters/{cluster}") and created:
                reply = created
            else:
                code = 404
                reply = {"error": {"code": 404, "status": "NOT_FOUND", "message": path}}
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with tempfile.TemporaryDirectory(prefix="scalelab-gcloud-") as config_dir:
            command = [gcloud, "container", "clusters", "create", cluster, f"--zone={zone}"]
            done = subprocess.run(
                [*command, *LAB_FLAGS, "--async"],
                capture_output=True,
                text=True,
                timeout=120,
                env=_env(config_dir, url),
                check=False,
            )
    finally:
        server.shutdown()
        server.server_close()
    creates = [s for s in seen if s[0] == "POST" and s[1].endswith("/clusters")]
    if len(creates) != 1:
        raise RuntimeError(f"gcloud sent {len(creates)} CreateCluster requests: {done.stderr}")
    _, path, body, auth = creates[0]
    if auth != f"Bearer {TOKEN}":
        raise RuntimeError(f"gcloud sent Authorization {auth!r}")
    return {"path": path, "body": body}


def main() -> int:
    gcloud = gcloud_path()
    if gcloud is None:
        print("gcloud is not installed", file=sys.stderr)
        return 2
    request = capture(gcloud)
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "what": "gcloud container clusters create lab --zone=us-central1-a " + " ".join(LAB_FLAGS),
        "cloud_sdk": gcloud_version(gcloud),
        "request": request,
    }
    GOLDEN.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
