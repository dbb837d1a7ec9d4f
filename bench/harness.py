#!/usr/bin/env python3
"""vigil benchmark harness (driven by bench/run.sh; see docs/performance.md for what it reports).

Every comparison is a ratio measured in the same run, alternating A and B (ABAB, then BABA, ...)
for at least 5 pairs in a full run, reported as median and min-max. Parts whose feature is not
in the build print "skipped: <reason>"; no figure is ever made up. Benchmarks print, they do not
fail: the exit code is 0 unless the harness itself breaks.

Standard library only. Runs as root (BPF); it mounts tracefs if needed (as the agent does),
sets kernel.bpf_stats_enabled=1 only during the bpfcost part and restores it, and kills only the
processes it started.
"""

import argparse
import atexit
import shutil
import datetime
import json
import os
import platform
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
PARTS = ["overhead", "bpfcost", "footprint", "events", "aggregator", "wire", "cli"]

# Sizes of a full run (about 20 minutes on 2 cores) and of a smoke run (BENCH_QUICK=1).
CFG = {
    "pairs": 3 if QUICK else 5,
    "redis_requests": 20000 if QUICK else 120000,  # per test (GET and SET)
    "redis_clients": 50,
    "wrk_seconds": 2 if QUICK else 3,
    "getppid_calls": 300000 if QUICK else 2000000,
    "bpfcost_windows": 3 if QUICK else 5,
    "bpfcost_window_s": 2 if QUICK else 5,
    "footprint_warmup_s": 3 if QUICK else 12,
    "footprint_steady_s": 12 if QUICK else 60,
    "churn_rate": 1000,
    "churn_s": 15 if QUICK else 300,
    "exec_storm": 2000 if QUICK else 20000,
    "connect_storm": 2000 if QUICK else 10000,
    # (agents, push interval ms): the issue's N at the agent's 10 s interval, then the largest N
    # at shorter intervals, stepping the offered rate up past the 1M samples/s goal (488
    # series per frame: 4.8 s ~ 1.02M/s, 4 s ~ 1.22M/s, 3 s ~ 1.63M/s, the last one past
    # what this machine sustains). Runs offering more than one that already fell behind are
    # skipped. (6 s and 5 s were dropped to keep `make bench` near 20 minutes: they sat
    # between runs that already bracket the goal.)
    "agg_runs": [(100, 10000), (500, 10000), (500, 2000)] if QUICK else
                [(1000, 10000), (5000, 10000), (10000, 10000), (10000, 4800), (10000, 4000),
                 (10000, 3000)],
    # The first frame of every simulated agent creates its ~500 series (the costly part);
    # the warm-up (two 10 s intervals) lets that finish so the window measures the steady
    # state; the window holds two pushes per agent at 10 s, four or more at the shorter ones.
    "agg_warmup_s": 3 if QUICK else 20,
    "agg_window_s": 10 if QUICK else 20,
    "cli_runs": 3 if QUICK else 5,
    "account_runs": 2 if QUICK else 3,
}


# ---------------------------------------------------------------------------------------------
# Processes, /proc, small helpers


class Proc:
    """A process the harness started, in its own process group so it can be stopped with its
    children (nginx workers, bpftrace's helpers) without touching anything else."""

    started = []

    def __init__(self, cmd, out_path=None, preexec=None, env=None):
        self.cmd = cmd
        self.out_path = out_path or tempfile.mktemp(prefix="vigil-bench-", suffix=".log")
        self.out = open(self.out_path, "w")
        self.p = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=preexec, env=env)
        self.pid = self.p.pid
        self.rusage = None
        Proc.started.append(self)

    def output(self):
        try:
            with open(self.out_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.returncode is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.time() + timeout
            while time.time() < deadline:
                try:
                    pid, status, ru = os.wait4(self.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == self.pid:
                    self.p.returncode = status
                    self.rusage = ru
                    break
                time.sleep(0.02)
            else:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    _, status, ru = os.wait4(self.pid, 0)
                    self.p.returncode = status
                    self.rusage = ru
                except ChildProcessError:
                    pass
        self.out.close()
        if self in Proc.started:
            Proc.started.remove(self)


def cleanup_all():
    for p in list(Proc.started):
        p.stop(timeout=3)


def run(cmd, timeout=600, check=False):
    """Runs a command to completion; returns (returncode, output, rusage of the child)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.time() > deadline:
                p.kill()
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, text[-500:]))
    return p.returncode, text, ru


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """CPU time of a process (all its threads), in seconds, with nanosecond resolution from
    schedstat when the kernel has it, else utime+stime in clock ticks (0 if it is gone)."""
    try:
        total = 0
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError):
        return 0.0


def tree_pids(pid):
    """pid and its descendants (nginx workers)."""
    out = [pid]
    try:
        children = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
    except OSError:
        children = []
    for c in children:
        out.extend(tree_pids(int(c)))
    return out


def tree_cpu(pid):
    return sum(cpu_seconds(p) for p in tree_pids(pid))


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def read_kv(path):
    try:
        with open(path) as f:
            return dict(line.strip().split("=", 1) for line in f if "=" in line)
    except OSError:
        return None


def parse_kv(text):
    """key=value pairs, several per line allowed."""
    return dict(re.findall(r"(?:^|\s)([a-z_0-9]+)=(\S+)", text, re.M))


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode(errors="replace")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(v, digits=3):
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, int) or (abs(v) >= 1000 and float(v).is_integer()):
        return "{:,}".format(int(v))
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    return ("{:.%dg}" % digits).format(v)


def median_ci95(xs, rounds=4000):
    """Bootstrap 95 % interval of the median of xs (percentile method, fixed seed so reruns on
    the same data print the same interval). With few pairs it is wide: it says how far the
    run's median can be trusted, not more."""
    import random
    if len(xs) < 3:
        return None
    rnd = random.Random(12345)
    meds = sorted(statistics.median(rnd.choice(xs) for _ in xs) for _ in range(rounds))
    return meds[int(0.025 * rounds)], meds[int(0.975 * rounds) - 1]


def ci_note(goal, xs):
    ci = median_ci95(xs)
    if ci is None:
        return goal
    return "%s; 95%% CI of the median %s–%s" % (goal, fmt(ci[0]), fmt(ci[1]))


def ensure_tracefs():
    if not os.path.ismount("/sys/kernel/tracing"):
        subprocess.call(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"])


# ---------------------------------------------------------------------------------------------
# Results


class Report:
    def __init__(self):
        self.rows = []  # (part, measure, median, lo, hi, n, unit, note)
        self.skipped = []  # (part, what, reason)
        self.sections = {}  # part -> list of markdown lines (details)
        self.commands = {}  # part -> list of command lines
        self.peers = {}  # part -> list of peer configuration lines

    def row(self, part, measure, values, unit="", note=""):
        values = [v for v in values if v is not None]
        if not values:
            self.skip(part, measure, "no valid measurement" + (" (%s)" % note if note else ""))
            return
        r = (part, measure, med(values), min(values), max(values), len(values), unit, note)
        self.rows.append(r)
        print("  %-52s %12s  (%s .. %s, n=%d) %s %s" %
              (measure, fmt(r[2]), fmt(r[3]), fmt(r[4]), r[5], unit, note), flush=True)

    def skip(self, part, what, reason):
        self.skipped.append((part, what, reason))
        print("  %-52s skipped: %s" % (what, reason), flush=True)

    def detail(self, part, line):
        self.sections.setdefault(part, []).append(line)

    def command(self, part, cmd):
        c = cmd if isinstance(cmd, str) else " ".join(shlex.quote(x) for x in cmd)
        # Paths relative to the repository, so the doc does not name one machine's checkout.
        c = c.replace(REPO + "/", "")
        c = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", c)
        lst = self.commands.setdefault(part, [])
        if c not in lst:
            lst.append(c)

    def peer(self, part, line):
        lst = self.peers.setdefault(part, [])
        if line not in lst:
            lst.append(line)


R = Report()


# ---------------------------------------------------------------------------------------------
# The system under test and its peers


class Env:
    def __init__(self, build):
        self.build = os.path.abspath(build)
        self.bin = os.path.join(self.build, "bin")
        self.root = os.geteuid() == 0
        self.tmp = tempfile.mkdtemp(prefix="vigil-bench-")
        self.aggregator = None
        self.agg_port = None
        self._agent_help = None
        self._aggregator_help = None
        self.vigil_hooks = None

    def exe(self, name):
        return os.path.join(self.bin, name)

    def have(self, name):
        return os.access(self.exe(name), os.X_OK)

    def agent_help(self):
        if self._agent_help is None:
            rc, out, _ = run([self.exe("vigil-agent"), "--helpfull"], timeout=10)
            self._agent_help = out
        return self._agent_help

    def agent_supports(self, flag):
        return ("--" + flag) in self.agent_help()

    def continuous_syscall_args(self):
        """Agent arguments selecting continuous syscall mode: the flag when the agent has one,
        else a --config YAML (docs/configuration.md); None when neither exists."""
        if self.agent_supports("syscall_mode"):
            return ["--syscall_mode=continuous"]
        if not self.agent_supports("config"):
            return None
        path = os.path.join(self.tmp, "agent-continuous-syscalls.yaml")
        with open(path, "w") as f:
            f.write("syscall_mode: continuous\n")
        return ["--config=" + path]

    def aggregator_cmd(self, name):
        """vigil-aggregator on free ports; with its own data directory under the build tree (on
        disk, not tmpfs, so the ingest log's durability costs what it costs) when this build
        has --data_dir."""
        cmd = [self.exe("vigil-aggregator"), "--rpc_port=0", "--http_port=0"]
        if self._aggregator_help is None:
            self._aggregator_help = run([self.exe("vigil-aggregator"), "--helpfull"],
                                        timeout=10)[1]
        if "--data_dir" in self._aggregator_help:
            d = os.path.join(self.build, "bench-data", name)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            cmd.append("--data_dir=" + d)
        return cmd

    # A background aggregator for the agent to ship to (its cost is not the node's).
    def ensure_aggregator(self):
        if self.aggregator and self.aggregator.alive():
            return self.agg_port
        ready = os.path.join(self.tmp, "agg.ready")
        self.aggregator = Proc(self.aggregator_cmd("node-side") + ["--ready_file=" + ready])
        kv = wait_for(lambda: read_kv(ready), 10)
        if not kv:
            raise RuntimeError("vigil-aggregator did not start: " + self.aggregator.output())
        self.agg_port = int(kv["rpc_port"])
        return self.agg_port

    def agent_cmd(self, extra=()):
        port = self.ensure_aggregator()
        return [self.exe("vigil-agent"), "--aggregator=127.0.0.1:%d" % port, "--http_port=0"] + \
            list(extra)

    def start_agent(self, extra=()):
        ready = os.path.join(self.tmp, "agent.%d.ready" % time.monotonic_ns())
        p = Proc(self.agent_cmd(extra) + ["--ready_file=" + ready])
        kv = wait_for(lambda: read_kv(ready), 20)
        if not kv:
            out = p.output()
            p.stop()
            raise RuntimeError("vigil-agent did not become ready: " + out[-400:])
        p.http_port = int(kv["http_port"])
        return p

    def list_vigil_links(self, pid):
        """The hooks of the vigil_* programs attached by process `pid` (only that agent: other
        agents or tests may run on the same machine)."""
        rc, out, _ = run([self.exe("vigil-bench-floor"), "links", "--prefix=vigil_",
                          "--pid=%d" % pid], timeout=20)
        hooks = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4:
                hooks.append({"prog_id": int(parts[0]), "prog": parts[1], "type": parts[2],
                              "hook": parts[3]})
        return hooks

    def detect_vigil_hooks(self):
        """The (attach_type, hook) pairs of the agent's attached programs, read from the kernel's
        BPF links while a default agent runs for one full 10 s interval (duty-cycled programs
        are attached only part of it)."""
        if self.vigil_hooks is not None:
            return self.vigil_hooks
        agent = self.start_agent()
        seen = {}
        end = time.time() + 11
        while time.time() < end and agent.alive():
            for h in self.list_vigil_links(agent.pid):
                seen[(h["prog"], h["type"], h["hook"])] = h
            time.sleep(0.5)
        agent.stop()
        self.vigil_hooks = list(seen.values())
        print("  vigil's hooks in this build: " + (", ".join(
            "%s=%s:%s" % (h["prog"], h["type"], h["hook"]) for h in self.vigil_hooks) or "none"),
              flush=True)
        return self.vigil_hooks

    def no_continuous_reason(self):
        has_sys = any(h["hook"] in SYSCALL_HOOKS for h in self.detect_vigil_hooks())
        return ("vigil-agent has neither --syscall_mode nor --config in this build" +
                ("" if has_sys else " (and no syscall programs attached: the syscall collector "
                 "is not in this build)"))


SYSCALL_HOOKS = {"sys_enter", "sys_exit"}
BASE_SCHED = ["sched_switch", "sched_wakeup", "sched_wakeup_new"]
BASE_TCP = ["inet_sock_set_state", "tcp_retransmit_skb"]


def tracepoint_category(name):
    for cat in os.listdir("/sys/kernel/tracing/events"):
        if os.path.isdir(os.path.join("/sys/kernel/tracing/events", cat, name)):
            return cat
    return None


def floor_hooks(env, with_syscalls):
    """Hook specs for vigil-bench-floor: the sched and tcp hooks vigil is designed around, plus
    every hook the agent in this build attaches, with the agent's attach type; the raw_syscalls
    pair is added only for the with_syscalls variant."""
    spec = {}
    for h in BASE_SCHED + BASE_TCP:
        spec[h] = "tp_btf"
    for v in env.detect_vigil_hooks():
        if v["hook"] in SYSCALL_HOOKS or v["hook"] == "?":
            continue
        spec[v["hook"]] = v["type"]
    if with_syscalls:
        types = {v["hook"]: v["type"] for v in env.detect_vigil_hooks() if v["hook"] in SYSCALL_HOOKS}
        for h in sorted(SYSCALL_HOOKS):
            spec[h] = types.get(h, "tp_btf")
    out = []
    for hook, typ in spec.items():
        if typ == "tracepoint":
            cat = tracepoint_category(hook)
            if not cat:
                continue
            out.append("tracepoint:%s/%s" % (cat, hook))
        else:
            out.append("%s:%s" % (typ, hook))
    return out


class Variant:
    """Something that runs beside the workload: start() before a measured run, stop() after."""

    def __init__(self, name, start, note=""):
        self.name = name
        self._start = start
        self.note = note
        self.handle = None

    def start(self):
        self.handle = self._start()

    def pids(self):
        hs = self.handle if isinstance(self.handle, list) else [self.handle]
        return [h.pid for h in hs if isinstance(h, Proc)]

    def cpu(self):
        """CPU seconds used so far by the variant's own processes (agent, bpftrace, exporter)."""
        return sum(tree_cpu(p) for p in self.pids()) if self.handle is not None else 0.0

    def stop(self):
        if self.handle is not None:
            for h in (self.handle if isinstance(self.handle, list) else [self.handle]):
                h.stop()
        self.handle = None


def start_floor(env, hooks):
    p = Proc([env.exe("vigil-bench-floor"), "attach"] + hooks)
    if not wait_for(lambda: "ready" in p.output() or not p.alive(), 15) or not p.alive():
        out = p.output()
        p.stop()
        raise RuntimeError("floor did not attach: " + out[-400:])
    return p


def start_bpftrace(script, out_path=None):
    p = Proc(["bpftrace", script], out_path=out_path)
    if not wait_for(lambda: "Attaching" in p.output() or not p.alive(), 60) or not p.alive():
        out = p.output()
        p.stop()
        raise RuntimeError("bpftrace did not attach: " + out[-400:])
    time.sleep(0.3)  # "Attaching" is printed just before the attach calls
    return p


class Scraper:
    """Scrapes a node exporter every 10 s (vigil's interval) while running, like Prometheus."""

    def __init__(self, url):
        self.url = url
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop_ev.is_set():
            try:
                http_get(self.url)
            except OSError:
                pass
            self.stop_ev.wait(10)

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=5)


def start_node_exporter():
    port = free_port()
    p = Proc(["prometheus-node-exporter", "--web.listen-address=127.0.0.1:%d" % port])
    url = "http://127.0.0.1:%d/metrics" % port

    def up():
        try:
            return http_get(url, timeout=2)
        except OSError:
            return None

    if not wait_for(up, 15):
        out = p.output()
        p.stop()
        raise RuntimeError("node exporter did not start: " + out[-300:])
    return [Scraper(url), p]


def make_variants(env, part):
    """The configurations compared with "no agent" in the overhead part."""
    vs = []
    if not env.have("vigil-agent"):
        R.skip(part, "vigil-agent", "vigil-agent is not built")
    else:
        vs.append(Variant("vigil-agent (defaults)", lambda: env.start_agent()))
        R.command(part, env.agent_cmd() + ["--ready_file=FILE"])
        cont_args = env.continuous_syscall_args()
        if cont_args:
            vs.append(Variant("vigil-agent (continuous syscalls)",
                              lambda: env.start_agent(cont_args)))
            shown = ["--config=FILE" if a.startswith("--config=") else a for a in cont_args]
            R.command(part, " ".join(shlex.quote(x) for x in env.agent_cmd(shown)) +
                      ("   (FILE: `syscall_mode: continuous`)" if shown != cont_args else ""))
        else:
            R.skip(part, "vigil-agent (continuous syscalls)", env.no_continuous_reason())
    # Starts nothing: pairs no agent with no agent, so its spread is the measurement's own.
    vs.append(Variant("no agent (A/A control)", lambda: None))
    nosys = floor_hooks(env, False)
    withsys = floor_hooks(env, True)
    vs.append(Variant("floor: empty progs, sched+tcp", lambda: start_floor(env, nosys)))
    vs.append(Variant("floor: empty progs, raw_syscalls+sched+tcp",
                      lambda: start_floor(env, withsys)))
    R.command(part, [env.exe("vigil-bench-floor"), "attach"] + nosys)
    R.command(part, [env.exe("vigil-bench-floor"), "attach"] + withsys)
    peer = os.path.join(BENCH, "scripts", "peer.bt")
    if shutil_which("bpftrace"):
        vs.append(Variant("bpftrace peer script", lambda: start_bpftrace(peer)))
        R.command(part, "bpftrace bench/scripts/peer.bt > /dev/null")
    else:
        R.skip(part, "bpftrace peer", "bpftrace is not installed")
    if shutil_which("prometheus-node-exporter"):
        vs.append(Variant("prometheus-node-exporter", start_node_exporter))
        R.command(part, "prometheus-node-exporter --web.listen-address=127.0.0.1:PORT "
                  "(scraped every 10 s by the harness)")
    else:
        R.skip(part, "prometheus-node-exporter", "not installed")
    R.peer(part, "vigil-agent: default flags (10 s interval, all collectors of this build), "
           "shipping to a local vigil-aggregator.")
    R.peer(part, "floor (sched+tcp): empty programs on " + ", ".join(nosys) + ".")
    R.peer(part, "floor (raw_syscalls+sched+tcp): empty programs on " + ", ".join(withsys) + ".")
    R.peer(part, "bpftrace 0.17: bench/scripts/peer.bt (per-pid syscall and failed-syscall "
           "counts, run-queue latency histogram, per-pid TCP retransmits; tracepoints only; "
           "prints its maps every 10 s).")
    R.peer(part, "prometheus-node-exporter 1.5: default collectors, scraped every 10 s; it "
           "covers host metrics only (no per-process, run-queue or TCP data).")
    return vs


def shutil_which(name):
    import shutil
    return shutil.which(name)


# ---------------------------------------------------------------------------------------------
# Part 1: workload overhead


def redis_run(port, n, clients):
    srv_pid = redis_run.server_pid
    c0 = cpu_seconds(srv_pid)
    t0 = time.time()
    rc, out, ru = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
                       "-n", str(n), "-t", "set,get", "-P", "1", "--csv"], timeout=600)
    wall = time.time() - t0
    c1 = cpu_seconds(srv_pid)
    rps = {}
    for line in out.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if len(cols) >= 2 and cols[0] in ("SET", "GET"):
            try:
                rps[cols[0]] = float(cols[1])
            except ValueError:
                pass
    if rc != 0 or len(rps) != 2:
        raise RuntimeError("redis-benchmark failed: " + out[-300:])
    thr = 2 * n / (n / rps["SET"] + n / rps["GET"])
    cpu = (c1 - c0) + ru.ru_utime + ru.ru_stime
    return thr, cpu * 1e6 / (2 * n), 2 * n


def nginx_run(port, secs, master_pid):
    c0 = tree_cpu(master_pid)
    rc, out, ru = run(["wrk", "-t1", "-c50", "-d%ds" % secs, "http://127.0.0.1:%d/" % port],
                      timeout=secs + 60)
    c1 = tree_cpu(master_pid)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if rc != 0 or not m or not n:
        raise RuntimeError("wrk failed: " + out[-300:])
    reqs = int(n.group(1))
    cpu = (c1 - c0) + ru.ru_utime + ru.ru_stime
    return float(m.group(1)), cpu * 1e6 / max(reqs, 1), max(reqs, 1)


def alternate(variants, one_run, label, part, pairs):
    """For each variant: `pairs` pairs of (no agent, variant) runs, order alternating per pair.
    Returns {variant: {"ratio": [...], "cpu_ratio": [...], ...}}."""
    res = {}
    for v in variants:
        ratios, cpu_ratios, base_thr, var_thr, base_cpu, var_cpu = [], [], [], [], [], []
        total_cpu_ratios = []
        failed = None
        for k in range(pairs):
            order = ["base", "var"] if k % 2 == 0 else ["var", "base"]
            got = {}
            for which in order:
                try:
                    if which == "var":
                        v.start()
                        time.sleep(0.5)  # let its start-up (BPF load, first reads) settle
                        own0 = v.cpu()
                    got[which] = one_run()
                    if which == "var":
                        # The variant's own userspace CPU, per request of this run.
                        got["own"] = (v.cpu() - own0) * 1e6 / got["var"][2]
                except Exception as e:  # a broken peer is reported, the rest goes on
                    failed = str(e)
                finally:
                    if which == "var":
                        v.stop()
                if failed:
                    break
            if failed:
                break
            ratios.append(got["var"][0] / got["base"][0])
            cpu_ratios.append(got["var"][1] / got["base"][1])
            total_cpu_ratios.append((got["var"][1] + got["own"]) / got["base"][1])
            base_thr.append(got["base"][0])
            var_thr.append(got["var"][0])
            base_cpu.append(got["base"][1])
            var_cpu.append(got["var"][1])
            print("    %s pair %d: no agent %.0f/s, %s %.0f/s -> %.3f" %
                  (label, k + 1, got["base"][0], v.name, got["var"][0], ratios[-1]), flush=True)
        if failed:
            R.skip(part, "%s: %s" % (label, v.name), "failed: " + failed[-200:])
            continue
        res[v.name] = dict(ratio=ratios, cpu_ratio=cpu_ratios, base=base_thr, var=var_thr,
                           base_cpu=base_cpu, var_cpu=var_cpu)
        goal = ""
        if v.name == "vigil-agent (defaults)":
            goal = "goal >= 0.99"
        R.row(part, "%s throughput ratio, %s" % (label, v.name), ratios, "x no agent",
              ci_note(goal, ratios) if goal else goal)
        R.row(part, "%s CPU/request ratio, %s" % (label, v.name), cpu_ratios, "x no agent",
              "server+client")
        R.row(part, "%s CPU/request ratio incl. its own CPU, %s" % (label, v.name),
              total_cpu_ratios, "x no agent", "server+client+agent/peer processes")
    return res


ITER_PROG = re.compile(r"_iter?$")  # iterator programs run inside the agent's own syscalls


def held_prog_ids(pid):
    """Ids of the BPF programs process `pid` holds, attached or not (a duty-cycled program stays
    loaded between its windows), from /proc/PID/fd and fdinfo."""
    ids = set()
    d = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(d)
    except OSError:
        return ids
    for fd in fds:
        try:
            if os.readlink(os.path.join(d, fd)) != "anon_inode:bpf-prog":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


# The agent's default syscall_duty_cycle (userspace/agent/agent_config.h,
# docs/configuration.md): the fraction of each interval its syscall programs are attached.
DEFAULT_SYSCALL_DUTY = 0.02


def accounted_cost(env, part, label, one_run, base_cpu_us, modes):
    """A steadier second figure than throughput: vigil's own CPU per request, read directly.
    With kernel.bpf_stats_enabled=1 (restored afterwards), the run_time_ns of every program the
    agent holds (not its iterators: those run inside the agent's own read() calls) plus the
    agent's own CPU, per request, over the workload's CPU per request without an agent. Host
    speed swings scale numerator and denominator alike, so this resolves fractions of a
    percent where the throughput ratio cannot.

    bpf_stats's own clock reads are inside run_time_ns (an empty program reads ~50 ns per
    event), so empty programs on the same hooks run alongside and their pooled ns/event, times
    vigil's events, is taken off for the "above empty programs" figures. Not in any figure: the
    kernel's dispatch into BPF (the floor rows measure it) and the syscall slow path while
    syscall programs are attached. `modes`: [(name, agent args)], sampled (default) mode first,
    then continuous."""
    old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    hooks = floor_hooks(env, True)
    R.command(part, "accounted runs: sysctl -w kernel.bpf_stats_enabled=1 (restored "
              "afterwards); the agent and `vigil-bench-floor attach` (same hooks) side by side; "
              "per run, run_time_ns/run_cnt deltas of the agent's programs (ids from "
              "/proc/PID/fdinfo) and of the empty programs, and the agent's CPU")
    base_ns = base_cpu_us * 1000
    got = {}
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        for name, args in modes:
            m = got[name] = {"raw": [], "sys": [], "other": [], "own": [], "events": [],
                             "empty": []}
            agent = env.start_agent(args)
            floor = None
            try:
                floor = start_floor(env, hooks)
                floor_ids = held_prog_ids(floor.pid)
                time.sleep(0.5)
                ids = held_prog_ids(agent.pid)
                for _ in range(CFG["account_runs"]):
                    s0, a0 = prog_stats(), tree_cpu(agent.pid)
                    _, _, reqs = one_run()
                    s1, a1 = prog_stats(), tree_cpu(agent.pid)
                    ids |= held_prog_ids(agent.pid)
                    zero = ("", 0, 0)

                    def delta(i):
                        return (s1[i][1] - s0.get(i, zero)[1], s1[i][2] - s0.get(i, zero)[2])
                    ft = fn_ = 0
                    for i in floor_ids:
                        if i in s1:
                            t, n_ = delta(i)
                            ft, fn_ = ft + t, fn_ + n_
                    empty = ft / fn_ if fn_ else float("nan")
                    raw = sys_t = other_t = events = 0
                    for i in ids:
                        if i not in s1 or ITER_PROG.search(s1[i][0]):
                            continue
                        t, n_ = delta(i)
                        raw += t
                        events += n_
                        above = t - n_ * empty
                        if s1[i][0].startswith("vigil_sys"):  # the syscall collector's
                            sys_t += above
                        else:
                            other_t += above
                    m["raw"].append(raw / reqs)
                    m["sys"].append(sys_t / reqs)
                    m["other"].append(other_t / reqs)
                    m["events"].append(events / reqs)
                    m["empty"].append(empty)
                    m["own"].append((a1 - a0) * 1e9 / reqs)
            finally:
                for p in (floor, agent):
                    if p:
                        p.stop()
            above = [a + b for a, b in zip(m["sys"], m["other"])]
            R.row(part, "%s BPF program events/request, %s" % (label, name), m["events"],
                  "events")
            R.row(part, "%s BPF run time/request, %s" % (label, name), m["raw"], "ns",
                  "bpf_stats run_time_ns, incl. its own clock reads (empty programs alongside: "
                  "%s ns/event)" % fmt(med(m["empty"])))
            R.row(part, "%s BPF run time/request above empty programs, %s" % (label, name),
                  above, "ns", "run time - events x empty programs' ns/event")
            R.row(part, "%s agent process CPU/request, %s" % (label, name), m["own"], "ns")
            R.row(part, "%s accounted vigil CPU share, %s" % (label, name),
                  [(b + o) / base_ns for b, o in zip(above, m["own"])], "x workload CPU",
                  "(BPF run time above empty programs + agent CPU) / no-agent CPU per request "
                  "(%s us)" % fmt(base_cpu_us))
        if len(modes) == 2:
            # A run of a few seconds holds the sampled mode's syscall window (200 ms at a random
            # point of each 10 s) or not, so the sampled figure above swings from run to run;
            # over whole intervals it is the sampled mode's other programs and agent CPU plus
            # the duty cycle times the syscall programs' time in continuous mode.
            d, c = got[modes[0][0]], got[modes[1][0]]
            exp = [(o + a + DEFAULT_SYSCALL_DUTY * cs) / base_ns
                   for o, a, cs in zip(d["other"], d["own"], c["sys"])]
            R.row(part, "%s accounted vigil CPU share over whole intervals, %s" %
                  (label, modes[0][0]), exp, "x workload CPU",
                  "other programs + agent CPU + %g x the syscall programs' continuous time; "
                  "plus the syscall floor's share for %g of the time (not in this figure)" %
                  (DEFAULT_SYSCALL_DUTY, DEFAULT_SYSCALL_DUTY))
    except Exception as e:
        R.skip(part, "%s accounted vigil CPU" % label, "failed: %s" % str(e)[-200:])
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old)


def part_overhead(env):
    part = "overhead"
    if not env.root:
        R.skip(part, "workload overhead", "needs root (BPF)")
        return
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil_which(tool):
            R.skip(part, "redis", tool + " is not installed")
            return
    ensure_tracefs()
    variants = make_variants(env, part)
    pairs = CFG["pairs"]
    # redis
    port = free_port()
    redis = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"])
    R.command(part, "redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no")
    n = CFG["redis_requests"]
    R.command(part, "redis-benchmark -h 127.0.0.1 -p PORT -c %d -n %d -t set,get -P 1 --csv" %
              (CFG["redis_clients"], n))
    try:
        ok = wait_for(lambda: run(["redis-cli", "-p", str(port), "ping"], timeout=5)[1].strip()
                      == "PONG", 15)
        if not ok:
            R.skip(part, "redis", "redis-server did not start: " + redis.output()[-200:])
        else:
            redis_run.server_pid = redis.pid
            redis_run(port, max(n // 4, 5000), CFG["redis_clients"])  # warm-up, discarded
            res = alternate(variants, lambda: redis_run(port, n, CFG["redis_clients"]), "redis",
                            part, pairs)
            base_cpu = [c for r in res.values() for c in r["base_cpu"]]
            if base_cpu and "vigil-agent (defaults)" in res:
                modes = [("vigil-agent (defaults)", [])]
                if "vigil-agent (continuous syscalls)" in res:
                    modes.append(("vigil-agent (continuous syscalls)",
                                  env.continuous_syscall_args()))
                accounted_cost(env, part, "redis",
                               lambda: redis_run(port, n, CFG["redis_clients"]), med(base_cpu),
                               modes)
            cont = res.get("vigil-agent (continuous syscalls)")
            flo = res.get("floor: empty progs, raw_syscalls+sched+tcp")
            if cont and flo:
                R.row(part, "redis: vigil continuous / floor with raw_syscalls (ratio of medians)",
                      [med(cont["ratio"]) / med(flo["ratio"])], "x floor", "goal >= 0.98")
            for name, r in res.items():
                R.detail(part, "| redis | %s | %s | %s | %s | %s | %s |" % (
                    name, fmt(med(r["base"])), fmt(med(r["var"])), fmt(med(r["ratio"])),
                    "%s–%s" % (fmt(min(r["ratio"])), fmt(max(r["ratio"]))),
                    "%s → %s" % (fmt(med(r["base_cpu"])), fmt(med(r["var_cpu"])))))
    finally:
        redis.stop()
    # nginx + wrk
    if not (shutil_which("nginx") or os.path.exists("/usr/sbin/nginx")) or not shutil_which("wrk"):
        R.skip(part, "nginx+wrk", "nginx or wrk is not installed")
        return
    d = tempfile.mkdtemp(prefix="vigil-bench-nginx-")
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy;
  fastcgi_temp_path %(d)s/fastcgi; uwsgi_temp_path %(d)s/uwsgi; scgi_temp_path %(d)s/scgi;
  server { listen 127.0.0.1:%(port)d; location / { return 200 "ok\\n"; } }
}
""" % {"d": d, "port": port})
    ng = Proc(["/usr/sbin/nginx", "-c", conf, "-p", d])
    R.command(part, "nginx -c CONF (1 worker, access_log off, `return 200 \"ok\\n\"`)")
    R.command(part, "wrk -t1 -c50 -d%ds http://127.0.0.1:PORT/" % CFG["wrk_seconds"])
    try:
        def nginx_up():
            try:
                return http_get("http://127.0.0.1:%d/" % port, timeout=1) == "ok\n"
            except OSError:
                return False
        if not wait_for(nginx_up, 15):
            R.skip(part, "nginx+wrk", "nginx did not start: " + ng.output()[-200:])
            return
        nginx_run(port, 1, ng.pid)  # warm-up
        # node exporter is left out for nginx: it was measured on redis, and time is bounded.
        nv = [v for v in variants if v.name != "prometheus-node-exporter"]
        res = alternate(nv, lambda: nginx_run(port, CFG["wrk_seconds"], ng.pid), "nginx", part,
                        pairs)
        for name, r in res.items():
            R.detail(part, "| nginx | %s | %s | %s | %s | %s | %s |" % (
                name, fmt(med(r["base"])), fmt(med(r["var"])), fmt(med(r["ratio"])),
                "%s–%s" % (fmt(min(r["ratio"])), fmt(max(r["ratio"]))),
                "%s → %s" % (fmt(med(r["base_cpu"])), fmt(med(r["var_cpu"])))))
    finally:
        ng.stop(signal.SIGQUIT)


# ---------------------------------------------------------------------------------------------
# Part 2: BPF cost per event


def prog_stats():
    rc, out, _ = run(["bpftool", "prog", "show", "-j"], timeout=30)
    try:
        progs = json.loads(out)
    except ValueError:
        return {}
    return {p["id"]: (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in progs}


def part_bpfcost(env):
    part = "bpfcost"
    if not env.root:
        R.skip(part, "BPF cost per event", "needs root (BPF)")
        return
    ensure_tracefs()
    vigil_hooks = env.detect_vigil_hooks()
    if not vigil_hooks:
        R.skip(part, "bpf_stats per program", "the agent attached no vigil_* program")
    # One floor mirroring every vigil hook (same attach type) plus the syscall pair, attached
    # together with the agent so both see exactly the same events.
    hooks = floor_hooks(env, True)
    # Syscall programs are the same in sampled and continuous mode; continuous mode keeps them
    # attached, so every window measures them (the default 2 % duty cycle would leave most
    # windows without syscall events).
    cont_args = env.continuous_syscall_args() or []
    R.command(part, "sysctl -w kernel.bpf_stats_enabled=1   (restored afterwards)")
    R.command(part, " ".join(shlex.quote(x) for x in env.agent_cmd(
        ["--config=FILE" if a.startswith("--config=") else a for a in cont_args])) +
        ("   (FILE: `syscall_mode: continuous`)" if cont_args else ""))
    R.command(part, [env.exe("vigil-bench-floor"), "attach"] + hooks)
    R.command(part, "bpftool prog show -j   (run_time_ns, run_cnt deltas per window)")
    old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    agent = floor = None
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        vig = {}  # prog id -> (id, name, type, hook); duty-cycled programs come and go
        floor_ids = {}

        def start_pair(floor_first):
            """The agent and the empty programs; the one started first runs first on each hook
            (the first program on a hook pays more, so windows alternate the order)."""
            nonlocal agent, floor
            if floor_first:
                floor = start_floor(env, hooks)
                agent = env.start_agent(cont_args)
            else:
                agent = env.start_agent(cont_args)
                floor = start_floor(env, hooks)
            floor_ids.clear()
            vig.clear()
            for line in floor.output().splitlines():
                m = re.match(r"attached (\S+):(\S+) prog=\S+ id=(\d+)", line)
                if m:
                    floor_ids[m.group(2).split("/")[-1]] = int(m.group(3))

        def stop_pair():
            nonlocal agent, floor
            for p in (floor, agent):
                if p:
                    p.stop()
            agent = floor = None

        def relist():
            for h in env.list_vigil_links(agent.pid):
                vig[h["prog_id"]] = (h["prog_id"], h["prog"], h["type"], h["hook"])

        # Workload: redis traffic, process churn and a syscall loop, so every hook fires.
        port = free_port()
        redis = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"])
        wait_for(lambda: run(["redis-cli", "-p", str(port), "ping"], timeout=5)[1].strip()
                 == "PONG", 15)
        per = {}  # prog name -> list of (vigil ns/event, floor ns/event, ratio)
        try:
            for w in range(CFG["bpfcost_windows"]):
                start_pair(floor_first=(w % 2 == 1))
                relist()
                time.sleep(1)  # the agent's first collection (iterators, first frame) settles
                s0 = prog_stats()
                t_end = time.time() + CFG["bpfcost_window_s"]
                load = [Proc(["redis-benchmark", "-p", str(port), "-c", "20", "-n", "10000000",
                              "-t", "set,get", "-q"]),
                        Proc([env.exe("vigil-bench-storm"), "exec",
                              str(200 * CFG["bpfcost_window_s"]), "200"])]
                while time.time() < t_end:
                    run([env.exe("vigil-bench-getppid"), "200000"])
                    relist()
                for p in load:
                    p.stop(signal.SIGINT)
                s1 = prog_stats()
                for pid_, name, typ, hook in vig.values():
                    fid = floor_ids.get(hook)
                    if pid_ not in s0 or pid_ not in s1 or fid is None or fid not in s1:
                        continue
                    dv_t = s1[pid_][1] - s0[pid_][1]
                    dv_n = s1[pid_][2] - s0[pid_][2]
                    df_t = s1[fid][1] - s0.get(fid, ("", 0, 0))[1]
                    df_n = s1[fid][2] - s0.get(fid, ("", 0, 0))[2]
                    if dv_n > 0 and df_n > 0:
                        per.setdefault((name, typ, hook), []).append(
                            (dv_t / dv_n, df_t / df_n, (dv_t / dv_n) / (df_t / df_n), dv_n))
                stop_pair()
        finally:
            redis.stop()
        for (name, typ, hook), xs in sorted(per.items()):
            R.row(part, "ns/event %s (%s:%s)" % (name, typ, hook), [x[0] for x in xs], "ns")
            R.row(part, "ns/event empty program on %s:%s" % (typ, hook), [x[1] for x in xs], "ns")
            # The 1.5x budget is for the per-event hot paths (syscall and sched hooks); event
            # programs (exec argv copies, ring buffer output) are reported without a goal.
            hot = hook in SYSCALL_HOOKS or hook.startswith("sched_switch") or \
                hook.startswith("sched_wakeup")
            R.row(part, "ratio %s / empty" % name, [x[2] for x in xs], "x empty",
                  "goal <= 1.5" if hot else "event program: no budget")
            R.detail(part, "| %s | %s:%s | %s | %s | %s (%s–%s) | %s |" % (
                name, typ, hook, fmt(med([x[0] for x in xs])), fmt(med([x[1] for x in xs])),
                fmt(med([x[2] for x in xs])), fmt(min(x[2] for x in xs)),
                fmt(max(x[2] for x in xs)), fmt(med([x[3] for x in xs]))))
        if vig and not per:
            R.skip(part, "bpf_stats per program", "no run_cnt deltas (bpf_stats not counting?)")
    except Exception as e:
        R.skip(part, "bpf_stats per program", "failed: %s" % str(e)[-200:])
    finally:
        for p in (floor, agent):
            if p:
                p.stop()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old)
    # getppid loop: ns/call, no agent vs empty programs vs vigil.
    calls = CFG["getppid_calls"]
    R.command(part, [env.exe("vigil-bench-getppid"), str(calls)])

    def loop():
        rc, out, _ = run([env.exe("vigil-bench-getppid"), str(calls)], timeout=300)
        m = re.search(r"ns_per_call=([\d.]+)", out)
        if not m:
            raise RuntimeError("getppid loop failed: " + out)
        return float(m.group(1))

    variants = [Variant("empty programs on raw_syscalls+sched+tcp",
                        lambda: start_floor(env, floor_hooks(env, True))),
                Variant("vigil-agent (defaults)", lambda: env.start_agent())]
    cont_args = env.continuous_syscall_args()
    if cont_args:
        variants.append(Variant("vigil-agent (continuous syscalls)",
                                lambda: env.start_agent(cont_args)))
    else:
        R.skip(part, "getppid loop, vigil continuous syscalls", env.no_continuous_reason())
    loop()  # warm-up
    base_all = []
    for v in variants:
        vals, bases, ratios = [], [], []
        try:
            for k in range(CFG["pairs"]):
                order = ["base", "var"] if k % 2 == 0 else ["var", "base"]
                got = {}
                for which in order:
                    if which == "var":
                        v.start()
                        time.sleep(0.3)
                    try:
                        got[which] = loop()
                    finally:
                        if which == "var":
                            v.stop()
                vals.append(got["var"])
                bases.append(got["base"])
                ratios.append(got["var"] / got["base"])
        except Exception as e:
            R.skip(part, "getppid loop, " + v.name, "failed: " + str(e)[-200:])
            continue
        base_all.extend(bases)
        R.row(part, "getppid ns/call, " + v.name, vals, "ns")
        R.row(part, "getppid ratio, " + v.name, ratios, "x no agent")
    if base_all:
        R.row(part, "getppid ns/call, no agent", base_all, "ns")


# ---------------------------------------------------------------------------------------------
# Part 3: agent footprint


def part_footprint(env):
    part = "footprint"
    if not env.root or not env.have("vigil-agent"):
        R.skip(part, "agent footprint", "needs root and vigil-agent")
        return
    R.command(part, env.agent_cmd())
    agent = env.start_agent()
    try:
        time.sleep(CFG["footprint_warmup_s"])
        rss, c0, t0 = [], cpu_seconds(agent.pid), time.time()
        end = t0 + CFG["footprint_steady_s"]
        while time.time() < end:
            rss.append(rss_kib(agent.pid) / 1024.0)
            time.sleep(1)
        cpu_pct = (cpu_seconds(agent.pid) - c0) / (time.time() - t0) * 100
        R.row(part, "agent RSS, steady state %d s" % CFG["footprint_steady_s"], rss, "MiB")
        R.row(part, "agent RSS, steady-state peak", [max(rss)] if rss else [], "MiB",
              "goal <= 16 MiB")
        R.row(part, "agent CPU, steady state %d s" % CFG["footprint_steady_s"], [cpu_pct],
              "% of one core", "goal <= 0.5 %")
        # Process churn.
        count = CFG["churn_rate"] * CFG["churn_s"]
        cmd = [env.exe("vigil-bench-storm"), "exec", str(count), str(CFG["churn_rate"])]
        R.command(part, cmd)
        r0 = rss_kib(agent.pid) / 1024.0
        c0, t0 = cpu_seconds(agent.pid), time.time()
        storm = Proc(cmd)
        samples = []
        while storm.alive():
            samples.append((time.time() - t0, rss_kib(agent.pid) / 1024.0))
            time.sleep(2)
        storm.stop()
        time.sleep(min(11, CFG["churn_s"]))  # one more collection interval after the churn
        r1 = rss_kib(agent.pid) / 1024.0
        cpu_pct = (cpu_seconds(agent.pid) - c0) / (time.time() - t0) * 100
        # The frame after the churn still reports the processes that exited in its last
        # interval (and /metrics serves it until the next one); the collectors learn that a
        # process is gone at one collection and report it at the next, so three intervals
        # after the churn nothing of it should be left.
        time.sleep(min(21, CFG["churn_s"]))
        r2 = rss_kib(agent.pid) / 1024.0
        kv = parse_kv(storm.output())
        R.row(part, "exec rate achieved during churn", [float(kv.get("rate", "nan"))], "exec/s")
        R.row(part, "agent RSS before churn", [r0], "MiB")
        R.row(part, "agent RSS during churn (%d s)" % CFG["churn_s"],
              [s[1] for s in samples] or [r1], "MiB")
        R.row(part, "agent RSS growth, one interval after churn - before", [r1 - r0], "MiB",
              "its frame still holds the last churn interval's exited processes")
        R.row(part, "agent RSS growth, three intervals after churn - before", [r2 - r0], "MiB",
              "should be ~0")
        tail = [m for t, m in samples if t >= CFG["churn_s"] - 60]
        head = [m for t, m in samples if 10 <= t < 70]
        if head and tail and CFG["churn_s"] >= 140:
            R.row(part, "agent RSS drift during churn, last minute - second minute",
                  [statistics.median(tail) - statistics.median(head)], "MiB",
                  "medians; should be ~0 (flat)")
        R.row(part, "agent CPU during churn", [cpu_pct], "% of one core")
        if samples:
            R.detail(part, "RSS during churn (s → MiB): " + ", ".join(
                "%.0f→%.1f" % s for s in samples[:: max(1, len(samples) // 15)]))
    finally:
        agent.stop()


# ---------------------------------------------------------------------------------------------
# Part 4: event throughput


def metrics_dict(port):
    out = {}
    for line in http_get("http://127.0.0.1:%d/metrics" % port).splitlines():
        if not line or line[0] == "#":
            continue
        try:
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
        except ValueError:
            pass
    return out


def label_of(key, name):
    m = re.search(r'[{,]%s="([^"]*)"' % name, key)
    return m.group(1) if m else None


def event_counters(m, collector):
    """Event counters of one collector in the agent's /metrics (names from the event
    collectors: vigil_events_total{collector,type} = events the agent received,
    vigil_events_generated_total = events the kernel side produced, losses are
    vigil_ringbuf_reserve_failures_total plus vigil_events_dropped_total). None if the
    collector exports no event counter."""
    out = {"handled": 0.0, "generated": 0.0, "lost": 0.0, "types": {}, "found": False}
    for k, v in m.items():
        name = k.split("{")[0]
        if label_of(k, "collector") != collector:
            continue
        if name == "vigil_events_total":
            out["found"] = True
            out["handled"] += v
            t = label_of(k, "type") or "?"
            out["types"][t] = out["types"].get(t, 0.0) + v
        elif name == "vigil_events_generated_total":
            out["generated"] += v
        elif name in ("vigil_ringbuf_reserve_failures_total", "vigil_events_dropped_total"):
            out["lost"] += v
    return out if out["found"] else None


def part_events(env):
    part = "events"
    if not env.root or not env.have("vigil-agent"):
        R.skip(part, "event throughput", "needs root and vigil-agent")
        return
    R.command(part, env.agent_cmd(["--interval=1s"]))
    agent = env.start_agent(["--interval=1s"])
    try:
        time.sleep(2.5)
        m0 = metrics_dict(agent.http_port)
        collectors = sorted({label_of(k, "collector") for k in m0
                             if k.startswith("vigil_collector_up{")} - {None})
        R.detail(part, "collectors in this build: " + (", ".join(collectors) or "none reported"))
        storms = [("exec storm", "process", ["exec", str(CFG["exec_storm"])], "exec"),
                  ("TCP connect storm", "net", ["connect", str(CFG["connect_storm"])], None)]
        for label, collector, args, main_type in storms:
            if collector not in collectors:
                R.skip(part, label, "no '%s' collector in this build (collectors: %s)" %
                       (collector, ", ".join(collectors) or "none"))
                continue
            if event_counters(m0, collector) is None:
                R.skip(part, label, "the '%s' collector exports no vigil_events_total on "
                       "/metrics" % collector)
                continue
            cmd = [env.exe("vigil-bench-storm")] + args
            R.command(part, cmd)
            a = event_counters(metrics_dict(agent.http_port), collector)
            rc, out, _ = run(cmd, timeout=600)
            kv = parse_kv(out)
            time.sleep(3)  # a few 1 s intervals for the agent to drain and report
            b = event_counters(metrics_dict(agent.http_port), collector)
            secs = float(kv.get("seconds", "nan"))
            handled = b["handled"] - a["handled"]
            lost = b["lost"] - a["lost"]
            generated = b["generated"] - a["generated"]
            R.row(part, label + ": operations driven", [float(kv.get("done", "nan"))], "",
                  "%s/s" % fmt(float(kv.get("rate", "nan"))))
            R.row(part, label + ": events generated in the kernel", [generated], "events",
                  "all types of the %s collector" % collector)
            R.row(part, label + ": events handled by the agent", [handled], "events")
            R.row(part, label + ": events/s handled", [handled / secs], "/s")
            R.row(part, label + ": events lost (counted)", [lost], "events",
                  "ring buffer reserve failures + drops")
            if main_type and main_type in b["types"]:
                R.row(part, label + ": %s events handled per %s driven" % (main_type, main_type),
                      [(b["types"][main_type] - a["types"].get(main_type, 0)) /
                       max(float(kv.get("done", "1")), 1)], "x")
            R.detail(part, "%s: handled + lost = %s of %s generated; by type: %s" % (
                label, fmt(handled + lost), fmt(generated), ", ".join(
                    "%s %s" % (t, fmt(b["types"][t] - a["types"].get(t, 0)))
                    for t in sorted(b["types"]))))
    finally:
        agent.stop()


# ---------------------------------------------------------------------------------------------
# Part 5: aggregator scale


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def thread_cpu_by_name(pid):
    """CPU seconds of each thread of `pid`, summed by thread name (comm)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def aggregator_step_costs(env, part):
    """vigil-bench-ingest-cost: CPU per ingest step in one process without RPC (thread CPU time,
    so it holds on a busy machine). Rows for the steady-state rounds (median over rounds)."""
    if not env.have("vigil-bench-ingest-cost"):
        R.skip(part, "ingest CPU per step", "vigil-bench-ingest-cost is not built")
        return
    agents, rounds = (500, 3) if QUICK else (2000, 4)
    cmd = [env.exe("vigil-bench-ingest-cost"), "--agents=%d" % agents, "--rounds=%d" % rounds,
           "--dir=" + os.path.join(env.build, "bench-data", "ingest-cost")]
    R.command(part, " ".join(cmd).replace(env.build, "BUILD"))
    _, text, _ = run(cmd, timeout=600)
    steps = {}
    round_no = 0
    for line in text.splitlines():
        m = re.match(r"round (\d+)", line)
        if m:
            round_no = int(m.group(1))
            continue
        m = re.match(r"\s+(\w+)\s+([\d.]+) us/frame\s+([\d.]+) core-s", line)
        if m and round_no >= 2:
            steps.setdefault(m.group(1), []).append(float(m.group(3)))
    if not steps:
        R.skip(part, "ingest CPU per step", "vigil-bench-ingest-cost failed: " +
               text[-300:].replace("\n", " "))
        return
    where = {"decode": "vigil-commit thread", "from_wire": "vigil-commit thread",
             "log": "vigil-commit thread", "store": "event loop",
             "series": "vigil-series thread", "free": "where the frame is dropped",
             "total": "all steps of a keyframe push, without RPC",
             "expand": "event loop, delta pushes: base decompress, expand, recompress for the log",
             "decode_expanded": "vigil-commit thread, delta pushes (instead of decode)",
             "total_delta": "all steps of a delta push, without RPC",
             "encode": "load generator side (keyframe), not aggregator",
             "encode_delta": "load generator side (pointer delta), not aggregator"}
    for name in ("expand", "decode", "decode_expanded", "from_wire", "log", "store", "series",
                 "free", "total", "total_delta", "encode", "encode_delta"):
        if name in steps:
            R.row(part, "ingest step CPU, steady state: %s" % name, steps[name],
                  "core-s per 1M samples", where.get(name, ""))


def part_aggregator(env):
    part = "aggregator"
    for b in ("vigil-aggregator", "vigil-bench-loadgen"):
        if not env.have(b):
            R.skip(part, "aggregator scale", b + " is not built")
            return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    R.detail(part, "RLIMIT_NOFILE of the harness: soft %d, hard %d (both processes raise soft to "
             "hard; raising the hard limit is not permitted here)" % (soft, hard))
    best = best_rate = None
    fell_behind = None  # (agents, interval_ms) of the first run that was not sustained
    for n, interval_ms in CFG["agg_runs"]:
        label = "N=%d agents" % n if interval_ms == 10000 else \
            "N=%d agents at a %g s interval" % (n, interval_ms / 1000.0)
        if fell_behind and n * 1000.0 / interval_ms >= fell_behind[0] * 1000.0 / fell_behind[1]:
            # More frames per second than a run that already fell behind: it would only take
            # the time of the whole bench to say the same thing.
            R.skip(part, label, "not run: %d agents at a %g s interval already fell behind" %
                   (fell_behind[0], fell_behind[1] / 1000.0))
            continue
        ready = os.path.join(env.tmp, "agg-scale-%d-%d.ready" % (n, interval_ms))
        if os.path.exists(ready):
            os.unlink(ready)
        # Other work on the machine shows in every figure but CPU per million samples: say how
        # much there was.
        R.detail(part, "%s: load average (1, 5, 15 min) before the run: %s" % (
            label, ", ".join("%.2f" % x for x in os.getloadavg())))
        agg_cmd = env.aggregator_cmd("scale-%d-%d" % (n, interval_ms))
        R.command(part, " ".join(agg_cmd).replace(env.build, "BUILD") + "   (RLIMIT_NOFILE raised "
                  "to the hard limit)")
        agg = Proc(agg_cmd + ["--ready_file=" + ready], preexec=raise_nofile)
        try:
            kv = wait_for(lambda: read_kv(ready), 10)
            if not kv:
                R.skip(part, label, "aggregator did not start: " + agg.output()[-200:])
                continue
            time.sleep(0.5)
            rss_idle = rss_kib(agg.pid)
            cmd = [env.exe("vigil-bench-loadgen"), "--addr=127.0.0.1:%s" % kv["rpc_port"],
                   "--agents=%d" % n, "--interval_ms=%d" % interval_ms,
                   "--warmup_s=%d" % CFG["agg_warmup_s"], "--duration_s=%d" % CFG["agg_window_s"],
                   "--keyframe_every=30",  # as agents send: a keyframe, then 29 pointer deltas
                   # Each simulated agent's frames built before the run: on the bench machine the
                   # agents' encoding would otherwise compete with the aggregator for its 2 cores.
                   "--frames=prebuilt"]
            R.command(part, " ".join(cmd[:1] + ["--addr=127.0.0.1:PORT"] + cmd[2:]))
            lg = Proc(cmd, preexec=raise_nofile)
            if not wait_for(lambda: "measure_start=1" in lg.output() or not lg.alive(), 300):
                R.skip(part, label, "load generator did not reach its measurement window")
                lg.stop()
                continue
            c0, t0 = cpu_seconds(agg.pid), time.time()
            th0 = thread_cpu_by_name(agg.pid)
            rss_peak = 0
            while lg.alive():
                rss_peak = max(rss_peak, rss_kib(agg.pid))
                if "sustained=" in lg.output():
                    break
                time.sleep(0.5)
            t1 = time.time()
            c1 = cpu_seconds(agg.pid)
            th1 = thread_cpu_by_name(agg.pid)
            rss_end = rss_kib(agg.pid)
            wait_for(lambda: not lg.alive(), 30)
            out = lg.output()
            lg.stop()
            # The aggregator logs its ingest totals (group commit, series store) when stopped.
            agg.stop()
            summary = {}
            for line in agg.output().splitlines():
                if "ingest summary:" in line:
                    summary = dict(kv.split("=", 1) for kv in
                                   line.split("ingest summary:", 1)[1].split() if "=" in kv)
            r = parse_kv(out)
            if "sustained" not in r:
                reason = "load generator failed: " + out[-300:].replace("\n", " ")
                if r.get("fd_limited") == "1":
                    reason = "fd limit: " + out[-200:].replace("\n", " ")
                R.skip(part, label, reason)
                continue
            if int(r.get("registered", "0")) == 0:
                R.skip(part, label, "no simulated agent registered: " + out[-200:].replace("\n", " "))
                continue
            series = n * int(r["series_per_frame"])
            cpu_pct = (c1 - c0) / (t1 - t0) * 100
            offered = n * int(r["series_per_frame"]) * 1000.0 / interval_ms
            R.row(part, label + ": ingest samples/s", [float(r["samples_per_s"])], "samples/s",
                  "offered %s/s" % fmt(offered))
            R.row(part, label + ": aggregator CPU", [cpu_pct], "% of one core")
            sps = float(r["samples_per_s"])
            cpu_per_m = (c1 - c0) / (t1 - t0) / (sps / 1e6) if sps > 0 else float("nan")
            R.row(part, label + ": aggregator CPU per million samples", [cpu_per_m],
                  "core-seconds", "steadier than samples/s on a shared machine")
            if summary:
                R.row(part, label + ": frames per group commit (mean)",
                      [float(summary.get("mean_batch_frames", "nan"))], "frames",
                      "%s batches, %s frames over the whole run" %
                      (summary.get("commit_batches"), summary.get("commit_frames")))
                if int(summary.get("series", "0")) > 0:
                    R.row(part, label + ": series store bytes per series (estimate)",
                          [float(summary["series_memory_bytes"]) / int(summary["series"])], "B",
                          "%s series" % summary["series"])
            # Where the aggregator's CPU went (threads by name; the event loop is the main
            # thread, named after the binary).
            threads = {k: (th1.get(k, 0.0) - v) / (t1 - t0) * 100 for k, v in th0.items()}
            for name, title in (("vigil-aggregato", "event loop (RPC, acks, Store)"),
                                ("vigil-commit", "commit thread (decode, log)"),
                                ("vigil-series", "series thread")):
                if name in threads:
                    R.row(part, label + ": CPU of the %s" % title, [threads[name]],
                          "% of one core")
            R.row(part, label + ": load generator CPU (same machine)",
                  [float(r["loadgen_cpu_seconds"]) / float(r["window_seconds"]) * 100],
                  "% of one core")
            if "deltas_sent" in r:
                R.detail(part, "%s: %s keyframes (%s B) and %s pointer deltas (%s B) in the window; "
                         "load generator CPU to build a push: %s us (keyframe), %s us (delta); "
                         "deltas refused: %s" % (
                             label, r["keyframes_sent"], r["keyframe_bytes_mean"],
                             r["deltas_sent"], r["delta_bytes_mean"], r["build_us_per_keyframe"],
                             r["build_us_per_delta"], r["delta_refused"]))
            if r.get("frames") == "prebuilt":
                R.detail(part, "%s: frames prebuilt before the run: %s per agent, %s MiB, %s s "
                         "(%s CPU-s); in the window %s pushes from the prebuilt streams and %s "
                         "built at the push; %s agents left their stream; frames were %s s old "
                         "when pushed (planned times)" % (
                             label, r["prebuild_frames_per_agent"], r["prebuild_mib"],
                             r["prebuild_seconds"], r["prebuild_cpu_seconds"],
                             r["pushes_from_pool"], r["pushes_built"], r["agents_left_pool"],
                             r["frame_age_s_mean"]))
            R.row(part, label + ": aggregator RSS", [rss_end / 1024.0], "MiB")
            R.row(part, label + ": bytes per active series",
                  [(rss_end - rss_idle) * 1024.0 / max(series, 1)], "B",
                  "(RSS - idle RSS) / %d series" % series)
            R.row(part, label + ": ack latency p99", [float(r["ack_ms_p99"])], "ms")
            R.row(part, label + ": late pushes (falling behind)", [float(r["late_pushes"])], "")
            R.detail(part, "| %d | %g s | %s | %s/%s | %s | %s | %s | %.0f %% | %.2f | %s | %.0f | "
                     "%s | %s |" % (
                         n, interval_ms / 1000.0, r["registered"], r["frames_acked"],
                         r["frames_expected"], fmt(offered), fmt(sps), r["late_pushes"], cpu_pct,
                         cpu_per_m, summary.get("mean_batch_frames", "-"), rss_end / 1024.0,
                         r["ack_ms_p99"], "yes" if r["sustained"] == "1" else "no"))
            if r["sustained"] != "1" and not fell_behind:
                fell_behind = (n, interval_ms)
            if r["sustained"] == "1" and interval_ms == 10000:
                best = n
            if r["sustained"] == "1":
                best_rate = max(best_rate or 0, float(r["samples_per_s"]))
        finally:
            agg.stop()
            shutil.rmtree(os.path.join(env.build, "bench-data", "scale-%d-%d" % (n, interval_ms)),
                          ignore_errors=True)
    aggregator_step_costs(env, part)
    if best is not None:
        R.row(part, "largest N sustained at 10 s (of %s)" %
              sorted({n for n, i in CFG["agg_runs"] if i == 10000}), [best], "agents")
    else:
        R.skip(part, "largest N sustained", "no N at the 10 s interval was sustained")
    if best_rate is not None:
        R.row(part, "highest ingest rate sustained (any run above)", [best_rate], "samples/s",
              "goal >= 1000000; bounded by the load offered")


# ---------------------------------------------------------------------------------------------
# Part 6: wire efficiency


LOADED_FRAME = "host frame under load (redis, 200 exec/s)"


def part_wire(env):
    part = "wire"
    if not env.have("vigil-bench-wire"):
        R.skip(part, "wire efficiency", "vigil-bench-wire is not built")
        return
    keyframe_every = 30  # the agent's default --wire_keyframe_every
    runs = [("synthetic ~500-series frame",
             [env.exe("vigil-bench-wire"), "--rounds=5", "--keyframe_every=%d" % keyframe_every])]
    if env.root:
        live = [env.exe("vigil-bench-wire"), "--live", "--interval_ms=2000", "--rounds=5",
                "--keyframe_every=%d" % keyframe_every]
        runs.append(("this host's frame (agent's collectors)", live))
        # Events (exec, exit, TCP state changes) are new data in every frame, not samples.
        runs.append(("this host's frame, samples only", live + ["--no_events"]))
        # A busier host: a server under load and short-lived processes, so most counters move
        # between frames and new processes appear in every one.
        if shutil_which("redis-server") and shutil_which("redis-benchmark") and \
                env.have("vigil-bench-storm"):
            runs.append((LOADED_FRAME, live))
    for label, cmd in runs:
        R.command(part, cmd)
        load = []
        if label == LOADED_FRAME:
            port = free_port()
            load.append(Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"]))
            wait_for(lambda: run(["redis-cli", "-p", str(port), "ping"], timeout=5)[1].strip()
                     == "PONG", 15)
            load.append(Proc(["redis-benchmark", "-p", str(port), "-c", "20", "-n", "100000000",
                              "-t", "set,get", "-q"]))
            load.append(Proc([env.exe("vigil-bench-storm"), "exec", "100000", "200"]))
            R.command(part, "under load: redis-server, `redis-benchmark -c 20 -t set,get` and "
                      "`vigil-bench-storm exec 100000 200` (200 exec/s) running throughout")
        try:
            rc, out, _ = run(cmd, timeout=120)
        finally:
            for p in reversed(load):
                p.stop(signal.SIGINT)
        kv = parse_kv(out)
        if rc != 0 or "series" not in kv:
            R.skip(part, label, "vigil-bench-wire failed: " + out[-200:])
            continue
        R.row(part, label + ": series", [float(kv["series"])], "")
        R.row(part, label + ": JSON+gzip (structured) bytes/sample",
              [float(kv["json_structured_gzip_per_sample"])], "B")
        R.row(part, label + ": keyframe (packed+zstd) bytes/sample",
              [float(kv["packed_zstd_per_sample"])], "B")
        R.row(part, label + ": delta frame bytes/sample",
              [float(kv["delta_per_sample"])], "B",
              "mean of %s consecutive deltas" % kv.get("deltas", "?"))
        R.row(part, label + ": steady state bytes/sample (keyframe every %d)" % keyframe_every,
              [float(kv["steady_per_sample"])], "B")
        R.row(part, label + ": keyframe / JSON+gzip (structured)",
              [float(kv["ratio_vs_json_structured_gzip"])], "x", "first frame of a session")
        R.row(part, label + ": steady state / JSON+gzip (structured)",
              [float(kv["steady_ratio_vs_json_structured_gzip"])], "x", "goal <= 0.2")
        R.row(part, label + ": steady state / JSON+gzip (series list)",
              [float(kv["steady_ratio_vs_json_series_gzip"])], "x", "goal <= 0.2")
        if "event_list_steady_ratio_vs_json_structured_gzip" in kv:
            R.row(part, label + ": same frames, events as a list / JSON+gzip (structured)",
                  [float(kv["event_list_steady_ratio_vs_json_structured_gzip"])], "x",
                  "before Frame.eventColumns")
        if "legacy_steady_ratio_vs_json_structured_ns_gzip" in kv:
            R.row(part, label + ": same frames, previous form (ns, float64, byte delta) / JSON+gzip",
                  [float(kv["legacy_steady_ratio_vs_json_structured_ns_gzip"])], "x",
                  "before ProcessSample.cpuUs, Metric.scaled and pointer deltas")
        R.detail(part, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, kv["series"], kv["packed_bytes"], kv["packed_zstd_bytes"],
            kv["delta_bytes_avg"], kv.get("byte_delta_bytes_avg", "-"), kv["steady_bytes_avg"],
            kv.get("legacy_steady_bytes_avg", "-"),
            kv["json_structured_bytes"], kv["json_structured_gzip_bytes"],
            kv["json_series_bytes"], kv["json_series_gzip_bytes"]))


# ---------------------------------------------------------------------------------------------
# Part 7: CLI start-up


def timed_tool(cmd, first_output_re, stop_after_first=False, timeout=30, workload=None,
               marks=None, env=None):
    """Starts cmd and reports (seconds to a line matching first_output_re, total seconds, peak
    RSS MiB, output). marks: more {name: regex}; the seconds to the first line matching each are
    left in timed_tool.marks (None when no line matched)."""
    # Peak RSS comes from GNU time wrapped around the tool: the tool is forked from that small C
    # program, so its ru_maxrss is the tool's own (a child forked from this Python process would
    # report Python's pre-exec size, ~23 MiB, as its peak).
    rss_file = tempfile.NamedTemporaryFile(prefix="vigil-bench-rss.", delete=False)
    rss_file.close()
    cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name] + list(cmd)
    marks = dict(marks or {})
    found = {name: None for name in marks}
    full_env = dict(os.environ, **env) if env else None
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, text=True, bufsize=1, env=full_env)
    first = None
    lines = []

    def reader():
        nonlocal first
        for line in p.stdout:
            now = time.time() - t0
            lines.append(line)
            for name, rx in marks.items():
                if found[name] is None and re.search(rx, line):
                    found[name] = now
            if first is None and re.search(first_output_re, line):
                first = now
                if stop_after_first:
                    try:
                        os.killpg(p.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    # A blocking wait4 (a timer kills the group at the deadline): the exit is seen when it
    # happens, not at the next tick of a polling loop.
    def kill():
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    killer = threading.Timer(timeout, kill)
    killer.start()
    _, status, ru = os.wait4(p.pid, 0)
    total = time.time() - t0
    killer.cancel()
    th.join(timeout=2)
    timed_tool.last_rc = os.waitstatus_to_exitcode(status)
    timed_tool.marks = found
    peak_mib = ru.ru_maxrss / 1024.0
    try:
        with open(rss_file.name) as f:
            kb = [l for l in f.read().split() if l.isdigit()]
        if kb:
            peak_mib = int(kb[-1]) / 1024.0
    finally:
        os.unlink(rss_file.name)
    return first, total, peak_mib, "".join(lines)


def part_cli(env):
    # BENCH_CLI_FIFO=1: this part (the harness's reader threads, both tools and the exec storm,
    # which inherit it) runs as SCHED_FIFO 10, so start-up figures taken while other work keeps
    # the machine busy approximate a quiet machine's: on the shared 2-core test machine at load
    # 8-10 this reproduced the quiet-machine figures of the unchanged tools within ~1-2 ms.
    fifo = os.environ.get("BENCH_CLI_FIFO") == "1"
    if fifo and env.root:
        old = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        R.detail("cli", "Run with BENCH_CLI_FIFO=1: the harness and every measured command ran "
                 "as SCHED_FIFO 10, to keep other load off the start-up figures.")
        try:
            return part_cli_measure(env)
        finally:
            os.sched_setscheduler(0, old[0], old[1])
    return part_cli_measure(env)


# bpftrace (0.17 and later) prints this line to stderr once every probe is attached when the
# variable is set (its runtime tests use it); "Attaching N probes..." comes before the attach.
BT_ATTACHED_ENV = {"__BPFTRACE_NOTIFY_PROBES_ATTACHED": "1"}
BT_ATTACHED = r"^__BPFTRACE_NOTIFY_PROBES_ATTACHED"


def cli_alternate(runs, tools):
    """Runs each tool `runs` times, the order rotating every round, and collects per tool the
    timed_tool results: {key: {"first": [...], "total": [...], "rss": [...], "marks": {name:
    [...]}, "failed": str or None}}. tools: [(key, kwargs for timed_tool)]."""
    res = {k: {"first": [], "total": [], "rss": [], "marks": {}, "failed": None}
           for k, _ in tools}
    for k in range(runs):
        order = tools[k % len(tools):] + tools[:k % len(tools)]
        for key, kw in order:
            r = res[key]
            if r["failed"]:
                continue
            first, total, rss, out = timed_tool(**kw)
            if first is None:
                r["failed"] = "no line matching %r within %.1f s (exit %d): %s" % (
                    kw["first_output_re"], total, timed_tool.last_rc,
                    out.strip()[-200:].replace("\n", " "))
                continue
            r["first"].append(first)
            r["total"].append(total)
            r["rss"].append(rss)
            for name, t in timed_tool.marks.items():
                r["marks"].setdefault(name, []).append(t)
    return res


def ms(values, minus=0.0):
    return [(v - minus) * 1000 for v in values if v is not None]


def part_cli_measure(env):
    part = "cli"
    # bcc's runqlat: the claim that it cannot run here is verified, not assumed.
    if shutil_which("runqlat-bpfcc"):
        R.command(part, "runqlat-bpfcc 1 1")
        rc, out, _ = run(["runqlat-bpfcc", "1", "1"], timeout=60)
        err = [l for l in out.splitlines() if l.strip()][:3]
        print("  runqlat-bpfcc exited %d: %s" % (rc, " / ".join(err)), flush=True)
        R.detail(part, "bcc: `runqlat-bpfcc 1 1` exited %d; its first lines:\n\n```\n%s\n```" %
                 (rc, "\n".join(err)))
    else:
        R.skip(part, "runqlat-bpfcc", "bpfcc-tools is not installed (ci/install-deps.sh lists it)")
    if not env.root:
        R.skip(part, "CLI start-up", "needs root (BPF)")
        return
    ensure_tracefs()
    # vigil's side: is the subcommand built?
    vig = env.exe("vigil")
    have = {}
    for sub in (["hist", "runq"], ["trace", "exec"], ["top"]):
        rc, out, _ = run([vig] + sub + ["--help"], timeout=10)
        have[sub[0]] = rc == 0 and "not available" not in out.lower()
        if not have[sub[0]]:
            R.skip(part, "vigil %s" % " ".join(sub),
                   "not built yet (`vigil %s --help` exited %d: %s)" %
                   (" ".join(sub), rc, out.strip().splitlines()[-1] if out.strip() else ""))
    runs = CFG["cli_runs"]
    script = lambda name: os.path.join(BENCH, "scripts", name)

    # vigil's CO-RE BTF cache (docs/kernel-compat.md): in a directory of this run's, built by one
    # warm-up command, as the first BPF command on a kernel would build it. Every vigil figure
    # below is with the cache; the "no BTF cache" rows at the end are the first run on a kernel.
    btf_dir = tempfile.mkdtemp(prefix="vigil-bench-btf.")
    old_btf_env = os.environ.get("VIGIL_BTF_CACHE_DIR")
    os.environ["VIGIL_BTF_CACHE_DIR"] = btf_dir
    try:
        if have["trace"]:
            run([vig, "trace", "exec", "--duration", "1ms"], timeout=30)
            R.detail(part, "vigil's CO-RE BTF cache was built by one `vigil trace exec --duration "
                     "1ms` before the measurements (%s); the rows marked \"no BTF cache\" set "
                     "VIGIL_BTF_CACHE_DIR=off." % ", ".join(sorted(os.listdir(btf_dir))))
        part_cli_tools(env, part, vig, have, runs, script)
    finally:
        if old_btf_env is None:
            os.environ.pop("VIGIL_BTF_CACHE_DIR", None)
        else:
            os.environ["VIGIL_BTF_CACHE_DIR"] = old_btf_env
        shutil.rmtree(btf_dir, ignore_errors=True)


def part_cli_tools(env, part, vig, have, runs, script):

    # What the wrapper costs: GNU time, a pipe, this process's reader thread, for a command
    # that prints at once. Every figure below includes it, for both tools alike.
    floor = cli_alternate(runs, [("echo", dict(cmd=["/bin/echo", "x"], first_output_re=r"x"))])
    R.row(part, "harness floor: /bin/echo, time to its line", ms(floor["echo"]["first"]), "ms",
          "wrapper cost, in every figure")

    # runqlat: probes attached (bpftrace's notify line; vigil's header, printed right after
    # attach), the histogram printed after the 1 s window, and the exit.
    R.command(part, "__BPFTRACE_NOTIFY_PROBES_ATTACHED=1 bpftrace -B line "
              "bench/scripts/runqlat.bt   (1 s, histogram printed at exit)")
    tools = [("bt", dict(cmd=["bpftrace", "-B", "line", script("runqlat.bt")],
                         first_output_re=BT_ATTACHED, env=BT_ATTACHED_ENV,
                         marks={"hist": r"^@usecs"}))]
    if have["hist"]:
        vg_runq = [vig, "hist", "runq", "--duration", "1s"]
        R.command(part, " ".join(vg_runq))
        tools.append(("vg", dict(cmd=vg_runq, first_output_re=r"^Tracing runq",
                                 marks={"hist": r"^runq latency"})))
    res = cli_alternate(runs, tools)
    bt, vg = res["bt"], res.get("vg")
    if bt["failed"]:
        R.skip(part, "bpftrace runqlat", bt["failed"])
    R.row(part, "bpftrace runqlat: time to probes attached", ms(bt["first"]), "ms")
    R.row(part, "bpftrace runqlat: histogram printed, beyond its 1 s window",
          ms(bt["marks"].get("hist", []), 1.0), "ms")
    R.row(part, "bpftrace runqlat: wall time beyond its 1 s window", ms(bt["total"], 1.0), "ms",
          "to its exit")
    R.row(part, "bpftrace runqlat: peak RSS", bt["rss"], "MiB")
    if vg is not None and vg["failed"]:
        R.skip(part, "vigil hist runq", vg["failed"])
    elif vg is not None:
        R.row(part, "vigil hist runq: time to probes attached", ms(vg["first"]), "ms",
              "goal <= 25 ms")
        R.row(part, "vigil hist runq: histogram printed, beyond its 1 s window",
              ms(vg["marks"].get("hist", []), 1.0), "ms")
        R.row(part, "vigil hist runq: wall time beyond its 1 s window", ms(vg["total"], 1.0),
              "ms", "to its exit")
        R.row(part, "vigil hist runq: peak RSS", vg["rss"], "MiB")
        n = min(len(bt["first"]), len(vg["first"]))
        R.row(part, "start-up ratio bpftrace/vigil (runq, probes attached)",
              [b / v for b, v in zip(bt["first"][:n], vg["first"][:n]) if v > 0], "x",
              "goal >= 10")
        R.row(part, "RSS ratio vigil/bpftrace (runq)",
              [v / b for b, v in zip(bt["rss"], vg["rss"])], "x", "goal <= 0.2")

    # execsnoop: time to the first event line while processes exec continuously, and to the
    # probes attached.
    tools = [("bt", dict(cmd=["bpftrace", "-B", "line", script("execsnoop.bt")],
                         first_output_re=r"^\d+\s+\d+", stop_after_first=True,
                         env=BT_ATTACHED_ENV, marks={"attached": BT_ATTACHED}))]
    R.command(part, "bpftrace -B line bench/scripts/execsnoop.bt   (stopped after its first event)")
    if have["trace"]:
        R.command(part, "vigil trace exec   (stopped after its first event)")
        tools.append(("vg", dict(cmd=[vig, "trace", "exec"], first_output_re=r"\btrue\b",
                                 stop_after_first=True, marks={"attached": r"^TIME\s+PID"})))
    R.command(part, [env.exe("vigil-bench-storm"), "exec", "100000", "200"])
    storm = Proc([env.exe("vigil-bench-storm"), "exec", "100000", "200"])
    try:
        res = cli_alternate(runs, tools)
    finally:
        storm.stop()
    bt, vg = res["bt"], res.get("vg")
    if bt["failed"]:
        R.skip(part, "bpftrace execsnoop", bt["failed"])
    R.row(part, "bpftrace execsnoop: time to probes attached", ms(bt["marks"].get("attached", [])),
          "ms")
    R.row(part, "bpftrace execsnoop: time to first event", ms(bt["first"]), "ms",
          "execs every 5 ms")
    R.row(part, "bpftrace execsnoop: peak RSS", bt["rss"], "MiB")
    if vg is not None and vg["failed"]:
        R.skip(part, "vigil trace exec", vg["failed"])
    elif vg is not None:
        R.row(part, "vigil trace exec: time to probes attached",
              ms(vg["marks"].get("attached", [])), "ms")
        R.row(part, "vigil trace exec: time to first event", ms(vg["first"]), "ms",
              "goal <= 25 ms")
        R.row(part, "vigil trace exec: peak RSS", vg["rss"], "MiB")

    # TCP: `trace tcp` against a tracepoint-only tcpconnect/tcplife, `hist tcp-connect` against
    # a tracepoint-only tcpconnlat; time to probes attached (each is stopped there).
    for label, bt_script, vg_args, vg_re in (
            ("trace tcp", "tcplife.bt", ["trace", "tcp"], r"^TIME\s+EVENT"),
            ("hist tcp-connect", "tcpconnlat.bt", ["hist", "tcp-connect"],
             r"^Tracing tcp-connect")):
        R.command(part, "__BPFTRACE_NOTIFY_PROBES_ATTACHED=1 bpftrace -B line bench/scripts/%s"
                  "   (stopped once attached)" % bt_script)
        tools = [("bt", dict(cmd=["bpftrace", "-B", "line", script(bt_script)],
                             first_output_re=BT_ATTACHED, stop_after_first=True,
                             env=BT_ATTACHED_ENV))]
        if have[vg_args[0]]:
            R.command(part, "vigil %s   (stopped once attached)" % " ".join(vg_args))
            tools.append(("vg", dict(cmd=[vig] + vg_args, first_output_re=vg_re,
                                     stop_after_first=True)))
        res = cli_alternate(runs, tools)
        bt, vg = res["bt"], res.get("vg")
        peer = "bpftrace %s" % bt_script[:-3]
        if bt["failed"]:
            R.skip(part, peer, bt["failed"])
        R.row(part, "%s: time to probes attached" % peer, ms(bt["first"]), "ms")
        R.row(part, "%s: peak RSS" % peer, bt["rss"], "MiB")
        if vg is not None and vg["failed"]:
            R.skip(part, "vigil " + label, vg["failed"])
        elif vg is not None:
            R.row(part, "vigil %s: time to probes attached" % label, ms(vg["first"]), "ms",
                  "goal <= 25 ms")
            R.row(part, "vigil %s: peak RSS" % label, vg["rss"], "MiB")

    # top --once: no bpftrace equivalent (six collectors' worth of state); the first output is
    # the table, printed one interval after the collectors are loaded.
    if have["top"]:
        vg_top = [vig, "top", "--once", "--interval", "100ms", "--limit", "5"]
        R.command(part, " ".join(vg_top))
        res = cli_alternate(runs, [("vg", dict(cmd=vg_top, first_output_re=r"\S"))])
        vg = res["vg"]
        if vg["failed"]:
            R.skip(part, "vigil top --once", vg["failed"])
        else:
            R.row(part, "vigil top --once: first output beyond its 100 ms interval",
                  ms(vg["first"], 0.1), "ms", "no bpftrace peer")
            R.row(part, "vigil top --once: peak RSS", vg["rss"], "MiB")

    # The first run on a kernel: no BTF cache yet, so libbpf relocates against (and for tp_btf
    # programs parses) the full vmlinux BTF.
    off = {"VIGIL_BTF_CACHE_DIR": "off"}
    for label, args, rx, key in (("trace exec", ["trace", "exec"], r"^TIME\s+PID", "trace"),
                                 ("trace tcp", ["trace", "tcp"], r"^TIME\s+EVENT", "trace"),
                                 ("hist runq", ["hist", "runq"], r"^Tracing runq", "hist")):
        if not have[key]:
            continue
        R.command(part, "VIGIL_BTF_CACHE_DIR=off vigil %s   (stopped once attached)" %
                  " ".join(args))
        res = cli_alternate(runs, [("vg", dict(cmd=[vig] + args, first_output_re=rx,
                                               stop_after_first=True, env=off))])
        vg = res["vg"]
        if vg["failed"]:
            R.skip(part, "vigil %s, no BTF cache" % label, vg["failed"])
        else:
            R.row(part, "vigil %s, no BTF cache: time to probes attached" % label,
                  ms(vg["first"]), "ms", "first run on a kernel")


# ---------------------------------------------------------------------------------------------
# Output: the table and docs/performance.md

PART_TITLES = {
    "overhead": "1. Workload overhead",
    "bpfcost": "2. BPF cost per event",
    "footprint": "3. Agent footprint",
    "events": "4. Event throughput",
    "aggregator": "5. Aggregator scale",
    "wire": "6. Wire efficiency",
    "cli": "7. CLI start-up",
}

PART_NOTES = {
    "overhead": [
        "Each configuration is compared with \"no agent\" in pairs run back to back, the order "
        "alternating from pair to pair (A B, B A, ...). A ratio is (throughput with the "
        "configuration) / (throughput without it) of the same pair; medians and min–max over "
        "the pairs. CPU/request is the CPU time of server plus client (utime+stime from /proc "
        "and the client's rusage) per request; BPF programs run in the context of the task that "
        "hit the hook, so their cost is inside it. The agent's or peer's own CPU is not in it "
        "(see the footprint part).",
        "Resolution: the \"no agent (A/A control)\" row pairs no agent with no agent, so "
        "its spread is the measurement's own: on a small shared VM a few-second run's "
        "throughput swings by several percent, and five pairs cannot resolve a 1 % goal; the "
        "goal rows print a bootstrap 95 % interval of their median to say so. The accounted "
        "rows are the steadier figure: vigil's own CPU per "
        "request, read from the kernel (bpf_stats run_time_ns of the agent's programs, less "
        "what empty programs on the same hooks read per event, which is bpf_stats's own clock "
        "reads) plus the agent's CPU, over the workload's CPU per request without an agent. "
        "They leave out the kernel's dispatch into BPF (the floor rows), the syscall slow path "
        "while syscall programs are attached (the floor with raw_syscalls, for 2 % of the time "
        "in the default mode) and indirect costs such as cache lines the programs evict.",
        "Syscall hooks are the expensive part of any agent: a `raw_syscalls` tracepoint puts "
        "every syscall of every task on the slow path whatever the program does, which the floor "
        "with raw_syscalls shows. This is why vigil samples syscalls by duty cycle by default: "
        "the programs are attached 2 % of each interval (200 ms in 10 s), so the syscall share "
        "of the default agent's overhead is about 2 % of the continuous-mode variant's (estimated "
        "0.2–0.4 % of redis throughput), at the price of estimated rather than exact syscall "
        "counts; see [syscall-sampling.md](syscall-sampling.md) for the trade-off.",
        "The per-message socket tracepoints (`sock_send_length`, `sock_recv_length`) are the "
        "other hot hooks: they fire on every send and recv on the host, and empty programs on "
        "just those two cost a loopback redis-benchmark measurably. The agent therefore leaves "
        "them off by default (`net_message_mode`, docs/configuration.md) and takes TCP bytes "
        "from the kernel's per-socket counters instead (an iterator pass per collection plus "
        "the connection-lifecycle hooks); only UDP bytes need the per-message hooks. Figures "
        "and how to reproduce them: [metrics.md](metrics.md#network-net-collector-bpfnet), "
        "\"Cost\".",
    ],
    "bpfcost": [
        "With `kernel.bpf_stats_enabled=1` (set back afterwards), the agent and an empty program "
        "on every hook the agent uses (same attach type) run side by side over the same "
        "workload (redis-benchmark, 200 exec/s, a getppid loop); per window, run_time_ns/run_cnt "
        "deltas of each vigil program and of the empty program on its hook. The empty program "
        "is the floor: BPF dispatch plus the kernel's own tracepoint work. Programs on one hook run "
        "in the order they were attached, and the first pays more (it meets the task and "
        "context cold), so the agent and the empty programs are started afresh for each window "
        "in alternating order (even windows: agent first; odd: empty programs first).",
        "The agent runs in continuous syscall mode here: its syscall programs are the same as "
        "in the default sampled mode, but attached in every window.",
        "The getppid loop measures what a hook adds to the cheapest syscall. With the agent's "
        "defaults, syscall programs are attached only 2 % of each interval (at a random point), "
        "so that figure mostly shows the detached state; continuous mode shows the attached "
        "one. The duty cycle's cost against accuracy: [syscall-sampling.md](syscall-sampling.md).",
    ],
    "footprint": [
        "RSS from /proc/PID/status (VmRSS) sampled every second; CPU from utime+stime over the "
        "window, at the default 10 s interval. Churn: `vigil-bench-storm exec` forks and execs "
        "/bin/true at 1,000/s; growth is RSS one and three intervals after the churn minus RSS "
        "before it (the frame one interval after still reports the processes that exited in "
        "the churn's last interval); drift compares the medians of the churn's last and second "
        "minute (flat when the agent's tables and frames are bounded by the exec rate).",
    ],
    "events": [
        "An exec storm and a TCP connect storm against an agent at a 1 s interval; events "
        "counted and lost are deltas of the agent's own /metrics counters, read before and after.",
    ],
    "aggregator": [
        "`vigil-bench-loadgen` opens one real Cap'n Proto RPC connection per simulated agent "
        "over loopback, registers, and pushes a synthetic ~500-series frame (with that agent's "
        "id and seq, stamped with recent times so the series store takes every sample) every "
        "10 s, one push in flight per agent, spread evenly over the interval. Frames are encoded "
        "as agents send them (`--keyframe_every=30`, the agent's default): a packed+zstd "
        "keyframe first and every 30th frame, pointer deltas against the agent's previous frame "
        "in between, which the aggregator expands on its event loop (runs before 2026-11-26 sent "
        "keyframes only and never exercised that path). Since 2026-11-27 each simulated agent's "
        "frames are built and encoded before the run (`--frames=prebuilt`: real agents encode on "
        "their own nodes, and doing it for 10,000 of them took more than half of one of the "
        "aggregator's two cores); their times are the planned push times, so frames are older "
        "when pushed by about the prebuild time (printed), and an agent whose session breaks "
        "builds per push from then on (counted). Frames go through the aggregator's group commit (one fsync "
        "per batch, acks after the commit); frames per commit is the mean batch size the "
        "aggregator logs at shutdown. CPU per million samples is aggregator CPU seconds over the "
        "window divided by millions of samples acknowledged in it. Sustained means: all agents registered, no push was still "
        "unacknowledged when the next was due, ≥ 98 % of expected frames acknowledged and ack "
        "p99 below the interval. The load generator runs on the same 2 cores as the aggregator, "
        "so the aggregator's figures include that competition. Bytes per active series is "
        "(RSS at the end − RSS idle) / (agents × series per frame). Each run starts a fresh "
        "aggregator; when the build's aggregator has `--data_dir` (the ingest log), it gets a "
        "fresh directory on disk, so every acknowledgement includes that durable write. CPU "
        "by thread is each named thread's schedstat time over the window (event loop: RPC, "
        "acks and the fleet Store; vigil-commit: decoding and the log; vigil-series: the "
        "series store). The ingest step rows come from `vigil-bench-ingest-cost`, which feeds "
        "the same synthetic frames through the aggregator's own decode, Store, series store "
        "and log code in one process, without RPC, timing each step in thread CPU time: they "
        "hold on a machine busy with other work, where the load-generator runs do not. "
        "docs/aggregator-scale.md explains the figures.",
    ],
    "wire": [
        "`vigil-bench-wire` builds consecutive frames (synthetic: 6 frames of a host whose every "
        "counter moves every interval, the worst case for deltas; live: 6 collections of this "
        "host by the agent's own collectors, 2 s apart, after one warm-up collection) and "
        "encodes them as the agent sends them (the payload of IngestSession.push, without the "
        "RPC call's own framing): the **keyframe** is Cap'n Proto packed + zstd level 3 of the "
        "last frame; a **delta** is what the agent sends: the frame's unpacked words with "
        "pointers predicted from a depth-first walk, zstd-compressed with the previous frame's "
        "words (same transform) as the zstd prefix (`encodePointerDelta`; each one checked to "
        "expand back to the frame's packed bytes byte for byte); the **byte delta** is the "
        "older form (packed bytes against packed bytes); the frame carries its events as "
        "columns (`Frame.eventColumns`), and **events as a list** is the steady state of the "
        "same frames with the `Frame.events` list agents wrote before; **previous form** is the steady "
        "state of the same frames as agents sent them before `ProcessSample.cpuUs`, "
        "`Metric.scaled` and pointer deltas (on-CPU time in ns, float64 metric values, byte "
        "deltas; its JSON carries ns too). The synthetic frame's counters advance by an amount "
        "that varies every interval (±50 %), on-CPU time with random ns digits, host values "
        "computed from their source units (ticks / 100, µs / 1e6, ...) as the host collector "
        "does; the **steady state** is what an agent sends on average within a session "
        "with a keyframe every K frames: (keyframe + (K−1) × mean delta) / K, K = 30 (the "
        "agent's default `--wire_keyframe_every`; 5 minutes at the 10 s interval). The same data "
        "(the last frame) as JSON: \"structured\" mirrors the frame with zero fields omitted "
        "(the fairest JSON), \"series\" is a flat list of {name, labels, value}; gzip is zlib "
        "level 6; it includes the frame's events (Cap'n Proto's JSON codec, default fields "
        "omitted), and the \"samples only\" run leaves events out of both sides. JSON gets no "
        "delta: it is the seed's format, which ships every frame whole. "
        "Samples are the Prometheus series the frame renders to. The first frame of every "
        "session (agent start, reconnect, failover) is a keyframe, so an agent that reconnects "
        "often pays the keyframe figure more often.",
        "\"Host frame under load\" is the live run again while redis-server serves "
        "`redis-benchmark -c 20` and `vigil-bench-storm exec` starts 200 short-lived processes "
        "a second: every frame then holds hundreds of processes that were not in the previous "
        "one (started and gone within the interval) and their exec, fork and exit events, all "
        "new data that no delta can take from the previous frame, while JSON+gzip still "
        "compresses their repeated structure well. It is the least favourable real frame "
        "measured here.",
    ],
    "cli": [
        "bcc's tools compile their BPF C at run time against kernel headers, which this kernel "
        "does not ship; CO-RE tools (vigil, bpftrace's tracepoint-only scripts) need none. The "
        "peer is therefore bpftrace 0.17 with tracepoint-only scripts in bench/scripts/. "
        "Peak RSS is the tool's ru_maxrss, taken by GNU time wrapped around it. Start-up is the "
        "time from the harness's fork until the tool says its probes are attached: for "
        "bpftrace the line it prints once every probe is attached when "
        "__BPFTRACE_NOTIFY_PROBES_ATTACHED is set (its \"Attaching N probes...\" comes before "
        "the attach), for vigil its header, printed right after its attach. Every figure "
        "includes the harness's own cost (GNU time, a pipe, a reader thread: the 'harness "
        "floor' row). For runqlat both tools are also asked for a 1 s histogram: the time "
        "beyond that second until the histogram is printed, and until the process has exited "
        "(which adds the tool's teardown: detaching and freeing its BPF objects). For "
        "execsnoop the first event is the first line for an exec of /bin/true, exec'd every "
        "5 ms. The TCP peers (bench/scripts/tcplife.bt, tcpconnlat.bt) use the "
        "sock:inet_sock_set_state tracepoint's fields only; `vigil top --once` has no "
        "bpftrace peer.",
    ],
}


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu,
            "mem": next((l.split(":")[1].strip() for l in open("/proc/meminfo")
                         if l.startswith("MemTotal")), "?")}


def git_rev():
    try:
        return subprocess.check_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def print_table(elapsed):
    print("\n%-11s %-62s %12s %24s %3s  %s" % ("part", "measure", "median", "min–max", "n", "unit"))
    print("-" * 130)
    for part, measure, m, lo, hi, n, unit, note in R.rows:
        print("%-11s %-62s %12s %24s %3d  %s%s" % (part, measure[:62], fmt(m),
                                                  "%s – %s" % (fmt(lo), fmt(hi)), n, unit,
                                                  ("  [" + note + "]") if note else ""))
    for part, what, reason in R.skipped:
        print("%-11s %-62s %12s  %s" % (part, what[:62], "skipped", reason))
    print("\nharness time: %.0f s%s" % (elapsed, " (BENCH_QUICK=1 smoke run)" if QUICK else ""))


def write_doc(path, parts, elapsed, argv):
    m = machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = []
    L.append("# vigil performance")
    L.append("")
    L.append("<!-- GENERATED by bench/run.sh: do not edit by hand; rerun `make bench`. -->")
    L.append("")
    if QUICK:
        L.append("> **SMOKE RUN (`BENCH_QUICK=1`) on a busy shared machine.** This file was "
                 "produced to validate the harness while other builds were running on the same "
                 "2 cores; run lengths and pair counts are cut down. **The figures below are "
                 "noise, not results**; they will be replaced by a full `make bench` on a quiet "
                 "machine.")
        L.append("")
    L.append("- Date: %s; vigil commit %s" % (now, git_rev()))
    L.append("- Machine: %d CPUs (nproc), %s, kernel %s, %s RAM" % (m["nproc"], m["cpu"],
                                                                 m["kernel"], m["mem"]))
    L.append("- Command: `%s`%s; parts run: %s; harness time %.0f s" % (
        " ".join(argv), " with BENCH_QUICK=1" if QUICK else "", ", ".join(parts), elapsed))
    L.append("- Sizes: " + ", ".join("%s=%s" % kv for kv in CFG.items()))
    L.append("- Syscall sampling and its trade-off: [syscall-sampling.md](syscall-sampling.md).")
    L.append("")
    L.append("Every comparison is a ratio measured in the same run, alternating A and B for %d "
             "pairs, reported as median (min–max). Nothing here is typed by hand." %
             CFG["pairs"])
    L.append("")
    L.append("## Summary")
    L.append("")
    L.append("| part | measure | median | min–max | n | unit | note |")
    L.append("|---|---|---|---|---|---|---|")
    for part, measure, med_, lo, hi, n, unit, note in R.rows:
        L.append("| %s | %s | %s | %s–%s | %d | %s | %s |" % (part, measure, fmt(med_), fmt(lo),
                                                             fmt(hi), n, unit, note))
    L.append("")
    goals = []
    for part, measure, med_, lo, hi, n, unit, note in R.rows:
        g = re.search(r"goal (<=|>=) ([\d.]+)", note)
        if g:
            target = float(g.group(2))
            met = med_ <= target if g.group(1) == "<=" else med_ >= target
            goals.append("| %s | %s | %s %s | %s %s | %s |" % (
                part, measure, fmt(med_), unit, g.group(1).replace("<=", "≤").replace(">=", "≥"),
                fmt(target), "yes" if met else "**no**"))
    if goals:
        L.append("## Goals (checked against the medians above)")
        L.append("")
        L.append("| part | measure | median | goal | met |")
        L.append("|---|---|---|---|---|")
        L.extend(goals)
        L.append("")
    L.append("## Skipped")
    L.append("")
    if R.skipped:
        for part, what, reason in R.skipped:
            L.append("- **%s / %s**: skipped: %s" % (part, what, reason))
    else:
        L.append("- nothing")
    not_run = [p for p in PARTS if p not in parts]
    for p in not_run:
        L.append("- **%s**: not run in this invocation" % p)
    L.append("")
    for p in parts:
        L.append("## " + PART_TITLES[p])
        L.append("")
        for note in PART_NOTES.get(p, []):
            L.append(note)
            L.append("")
        if R.peers.get(p):
            L.append("Configurations:")
            L.append("")
            for line in R.peers[p]:
                L.append("- " + line)
            L.append("")
        det = R.sections.get(p, [])
        table_lines = [d for d in det if d.startswith("|")]
        other = [d for d in det if not d.startswith("|")]
        if table_lines:
            if p == "overhead":
                L.append("| workload | configuration | no agent (req/s) | with it (req/s) | "
                         "ratio | min–max | CPU µs/req (no agent → with) |")
                L.append("|---|---|---|---|---|---|---|")
            elif p == "bpfcost":
                L.append("| program | hook | ns/event | empty ns/event | ratio (min–max) | "
                         "events/window |")
                L.append("|---|---|---|---|---|---|")
            elif p == "aggregator":
                L.append("| agents | interval | registered | frames acked/expected | offered/s | "
                         "samples/s | late | aggregator CPU | CPU s per 1M samples | "
                         "frames per commit | RSS MiB | ack p99 ms | sustained |")
                L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            elif p == "wire":
                L.append("| frame | series | packed B | keyframe B | delta B (mean) | "
                         "byte delta B | steady state B | previous form steady B | JSON B | "
                         "JSON+gzip B | series JSON B | series JSON+gzip B |")
                L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            L.extend(table_lines)
            L.append("")
        for d in other:
            L.append(d)
            L.append("")
        if R.commands.get(p):
            L.append("Commands:")
            L.append("")
            L.append("```")
            L.extend(R.commands[p])
            L.append("```")
            L.append("")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")
    print("wrote " + os.path.relpath(path, REPO))


def main():
    ap = argparse.ArgumentParser(description="vigil benchmarks")
    ap.add_argument("build", nargs="?", default=os.path.join(REPO, "build"))
    ap.add_argument("--only", default="", help="comma-separated parts: " + " ".join(PARTS))
    ap.add_argument("--no-doc", action="store_true", help="do not write any markdown")
    args = ap.parse_args()
    parts = PARTS
    if args.only:
        parts = [p.strip() for p in args.only.split(",") if p.strip()]
        bad = [p for p in parts if p not in PARTS]
        if bad:
            print("unknown part(s): %s; parts are %s" % (", ".join(bad), " ".join(PARTS)),
                  file=sys.stderr)
            return 2
    env = Env(args.build)
    if not os.path.isdir(env.bin):
        print("bench: no build at %s (run `make build`)" % env.build, file=sys.stderr)
        return 2
    atexit.register(cleanup_all)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    if not env.root:
        print("bench: not root: BPF parts will be skipped", file=sys.stderr)
    print("vigil bench%s: parts %s" % (" (BENCH_QUICK=1 smoke run)" if QUICK else "",
                                       ", ".join(parts)), flush=True)
    t0 = time.time()
    funcs = {"overhead": part_overhead, "bpfcost": part_bpfcost, "footprint": part_footprint,
             "events": part_events, "aggregator": part_aggregator, "wire": part_wire,
             "cli": part_cli}
    for p in parts:
        print("\n== %s" % PART_TITLES[p], flush=True)
        tp = time.time()
        try:
            funcs[p](env)
        except Exception as e:  # one broken part must not hide the others
            import traceback
            traceback.print_exc()
            R.skip(p, PART_TITLES[p], "harness error: %s" % e)
        print("  (%s took %.0f s)" % (p, time.time() - tp), flush=True)
    if env.aggregator:
        env.aggregator.stop()
    shutil.rmtree(os.path.join(env.build, "bench-data"), ignore_errors=True)
    elapsed = time.time() - t0
    print_table(elapsed)
    try:
        with open(os.path.join(env.build, "bench-results.json"), "w") as f:
            json.dump({"quick": QUICK, "parts": parts, "rows": R.rows, "skipped": R.skipped,
                       "details": R.sections, "commands": R.commands}, f, indent=1)
    except OSError as e:
        print("bench: cannot write bench-results.json: %s" % e, file=sys.stderr)
    if not args.no_doc:
        # A partial run never replaces the full report: it goes to the build directory.
        path = os.path.join(REPO, "docs", "performance.md") if parts == PARTS else \
            os.path.join(env.build, "performance.partial.md")
        write_doc(path, parts, elapsed, ["bench/run.sh"] + sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
