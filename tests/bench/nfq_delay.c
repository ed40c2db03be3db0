/* nfq_delay.c - hold every packet of one NFQUEUE for a fixed time, then accept it.
 *
 * A stand-in for `tc qdisc ... netem delay` on kernels built without sch_netem (this
 * machine's: CONFIG_NET_SCH_NETEM is not set and modules cannot be loaded).  delivery.sh
 * runs it inside the sinks' network namespace, where nft rules send the namespace's veth
 * traffic (both directions) to the queue, so each direction gets DELAY_MS: 2 x DELAY_MS
 * round trip, for the sink addresses only.
 *
 * Usage: nfq_delay QUEUE_NUM DELAY_MS [READY_FILE]
 * The delay is constant, so packets leave in arrival order: a FIFO of (id, due time) and a
 * batch verdict (NF_ACCEPT for every id up to the last due one) per wake-up.  Only packet
 * metadata is copied to user space (NFQNL_COPY_META), GSO packets are taken whole.  No
 * fail-open: if this process dies, queued traffic is dropped (the benchmark then times out
 * rather than measuring without the delay).  SIGTERM/SIGINT: accept what is held, exit.
 * Build: gcc -O2 -o nfq_delay nfq_delay.c -lnetfilter_queue -lnfnetlink   (libnetfilter-queue-dev)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#define RING (1u << 16) /* packets held at once; the queue's kernel limit is set below it */

static uint32_t ids[RING];
static uint64_t due[RING];
static uint32_t head, tail; /* tail - head = held */
static uint64_t delay_ns;
static uint64_t held_max, dropped;
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data) {
    (void)msg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (tail - head >= RING) { /* cannot hold more: let it through now (counted) */
        dropped++;
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    }
    ids[tail % RING] = id;
    due[tail % RING] = now_ns() + delay_ns;
    tail++;
    if (tail - head > held_max)
        held_max = tail - head;
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

/* Accept every held packet that is due (all of them when `all`). */
static void release(struct nfq_q_handle *qh, int all) {
    uint64_t t = now_ns();
    uint32_t last = head;
    while (last != tail && (all || due[last % RING] <= t))
        last++;
    if (last == head)
        return;
    /* Batch verdict: every id <= the given one.  Ids grow by one per queued packet and the
     * FIFO keeps their order, so this is exactly the due prefix. */
    if (nfq_set_verdict_batch(qh, ids[(last - 1) % RING], NF_ACCEPT) < 0)
        perror("nfq_set_verdict_batch");
    head = last;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s QUEUE_NUM DELAY_MS [READY_FILE]\n", argv[0]);
        return 2;
    }
    int qnum = atoi(argv[1]);
    delay_ns = (uint64_t)(atof(argv[2]) * 1e6);
    struct nfq_handle *h = nfq_open();
    if (!h) {
        perror("nfq_open");
        return 1;
    }
    struct nfq_q_handle *qh = nfq_create_queue(h, qnum, &on_packet, NULL);
    if (!qh) {
        perror("nfq_create_queue");
        return 1;
    }
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) {
        perror("nfq_set_mode");
        return 1;
    }
    nfq_set_queue_maxlen(qh, RING - 1024);
    nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 8 << 20);
    int fd = nfq_fd(h);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (argc > 3) {
        FILE *f = fopen(argv[3], "w");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        }
    }
    char buf[65536] __attribute__((aligned));
    while (!stopping) {
        struct timespec ts, *tsp = NULL;
        if (head != tail) {
            uint64_t t = now_ns(), d = due[head % RING];
            uint64_t wait = d > t ? d - t : 0;
            ts.tv_sec = (time_t)(wait / 1000000000ull);
            ts.tv_nsec = (long)(wait % 1000000000ull);
            tsp = &ts;
        } else {
            ts.tv_sec = 1; /* wake now and then to notice a signal */
            ts.tv_nsec = 0;
            tsp = &ts;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = ppoll(&p, 1, tsp, NULL);
        if (n > 0 && (p.revents & POLLIN)) {
            for (;;) { /* drain what is readable without blocking */
                ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (r > 0) {
                    nfq_handle_packet(h, buf, (int)r);
                    continue;
                }
                if (r < 0 && errno == ENOBUFS) {
                    fprintf(stderr, "nfq_delay: ENOBUFS (packets lost to user space)\n");
                    continue;
                }
                break;
            }
        } else if (n < 0 && errno != EINTR) {
            perror("ppoll");
            break;
        }
        release(qh, 0);
    }
    release(qh, 1);
    fprintf(stderr, "nfq_delay: exit, max held %llu, passed undelayed %llu\n",
            (unsigned long long)held_max, (unsigned long long)dropped);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
