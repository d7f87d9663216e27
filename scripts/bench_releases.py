"""P3: releases under load; see bench-releases.sh. Prints one line per figure, then one
JSON object."""
import json, math, os, re, shutil, signal, statistics, subprocess, sys, tempfile, threading, time, urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_runtime as rt  # noqa: E402  (the same platform start, API and process helpers)

REPLICAS = 4

# A keep-alive HTTP/1.1 server answering every GET with a few bytes: the backend costs
# little, so the run measures the router and the release, not Python's directory
# listing. Without TCP_NODELAY its two writes per answer (head, then body) meet the
# router's delayed ACK, and every request waits 40 ms.
SERVER = (
    "import sys, http.server as h\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    disable_nagle_algorithm = True\n"
    "    def do_GET(self):\n"
    "        body = b'ok\\n'\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "h.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)
# The same server answering 500 to every fifth request that came through the router
# (probes, which come straight, always pass): a canary that must be rolled back.
BAD_SERVER = SERVER.replace(
    "    def do_GET(self):\n        body = b'ok\\n'\n        self.send_response(200)\n",
    "    n = 0\n"
    "    def do_GET(self):\n        body = b'ok\\n'\n"
    "        routed = 'X-Forwarded-For' in self.headers\n"
    "        if routed: H.n += 1\n"
    "        self.send_response(500 if routed and H.n % 5 == 0 else 200)\n",
)
assert BAD_SERVER != SERVER
MIN_REQUESTS = 100_000
# Each strategy's policy for the runs under load (the canary's steps short, so that
# many canary releases go to 100% within one run).
STRATEGIES = {
    "rolling": {"type": "rolling"},
    "inplace": {"type": "in_place"},
    "canary": {"type": "canary", "steps": [{"weight": 10, "pause_s": 2}, {"weight": 50, "pause_s": 2},
                                            {"weight": 100, "pause_s": 1}],
               "analysis": {"interval_s": 1, "min_requests": 20}},
}
ABORT_INTERVAL_S = 2
LOAD_CONNECTIONS = 4
LOAD_FRACTION = 0.6


def answer(url):
    """The status of a GET (an error status too); None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


def wrk(url, seconds, connections):
    """(requests, requests per second, p99 ms, failed): failed counts non-2xx answers
    and every socket error (connect, read, write, timeout)."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return requests, rps, p99_ms, failed


def oha(url, seconds, connections, rate):
    """The same figures as `wrk`, from oha at a fixed rate (open loop, latency corrected
    for coordinated omission). A request cut off by the run's end is not a failure."""
    out = subprocess.run(["oha", "-z", f"{seconds}s", "-c", str(connections), "-q", str(rate),
                          "--latency-correction", "--no-tui", "--output-format", "json", url],
                         capture_output=True, text=True).stdout
    d = json.loads(out)
    codes = d.get("statusCodeDistribution", {})
    errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
    failed = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(errors.values())
    return sum(codes.values()) + sum(errors.values()), d["summary"]["requestsPerSec"], \
        d["latencyPercentiles"]["p99"] * 1000, failed


def main():
    work = tempfile.mkdtemp(prefix="paas-bench-releases-")
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
        dev = token("dev")
        tadmin = token("tadmin")
        tenant = "/api/v1/tenants/acme"
        app = f"{tenant}/environments/dev/applications/steady"
        revision = [0]

        def spec(server=SERVER):
            revision[0] += 1
            return {"command": "python3", "args": ["-c", server, "$PORT"], "ports": [{"name": "http"}],
                    "replicas": REPLICAS, "env": {"BUILD": str(revision[0])}}

        def policy(strategy):
            rt.api(base, tadmin, "PUT", f"{tenant}/environments/dev/release-policy",
                   {"approval": {"required": False}, "strategy": strategy})

        rt.api(base, dev, "POST", f"{tenant}/applications", {"environment": "dev", "name": "steady", "spec": spec()})
        url = f"{router}/apps/acme/dev/steady/"
        rt.wait_200(url)

        def ready():
            got = rt.api(base, dev, "GET", f"{app}/instances")["items"]
            return sum(1 for i in got if i["ready"] and i["phase"] == "running")

        while ready() < REPLICAS:
            time.sleep(0.1)
        time.sleep(1)

        def release_and_wait(started):
            """Changes the spec, then waits for its release to end; its state and seconds."""
            rt.api(base, dev, "PUT", app, {"spec": spec()})
            newest = rt.api(base, dev, "GET", f"{app}/releases")["items"][0]
            while True:
                r = rt.api(base, dev, "GET", f"{app}/releases/{newest['id']}")
                if r["state"] not in ("pending_approval", "approved", "progressing", "paused"):
                    return r["state"], time.monotonic() - started
                time.sleep(0.2)

        top = wrk(url, 5, 32)
        # The load: a fixed rate of 60% of the router's maximum with oha; where oha is
        # missing, wrk's closed loop (which runs at the maximum, a harsher test).
        rate = int(top[1] * LOAD_FRACTION)
        if shutil.which("oha"):
            def load(seconds):
                return oha(url, seconds, 16, rate)
        else:
            def load(seconds):
                return wrk(url, seconds, LOAD_CONNECTIONS)
        steady = load(10)
        seconds = max(30, min(150, math.ceil(MIN_REQUESTS * 1.1 / steady[1])))

        def under_load():
            """One release after another for the whole of a wrk run, so that its p99 is
            the p99 during releases: (wrk's figures, each release's (state, seconds))."""
            out = {}
            t = threading.Thread(target=lambda: out.update(w=load(seconds)))
            t.start()
            time.sleep(1)
            done = []
            end = time.monotonic() + seconds - 2
            while time.monotonic() < end:
                done.append(release_and_wait(time.monotonic()))
            t.join()
            return out["w"], done

        runs = {}
        for name, strategy in STRATEGIES.items():
            policy(strategy)
            figures, releases = under_load()
            states = sorted({st for st, _ in releases})
            runs[name] = {
                "figures": figures,
                "releases": len(releases),
                "state": "succeeded" if states == ["succeeded"] else ",".join(states),
                "median_s": statistics.median(took for _, took in releases) if releases else None,
                "ratio": figures[2] / steady[2] if steady[2] else None,
            }

        # A canary that answers 500 to one request in five, under 200 requests per
        # second: how many analysis checks until it is rolled back, and whether any
        # stable instance was restarted meanwhile.
        policy({"type": "canary", "steps": [{"weight": 20, "pause_s": 60}, {"weight": 100, "pause_s": 60}],
                "analysis": {"interval_s": ABORT_INTERVAL_S, "min_requests": 20}})
        # The last release's earlier instances drain and stop: wait until only the
        # stable revision's four processes run, and take those.
        settle = time.monotonic() + 30
        while len(rt.instance_pids("steady-", data)) != REPLICAS and time.monotonic() < settle:
            time.sleep(0.2)
        stable_pids = sorted(rt.instance_pids("steady-", data))
        statuses = {}
        stop_abort = threading.Event()

        def steady_200():
            next_at = time.monotonic()
            while not stop_abort.is_set():
                next_at += 1 / 200
                code = answer(url)
                statuses[code] = statuses.get(code, 0) + 1
                time.sleep(max(0.0, next_at - time.monotonic()))

        abort_loader = threading.Thread(target=steady_200, daemon=True)
        abort_loader.start()
        time.sleep(1)
        rt.api(base, dev, "PUT", app, {"spec": spec(BAD_SERVER)})
        bad = rt.api(base, dev, "GET", f"{app}/releases")["items"][0]["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            aborted = rt.api(base, dev, "GET", f"{app}/releases/{bad}")
            if aborted["state"] not in ("progressing", "paused", "approved", "pending_approval"):
                break
            time.sleep(0.2)
        time.sleep(2)
        stop_abort.set()
        abort_loader.join()
        abort_checks = (aborted.get("canary") or {}).get("checks")
        abort_state = aborted["state"]
        stable_kept = all(pid in rt.instance_pids("steady-", data) for pid in stable_pids)
        abort_dropped = sum(v for k, v in statuses.items() if k not in (200, 500))
        policy(STRATEGIES["rolling"])

        # kill -9 of the control plane in the middle of a slow rolling release under
        # 200 requests per second (one new instance at a time, each counted after 2 s
        # ready): the release completes after the restart, nothing twice, nothing left.
        policy({"type": "rolling", "max_surge": 1, "max_unavailable": 0, "min_ready_s": 2})
        results = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def load():
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += 1 / 200
                results["ok" if rt.status(url, timeout=5) == 200 else "failed"] += 1
                time.sleep(max(0.0, next_at - time.monotonic()))

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(1)
        rt.api(base, dev, "PUT", app, {"spec": spec()})
        newest = rt.api(base, dev, "GET", f"{app}/releases")["items"][0]["id"]
        time.sleep(3)
        proc.kill()
        proc.wait()
        time.sleep(2)
        # A restart prints no passwords (they were made at the first start).
        proc, _ = rt.start_platform(data, cport, rport, env)
        dev = token("dev")
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            state = rt.api(base, dev, "GET", f"{app}/releases/{newest}")["state"]
            if state not in ("progressing", "paused", "approved", "pending_approval"):
                break
            time.sleep(0.2)
        stop.set()
        loader.join()
        # The last old instance drains before it stops: wait until what runs settles.
        settle = time.monotonic() + 30
        while True:
            instances = [i for i in rt.api(base, dev, "GET", f"{app}/instances")["items"] if i["phase"] != "stopping"]
            processes = len(rt.instance_pids("steady-", data))
            if (len(instances), processes) == (REPLICAS, REPLICAS) or time.monotonic() > settle:
                break
            time.sleep(0.5)

        requests_min = min(r["figures"][0] for r in runs.values())
        ratios = [r["ratio"] for r in runs.values() if r["ratio"] is not None]
        print(f"router maximum (wrk, 32 connections): {top[1]:.0f} req/s; steady load ({'oha at ' + str(rate) + ' req/s' if shutil.which('oha') else f'wrk, {LOAD_CONNECTIONS} connections'}): {steady[1]:.0f} req/s "
              f"= {steady[1] / top[1]:.0%} of it, p99 {steady[2]:.2f} ms")
        for name, r in runs.items():
            f = r["figures"]
            median = f"{r['median_s']:.1f} s" if r["median_s"] is not None else "-"
            print(f"{name} releases of {REPLICAS} back to back under load for {seconds} s: {r['releases']} releases, "
                  f"{r['state']}, median {median} each; {f[3]} failed of {f[0]} requests; "
                  f"p99 {f[2]:.2f} ms -> ratio {r['ratio']:.2f} (aims: 0 failed, >= {MIN_REQUESTS}, <= 2)")
        print(f"canary failing 1 request in 5 under 200 req/s: {abort_state} after {abort_checks} checks of "
              f"{ABORT_INTERVAL_S} s (aim: rolled back within 4); stable instances restarted: {not stable_kept}; "
              f"answers {dict(sorted(statuses.items()))} ({abort_dropped} neither 200 nor the canary's 500)")
        print(f"control plane kill -9 mid-release under 200 req/s: release {state}; {results['failed']} failed of "
              f"{results['ok'] + results['failed']}; {len(instances)} instances listed, {processes} processes "
              f"(aim: succeeded, 0 failed, {REPLICAS} and {REPLICAS})")
        print(json.dumps({
            "p3_failed_rolling": runs["rolling"]["figures"][3],
            "p3_failed_inplace": runs["inplace"]["figures"][3],
            "p3_failed_canary": runs["canary"]["figures"][3],
            "p3_requests_min": requests_min,
            "p3_p99_ratio_max": round(max(ratios), 2) if ratios else None,
            "canary_abort_intervals": abort_checks if abort_state == "rolled_back" else None,
            "cp_kill_release_failed": results["failed"],
            "p3_p99_ratio": {k: round(r["ratio"], 2) for k, r in runs.items() if r["ratio"] is not None},
            "p3_releases": {k: r["releases"] for k, r in runs.items()},
            "p3_release_states": {k: r["state"] for k, r in runs.items()},
            "canary_abort_state": abort_state,
            "canary_abort_stable_restarted": not stable_kept,
            "canary_abort_dropped": abort_dropped,
            "cp_kill_release_state": state,
            "cp_kill_instances": len(instances),
            "cp_kill_processes": processes,
            "load_seconds": seconds,
            "load_fraction_of_max": round(steady[1] / top[1], 2),
            "router_max_rps": round(top[1]),
            "steady_p99_ms": round(steady[2], 2),
            "load_generator": "oha" if shutil.which("oha") else "wrk",
        }))
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
