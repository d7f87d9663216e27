"""P2: from a load step to a new instance serving through the router; see
bench-autoscaling.sh. Prints one line per figure, then one JSON object."""
import json, os, shutil, signal, statistics, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_runtime as rt  # noqa: E402  (the same platform start, API and bare-start helpers)

RUNS = 5
SAMPLE_S = 1
TARGET_RPS = 20
LOAD_RPS = 60


def body(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode(errors="replace").strip() if r.status == 200 else None
    except Exception:
        return None


class Load:
    """About LOAD_RPS GETs a second from 4 threads until stopped; records every body."""

    def __init__(self, url):
        self.url, self.stop, self.bodies = url, threading.Event(), []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(4)]
        for t in self.threads:
            t.start()

    def run(self):
        period = 4 / LOAD_RPS
        while not self.stop.is_set():
            started = time.monotonic()
            b = body(self.url)
            if b:
                self.bodies.append((time.monotonic(), b))
            time.sleep(max(0.0, period - (time.monotonic() - started)))

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def main():
    work = tempfile.mkdtemp(prefix="paas-bench-autoscaling-")
    os.chmod(work, 0o755)
    data = os.path.join(work, "data")
    cport, rport = rt.free_port(), rt.free_port()
    env = dict(os.environ, PAAS_LOG="warn")
    proc, passwords = rt.start_platform(data, cport, rport, env)
    base = f"http://127.0.0.1:{cport}"
    router = f"http://127.0.0.1:{rport}"
    try:
        def token(user):
            return json.loads(urllib.request.urlopen(urllib.request.Request(
                base + "/api/v1/auth/token", data=json.dumps({"username": user, "password": passwords[user]}).encode(),
                headers={"Content-Type": "application/json"}), timeout=10).read())["token"]
        dev, tadmin = token("dev"), token("tadmin")

        # Baseline: the sample application started by hand, to its first 200 (median of 20).
        bare = []
        for _ in range(20):
            port = rt.free_port()
            started = time.monotonic()
            p = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
            rt.wait_200(f"http://127.0.0.1:{port}/")
            bare.append(time.monotonic() - started)
            p.kill()
            p.wait()
        bare_s = statistics.median(bare)

        # Each instance answers with its own port, so a new one is seen when it serves.
        app = "/api/v1/tenants/acme/environments/dev/applications/elastic"
        spec = {"command": "sh", "args": ["-c", "echo $PORT > index.html && exec python3 -m http.server $PORT --bind 127.0.0.1"],
                "ports": [{"name": "http"}], "replicas": 1}
        rt.api(base, dev, "POST", "/api/v1/tenants/acme/applications", {"environment": "dev", "name": "elastic", "spec": spec})
        url = f"{router}/apps/acme/dev/elastic/"
        rt.wait_200(url)
        rt.api(base, tadmin, "PUT", app + "/autoscaling", {
            "min": 1, "max": 4, "sample_interval_s": SAMPLE_S,
            "rules": [{"metric": {"type": "requests_per_second"}, "target": TARGET_RPS}],
            "behavior": {"manual_cooldown_s": 0,
                         "scale_down": {"stabilization_s": 0, "limits": [{"kind": "instances", "value": 4, "period_s": 1}]}}})
        steps = []
        for _ in range(RUNS):
            # Back to one quiet instance.
            deadline = time.monotonic() + 60
            while True:
                ready = [i for i in rt.api(base, dev, "GET", app + "/instances")["items"] if i["ready"]]
                if len(ready) == 1 and len(rt.api(base, dev, "GET", app + "/instances")["items"]) == 1:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("the application never came back to one instance")
                time.sleep(0.2)
            time.sleep(2 * SAMPLE_S + 1)
            first = body(url)
            load = Load(url)
            started = time.monotonic()
            while True:
                new = [t for t, b in list(load.bodies) if b != first]
                if new:
                    steps.append(new[0] - started)
                    break
                if time.monotonic() - started > 60:
                    load.end()
                    raise SystemExit("no new instance served within 60 s")
                time.sleep(0.02)
            load.end()
        step_s = statistics.median(steps)
        ratio = step_s / (SAMPLE_S + bare_s)
        print(f"bare start to first 200 (median of 20): {bare_s*1000:.0f} ms")
        print(f"load step ({LOAD_RPS} req/s against {TARGET_RPS} per instance, {SAMPLE_S} s samples) to a new instance serving through the router: "
              f"median {step_s:.2f} s, worst {max(steps):.2f} s of {RUNS} (aim <= 6 s)")
        print(f"ratio to (sample interval + bare start): {ratio:.2f} (aim <= 1.5)")
        print(json.dumps({"p2_load_step_to_serving_s": round(step_s, 2), "p2_ratio": round(ratio, 2),
                          "p2_worst_s": round(max(steps), 2), "bare_start_ms": round(bare_s * 1000),
                          "sample_interval_s": SAMPLE_S, "runs": RUNS}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([rt.PAAS, "down", "--data-dir", data], env=env, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
