# vigil wire schema, version 0.
#
# One Frame is what an agent collected over one interval. Frames travel from vigil-agent to
# vigil-aggregator over Cap'n Proto RPC (interface Aggregator below), are stored in the agent's
# spool and the aggregator's ingest log as the bytes of IngestSession.push's payload, and are
# printed by `vigil snapshot --json` through capnp-json.
#
# Evolution rules: fields are only ever added with the next free ordinal; nothing is renumbered
# or removed. A field that becomes meaningless is left in place and documented as unused.
# Counters are cumulative since the agent's boot epoch (Prometheus counter semantics), so a lost
# frame loses resolution, never totals.

@0xba127ab3acc49931;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vigil::wire");

struct Label {
  key @0 :Text;
  value @1 :Text;
}

struct AgentIdentity {
  agentId @0 :Text;
  # Stable identity of the agent; defaults to the node name. The aggregator checks it against
  # the credentials of the connection (token or client certificate).

  nodeName @1 :Text;
  # Host name of the node, used as the `node` label of every series.

  version @2 :Text;
  # vigil-agent version string.

  kernel @3 :Text;
  # `uname -r` of the node.

  labels @4 :List(Label);
  # Operator-assigned labels (e.g. zone, cluster), from the agent's config.
}

struct Metric {
  # A generic sample, used for host metrics and self-telemetry whose label sets vary.
  name @0 :Text;
  # Prometheus metric name, base units, `_total` suffix for counters.

  labels @1 :List(Label);
  value @2 :Float64;
  kind @3 :Kind;
  enum Kind {
    gauge @0;
    counter @1;
  }

  scaled @4 :Int64;
  scaleDigits @5 :UInt8;
  # Compact exact form of `value`: when `value` is unset (all bits zero), the value is
  # scaled / 10^scaleDigits, computed as a float64 division (scaleDigits <= 9). The agent uses it
  # only when that division gives back exactly the float64 it measured (e.g. /proc/stat ticks /
  # USER_HZ, PSI microseconds / 1e6, BPF run ns / 1e9): a counter kept as a scaled integer
  # changes only in its low bytes between frames, where a float64 fraction changes in all of its
  # mantissa bits. Not a precision change: the float64 is the same bit for bit.
}

struct ErrnoCount {
  errno @0 :UInt32;
  # Positive errno value (e.g. 2 for ENOENT).
  count @1 :UInt64;
}

struct ProcessSample {
  # Per-process (thread group) counters. All counters are cumulative since the agent first saw
  # the process in this boot epoch.

  pid @0 :UInt32;
  # Thread-group id (what userspace calls the pid).

  comm @1 :Text;
  # Task command name of the thread-group leader (at most 15 bytes).

  cgroupId @2 :UInt64;
  # cgroup v2 id (inode of the cgroup directory); 0 when unknown.

  cmdline @3 :Text;
  # /proc/<pid>/cmdline with NULs as spaces, secrets masked; may be empty.

  cpuNs @4 :UInt64;
  # On-CPU time in nanoseconds, from sched_switch.

  voluntarySwitches @5 :UInt64;
  # Context switches where the task blocked (left the CPU not runnable).

  involuntarySwitches @6 :UInt64;
  # Context switches where the task was preempted while runnable.

  syscalls @7 :UInt64;
  # Syscalls entered. Scaled by 1/dutyCycle when Frame.syscallDutyCycle < 1 (an estimate).

  syscallErrors @8 :UInt64;
  # Syscalls that returned a negative value. Scaled like `syscalls`.

  topErrnos @9 :List(ErrnoCount);
  # The most frequent errnos of failed syscalls, most frequent first.

  tcpTxBytes @10 :UInt64;
  tcpRxBytes @11 :UInt64;
  udpTxBytes @12 :UInt64;
  udpRxBytes @13 :UInt64;
  tcpRetransmits @14 :UInt64;
  tcpActiveOpens @15 :UInt64;
  # connect() attempts that reached SYN_SENT.
  tcpPassiveOpens @16 :UInt64;
  # Connections accepted (SYN_RECV -> ESTABLISHED).
  tcpConnectFailures @17 :UInt64;
  # Active opens that never reached ESTABLISHED (refused, timed out, reset).
  tcpResetsSent @18 :UInt64;
  tcpResetsReceived @19 :UInt64;

  blockReadBytes @20 :UInt64;
  blockWriteBytes @21 :UInt64;
  blockReadOps @22 :UInt64;
  blockWriteOps @23 :UInt64;

  exited @24 :Bool;
  # True in the last frame that carries this process.

  containerId @25 :Text;
  # Container id resolved from cgroupId, empty for host processes.

  tcpCloses @26 :UInt64;
  # Established connections of the process that reached CLOSE.
  tcpConnectRefused @27 :UInt64;
  # Failed connects (tcpConnectFailures) whose socket error was ECONNREFUSED.
  tcpConnectTimeouts @28 :UInt64;
  # Failed connects whose socket error was ETIMEDOUT.
  tcpConnects @29 :UInt64;
  # Connects that reached ESTABLISHED (the connect-latency samples of this process).
  tcpConnectLatencySumNs @30 :UInt64;
  # Sum of their SYN_SENT -> ESTABLISHED times (microsecond resolution).

  cpuUs @31 :UInt64;
  # On-CPU time in microseconds: floor(exact cumulative ns / 1000), so the cumulative counter is
  # exact to 1 us (10,000x finer than /proc's 10 ms ticks). Agents since the wire-size work send
  # cpuUs and leave cpuNs unset (0): the ns digits below 1 us are random from interval to interval
  # and were most of a delta frame's bytes. A reader uses cpuNs when it is non-zero (older
  # agents), else cpuUs x 1000.

  tcpConnectLatencySumUs @32 :UInt64;
  # tcpConnectLatencySumNs / 1000, sent instead of it (left 0) when that is exact, which it always
  # is for this agent (the kernel side sums microseconds). A reader uses tcpConnectLatencySumNs
  # when it is non-zero, else this x 1000.
}

struct ContainerSample {
  # A cgroup with its resolved identity and the sum of its processes' counters.
  cgroupId @0 :UInt64;
  cgroupPath @1 :Text;
  # Path relative to the cgroup v2 mount, e.g. /kubepods.slice/.../cri-containerd-<id>.scope.

  containerId @2 :Text;
  # Full container id (64 hex for docker/containerd/cri-o/podman); empty if not a container.

  runtime @3 :Text;
  # docker, containerd, cri-o, podman; empty if not a container.

  podUid @4 :Text;
  qosClass @5 :Text;
  # guaranteed, burstable, besteffort; empty outside Kubernetes.

  systemdUnit @6 :Text;
  # e.g. foo.service, when the cgroup belongs to a systemd unit.

  cpuNs @7 :UInt64;
  syscalls @8 :UInt64;
  syscallErrors @9 :UInt64;
  tcpTxBytes @10 :UInt64;
  tcpRxBytes @11 :UInt64;
  blockReadBytes @12 :UInt64;
  blockWriteBytes @13 :UInt64;
  processes @14 :UInt32;
  # Live processes seen in this cgroup during the interval.

  cpuUs @15 :UInt64;
  # On-CPU time in microseconds, as ProcessSample.cpuUs (cpuNs left unset by current agents).
}

struct Histogram {
  # A log2 histogram: bucket i counts values v with 2^i <= v < 2^(i+1) in `unit`, bucket 0 also
  # holds v < 1. Buckets are cumulative since the boot epoch, not per interval.
  name @0 :Text;
  # Prometheus base name, e.g. vigil_runqueue_latency_seconds.

  labels @1 :List(Label);
  unitNs @2 :UInt64;
  # Size of one unit in nanoseconds (1 for ns, 1000 for us); exposition converts to seconds.

  buckets @3 :List(UInt64);
  count @4 :UInt64;
  sumUnits @5 :UInt64;
  # Sum of observed values in `unit`; may be approximate (bucket midpoints) if the kernel side
  # does not keep an exact sum.
}

struct Event {
  # A discrete kernel event, delivered through the ring buffer.
  timestampNs @0 :Int64;
  # Wall-clock unix time in nanoseconds.
  pid @1 :UInt32;
  tid @2 :UInt32;
  ppid @3 :UInt32;
  comm @4 :Text;
  cgroupId @5 :UInt64;
  containerId @6 :Text;
  podUid @7 :Text;

  union {
    exec @8 :ExecEvent;
    exit @9 :ExitEvent;
    fork @10 :ForkEvent;
    oomKill @11 :OomKillEvent;
    signal @12 :SignalEvent;
    tcpState @13 :TcpStateEvent;
  }
}

struct ExecEvent {
  filename @0 :Text;
  argv @1 :Text;
  # Space-joined, bounded, secrets masked.
  argvTruncated @2 :Bool;
}

struct ExitEvent {
  exitCode @0 :Int32;
  signal @1 :Int32;
  # Terminating signal, 0 when the process exited normally.
  lifetimeNs @2 :UInt64;
  coreDumped @3 :Bool;
}

struct ForkEvent {
  childPid @0 :UInt32;
}

struct OomKillEvent {
  victimPid @0 :UInt32;
  victimComm @1 :Text;
  victimCgroupId @2 :UInt64;
  totalVmKb @3 :UInt64;
  anonRssKb @4 :UInt64;
}

struct SignalEvent {
  signal @0 :Int32;
  targetPid @1 :UInt32;
  senderPid @2 :UInt32;
  result @3 :Int32;
}

struct TcpStateEvent {
  family @0 :UInt16;
  saddr @1 :Data;
  daddr @2 :Data;
  sport @3 :UInt16;
  dport @4 :UInt16;
  oldState @5 :UInt8;
  newState @6 :UInt8;
  # TCP states as in include/net/tcp_states.h (1 = ESTABLISHED ... 12 = NEW_SYN_RECV).
  durationNs @7 :UInt64;
  # Time spent in oldState.
  txBytes @8 :UInt64;
  rxBytes @9 :UInt64;
  lifetimeNs @10 :UInt64;
  # Time since the connection was opened (connect() or accept side SYN_RECV -> ESTABLISHED).
  socketError @11 :Int32;
  # sk_err at the transition: 111 ECONNREFUSED, 110 ETIMEDOUT, 0 none.
  srttUs @12 :UInt32;
  # Smoothed RTT in microseconds at the transition.
}

struct CollectorStatus {
  name @0 :Text;
  # sched, syscalls, net, block, process, host, ...
  up @1 :Bool;
  reason @2 :Text;
  # Why the collector is down (missing tracepoint, disabled by config), empty when up.
}

struct Frame {
  agent @0 :AgentIdentity;

  bootEpoch @1 :UInt64;
  # Unix time in nanoseconds when this agent process started. (agentId, bootEpoch, seq) names a
  # frame uniquely; the aggregator deduplicates on it.

  seq @2 :UInt64;
  # 1 for the first frame of a boot epoch, then +1 per frame, never reused.

  intervalStartNs @3 :Int64;
  intervalEndNs @4 :Int64;
  # Wall-clock unix nanoseconds bounding the collection interval.

  host @5 :List(Metric);
  # Host resource metrics from /proc, sysfs and statfs.

  processes @6 :List(ProcessSample);
  containers @7 :List(ContainerSample);
  histograms @8 :List(Histogram);
  events @9 :List(Event);
  # The frame's events as structs: how agents before eventColumns (@15) sent them. Current agents
  # leave it empty and write eventColumns.

  self @10 :List(Metric);
  # The agent's own counters: ring buffer drops, map-full counts, spool drops, BPF run time.

  configVersion @11 :UInt64;
  # Version of the config the agent applied; 0 for its built-in defaults.

  intervalMs @12 :UInt32;
  # Collection interval in use (it may change with dynamic sampling).

  syscallDutyCycle @13 :Float64;
  # Fraction of the interval the syscall programs were attached: 1.0 continuous, 0 disabled.
  # Syscall counters are scaled by its inverse and are estimates when it is below 1.

  collectors @14 :List(CollectorStatus);

  eventColumns @15 :EventColumns;
  # The frame's events column by column (see EventColumns), what current agents write instead of
  # `events`. A frame sets at most one of the two forms: a reader refuses a frame with a
  # non-empty `events` list and eventColumns set. Agents before eventColumns write only `events`.
}

struct EventColumns {
  # The events of one frame, column by column: every field of every event, losslessly, in a
  # third of the bytes of the Event structs once compressed, because each column holds one kind
  # of value and is coded against what precedes it. The coding needs nothing outside the frame
  # (frames stay self-contained in the spool and the ingest log); capnp/event_columns.h is the
  # reference codec and docs/transport.md ("Event columns") describes it.
  #
  # Each Data field is a sequence of LEB128 varints (zigzag for signed differences). Every column
  # is consumed exactly: a column that ends early or has bytes left after `count` events makes
  # the frame malformed. A field added to Event later needs a column added here.

  count @0 :UInt32;
  # Number of events.

  kind @1 :Data;
  # One byte per event: (Event union member << 2) | (payload struct set << 1) | flag, the flag
  # being ExecEvent.argvTruncated or ExitEvent.coreDumped.

  time @2 :Data;
  # timestampNs minus the previous event's (the first event's minus 0).

  pid @3 :Data;
  # The pid's position in a move-to-front list of the 16 most recent pids (each fork's child
  # enters it first), or 16 + zigzag(pid - the list's front) when it is not in the list.

  tid @4 :Data;
  # tid - pid.
  ppid @5 :Data;
  # ppid - the previous event's ppid.
  cgroup @6 :Data;
  # cgroupId - the previous event's cgroupId (modulo 2^64).

  comm @7 :Data;
  containerId @8 :Data;
  podUid @9 :Data;
  filename @10 :Data;
  argv @11 :Data;
  # String references: 0 for an unset field (set-but-empty stays distinct), i + 1 for string i of
  # the frame's string table, table size + 1 for a new string, whose bytes come next in
  # `literals` and which joins the table. Filename and argv are the exec payload's.

  exit @12 :Data;
  # Per exit with a payload: zigzag exitCode, zigzag signal, zigzag(lifetimeNs - the time since
  # the exiting pid's fork event in this frame, or - 0 when there is none).
  fork @13 :Data;
  # Per fork with a payload: zigzag(childPid - (the previous fork's child + 1)).
  oomKill @14 :Data;
  # Per OOM kill with a payload: victimPid - pid, victimComm (string reference), victimCgroupId,
  # totalVmKb, anonRssKb.
  signal @15 :Data;
  # Per signal with a payload: signal, targetPid - pid, senderPid - pid, result (all zigzag).
  tcpState @16 :Data;
  # Per TCP state change with a payload: family, saddr and daddr (string references), sport,
  # dport, oldState, newState, durationNs, txBytes, rxBytes, lifetimeNs, zigzag socketError,
  # srttUs.

  literals @17 :Data;
  # The bytes of each new string, in order of first use: varint length, then the bytes.
}

enum Encoding {
  packed @0;
  # Cap'n Proto packed encoding of a Frame message.
  packedZstd @1;
  # zstd-compressed packed encoding.
  packedZstdDelta @2;
  # zstd-compressed packed encoding with the packed encoding of an earlier frame of the same
  # session (IngestSession.push's baseSeq) as the zstd prefix: only what changed since that frame
  # costs bytes. Decodable only with that base, so it is a wire-only form: the agent spools and
  # the aggregator logs the self-contained frame (see docs/transport.md, "Delta frames").
  pointerZstdDelta @3;
  # Like packedZstdDelta, but over the unpacked words of both frames with every pointer's offset
  # replaced by its distance from where a depth-first walk of the message expects its object
  # (frame_codec.h: encodePointerDelta). Pointers then keep their value when processes, strings
  # and histograms come and go, so only changed data costs bytes. Expands to exactly the packed
  # bytes of the frame. Sent only to sessions whose register reply set acceptsPointerDelta.
}

struct Hello {
  agent @0 :AgentIdentity;
  bootEpoch @1 :UInt64;
  token @2 :Text;
  # Bearer token; empty when the connection authenticates by client certificate or the
  # aggregator runs without authentication.
  protocolVersion @3 :UInt32;
  # 0 for this schema.
  configVersion @4 :UInt64;
}

struct Ack {
  seq @0 :UInt64;
  duplicate @1 :Bool;
  # True when the aggregator had already accepted this (agentId, bootEpoch, seq).
}

struct AgentConfig {
  # Configuration the aggregator pushes to an agent. Zero/empty fields keep the agent's value.
  version @0 :UInt64;
  intervalMs @1 :UInt32;
  disabledCollectors @2 :List(Text);
  enabledCollectors @3 :List(Text);
  syscallMode @4 :Text;
  # "sampled", "continuous" or "off".
  syscallDutyCycle @5 :Float64;
  maskPatterns @6 :List(Text);
  # Extra regular expressions whose matches are masked in argv and cmdline.
  commFilter @7 :List(Text);
  # When non-empty, only processes whose comm is listed are reported.
  dynamicSampling @8 :DynamicSampling;
  maxProcesses @9 :UInt32;
  # Capacity of the per-process BPF maps that honour it; changing it reloads those collectors.
  netMessageMode @10 :Text;
  # "off", "sampled" or "continuous": when the net collector's per-message hooks are attached.
  # Empty keeps the agent's value; a change reloads the net collector.
}

struct DynamicSampling {
  enabled @0 :Bool;
  cpuThresholdPercent @1 :Float64;
  lowIntervalMs @2 :UInt32;
  # Interval while host CPU is below the threshold.
  highIntervalMs @3 :UInt32;
  # Interval while host CPU is at or above it.
}

struct ConfigResult {
  version @0 :UInt64;
  applied @1 :Bool;
  error @2 :Text;
  # Why the config was refused; the previous config stays in force.
}

interface AgentControl {
  # Held by the aggregator for each registered agent.
  applyConfig @0 (config :AgentConfig) -> (result :ConfigResult);
}

interface IngestSession {
  # Returned by Aggregator.register for one authenticated agent connection.

  push @0 (seq :UInt64, encoding :Encoding, payload :Data, baseSeq :UInt64) -> (ack :Ack);
  # Delivers one frame. The ack is returned only after the frame is durably accepted; a frame
  # whose agentId or bootEpoch differ from the session's is refused.
  # baseSeq: for encoding packedZstdDelta, the seq of the frame (same session, same epoch) the
  # delta is based on; it must be the last frame this session accepted, else the push is refused
  # with reason delta_unknown_base and the session refuses everything after it
  # (delta_session_broken) until the agent registers again and starts with a keyframe. 0 for a
  # keyframe (packed, packedZstd).

  heartbeat @1 () -> (heartbeatIntervalMs :UInt32);
  # Liveness; the reply carries the interval the aggregator wants.
}

interface Aggregator {
  # The bootstrap capability of vigil-aggregator's RPC port.
  register @0 (hello :Hello, control :AgentControl)
      -> (session :IngestSession, heartbeatIntervalMs :UInt32, lastSeq :UInt64,
          acceptsDelta :Bool, acceptsPointerDelta :Bool, acceptsEventColumns :Bool);
  # lastSeq is the highest seq already accepted for (agentId, bootEpoch), so a reconnecting agent
  # can skip what was delivered.
  # acceptsDelta: the session accepts packedZstdDelta pushes. Aggregators older than that field
  # leave it false, so an agent never sends them a delta they would refuse.
  # acceptsPointerDelta: the session also accepts pointerZstdDelta pushes (same rules).
  # acceptsEventColumns: the aggregator reads Frame.eventColumns. An older one would drop those
  # events without noticing, so the agent sends it its frames with the events as the Frame.events
  # list instead.
}
