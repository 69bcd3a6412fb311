/*
 * plainnet CNI plugin: a thin client that hands the CNI request to the node's plainnet
 * agent and relays its answer.
 *
 * Why C: a CNI plugin is a fresh process per pod and command. Measured on this kind of
 * machine, this binary starts in ~0.5 ms; `python3 -S -E` with json and socket takes
 * ~15 ms, pyroute2 another ~150 ms; the reference plugins (Go) take ~2 ms. All the work
 * — IPAM, netlink, nftables — happens in the agent, which is already running and warm.
 *
 * Wire format on the abstract unix socket "@plainnet-cni" of the caller's network
 * namespace (the node's; a runtime calls plugins from the host namespace): the CNI_*
 * environment as NUL-terminated "KEY=value" strings, one empty string, then the network
 * configuration from stdin; the write side is then shut down. The answer is the exit
 * code in ASCII and a newline, then what the plugin prints on stdout.
 *
 * VERSION is answered here, so a runtime can probe the plugin while the agent is down;
 * any other command without an agent fails with CNI error 11 ("try again later").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The protocol's constants come from plainnet/cni/protocol.py, as -D definitions
 * (`plainnet cni install` passes them); they are defined nowhere else. */
#if !defined(SOCKET_NAME) || !defined(VERSION_ANSWER) || !defined(LATEST_VERSION) || \
    !defined(TRY_AGAIN_LATER) || !defined(PLUGIN_NOT_AVAILABLE) || !defined(MAX_REQUEST) || \
    !defined(INVALID_NETWORK_CONFIG)
#error "compile with the -D definitions of plainnet.cni.protocol.shim_defines()"
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

extern char **environ;

static char *read_all(int fd, size_t *length) {
    size_t size = 8192, used = 0;
    char *buffer = malloc(size);
    for (;;) {
        if (!buffer) return NULL;
        if (used == size) buffer = realloc(buffer, size *= 2);
        if (!buffer) return NULL;
        ssize_t got = read(fd, buffer + used, size - used);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        used += (size_t)got;
    }
    *length = used;
    return buffer;
}

static int write_all(int fd, const char *data, size_t length) {
    while (length) {
        ssize_t sent = write(fd, data, length);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return -1;
        data += sent;
        length -= (size_t)sent;
    }
    return 0;
}

/* The cniVersion of the configuration, for the error result; the latest if none is found. */
static void config_version(const char *config, size_t length, char *out, size_t size) {
    snprintf(out, size, LATEST_VERSION);
    const char *key = memmem(config, length, "\"cniVersion\"", 12);
    if (!key) return;
    const char *end = config + length, *p = key + 12;
    while (p < end && *p != '"') p++;
    const char *start = ++p;
    while (p < end && *p != '"' && (size_t)(p - start) < size - 1) p++;
    if (p < end && *p == '"' && p > start) snprintf(out, size, "%.*s", (int)(p - start), start);
}

/* A CNI error result on stdout; exit code 1. */
static int fail(const char *version, int code, const char *msg, const char *details) {
    printf("{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"%s\",\"details\":\"%s\"}\n", version,
           code, msg, details);
    return 1;
}

int main(void) {
    /* A write to an agent that has closed the connection (it answered early, or died)
     * must fail with EPIPE, not kill the plugin without an answer. */
    signal(SIGPIPE, SIG_IGN);
    const char *command = getenv("CNI_COMMAND");
    if (command && strcmp(command, "VERSION") == 0) {
        printf("%s\n", VERSION_ANSWER);
        return 0;
    }
    size_t config_length = 0;
    char *config = read_all(0, &config_length);
    if (!config) return fail(LATEST_VERSION, 5, "cannot read the network configuration", "");
    char version[32];
    config_version(config, config_length, version, sizeof version);
    if (config_length > MAX_REQUEST)
        return fail(version, INVALID_NETWORK_CONFIG, "network configuration too large",
                    "at most " STR(MAX_REQUEST) " bytes");

    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    memcpy(address.sun_path + 1, SOCKET_NAME, sizeof(SOCKET_NAME) - 1);
    socklen_t address_length = offsetof(struct sockaddr_un, sun_path) + 1 + sizeof(SOCKET_NAME) - 1;
    if (sock < 0 || connect(sock, (struct sockaddr *)&address, address_length) < 0) {
        char details[160];
        snprintf(details, sizeof details,
                 "connect to @" SOCKET_NAME ": %s; start the agent (plainnet agent) and retry",
                 strerror(errno));
        /* STATUS asks whether the plugin can serve: CNI 1.1 has a code for "it cannot". */
        int code = command && strcmp(command, "STATUS") == 0 ? PLUGIN_NOT_AVAILABLE : TRY_AGAIN_LATER;
        return fail(version, code, "plainnet agent is not running on this node", details);
    }
    int sent = 0;
    for (char **entry = environ; *entry && sent == 0; entry++) {
        if (strncmp(*entry, "CNI_", 4) == 0) sent = write_all(sock, *entry, strlen(*entry) + 1);
    }
    if (sent == 0 && write_all(sock, "", 1) == 0) write_all(sock, config, config_length);
    /* Even if a write failed, the agent may have answered before it closed: read on. */
    shutdown(sock, SHUT_WR);

    size_t answer_length = 0;
    char *answer = read_all(sock, &answer_length);
    char *newline = answer ? memchr(answer, '\n', answer_length) : NULL;
    if (!newline)
        return fail(version, TRY_AGAIN_LATER, "plainnet agent went away; retry",
                    "the agent closed the connection without an answer");
    int code = atoi(answer);
    size_t head = (size_t)(newline - answer) + 1;
    write_all(1, answer + head, answer_length - head);
    return code;
}
