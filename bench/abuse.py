"""Floods one account (or none) can send, against a two-worker gunicorn with the project's configuration,
while an administrator's cheap request (`GET /api/dataset/?page_size=1`) is timed beside them.

    .venv/bin/python -m bench.abuse [--seconds 20] [--attackers 4] [--root PATH] [--only gif_bombs,...]

Each flood runs `--attackers` clients for `--seconds` (requests still running then are waited for) and
the cheap request is sent every 0.2 s meanwhile, one at a time, from before the flood starts until its
last request ends; a flood's row gives the cheap request's p50/p95/max and what the attackers got back.
`--root` runs the same floods against another checkout (e.g. a `git worktree` of main) with its own
code: everything, including the setup, runs there through `manage.py`. Writes bench/results/abuse.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

from bench.common import ROOT, percentile, wait_for, write_results

SETUP = """
import io, json, secrets, sys, zipfile
from datetime import timedelta
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
from PIL import Image
from datasets.models import DataSet
from datasets.services import dataset_import_zip

def token_for(user, name):
    Application = get_application_model()
    application = Application.objects.create(name=name, user=user, client_type="confidential",
                                             authorization_grant_type="client-credentials")
    return get_access_token_model().objects.create(user=user, application=application,
        token=secrets.token_urlsafe(24), expires=timezone.now() + timedelta(hours=4),
        scope="read write predict").token

admin = User.objects.create_superuser("admin", password=secrets.token_urlsafe(16))
attacker = User.objects.create_user("attacker", password=secrets.token_urlsafe(16))
attacker.user_permissions.add(*Permission.objects.filter(
    codename__in=["view_dataset", "add_datasetitem", "view_datasetitem"]))
dataset = DataSet.objects.create(name="Abuse", image_size=16, epochs=2, batch_size=8)
archive = io.BytesIO()
with zipfile.ZipFile(archive, "w") as writer:
    for label, rgb in {"red": (210, 20, 20), "blue": (20, 20, 210), "green": (20, 210, 20)}.items():
        for seed in range(8):
            buffer = io.BytesIO()
            Image.new("RGB", (16, 16), tuple(max(0, c - seed * 5) for c in rgb)).save(buffer, "PNG")
            writer.writestr(f"{label}/{seed}.png", buffer.getvalue())
archive.seek(0)
dataset_import_zip(dataset=dataset, file=archive)
print(json.dumps({"admin": token_for(admin, "admin"), "attacker": token_for(attacker, "attacker"),
                  "dataset": dataset.pk}))
"""


def big_png() -> bytes:
    """An 8000x5000 16-bit grayscale PNG of zeros: 40 megapixels in about 80 KB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("I;16", (8000, 5000), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bomb(width: int = 8000, height: int = 5000) -> bytes:
    """A 1x1 frame on an 8000x5000 logical screen: 37 bytes that decode to 40 megapixels."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def small_png(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, seed % 255, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "kerasui-abuse-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    for key, (name, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None, timeout=600):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def floods(tokens: dict, batch: int) -> dict:
    """Each flood: a function making one attacking request's (method, path, body, headers)."""
    attacker = {"Authorization": f"Bearer {tokens['attacker']}"}
    dataset = tokens["dataset"]
    png = base64.b64encode(big_png()).decode()
    gif = base64.b64encode(gif_bomb()).decode()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        for number in range(batch):
            writer.writestr(f"big/{number}.png", big_png())
    zip_body, zip_type = multipart({}, {"file": ("big.zip", archive.getvalue())})
    json_headers = attacker | {"Content-Type": "application/json"}

    def png_batches():
        body = json.dumps({"dataset": dataset, "images": [png] * batch}).encode()
        return "POST", "/api/test/", body, json_headers

    def png_zip():
        return "POST", f"/api/dataset/{dataset}/upload/", zip_body, attacker | {"Content-Type": zip_type}

    def gif_bombs():
        body = json.dumps({"dataset": dataset, "images": [gif] * 64}).encode()
        return "POST", "/api/test/", body, json_headers

    def explain():
        image = base64.b64encode(small_png(random.randrange(1 << 30))).decode()
        body = json.dumps({"dataset": dataset, "image": image, "explain": True}).encode()
        return "POST", "/api/test/", body, json_headers

    def logins():
        name = f"nobody-{random.randrange(1 << 60):x}"
        credentials = base64.b64encode(f"{name}:wrong-pass-phrase".encode()).decode()
        return "GET", "/api/dataset/", b"", {"Authorization": f"Basic {credentials}"}

    return {
        "png_batches": png_batches,
        "png_zip": png_zip,
        "gif_bombs": gif_bombs,
        "explain": explain,
        "logins": logins,
    }


def flood(port: int, admin_token: str, make, *, seconds: float, attackers: int) -> dict:
    """Run `attackers` clients sending `make()` requests for `seconds`; time the cheap request meanwhile."""
    statuses: Counter = Counter()
    cheap: list[float] = []
    cheap_statuses: Counter = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    running = threading.Event()
    running.set()

    def attack():
        while time.monotonic() < stop:
            method, path, body, headers = make()
            try:
                status = request(port, method, path, body, headers)
            except OSError as error:
                status = type(error).__name__
            with lock:
                statuses[str(status)] += 1

    def probe():
        while running.is_set():
            started = time.perf_counter()
            try:
                status = request(
                    port,
                    "GET",
                    "/api/dataset/?page_size=1",
                    headers={"Authorization": f"Bearer {admin_token}"},
                    timeout=300,
                )
            except OSError as error:
                status = type(error).__name__
            with lock:
                cheap.append(time.perf_counter() - started)
                cheap_statuses[str(status)] += 1
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.monotonic()
    threads = [threading.Thread(target=attack, daemon=True) for _ in range(attackers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running.clear()
    prober.join()
    return {
        "seconds": round(time.monotonic() - started, 1),
        "attacks": sum(statuses.values()),
        "attack_statuses": dict(statuses),
        "cheap_count": len(cheap),
        "cheap_statuses": dict(cheap_statuses),
        "cheap_p50_ms": round(percentile(cheap, 50) * 1000, 1),
        "cheap_p95_ms": round(percentile(cheap, 95) * 1000, 1),
        "cheap_max_ms": round(max(cheap) * 1000, 1),
    }


def start_server(root: Path, data_dir: Path, port: int) -> subprocess.Popen:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(data_dir),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_WORKERS": "2",
        "KERASUI_THREADS": "2",
        "KERASUI_TRAINING_BACKEND": "none",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (data_dir / "gunicorn.log").open("ab")
    python = Path(sys.executable)
    return subprocess.Popen(
        [str(python.parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=root,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def prepare(root: Path, data_dir: Path) -> dict:
    """Migrate a fresh database in `root`'s code, make the two accounts and a trained dataset."""
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(data_dir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=root, env=environment, check=True)
    output = subprocess.run(
        [*manage, "shell", "-c", SETUP], cwd=root, env=environment, check=True, capture_output=True, text=True
    ).stdout
    tokens = json.loads(output.strip().splitlines()[-1])
    subprocess.run(
        [*manage, "train", str(tokens["dataset"])], cwd=root, env=environment, check=True, capture_output=True
    )
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="big PNGs per prediction batch and per zip")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code serves")
    parser.add_argument("--port", type=int, default=8631)
    parser.add_argument("--only", default="", help="comma-separated flood names")
    parser.add_argument("--name", default="abuse", help="bench/results/<name>.json")
    args = parser.parse_args()

    root = args.root.resolve()
    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-abuse-"))
    tokens = prepare(root, data_dir)
    attacks = floods(tokens, args.batch)
    chosen = [name for name in (args.only.split(",") if args.only else attacks) if name]
    server = start_server(root, data_dir, args.port)
    results: dict = {"root": str(root), "config": vars(args) | {"root": str(root)}, "floods": {}}
    try:
        wait_for(args.port)
        results["quiet"] = flood(
            args.port, tokens["admin"], lambda: ("GET", "/api/health/", b"", {}), seconds=5, attackers=1
        )
        for name in chosen:
            results["floods"][name] = flood(
                args.port, tokens["admin"], attacks[name], seconds=args.seconds, attackers=args.attackers
            )
            row = results["floods"][name]
            print(f"{name}: {row}", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    log = (data_dir / "gunicorn.log").read_text(errors="replace")
    results["tracebacks"] = log.count("Traceback")
    print(
        f"\n{root}: {args.attackers} attackers per flood, {args.seconds:.0f} s each; the cheap request is "
        f"GET /api/dataset/?page_size=1 as the administrator"
    )
    quiet = results["quiet"]
    print(f"quiet: cheap p50 {quiet['cheap_p50_ms']} ms, p95 {quiet['cheap_p95_ms']} ms")
    print(f"{'flood':<13}{'seconds':>8}{'attacks':>8}{'cheap p50 ms':>14}{'p95 ms':>10}{'max ms':>10}  attackers got")
    for name, row in results["floods"].items():
        got = ", ".join(f"{status}×{count}" for status, count in sorted(row["attack_statuses"].items()))
        print(
            f"{name:<13}{row['seconds']:>8}{row['attacks']:>8}{row['cheap_p50_ms']:>14}{row['cheap_p95_ms']:>10}"
            f"{row['cheap_max_ms']:>10}  {got}"
        )
    print(f"tracebacks in the server's log: {results['tracebacks']}")
    print(write_results(args.name, results))


if __name__ == "__main__":
    main()
