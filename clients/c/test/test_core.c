/* Unit tests of the C core: ring buffer (wrap-around, full, resend order),
 * JSON escaping (the hostile strings of the server's validation tests),
 * the downlink parser, close codes and nacks. `make test` runs them; the
 * last line is "N passed, N failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsingest.h"

static int passed, failed;
#define CHECK(cond)                                                        \
    do {                                                                   \
        if (cond) {                                                        \
            passed++;                                                      \
        } else {                                                           \
            failed++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                  \
    } while (0)

/* A transport that records frames; `busy_after` frames then WSI_BUSY. */
typedef struct {
    char frames[64][WSI_MAX_MSG_BYTES + 1];
    int n;
    int busy_after;
} rec;

static int rec_send(void *ctx, const char *data, size_t len) {
    rec *r = ctx;
    if (r->busy_after >= 0 && r->n >= r->busy_after) return WSI_BUSY;
    if (r->n < 64) {
        memcpy(r->frames[r->n], data, len);
        r->frames[r->n][len] = 0;
    }
    r->n++;
    return WSI_SENT;
}

static wsi_client c; /* static: the client is large (its ring buffer) */
static rec r;

static void setup(uint32_t window) {
    memset(&r, 0, sizeof r);
    r.busy_after = -1;
    wsi_transport t = {rec_send, &r};
    wsi_init(&c, &t, window);
    wsi_set_backoff(&c, 100, 1000, 42);
}

static int64_t point(int i, int pad) {
    char s[WSI_MAX_MSG_BYTES];
    memset(s, 'x', (size_t)pad);
    s[pad] = 0;
    wsi_begin(&c, "m", 1000 + i);
    wsi_field_i64(&c, "n", i);
    wsi_field_str(&c, "s", s);
    return wsi_end(&c, 5000);
}

static uint64_t seq_of(const char *frame) { return strtoull(frame + 7, NULL, 10); } /* {"seq":N */

static void ack(uint64_t seq) {
    char f[48];
    int n = snprintf(f, sizeof f, "{\"ack\":%llu}", (unsigned long long)seq);
    wsi_on_frame(&c, f, (size_t)n, 6000);
}

static void test_message_encoding(void) {
    setup(4);
    wsi_begin(&c, "weather", 1732492800123LL);
    wsi_tag(&c, "site", "roof");
    wsi_tag(&c, "k", "v");
    wsi_field_f64(&c, "temp_c", 21.5);
    wsi_field_bool(&c, "ok", true);
    wsi_field_str(&c, "fw", "1.2.0");
    wsi_field_i64(&c, "n", -7);
    CHECK(wsi_end(&c, 0) == 1);
    wsi_on_open(&c, 0);
    wsi_poll(&c, 0);
    CHECK(r.n == 1);
    CHECK(strcmp(r.frames[0],
                 "{\"seq\":1,\"ts\":1732492800123,\"measurement\":\"weather\",\"tags\":{\"site\":\"roof\",\"k\":\"v\"},"
                 "\"fields\":{\"temp_c\":21.5,\"ok\":true,\"fw\":\"1.2.0\",\"n\":-7}}") == 0);
    /* No measurement, no tags; ts 0: stamped, never the same ms twice. */
    wsi_begin(&c, NULL, 0);
    wsi_field_f64(&c, "v", 0.25);
    CHECK(wsi_end(&c, 777) == 2);
    wsi_begin(&c, NULL, 0);
    wsi_field_f64(&c, "v", 1);
    CHECK(wsi_end(&c, 777) == 3);
    wsi_poll(&c, 0);
    CHECK(strcmp(r.frames[1], "{\"seq\":2,\"ts\":777,\"fields\":{\"v\":0.25}}") == 0);
    CHECK(strcmp(r.frames[2], "{\"seq\":3,\"ts\":778,\"fields\":{\"v\":1}}") == 0);
    /* Refused locally: NaN, no fields, tags after fields, invalid UTF-8, too large. */
    wsi_begin(&c, "m", 1);
    wsi_field_f64(&c, "v", 0.0 / 0.0);
    CHECK(wsi_end(&c, 0) == WSI_EINVAL);
    wsi_begin(&c, "m", 1);
    CHECK(wsi_end(&c, 0) == WSI_EINVAL);
    wsi_begin(&c, "m", 1);
    wsi_field_f64(&c, "v", 1);
    wsi_tag(&c, "late", "x");
    CHECK(wsi_end(&c, 0) == WSI_EINVAL);
    wsi_begin(&c, "m", 1);
    wsi_field_str(&c, "v", "\xc3\x28");
    CHECK(wsi_end(&c, 0) == WSI_EINVAL);
    static char big[WSI_MAX_MSG_BYTES + 10];
    memset(big, 'a', sizeof big - 1);
    wsi_begin(&c, "m", 1);
    wsi_field_str(&c, "v", big);
    CHECK(wsi_end(&c, 0) == WSI_ETOOLARGE);
    CHECK(wsi_unacked(&c) == 3);
}

static void test_json_escaping(void) {
    struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "\"plain\""},
        {"ends with\\", "\"ends with\\\\\""},
        {"a\\ b", "\"a\\\\ b\""},
        {"two\nlines", "\"two\\nlines\""},
        {"quote\"inside", "\"quote\\\"inside\""},
        {"tab\there\r\b\f", "\"tab\\there\\r\\b\\f\""},
        {"\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\""},
        {"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8c\xa1", "\"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8c\xa1\""},
        {"", "\"\""},
        {"time", "\"time\""},
        {"#comment,x=y z", "\"#comment,x=y z\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        int n = wsi_json_string(out, sizeof out, cases[i].in);
        CHECK(n == (int)strlen(cases[i].out));
        CHECK(n >= 0 && strcmp(out, cases[i].out) == 0);
        if (n < 0 || strcmp(out, cases[i].out) != 0) fprintf(stderr, "  case %zu: got %s\n", i, n < 0 ? "-1" : out);
        /* Round trip through the parser: the same bytes come back. */
        char frame[256];
        snprintf(frame, sizeof frame, "{\"nack\":1,\"error\":\"x\",\"detail\":%s}", out);
        wsi_downlink d;
        CHECK(wsi_parse_downlink(frame, strlen(frame), &d) && strcmp(d.detail, cases[i].in) == 0);
    }
    /* Invalid UTF-8: overlong, surrogate, truncated, stray continuation. */
    const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xe2\x9c", "\x80", "ok\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[32];
        CHECK(wsi_json_string(out, sizeof out, bad[i]) == -1);
    }
    char small[4];
    CHECK(wsi_json_string(small, sizeof small, "abcd") == -1); /* does not fit */
}

static void test_parser(void) {
    wsi_downlink d;
    CHECK(wsi_parse_downlink("{\"ack\": 42}", 11, &d) && d.kind == WSI_DOWN_ACK && d.has_seq && d.seq == 42);
    const char *n = "{\"nack\":43,\"error\":\"invalid_field\",\"detail\":\"fields.temp_c: NaN \\u00e9 \\ud83c\\udf21\"}";
    CHECK(wsi_parse_downlink(n, strlen(n), &d) && d.kind == WSI_DOWN_NACK && d.seq == 43);
    CHECK(strcmp(d.error, "invalid_field") == 0);
    CHECK(strcmp(d.detail, "fields.temp_c: NaN \xc3\xa9 \xf0\x9f\x8c\xa1") == 0);
    const char *nn = "{\"nack\":null,\"error\":\"invalid_json\",\"detail\":\"x\"}";
    CHECK(wsi_parse_downlink(nn, strlen(nn), &d) && d.kind == WSI_DOWN_NACK && !d.has_seq);
    const char *cmd = "{\"cmd\":\"c-17\",\"name\":\"set_interval\",\"args\":{\"seconds\":5,\"l\":[1,{\"a\":\"}\"}]}}";
    CHECK(wsi_parse_downlink(cmd, strlen(cmd), &d) && d.kind == WSI_DOWN_CMD);
    CHECK(strcmp(d.id, "c-17") == 0 && strcmp(d.name, "set_interval") == 0);
    CHECK(d.args_len == strlen("{\"seconds\":5,\"l\":[1,{\"a\":\"}\"}]}") &&
          memcmp(d.args, "{\"seconds\":5", 12) == 0);
    CHECK(!wsi_parse_downlink("{\"ack\":", 7, &d));
    CHECK(!wsi_parse_downlink("[1]", 3, &d));
    CHECK(!wsi_parse_downlink("{\"other\":1}", 11, &d));
}

static void test_ring_wraps_and_fills(void) {
    setup(WSI_MAX_MSGS);
    wsi_on_open(&c, 0);
    /* Messages of ~200 bytes: fill the ring, ack the oldest half, keep
     * going: new messages land at the start (wrap-around). */
    int64_t seq = 0;
    int taken = 0;
    while ((seq = point(taken, 150)) > 0) taken++;
    CHECK(seq == WSI_EFULL);
    CHECK(taken > 10 && taken == (int)wsi_unacked(&c));
    uint32_t used_full = c.ring_used;
    wsi_poll(&c, 0);
    CHECK(r.n == taken); /* all in flight (window = WSI_MAX_MSGS) */
    for (int i = 1; i <= taken / 2; i++) ack((uint64_t)i);
    CHECK((int)wsi_unacked(&c) == taken - taken / 2);
    CHECK(c.ring_used < used_full);
    int more = 0;
    while (point(taken + more, 150) > 0) more++;
    CHECK(more >= taken / 2 - 1 && more <= taken / 2 + 1);
    CHECK(c.ring_head <= c.ring_tail); /* wrapped */
    /* Out-of-order acks free nothing until the oldest is acked. */
    uint32_t used = c.ring_used;
    ack((uint64_t)(taken / 2 + 2));
    CHECK(c.ring_used == used);
    ack((uint64_t)(taken / 2 + 1));
    CHECK(c.ring_used < used);
    /* Every frame in the ring is intact after the wrap: send and check. */
    wsi_poll(&c, 0);
    for (int i = taken; i < r.n && i < 64; i++) {
        CHECK(seq_of(r.frames[i]) == (uint64_t)i + 1);
        CHECK(r.frames[i][strlen(r.frames[i]) - 1] == '}');
    }
    /* Ack everything: the ring is empty and starts over at 0. */
    for (uint64_t s = 1; s < c.next_seq; s++) ack(s);
    CHECK(wsi_unacked(&c) == 0 && c.ring_used == 0 && c.ring_head == 0);
}

static void test_slots_full(void) {
    setup(8);
    int taken = 0;
    while (point(taken, 0) > 0) taken++;
    CHECK(taken == WSI_MAX_MSGS || c.ring_used + 64 > WSI_RING_BYTES);
    CHECK(point(999, 0) == WSI_EFULL);
}

static void test_resend_order_and_window(void) {
    setup(3);
    for (int i = 0; i < 6; i++) CHECK(point(i, 0) == i + 1);
    wsi_on_open(&c, 0);
    wsi_poll(&c, 0);
    CHECK(r.n == 3); /* the window */
    CHECK(seq_of(r.frames[0]) == 1 && seq_of(r.frames[2]) == 3);
    ack(2);
    wsi_poll(&c, 0);
    CHECK(r.n == 4 && seq_of(r.frames[3]) == 4);
    /* The connection drops: 1, 3, 4 unacked (sent), 5, 6 never sent. */
    wsi_on_close(&c, 1006, "", 100);
    CHECK(c.stats.closes_other == 1 && wsi_next_connect(&c) >= 100 + 50);
    r.n = 0;
    wsi_on_open(&c, 200);
    wsi_poll(&c, 200);
    CHECK(r.n == 3);
    CHECK(seq_of(r.frames[0]) == 1 && seq_of(r.frames[1]) == 3 && seq_of(r.frames[2]) == 4);
    /* The same bytes as the first time. */
    CHECK(strstr(r.frames[0], "\"ts\":1000,") != NULL);
    ack(1);
    ack(3);
    ack(4);
    wsi_poll(&c, 200);
    CHECK(r.n == 5 && seq_of(r.frames[3]) == 5 && seq_of(r.frames[4]) == 6);
    CHECK(c.stats.resent == 3 && c.stats.reconnects == 1 && c.stats.sent == 6);
    ack(5);
    ack(6);
    CHECK(wsi_unacked(&c) == 0 && c.stats.acked == 6);
}

static uint64_t failed_seq;
static char failed_error[48];
static void on_failure(void *user, uint64_t seq, const char *error, const char *detail) {
    (void)user;
    (void)detail;
    failed_seq = seq;
    snprintf(failed_error, sizeof failed_error, "%s", error);
}

static bool on_command(void *user, const char *id, const char *name, const char *args, char *detail, size_t cap) {
    (void)user;
    (void)id;
    snprintf(detail, cap, "%s %s", name, args);
    return strcmp(name, "set_interval") == 0;
}

static void test_nacks_closes_and_commands(void) {
    setup(8);
    wsi_set_callbacks(&c, on_failure, on_command, NULL);
    for (int i = 0; i < 4; i++) point(i, i == 2 ? 300 : 0);
    wsi_on_open(&c, 0);
    wsi_poll(&c, 0);
    /* Permanent nack: reported, not resent. */
    const char *n = "{\"nack\":1,\"error\":\"reserved_tag\",\"detail\":\"device\"}";
    wsi_on_frame(&c, n, strlen(n), 10);
    CHECK(failed_seq == 1 && strcmp(failed_error, "reserved_tag") == 0 && c.stats.nacked == 1);
    /* Transient nack: back in the queue, held for a backoff, resent. */
    const char *t = "{\"nack\":2,\"error\":\"storage_unavailable\",\"detail\":\"later\"}";
    wsi_on_frame(&c, t, strlen(t), 10);
    CHECK(c.in_flight == 2 && c.hold_until > 10);
    r.n = 0;
    wsi_poll(&c, 11);
    CHECK(r.n == 0);
    /* After the hold, one at a time (3 and 4 are in flight), opening again
     * ack by ack. */
    wsi_poll(&c, c.hold_until);
    CHECK(r.n == 0 && c.cwnd == 1);
    ack(4);
    wsi_poll(&c, c.hold_until);
    CHECK(r.n == 1 && seq_of(r.frames[0]) == 2 && c.stats.retried == 1);
    /* 1009: the largest unacked message (seq 3) is refused for good. */
    wsi_on_close(&c, 1009, "", 20);
    CHECK(failed_seq == 3 && strcmp(failed_error, "too_large") == 0 && c.stats.closes_1009 == 1);
    CHECK(wsi_unacked(&c) == 1 && !wsi_stopped(&c));
    /* A command is answered before the next message. */
    wsi_on_open(&c, 30);
    r.n = 0;
    const char *cmd = "{\"cmd\":\"c-1\",\"name\":\"set_interval\",\"args\":{\"seconds\":5}}";
    wsi_on_frame(&c, cmd, strlen(cmd), 30);
    wsi_poll(&c, c.hold_until > 30 ? c.hold_until : 30);
    CHECK(r.n == 2 && seq_of(r.frames[1]) == 2);
    CHECK(strcmp(r.frames[0], "{\"cmd_result\":\"c-1\",\"ok\":true,\"detail\":\"set_interval {\\\"seconds\\\":5}\"}") == 0);
    /* 1013: back off and reconnect; 1008: stop for good. */
    wsi_on_close(&c, 1013, "overloaded", 40);
    CHECK(c.stats.closes_1013 == 1 && !wsi_stopped(&c) && wsi_next_connect(&c) > 40);
    wsi_on_open(&c, 50);
    wsi_on_close(&c, 1008, "token revoked", 60);
    CHECK(wsi_stopped(&c) && c.stop_close == 1008);
    CHECK(point(9, 0) == WSI_EAUTH);
    /* 401 at the handshake stops a fresh client too. */
    setup(8);
    wsi_on_connect_failed(&c, 503, 0);
    CHECK(!wsi_stopped(&c));
    wsi_on_connect_failed(&c, 401, 0);
    CHECK(wsi_stopped(&c) && c.stop_status == 401);
}

static void test_busy_transport_and_ack_timeout(void) {
    setup(8);
    for (int i = 0; i < 4; i++) point(i, 0);
    wsi_on_open(&c, 0);
    r.busy_after = 2;
    wsi_poll(&c, 0);
    CHECK(r.n == 2 && c.in_flight == 2);
    r.busy_after = -1;
    wsi_poll(&c, 1);
    CHECK(r.n == 4 && c.in_flight == 4);
    CHECK(!wsi_poll(&c, 29000));
    CHECK(wsi_poll(&c, 31000)); /* no answer for 30 s: drop the connection */
    CHECK(c.stats.ack_timeouts == 1);
}

int main(void) {
    test_message_encoding();
    test_json_escaping();
    test_parser();
    test_ring_wraps_and_fills();
    test_slots_full();
    test_resend_order_and_window();
    test_nacks_closes_and_commands();
    test_busy_transport_and_ack_timeout();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
