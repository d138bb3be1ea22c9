"""Load test of ``celseg serve``: request latency under concurrency vs ``celseg predict``.

    python benchmarks/bench_serve.py --ckpt RUN [--requests 50] [--concurrency 4]
        [--image IMG] [--classes "a,b"] [--url http://127.0.0.1:PORT/] [--docs docs/BENCHMARKS.md]

Starts ``celseg serve`` on a free port of 127.0.0.1 (or uses ``--url``, which must be a loopback
address), sends one warm-up request, then ``--requests`` requests, ``--concurrency`` at a time,
through ``gradio_client`` to the page's ``/segment`` endpoint, and reports the median and p95
latency of the successful ones (upload + queue + inference + reply). The run is bounded: at
most 500 requests and ``--time-limit`` seconds, after which no new request is sent (a failed
request is counted and reported, not retried). Before the server starts, the same image and
class names go through ``Predictor.segment`` in this process (warm: the inference alone) and
through ``celseg predict`` as a fresh process (``--predict-runs`` times; the median, which
includes starting Python and loading the model). Needs the ``demo`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# the client must not call home (usage telemetry): this test talks to 127.0.0.1 only
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

MAX_REQUESTS = 500
SECTION = "## The page under load (`celseg serve`)"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _loopback_url(url: str) -> str:
    from celseg.serve.app import is_loopback

    if not is_loopback(urllib.parse.urlparse(url).hostname or ""):
        raise SystemExit(f"--url {url}: this load test only targets 127.0.0.1 / localhost")
    return url if url.endswith("/") else url + "/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: str, device: str, log_path: Path, wait_s: float = 180.0
                 ) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "celseg", "serve", "--ckpt", ckpt, "--port",
                             str(port), "--device", device, "--examples", "0"],
                            stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ.copy())
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"celseg serve did not start:\n{log_path.read_text()[-2000:]}"
                                 ) from None
            time.sleep(0.5)


def load_test(url: str, image: str, classes: str, requests: int, concurrency: int,
              time_limit: float) -> dict:
    """Latencies (s) of ``requests`` calls, ``concurrency`` in flight, one client per worker."""
    from gradio_client import Client, handle_file

    local = threading.local()
    clients = []  # closed at the end: each holds a heartbeat stream open
    deadline = time.monotonic() + time_limit

    def call(_: int) -> tuple[float, str] | None:
        """(seconds, "" or what went wrong); None once the time limit has passed."""
        if time.monotonic() > deadline:
            return None  # bounded in time: no new request after the limit
        start = time.perf_counter()
        try:
            if not hasattr(local, "client"):
                local.client = Client(url, verbose=False)
                clients.append(local.client)
            *_, status = local.client.predict(handle_file(image), classes, api_name="/segment")
            error = "" if str(status).startswith("Segmented") else str(status)
        except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
            error = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, error

    call(-1)  # warm-up: the first request builds the vocabulary's inference path
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = [r for r in pool.map(call, range(requests)) if r is not None]
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    latencies = [t for t, error in done if not error]
    if not latencies:
        raise SystemExit(f"every request failed, e.g. {done[0][1] if done else 'none sent'}")
    errors = [error for _, error in done if error]
    return {"requests": len(done), "failed": len(errors), "errors": errors[:3],
            "concurrency": concurrency, "median_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 95), "max_s": max(latencies), "wall_s": wall,
            "requests_per_s": len(done) / wall}


def time_predict(ckpt: str, image: str, classes: str, device: str, runs: int) -> dict:
    """Wall time of ``celseg predict`` as a new process (what one gets without a server)."""
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "celseg", "predict", "--ckpt", ckpt,
                            "--classes", classes, "--device", device, "--out", out, image],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return {"runs": runs, "median_s": statistics.median(times), "min_s": min(times)}


def time_segment(ckpt: str, image: str, classes: str, device: str, repeats: int = 10) -> dict:
    """Median of ``Predictor.segment`` in this process after one warm-up (inference alone)."""
    import numpy as np
    from PIL import Image

    from celseg.engine.predictor import Predictor, parse_class_names

    predictor = Predictor.from_checkpoint(ckpt, device=device)
    names = parse_class_names(classes)
    array = np.asarray(Image.open(image).convert("RGB"))
    predictor.segment(array, names)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.segment(array, names)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "protocol": predictor.protocol}


def default_inputs(ckpt: str, image: str | None, classes: str | None) -> tuple[str, str]:
    """The run's first validation image and its benchmark's class names, when not given."""
    from celseg.serve.app import run_examples

    examples = run_examples(ckpt, 1)
    image = image or (examples.paths[0] if examples.paths else None)
    if image is None:
        raise SystemExit("the run's data.root is not here: give --image (and --classes)")
    return image, classes or examples.class_text or "cat, dog, road"


def markdown(result: dict) -> str:
    load, pred, seg = result["serve"], result["predict"], result["segment"]
    return "\n".join([
        SECTION, "",
        f"Measured with `{result['command']}` on {result['machine']} (1-minute load average "
        f"{result['load_average']:.1f} at the start: other jobs shared the cores), with a "
        f"{result['image_size']} image, {result['num_classes']} class names, protocol "
        f"{seg['protocol']}. The server runs one inference at a time, so with "
        f"{load['concurrency']} requests in flight a request waits for the others: latency "
        "is about the concurrency times the service time.", "",
        "| what | median | p95 | notes |",
        "|---|---:|---:|---|",
        f"| page, `/segment` over HTTP, {load['concurrency']} at a time | "
        f"{1000 * load['median_s']:.0f} ms | {1000 * load['p95_s']:.0f} ms | "
        f"{load['requests']} requests, {load['failed']} failed, "
        f"{load['requests_per_s']:.1f} requests/s |",
        f"| `celseg predict`, a new process each time | {1000 * pred['median_s']:.0f} ms | | "
        f"{pred['runs']} runs: Python start, model load, one image |",
        f"| `Predictor.segment` in process (warm) | {1000 * seg['median_s']:.0f} ms | | "
        "the inference alone |",
    ])


def write_docs(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of the Markdown file."""
    old = path.read_text() if path.exists() else ""
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        new = head + text + "\n" + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoint to serve")
    parser.add_argument("--image", default=None,
                        help="image to send (default: the run's first validation image)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names (default: the run's benchmark names)")
    parser.add_argument("--requests", type=int, default=50, help="requests to send (default 50)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="requests in flight at once (default 4)")
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="no new request after this many seconds (default 600)")
    parser.add_argument("--url", default=None,
                        help="a running server on 127.0.0.1 (default: start one)")
    parser.add_argument("--device", default="cpu", help="device of the server and predict")
    parser.add_argument("--predict-runs", type=int, default=3,
                        help="times to run celseg predict (default 3)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--docs", default=None,
                        help="write the results table into this Markdown file "
                             "(e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args()
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 16:
        raise SystemExit(f"--requests must be 1..{MAX_REQUESTS} and --concurrency 1..16")
    image, classes = default_inputs(args.ckpt, args.image, args.classes)
    load_average = os.getloadavg()[0]
    # the references first, while no server shares the cores
    segment = time_segment(args.ckpt, image, classes, args.device)
    predict = time_predict(args.ckpt, image, classes, args.device, args.predict_runs)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            url = _loopback_url(args.url)
        else:
            proc, url = start_server(args.ckpt, args.device, Path(tmp) / "serve.log")
        try:
            serve = load_test(url, image, classes, args.requests, args.concurrency,
                              args.time_limit)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    from PIL import Image

    width, height = Image.open(image).size
    argv = " ".join(a if " " not in a and "," not in a else json.dumps(a) for a in sys.argv[1:])
    result = {
        "command": f"python benchmarks/bench_serve.py {argv}",
        "machine": f"{os.cpu_count()} CPU cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "load_average": load_average, "image": image, "image_size": f"{width} x {height}",
        "num_classes": len([c for c in classes.split(",") if c.strip()]),
        "serve": serve, "predict": predict, "segment": segment,
    }
    text = markdown(result)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.docs:
        write_docs(Path(args.docs), text)


if __name__ == "__main__":
    main()
