#include "aggregator/ingest.h"

#include <time.h>

#include "absl/strings/str_cat.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "userspace/common/log.h"

namespace vigil::aggregator {

int64_t unixNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

class Ingest::ErrorHandler final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    VIGIL_LOG_WARN("agent connection ended: %s", e.getDescription().cStr());
  }
};

// One registered agent connection.
class SessionImpl final : public wire::IngestSession::Server {
 public:
  SessionImpl(Ingest& ingest, AgentInfo info, uint64_t boot_epoch, std::string peer)
      : ingest_(ingest), info_(std::move(info)), boot_epoch_(boot_epoch), peer_(std::move(peer)) {}

  ~SessionImpl() { ingest_.store_.agentDisconnected(info_.agent_id, unixNanos()); }

 protected:
  kj::Promise<void> push(PushContext context) override {
    auto params = context.getParams();
    uint64_t seq = params.getSeq();
    auto ack = context.getResults().initAck();
    ack.setSeq(seq);
    auto payload = params.getPayload();
    ingest_.stats_.payload_bytes += payload.size();
    auto decoded = decodeFrame(payload, params.getEncoding());
    if (!decoded.ok()) {
      return refuse("malformed_frame", std::string(decoded.status().message()));
    }
    Snapshot snap;
    fromWire((*decoded)->frame(), snap);
    if (snap.agent.agent_id != info_.agent_id) {
      return refuse("agent_id_mismatch",
                    absl::StrCat("frame claims agent '", snap.agent.agent_id,
                                 "' on a session registered as '", info_.agent_id, "'"));
    }
    if (snap.boot_epoch != boot_epoch_ || snap.seq != seq) {
      return refuse(
          "frame_header_mismatch",
          absl::StrCat("frame (epoch ", snap.boot_epoch, ", seq ", snap.seq,
                       ") does not match the push (epoch ", boot_epoch_, ", seq ", seq, ")"));
    }
    // Durable first: the ack below promises the frame survives a crash from here on.
    int64_t now = unixNanos();
    auto appended = ingest_.log_.append(info_.agent_id, boot_epoch_, seq, params.getEncoding(),
                                        payload.begin(), payload.size(), now);
    if (!appended.ok()) {
      ingest_.reject("log_write_failed");
      VIGIL_LOG_ERROR("cannot store frame %d of %s: %s", seq, info_.agent_id,
                      appended.status().message());
      // Not acknowledged: the agent keeps the frame and retries.
      return KJ_EXCEPTION(OVERLOADED, "aggregator cannot store frames right now",
                          std::string(appended.status().message()));
    }
    if (!*appended) {
      ingest_.stats_.frames_duplicate++;
      ack.setDuplicate(true);
      return kj::READY_NOW;
    }
    ingest_.store_.apply(snap, now);
    ingest_.stats_.frames_accepted++;
    return kj::READY_NOW;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    ingest_.store_.heartbeat(info_.agent_id, unixNanos());
    context.getResults().setHeartbeatIntervalMs(ingest_.options_.heartbeat_interval_ms);
    return kj::READY_NOW;
  }

 private:
  kj::Promise<void> refuse(const std::string& reason, const std::string& detail) {
    ingest_.reject(reason);
    VIGIL_LOG_WARN("refused frame from %s (%s): %s", info_.agent_id, peer_, detail);
    return KJ_EXCEPTION(FAILED, "frame refused", reason, detail);
  }

  Ingest& ingest_;
  AgentInfo info_;
  uint64_t boot_epoch_;
  std::string peer_;
};

// The bootstrap capability of one connection.
class AggregatorImpl final : public wire::Aggregator::Server {
 public:
  AggregatorImpl(Ingest& ingest, std::string peer) : ingest_(ingest), peer_(std::move(peer)) {}

 protected:
  kj::Promise<void> register_(RegisterContext context) override {
    auto hello = context.getParams().getHello();
    if (hello.getProtocolVersion() != 0) {
      return refuse("bad_protocol_version",
                    absl::StrCat("unsupported protocol version ", hello.getProtocolVersion()));
    }
    AgentInfo info;
    auto a = hello.getAgent();
    info.agent_id = a.getAgentId().cStr();
    info.node_name = a.getNodeName().cStr();
    info.version = a.getVersion().cStr();
    info.kernel = a.getKernel().cStr();
    for (auto l : a.getLabels()) {
      info.labels.emplace_back(l.getKey().cStr(), l.getValue().cStr());
    }
    if (info.agent_id.empty() || info.agent_id.size() > 253) {
      return refuse("bad_agent_id", "agent id must be 1..253 bytes");
    }
    if (!ingest_.options_.agent_tokens.empty()) {
      auto it = ingest_.options_.agent_tokens.find(info.agent_id);
      if (it == ingest_.options_.agent_tokens.end() || it->second != hello.getToken().cStr()) {
        return refuse("bad_token", absl::StrCat("agent '", info.agent_id,
                                                "' presented a wrong or missing token"));
      }
    }
    uint64_t epoch = hello.getBootEpoch();
    auto logged = ingest_.log_.lastSeq(info.agent_id, epoch);
    if (!logged.ok()) {
      ingest_.reject("log_read_failed");
      return KJ_EXCEPTION(OVERLOADED, "aggregator cannot read its log right now",
                          std::string(logged.status().message()));
    }
    ingest_.store_.agentConnected(info, epoch, unixNanos());
    uint64_t last = *logged;
    VIGIL_LOG_INFO("agent %s (%s, kernel %s) registered from %s, epoch %d, resuming after seq %d",
                   info.agent_id, info.version, info.kernel, peer_, epoch, last);
    auto results = context.getResults();
    results.setLastSeq(last);
    results.setHeartbeatIntervalMs(ingest_.options_.heartbeat_interval_ms);
    results.setSession(kj::heap<SessionImpl>(ingest_, std::move(info), epoch, peer_));
    return kj::READY_NOW;
  }

 private:
  kj::Promise<void> refuse(const std::string& reason, const std::string& detail) {
    ingest_.reject(reason);
    VIGIL_LOG_WARN("refused registration from %s: %s", peer_, detail);
    return KJ_EXCEPTION(FAILED, "registration refused", reason, detail);
  }

  Ingest& ingest_;
  std::string peer_;
};

Ingest::Ingest(kj::Timer& timer, IngestLog& log, Store& store, IngestOptions options)
    : timer_(timer),
      log_(log),
      store_(store),
      options_(std::move(options)),
      error_handler_(kj::heap<ErrorHandler>()),
      tasks_(*error_handler_) {}

Ingest::~Ingest() = default;

kj::Promise<void> Ingest::listen(kj::ConnectionReceiver& listener) { return acceptLoop(listener); }

kj::Promise<void> Ingest::acceptLoop(kj::ConnectionReceiver& listener) {
  return listener.accept().then([this, &listener](kj::Own<kj::AsyncIoStream> stream) {
    stats_.connections++;
    stats_.connections_open++;
    std::string peer = "agent";
    struct Conn {
      kj::Own<kj::AsyncIoStream> stream;
      capnp::TwoPartyVatNetwork network;
      capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
      Conn(kj::Own<kj::AsyncIoStream> s, capnp::Capability::Client bootstrap,
           capnp::ReaderOptions opts)
          : stream(kj::mv(s)),
            network(*stream, capnp::rpc::twoparty::Side::SERVER, opts),
            rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
    };
    capnp::ReaderOptions opts;
    // A push carries at most one payload of kMaxPayloadBytes; anything larger is refused by the
    // RPC layer before we allocate for it.
    opts.traversalLimitInWords = (kMaxPayloadBytes + (1 << 20)) / 8;
    auto conn = kj::heap<Conn>(kj::mv(stream), kj::heap<AggregatorImpl>(*this, peer), opts);
    auto done = conn->network.onDisconnect().attach(kj::mv(conn)).then([this]() {
      stats_.connections_open--;
    });
    tasks_.add(kj::mv(done));
    return acceptLoop(listener);
  });
}

void Ingest::writeMetrics(PromWriter& out) const {
  out.family("vigil_aggregator_connections_total", MetricType::kCounter,
             "Agent RPC connections accepted.");
  out.sample("vigil_aggregator_connections_total", {}, stats_.connections);
  out.family("vigil_aggregator_connections_open", MetricType::kGauge, "Open agent connections.");
  out.sample("vigil_aggregator_connections_open", {}, stats_.connections_open);
  out.family("vigil_aggregator_frames_accepted_total", MetricType::kCounter,
             "Frames applied and acknowledged.");
  out.sample("vigil_aggregator_frames_accepted_total", {}, stats_.frames_accepted);
  out.family("vigil_aggregator_frames_duplicate_total", MetricType::kCounter,
             "Frames acknowledged again without re-applying (redelivery).");
  out.sample("vigil_aggregator_frames_duplicate_total", {}, stats_.frames_duplicate);
  out.family("vigil_aggregator_payload_bytes_total", MetricType::kCounter,
             "Compressed frame payload bytes received.");
  out.sample("vigil_aggregator_payload_bytes_total", {}, stats_.payload_bytes);
  out.family("vigil_aggregator_rejected_total", MetricType::kCounter,
             "Registrations and frames refused, by reason.");
  for (const auto& [reason, n] : stats_.rejected) {
    out.sample("vigil_aggregator_rejected_total", {{"reason", reason}}, n);
  }
}

}  // namespace vigil::aggregator
