"""The search page under load, on loopback: `python -m ra_jax.serve` for a
trained work dir (or an export), then concurrent clients, each sending
requests one after another — uploads of PNG files and random test images by
index, mixed — and the latency of each.

First every request kind is timed alone (sequentially): its service time.
Under load a request can wait for at most the requests in front of it (one
per other client) before its own turn, so the queue bound on its latency
is `clients x a request's time alone` — with the 99th percentile of the
times alone (of every kind), and with their median. The script reports
p50, p99 and max latency, errors, and max latency over each bound (<= 1:
no request was slowed by more than the queue in front of it).

  python -m benchmarks.page_load --workdir /tmp/ra_jax_digits \
      [--clients 8] [--requests 50] [--json out.json]
"""

import argparse
import concurrent.futures
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _multipart(fields: dict, file_bytes: bytes) -> tuple[bytes, str]:
  boundary = uuid.uuid4().hex
  parts = []
  for name, value in fields.items():
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data;"
                 f" name=\"{name}\"\r\n\r\n{value}\r\n".encode())
  parts.append(f"--{boundary}\r\nContent-Disposition: form-data;"
               " name=\"image\"; filename=\"q.png\"\r\nContent-Type:"
               " image/png\r\n\r\n".encode() + file_bytes + b"\r\n")
  parts.append(f"--{boundary}--\r\n".encode())
  return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _request(base: str, kind: str, payload) -> tuple[float, int]:
  """(seconds, HTTP status) of one search request."""
  if kind == "upload":
    body, content_type = _multipart({"k": "10", "num_lists": "1"}, payload)
  else:
    body = f"query_index={payload}&k=10&num_lists=1".encode()
    content_type = "application/x-www-form-urlencoded"
  request = urllib.request.Request(base + "api/search", data=body,
                                   headers={"Content-Type": content_type})
  start = time.perf_counter()
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      response.read()
      status = response.status
  except urllib.error.HTTPError as error:
    status = error.code
  except (urllib.error.URLError, OSError):
    status = 0  # no answer at all
  return time.perf_counter() - start, status


def _uploads(count: int, seed: int) -> list[bytes]:
  """PNG files of scikit-learn's digits (the README's default run),
  scaled up 4x as a user's scan would be."""
  from sklearn import datasets
  digits = datasets.load_digits().images
  rng = np.random.default_rng(seed)
  out = []
  for i in rng.integers(0, len(digits), count):
    image = Image.fromarray(np.uint8(digits[i] * 255 / 16)).resize(
        (32, 32), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    out.append(buffer.getvalue())
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir")
  parser.add_argument("--export")
  parser.add_argument("--clients", type=int, default=8)
  parser.add_argument("--requests", type=int, default=50,
                      help="requests per client")
  parser.add_argument("--alone", type=int, default=20,
                      help="requests of each kind timed alone")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  if bool(args.workdir) == bool(args.export):
    parser.error("give --workdir or --export")
  port = _free_port()
  flag, path = (("--workdir", args.workdir) if args.workdir else
                ("--export", args.export))
  server = subprocess.Popen(
      [sys.executable, "-m", "ra_jax.serve", flag, path, "--port",
       str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  base = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.time() + 300
    while True:
      if server.poll() is not None:
        raise SystemExit(server.stderr.read()[-3000:])
      try:
        info = json.load(urllib.request.urlopen(base + "api/info",
                                                timeout=5))
        break
      except (urllib.error.URLError, ConnectionError):
        if time.time() > deadline:
          raise SystemExit("the server did not come up")
        time.sleep(0.5)
    kinds = ["upload"] + (["test image"] if info["queries"] else [])
    uploads = _uploads(args.clients * args.requests + args.alone, seed=0)
    rng = np.random.default_rng(1)

    def payload(kind, i):
      return (uploads[i % len(uploads)] if kind == "upload" else
              int(rng.integers(0, info["queries"])))

    for kind in kinds:  # warm-up: compile the search for each path
      _request(base, kind, payload(kind, 0))
    alone = {kind: [_request(base, kind, payload(kind, i))[0]
                    for i in range(args.alone)] for kind in kinds}
    service = max(statistics.median(v) for v in alone.values())
    service_p99 = float(np.percentile(
        [t for v in alone.values() for t in v], 99))

    def client(c):
      out = []
      for r in range(args.requests):
        kind = kinds[(c + r) % len(kinds)]
        out.append((kind, *_request(base, kind,
                                    payload(kind, c * args.requests + r))))
      return out

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
      done = [row for rows in pool.map(client, range(args.clients))
              for row in rows]
    wall = time.perf_counter() - start
  finally:
    server.terminate()
    server.wait(timeout=30)
  latencies = [seconds for _, seconds, _ in done]
  errors = [(kind, status) for kind, _, status in done if status != 200]
  bound = args.clients * service
  bound_p99 = args.clients * service_p99
  summary = {
      "date": time.strftime("%Y-%m-%d"), "served": flag.lstrip("-"),
      "machine": f"{platform.processor() or platform.machine()},"
                 f" {os.cpu_count()} cores",
      "clients": args.clients, "requests_per_client": args.requests,
      "kinds": kinds,
      "alone_median_ms": {k: 1e3 * statistics.median(v)
                          for k, v in alone.items()},
      "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
      "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
      "max_ms": 1e3 * max(latencies), "errors": len(errors),
      "error_statuses": sorted({s for _, s in errors}),
      "requests_per_second": len(done) / wall,
      "queue_bound_ms": 1e3 * bound,
      "max_over_queue_bound": max(latencies) / bound,
      "queue_bound_p99_ms": 1e3 * bound_p99,
      "max_over_queue_bound_p99": max(latencies) / bound_p99,
  }
  print(f"| {args.clients} clients x {args.requests} requests"
        f" ({' + '.join(kinds)}) | alone "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in
                    summary["alone_median_ms"].items())
        + f" | p50 {summary['p50_ms']:.1f} ms | p99 {summary['p99_ms']:.1f}"
        f" ms | max {summary['max_ms']:.1f} ms | {summary['errors']} errors |"
        f" {summary['requests_per_second']:.1f} req/s | max / queue bound"
        f" {summary['max_over_queue_bound_p99']:.2f} (p99 alone),"
        f" {summary['max_over_queue_bound']:.2f} (median alone) |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(summary, f, indent=1)
  return 1 if errors else 0


if __name__ == "__main__":
  sys.exit(main())
