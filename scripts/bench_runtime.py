"""Measures the local runtime; see bench-runtime.sh. Prints one line per figure."""
import json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request

PAAS = os.path.abspath(sys.argv[1])
RUNS = 5
ONBOARD_RUNS = 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(url, host=None, timeout=2):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except Exception:
        return None


def wait_200(url, limit=60):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if status(url, timeout=1) == 200:
            return time.monotonic() - start
        time.sleep(0.005)
    raise SystemExit(f"{url} never answered 200")


def api(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else None


def instance_pids(prefix, under=None):
    """Instance processes whose PAAS_INSTANCE starts with prefix (and, given `under`, that
    work in a directory below it: this run's platform, not another's): {pid: (instance, port)}."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            continue
        # The sandbox around an instance (setpriv, then bubblewrap) is not the instance.
        if argv0.endswith((b"bwrap", b"setpriv")):
            continue
        vars = dict(e.decode(errors="replace").split("=", 1) for e in env if b"=" in e)
        if vars.get("PAAS_INSTANCE", "").startswith(prefix):
            if under is not None:
                try:
                    if not os.readlink(f"/proc/{pid}/cwd").startswith(under):
                        continue
                except OSError:
                    continue
            found[int(pid)] = (vars["PAAS_INSTANCE"], vars.get("PORT"))
    return found


def start_platform(data, cport, rport, db_env):
    proc = subprocess.Popen([PAAS, "up", "--data-dir", data, "--listen", f"127.0.0.1:{cport}",
                             "--router-listen", f"127.0.0.1:{rport}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=db_env)
    passwords = {}
    for line in proc.stdout:
        cols = line.split()
        if len(cols) == 4 and cols[0] in ("admin", "dev", "ops", "tadmin"):
            passwords[cols[0]] = cols[3]
        if len(passwords) == 4 or "created on first start" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, passwords


KEEPALIVE_SERVER = (
    "import sys, http.server as h; h.SimpleHTTPRequestHandler.protocol_version = 'HTTP/1.1'; "
    "h.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), h.SimpleHTTPRequestHandler).serve_forever()"
)


def wrk(url, host=None):
    cmd = ["wrk", "-t2", "-c8", "-d8s", "--latency", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


def main():
    work = tempfile.mkdtemp(prefix="paas-bench-")
    os.chmod(work, 0o755)
    data = os.path.join(work, "data")
    cport, rport = free_port(), free_port()
    env = dict(os.environ, PAAS_LOG="warn")
    router = f"http://127.0.0.1:{rport}"
    proc, passwords = start_platform(data, cport, rport, env)
    base = f"http://127.0.0.1:{cport}"
    try:
        token = json.loads(urllib.request.urlopen(urllib.request.Request(
            base + "/api/v1/auth/token", data=json.dumps({"username": "dev", "password": passwords["dev"]}).encode(),
            headers={"Content-Type": "application/json"}), timeout=10).read())["token"]

        # Baseline: the same application started by hand, to its first 200.
        bare = []
        for _ in range(ONBOARD_RUNS):
            port = free_port()
            started = time.monotonic()
            p = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
            wait_200(f"http://127.0.0.1:{port}/")
            bare.append(time.monotonic() - started)
            p.kill()
            p.wait()
        bare_s = statistics.median(bare)

        # Onboarding request to first 200 through the router.
        spec = {"command": "python3", "args": ["-m", "http.server", "$PORT", "--bind", "127.0.0.1"],
                "ports": [{"name": "http"}], "replicas": 1}
        onboard = []
        for i in range(ONBOARD_RUNS):
            started = time.monotonic()
            api(base, token, "POST", "/api/v1/tenants/acme/applications", {"environment": "dev", "name": f"bench-{i}", "spec": spec})
            wait_200(f"{router}/apps/acme/dev/bench-{i}/")
            onboard.append(time.monotonic() - started)
            if i >= RUNS:
                # Only the first few stay (the tenant's quota is the demo's 20 instances).
                api(base, token, "DELETE", f"/api/v1/tenants/acme/environments/dev/applications/bench-{i}")
                while instance_pids(f"bench-{i}-"):
                    time.sleep(0.05)
        onboard_s = statistics.median(onboard)
        onboard_p99 = sorted(onboard)[max(0, int(round(0.99 * len(onboard))) - 1)]
        bare_p99 = sorted(bare)[max(0, int(round(0.99 * len(bare))) - 1)]

        # kill -9 of the only instance to serving again.
        heal = []
        for i in range(RUNS):
            pids = instance_pids(f"bench-{i}-")
            pid = next(iter(pids))
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while status(f"{router}/apps/acme/dev/bench-{i}/", timeout=1) == 200 and time.monotonic() - started < 2:
                time.sleep(0.002)
            wait_200(f"{router}/apps/acme/dev/bench-{i}/")
            heal.append(time.monotonic() - started)
        heal_s = statistics.median(heal)

        # Throughput and p99: straight to the instance, then through the router.
        port = next(iter(instance_pids("bench-0-").values()))[1]
        direct = wrk(f"http://127.0.0.1:{port}/")
        routed = wrk(f"{router}/apps/acme/dev/bench-0/")
        # The same server speaking HTTP/1.1, which keeps connections open.
        keep_spec = {"command": "python3", "args": ["-c", KEEPALIVE_SERVER, "$PORT"],
                     "ports": [{"name": "http"}], "replicas": 1}
        api(base, token, "POST", "/api/v1/tenants/acme/applications", {"environment": "dev", "name": "keepalive", "spec": keep_spec})
        wait_200(f"{router}/apps/acme/dev/keepalive/")
        kport = next(iter(instance_pids("keepalive-").values()))[1]
        kdirect = wrk(f"http://127.0.0.1:{kport}/")
        krouted = wrk(f"{router}/apps/acme/dev/keepalive/")

        # kill -9 of the control plane under 200 requests per second.
        api(base, token, "PUT", "/api/v1/tenants/acme/environments/dev/applications/bench-0/replicas", {"replicas": 2})
        while len(instance_pids("bench-0-")) < 2:
            time.sleep(0.05)
        time.sleep(1.0)
        results = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def load():
            url = f"{router}/apps/acme/dev/bench-0/"
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += 1 / 200
                results["ok" if status(url, timeout=5) == 200 else "failed"] += 1
                time.sleep(max(0.0, next_at - time.monotonic()))

        def episode(interrupt):
            results.update(ok=0, failed=0)
            stop.clear()
            threads = [threading.Thread(target=load) for _ in range(1)]
            for t in threads:
                t.start()
            time.sleep(2)
            interrupt()
            time.sleep(3)
            stop.set()
            for t in threads:
                t.join()
            return dict(results)

        def kill_and_restart():
            nonlocal proc
            proc.kill()
            proc.wait()
            time.sleep(2)
            proc, _ = start_platform(data, cport, rport, env)

        def stop_and_restart():
            # What an operator does to restart or upgrade the platform: SIGTERM, start.
            nonlocal proc
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            proc, _ = start_platform(data, cport, rport, env)

        killed = episode(kill_and_restart)
        restarted = episode(stop_and_restart)
        time.sleep(2)
        instances = api(base, token, "GET", "/api/v1/tenants/acme/applications?environment=dev")
        # bench-0 scaled to 2, the other benches 1, keepalive 1, hello 2
        expected = 2 + (RUNS - 1) + 1 + 2
        running = sum(len(instance_pids(p, data)) for p in ("bench-", "hello-", "keepalive-"))
        agents = sum(1 for pid in filter(str.isdigit, os.listdir("/proc"))
                     if b"agent\0--name\0node-1" in open(f"/proc/{pid}/cmdline", "rb").read()
                     and data.encode() in open(f"/proc/{pid}/cmdline", "rb").read())

        print(f"bare start to first 200 (median of {ONBOARD_RUNS}): {bare_s*1000:.0f} ms")
        print(f"onboarding request to first 200 through the router (median of {ONBOARD_RUNS}): {onboard_s*1000:.0f} ms -> ratio {onboard_s/bare_s:.2f} (aim <= 1.5)")
        print(f"onboarding p99 of {ONBOARD_RUNS}: {onboard_p99*1000:.0f} ms against a bare start's {bare_p99*1000:.0f} ms -> ratio {onboard_p99/bare_p99:.2f} (aim <= 2.0)")
        print(f"kill -9 of the only instance to serving again: {heal_s*1000:.0f} ms -> ratio {heal_s/bare_s:.2f}, worst of {RUNS} {max(heal)/bare_s:.2f} (aim <= 2 in every run)")
        print(f"throughput direct {direct[0]:.0f} req/s, through the router {routed[0]:.0f} req/s -> ratio {routed[0]/direct[0]:.2f} (aim >= 0.5)")
        print(f"p99 direct {direct[1]:.2f} ms, through the router {routed[1]:.2f} ms -> added {routed[1]-direct[1]:.2f} ms (aim <= 1 ms); non-2xx {direct[2]}/{routed[2]}")
        print(f"keep-alive backend: direct {kdirect[0]:.0f} req/s p99 {kdirect[1]:.2f} ms, through the router {krouted[0]:.0f} req/s p99 {krouted[1]:.2f} ms -> added {krouted[1]-kdirect[1]:.2f} ms (aim <= 1 ms)")
        print(f"control plane kill -9 under 200 req/s: {killed['failed']} failed of {killed['ok'] + killed['failed']} (aim 0)")
        print(f"paas up restarted (SIGTERM, start) under 200 req/s: {restarted['failed']} failed of {restarted['ok'] + restarted['failed']} (aim 0)")
        print(f"after restart: {running} instance processes for {expected} wanted, {agents} agent(s) for node-1 (aim {expected} and 1)")
        if running != expected:
            names = sorted(v[0] for prefix in ("bench-", "hello-", "keepalive-") for v in instance_pids(prefix, data).values())
            print(f"  instance processes: {names}")
            listed = api(base, token, "GET", "/api/v1/tenants/acme/applications?environment=dev")
            for app in listed["items"]:
                got = api(base, token, "GET", f"/api/v1/tenants/acme/environments/dev/applications/{app['name']}/instances")
                print(f"  {app['name']}: " + ", ".join(f"{i['name']} r{i['revision']} {i['phase']}" for i in got["items"]))
        print(f"({len(instances['items'])} applications in acme/dev)")
        # P6, P7 and P8 come from bench_scale.py (run first by bench-runtime.sh); run
        # alone, this script leaves them null, not a guess.
        scale = json.loads(os.environ.get("PAAS_BENCH_SCALE_JSON") or "{}")
        print(json.dumps({
            "p1_onboard_ratio_median": round(onboard_s / bare_s, 2),
            "p1_onboard_ratio_p99": round(onboard_p99 / bare_p99, 2),
            "p4_kill_ratio_max": round(max(heal) / bare_s, 2),
            "p9_throughput_ratio": round(min(routed[0] / direct[0], krouted[0] / kdirect[0]), 2),
            "p9_added_p99_ms_close": round(routed[1] - direct[1], 2),
            "p9_added_p99_ms_keepalive": round(krouted[1] - kdirect[1], 2),
            "p8_rss_mib": scale.get("p8_rss_mib"),
            "p8_change_to_agent_p99_ms": scale.get("p8_change_to_agent_p99_ms"),
            "p8_reconcile_pass_ms": scale.get("p8_reconcile_pass_ms"),
            "cp_kill_failed": killed["failed"],
            "p6_list_ratio": scale.get("p6_list_ratio"), "p6_list_p99_ms": scale.get("p6_list_p99_ms"),
            "p6_size_cost_ratio": scale.get("p6_size_cost_ratio"),
            "p7_create_p99_ratio": scale.get("p7_create_p99_ratio"),
            "bare_start_ms": round(bare_s * 1000),
            "onboard_ms": round(onboard_s * 1000), "onboard_ratio": round(onboard_s / bare_s, 2),
            "heal_ms": round(heal_s * 1000), "heal_ratio": round(heal_s / bare_s, 2),
            "throughput_ratio": round(routed[0] / direct[0], 2),
            "p99_added_ms": round(routed[1] - direct[1], 2),
            "control_plane_kill_failed": killed["failed"],
            "control_plane_kill_requests": killed["ok"] + killed["failed"],
            "paas_up_restart_failed": restarted["failed"],
            "paas_up_restart_requests": restarted["ok"] + restarted["failed"],
            "instances_after_restart": running, "instances_wanted": expected, "agents_node_1": agents,
        }))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        # Stopping `paas up` leaves the applications running; `paas down` stops all.
        subprocess.run([PAAS, "down", "--data-dir", data], env=env, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
