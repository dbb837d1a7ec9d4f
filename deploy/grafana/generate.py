#!/usr/bin/env python3
"""Generates vigil's provisioned Grafana dashboards (deploy/grafana/dashboards/*.json).

Edit the panel lists here and re-run: python3 deploy/grafana/generate.py
Every panel queries the Prometheus datasource that scrapes vigil-aggregator's /metrics; the
names are those of docs/metrics.md. tests/integration/dashboards_test.cc runs every expression
against a real Prometheus.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
NODE = 'node=~"$node"'


def templating():
    return {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "node", "type": "query", "datasource": DS, "label": "Node",
         "query": {"query": "label_values(vigil_agent_up, node)", "refId": "node"},
         "definition": "label_values(vigil_agent_up, node)",
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
    ]}


def panel(pid, title, exprs, unit="short", kind="timeseries", legend=None, x=0, y=0, w=12, h=8):
    targets = []
    for i, e in enumerate(exprs):
        t = {"datasource": DS, "expr": e, "refId": chr(ord("A") + i)}
        if legend:
            t["legendFormat"] = legend[i] if isinstance(legend, list) else legend
        if kind == "table":
            t["instant"] = True
            t["format"] = "table"
        targets.append(t)
    return {"id": pid, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {}, "targets": targets}


def dashboard(uid, title, panels):
    laid = []
    for i, p in enumerate(panels):
        p["gridPos"]["x"] = (i % 2) * 12
        p["gridPos"]["y"] = (i // 2) * 8
        laid.append(p)
    return {"uid": uid, "title": title, "tags": ["vigil"], "timezone": "browser",
            "schemaVersion": 38, "version": 1, "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"}, "templating": templating(),
            "panels": laid, "editable": True}


R = "$__rate_interval"

DASHBOARDS = {
    "vigil-host": dashboard("vigil-host", "vigil / Host", [
        panel(1, "CPU busy (cores) by mode",
              [f'sum by (node, mode) (rate(vigil_host_cpu_seconds_total{{{NODE},mode!="idle"}}[{R}]))'],
              legend="{{node}} {{mode}}"),
        panel(2, "CPU used by processes (cores)",
              [f"sum by (node) (rate(vigil_process_cpu_seconds_total{{{NODE}}}[{R}]))"],
              legend="{{node}}"),
        panel(3, "Load average",
              [f"vigil_host_load1{{{NODE}}}", f"vigil_host_load5{{{NODE}}}"],
              legend=["{{node}} 1m", "{{node}} 5m"]),
        panel(4, "Memory available",
              [f"vigil_host_memory_available_bytes{{{NODE}}}",
               f"vigil_host_memory_total_bytes{{{NODE}}}"], unit="bytes",
              legend=["{{node}} available", "{{node}} total"]),
        panel(5, "Filesystem free",
              [f"vigil_host_filesystem_avail_bytes{{{NODE}}}"], unit="bytes",
              legend="{{node}} {{mountpoint}}"),
        panel(6, "Disk throughput",
              [f"sum by (node, device) (rate(vigil_host_disk_read_bytes_total{{{NODE}}}[{R}]))",
               f"sum by (node, device) (rate(vigil_host_disk_written_bytes_total{{{NODE}}}[{R}]))"],
              unit="Bps", legend=["{{device}} read", "{{device}} write"]),
        panel(7, "Pressure stall (CPU waiting)",
              [f"rate(vigil_host_pressure_cpu_waiting_seconds_total{{{NODE}}}[{R}])"],
              unit="percentunit", legend="{{node}}"),
        panel(8, "Context switches by kind",
              [f"sum by (node, kind) (rate(vigil_process_context_switches_total{{{NODE}}}[{R}]))"],
              unit="ops", legend="{{node}} {{kind}}"),
        panel(9, "Agents up", [f"vigil_agent_up{{{NODE}}}"], legend="{{node}}"),
        panel(10, "Agent CPU and memory",
              [f"rate(vigil_agent_cpu_seconds_total{{{NODE}}}[{R}])",
               f"vigil_agent_resident_memory_bytes{{{NODE}}}"],
              legend=["{{node}} cpu", "{{node}} rss"]),
        panel(11, "BPF program run time (share of a CPU)",
              [f"sum by (node, program) (rate(vigil_bpf_program_run_seconds_total{{{NODE}}}[{R}]))"],
              unit="percentunit", legend="{{program}}"),
        panel(12, "Collectors up", [f"vigil_collector_up{{{NODE}}}"],
              legend="{{node}} {{collector}}"),
    ]),
    "vigil-processes": dashboard("vigil-processes", "vigil / Processes", [
        panel(1, "Top 10 processes by CPU",
              [f"topk(10, rate(vigil_process_cpu_seconds_total{{{NODE}}}[{R}]))"],
              unit="percentunit", legend="{{comm}} ({{pid}})"),
        panel(2, "Involuntary context switches (top 10)",
              [f'topk(10, rate(vigil_process_context_switches_total{{{NODE},kind="involuntary"}}[{R}]))'],
              unit="ops", legend="{{comm}} ({{pid}})"),
        panel(3, "Syscalls (top 10)",
              [f"topk(10, rate(vigil_process_syscalls_total{{{NODE}}}[{R}]))"],
              unit="ops", legend="{{comm}} ({{pid}})"),
        panel(4, "Syscall errors by errno",
              [f"topk(10, sum by (comm, errno) (rate(vigil_process_syscall_errno_total{{{NODE}}}[{R}])))"],
              unit="ops", legend="{{comm}} errno {{errno}}"),
        panel(5, "Block I/O bytes (top 10)",
              [f"topk(10, sum by (comm, pid, op) (rate(vigil_process_block_bytes_total{{{NODE}}}[{R}])))"],
              unit="Bps", legend="{{comm}} {{op}}"),
        panel(6, "Processes by CPU now", [f"topk(20, rate(vigil_process_cpu_seconds_total{{{NODE}}}[{R}]))"],
              unit="percentunit", kind="table"),
    ]),
    "vigil-containers": dashboard("vigil-containers", "vigil / Containers", [
        panel(1, "Container CPU (cores)",
              [f"rate(vigil_container_cpu_seconds_total{{{NODE}}}[{R}])"],
              legend="{{cgroup}}"),
        panel(2, "Container processes", [f"vigil_container_processes{{{NODE}}}"],
              legend="{{cgroup}}"),
        panel(3, "Container syscalls", [f"rate(vigil_container_syscalls_total{{{NODE}}}[{R}])"],
              unit="ops", legend="{{cgroup}}"),
        panel(4, "Container network bytes",
              [f"rate(vigil_container_tcp_sent_bytes_total{{{NODE}}}[{R}])",
               f"rate(vigil_container_tcp_received_bytes_total{{{NODE}}}[{R}])"],
              unit="Bps", legend=["{{cgroup}} tx", "{{cgroup}} rx"]),
        panel(5, "Container block I/O",
              [f"sum by (cgroup, op) (rate(vigil_container_block_bytes_total{{{NODE}}}[{R}]))"],
              unit="Bps", legend="{{cgroup}} {{op}}"),
    ]),
    "vigil-network": dashboard("vigil-network", "vigil / Network", [
        panel(1, "Interface throughput",
              [f"rate(vigil_host_network_receive_bytes_total{{{NODE}}}[{R}])",
               f"rate(vigil_host_network_transmit_bytes_total{{{NODE}}}[{R}])"],
              unit="Bps", legend=["{{device}} rx", "{{device}} tx"]),
        panel(2, "TCP bytes by process (top 10)",
              [f"topk(10, rate(vigil_process_tcp_sent_bytes_total{{{NODE}}}[{R}]))",
               f"topk(10, rate(vigil_process_tcp_received_bytes_total{{{NODE}}}[{R}]))"],
              unit="Bps", legend=["{{comm}} tx", "{{comm}} rx"]),
        panel(3, "TCP retransmits", [f"sum by (node, comm) (rate(vigil_process_tcp_retransmits_total{{{NODE}}}[{R}]))"],
              unit="ops", legend="{{comm}}"),
        panel(4, "TCP connects and accepts",
              [f"sum by (node) (rate(vigil_process_tcp_active_opens_total{{{NODE}}}[{R}]))",
               f"sum by (node) (rate(vigil_process_tcp_passive_opens_total{{{NODE}}}[{R}]))"],
              unit="ops", legend=["{{node}} connect", "{{node}} accept"]),
        panel(5, "TCP connect failures and resets",
              [f"sum by (node) (rate(vigil_process_tcp_connect_failures_total{{{NODE}}}[{R}]))",
               f"sum by (node, direction) (rate(vigil_process_tcp_resets_total{{{NODE}}}[{R}]))"],
              unit="ops", legend=["{{node}} connect failures", "{{node}} resets {{direction}}"]),
        panel(6, "Interface errors and drops",
              [f"rate(vigil_host_network_receive_errs_total{{{NODE}}}[{R}])",
               f"rate(vigil_host_network_receive_drop_total{{{NODE}}}[{R}])"],
              unit="ops", legend=["{{device}} rx errs", "{{device}} rx drop"]),
    ]),
    "vigil-alerts": dashboard("vigil-alerts", "vigil / Alerts", [
        panel(1, "Firing alerts", ['sum by (alertname, severity) (ALERTS{alertstate="firing"})'],
              legend="{{alertname}} ({{severity}})"),
        panel(2, "Active alerts", ["ALERTS"], kind="table"),
        panel(3, "Agents offline", ["count(vigil_agent_up == 0) or vector(0)"], kind="stat"),
        panel(4, "Notifications sent and failed",
              ["sum by (kind) (rate(vigil_notifier_alerts_sent_total[$__rate_interval]))",
               "sum by (kind) (rate(vigil_notifier_failures_total[$__rate_interval]))"],
              unit="ops", legend=["{{kind}} sent", "{{kind}} failed"]),
        panel(5, "Alert rules loaded and last reload", ["vigil_alert_rules",
                                                         "vigil_alert_rules_last_reload_ok"],
              legend=["rules", "last reload ok"]),
        panel(6, "Alert state changes", ["rate(vigil_alert_state_changes_total[$__rate_interval])"],
              unit="ops", legend="changes"),
    ]),
}

here = os.path.dirname(os.path.abspath(__file__))
for name, d in DASHBOARDS.items():
    with open(os.path.join(here, "dashboards", name + ".json"), "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")
