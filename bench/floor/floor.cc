// vigil-bench-floor: the benchmark's floor. Attaches empty BPF programs (empty.bpf.c) to a list
// of hooks, so the bench can measure what the hooks alone cost a workload; and lists the hooks a
// running agent has attached, so the floor can mirror them exactly.
//
//   vigil-bench-floor attach HOOK... [--ready_file=PATH]
//       HOOK is [tp_btf:|raw_tp:|tracepoint:]NAME (tp_btf by default; tracepoint NAME is
//       category/name). Prints one "attached" line per hook, then "ready", then waits for
//       SIGINT/SIGTERM and detaches.
//   vigil-bench-floor links [--prefix=vigil_] [--pid=PID]
//       Prints "prog_id prog_name attach_type hook" for every attached BPF link whose program
//       name starts with the prefix (tracing, raw_tp and perf-event tracepoint links); with
//       --pid, only the links that process holds (other agents may run on the same machine).
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "empty.skel.h"

namespace
{

volatile sig_atomic_t g_stop = 0;

void onSignal(int)
{
	g_stop = 1;
}

struct Hook {
	std::string type; // tp_btf | raw_tp | tracepoint
	std::string name; // sched_switch, or sched/sched_switch for tracepoint
};

bool parseHook(const std::string &arg, Hook *out)
{
	size_t colon = arg.find(':');
	if (colon == std::string::npos) {
		*out = Hook{"tp_btf", arg};
	} else {
		*out = Hook{arg.substr(0, colon), arg.substr(colon + 1)};
	}
	if (out->type != "tp_btf" && out->type != "raw_tp" && out->type != "tracepoint") {
		fprintf(stderr,
			"vigil-bench-floor: hook '%s': attach type must be tp_btf, raw_tp or "
			"tracepoint\n",
			arg.c_str());
		return false;
	}
	if (out->name.empty() ||
	    (out->type == "tracepoint" && out->name.find('/') == std::string::npos)) {
		fprintf(stderr,
			"vigil-bench-floor: hook '%s': missing name (tracepoint needs cat/name)\n",
			arg.c_str());
		return false;
	}
	return true;
}

// The prefix of the slots of one attach type in empty.bpf.c.
const char *slotPrefix(const std::string &type)
{
	if (type == "tp_btf") {
		return "floor_btf_";
	}
	if (type == "raw_tp") {
		return "floor_raw_";
	}
	return "floor_tp_";
}

int attachMain(const std::vector<std::string> &args)
{
	std::vector<Hook> hooks;
	std::string ready_file;
	for (const std::string &a : args) {
		if (a.rfind("--ready_file=", 0) == 0) {
			ready_file = a.substr(strlen("--ready_file="));
			continue;
		}
		Hook h;
		if (!parseHook(a, &h)) {
			return 2;
		}
		hooks.push_back(h);
	}
	if (hooks.empty()) {
		fprintf(stderr, "vigil-bench-floor attach: give at least one hook\n");
		return 2;
	}
	empty_bpf *skel = empty_bpf__open();
	if (skel == nullptr) {
		fprintf(stderr, "vigil-bench-floor: cannot open the BPF object: %s\n",
			strerror(errno));
		return 1;
	}
	// Assign a slot to each hook, disable the rest.
	std::vector<bpf_program *> assigned(hooks.size(), nullptr);
	std::vector<bool> used;
	bpf_program *prog;
	bpf_object__for_each_program(prog, skel->obj)
	{
		bpf_program__set_autoload(prog, false);
	}
	for (size_t i = 0; i < hooks.size(); ++i) {
		const char *prefix = slotPrefix(hooks[i].type);
		bpf_object__for_each_program(prog, skel->obj)
		{
			if (strncmp(bpf_program__name(prog), prefix, strlen(prefix)) != 0 ||
			    bpf_program__autoload(prog)) {
				continue;
			}
			assigned[i] = prog;
			bpf_program__set_autoload(prog, true);
			break;
		}
		if (assigned[i] == nullptr) {
			fprintf(stderr,
				"vigil-bench-floor: more %s hooks than slots in empty.bpf.c\n",
				hooks[i].type.c_str());
			empty_bpf__destroy(skel);
			return 2;
		}
		if (hooks[i].type == "tp_btf") {
			int err = bpf_program__set_attach_target(assigned[i], 0,
								 hooks[i].name.c_str());
			if (err != 0) {
				fprintf(stderr,
					"vigil-bench-floor: no BTF tracepoint '%s' on this kernel: "
					"%s\n",
					hooks[i].name.c_str(), strerror(-err));
				empty_bpf__destroy(skel);
				return 1;
			}
		}
	}
	int err = empty_bpf__load(skel);
	if (err != 0) {
		fprintf(stderr, "vigil-bench-floor: loading the empty programs failed: %s\n",
			strerror(-err));
		empty_bpf__destroy(skel);
		return 1;
	}
	std::vector<bpf_link *> links;
	int rc = 0;
	for (size_t i = 0; i < hooks.size() && rc == 0; ++i) {
		bpf_link *link = nullptr;
		if (hooks[i].type == "tp_btf") {
			link = bpf_program__attach_trace(assigned[i]);
		} else if (hooks[i].type == "raw_tp") {
			link = bpf_program__attach_raw_tracepoint(assigned[i],
								  hooks[i].name.c_str());
		} else {
			std::string cat = hooks[i].name.substr(0, hooks[i].name.find('/'));
			std::string name = hooks[i].name.substr(hooks[i].name.find('/') + 1);
			link = bpf_program__attach_tracepoint(assigned[i], cat.c_str(),
							      name.c_str());
		}
		if (link == nullptr) {
			fprintf(stderr, "vigil-bench-floor: attaching %s:%s failed: %s%s\n",
				hooks[i].type.c_str(), hooks[i].name.c_str(), strerror(errno),
				hooks[i].type == "tracepoint"
					? " (is tracefs mounted at /sys/kernel/tracing?)"
					: "");
			rc = 1;
			break;
		}
		links.push_back(link);
		bpf_prog_info info = {};
		uint32_t len = sizeof(info);
		bpf_obj_get_info_by_fd(bpf_program__fd(assigned[i]), &info, &len);
		printf("attached %s:%s prog=%s id=%u\n", hooks[i].type.c_str(),
		       hooks[i].name.c_str(), bpf_program__name(assigned[i]), info.id);
	}
	if (rc == 0) {
		signal(SIGINT, onSignal);
		signal(SIGTERM, onSignal);
		printf("ready\n");
		fflush(stdout);
		if (!ready_file.empty()) {
			std::ofstream(ready_file) << "ready\n";
		}
		while (!g_stop) {
			pause();
		}
	}
	for (bpf_link *l : links) {
		bpf_link__destroy(l);
	}
	empty_bpf__destroy(skel);
	return rc;
}

// bpf_link_info as of Linux 6.6 (include/uapi/linux/bpf.h), which Debian 12's 6.1 uapi headers
// predate: the perf_event member names the tracepoint of a SEC("tracepoint") link.
struct LinkInfoPerfEvent {
	uint32_t type;
	uint32_t id;
	uint32_t prog_id;
	uint32_t pad0;
	uint32_t perf_event_type; // BPF_PERF_EVENT_TRACEPOINT = 5
	uint32_t pad1;
	uint64_t tp_name;
	uint32_t name_len;
	uint32_t pad2;
	uint64_t cookie;
	uint8_t rest[64];
} __attribute__((aligned(8)));

constexpr uint32_t kLinkTypePerfEvent = 7;
constexpr uint32_t kPerfEventTracepoint = 5;

// The BPF link ids a process holds, from /proc/PID/fdinfo ("link_id:" lines of bpf_link fds).
std::set<uint32_t> linksOfPid(const std::string &pid)
{
	std::set<uint32_t> ids;
	std::error_code ec;
	for (const auto &e : std::filesystem::directory_iterator("/proc/" + pid + "/fdinfo", ec)) {
		std::ifstream in(e.path());
		std::string line;
		while (std::getline(in, line)) {
			if (line.rfind("link_id:", 0) == 0) {
				ids.insert(static_cast<uint32_t>(
					std::stoul(line.substr(strlen("link_id:")))));
			}
		}
	}
	return ids;
}

int linksMain(const std::vector<std::string> &args)
{
	std::string prefix = "vigil_";
	std::string pid;
	for (const std::string &a : args) {
		if (a.rfind("--prefix=", 0) == 0) {
			prefix = a.substr(strlen("--prefix="));
		} else if (a.rfind("--pid=", 0) == 0) {
			pid = a.substr(strlen("--pid="));
		}
	}
	std::set<uint32_t> only;
	if (!pid.empty()) {
		only = linksOfPid(pid);
		if (only.empty()) {
			return 0;
		}
	}
	btf *vmlinux = btf__load_vmlinux_btf();
	uint32_t id = 0;
	while (bpf_link_get_next_id(id, &id) == 0) {
		if (!pid.empty() && only.count(id) == 0) {
			continue;
		}
		int fd = bpf_link_get_fd_by_id(id);
		if (fd < 0) {
			continue;
		}
		char name_buf[256] = {};
		bpf_link_info info = {};
		uint32_t len = sizeof(info);
		info.raw_tracepoint.tp_name = reinterpret_cast<uint64_t>(name_buf);
		info.raw_tracepoint.tp_name_len = sizeof(name_buf);
		if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
			close(fd);
			continue;
		}
		int prog_fd = bpf_prog_get_fd_by_id(info.prog_id);
		bpf_prog_info pinfo = {};
		uint32_t plen = sizeof(pinfo);
		if (prog_fd < 0 || bpf_obj_get_info_by_fd(prog_fd, &pinfo, &plen) != 0 ||
		    strncmp(pinfo.name, prefix.c_str(), prefix.size()) != 0) {
			if (prog_fd >= 0) {
				close(prog_fd);
			}
			close(fd);
			continue;
		}
		close(prog_fd);
		std::string type = "other";
		std::string hook = "?";
		if (info.type == BPF_LINK_TYPE_RAW_TRACEPOINT) {
			// tp_btf programs attach through a raw tracepoint link too; the program
			// type tells them apart.
			type = pinfo.type == BPF_PROG_TYPE_TRACING ? "tp_btf" : "raw_tp";
			hook = name_buf;
		} else if (info.type == BPF_LINK_TYPE_TRACING) {
			type = "tp_btf";
			if (vmlinux != nullptr && info.tracing.target_btf_id != 0) {
				const btf_type *t =
					btf__type_by_id(vmlinux, info.tracing.target_btf_id);
				if (t != nullptr) {
					hook = btf__name_by_offset(vmlinux, t->name_off);
					if (hook.rfind("btf_trace_", 0) == 0) {
						hook = hook.substr(strlen("btf_trace_"));
					}
				}
			}
		} else if (info.type == kLinkTypePerfEvent) {
			type = "tracepoint";
			LinkInfoPerfEvent pe = {};
			uint32_t pelen = sizeof(pe);
			char tp_buf[256] = {};
			pe.tp_name = reinterpret_cast<uint64_t>(tp_buf);
			pe.name_len = sizeof(tp_buf);
			if (bpf_obj_get_info_by_fd(fd, &pe, &pelen) == 0 &&
			    pe.perf_event_type == kPerfEventTracepoint) {
				hook = tp_buf; // the kernel gives the event name without its
					       // category
			}
		}
		printf("%u %s %s %s\n", info.prog_id, pinfo.name, type.c_str(), hook.c_str());
		close(fd);
	}
	btf__free(vmlinux);
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	std::vector<std::string> args(argv + 1, argv + argc);
	if (args.empty() || args[0] == "--help") {
		fprintf(args.empty() ? stderr : stdout,
			"usage: vigil-bench-floor attach [tp_btf:|raw_tp:|tracepoint:]HOOK... "
			"[--ready_file=PATH]\n"
			"       vigil-bench-floor links [--prefix=vigil_] [--pid=PID]\n");
		return args.empty() ? 2 : 0;
	}
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	std::string mode = args[0];
	args.erase(args.begin());
	if (mode == "attach") {
		return attachMain(args);
	}
	if (mode == "links") {
		return linksMain(args);
	}
	fprintf(stderr, "vigil-bench-floor: unknown mode '%s'\n", mode.c_str());
	return 2;
}
