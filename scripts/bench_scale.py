"""The control plane at scale; see bench-runtime.sh. Runs `paas serve` against a
PostgreSQL of its own and measures:

- P7: p99 of creating an application through the API (wrk, 4 connections) against the
  p99 of a single-row insert into the same PostgreSQL (pgbench, 4 clients), on a
  database and a control plane of its own;
- P8: with 500 simulated nodes (paas-simnodes: the agent protocol, one process) and
  10,000 instances across 1,000 applications, the control plane's RSS, how long a
  change to one application takes to reach its node (p99 of 50), and the longest
  full reconcile pass seen over 10 s;
- P6: a tenant's applications page in the console (wrk, 8 connections) with 10,000
  applications against `/healthz` of the same server, its p99, and the page's cost (time
  per request) at 10,000 applications against at 100. P6 runs first, on a database and a
  control plane of its own, so its 10,000 applications do not weigh on P8's passes.

Its last line is one JSON object with those keys."""
import base64, json, os, re, secrets, shutil, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

PAAS = os.path.abspath(sys.argv[1])
SIMNODES = os.path.abspath(sys.argv[2])
NODES, APPS, REPLICAS, CHANGES = 500, 1000, 10, 200


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_postgres(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def p99(values):
    ordered = sorted(values)
    return ordered[max(0, int(round(0.99 * len(ordered))) - 1)]


class Api:
    def __init__(self, base):
        self.base, self.token = base, None

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return json.loads(text) if text else None


# wrk: each request creates an application of a new name (thread and counter).
CREATE_LUA = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  n = 0
  round = args[1] or "0"
end
function request()
  n = n + 1
  local body = string.format('{"environment":"test","name":"p7-%s-%d-%d","spec":SPEC}', round, id, n)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["Authorization"] = "Bearer TOKEN"}, body)
end
"""


def wrk(url, cookie=None):
    cmd = ["wrk", "-t2", "-c8", "-d8s", "--latency", url]
    if cookie:
        cmd[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} responses were not 2xx")
    return rps, p99_ms


def start_serve(db, work, name, extra=None):
    port = free_port()
    password = secrets.token_urlsafe(16)
    token = secrets.token_urlsafe(24)
    env = dict(os.environ, DATABASE_URL=db, PAAS_LISTEN=f"127.0.0.1:{port}", PAAS_LOG="warn",
               PAAS_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
               PAAS_BOOTSTRAP_ADMIN_PASSWORD=password, PAAS_AGENT_TOKEN=token,
               PAAS_NODE_GRACE_MS="600000", **(extra or {}))
    serve = subprocess.Popen([PAAS, "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=open(f"{work}/{name}.log", "w"))
    api = Api(f"http://127.0.0.1:{port}")
    for _ in range(300):
        try:
            api.call("GET", "/healthz")
            break
        except Exception:
            time.sleep(0.1)
    api.token = api.call("POST", "/api/v1/auth/token", {"username": "admin", "password": password})["token"]
    api.call("POST", "/api/v1/admin/tenants", {"slug": "load", "display_name": "Load", "admin": "admin"})
    return serve, api, port, token


def spec(replicas):
    return {"command": "sleep", "args": ["1000"], "replicas": replicas, "resources": {"cpu_millis": 10, "memory_mib": 16}}


def measure_p6(db, work, psql):
    """The applications page at 100 and at 10,000 applications, against /healthz. The
    tables are vacuumed and analyzed before each measurement, as autovacuum does within a
    minute of such a change, so that plans are those of a tenant of that size and the
    measurement does not share the machine with that autovacuum."""
    serve, api, port, _ = start_serve(db, work, "p6")
    base = f"http://127.0.0.1:{port}"
    cookie = f"paas_session={api.token}"
    page = f"{base}/t/load/apps"
    try:
        def create(i):
            api.call("POST", "/api/v1/tenants/load/applications",
                     {"environment": "test", "name": f"app-{i:05}", "spec": spec(0)})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(100)))
        psql("VACUUM ANALYZE")
        small_rps, small_p99 = wrk(page, cookie)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(100, 10_000)))
        created_s = time.monotonic() - started
        psql("VACUUM ANALYZE")
        health_rps, health_p99 = wrk(f"{base}/healthz")
        large_rps, large_p99 = wrk(page, cookie)
        search_rps, search_p99 = wrk(f"{page}?q=app-0999", cookie)
        print(f"P6: 9,900 applications created in {created_s:.0f} s; /healthz {health_rps:.0f} req/s (p99 {health_p99:.1f} ms)")
        print(f"P6: applications page at 100: {small_rps:.0f} req/s (p99 {small_p99:.1f} ms); at 10,000: "
              f"{large_rps:.0f} req/s (p99 {large_p99:.1f} ms); searched at 10,000: {search_rps:.0f} req/s "
              f"(p99 {search_p99:.1f} ms)")
        return {"p6_list_ratio": round(large_rps / health_rps, 3), "p6_list_p99_ms": round(large_p99, 1),
                "p6_size_cost_ratio": round(small_rps / large_rps, 2)}
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()


def measure_p7(db, work, pg_bin):
    """Creating an application (wrk, 4 connections, each request a new name) against a
    single-row insert into the same PostgreSQL (pgbench, 4 clients), on a database and a
    control plane of its own. A 3-second warm-up of the same creates comes first, then
    ANALYZE, as autovacuum does within a minute of a table's growth: plans cached while
    the tables were empty read them whole, which is the database's first minute, not the
    cost of a create."""
    serve, api, port, _ = start_serve(db, work, "p7")
    try:
        with open(f"{work}/create.lua", "w") as f:
            f.write(CREATE_LUA.replace("TOKEN", api.token).replace("SPEC", json.dumps(spec(0))))

        def creates(seconds, round):
            return subprocess.run(["wrk", "-t4", "-c4", f"-d{seconds}s", "--latency", "-s", f"{work}/create.lua",
                                   f"http://127.0.0.1:{port}/api/v1/tenants/load/applications", "--", round],
                                  capture_output=True, text=True).stdout
        creates(3, "w")
        subprocess.run([f"{pg_bin}/psql", db, "-tAc", "ANALYZE"], check=True, capture_output=True)
        out = creates(10, "m")
        if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
            raise SystemExit(f"P7: some creates failed:\n{out}")
        m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        create_p99_ms = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        creates = re.search(r"(\d+) requests in", out).group(1)
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
    subprocess.run([f"{pg_bin}/psql", db, "-tAc",
                    "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, name text NOT NULL, at timestamptz NOT NULL DEFAULT now())"],
                   check=True, capture_output=True)
    with open(f"{work}/insert.sql", "w") as f:
        f.write("INSERT INTO bench_insert (name) VALUES ('x');\n")
    subprocess.run([f"{pg_bin}/pgbench", "-n", "-c4", "-j2", "-T10", "-f", f"{work}/insert.sql", "-l",
                    f"--log-prefix={work}/pgbench", db], check=True, capture_output=True, cwd=work)
    insert_us = []
    for name in os.listdir(work):
        if name.startswith("pgbench."):
            for line in open(os.path.join(work, name)):
                cols = line.split()
                if len(cols) >= 3:
                    insert_us.append(int(cols[2]))
    insert_p99_ms = p99(insert_us) / 1000
    print(f"P7: create p99 {create_p99_ms:.1f} ms (wrk, 4 connections, {creates} creates); single-row insert p99 "
          f"{insert_p99_ms:.2f} ms (pgbench -c4, {len(insert_us)} inserts) -> ratio {create_p99_ms/insert_p99_ms:.1f} (aim <= 10)")
    return {"p7_create_p99_ratio": round(create_p99_ms / insert_p99_ms, 1),
            "p7_create_p99_ms": round(create_p99_ms, 1), "p7_insert_p99_ms": round(insert_p99_ms, 2)}


def main():
    work = tempfile.mkdtemp(prefix="paas-scale-")
    os.chmod(work, 0o755)
    pg_bin = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
    pg_bin = f"/usr/lib/postgresql/{pg_bin}/bin"
    data = os.path.join(work, "pg")
    os.makedirs(data)
    if os.geteuid() == 0:
        subprocess.run(["chown", "postgres:postgres", data], check=True)
    pg_port = free_port()
    subprocess.run(as_postgres([f"{pg_bin}/initdb", "-D", f"{data}/data", "-U", "paas", "--auth=trust",
                                "--encoding=UTF8", "--locale=C.UTF-8"]), check=True, stdout=subprocess.DEVNULL)
    subprocess.run(as_postgres([f"{pg_bin}/pg_ctl", "-D", f"{data}/data", "-l", f"{data}/log", "-w", "-o",
                                f"-p {pg_port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=100",
                                "start"]), check=True, stdout=subprocess.DEVNULL)
    db = f"postgres://paas@127.0.0.1:{pg_port}/postgres"
    serve = sim = None
    psql = lambda sql: subprocess.run([f"{pg_bin}/psql", db, "-tAc", sql], capture_output=True, text=True).stdout.strip()
    try:
        psql("CREATE DATABASE p6")
        p6_db = f"postgres://paas@127.0.0.1:{pg_port}/p6"
        p6 = measure_p6(p6_db, work, lambda sql: subprocess.run([f"{pg_bin}/psql", p6_db, "-tAc", sql],
                                                                capture_output=True, text=True))
        psql("CREATE DATABASE p7")
        p7 = measure_p7(f"postgres://paas@127.0.0.1:{pg_port}/p7", work, pg_bin)
        serve, api, port, token = start_serve(db, work, "serve")

        def create(env_name, name, replicas):
            api.call("POST", "/api/v1/tenants/load/applications", {"environment": env_name, "name": name, "spec": spec(replicas)})

        # P8: 500 simulated nodes, then 1,000 applications of 10 instances.
        sim = subprocess.Popen([SIMNODES, "--control-plane", f"http://127.0.0.1:{port}", "--nodes", str(NODES),
                                "--heartbeat-ms", "2000"], env=dict(os.environ, PAAS_AGENT_TOKEN=token),
                               stdout=subprocess.PIPE, stderr=open(f"{work}/sim.log", "w"), text=True)
        assigned = {}
        lock = threading.Lock()

        def read_sim():
            for line in sim.stdout:
                parts = line.split()
                if len(parts) == 4 and parts[0] == "assigned":
                    with lock:
                        assigned.setdefault(parts[1], []).append(int(parts[3]))
        threading.Thread(target=read_sim, daemon=True).start()
        deadline = time.monotonic() + 120
        while psql("SELECT count(*) FROM nodes") != str(NODES):
            if time.monotonic() > deadline:
                raise SystemExit("the simulated nodes did not register")
            time.sleep(0.5)
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: create("dev", f"app-{i}", REPLICAS), range(APPS)))
        created_s = time.monotonic() - started
        deadline = time.monotonic() + 900
        wanted = APPS * REPLICAS
        while True:
            ready = int(psql("SELECT count(*) FROM instances WHERE ready AND desired = 'run'") or 0)
            if ready >= wanted:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {ready} of {wanted} instances became ready")
            time.sleep(1)
        converged_s = time.monotonic() - started
        time.sleep(10)
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{serve.pid}/status").read()).group(1))
        passes = []
        for _ in range(10):
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            m = re.search(r'paas_reconcile_last_pass_seconds\{runtime="local"\} ([\d.e+-]+)', metrics)
            if m:
                passes.append(float(m.group(1)))
            time.sleep(1)
        latencies = []
        for n in range(CHANGES):
            app = f"app-{(n * 37) % APPS}"
            key = f"load/dev/{app}"
            with lock:
                before = len(assigned.get(key, []))
            t0 = time.time() * 1000
            api.call("PUT", f"/api/v1/tenants/load/environments/dev/applications/{app}/replicas", {"replicas": REPLICAS + 1})
            deadline = time.monotonic() + 30
            while True:
                with lock:
                    seen = assigned.get(key, [])[before:]
                if seen:
                    latencies.append(seen[0] - t0)
                    break
                if time.monotonic() > deadline:
                    latencies.append(30000)
                    break
                time.sleep(0.002)
            time.sleep(0.1)
        rss_mib = rss_kib / 1024
        pass_ms = max(passes) * 1000 if passes else None
        change_p99 = p99(latencies)
        print(f"P8: {NODES} simulated nodes (2 s heartbeats), {APPS} applications x {REPLICAS}: created in {created_s:.0f} s, "
              f"all ready after {converged_s:.0f} s")
        print(f"P8: control plane RSS {rss_mib:.0f} MiB (aim <= 110); a change reaches its node in p99 {change_p99:.0f} ms, "
              f"median {statistics.median(latencies):.0f} ms of {CHANGES} (aim <= 200); longest reconcile pass over 10 s "
              f"{pass_ms if pass_ms is None else round(pass_ms)} ms (aim <= 1000)")
        print(json.dumps({
            **p7,
            "p8_rss_mib": round(rss_mib), "p8_change_to_agent_p99_ms": round(change_p99),
            "p8_reconcile_pass_ms": pass_ms if pass_ms is None else round(pass_ms),
            **p6,
        }))
    finally:
        for p in (sim, serve):
            if p:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(as_postgres([f"{pg_bin}/pg_ctl", "-D", f"{data}/data", "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
