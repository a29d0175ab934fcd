#!/usr/bin/python3
"""Load test of `aigc serve` on loopback: CLIENTS threads (64 by default) send a random mix of good, bad and aborted
requests, text and images, for SECONDS, against a server with a text and a diffusion model.

    serve_load.py AIGC_BINARY SECONDS [CLIENTS] [--json-out FILE] [--ckpt TEXT_CKPT --image-ckpt IMAGE_CKPT]

Without checkpoints it first trains a tiny GPT and a tiny DDPM (a few seconds). The server runs with --parallel 4
--timeout 30 and its default --max-queue (16), so under 64 clients many generating requests get 429: that is
counted, not failed. It checks, and exits 1 with FAIL lines when any does not hold:
  - every answer has a status its case expects (429 allowed for any generating request, and then a Retry-After);
    no 5xx during the run, 503 only in the final drain; /metrics' per-route counts (read before the drain) hold
    no 5xx at all (a request whose client hung up is logged 499);
  - every completed stream ends with `data: [DONE]` or an error event; 200 answers hold n choices / n images;
  - no dropped connection or timeout for a request that its client did not abort;
  - the server's resident memory is flat between warm-up (20% of the run) and the end;
  - the longest queue waits in /metrics (text and image) stay below --timeout;
  - SIGTERM while streams run: they finish ([DONE] or an error event), new requests get 503 (or find the port
    closed), and the server exits with code 0 within its drain time.
Prints one JSON summary line (statuses, cases, requests/s, latency percentiles: text answers, streams' time to
their first event, images; 429s, queue waits, RSS), also to --json-out FILE. Progress goes to stderr."""
import argparse
import http.client
import json
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from serve_soak import rss_mib, watch  # this folder: the soak test's helpers

TIMEOUT, DRAIN = 30, 30  # the server's --timeout and --drain (its default)
GEN = {200, 429}  # a generating request: done, or refused because the queue is full


def log(msg):
    print(f"serve_load: {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def train(aigc, tmp):
    # One thread: tiny models gain nothing from more, and on a busy machine spinning worker threads cost minutes.
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([aigc, "train", "--preset", "tiny", "--steps", "10", "--out", tmp + "/tiny", "-t", "1"], **quiet)
    subprocess.run([aigc, "train", "--model", "ddpm", "--steps", "5", "--ch", "8", "--ch-mult", "1", "2",
                    "--res-blocks", "1", "--batch", "8", "--timesteps", "100", "--out", tmp + "/ddpm", "-t", "1"],
                   **quiet)
    return tmp + "/tiny/ckpt.safetensors", tmp + "/ddpm/ckpt.safetensors"


def raw_request(method, path, body=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def raw_call(port, payload):
    """Sends bytes over a plain socket and reads the answer to the end: (status, body). A send cut short by the
    server (it may answer 413 and close before reading a big body) is fine as long as the answer arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 2) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not m:
        raise ConnectionError(f"no HTTP answer ({len(data)} bytes)")
    return int(m.group(1)), data.split(b"\r\n\r\n", 1)[-1]


def make_cases(ctx):
    """(name, weight, kind, mode, method, path, body, expected statuses). kind: latency bucket (text, stream_ttfe,
    image) or None; mode: json (read the answer), stream (read the SSE stream), raw (bytes over a socket), abort_stream
    (hang up after the first event), abort_send (hang up right after sending)."""
    comp = {"prompt": "The ", "max_tokens": 8}
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    j = json.dumps
    bad_utf8 = b'{"prompt": "caf\xc3\x28 \xff\xfe", "max_tokens": 2}'
    huge = b'{"prompt": "' + b"x" * (1 << 20) + b'"}'  # just over the default --max-body of 1 MiB
    return [
        ("completion", 6, "text", "json", "POST", "/v1/completions", j(comp), GEN),
        ("completion n=2", 4, "text", "json", "POST", "/v1/completions", j({**comp, "n": 2}), GEN),
        ("chat", 5, "text", "json", "POST", "/v1/chat/completions", j(chat), GEN),
        ("chat n=2", 3, "text", "json", "POST", "/v1/chat/completions", j({**chat, "n": 2}), GEN),
        ("completion stream", 5, "stream_ttfe", "stream", "POST", "/v1/completions", j({**comp, "stream": True}), GEN),
        ("completion stream n=2", 3, "stream_ttfe", "stream", "POST", "/v1/completions",
         j({**comp, "n": 2, "stream": True}), GEN),
        ("chat stream", 5, "stream_ttfe", "stream", "POST", "/v1/chat/completions", j({**chat, "stream": True}), GEN),
        ("chat stream n=2", 3, "stream_ttfe", "stream", "POST", "/v1/chat/completions",
         j({**chat, "n": 2, "stream": True}), GEN),
        ("image", 4, "image", "json", "POST", "/v1/images/generations", j({"steps": 5, "n": 1}), GEN),
        ("image n=2", 3, "image", "json", "POST", "/v1/images/generations", j({"steps": 10, "n": 2}), GEN),
        ("image 20 steps", 2, "image", "json", "POST", "/v1/images/generations", j({"steps": 20, "n": 1}), GEN),
        ("health", 1, None, "json", "GET", "/health", None, {200}),
        ("models", 1, None, "json", "GET", "/v1/models", None, {200}),
        ("metrics", 1, None, "json", "GET", "/metrics", None, {200}),
        ("malformed JSON", 2, None, "json", "POST", "/v1/completions", '{"prompt": "a", ', {400}),
        ("wrong type", 2, None, "json", "POST", "/v1/completions", j({"prompt": "a", "temperature": "hot"}), {400}),
        ("chat wrong type", 1, None, "json", "POST", "/v1/chat/completions", j({"messages": "hi"}), {400}),
        ("prompt too long", 1, None, "json", "POST", "/v1/completions", j({"prompt": "x" * (ctx + 10)}), {400}),
        ("image bad steps", 1, None, "json", "POST", "/v1/images/generations", j({"steps": "many"}), {400}),
        ("image steps past T", 1, None, "json", "POST", "/v1/images/generations", j({"steps": 101}), {400}),
        ("image bad n", 1, None, "json", "POST", "/v1/images/generations", j({"n": 65}), {400}),
        ("image malformed JSON", 1, None, "json", "POST", "/v1/images/generations", "[1, 2", {400}),
        ("unknown route", 1, None, "json", "GET", "/v1/nothing", None, {404}),
        ("wrong method", 1, None, "json", "DELETE", "/v1/completions", None, {405}),
        ("invalid UTF-8", 2, None, "raw", "POST", "/v1/completions", bad_utf8, {400}),
        ("chat invalid UTF-8", 1, None, "raw", "POST", "/v1/chat/completions",
         b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', {400}),
        ("body too large", 1, None, "raw", "POST", "/v1/completions", huge, {413}),
        ("hang up mid-stream", 3, "stream_ttfe", "abort_stream", "POST", "/v1/completions",
         j({**comp, "max_tokens": 48, "stream": True}), GEN),
        ("hang up mid-chat-stream", 2, "stream_ttfe", "abort_stream", "POST", "/v1/chat/completions",
         j({**chat, "max_tokens": 48, "n": 2, "stream": True}), GEN),
        ("hang up after sending text", 2, None, "abort_send", "POST", "/v1/completions",
         j({**comp, "max_tokens": 32}), None),
        ("hang up after sending image", 2, None, "abort_send", "POST", "/v1/images/generations",
         j({"steps": 20, "n": 2}), None),
    ]


def read_stream(res, t0, abort_after_first, sock):
    """Reads SSE lines: (time to the first data event, the last data payload). With abort_after_first the socket is
    shut down under the server right after the first event."""
    ttfe, last = None, None
    while line := res.readline():
        if not line.startswith(b"data:"):
            continue
        last = line[5:].strip()
        if ttfe is None:
            ttfe = time.time() - t0
            if abort_after_first:
                sock.shutdown(socket.SHUT_RDWR)
                break
    return ttfe, last


def run_case(port, case):
    """One request: (status or 'aborted', problem or None, latency kind, seconds)."""
    name, _, kind, mode, method, path, body, expect = case
    t0 = time.time()
    if mode == "abort_send":
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(raw_request(method, path, body.encode()))
        return "aborted", None, None, None
    if mode == "raw":
        status, data = raw_call(port, raw_request(method, path, body))
        problem = None if status in expect and b'"error"' in data else f"status {status}: {data[:200]!r}"
        return status, problem, None, None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT * 2)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        sock = conn.sock
        res = conn.getresponse()
        status = res.status
        if status not in expect:
            return status, f"status {status}: {res.read()[:200]!r}", None, None
        if status == 429:
            res.read()
            return status, None if res.getheader("Retry-After") else "429 without Retry-After", None, None
        if status != 200:
            data = res.read()
            return status, None if b'"error"' in data else f"an error without 'error': {data[:200]!r}", None, None
        if mode in ("stream", "abort_stream"):
            ttfe, last = read_stream(res, t0, mode == "abort_stream", sock)
            if ttfe is None:
                return status, "a stream without any data event", None, None
            if mode == "stream" and last != b"[DONE]" and not last.startswith(b'{"error"'):
                return status, f"a stream that ends with {last[:200]!r}", None, None
            return status, None, kind, ttfe
        data = res.read()
        if path == "/metrics":
            return status, None, None, None
        answer = json.loads(data)
        want = json.loads(body).get("n", 1) if body else None
        got = len(answer.get("choices", answer.get("data", []))) if want else None
        return status, None if got == want else f"{got} choices/images for n={want}", kind, time.time() - t0
    finally:
        conn.close()


def percentiles(xs):
    xs = sorted(xs)
    pick = lambda p: round(1000 * xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 1) if xs else None
    return {"n": len(xs), "p50_ms": pick(50), "p95_ms": pick(95), "p99_ms": pick(99)}


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = dict(re.findall(r"^(aigc_\w+_max_seconds) (\S+)$", text, re.M))
    errors = {f"{r} {s}": int(float(v)) for r, s, v in  # per route: 5xx answers, hang-ups' included
              re.findall(r'^aigc_requests_total\{route="([^"]*)",status="(5\d\d)"\} (\S+)$', text, re.M)}
    return float(values.get("aigc_queue_wait_max_seconds", "nan")), \
        float(values.get("aigc_image_wait_max_seconds", "nan")), errors


def drain_check(server, port, failures):
    """SIGTERM while streams and images run: each must still finish (a stream with [DONE] or an error event) or be
    refused with 503, a request sent after the signal gets 503 or finds the port closed, and the server exits 0."""
    drain = {200, 503}
    stream = json.dumps({"prompt": "The ", "max_tokens": 48, "n": 2, "stream": True})
    work = [("drain stream", 0, "stream_ttfe", "stream", "POST", "/v1/completions", stream, drain)] * 6 + \
        [("drain image", 0, "image", "json", "POST", "/v1/images/generations", json.dumps({"steps": 100, "n": 4}),
          drain)] * 2
    outcomes, seen = [], {}

    def one(case):
        try:
            status, problem, _, _ = run_case(port, case)
            outcomes.append(f"{case[0]}: {problem}" if problem else None)
        except ConnectionRefusedError:
            status = "refused"  # sent after the listener closed: fine
        except Exception as e:
            status = "dropped"
            outcomes.append(f"{case[0]}: {type(e).__name__}: {e}")
        seen[f"{case[0]} {status}"] = seen.get(f"{case[0]} {status}", 0) + 1

    threads = [threading.Thread(target=one, args=(c,)) for c in work]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the streams have started, the images compute
    server.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    try:
        status, _ = raw_call(port, raw_request("POST", "/v1/completions", json.dumps({"prompt": "a"}).encode()))
        if status != 503:
            failures.append(f"a request after SIGTERM got {status}, not 503")
    except ConnectionRefusedError:
        pass  # the listener is already closed: fine
    for t in threads:
        t.join()
    failures.extend(o for o in outcomes if o)
    try:
        code = server.wait(timeout=DRAIN + 15)
    except subprocess.TimeoutExpired:
        server.kill()
        code = server.wait()
        failures.append(f"the server did not exit within {DRAIN + 15} s of SIGTERM")
    if code != 0:
        failures.append(f"exit code {code} after SIGTERM")
    return code, dict(sorted(seen.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("aigc"), ap.add_argument("seconds", type=float)
    ap.add_argument("clients", type=int, nargs="?", default=64)
    ap.add_argument("--json-out"), ap.add_argument("--ckpt"), ap.add_argument("--image-ckpt")
    a = ap.parse_args()
    text_ckpt, image_ckpt = a.ckpt, a.image_ckpt
    if not (text_ckpt and image_ckpt):
        text_ckpt, image_ckpt = train(a.aigc, tempfile.mkdtemp(prefix="aigc-load-"))
    log(f"models: {text_ckpt}, {image_ckpt}")
    server = subprocess.Popen([a.aigc, "serve", "--ckpt", text_ckpt, "--image-ckpt", image_ckpt, "--port", "0",
                               "--quiet", "--parallel", "4", "--timeout", str(TIMEOUT)],
                              stderr=subprocess.PIPE, text=True)
    port = None
    for line in server.stderr:
        if m := re.search(r"http://127\.0\.0\.1:(\d+)/", line):
            port = int(m.group(1))
            break
    if port is None:
        print("FAIL: the server did not start")
        return 1
    threading.Thread(target=lambda: [sys.stderr.write("server: " + l) for l in server.stderr], daemon=True).start()

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT * 2)
    conn.request("GET", "/v1/models")
    ctx = json.loads(conn.getresponse().read())["data"][0]["context_length"]
    conn.close()
    cases = make_cases(ctx)
    for case in (c for c in cases if c[0] in ("completion", "image")):  # warm-up (the backend's threads start)
        t = time.time()
        status, problem, _, _ = run_case(port, case)
        log(f"warm-up {case[0]}: {status} in {time.time() - t:.1f} s {problem or ''}")
    statuses, by_case, failures, lock = {}, {}, [], threading.Lock()
    latency = {"text": [], "stream_ttfe": [], "image": []}  # seconds: answers, streams' first event, images
    t0 = time.time()
    deadline = t0 + a.seconds

    def client(seed):
        rng = random.Random(seed)
        while time.time() < deadline:
            case = rng.choices(cases, weights=[c[1] for c in cases])[0]
            try:
                status, problem, kind, seconds = run_case(port, case)
            except Exception as e:  # a dropped connection or a timeout, in a request its client did not abort
                status, problem, kind, seconds = "dropped", f"{type(e).__name__}: {e}", None, None
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                by_case[case[0]] = by_case.get(case[0], 0) + 1
                if kind and seconds is not None:
                    latency[kind].append(seconds)
                if problem:
                    failures.append(f"{case[0]} ({case[4]} {case[5]}): {problem}")

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.clients)]
    for c in clients:
        c.start()
    rss = watch(server, clients, failures, t0, give_up_at=deadline + TIMEOUT * 3)
    duration = time.time() - t0
    log(f"clients done after {duration:.1f} s")
    queue_wait = image_wait = float("nan")
    errors_5xx, code, drained = {}, server.returncode, {}
    if server.poll() is None:
        queue_wait, image_wait, errors_5xx = metrics(port)
        for what, v in (("aigc_queue_wait_max_seconds", queue_wait), ("aigc_image_wait_max_seconds", image_wait)):
            if not v < TIMEOUT:
                failures.append(f"{what} is {v}, not below --timeout {TIMEOUT}")
        if errors_5xx:
            failures.append(f"the server counted 5xx answers in /metrics: {errors_5xx}")
        code, drained = drain_check(server, port, failures)
        log(f"drained: exit code {code}")
    # Flat memory: the peak over the first third after warm-up (20% of the run) against the last third's.
    warm = [m for t, m in rss if t >= a.seconds * 0.2]
    first, last = (max(warm[: max(1, len(warm) // 3)]), max(warm[-max(1, len(warm) // 3):])) if warm else (0, 0)
    if last - first > max(16.0, 0.05 * first):
        failures.append(f"resident memory grew from {first:.1f} MiB to {last:.1f} MiB")
    total = sum(statuses.values())
    summary = {"seconds": a.seconds, "clients": a.clients, "duration_s": round(duration, 1), "requests": total,
               "requests_per_s": round(total / duration, 1), "by_status": dict(sorted(statuses.items())),
               "by_case": dict(sorted(by_case.items())), "status_429": statuses.get("429", 0),
               "latency": {k: percentiles(v) for k, v in latency.items()},
               "queue_wait_max_s": round(queue_wait, 3), "image_wait_max_s": round(image_wait, 3),
               "server_5xx_in_metrics": errors_5xx, "rss_mib_after_warmup": round(first, 1),
               "rss_mib_at_end": round(last, 1), "drain": drained, "exit_code": code, "failures": len(failures)}
    line = json.dumps(summary)
    print(line)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(line + "\n")
    for f in failures[:20]:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
