#!/usr/bin/python3
"""Soak test of `aigc serve` on loopback: THREADS clients send a random mix of good and bad requests for SECONDS.
Every answer must have the status its case expects (no 5xx, no dropped connection), clients that hang up
mid-stream must not hurt anyone, the server's resident memory must stay flat after warm-up, and SIGTERM must
end it with exit code 0.

    serve_soak.py AIGC_BINARY SECONDS [THREADS] [CKPT]

Without CKPT a tiny model is trained first (a few seconds). Prints one JSON summary line; exit 1 on failure."""
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def watch(server, threads, failures, t0, give_up_at=None):
    """Samples the server's resident memory every second while the client threads run: [(seconds, MiB)]. Stops
    early, with a failure, if the server dies or the clients are still busy at give_up_at (a hung request)."""
    rss = []
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        if server.poll() is not None:
            failures.append(f"the server died (exit code {server.returncode})")
            break
        rss.append((time.time() - t0, rss_mib(server.pid)))
        if give_up_at is not None and time.time() > give_up_at:
            failures.append("clients still busy long after the end: a hung request")
            break
    return rss


def main():
    aigc, seconds = sys.argv[1], float(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    tmp = tempfile.mkdtemp(prefix="aigc-soak-")
    ckpt = sys.argv[4] if len(sys.argv) > 4 else None
    if not ckpt:
        subprocess.run([aigc, "train", "--preset", "tiny", "--steps", "10", "--out", tmp + "/tiny"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpt = tmp + "/tiny/ckpt.safetensors"
    server = subprocess.Popen([aigc, "serve", "--ckpt", ckpt, "--port", "0", "--quiet", "--parallel", "4",
                               "--max-body", "65536", "--timeout", "60",
                               # room for every worker's n=3 at once: a 429 here would be a bug, not load
                               "--max-queue", str(max(16, 3 * threads))], stderr=subprocess.PIPE, text=True)
    port = None
    for line in server.stderr:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        print("FAIL: the server did not start")
        return 1
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()  # keep draining stderr

    ctx = 64  # the tiny preset's context
    good = {"prompt": "The ", "max_tokens": 8}
    cases = [  # (name, method, path, body (str or None), expected status, streamed)
        ("completion", "POST", "/v1/completions", json.dumps(good), 200, False),
        ("completion stream", "POST", "/v1/completions", json.dumps({**good, "stream": True}), 200, True),
        ("chat stream", "POST", "/v1/chat/completions",
         json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}), 200, True),
        ("n=3", "POST", "/v1/completions", json.dumps({**good, "n": 3}), 200, False),
        ("tokenize", "POST", "/tokenize", json.dumps({"content": "hello"}), 200, False),
        ("models", "GET", "/v1/models", None, 200, False),
        ("health", "GET", "/health", None, 200, False),
        ("metrics", "GET", "/metrics", None, 200, False),
        ("malformed JSON", "POST", "/v1/completions", '{"prompt": "a", ', 400, False),
        ("wrong type", "POST", "/v1/completions", json.dumps({"prompt": "a", "temperature": "hot"}), 400, False),
        ("missing prompt", "POST", "/v1/completions", json.dumps({"max_tokens": 3}), 400, False),
        ("unknown model", "POST", "/v1/completions", json.dumps({"model": "nope", "prompt": "a"}), 404, False),
        ("negative max_tokens", "POST", "/v1/completions", json.dumps({"prompt": "a", "max_tokens": -1}), 400, False),
        ("huge max_tokens", "POST", "/v1/completions", json.dumps({"prompt": "a", "max_tokens": 10**12}), 400, False),
        ("prompt too long", "POST", "/v1/completions", json.dumps({"prompt": "x" * (ctx + 10)}), 400, False),
        ("body too large", "POST", "/v1/completions", json.dumps({"prompt": "x" * 100000}), 413, False),
        ("unknown route", "GET", "/v1/nothing", None, 404, False),
        ("wrong method", "DELETE", "/v1/completions", None, 405, False),
        ("hang up mid-stream", "POST", "/v1/completions", json.dumps({**good, "max_tokens": 60, "stream": True}),
         None, True),
    ]
    counts, failures, lock = {}, [], threading.Lock()
    deadline = time.time() + seconds

    def worker(seed):
        rng = random.Random(seed)
        while time.time() < deadline:
            name, method, path, body, expect, streamed = rng.choice(cases)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {"Content-Type": "application/json"} if body else {}
                conn.request(method, path, body=body, headers=headers)
                res = conn.getresponse()
                if expect is None:  # read one chunk, then close the socket under the server
                    res.read1(64)
                    conn.sock.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    ok = res.status == 200
                else:
                    data = res.read()
                    ok = res.status == expect
                    if ok and streamed:
                        ok = data.rstrip().endswith(b"data: [DONE]")
                    elif ok and expect >= 400:
                        ok = "error" in json.loads(data)
                    conn.close()
                with lock:
                    counts[name] = counts.get(name, 0) + 1
                    if not ok:
                        failures.append(f"{name}: status {res.status}")
            except Exception as e:  # a dropped connection or a timeout is a failure too
                with lock:
                    failures.append(f"{name}: {type(e).__name__}: {e}")

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    rss = watch(server, workers, failures, time.time())
    for w in workers:
        w.join()
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)
    if code != 0:
        failures.append(f"exit code {code} after SIGTERM")
    # Flat memory: the last quarter's peak against the peak after warm-up (the first quarter).
    warm = [m for t, m in rss if t >= seconds / 4]
    first, last = (max(warm[: max(1, len(warm) // 3)]), max(warm[-max(1, len(warm) // 3):])) if warm else (0, 0)
    growth = last - first
    if growth > max(16.0, 0.05 * first):
        failures.append(f"resident memory grew from {first:.1f} MiB to {last:.1f} MiB")
    print(json.dumps({"seconds": seconds, "threads": threads, "requests": sum(counts.values()),
                      "by_case": counts, "failures": len(failures), "rss_mib_after_warmup": round(first, 1),
                      "rss_mib_at_end": round(last, 1), "exit_code": code}))
    for f in failures[:20]:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
