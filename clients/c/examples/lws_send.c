/*
 * The C core on Linux over libwebsockets: a device that sends numbered
 * points, resends what was not acked after a reconnect, and waits for every
 * ack. It is the wiring an application writes (transport + event calls +
 * a service loop) and the program tests/clients_c.rs runs.
 *
 *   build/lws_send --url ws://127.0.0.1:8765 --device dev-1 --token wsi_... \
 *       --count 100 --rate 10
 *
 * Points i = first .. first+count-1 of measurement "clients": fields n = i,
 * v = i * 0.25, s = "p-<i>-" padded, h = a string that needs escaping;
 * ts = ts0 + i (or stamped by the core with --auto-ts). Prints JSON lines:
 * {"progress": k} every 10 points, then {"result": ..., "stats": {...}}.
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wsingest.h"

#define HOSTILE "quote\" back\\slash caf\xc3\xa9 \xe2\x9c\x93 {}"

static struct {
    const char *url, *device, *token, *mode;
    long first, count, ts0, window;
    double rate, backoff_max, flush_timeout;
    int pad, auto_ts;
} opt = {NULL, NULL, NULL, "normal", 0, 100, 1700000000000L, 64, 0, 2, 90, 0, 0};

static struct {
    struct lws_context *ctx;
    struct lws *wsi;
    int connecting, writes_left, wants_write;
    int close_code;
    char close_reason[128];
    char host[128], path[512];
    int port;
    char auth[256];
    char rx[65536];
    size_t rx_len;
    lws_sorted_usec_list_t tick;
} app;

static wsi_client client;
static char failures[8192];
static size_t failures_len;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The transport: one frame per WRITEABLE callback, as lws wants. */
static int send_frame(void *ctx, const char *data, size_t len) {
    (void)ctx;
    static unsigned char buf[LWS_PRE + WSI_MAX_MSG_BYTES + WSI_MAX_DETAIL + 96];
    if (!app.wsi || app.writes_left <= 0 || len > sizeof buf - LWS_PRE) {
        app.wants_write = 1;
        return WSI_BUSY;
    }
    memcpy(buf + LWS_PRE, data, len);
    if (lws_write(app.wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len) return -1;
    app.writes_left--;
    app.wants_write = 1; /* maybe more: ask for another WRITEABLE */
    return WSI_SENT;
}

static void on_failure(void *user, uint64_t seq, const char *error, const char *detail) {
    (void)user;
    char e[96], d[WSI_MAX_DETAIL + 16];
    if (wsi_json_string(e, sizeof e, error) < 0) strcpy(e, "\"?\"");
    if (wsi_json_string(d, sizeof d, detail) < 0) strcpy(d, "\"?\"");
    int n = snprintf(failures + failures_len, sizeof failures - failures_len,
                     "%s{\"seq\":%llu,\"error\":%s,\"detail\":%s}", failures_len ? "," : "",
                     (unsigned long long)seq, e, d);
    if (n > 0 && (size_t)n < sizeof failures - failures_len) failures_len += (size_t)n;
}

static bool on_command(void *user, const char *id, const char *name, const char *args, char *detail, size_t cap) {
    (void)user;
    (void)id;
    if (strcmp(name, "set_interval") == 0) {
        snprintf(detail, cap, "interval %s", args);
        return true;
    }
    snprintf(detail, cap, "unknown command %s", name);
    return false;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        if (!app.auth[0]) break;
        unsigned char **p = (unsigned char **)in, *end = (*p) + len;
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, (unsigned char *)app.auth,
                                         (int)strlen(app.auth), p, end))
            return -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        app.wsi = wsi;
        app.connecting = 0;
        app.close_code = 0;
        app.close_reason[0] = 0;
        wsi_on_open(&client, now_ms());
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (lws_is_first_fragment(wsi)) app.rx_len = 0;
        if (app.rx_len + len <= sizeof app.rx) {
            memcpy(app.rx + app.rx_len, in, len);
            app.rx_len += len;
        }
        if (lws_is_final_fragment(wsi)) {
            wsi_on_frame(&client, app.rx, app.rx_len, now_ms());
            lws_callback_on_writable(wsi);
        }
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        app.writes_left = 1;
        app.wants_write = 0;
        if (wsi_poll(&client, now_ms())) {
            lws_close_reason(wsi, (enum lws_close_status)4000, (unsigned char *)"no ack", 6);
            return -1;
        }
        app.writes_left = 0;
        if (app.wants_write) lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const unsigned char *b = in;
            app.close_code = (b[0] << 8) | b[1];
            size_t r = len - 2 < sizeof app.close_reason - 1 ? len - 2 : sizeof app.close_reason - 1;
            memcpy(app.close_reason, b + 2, r);
            app.close_reason[r] = 0;
        }
        /* libwebsockets 4.1 rewrites close codes it does not know (1012 to
         * 1014) to 1002 in place before this callback; wsingest never sends
         * 1002, so here it is the server's 1013 ("try again later"). The
         * core backs off on both alike: this keeps the stats right. */
        if (app.close_code == 1002) app.close_code = 1013;
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        int status = (int)lws_http_client_http_response(wsi);
        if (!status && in) {
            /* "HS: ws upgrade response not 101" carries no code; older
             * messages do: take a 3-digit number if there is one. */
            const char *s = in;
            for (; *s; s++)
                if (s[0] >= '1' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9') {
                    status = atoi(s);
                    break;
                }
        }
        app.wsi = NULL;
        app.connecting = 0;
        wsi_on_connect_failed(&client, status, now_ms());
        break;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
        app.wsi = NULL;
        app.connecting = 0;
        wsi_on_close(&client, app.close_code ? app.close_code : 1006, app.close_reason, now_ms());
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {WSI_SUBPROTOCOL, callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void tick(lws_sorted_usec_list_t *sul) {
    /* Wakes lws_service up every 5 ms so the main loop can generate. */
    lws_sul_schedule(app.ctx, 0, sul, tick, 5 * LWS_US_PER_MS);
}

static void connect_now(void) {
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = app.ctx;
    i.address = app.host;
    i.port = app.port;
    i.path = app.path;
    i.host = app.host;
    i.origin = app.host;
    i.protocol = WSI_SUBPROTOCOL;
    i.ssl_connection = 0;
    app.connecting = 1;
    app.close_code = 0;
    if (!lws_client_connect_via_info(&i)) {
        app.connecting = 0;
        wsi_on_connect_failed(&client, 0, now_ms());
    }
}

static int parse_url(void) {
    /* ws://host:port -> host, port, /v1/devices/{device} */
    const char *u = opt.url;
    if (strncmp(u, "ws://", 5) != 0) return -1;
    u += 5;
    const char *colon = strchr(u, ':');
    const char *slash = strchr(u, '/');
    size_t hl = colon ? (size_t)(colon - u) : slash ? (size_t)(slash - u) : strlen(u);
    if (hl >= sizeof app.host) return -1;
    memcpy(app.host, u, hl);
    app.host[hl] = 0;
    app.port = colon ? atoi(colon + 1) : 80;
    snprintf(app.path, sizeof app.path, "/v1/devices/%s", opt.device);
    return 0;
}

static void print_result(const char *result, const char *error) {
    const wsi_stats *s = &client.stats;
    printf("{\"result\":\"%s\"", result);
    if (error) printf(",\"error\":\"%s\"", error);
    if (client.stop_status) printf(",\"status\":%d", client.stop_status);
    if (client.stop_close) printf(",\"close_code\":%d", client.stop_close);
    if (failures_len) printf(",\"failures\":[%.*s]", (int)failures_len, failures);
    printf(",\"stats\":{\"sent\":%llu,\"acked\":%llu,\"nacked\":%llu,\"resent\":%llu,\"retried\":%llu,"
           "\"reconnects\":%llu,\"connects\":%llu,\"commands\":%llu,\"buffered\":%u,\"in_flight\":%u,"
           "\"closes\":{\"1013\":%llu,\"1009\":%llu,\"other\":%llu},\"ack_timeouts\":%llu}}\n",
           (unsigned long long)s->sent, (unsigned long long)s->acked, (unsigned long long)s->nacked,
           (unsigned long long)s->resent, (unsigned long long)s->retried, (unsigned long long)s->reconnects,
           (unsigned long long)s->connects, (unsigned long long)s->commands, wsi_unacked(&client),
           client.in_flight, (unsigned long long)s->closes_1013, (unsigned long long)s->closes_1009,
           (unsigned long long)s->closes_other, (unsigned long long)s->ack_timeouts);
    fflush(stdout);
}

/* Build point i; returns what wsi_end returned. */
static int64_t build(long i, int64_t t) {
    static char s[WSI_MAX_MSG_BYTES];
    int n = snprintf(s, sizeof s, "p-%06ld-", i);
    int pad = opt.pad;
    if (strcmp(opt.mode, "nacks") == 0 && i == opt.first + 7) pad = 5000 < WSI_MAX_MSG_BYTES - 200 ? 5000 : 0;
    for (int k = 0; k < pad && n < (int)sizeof s - 1; k++) s[n++] = 'x';
    s[n] = 0;
    wsi_begin(&client, "clients", opt.auto_ts ? 0 : opt.ts0 + i);
    wsi_tag(&client, "client", "c");
    if (strcmp(opt.mode, "nacks") == 0 && i == opt.first + 3) wsi_tag(&client, "device", "someone-else");
    wsi_field_i64(&client, "n", i);
    if (strcmp(opt.mode, "nacks") == 0 && i == opt.first + 5) wsi_field_str(&client, "v", "five");
    else wsi_field_f64(&client, "v", (double)i * 0.25);
    wsi_field_str(&client, "s", s);
    wsi_field_str(&client, "h", HOSTILE);
    return wsi_end(&client, t);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc || (i < argc && !strcmp(argv[i], "--auto-ts")); i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(k, "--auto-ts")) { opt.auto_ts = 1; i--; continue; }
        if (!strcmp(k, "--url")) opt.url = v;
        else if (!strcmp(k, "--device")) opt.device = v;
        else if (!strcmp(k, "--token")) opt.token = v;
        else if (!strcmp(k, "--mode")) opt.mode = v;
        else if (!strcmp(k, "--first")) opt.first = atol(v);
        else if (!strcmp(k, "--count")) opt.count = atol(v);
        else if (!strcmp(k, "--ts0")) opt.ts0 = atol(v);
        else if (!strcmp(k, "--window")) opt.window = atol(v);
        else if (!strcmp(k, "--rate")) opt.rate = atof(v);
        else if (!strcmp(k, "--pad")) opt.pad = atoi(v);
        else if (!strcmp(k, "--backoff-max")) opt.backoff_max = atof(v);
        else if (!strcmp(k, "--flush-timeout")) opt.flush_timeout = atof(v);
        else if (!strcmp(k, "--encoding")) { if (strcmp(v, "json")) { fprintf(stderr, "JSON only\n"); return 2; } }
        else { fprintf(stderr, "unknown option %s\n", k); return 2; }
    }
    if (!opt.url || !opt.device || parse_url()) {
        fprintf(stderr, "usage: %s --url ws://HOST:PORT --device ID [--token T] [--count N] [--rate R]\n", argv[0]);
        return 2;
    }
    if (opt.token) snprintf(app.auth, sizeof app.auth, "Bearer %s", opt.token);
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR, NULL);

    wsi_transport tr = {send_frame, NULL};
    wsi_init(&client, &tr, (uint32_t)opt.window);
    wsi_set_backoff(&client, 100, (uint32_t)(opt.backoff_max * 1000), (uint32_t)now_ms() ^ (uint32_t)getpid());
    client.ack_timeout_ms = 20000;
    wsi_set_callbacks(&client, on_failure, on_command, NULL);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    app.ctx = lws_create_context(&info);
    if (!app.ctx) {
        fprintf(stderr, "lws_create_context failed\n");
        return 1;
    }
    lws_sul_schedule(app.ctx, 0, &app.tick, tick, 5 * LWS_US_PER_MS);

    int forever = !strcmp(opt.mode, "forever");
    long next = opt.first, sent = 0;
    int64_t start = now_ms(), flush_deadline = 0;
    int pending = 0; /* a built message waiting for room */
    const char *result = NULL;
    for (;;) {
        int64_t t = now_ms();
        if (wsi_stopped(&client)) {
            result = "auth_error";
            break;
        }
        if (!app.wsi && !app.connecting && t >= wsi_next_connect(&client)) connect_now();
        /* Generate at the rate; a full ring waits (never drops). */
        while ((forever || next < opt.first + opt.count) &&
               (opt.rate <= 0 || start + (int64_t)(sent * 1000.0 / opt.rate) <= t)) {
            int64_t r = pending ? wsi_end(&client, t) : build(next, t);
            if (r == WSI_EFULL) {
                pending = 1;
                break;
            }
            pending = 0;
            if (r < 0) {
                fprintf(stderr, "point %ld refused locally: %lld\n", next, (long long)r);
                if (r == WSI_EAUTH) break;
            }
            next++;
            sent++;
            if (sent % 10 == 0) {
                printf("{\"progress\":%ld}\n", sent);
                fflush(stdout);
            }
        }
        if (!forever && next >= opt.first + opt.count && !pending) {
            if (!flush_deadline) flush_deadline = t + (int64_t)(opt.flush_timeout * 1000);
            if (wsi_unacked(&client) == 0) {
                result = failures_len ? "failed" : "ok";
                break;
            }
            if (t > flush_deadline) {
                result = "timeout";
                break;
            }
        }
        /* Ask for WRITEABLE only when the core has something it may send. */
        if (app.wsi && (client.reply_len || (client.held > client.in_flight && client.in_flight < client.cwnd &&
                                             t >= client.hold_until)))
            lws_callback_on_writable(app.wsi);
        lws_service(app.ctx, 0);
    }
    print_result(result, NULL);
    lws_context_destroy(app.ctx);
    return 0;
}
