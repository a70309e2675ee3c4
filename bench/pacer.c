/* A paced UDP sender for bench/live_bench.py: not Python, so that the sender is never
 * the bottleneck of the figure it measures.
 *
 *   pacer FILE HOST PORT RATE COUNT
 *
 * FILE holds datagrams, each a native uint32 length then the bytes.  The first COUNT of
 * them (cycling through the file if it holds fewer) are sent to HOST:PORT at RATE
 * datagrams per second, in sendmmsg(2) batches of up to 32 on an absolute schedule
 * (clock_nanosleep), so a late batch is caught up rather than lost from the rate.
 * Prints "sent N datagrams, B bytes in S seconds" on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: pacer FILE HOST PORT RATE COUNT\n");
        return 2;
    }
    int in = open(argv[1], O_RDONLY);
    struct stat st;
    if (in < 0 || fstat(in, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    const unsigned char *data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, in, 0);
    if (data == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    size_t cap = 1 << 20, n = 0;
    size_t *off = malloc(cap * sizeof *off);
    uint32_t *len = malloc(cap * sizeof *len);
    for (size_t p = 0; p + 4 <= (size_t)st.st_size;) {
        uint32_t l;
        memcpy(&l, data + p, 4);
        if (p + 4 + l > (size_t)st.st_size)
            break;
        if (n == cap) {
            cap *= 2;
            off = realloc(off, cap * sizeof *off);
            len = realloc(len, cap * sizeof *len);
        }
        off[n] = p + 4;
        len[n] = l;
        n++;
        p += 4 + l;
    }
    if (n == 0) {
        fprintf(stderr, "%s: no datagrams\n", argv[1]);
        return 1;
    }
    double rate = atof(argv[4]);
    long count = atol(argv[5]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &to.sin_addr) != 1 || connect(fd, (void *)&to, sizeof to) < 0) {
        perror("connect");
        return 1;
    }
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    long sent = 0;
    unsigned long long bytes = 0;
    double t0 = now();
    while (sent < count) {
        int b = count - sent < BATCH ? (int)(count - sent) : BATCH;
        for (int k = 0; k < b; k++) {
            size_t i = (size_t)(sent + k) % n;
            iov[k].iov_base = (void *)(data + off[i]);
            iov[k].iov_len = len[i];
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            bytes += len[i];
        }
        int done = 0;
        while (done < b) {
            int r = sendmmsg(fd, msgs + done, b - done, 0);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS)
                    continue;
                perror("sendmmsg");
                return 1;
            }
            done += r;
        }
        sent += b;
        double due = t0 + sent / rate;
        double ahead = due - now();
        if (ahead > 0) {
            struct timespec ts = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    printf("sent %ld datagrams, %llu bytes in %.6f seconds\n", sent, bytes, now() - t0);
    return 0;
}
