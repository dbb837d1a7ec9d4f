#include "aggregator/ingest.h"

#include <time.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "aggregator/delta_base.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "userspace/common/log.h"
#include "userspace/common/clock.h"

namespace vigil::aggregator {

class Ingest::ErrorHandler final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    VIGIL_LOG_WARN("agent connection ended: %s", e.getDescription().cStr());
  }
};

// What the aggregator knows about one RPC connection: its peer, its authenticated identity, the
// agent it registered as, and (once it breaks) why it was closed.
struct Ingest::ConnState {
  uint64_t id = 0;
  std::string peer;
  bool has_cert = false;
  std::string cert_cn;
  std::string agent_id;  // set by the first successful register
  std::string close_reason;
  std::string close_detail;
};

namespace {

// Watches the Cap'n Proto stream framing of an agent connection as the RPC layer reads it, so a
// connection broken by garbage, an oversized message or a truncated one is closed with a named
// reason (the RPC layer itself only reports "disconnected"). Limits match the ReaderOptions the
// RPC layer uses: at most 512 segments and `max_words` words per message.
class FramingMonitor final : public kj::AsyncIoStream {
 public:
  FramingMonitor(kj::Own<kj::AsyncIoStream> inner, std::shared_ptr<Ingest::ConnState> state,
                 uint64_t max_words)
      : inner_(kj::mv(inner)), state_(std::move(state)), max_words_(max_words) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_->tryRead(buffer, min_bytes, max_bytes)
        .then([this, buffer, min_bytes](size_t n) -> size_t {
          feed(static_cast<const kj::byte*>(buffer), n);
          if (n < min_bytes && (phase_ != Phase::kCount || !header_.empty())) {
            fail("truncated_message",
                 absl::StrCat("connection ended inside a message (", body_left_,
                              " body bytes or part of the header missing)"));
          }
          return n;
        });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }

 private:
  enum class Phase { kCount, kSizes, kBody };

  [[noreturn]] void fail(const char* reason, std::string detail) {
    if (state_->close_reason.empty()) {
      state_->close_reason = reason;
      state_->close_detail = detail;
    }
    kj::throwFatalException(KJ_EXCEPTION(FAILED, "invalid RPC stream", reason, detail));
  }

  void feed(const kj::byte* p, size_t n) {
    while (n > 0) {
      if (phase_ == Phase::kBody) {
        size_t take = std::min<uint64_t>(n, body_left_);
        body_left_ -= take;
        p += take;
        n -= take;
        if (body_left_ == 0) {
          phase_ = Phase::kCount;
          header_.clear();
        }
        continue;
      }
      header_.push_back(*p++);
      n--;
      if (phase_ == Phase::kCount && header_.size() == 4) {
        uint64_t count = static_cast<uint64_t>(readU32(0)) + 1;
        if (count > 512) {
          fail("bad_framing", absl::StrCat("message claims ", count,
                                           " segments (at most 512); not a Cap'n Proto stream"));
        }
        segments_ = static_cast<uint32_t>(count);
        header_bytes_ = (4 + 4 * segments_ + 7) / 8 * 8;
        phase_ = Phase::kSizes;
      } else if (phase_ == Phase::kSizes && header_.size() == header_bytes_) {
        uint64_t words = 0;
        for (uint32_t i = 0; i < segments_; ++i) {
          words += readU32(4 + 4 * i);
        }
        if (words > max_words_) {
          fail("oversized_message", absl::StrCat("message of ", words * 8, " bytes exceeds the ",
                                                 max_words_ * 8, "-byte limit"));
        }
        body_left_ = words * 8;
        phase_ = body_left_ > 0 ? Phase::kBody : Phase::kCount;
        if (body_left_ == 0) {
          header_.clear();
        }
      }
    }
  }

  uint32_t readU32(size_t at) const {
    return static_cast<uint32_t>(header_[at]) | static_cast<uint32_t>(header_[at + 1]) << 8 |
           static_cast<uint32_t>(header_[at + 2]) << 16 |
           static_cast<uint32_t>(header_[at + 3]) << 24;
  }

  kj::Own<kj::AsyncIoStream> inner_;
  std::shared_ptr<Ingest::ConnState> state_;
  uint64_t max_words_;
  Phase phase_ = Phase::kCount;
  std::vector<kj::byte> header_;
  uint32_t segments_ = 0;
  size_t header_bytes_ = 0;
  uint64_t body_left_ = 0;
};

// Runs on the commit thread (GroupCommitter's prepare): decodes a queued frame and checks it
// against its push (agent id of the session, boot epoch, seq). Touches nothing but the item.
bool prepareFrame(CommitItem& item) {
  bool expanded = item.decode_input.size() > 0;
  auto decoded = expanded ? decodeFrame(item.decode_input, item.decode_encoding)
                          : decodeFrame(item.payload, item.encoding);
  if (!decoded.ok()) {
    item.reject_reason = "malformed_frame";
    item.error = std::string(decoded.status().message());
    return false;
  }
  auto snap = std::make_shared<Snapshot>();
  absl::Status events = fromWire((*decoded)->frame(), *snap);
  decoded->reset();
  if (!events.ok()) {
    item.reject_reason = "malformed_frame";
    item.error = std::string(events.message());
    return false;
  }
  if (snap->agent.agent_id != item.agent_id) {
    item.reject_reason = "agent_id_mismatch";
    item.error = absl::StrCat("frame claims agent '", snap->agent.agent_id,
                              "' on a session registered as '", item.agent_id, "'");
    return false;
  }
  if (snap->boot_epoch != item.boot_epoch || snap->seq != item.seq) {
    item.reject_reason = "frame_header_mismatch";
    item.error =
        absl::StrCat("frame (epoch ", snap->boot_epoch, ", seq ", snap->seq,
                     ") does not match the push (epoch ", item.boot_epoch, ", seq ", item.seq, ")");
    return false;
  }
  item.frame = std::move(snap);
  return true;
}

}  // namespace

// One registered agent connection.
class SessionImpl final : public wire::IngestSession::Server {
 public:
  SessionImpl(Ingest& ingest, AgentInfo info, uint64_t boot_epoch, std::string peer)
      : ingest_(ingest), info_(std::move(info)), boot_epoch_(boot_epoch), peer_(std::move(peer)) {}

 protected:
  kj::Promise<void> push(PushContext context) override {
    auto params = context.getParams();
    uint64_t seq = params.getSeq();
    auto ack = context.getResults().initAck();
    ack.setSeq(seq);
    auto payload = params.getPayload();
    ingest_.stats_.payload_bytes += payload.size();
    if (delta_broken_) {
      // Pushes pipelined behind a refused delta: none may be accepted out of order (the log
      // would then treat the refused frame as an old duplicate), so all wait for a new session.
      ingest_.reject("delta_session_broken");
      return inOrder(KJ_EXCEPTION(FAILED, "frame refused", "delta_session_broken",
                                  "an earlier delta on this session was refused; register again"));
    }
    wire::Encoding encoding = params.getEncoding();
    // What goes to the log: the payload as received for a self-contained frame, the expanded
    // frame (recompressed) for a delta. Either way it decodes on its own.
    wire::Encoding log_encoding = encoding;
    kj::Array<kj::byte> log_payload;
    // Decoding the frame (unpacking, validation, fromWire) and checking it against the push are
    // left to the commit thread (prepareFrame), which does them before the log write: the event
    // loop only moves bytes, so it keeps up with the RPC traffic of thousands of agents.
    CommitItem item;
    item.decode = true;
    if (encoding == wire::Encoding::PACKED_ZSTD_DELTA ||
        encoding == wire::Encoding::POINTER_ZSTD_DELTA) {
      auto expanded = ingest_.options_.accept_delta
                          ? base_.expand(seq, params.getBaseSeq(), payload,
                                         encoding == wire::Encoding::POINTER_ZSTD_DELTA)
                          : absl::StatusOr<kj::Array<kj::byte>>(absl::FailedPreconditionError(
                                "delta_not_accepted: this aggregator runs without delta frames"));
      if (!expanded.ok()) {
        delta_broken_ = true;
        std::string msg(expanded.status().message());
        size_t colon = msg.find(':');
        return refuse(msg.substr(0, colon), msg.substr(colon + 2));
      }
      log_encoding = wire::Encoding::PACKED_ZSTD;
      // Level 1: the log copy is written once per delta on the shared aggregator; on frames it
      // is within a few percent of level 3.
      log_payload = compressPacked(*expanded, 1);
      item.decode_input = kj::mv(*expanded);
      item.decode_encoding = wire::Encoding::PACKED;
      ingest_.stats_.delta_frames++;
    } else {
      log_payload = kj::heapArray<kj::byte>(payload);
      base_.setSelfContained(seq, log_encoding, log_payload);
    }
    // The frame is now the base of this session's next delta (base_.expand made an expanded
    // delta the base): pipelined deltas name the frame before them, which may still be on its
    // way into the log. If its commit fails, the committer fences this agent's later frames until
    // it registers again, so no delta built on it is ever logged without it; if the commit thread
    // refuses it (malformed), it stops being the base (see kRejected below).
    // Durable first: the ack below is sent only once the batch holding the frame committed.
    item.agent_id = info_.agent_id;
    item.boot_epoch = boot_epoch_;
    item.seq = seq;
    item.encoding = log_encoding;
    item.payload = kj::mv(log_payload);
    item.received_ns = unixNs();
    auto done =
        ingest_.committer_->submit(kj::mv(item))
            .then([this, context](CommitItem r) mutable -> kj::Promise<void> {
              switch (r.outcome) {
                case CommitItem::Outcome::kRejected:
                  // A refused frame is no base for a later delta (one naming it is then refused
                  // as delta_unknown_base and the agent resyncs); deltas already queued behind it
                  // were expanded against the agent's own bytes and are checked on their own.
                  base_.forget(r.seq);
                  ingest_.reject(r.reject_reason);
                  VIGIL_LOG_WARN("refused frame from %s (%s): %s", info_.agent_id, peer_, r.error);
                  return KJ_EXCEPTION(FAILED, "frame refused", r.reject_reason, r.error);
                case CommitItem::Outcome::kAppended:
                  ingest_.stats_.frames_accepted++;
                  return kj::READY_NOW;
                case CommitItem::Outcome::kDuplicate:
                  ingest_.stats_.frames_duplicate++;
                  context.getResults().getAck().setDuplicate(true);
                  return kj::READY_NOW;
                case CommitItem::Outcome::kQueueFull:
                  ingest_.reject("queue_full");
                  // Not acknowledged: the agent reconnects and resends.
                  return KJ_EXCEPTION(OVERLOADED, "aggregator ingest queue is full", r.error);
                case CommitItem::Outcome::kFenced:
                  ingest_.reject("fenced");
                  return KJ_EXCEPTION(OVERLOADED, "aggregator cannot store frames right now",
                                      r.error);
                case CommitItem::Outcome::kFailed:
                  break;
              }
              ingest_.reject("log_write_failed");
              VIGIL_LOG_ERROR("cannot store frame %d of %s: %s", r.seq, info_.agent_id, r.error);
              // Not acknowledged: the agent keeps the frame and retries.
              return KJ_EXCEPTION(OVERLOADED, "aggregator cannot store frames right now", r.error);
            })
            .fork();
    auto answer = done.addBranch();
    tail_ = done.addBranch().then([]() {}, [](kj::Exception&&) {});
    return answer;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    ingest_.store_.heartbeat(info_.agent_id, unixNs());
    context.getResults().setHeartbeatIntervalMs(ingest_.options_.heartbeat_interval_ms);
    return kj::READY_NOW;
  }

 private:
  // A refusal is answered after the answers to the session's earlier pushes, which may still
  // wait for their commit: the agent expects its answers in order.
  kj::Promise<void> refuse(const std::string& reason, const std::string& detail) {
    ingest_.reject(reason);
    VIGIL_LOG_WARN("refused frame from %s (%s): %s", info_.agent_id, peer_, detail);
    return inOrder(KJ_EXCEPTION(FAILED, "frame refused", reason, detail));
  }

  // Settles with `e` once every earlier push of the session has been answered, and becomes the
  // session's new tail.
  kj::Promise<void> inOrder(kj::Exception e) {
    auto fork =
        tail_.then([e = kj::mv(e)]() mutable -> kj::Promise<void> { return kj::mv(e); }).fork();
    // The caller's branch first: a fork resolves its branches in the order they were added.
    auto answer = fork.addBranch();
    tail_ = fork.addBranch().then([]() {}, [](kj::Exception&&) {});
    return answer;
  }

  Ingest& ingest_;
  AgentInfo info_;
  uint64_t boot_epoch_;
  std::string peer_;
  // Delta state of this session: the last frame it accepted.
  DeltaBase base_{&ingest_.stats_.delta_base_bytes};
  bool delta_broken_ = false;
  // Settles when the session's latest push has been answered (whatever the answer).
  kj::Promise<void> tail_ = kj::READY_NOW;
};

// The bootstrap capability of one connection.
class AggregatorImpl final : public wire::Aggregator::Server {
 public:
  AggregatorImpl(Ingest& ingest, std::shared_ptr<Ingest::ConnState> conn)
      : ingest_(ingest), conn_(std::move(conn)), peer_(conn_->peer) {}

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
    if (!conn_->agent_id.empty() && conn_->agent_id != info.agent_id) {
      return refuse("identity_changed",
                    absl::StrCat("connection registered as '", conn_->agent_id,
                                 "' tried to register as '", info.agent_id, "'"));
    }
    if (conn_->has_cert && conn_->cert_cn != info.agent_id) {
      return refuse("identity_mismatch",
                    absl::StrCat("client certificate CN '", conn_->cert_cn,
                                 "' may not register as agent '", info.agent_id, "'"));
    }
    if (!ingest_.options_.agent_tokens.empty()) {
      auto it = ingest_.options_.agent_tokens.find(info.agent_id);
      if (it == ingest_.options_.agent_tokens.end() ||
          !tokenEquals(it->second, hello.getToken().cStr())) {
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
    if (conn_->agent_id.empty()) {
      conn_->agent_id = info.agent_id;
      ingest_.store_.agentConnected(info, epoch, unixNs());
    } else {
      ingest_.store_.heartbeat(info.agent_id, unixNs());
    }
    ingest_.committer_->unfence(info.agent_id, epoch);
    ingest_.controls_.insert_or_assign(
        info.agent_id, Ingest::Control{conn_->id, context.getParams().getControl()});
    if (hello.getConfigVersion() != 0) {
      ingest_.store_.setConfigVersion(info.agent_id, hello.getConfigVersion());
    }
    uint64_t last = *logged;
    VIGIL_LOG_INFO("agent %s (%s, kernel %s) registered from %s, epoch %d, resuming after seq %d",
                   info.agent_id, info.version, info.kernel, peer_, epoch, last);
    auto results = context.getResults();
    results.setLastSeq(last);
    results.setHeartbeatIntervalMs(ingest_.options_.heartbeat_interval_ms);
    results.setAcceptsDelta(ingest_.options_.accept_delta);
    results.setAcceptsPointerDelta(ingest_.options_.accept_delta);
    results.setAcceptsEventColumns(true);
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
  std::shared_ptr<Ingest::ConnState> conn_;
  std::string peer_;
};

Ingest::Ingest(kj::Timer& timer, IngestLog& log, Store& store, IngestOptions options)
    : timer_(timer),
      log_(log),
      store_(store),
      options_(std::move(options)),
      error_handler_(kj::heap<ErrorHandler>()),
      tasks_(*error_handler_) {
  committer_ = std::make_unique<GroupCommitter>(
      log_, options_.commit,
      [listener = store_.frameListener()](const Snapshot& frame, int64_t) {
        if (listener) {
          listener(frame);
        }
      },
      [this](const Snapshot& frame, int64_t received_ns) {
        store_.apply(frame, received_ns, /*notify=*/false);
      },
      prepareFrame);
}

Ingest::~Ingest() = default;

kj::Promise<void> Ingest::listen(kj::ConnectionReceiver& listener) {
  return acceptLoop(listener).exclusiveJoin(livenessLoop()).exclusiveJoin(committer_->run());
}

kj::Promise<void> Ingest::livenessLoop() {
  uint32_t hb = options_.heartbeat_interval_ms;
  uint32_t step = std::max<uint32_t>(hb / 4, 50);
  return timer_.afterDelay(step * kj::MILLISECONDS).then([this, hb]() {
    // Two missed heartbeat intervals (plus a quarter for scheduling slack) mean offline.
    int64_t max_silence = (2LL * hb + hb / 4) * 1000000;
    for (const std::string& id : store_.expireSilent(unixNs(), max_silence)) {
      stats_.agents_went_offline++;
      VIGIL_LOG_WARN("agent %s is offline: no heartbeat or frame for two intervals (%d ms)", id,
                     2 * hb);
    }
    return livenessLoop();
  });
}

void Ingest::connectionClosed(const std::string& reason, const std::string& detail,
                              const std::string& peer) {
  stats_.connections_closed[reason]++;
  if (reason == "normal") {
    VIGIL_LOG_INFO("agent connection from %s closed", peer);
  } else {
    VIGIL_LOG_WARN("closed agent connection from %s: %s%s%s", peer, reason,
                   detail.empty() ? "" : ": ", detail);
  }
}

kj::Promise<void> Ingest::acceptLoop(kj::ConnectionReceiver& listener) {
  return listener.acceptAuthenticated().then([this, &listener](kj::AuthenticatedStream stream) {
    stats_.connections++;
    stats_.connections_open++;
    tasks_.add(serve(kj::mv(stream)));
    return acceptLoop(listener);
  });
}

namespace {

std::string peerAddress(kj::PeerIdentity& id) {
  if (auto* tls = dynamic_cast<kj::TlsPeerIdentity*>(&id)) {
    return peerAddress(tls->getNetworkIdentity());
  }
  if (auto* net = dynamic_cast<kj::NetworkPeerIdentity*>(&id)) {
    return net->getAddress().toString().cStr();
  }
  return "agent";
}

}  // namespace

kj::Promise<void> Ingest::serve(kj::AuthenticatedStream stream) {
  auto state = std::make_shared<ConnState>();
  state->id = next_conn_id_++;
  state->peer = peerAddress(*stream.peerIdentity);
  kj::Promise<kj::AuthenticatedStream> secured =
      options_.tls == nullptr
          ? kj::Promise<kj::AuthenticatedStream>(kj::mv(stream))
          : timer_.timeoutAfter(options_.handshake_timeout,
                                options_.tls->context->wrapServer(kj::mv(stream)));
  return secured
      .then(
          [this, state](kj::AuthenticatedStream s) -> kj::Promise<void> {
            if (options_.tls != nullptr) {
              auto& id = kj::downcast<kj::TlsPeerIdentity>(*s.peerIdentity);
              state->has_cert = id.hasCertificate();
              if (state->has_cert) {
                state->cert_cn = id.getCommonName().cStr();
              } else if (options_.tls->require_client_cert) {
                stats_.rejected["no_client_cert"]++;
                state->close_reason = "no_client_cert";
                state->close_detail = "mutual TLS is required and the client sent no certificate";
                return kj::READY_NOW;
              }
            }
            struct Conn {
              kj::Own<kj::AsyncIoStream> stream;
              capnp::TwoPartyVatNetwork network;
              capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
              Conn(kj::Own<kj::AsyncIoStream> st, capnp::Capability::Client bootstrap,
                   capnp::ReaderOptions opts)
                  : stream(kj::mv(st)),
                    network(*stream, capnp::rpc::twoparty::Side::SERVER, opts),
                    rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
            };
            capnp::ReaderOptions opts;
            // A push carries at most one payload of kMaxPayloadBytes; anything larger is refused
            // before we allocate for it.
            opts.traversalLimitInWords = (kMaxPayloadBytes + (1 << 20)) / 8;
            auto monitored =
                kj::heap<FramingMonitor>(kj::mv(s.stream), state, opts.traversalLimitInWords);
            auto conn =
                kj::heap<Conn>(kj::mv(monitored), kj::heap<AggregatorImpl>(*this, state), opts);
            return conn->network.onDisconnect().attach(kj::mv(conn));
          },
          [this, state](kj::Exception&& e) -> kj::Promise<void> {
            state->close_detail = e.getDescription().cStr();
            // kj-tls asks OpenSSL to fail the handshake when mutual TLS is on and the client
            // sends no certificate; name that case.
            state->close_reason =
                state->close_detail.find("peer did not return a certificate") != std::string::npos
                    ? "no_client_cert"
                    : "tls_handshake_failed";
            stats_.rejected[state->close_reason]++;
            return kj::READY_NOW;
          })
      .then([this, state]() {
        stats_.connections_open--;
        if (!state->agent_id.empty()) {
          store_.agentDisconnected(state->agent_id, unixNs());
          auto it = controls_.find(state->agent_id);
          if (it != controls_.end() && it->second.conn_id == state->id) {
            controls_.erase(it);
          }
        }
        std::string reason = state->close_reason.empty() ? "normal" : state->close_reason;
        if (!state->close_reason.empty() && state->close_reason != "no_client_cert" &&
            state->close_reason != "tls_handshake_failed") {
          stats_.rejected[state->close_reason]++;
        }
        connectionClosed(reason, state->close_detail, state->peer);
      });
}

kj::Promise<ConfigPushResult> Ingest::pushConfig(const std::string& agent_id,
                                                 AgentConfigSpec config) {
  if (config.version == 0) {
    uint64_t current = 0;
    auto it = store_.agents().find(agent_id);
    if (it != store_.agents().end()) {
      current = it->second->config_version;
    }
    config.version = current + 1;
  }
  ConfigPushResult pending;
  pending.version = config.version;
  auto it = controls_.find(agent_id);
  if (it == controls_.end()) {
    pending.error = absl::StrCat("agent '", agent_id, "' is not connected to this aggregator");
    stats_.config_pushes["not_connected"]++;
    return pending;
  }
  auto req = it->second.client.applyConfigRequest();
  config.toWire(req.initConfig());
  uint64_t version = config.version;
  auto sent = req.send().then(
      [this, agent_id, version](capnp::Response<wire::AgentControl::ApplyConfigResults> resp) {
        auto r = resp.getResult();
        ConfigPushResult out;
        out.version = r.getVersion();
        out.delivered = true;
        out.applied = r.getApplied();
        out.error = r.getError().cStr();
        if (out.applied) {
          store_.setConfigVersion(agent_id, version);
          stats_.config_pushes["applied"]++;
        } else {
          stats_.config_pushes["failed"]++;
        }
        VIGIL_LOG_INFO("config version %d to agent %s: %s%s", version, agent_id,
                       out.applied ? "APPLIED" : "FAILED: ", out.error);
        return out;
      },
      [this, version](kj::Exception&& e) {
        stats_.config_pushes["unreachable"]++;
        ConfigPushResult out;
        out.version = version;
        out.error = absl::StrCat("agent did not answer: ", e.getDescription().cStr());
        return out;
      });
  return timer_.timeoutAfter(options_.config_push_timeout, kj::mv(sent))
      .catch_([this, version](kj::Exception&& e) {
        stats_.config_pushes["unreachable"]++;
        ConfigPushResult out;
        out.version = version;
        out.error = absl::StrCat("agent did not answer: ", e.getDescription().cStr());
        return out;
      });
}

void Ingest::writeMetrics(PromWriter& out) const {
  committer_->writeMetrics(out);
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
  out.family("vigil_aggregator_delta_frames_total", MetricType::kCounter,
             "Delta frames (Encoding packedZstdDelta) expanded against their base and accepted "
             "into the log as self-contained frames (duplicates included).");
  out.sample("vigil_aggregator_delta_frames_total", {}, stats_.delta_frames);
  out.family("vigil_aggregator_delta_base_bytes", MetricType::kGauge,
             "Bytes held as the base of the sessions' next delta frames: a keyframe's payload, "
             "or an expanded pointer delta's unpacked words (no decompression per delta).");
  out.sample("vigil_aggregator_delta_base_bytes", {}, stats_.delta_base_bytes);
  out.family("vigil_aggregator_payload_bytes_total", MetricType::kCounter,
             "Compressed frame payload bytes received.");
  out.sample("vigil_aggregator_payload_bytes_total", {}, stats_.payload_bytes);
  out.family("vigil_aggregator_connections_closed_total", MetricType::kCounter,
             "Agent RPC connections closed, by reason (normal, bad_framing, oversized_message, "
             "truncated_message, tls_handshake_failed, no_client_cert, ...).");
  for (const auto& [reason, n] : stats_.connections_closed) {
    out.sample("vigil_aggregator_connections_closed_total", {{"reason", reason}}, n);
  }
  out.family("vigil_aggregator_agents_went_offline_total", MetricType::kCounter,
             "Agents marked offline after two missed heartbeat intervals.");
  out.sample("vigil_aggregator_agents_went_offline_total", {}, stats_.agents_went_offline);
  out.family("vigil_aggregator_config_pushes_total", MetricType::kCounter,
             "Config pushes to agents, by result (applied, failed, unreachable, not_connected).");
  for (const auto& [result, n] : stats_.config_pushes) {
    out.sample("vigil_aggregator_config_pushes_total", {{"result", result}}, n);
  }
  out.family("vigil_aggregator_rejected_total", MetricType::kCounter,
             "Registrations and frames refused, by reason.");
  for (const auto& [reason, n] : stats_.rejected) {
    out.sample("vigil_aggregator_rejected_total", {{"reason", reason}}, n);
  }
}

}  // namespace vigil::aggregator
