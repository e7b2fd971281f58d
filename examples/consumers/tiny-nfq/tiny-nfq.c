/*
 * tiny-nfq: a minimal NFQUEUE consumer that ACCEPTs every packet, configured by a key=value
 * file, as kmatrix's example of a user's own consumer given as a static binary plus a config
 * (README, "Judge your own consumer"). Not part of kmatrix: kmatrix deploys, starts, stalls and
 * judges it like any other consumer.
 *
 *   tiny-nfq CONFIG QUEUE
 *
 * CONFIG keys (defaults in brackets): maxlen [1024], rcvbuf [0: the kernel's default; else
 * SO_RCVBUFFORCE bytes], fail_open [1], no_enobufs [0: set NETLINK_NO_ENOBUFS],
 * on_enobufs [continue|exit|hang: stop reading, as a wedged agent], bind [1; 0 never binds the
 * queue, to test a consumer that never gets ready].
 * Build: musl-gcc -static -Os -o tiny-nfq tiny-nfq.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NETLINK_NETFILTER 12
#define NETLINK_NO_ENOBUFS 5
#define SOL_NETLINK 270
#define SO_RCVBUFFORCE_ 33
#define QUEUE_MSG(t) ((3 << 8) | (t)) /* NFNL_SUBSYS_QUEUE */

struct nlh { uint32_t len; uint16_t type, flags; uint32_t seq, pid; };
struct nfg { uint8_t family, version; uint16_t res_id; };
struct nla { uint16_t len, type; };

static unsigned maxlen = 1024, rcvbuf, fail_open = 1, no_enobufs, do_bind = 1;
static const char *on_enobufs = "continue";
static char on_enobufs_word[64];
static char buf[1 << 17];

static void put_attr(char *msg, uint16_t type, const void *data, uint16_t len)
{
	struct nlh *h = (struct nlh *)msg;
	struct nla *a = (struct nla *)(msg + h->len);
	a->len = sizeof *a + len;
	a->type = type;
	memcpy(a + 1, data, len);
	h->len += (a->len + 3) & ~3u;
}

static int send_msg(int fd, char *msg)
{
	return send(fd, msg, ((struct nlh *)msg)->len, 0) < 0 ? -1 : 0;
}

static char *start_msg(char *msg, uint8_t type, uint16_t queue, uint16_t flags)
{
	memset(msg, 0, 256);
	struct nlh *h = (struct nlh *)msg;
	struct nfg *g = (struct nfg *)(h + 1);
	h->len = sizeof *h + sizeof *g;
	h->type = QUEUE_MSG(type);
	h->flags = 1 | flags; /* NLM_F_REQUEST */
	g->family = AF_UNSPEC;
	g->res_id = htons(queue);
	return msg;
}

static void read_config(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256], key[64];
	unsigned value;
	char word[64];
	if (!f) {
		perror(path);
		exit(2);
	}
	while (fgets(line, sizeof line, f)) {
		if (sscanf(line, " %63[a-z_] = %u", key, &value) == 2) {
			if (!strcmp(key, "maxlen")) maxlen = value;
			else if (!strcmp(key, "rcvbuf")) rcvbuf = value;
			else if (!strcmp(key, "fail_open")) fail_open = value;
			else if (!strcmp(key, "no_enobufs")) no_enobufs = value;
			else if (!strcmp(key, "bind")) do_bind = value;
		} else if (sscanf(line, " on_enobufs = %15s", word) == 1) {
			snprintf(on_enobufs_word, sizeof on_enobufs_word, "%s", word);
			on_enobufs = on_enobufs_word;
		}
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: tiny-nfq CONFIG QUEUE\n");
		return 2;
	}
	read_config(argv[1]);
	uint16_t queue = (uint16_t)atoi(argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("tiny-nfq: queue %u maxlen %u rcvbuf %u fail_open %u no_enobufs %u on_enobufs %s\n", queue, maxlen, rcvbuf,
	       fail_open, no_enobufs, on_enobufs);
	if (!do_bind) {
		puts("tiny-nfq: bind = 0, not binding the queue");
		for (;;)
			pause();
	}
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
	struct { unsigned short family, pad; uint32_t pid, groups; } sa = {AF_NETLINK, 0, 0, 0};
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		perror("netlink");
		return 1;
	}
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE_, &rcvbuf, sizeof rcvbuf);
	int one = 1;
	if (no_enobufs)
		setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
	char msg[256];
	uint8_t cmd[4] = {1, 0, 0, 0}; /* NFQNL_CFG_CMD_BIND */
	uint8_t params[5] = {0, 0, 0xff, 0xff, 2}; /* copy range 65535, NFQNL_COPY_PACKET */
	uint32_t len = htonl(maxlen), flags = htonl(fail_open ? 1 : 0), mask = htonl(1);
	start_msg(msg, 2, queue, 0);
	put_attr(msg, 1, cmd, sizeof cmd);
	put_attr(msg, 2, params, sizeof params);
	put_attr(msg, 3, &len, sizeof len);
	put_attr(msg, 5, &flags, sizeof flags);
	put_attr(msg, 4, &mask, sizeof mask);
	if (send_msg(fd, msg) < 0) {
		perror("bind queue");
		return 1;
	}
	unsigned long accepted = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			printf("tiny-nfq: recv: %s (after %lu verdicts)\n", strerror(errno), accepted);
			if (errno != ENOBUFS || !strcmp(on_enobufs, "exit"))
				return 1;
			if (!strcmp(on_enobufs, "hang")) {
				puts("tiny-nfq: on_enobufs = hang, reading no more");
				for (;;)
					pause();
			}
			continue;
		}
		for (struct nlh *h = (struct nlh *)buf; n >= (ssize_t)sizeof *h && h->len >= sizeof *h && h->len <= (size_t)n;
		     n -= (h->len + 3) & ~3u, h = (struct nlh *)((char *)h + ((h->len + 3) & ~3u))) {
			if (h->type != QUEUE_MSG(0)) /* NFQNL_MSG_PACKET */
				continue;
			struct nla *a = (struct nla *)((char *)(h + 1) + sizeof(struct nfg));
			if (a->type != 1) /* NFQA_PACKET_HDR comes first */
				continue;
			uint32_t id;
			memcpy(&id, a + 1, 4);
			struct { uint32_t verdict, id; } v = {htonl(1), id}; /* NF_ACCEPT */
			start_msg(msg, 1, queue, 0);
			put_attr(msg, 2, &v, sizeof v); /* NFQA_VERDICT_HDR */
			if (send_msg(fd, msg) == 0)
				accepted++;
		}
	}
}
