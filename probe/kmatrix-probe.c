/*
 * kmatrix-probe: guest-side NFQUEUE fail-open reproducer (contract: docs/probe.md).
 *
 * One process, single-threaded, raw netlink (no libnetfilter_queue). Sends numbered UDP
 * datagrams over loopback through an NFQUEUE rule, consumes the queue (live or after a
 * pause) — or, with --consumer external, starts the user's own consumer, stalls it with
 * SIGSTOP and resumes it — and reports what the kernel did as one JSON object on stdout.
 *
 * Builds with `musl-gcc -static`: musl ships no <linux/...> headers, so every netlink and
 * nfnetlink_queue definition used here is spelled out below (values are kernel ABI,
 * unchanged since 3.x).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------- netlink / nfnetlink_queue ABI (local copies, prefixed to avoid clashes) ---------- */
#ifndef AF_NETLINK
#define AF_NETLINK 16
#endif
#ifndef SO_SNDBUFFORCE
#define SO_SNDBUFFORCE 32
#endif
#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif
#define KP_NETLINK_NETFILTER 12
#define KP_NLMSG_ERROR 2
#define KP_NLM_F_REQUEST 0x1
#define KP_NLM_F_ACK 0x4
#define KP_NLA_TYPE_MASK 0x3fff
#define KP_NFNL_SUBSYS_QUEUE 3
#define KP_NFQNL_MSG_PACKET 0
#define KP_NFQNL_MSG_VERDICT 1
#define KP_NFQNL_MSG_CONFIG 2
#define KP_NFQA_PACKET_HDR 1
#define KP_NFQA_VERDICT_HDR 2
#define KP_NFQA_CFG_CMD 1
#define KP_NFQA_CFG_PARAMS 2
#define KP_NFQA_CFG_QUEUE_MAXLEN 3
#define KP_NFQA_CFG_MASK 4
#define KP_NFQA_CFG_FLAGS 5
#define KP_NFQNL_CFG_CMD_BIND 1
#define KP_NFQNL_CFG_CMD_PF_BIND 3
#define KP_NFQNL_CFG_CMD_PF_UNBIND 4
#define KP_NFQNL_COPY_PACKET 2
#define KP_NFQA_CFG_F_FAIL_OPEN 0x1u /* the only flag used: 3.10 rejects flags >= 1<<3 */
#define KP_NF_ACCEPT 1

struct kp_nlmsghdr { uint32_t len; uint16_t type; uint16_t flags; uint32_t seq; uint32_t pid; };
struct kp_nfgenmsg { uint8_t family; uint8_t version; uint16_t res_id; };
struct kp_nlattr { uint16_t len; uint16_t type; };
struct kp_sockaddr_nl { unsigned short nl_family; unsigned short nl_pad; uint32_t nl_pid; uint32_t nl_groups; };

#define KP_ALIGN4(x) (((x) + 3u) & ~3u)
#define KP_NLHDR 16u
#define KP_NFHDR (KP_NLHDR + 4u) /* nlmsghdr + nfgenmsg */

/* ---------- run state ---------- */
#define NL_BUF (256 * 1024)
#define BIG_SOCKBUF (32 * 1024 * 1024)
#define MAX_RANGES 16
#define ST_SENT 1
#define ST_RECV 2
static const unsigned char MAGIC[4] = {'K', 'M', 'P', '1'}; /* payload bytes 4..7 */

enum { RB_DEFAULT, RB_PLAIN, RB_FORCE };
enum { FW_AUTO, FW_LEGACY, FW_IPTABLES, FW_IPT_NFT, FW_NFT, FW_NONE };
static const char *const fw_names[] = {"auto", "iptables-legacy", "iptables", "iptables-nft", "nft", "none"};
static const char *const rb_names[] = {"default", "plain", "force"};

struct qrow {
	int ok;
	unsigned long long total, dropped, user_dropped, idseq;
};

static volatile sig_atomic_t g_stop;

static struct {
	/* parameters */
	unsigned long queue, port, packets, payload, maxlen, copy_range;
	int fail_open, rcvbuf_mode, live, external, firewall;
	unsigned long rcvbuf, pace_window, rmem, tcp_probes, tcp_timeout_ms, settle_ms;
	const char *netns;
	/* resources */
	int nl_fd, udp_rx, udp_tx, tcp_lis, rmem_def_fd, rmem_max_fd;
	uint32_t nl_pid, seq;
	int nl_bound;
	/* rmem */
	long prev_def, prev_max;
	int rmem_touched, rmem_restored;
	/* firewall */
	const char *fw_used; /* NULL until rules are in place */
	int fw_kind, fw_use_w, fw_udp_rule, fw_tcp_rule, nft_table;
	/* measurement */
	unsigned char *st; /* per sequence number: ST_SENT | ST_RECV */
	unsigned char *pkt;
	unsigned long sent, received, messages_read, verdicts, enobufs, nl_errors, verdict_errors, dups, send_errors;
	unsigned long reinject_base; /* received before the first verdict, plus re-injections given up on */
	long rcvbuf_eff;
	struct qrow q_before, q_paused, q_after;
	long long drops_before, drops_after;
	int have_drops_before, have_drops_after;
	unsigned long tcp_attempted, tcp_succeeded;
	uint32_t wait_seq;
	int wait_done, wait_err;
	char kernel[128];
	char error[600];
	long long t0;
	/* --consumer external: the user's consumer, started, stalled and resumed by us */
	char **agent_argv;
	const char *agent_dir;
	const char *agent_ready_log; /* also wait for this text in its output (NULL: bound is ready) */
	unsigned long agent_ready_ms, fate_packets, fate_wait_ms, agent_stop_signal;
	pid_t agent_pid;
	int agent_done, agent_exited_early, agent_code, agent_signal, agent_stopped;
	unsigned long peer_portid, received_stalled, fresh_sent, fresh_received;
	long long fresh_queued, fresh_unicast_failed; /* -1: the rows could not be read */
	long long agent_ready_after;
	const char *fate;
} R;

static unsigned char nlbuf[NL_BUF];
static unsigned char rxbuf[65536];

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void logmsg(const char *fmt, ...)
{
	va_list ap;
	fputs("kmatrix-probe: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* First error wins; it is what the JSON reports. */
static void set_error(const char *fmt, ...)
{
	va_list ap;
	char tmp[sizeof R.error];
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	logmsg("error: %s", tmp);
	if (!R.error[0])
		memcpy(R.error, tmp, sizeof tmp);
}

static int check_stop(void)
{
	if (g_stop) {
		set_error("interrupted by signal %d", (int)g_stop);
		return -1;
	}
	return 0;
}

static void on_signal(int sig) { g_stop = sig; }

/* ---------- external commands (firewall) ---------- */
static char g_lastfail[200]; /* why the last command failed, for the error message */

static int run_cmd(const char *const argv[])
{
	char line[512];
	size_t off = 0;
	for (int i = 0; argv[i] && off < sizeof line - 1; i++)
		off += (size_t)snprintf(line + off, sizeof line - off, "%s%s", i ? " " : "", argv[i]);
	logmsg("+ %s", line);
	pid_t pid = fork();
	if (pid < 0) {
		logmsg("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		signal(SIGPIPE, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		int dn = open("/dev/null", O_RDONLY);
		if (dn >= 0) {
			dup2(dn, 0);
			close(dn);
		}
		dup2(2, 1); /* stdout is reserved for the JSON */
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	int status, rc;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) /* a signal only sets g_stop: let the command finish */
			return -1;
	}
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (rc == 127)
		snprintf(g_lastfail, sizeof g_lastfail, "%s not found", argv[0]);
	else if (rc != 0)
		snprintf(g_lastfail, sizeof g_lastfail, "'%.160s' exited %d", line, rc);
	return rc;
}

static int ipt_rule(const char *bin, const char *op, int tcp, int use_w)
{
	char port[16], q[16];
	const char *argv[20];
	int i = 0;
	snprintf(port, sizeof port, "%lu", tcp ? R.port + 1 : R.port);
	snprintf(q, sizeof q, "%lu", R.queue);
	argv[i++] = bin;
	if (use_w)
		argv[i++] = "-w";
	argv[i++] = op; /* -I (top of OUTPUT: an earlier "-o lo -j ACCEPT" must not shadow us) or -D */
	argv[i++] = "OUTPUT";
	argv[i++] = "-o";
	argv[i++] = "lo";
	argv[i++] = "-p";
	argv[i++] = tcp ? "tcp" : "udp";
	argv[i++] = "--dport";
	argv[i++] = port;
	if (tcp)
		argv[i++] = "--syn";
	argv[i++] = "-j";
	argv[i++] = "NFQUEUE";
	argv[i++] = "--queue-num";
	argv[i++] = q;
	argv[i] = NULL;
	return run_cmd(argv);
}

static int nft_rule(int tcp)
{
	char port[16], q[16];
	snprintf(port, sizeof port, "%lu", tcp ? R.port + 1 : R.port);
	snprintf(q, sizeof q, "%lu", R.queue);
	if (tcp) {
		const char *a[] = {"nft", "add", "rule", "inet", "kmatrix", "output", "oifname", "lo", "tcp", "dport", port,
				   "tcp", "flags", "&", "(fin|syn|rst|ack)", "==", "syn", "queue", "num", q, NULL};
		return run_cmd(a);
	}
	const char *a[] = {"nft", "add", "rule", "inet", "kmatrix", "output", "oifname", "lo",
			   "udp", "dport", port, "queue", "num", q, NULL};
	return run_cmd(a);
}

static void fw_remove(void)
{
	if (R.fw_kind == FW_NFT) {
		if (R.nft_table) {
			const char *a[] = {"nft", "delete", "table", "inet", "kmatrix", NULL};
			if (run_cmd(a) != 0)
				logmsg("warning: could not delete nft table inet kmatrix");
			R.nft_table = 0;
		}
	} else if (R.fw_kind >= FW_LEGACY && R.fw_kind <= FW_IPT_NFT) {
		const char *bin = fw_names[R.fw_kind];
		if (R.fw_tcp_rule && ipt_rule(bin, "-D", 1, R.fw_use_w) != 0)
			logmsg("warning: could not delete the tcp NFQUEUE rule");
		if (R.fw_udp_rule && ipt_rule(bin, "-D", 0, R.fw_use_w) != 0)
			logmsg("warning: could not delete the udp NFQUEUE rule");
		R.fw_tcp_rule = R.fw_udp_rule = 0;
	}
}

static int fw_try(int kind)
{
	R.fw_kind = kind;
	if (kind == FW_NFT) {
		const char *t[] = {"nft", "add", "table", "inet", "kmatrix", NULL};
		const char *c[] = {"nft", "add", "chain", "inet", "kmatrix", "output",
				   "{ type filter hook output priority 0 ; }", NULL};
		const char *f[] = {"nft", "flush", "chain", "inet", "kmatrix", "output", NULL};
		if (run_cmd(t) != 0)
			return -1;
		R.nft_table = 1;
		if (run_cmd(c) != 0 || run_cmd(f) != 0 || nft_rule(0) != 0 || (R.tcp_probes && nft_rule(1) != 0)) {
			fw_remove();
			return -1;
		}
		return 0;
	}
	const char *bin = fw_names[kind];
	int rc = ipt_rule(bin, "-I", 0, 1);
	if (rc == 0) {
		R.fw_use_w = 1;
	} else if (rc != 127 && ipt_rule(bin, "-I", 0, 0) == 0) {
		R.fw_use_w = 0; /* an iptables without -w */
	} else {
		return -1;
	}
	R.fw_udp_rule = 1;
	if (R.tcp_probes) {
		if (ipt_rule(bin, "-I", 1, R.fw_use_w) != 0) {
			fw_remove();
			return -1;
		}
		R.fw_tcp_rule = 1;
	}
	return 0;
}

static int fw_install(void)
{
	if (R.firewall == FW_NONE) {
		R.fw_kind = FW_NONE;
		R.fw_used = "none";
		return 0;
	}
	char why[sizeof R.error - 64];
	size_t off = 0;
	why[0] = 0;
	for (int k = FW_LEGACY; k <= FW_NFT; k++) {
		if (R.firewall != FW_AUTO && R.firewall != k)
			continue;
		g_lastfail[0] = 0;
		if (fw_try(k) == 0) {
			R.fw_used = fw_names[k];
			return 0;
		}
		if (off < sizeof why)
			off += (size_t)snprintf(why + off, sizeof why - off, "%s%s", off ? "; " : "",
						g_lastfail[0] ? g_lastfail : fw_names[k]);
		R.fw_kind = FW_NONE;
		if (check_stop())
			return -1;
	}
	set_error("could not install the NFQUEUE rules: %s", why);
	return -1;
}

/* ---------- sysctl (rmem) ---------- */
static int sysctl_read(int fd, long *val)
{
	char b[64];
	ssize_t n = pread(fd, b, sizeof b - 1, 0);
	if (n <= 0)
		return -1;
	b[n] = 0;
	char *end;
	errno = 0;
	*val = strtol(b, &end, 10);
	return (errno || end == b) ? -1 : 0;
}

static int sysctl_write(int fd, long val)
{
	char b[32];
	int n = snprintf(b, sizeof b, "%ld\n", val);
	return pwrite(fd, b, (size_t)n, 0) == n ? 0 : -1;
}

static void rmem_restore(void)
{
	if (!R.rmem_touched)
		return;
	R.rmem_touched = 0;
	int ok = 1;
	long v;
	if (sysctl_write(R.rmem_def_fd, R.prev_def) != 0) {
		logmsg("restoring rmem_default=%ld: %s", R.prev_def, strerror(errno));
		ok = 0;
	}
	if (sysctl_write(R.rmem_max_fd, R.prev_max) != 0) {
		logmsg("restoring rmem_max=%ld: %s", R.prev_max, strerror(errno));
		ok = 0;
	}
	if (sysctl_read(R.rmem_def_fd, &v) != 0 || v != R.prev_def)
		ok = 0;
	if (sysctl_read(R.rmem_max_fd, &v) != 0 || v != R.prev_max)
		ok = 0;
	R.rmem_restored = ok;
	if (!ok)
		set_error("could not restore net.core.rmem_default=%ld / rmem_max=%ld", R.prev_def, R.prev_max);
}

/* ---------- /proc readers ---------- */
static int read_qrow(struct qrow *q)
{
	memset(q, 0, sizeof *q);
	FILE *f = fopen("/proc/net/netfilter/nfnetlink_queue", "r");
	if (!f)
		return -1;
	char line[256];
	while (fgets(line, sizeof line, f)) {
		unsigned long qn, portid, total, mode, range;
		unsigned long long dropped, udropped, idseq;
		if (sscanf(line, "%lu %lu %lu %lu %lu %llu %llu %llu", &qn, &portid, &total, &mode, &range, &dropped,
			   &udropped, &idseq) == 8 &&
		    qn == R.queue) {
			q->ok = 1;
			q->total = total;
			q->dropped = dropped;
			q->user_dropped = udropped;
			q->idseq = idseq;
			R.peer_portid = portid;
			if (!R.external && portid != R.nl_pid)
				logmsg("warning: queue %lu is bound by portid %lu, ours is %u", qn, portid, R.nl_pid);
			break;
		}
	}
	fclose(f);
	return q->ok ? 0 : -1;
}

static int split_ws(char *s, char **tok, int max)
{
	int n = 0;
	char *save = NULL;
	for (char *t = strtok_r(s, " \t\n", &save); t && n < max; t = strtok_r(NULL, " \t\n", &save))
		tok[n++] = t;
	return n;
}

/* Drops of the consumer's socket's row in /proc/net/netlink (ours, or the external consumer's,
 * which the queue's row names); columns located from the header line. */
static int read_drops(long long *drops)
{
	unsigned long owner = R.external ? R.peer_portid : R.nl_pid;
	FILE *f = fopen("/proc/net/netlink", "r");
	if (!f)
		return -1;
	char line[512];
	char *tok[32];
	int ieth = -1, ipid = -1, idrops = -1, found = 0;
	if (fgets(line, sizeof line, f)) {
		int n = split_ws(line, tok, 32);
		for (int i = 0; i < n; i++) {
			if (!strcmp(tok[i], "Eth"))
				ieth = i;
			else if (!strcmp(tok[i], "Pid"))
				ipid = i;
			else if (!strcmp(tok[i], "Drops"))
				idrops = i;
		}
	}
	if (ieth < 0 || ipid < 0 || idrops < 0) {
		fclose(f);
		return -1;
	}
	while (!found && fgets(line, sizeof line, f)) {
		int n = split_ws(line, tok, 32);
		if (n <= idrops || n <= ieth || n <= ipid)
			continue;
		if (strtoul(tok[ieth], NULL, 10) == KP_NETLINK_NETFILTER && strtoul(tok[ipid], NULL, 10) == owner) {
			*drops = strtoll(tok[idrops], NULL, 10);
			found = 1;
		}
	}
	fclose(f);
	return found ? 0 : -1;
}

/* ---------- netlink ---------- */
struct nlmsg {
	unsigned char buf[256];
	size_t len;
};

static void nm_start(struct nlmsg *m, uint16_t msg, uint16_t flags, uint32_t seq)
{
	struct kp_nlmsghdr h = {0, (uint16_t)((KP_NFNL_SUBSYS_QUEUE << 8) | msg), flags, seq, 0};
	struct kp_nfgenmsg g = {AF_UNSPEC, 0, htons((uint16_t)R.queue)};
	memset(m->buf, 0, sizeof m->buf);
	memcpy(m->buf, &h, sizeof h);
	memcpy(m->buf + KP_NLHDR, &g, sizeof g);
	m->len = KP_NFHDR;
}

static void nm_attr(struct nlmsg *m, uint16_t type, const void *data, uint16_t dlen)
{
	struct kp_nlattr a = {(uint16_t)(sizeof a + dlen), type};
	memcpy(m->buf + m->len, &a, sizeof a);
	memcpy(m->buf + m->len + sizeof a, data, dlen);
	m->len += KP_ALIGN4(sizeof a + dlen);
}

static int nm_send(struct nlmsg *m)
{
	uint32_t len = (uint32_t)m->len;
	memcpy(m->buf, &len, sizeof len);
	struct kp_sockaddr_nl k = {AF_NETLINK, 0, 0, 0};
	for (;;) {
		ssize_t n = sendto(R.nl_fd, m->buf, m->len, 0, (struct sockaddr *)&k, sizeof k);
		if (n == (ssize_t)m->len)
			return 0;
		if (n < 0 && errno == EINTR && !g_stop)
			continue;
		return -1;
	}
}

static void drain_udp(void);

/* Every ACCEPT re-injects a datagram through the loopback device's backlog, which the kernel
 * drains in softirq context. While ksoftirqd lags (a vCPU its host starves), a tight verdict loop
 * fills netdev_max_backlog (1000) and the kernel drops datagrams NFQUEUE had accepted: seen as 680
 * contiguous losses in one rmem-mitigation run. Keeping at most 256 re-injected datagrams on
 * their way leaves every loss a cell reports to NFQUEUE. Verdicted packets that never arrive
 * (TCP SYNs, anything dropped later) stop holding the window after settle_ms. */
#define REINJECT_WINDOW 256
static void pace_reinjection(void)
{
	long long deadline = now_ms() + (long long)R.settle_ms;
	for (;;) {
		drain_udp();
		long inflight = (long)R.verdicts - (long)(R.received - R.reinject_base);
		if (inflight <= REINJECT_WINDOW)
			return;
		if (now_ms() >= deadline || check_stop()) {
			R.reinject_base -= (unsigned long)inflight;
			return;
		}
		struct pollfd p = {R.udp_rx, POLLIN, 0};
		poll(&p, 1, 5);
	}
}

static void send_verdict(uint32_t id)
{
	if (R.verdicts == 0)
		R.reinject_base = R.received;
	struct nlmsg m;
	uint32_t v[2] = {htonl(KP_NF_ACCEPT), htonl(id)};
	nm_start(&m, KP_NFQNL_MSG_VERDICT, KP_NLM_F_REQUEST, ++R.seq);
	nm_attr(&m, KP_NFQA_VERDICT_HDR, v, sizeof v);
	if (nm_send(&m) == 0) {
		if (++R.verdicts % 32 == 0)
			pace_reinjection();
	} else {
		if (R.verdict_errors++ < 5)
			logmsg("verdict for packet id %u: %s", id, strerror(errno));
	}
}

static void nl_process(const unsigned char *b, size_t n)
{
	size_t off = 0;
	while (n - off >= KP_NLHDR) {
		struct kp_nlmsghdr h;
		memcpy(&h, b + off, sizeof h);
		if (h.len < KP_NLHDR || h.len > n - off)
			break;
		if (h.type == KP_NLMSG_ERROR && h.len >= KP_NLHDR + 4) {
			int32_t err;
			memcpy(&err, b + off + KP_NLHDR, sizeof err);
			if (R.wait_seq && h.seq == R.wait_seq) {
				R.wait_done = 1;
				R.wait_err = -err;
			} else if (err != 0 && R.nl_errors++ < 5) {
				logmsg("netlink error for seq %u: %s", h.seq, strerror(-err));
			}
		} else if (h.type == ((KP_NFNL_SUBSYS_QUEUE << 8) | KP_NFQNL_MSG_PACKET) && h.len >= KP_NFHDR) {
			size_t a = off + KP_NFHDR, end = off + h.len;
			int have_id = 0;
			uint32_t id = 0;
			while (end > a && end - a >= 4) {
				struct kp_nlattr at;
				memcpy(&at, b + a, sizeof at);
				if (at.len < 4 || at.len > end - a)
					break;
				if ((at.type & KP_NLA_TYPE_MASK) == KP_NFQA_PACKET_HDR && at.len >= 4 + 4) {
					memcpy(&id, b + a + 4, 4);
					id = ntohl(id);
					have_id = 1;
				}
				a += KP_ALIGN4(at.len);
			}
			R.messages_read++;
			if (have_id)
				send_verdict(id);
			else
				logmsg("packet message without NFQA_PACKET_HDR");
		}
		off += KP_ALIGN4(h.len);
	}
}

/* Read everything queued on the netlink socket (non-blocking), ACCEPT every packet.
 * ENOBUFS (the overrun report) is counted and reading continues. */
static int nl_pump(void)
{
	if (R.nl_fd < 0) /* an external consumer reads the queue, not us */
		return 0;
	for (;;) {
		ssize_t n = recv(R.nl_fd, nlbuf, sizeof nlbuf, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR) {
				if (check_stop())
					return -1;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == ENOBUFS) {
				R.enobufs++;
				continue;
			}
			set_error("netlink recv: %s", strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0;
		nl_process(nlbuf, (size_t)n);
	}
}

/* Send a config request and wait for its ACK. Returns 0, or a positive errno. */
static int nl_request(struct nlmsg *m, int timeout_ms)
{
	memcpy(&R.wait_seq, m->buf + 8, sizeof R.wait_seq); /* nlmsghdr.seq */
	R.wait_done = 0;
	R.wait_err = 0;
	if (nm_send(m) != 0) {
		int e = errno;
		R.wait_seq = 0;
		return e ? e : EIO;
	}
	long long deadline = now_ms() + timeout_ms;
	while (!R.wait_done) {
		if (nl_pump() != 0) {
			R.wait_seq = 0;
			return EINTR;
		}
		if (R.wait_done)
			break;
		long long rem = deadline - now_ms();
		if (rem <= 0) {
			R.wait_seq = 0;
			return ETIMEDOUT;
		}
		struct pollfd p = {R.nl_fd, POLLIN, 0};
		poll(&p, 1, (int)rem);
	}
	R.wait_seq = 0;
	return R.wait_err;
}

static int nfq_cmd_only(uint8_t cmd, uint16_t pf)
{
	struct nlmsg m;
	uint8_t c[4] = {cmd, 0, 0, 0};
	uint16_t npf = htons(pf);
	memcpy(c + 2, &npf, 2);
	nm_start(&m, KP_NFQNL_MSG_CONFIG, KP_NLM_F_REQUEST | KP_NLM_F_ACK, ++R.seq);
	nm_attr(&m, KP_NFQA_CFG_CMD, c, sizeof c);
	return nl_request(&m, 2000);
}

static int nfq_bind(void)
{
	struct nlmsg m;
	uint8_t c[4] = {KP_NFQNL_CFG_CMD_BIND, 0, 0, 0};
	uint8_t params[5];
	uint32_t range = htonl((uint32_t)R.copy_range), maxlen = htonl((uint32_t)R.maxlen);
	uint32_t flags = htonl(KP_NFQA_CFG_F_FAIL_OPEN);
	memcpy(params, &range, 4);
	params[4] = KP_NFQNL_COPY_PACKET;
	nm_start(&m, KP_NFQNL_MSG_CONFIG, KP_NLM_F_REQUEST | KP_NLM_F_ACK, ++R.seq);
	nm_attr(&m, KP_NFQA_CFG_CMD, c, sizeof c);
	nm_attr(&m, KP_NFQA_CFG_PARAMS, params, sizeof params);
	nm_attr(&m, KP_NFQA_CFG_QUEUE_MAXLEN, &maxlen, sizeof maxlen);
	if (R.fail_open) {
		nm_attr(&m, KP_NFQA_CFG_FLAGS, &flags, sizeof flags);
		nm_attr(&m, KP_NFQA_CFG_MASK, &flags, sizeof flags);
	}
	return nl_request(&m, 3000);
}

/* ---------- sockets ---------- */
static void drain_udp(void)
{
	for (;;) {
		ssize_t n = recv(R.udp_rx, rxbuf, sizeof rxbuf, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR && !g_stop)
				continue;
			return;
		}
		if (n < 8 || memcmp(rxbuf + 4, MAGIC, 4) != 0)
			continue;
		uint32_t s;
		memcpy(&s, rxbuf, 4);
		s = ntohl(s);
		if (s >= 1 && s <= R.packets + R.fate_packets && (R.st[s] & ST_SENT) && !(R.st[s] & ST_RECV)) {
			R.st[s] |= ST_RECV;
			if (s <= R.packets)
				R.received++;
			else
				R.fresh_received++; /* sent after the stall, to see whether the consumer still works */
		} else {
			R.dups++;
		}
	}
}

static void accept_drain(void)
{
	if (R.tcp_lis < 0)
		return;
	for (;;) {
		int c = accept4(R.tcp_lis, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR && !g_stop)
				continue;
			return;
		}
		close(c);
	}
}

/* Keep both ends moving while the sender waits: drain the receiver; a live consumer reads too. */
static int service(void)
{
	drain_udp();
	accept_drain();
	if (R.live)
		return nl_pump();
	return 0;
}

static int send_one(unsigned long seq)
{
	uint32_t s = htonl((uint32_t)seq);
	memcpy(R.pkt, &s, 4);
	long long blocked_since = 0;
	for (;;) {
		ssize_t n = send(R.udp_tx, R.pkt, R.payload, MSG_DONTWAIT);
		if (n >= 0) {
			R.st[seq] |= ST_SENT;
			if (seq <= R.packets) /* the fate check's datagrams are counted apart */
				R.sent++;
			return 0;
		}
		if (errno == EINTR) {
			if (check_stop())
				return -1;
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
			long long t = now_ms();
			if (!blocked_since)
				blocked_since = t;
			if (t - blocked_since > 5000) {
				set_error("sender blocked for 5 s at datagram %lu (send buffer full)", seq);
				return -1;
			}
			struct pollfd p[2] = {{R.udp_tx, POLLOUT, 0}, {R.nl_fd, R.live ? POLLIN : 0, 0}};
			poll(p, 2, 50);
			if (check_stop() || service() != 0)
				return -1;
			continue;
		}
		if (R.send_errors++ < 5)
			logmsg("send datagram %lu: %s", seq, strerror(errno));
		return 0; /* not sent: neither counted as sent nor as lost */
	}
}

static int open_sockets(void)
{
	struct sockaddr_in a;
	int big = BIG_SOCKBUF, one = 1;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	R.udp_rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (R.udp_rx < 0) {
		set_error("udp socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(R.udp_rx, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0 &&
	    setsockopt(R.udp_rx, SOL_SOCKET, SO_RCVBUF, &big, sizeof big) != 0)
		logmsg("warning: receiver SO_RCVBUF: %s", strerror(errno));
	a.sin_port = htons((uint16_t)R.port);
	if (bind(R.udp_rx, (struct sockaddr *)&a, sizeof a) != 0) {
		set_error("bind udp 127.0.0.1:%lu: %s", R.port, strerror(errno));
		return -1;
	}

	R.udp_tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (R.udp_tx < 0) {
		set_error("udp socket: %s", strerror(errno));
		return -1;
	}
	/* queued datagrams stay charged to the sender: give it room for all of them */
	if (setsockopt(R.udp_tx, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0 &&
	    setsockopt(R.udp_tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big) != 0)
		logmsg("warning: sender SO_SNDBUF: %s", strerror(errno));
	if (connect(R.udp_tx, (struct sockaddr *)&a, sizeof a) != 0) {
		set_error("connect udp 127.0.0.1:%lu: %s", R.port, strerror(errno));
		return -1;
	}

	if (R.tcp_probes) {
		R.tcp_lis = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (R.tcp_lis < 0) {
			set_error("tcp socket: %s", strerror(errno));
			return -1;
		}
		setsockopt(R.tcp_lis, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		a.sin_port = htons((uint16_t)(R.port + 1));
		if (bind(R.tcp_lis, (struct sockaddr *)&a, sizeof a) != 0 || listen(R.tcp_lis, 1024) != 0) {
			set_error("tcp listen 127.0.0.1:%lu: %s", R.port + 1, strerror(errno));
			return -1;
		}
	}
	return 0;
}

static int lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		set_error("socket: %s", strerror(errno));
		return -1;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	if (rc != 0)
		set_error("bringing lo up: %s", strerror(errno));
	close(s);
	return rc == 0 ? 0 : -1;
}

static void json_str(const char *s);

/* ---------- --consumer external: the user's own consumer ---------- */
/* Its stdout and stderr, in the folder it was given. */
static void agent_log_path(char *buf, size_t n) { snprintf(buf, n, "%s/consumer.log", R.agent_dir); }

/* Records how the consumer ended, once: reaps it if it has exited (waitpid WNOHANG). */
static int agent_reap(int block)
{
	if (R.agent_pid <= 0 || R.agent_done)
		return R.agent_done;
	int status;
	pid_t r;
	while ((r = waitpid(R.agent_pid, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR)
		;
	if (r != R.agent_pid)
		return 0;
	R.agent_done = 1;
	if (WIFEXITED(status))
		R.agent_code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		R.agent_signal = WTERMSIG(status);
	return 1;
}

/* Starts the consumer in a session (and process group) of its own, in its folder, its output in
 * consumer.log; it dies with us (PR_SET_PDEATHSIG), so a probe killed outright leaves no consumer. */
static int agent_start(void)
{
	char log[PATH_MAX];
	agent_log_path(log, sizeof log);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s", R.agent_dir);
	for (char *p = path + 1;; p++) { /* mkdir -p */
		char c = *p;
		if (c != '/' && c != 0)
			continue;
		*p = 0;
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			set_error("creating the consumer's folder %s: %s", path, strerror(errno));
			return -1;
		}
		*p = c;
		if (!c)
			break;
	}
	int out = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		set_error("creating %s: %s", log, strerror(errno));
		return -1;
	}
	pid_t parent = getpid();
	R.agent_pid = fork();
	if (R.agent_pid < 0) {
		close(out);
		set_error("fork: %s", strerror(errno));
		return -1;
	}
	if (R.agent_pid == 0) {
		signal(SIGPIPE, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(126);
		setsid();
		int dn = open("/dev/null", O_RDONLY);
		if (dn >= 0) {
			dup2(dn, 0);
			close(dn);
		}
		dup2(out, 1);
		dup2(out, 2);
		if (chdir(R.agent_dir) != 0) {
			dprintf(2, "kmatrix-probe: cannot enter %s: %s\n", R.agent_dir, strerror(errno));
			_exit(126);
		}
		execv(R.agent_argv[0], R.agent_argv);
		dprintf(2, "kmatrix-probe: cannot run %s: %s\n", R.agent_argv[0], strerror(errno));
		_exit(127);
	}
	close(out);
	return 0;
}

/* Whether the consumer's output so far holds `text` (its last 64 KiB: a start-up line). */
static int agent_log_has(const char *text)
{
	char log[PATH_MAX], buf[65536];
	agent_log_path(log, sizeof log);
	int fd = open(log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > (off_t)sizeof buf ? size - (off_t)sizeof buf : 0;
	ssize_t n = pread(fd, buf, sizeof buf, from);
	close(fd);
	return n > 0 && memmem(buf, (size_t)n, text, strlen(text)) != NULL;
}

/* Waits until the queue's row names a bound peer and, when asked, the consumer's output shows
 * its ready text: binding comes first in a consumer's start-up, its queue flags (fail-open)
 * after, and a stall in between catches it half configured. */
static int agent_wait_bound(void)
{
	long long start = now_ms(), deadline = start + (long long)R.agent_ready_ms;
	for (;;) {
		struct qrow q;
		int bound = read_qrow(&q) == 0 && R.peer_portid != 0;
		if (bound && (!R.agent_ready_log || agent_log_has(R.agent_ready_log))) {
			R.agent_ready_after = now_ms() - start;
			return 0;
		}
		if (agent_reap(0)) {
			set_error("the consumer exited before it bound queue %lu (%s %d); see its log", R.queue,
				  R.agent_signal ? "signal" : "status", R.agent_signal ? R.agent_signal : R.agent_code);
			R.agent_exited_early = 1;
			return -1;
		}
		if (now_ms() >= deadline) {
			if (bound)
				set_error("the consumer bound queue %lu but its output did not show its ready text within %lu ms",
					  R.queue, R.agent_ready_ms);
			else
				set_error("the consumer did not bind queue %lu within %lu ms", R.queue, R.agent_ready_ms);
			return -1;
		}
		if (check_stop())
			return -1;
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* SIGSTOP or SIGCONT to the consumer's process group; with SIGSTOP, waits (up to 2 s) until its
 * leader shows as stopped, so no datagram of the burst meets a consumer still reading. */
static int agent_signal_group(int sig)
{
	if (kill(-R.agent_pid, sig) != 0) {
		set_error("%s to the consumer's process group: %s", sig == SIGSTOP ? "SIGSTOP" : "SIGCONT", strerror(errno));
		return -1;
	}
	if (sig != SIGSTOP)
		return 0;
	R.agent_stopped = 1;
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)R.agent_pid);
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(path, "r");
		if (!f)
			break;
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = 0;
		char *close_paren = strrchr(buf, ')');
		if (close_paren && close_paren[1] == ' ' && (close_paren[2] == 'T' || close_paren[2] == 't'))
			return 0;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	set_error("the consumer did not stop on SIGSTOP");
	return -1;
}

/* After the stall: does the consumer still give verdicts? Fresh datagrams (sequence numbers after
 * the burst's) must all arrive *through the queue*: each takes an id (id_sequence moves by their
 * number) and no unicast to the consumer fails (its Drops stay) — with fail-open, traffic also
 * gets past a consumer that reads nothing, so arriving alone proves nothing. Then: alive; else
 * stuck; the process is gone: exited. */
static void agent_fate(void)
{
	R.fresh_queued = R.fresh_unicast_failed = -1;
	/* Up to four rounds, 250 ms apart, each of a quarter of --fate-packets: a consumer busy with
	 * the stall's backlog right after SIGCONT still counts as alive if a round gets through
	 * within the wait; the reported numbers are the last round's. */
	const int rounds = 4;
	unsigned long per = R.fate_packets / rounds ? R.fate_packets / rounds : 1, next = R.packets + 1;
	long long start = now_ms(), deadline = start + (long long)R.fate_wait_ms;
	R.fate = "stuck";
	unsigned long got = 0;
	for (int round = 0; round < rounds && next + per <= R.packets + R.fate_packets + 1 && !g_stop; round++) {
		if (agent_reap(0)) {
			R.fate = "exited";
			return;
		}
		struct qrow q0, q1;
		long long d0 = 0, d1 = 0;
		int rows = read_qrow(&q0) == 0 && read_drops(&d0) == 0;
		unsigned long received_before = R.fresh_received;
		R.fresh_sent = 0;
		for (unsigned long i = 0; i < per; i++, next++) {
			if (send_one(next) != 0)
				break;
			R.fresh_sent++;
		}
		/* rounds share the wait evenly, so the last one runs within it too */
		long long round_end = start + (long long)R.fate_wait_ms * (round + 1) / rounds;
		while (R.fresh_received - received_before < R.fresh_sent && now_ms() < round_end && !g_stop) {
			struct pollfd p = {R.udp_rx, POLLIN, 0};
			poll(&p, 1, 20);
			drain_udp();
		}
		got = R.fresh_received - received_before;
		rows = rows && read_qrow(&q1) == 0 && read_drops(&d1) == 0;
		R.fresh_queued = rows ? (long long)(q1.idseq - q0.idseq) : -1;
		R.fresh_unicast_failed = rows ? d1 - d0 : -1;
		if (agent_reap(0)) {
			R.fate = "exited";
			return;
		}
		if (rows && got == R.fresh_sent && R.fresh_queued == (long long)R.fresh_sent && R.fresh_unicast_failed == 0) {
			R.fresh_received = got;
			R.fate = "alive";
			return;
		}
		if (now_ms() >= deadline)
			break;
		while (now_ms() < round_end && !g_stop) { /* what is late of this round arrives before the next */
			struct pollfd p = {R.udp_rx, POLLIN, 0};
			poll(&p, 1, 20);
			drain_udp();
		}
	}
	R.fresh_received = got; /* the last round's, as fresh_sent is */
}

/* Stops the consumer: SIGCONT (a stalled one cannot act on a signal), its stop signal (SIGTERM
 * unless --agent-stop-signal says otherwise) to its group, SIGKILL after 5 s. */
static void agent_stop(void)
{
	if (R.agent_pid <= 0)
		return;
	if (agent_reap(0)) {
		/* its leader gone, what it started may live on in its group (PR_SET_PDEATHSIG reaches
		 * the leader only), holding the queue for the next cell; the group's id stays taken
		 * while a member lives */
		kill(-R.agent_pid, SIGKILL);
		return;
	}
	kill(-R.agent_pid, SIGCONT);
	kill(-R.agent_pid, (int)R.agent_stop_signal);
	for (int i = 0; i < 250 && !agent_reap(0); i++) {
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
	kill(-R.agent_pid, SIGKILL); /* the leader's children too, whether or not it ended */
	agent_reap(1);
}

/* The last lines of the consumer's log, for the JSON (kmatrix bounds and cleans them again). */
static void json_agent_log(void)
{
	char log[PATH_MAX], buf[2049];
	agent_log_path(log, sizeof log);
	FILE *f = fopen(log, "r");
	if (!f) {
		fputs("null", stdout);
		return;
	}
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	long from = size > 2048 ? size - 2048 : 0;
	fseek(f, from, SEEK_SET);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	for (size_t i = 0; i < n; i++)
		if (buf[i] == 0)
			buf[i] = '?'; /* json_str makes the rest valid UTF-8 */
	char *start = buf;
	if (from > 0) { /* begin at a whole line */
		char *nl = strchr(buf, '\n');
		if (nl && nl[1])
			start = nl + 1; /* a tail that is one long line keeps it, cut */
	}
	json_str(start);
}

/* ---------- phases ---------- */
/* The "before" rows: the queue's, and the Drops of the consumer's socket (ours, or the peer's). */
static int read_before(void)
{
	if (read_qrow(&R.q_before) != 0) {
		set_error("no row for queue %lu in /proc/net/netfilter/nfnetlink_queue", R.queue);
		return -1;
	}
	R.have_drops_before = read_drops(&R.drops_before) == 0;
	if (!R.have_drops_before)
		logmsg("warning: no row for portid %lu in /proc/net/netlink", R.external ? R.peer_portid : (unsigned long)R.nl_pid);
	return 0;
}

static int setup(void)
{
	/* 1. sysctl files (before setns), setns, rmem, lo, rules */
	if (R.rmem) {
		R.rmem_def_fd = open("/proc/sys/net/core/rmem_default", O_RDWR | O_CLOEXEC);
		R.rmem_max_fd = open("/proc/sys/net/core/rmem_max", O_RDWR | O_CLOEXEC);
		if (R.rmem_def_fd < 0 || R.rmem_max_fd < 0) {
			set_error("opening /proc/sys/net/core/rmem_{default,max} for writing: %s", strerror(errno));
			return -1;
		}
		if (sysctl_read(R.rmem_def_fd, &R.prev_def) != 0 || sysctl_read(R.rmem_max_fd, &R.prev_max) != 0) {
			set_error("reading net.core.rmem_default/rmem_max: %s", strerror(errno));
			return -1;
		}
	}
	if (R.netns) {
		int fd = open(R.netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			set_error("opening netns %s: %s", R.netns, strerror(errno));
			return -1;
		}
		if (setns(fd, CLONE_NEWNET) != 0) {
			set_error("setns %s: %s", R.netns, strerror(errno));
			close(fd);
			return -1;
		}
		close(fd);
	}
	if (check_stop())
		return -1;
	if (R.rmem) {
		R.rmem_touched = 1; /* from here on, every exit path restores */
		if (sysctl_write(R.rmem_max_fd, (long)R.rmem) != 0 || sysctl_write(R.rmem_def_fd, (long)R.rmem) != 0) {
			set_error("setting net.core.rmem_default/rmem_max to %lu: %s", R.rmem, strerror(errno));
			return -1;
		}
	}
	if (lo_up() != 0 || fw_install() != 0 || check_stop())
		return -1;
	if (open_sockets() != 0)
		return -1;

	if (R.external) {
		/* 2'. the user's consumer binds the queue itself, configured as it ships; a queue bound
		 * before it starts is someone else's, and would be measured in its place */
		struct qrow bound;
		if (read_qrow(&bound) == 0 && R.peer_portid != 0) {
			set_error("queue %lu is bound by portid %lu before the consumer started: another process holds it "
				  "(a consumer left from an earlier run?)", R.queue, R.peer_portid);
			return -1;
		}
		if (agent_start() != 0 || agent_wait_bound() != 0)
			return -1;
		return read_before();
	}

	/* 2. netlink socket, buffer, bind the queue */
	R.nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, KP_NETLINK_NETFILTER);
	if (R.nl_fd < 0) {
		set_error("netlink socket: %s", strerror(errno));
		return -1;
	}
	if (R.rcvbuf_mode != RB_DEFAULT) {
		int v = (int)R.rcvbuf;
		int opt = R.rcvbuf_mode == RB_FORCE ? SO_RCVBUFFORCE : SO_RCVBUF;
		if (setsockopt(R.nl_fd, SOL_SOCKET, opt, &v, sizeof v) != 0) {
			set_error("netlink %s %d: %s", R.rcvbuf_mode == RB_FORCE ? "SO_RCVBUFFORCE" : "SO_RCVBUF", v,
				  strerror(errno));
			return -1;
		}
	}
	struct kp_sockaddr_nl sa = {AF_NETLINK, 0, 0, 0};
	if (bind(R.nl_fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		set_error("netlink bind: %s", strerror(errno));
		return -1;
	}
	socklen_t sl = sizeof sa;
	if (getsockname(R.nl_fd, (struct sockaddr *)&sa, &sl) != 0) {
		set_error("netlink getsockname: %s", strerror(errno));
		return -1;
	}
	R.nl_pid = sa.nl_pid;
	int eff = 0;
	sl = sizeof eff;
	if (getsockopt(R.nl_fd, SOL_SOCKET, SO_RCVBUF, &eff, &sl) == 0)
		R.rcvbuf_eff = eff;
	R.seq = (uint32_t)time(NULL);
	/* obsolete since 3.8 (no-ops): sent for older kernels, errors ignored */
	int e = nfq_cmd_only(KP_NFQNL_CFG_CMD_PF_UNBIND, AF_INET);
	if (e && e != EINTR)
		logmsg("PF_UNBIND: %s (ignored)", strerror(e));
	e = nfq_cmd_only(KP_NFQNL_CFG_CMD_PF_BIND, AF_INET);
	if (e && e != EINTR)
		logmsg("PF_BIND: %s (ignored)", strerror(e));
	if (check_stop())
		return -1;
	e = nfq_bind();
	if (e) {
		if (!R.error[0])
			set_error("binding queue %lu (BIND+PARAMS+MAXLEN%s): %s%s", R.queue,
				  R.fail_open ? "+FLAGS/MASK" : "", strerror(e),
				  (e == EPERM || e == EBUSY) ? " (queue already bound by another process?)" : "");
		return -1;
	}
	R.nl_bound = 1;

	/* 3. "before" rows */
	return read_before();
}

static int tcp_probes(void)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)(R.port + 1));
	for (unsigned long i = 0; i < R.tcp_probes; i++) {
		if (check_stop())
			return -1;
		int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (c < 0) {
			set_error("tcp socket: %s", strerror(errno));
			return -1;
		}
		long long start = now_ms(), deadline = start + (long long)R.tcp_timeout_ms;
		int ok = 0, done = 0, err = 0;
		if (connect(c, (struct sockaddr *)&a, sizeof a) == 0) {
			ok = done = 1;
		} else if (errno != EINPROGRESS) {
			err = errno;
			done = 1;
		}
		while (!done) {
			long long rem = deadline - now_ms();
			if (rem <= 0)
				break;
			struct pollfd p[4] = {{c, POLLOUT, 0},
					      {R.tcp_lis, POLLIN, 0},
					      {R.udp_rx, POLLIN, 0},
					      {R.nl_fd, R.live ? POLLIN : 0, 0}};
			poll(p, 4, (int)rem);
			if (check_stop()) {
				close(c);
				return -1;
			}
			if (p[0].revents) {
				socklen_t sl = sizeof err;
				getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &sl);
				ok = err == 0;
				done = 1;
			}
			if (service() != 0) {
				close(c);
				return -1;
			}
		}
		close(c);
		R.tcp_attempted++;
		if (ok)
			R.tcp_succeeded++;
		logmsg("tcp probe %lu: %s after %lld ms", i + 1,
		       ok ? "connected" : (done ? strerror(err) : "timed out"), now_ms() - start);
		accept_drain();
	}
	return 0;
}

static int settle(void)
{
	long long last = now_ms();
	for (;;) {
		if (check_stop())
			return -1;
		unsigned long before = R.received + R.messages_read;
		drain_udp();
		accept_drain();
		if (nl_pump() != 0)
			return -1;
		if (R.received + R.messages_read != before)
			last = now_ms();
		if (R.received >= R.sent)
			return nl_pump();
		long long rem = (long long)R.settle_ms - (now_ms() - last);
		if (rem <= 0)
			return 0;
		struct pollfd p[3] = {{R.nl_fd, POLLIN, 0}, {R.udp_rx, POLLIN, 0}, {R.tcp_lis, POLLIN, 0}};
		poll(p, R.tcp_lis >= 0 ? 3 : 2, (int)rem);
	}
}

/* Sends datagrams `next`..packets while nobody reads the queue (a stalled consumer, or ours
 * paused), draining the receiver as it goes so only the queue and the socket fill, then the
 * TCP probes that ask whether connections pass behind it. */
static int send_burst_unread(unsigned long next)
{
	for (; next <= R.packets; next++) {
		if (check_stop() || send_one(next) != 0)
			return -1;
		if ((next & 63) == 0)
			drain_udp();
	}
	drain_udp();
	return R.tcp_probes ? tcp_probes() : 0;
}

static int measure_external(void)
{
	if (agent_signal_group(SIGSTOP) != 0)
		return -1;
	if (send_burst_unread(1) != 0)
		return -1;
	/* what went past the stalled consumer (fail-open) arrived by now; the rest waits in the queue */
	settle();
	if (read_qrow(&R.q_paused) != 0)
		logmsg("warning: queue row vanished while the consumer was stalled");
	R.received_stalled = R.received;
	R.have_drops_after = read_drops(&R.drops_after) == 0;
	if (agent_signal_group(SIGCONT) != 0)
		return -1;
	R.agent_stopped = 0;
	settle();
	/* "after": the row goes when the consumer closes its socket (exits). The netlink drops stay
	 * those read at the stall's end, the window the queue's paused row covers: the classifier
	 * compares the two. */
	read_qrow(&R.q_after);
	if (R.sent && R.q_paused.ok && R.q_paused.idseq == R.q_before.idseq && R.q_paused.total == 0)
		set_error("no packet reached queue %lu (id_sequence did not move): the NFQUEUE rule was not hit", R.queue);
	agent_fate();
	return R.error[0] ? -1 : 0;
}

static int measure(void)
{
	unsigned long next = 1;
	if (R.external)
		return measure_external();
	if (R.live) {
		/* send until the window is full (no window: the whole burst), then let the consumer
		 * read and ACCEPT what is queued; repeat */
		unsigned long given_up = 0, seen = 0;
		long long last_progress = now_ms();
		long stall_ms = R.settle_ms > 200 ? (long)R.settle_ms : 200;
		while (next <= R.packets) {
			if (check_stop())
				return -1;
			long inflight = (long)(R.sent - R.received - given_up);
			if (R.pace_window == 0 || inflight < (long)R.pace_window) {
				while (next <= R.packets && (R.pace_window == 0 || inflight < (long)R.pace_window)) {
					if (send_one(next++) != 0)
						return -1;
					inflight++;
				}
				if (service() != 0)
					return -1;
				continue;
			}
			struct pollfd p[2] = {{R.nl_fd, POLLIN, 0}, {R.udp_rx, POLLIN, 0}};
			poll(p, 2, 20);
			if (service() != 0)
				return -1;
			if (R.received + R.messages_read != seen) {
				seen = R.received + R.messages_read;
				last_progress = now_ms();
			} else if (now_ms() - last_progress > stall_ms) {
				/* datagrams that never arrive (dropped) must not hold the window forever */
				given_up = R.sent - R.received;
				last_progress = now_ms();
				logmsg("pacing: %ld datagrams in flight for %ld ms, treating them as gone", inflight, stall_ms);
			}
		}
		if (R.tcp_probes && tcp_probes() != 0)
			return -1;
	} else {
		/* paused: the consumer reads nothing until every datagram was sent */
		if (send_burst_unread(next) != 0)
			return -1;
		if (read_qrow(&R.q_paused) != 0)
			logmsg("warning: queue row vanished while paused");
		/* resume: read until EAGAIN, counting ENOBUFS, ACCEPT every packet */
		if (nl_pump() != 0)
			return -1;
	}
	if (settle() != 0)
		return -1;
	/* "after" while the socket is still bound (closing it destroys the queue) */
	if (read_qrow(&R.q_after) != 0)
		set_error("queue %lu row missing after the run", R.queue);
	else if (R.sent && R.q_after.idseq == R.q_before.idseq && R.messages_read == 0)
		set_error("no packet reached queue %lu (id_sequence did not move): the NFQUEUE rule was not hit",
			  R.queue);
	R.have_drops_after = read_drops(&R.drops_after) == 0;
	return R.error[0] ? -1 : 0;
}

static void cleanup(void)
{
	if (R.external)
		agent_stop();
	if (R.nl_fd >= 0) {
		if (R.nl_bound && !R.q_after.ok) {
			read_qrow(&R.q_after);
			if (!R.external)
				R.have_drops_after = read_drops(&R.drops_after) == 0;
		}
		close(R.nl_fd);
		R.nl_fd = -1;
	}
	if (R.tcp_lis >= 0)
		close(R.tcp_lis);
	if (R.udp_tx >= 0)
		close(R.udp_tx);
	if (R.udp_rx >= 0)
		close(R.udp_rx);
	R.tcp_lis = R.udp_tx = R.udp_rx = -1;
	fw_remove();
	rmem_restore();
	if (R.rmem_def_fd >= 0)
		close(R.rmem_def_fd);
	if (R.rmem_max_fd >= 0)
		close(R.rmem_max_fd);
}

/* ---------- output ---------- */
static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else if (c >= 0x7f)
			putchar('?'); /* valid UTF-8 whatever a path, a log or a cut message held */
		else
			putchar(c);
	}
	putchar('"');
}

static void json_qrow(const char *key, const struct qrow *q, int show)
{
	printf("  \"%s\": ", key);
	if (show && q->ok)
		printf("{\"queue_total\": %llu, \"queue_dropped\": %llu, \"queue_user_dropped\": %llu, \"id_sequence\": %llu},\n",
		       q->total, q->dropped, q->user_dropped, q->idseq);
	else
		fputs("null,\n", stdout);
}

static void print_json(void)
{
	printf("{\n  \"probe\": 1,\n  \"kernel\": ");
	json_str(R.kernel[0] ? R.kernel : NULL);
	printf(",\n  \"firewall\": ");
	json_str(R.fw_used);
	printf(",\n  \"params\": {\"queue\": %lu, \"port\": %lu, \"packets\": %lu, \"payload\": %lu, \"maxlen\": %lu,\n"
	       "             \"copy_range\": %lu, \"fail_open\": %d, \"rcvbuf_mode\": \"%s\", \"rcvbuf\": %lu,\n"
	       "             \"consumer\": \"%s\", \"pace_window\": %lu, \"rmem\": %lu, \"tcp_probes\": %lu},\n",
	       R.queue, R.port, R.packets, R.payload, R.maxlen, R.copy_range, R.fail_open, rb_names[R.rcvbuf_mode],
	       R.rcvbuf, R.external ? "external" : R.live ? "live" : "paused", R.pace_window, R.rmem, R.tcp_probes);
	printf("  \"rcvbuf_effective\": %ld,\n", R.rcvbuf_eff);
	printf("  \"sent\": %lu,\n  \"received\": %lu,\n  \"lost\": %lu,\n  \"lost_ranges\": [", R.sent, R.received,
	       R.sent - R.received);
	int nr = 0;
	if (R.st) {
		for (unsigned long s = 1; s <= R.packets && nr < MAX_RANGES; s++) {
			if ((R.st[s] & (ST_SENT | ST_RECV)) != ST_SENT)
				continue;
			unsigned long e = s;
			while (e + 1 <= R.packets && (R.st[e + 1] & (ST_SENT | ST_RECV)) == ST_SENT)
				e++;
			printf("%s[%lu, %lu]", nr ? ", " : "", s, e);
			nr++;
			s = e;
		}
	}
	printf("],\n  \"messages_read\": %lu,\n  \"verdicts\": %lu,\n  \"enobufs\": %lu,\n", R.messages_read, R.verdicts,
	       R.enobufs);
	json_qrow("queue_before", &R.q_before, 1);
	json_qrow("queue_paused", &R.q_paused, !R.live);
	json_qrow("queue_after", &R.q_after, 1);
	if (R.have_drops_before)
		printf("  \"netlink_drops_before\": %lld,\n", R.drops_before);
	else
		printf("  \"netlink_drops_before\": null,\n");
	if (R.have_drops_after)
		printf("  \"netlink_drops_after\": %lld,\n", R.drops_after);
	else
		printf("  \"netlink_drops_after\": null,\n");
	printf("  \"tcp\": {\"attempted\": %lu, \"succeeded\": %lu},\n", R.tcp_attempted, R.tcp_succeeded);
	if (R.rmem && (R.prev_def || R.prev_max))
		printf("  \"rmem\": {\"set\": %lu, \"previous_default\": %ld, \"previous_max\": %ld, \"restored\": %s},\n",
		       R.rmem, R.prev_def, R.prev_max, R.rmem_restored ? "true" : "false");
	else
		printf("  \"rmem\": null,\n");
	if (R.external) {
		printf("  \"agent\": {\"pid\": %d, \"peer_portid\": %lu, \"ready_ms\": %lld, \"exited_early\": %s,\n"
		       "            \"received_while_stalled\": %lu, \"fresh_sent\": %lu, \"fresh_received\": %lu,\n",
		       (int)R.agent_pid, R.peer_portid, R.agent_ready_after, R.agent_exited_early ? "true" : "false",
		       R.received_stalled, R.fresh_sent, R.fresh_received);
		printf("            \"fresh_queued\": ");
		if (R.fresh_queued >= 0)
			printf("%lld", R.fresh_queued);
		else
			fputs("null", stdout);
		printf(", \"fresh_unicast_failed\": ");
		if (R.fresh_unicast_failed >= 0)
			printf("%lld", R.fresh_unicast_failed);
		else
			fputs("null", stdout);
		printf(", \"fate\": ");
		json_str(R.fate);
		printf(", \"exit_status\": ");
		if (R.agent_done && !R.agent_signal)
			printf("%d", R.agent_code);
		else
			fputs("null", stdout);
		printf(", \"exit_signal\": ");
		if (R.agent_done && R.agent_signal)
			printf("%d", R.agent_signal);
		else
			fputs("null", stdout);
		printf(",\n            \"log_tail\": ");
		if (R.agent_pid > 0)
			json_agent_log();
		else
			fputs("null", stdout);
		printf("},\n");
	} else {
		printf("  \"agent\": null,\n");
	}
	printf("  \"duration_ms\": %lld,\n  \"error\": ", now_ms() - R.t0);
	json_str(R.error[0] ? R.error : NULL);
	printf("\n}\n");
	fflush(stdout);
}

/* ---------- command line ---------- */
static void usage(FILE *f)
{
	fputs("usage: kmatrix-probe [--queue N] [--port N] [--packets N] [--payload N] [--maxlen N]\n"
	      "         [--copy-range N] [--fail-open 0|1] [--rcvbuf-mode default|plain|force] [--rcvbuf N]\n"
	      "         [--consumer live|paused|external] [--pace-window N] [--rmem N] [--tcp-probes N]\n"
	      "         [--tcp-timeout-ms N] [--netns PATH]\n"
	      "         [--firewall auto|iptables-legacy|iptables|iptables-nft|nft|none] [--settle-ms N]\n"
	      "         [--agent-dir DIR] [--agent-ready-ms N] [--agent-ready-log TEXT] [--fate-packets N] [--fate-wait-ms N]\n"
	      "         [--agent-stop-signal N]\n"
	      "         [-- CONSUMER ARGV...]   (--consumer external: the consumer to start, stall and resume)\n"
	      "Prints one JSON object on stdout (see docs/probe.md). Exit 0 measured, 1 failure, 2 usage.\n",
	      f);
}

static int parse_num(const char *opt, const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-') {
		set_error("%s: expected a number, got '%s'", opt, s ? s : "");
		return -1;
	}
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		set_error("%s: expected a number in %lu..%lu, got '%s'", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{"queue", 1, 0, 'q'},	     {"port", 1, 0, 'p'},	     {"packets", 1, 0, 'n'},
		{"payload", 1, 0, 'l'},	     {"maxlen", 1, 0, 'm'},	     {"copy-range", 1, 0, 'c'},
		{"fail-open", 1, 0, 'f'},    {"rcvbuf-mode", 1, 0, 'M'},     {"rcvbuf", 1, 0, 'r'},
		{"consumer", 1, 0, 'C'},     {"pace-window", 1, 0, 'w'},     {"rmem", 1, 0, 'R'},
		{"tcp-probes", 1, 0, 't'},   {"tcp-timeout-ms", 1, 0, 'T'}, {"netns", 1, 0, 'N'},
		{"firewall", 1, 0, 'F'},     {"settle-ms", 1, 0, 's'},	     {"help", 0, 0, 'h'},
		{"agent-dir", 1, 0, 'D'},    {"agent-ready-ms", 1, 0, 'A'}, {"fate-packets", 1, 0, 'P'},
		{"fate-wait-ms", 1, 0, 'W'}, {"agent-stop-signal", 1, 0, 'S'}, {"agent-ready-log", 1, 0, 'L'},
		{0, 0, 0, 0}};
	unsigned long v;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *name = NULL;
		for (int i = 0; opts[i].name; i++)
			if (opts[i].val == c)
				name = opts[i].name;
		char optname[32];
		snprintf(optname, sizeof optname, "--%s", name ? name : "?");
		switch (c) {
		case 'q': if (parse_num(optname, optarg, 0, 65535, &R.queue)) return -1; break;
		case 'p': if (parse_num(optname, optarg, 1, 65534, &R.port)) return -1; break;
		case 'n': if (parse_num(optname, optarg, 1, 10000000, &R.packets)) return -1; break;
		case 'l': if (parse_num(optname, optarg, 8, 65507, &R.payload)) return -1; break;
		case 'm': if (parse_num(optname, optarg, 1, UINT32_MAX, &R.maxlen)) return -1; break;
		case 'c': if (parse_num(optname, optarg, 0, 65535, &R.copy_range)) return -1; break;
		case 'f': if (parse_num(optname, optarg, 0, 1, &v)) return -1; R.fail_open = (int)v; break;
		case 'r': if (parse_num(optname, optarg, 0, INT_MAX, &R.rcvbuf)) return -1; break;
		case 'w': if (parse_num(optname, optarg, 0, 10000000, &R.pace_window)) return -1; break;
		case 'R': if (parse_num(optname, optarg, 1, INT_MAX, &R.rmem)) return -1; break;
		case 't': if (parse_num(optname, optarg, 0, 100000, &R.tcp_probes)) return -1; break;
		case 'T': if (parse_num(optname, optarg, 1, 600000, &R.tcp_timeout_ms)) return -1; break;
		case 's': if (parse_num(optname, optarg, 0, 600000, &R.settle_ms)) return -1; break;
		case 'N': R.netns = optarg; break;
		case 'D': R.agent_dir = optarg; break;
		case 'L': R.agent_ready_log = *optarg ? optarg : NULL; break;
		case 'A': if (parse_num(optname, optarg, 100, 600000, &R.agent_ready_ms)) return -1; break;
		case 'P': if (parse_num(optname, optarg, 1, 10000, &R.fate_packets)) return -1; break;
		case 'W': if (parse_num(optname, optarg, 100, 600000, &R.fate_wait_ms)) return -1; break;
		case 'S': if (parse_num(optname, optarg, 1, 64, &R.agent_stop_signal)) return -1; break;
		case 'M':
			for (v = 0; v < 3 && strcmp(optarg, rb_names[v]); v++)
				;
			if (v == 3) {
				set_error("--rcvbuf-mode: expected default, plain or force, got '%s'", optarg);
				return -1;
			}
			R.rcvbuf_mode = (int)v;
			break;
		case 'C':
			R.live = R.external = 0;
			if (!strcmp(optarg, "live"))
				R.live = 1;
			else if (!strcmp(optarg, "external"))
				R.external = 1;
			else if (strcmp(optarg, "paused")) {
				set_error("--consumer: expected live, paused or external, got '%s'", optarg);
				return -1;
			}
			break;
		case 'F':
			for (v = 0; v <= FW_NONE && strcmp(optarg, fw_names[v]); v++)
				;
			if (v > FW_NONE) {
				set_error("--firewall: expected auto, iptables-legacy, iptables, iptables-nft, nft or none, got '%s'",
					  optarg);
				return -1;
			}
			R.firewall = (int)v;
			break;
		case 'h': usage(stderr); exit(0);
		default:
			set_error("unknown option or missing value: %s", argv[optind - 1] ? argv[optind - 1] : "?");
			return -1;
		}
	}
	if (R.external) {
		/* getopt_long stops at "--": everything after it is the consumer's argv, untouched */
		if (optind >= argc || !argv[optind][0] || argv[optind][0] != '/') {
			set_error("--consumer external needs the consumer's command after --, starting with an absolute path");
			return -1;
		}
		if (!R.agent_dir || R.agent_dir[0] != '/') {
			set_error("--consumer external needs --agent-dir with an absolute path");
			return -1;
		}
		R.agent_argv = argv + optind;
	} else if (optind < argc) {
		set_error("unexpected argument: %s", argv[optind]);
		return -1;
	}
	if (R.rcvbuf_mode != RB_DEFAULT && R.rcvbuf == 0) {
		set_error("--rcvbuf-mode %s needs --rcvbuf N", rb_names[R.rcvbuf_mode]);
		return -1;
	}
	if (R.tcp_probes && R.port + 1 > 65535) {
		set_error("--port %lu leaves no room for the TCP listener on PORT+1", R.port);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	R.t0 = now_ms();
	R.queue = 4242;
	R.port = 4243;
	R.packets = 2000;
	R.payload = 64;
	R.maxlen = 1024;
	R.copy_range = 65535;
	R.tcp_timeout_ms = 1000;
	R.settle_ms = 500;
	R.agent_ready_ms = 30000;
	R.fate_packets = 20;
	R.fate_wait_ms = 2000;
	R.agent_stop_signal = SIGTERM;
	R.fresh_queued = R.fresh_unicast_failed = -1;
	R.firewall = FW_AUTO;
	R.fw_kind = FW_NONE;
	R.nl_fd = R.udp_rx = R.udp_tx = R.tcp_lis = R.rmem_def_fd = R.rmem_max_fd = -1;

	struct utsname u;
	if (uname(&u) == 0)
		snprintf(R.kernel, sizeof R.kernel, "%s", u.release);

	if (parse_args(argc, argv) != 0) {
		usage(stderr);
		print_json();
		return 2;
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: blocking calls return EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* iptables/nft usually live in sbin, which a non-login shell over SSH may lack */
	const char *path = getenv("PATH");
	char newpath[4096];
	snprintf(newpath, sizeof newpath, "%s%s/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		 path && *path ? path : "", path && *path ? ":" : "");
	setenv("PATH", newpath, 1);

	R.st = calloc(R.packets + R.fate_packets + 2, 1);
	R.pkt = calloc(R.payload, 1);
	if (!R.st || !R.pkt) {
		set_error("out of memory");
	} else {
		for (unsigned long i = 8; i < R.payload; i++)
			R.pkt[i] = (unsigned char)('a' + i % 26);
		memcpy(R.pkt + 4, MAGIC, 4);
		if (setup() == 0)
			measure();
	}
	cleanup();
	logmsg("summary: sent=%lu received=%lu messages_read=%lu verdicts=%lu enobufs=%lu stray_datagrams=%lu "
	       "send_errors=%lu verdict_errors=%lu netlink_errors=%lu",
	       R.sent, R.received, R.messages_read, R.verdicts, R.enobufs, R.dups, R.send_errors, R.verdict_errors,
	       R.nl_errors);
	print_json();
	return R.error[0] ? 1 : 0;
}
