/* wsingest device client core: see include/wsingest.h. C99, no heap. */
#include "wsingest.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define NACK_QUIET_MS 30000
#define NACK_HOLD_MAX_MS 5000

static const char *const TRANSIENT[] = {
    "storage_unavailable", "rate_limited", "overloaded", "shutting_down", "bridge_unavailable",
    "too_many_series",
};

void wsi_init(wsi_client *c, const wsi_transport *tr, uint32_t window) {
    memset(c, 0, sizeof *c);
    c->tr = *tr;
    if (window < 1) window = 1;
    if (window > WSI_MAX_MSGS) window = WSI_MAX_MSGS;
    c->window = window;
    c->cwnd = window;
    c->next_seq = 1;
    c->tail_seq = 1;
    c->send_from = 1;
    c->backoff_base_ms = 500;
    c->backoff_max_ms = 30000;
    c->ack_timeout_ms = 30000;
    c->rng = 0x9e3779b9u;
}

void wsi_set_callbacks(wsi_client *c, wsi_failure_fn on_failure, wsi_command_fn on_command, void *user) {
    c->on_failure = on_failure;
    c->on_command = on_command;
    c->user = user;
}

void wsi_set_backoff(wsi_client *c, uint32_t base_ms, uint32_t max_ms, uint32_t seed) {
    c->backoff_base_ms = base_ms ? base_ms : 1;
    c->backoff_max_ms = max_ms < c->backoff_base_ms ? c->backoff_base_ms : max_ms;
    c->rng = seed ? seed : 0x9e3779b9u;
}

static uint32_t rnd(wsi_client *c) {
    uint32_t x = c->rng; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->rng = x;
    return x;
}

static int64_t backoff(wsi_client *c, uint32_t *attempt, uint32_t cap) {
    uint32_t n = *attempt < 20 ? *attempt : 20;
    uint64_t d = (uint64_t)c->backoff_base_ms << n;
    if (d > cap) d = cap;
    *attempt += 1;
    /* times 0.5 .. 1 */
    return (int64_t)(d / 2 + (d / 2) * (rnd(c) % 1001) / 1000);
}

/* ---- JSON encoding --------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *s) {
    unsigned char b = s[0];
    if (b < 0x80) return 1;
    if (b >= 0xc2 && b <= 0xdf) return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (b >= 0xe0 && b <= 0xef) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) return 0;
        if (b == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
        if (b == 0xed && s[1] >= 0xa0) return 0; /* surrogates */
        return 3;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80) return 0;
        if (b == 0xf0 && s[1] < 0x90) return 0;
        if (b == 0xf4 && s[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

int wsi_json_string(char *out, size_t cap, const char *s) {
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
#define PUT(ch)                          \
    do {                                 \
        if (n + 1 >= cap) return -1;     \
        out[n++] = (char)(ch);           \
    } while (0)
    PUT('"');
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char ch = *p;
        if (ch == '"' || ch == '\\') {
            PUT('\\');
            PUT(ch);
            p++;
        } else if (ch < 0x20) {
            PUT('\\');
            switch (ch) {
            case '\n': PUT('n'); break;
            case '\r': PUT('r'); break;
            case '\t': PUT('t'); break;
            case '\b': PUT('b'); break;
            case '\f': PUT('f'); break;
            default:
                PUT('u');
                PUT('0');
                PUT('0');
                PUT(hex[ch >> 4]);
                PUT(hex[ch & 15]);
            }
            p++;
        } else {
            int l = utf8_len(p);
            if (l == 0) return -1;
            for (int i = 0; i < l; i++) PUT(p[i]);
            p += l;
        }
    }
    PUT('"');
#undef PUT
    out[n] = 0;
    return (int)n;
}

static void msg_raw(wsi_client *c, const char *s, size_t len) {
    if (c->msg_err) return;
    if (c->msg_len + len >= sizeof c->msg) {
        c->msg_err = WSI_ETOOLARGE;
        return;
    }
    memcpy(c->msg + c->msg_len, s, len);
    c->msg_len += len;
}

static void msg_str(wsi_client *c, const char *s) {
    if (c->msg_err) return;
    int n = wsi_json_string(c->msg + c->msg_len, sizeof c->msg - c->msg_len, s);
    if (n < 0) {
        /* Either it does not fit or it is not UTF-8: tell them apart. */
        char probe[8];
        const unsigned char *p = (const unsigned char *)s;
        while (*p) {
            int l = utf8_len(p);
            if (l == 0) {
                c->msg_err = WSI_EINVAL;
                return;
            }
            p += l;
        }
        (void)probe;
        c->msg_err = WSI_ETOOLARGE;
        return;
    }
    c->msg_len += (size_t)n;
}

void wsi_begin(wsi_client *c, const char *measurement, int64_t ts_ms) {
    c->msg_len = 0;
    c->msg_err = 0;
    c->msg_fields = 0;
    c->msg_tags = 0;
    c->msg_ts = ts_ms;
    if (measurement) {
        msg_raw(c, "\"measurement\":", 14);
        msg_str(c, measurement);
    }
}

void wsi_tag(wsi_client *c, const char *key, const char *value) {
    if (c->msg_fields) {
        c->msg_err = WSI_EINVAL; /* tags come before fields */
        return;
    }
    if (c->msg_tags == 0) {
        if (c->msg_len) msg_raw(c, ",", 1);
        msg_raw(c, "\"tags\":{", 8);
    } else {
        msg_raw(c, ",", 1);
    }
    msg_str(c, key);
    msg_raw(c, ":", 1);
    msg_str(c, value);
    c->msg_tags++;
}

static void field_key(wsi_client *c, const char *key) {
    if (c->msg_fields == 0) {
        if (c->msg_tags) msg_raw(c, "}", 1);
        if (c->msg_len) msg_raw(c, ",", 1);
        msg_raw(c, "\"fields\":{", 10);
    } else {
        msg_raw(c, ",", 1);
    }
    msg_str(c, key);
    msg_raw(c, ":", 1);
    c->msg_fields++;
}

void wsi_field_f64(wsi_client *c, const char *key, double value) {
    if (!isfinite(value)) {
        c->msg_err = WSI_EINVAL; /* InfluxDB stores finite numbers only */
        return;
    }
    char num[32];
    int n = snprintf(num, sizeof num, "%.17g", value);
    field_key(c, key);
    msg_raw(c, num, (size_t)n);
}

void wsi_field_i64(wsi_client *c, const char *key, int64_t value) {
    char num[24];
    int n = snprintf(num, sizeof num, "%lld", (long long)value);
    field_key(c, key);
    msg_raw(c, num, (size_t)n);
}

void wsi_field_bool(wsi_client *c, const char *key, bool value) {
    field_key(c, key);
    msg_raw(c, value ? "true" : "false", value ? 4 : 5);
}

void wsi_field_str(wsi_client *c, const char *key, const char *value) {
    field_key(c, key);
    msg_str(c, value);
}

/* ---- ring buffer and slots ------------------------------------------- */

static wsi_slot *slot_of(wsi_client *c, uint64_t seq) {
    if (seq < c->tail_seq || seq >= c->next_seq) return NULL;
    return &c->slots[(c->slot_tail + (uint32_t)(seq - c->tail_seq)) % WSI_MAX_MSGS];
}

/* Room for len contiguous bytes: the offset, or -1. */
static int64_t ring_alloc(wsi_client *c, uint32_t len) {
    if (c->ring_used == 0) c->ring_head = c->ring_tail = 0;
    if (c->ring_used > 0 && c->ring_head == c->ring_tail) return -1;
    if (c->ring_used == 0 || c->ring_head > c->ring_tail) {
        if (WSI_RING_BYTES - c->ring_head >= len) return c->ring_head;
        if (c->ring_tail >= len) return 0; /* wrap; the end stays unused */
        return -1;
    }
    return c->ring_tail - c->ring_head >= len ? (int64_t)c->ring_head : -1;
}

/* Free answered messages from the oldest end. */
static void release(wsi_client *c) {
    while (c->slot_count > 0) {
        wsi_slot *s = &c->slots[c->slot_tail];
        if (s->state != WSI_SLOT_DONE) break;
        c->ring_tail = s->off + s->len;
        c->ring_used -= s->len;
        s->state = WSI_SLOT_FREE;
        c->slot_tail = (c->slot_tail + 1) % WSI_MAX_MSGS;
        c->slot_count--;
        c->tail_seq++;
    }
    if (c->slot_count == 0) {
        c->ring_used = 0;
        c->ring_head = c->ring_tail = 0;
    }
}

int64_t wsi_end(wsi_client *c, int64_t now_ms) {
    if (c->stopped) return WSI_EAUTH;
    if (c->msg_err) return c->msg_err;
    if (c->msg_fields == 0) return WSI_EINVAL;
    if (c->slot_count >= WSI_MAX_MSGS) return WSI_EFULL;
    if (c->msg_ts == 0) {
        /* Stamped now, once: a retry of wsi_end after WSI_EFULL keeps it. */
        int64_t t = now_ms > c->last_auto_ts ? now_ms : c->last_auto_ts + 1;
        c->last_auto_ts = t;
        c->msg_ts = t;
    }
    char head[64];
    uint64_t seq = c->next_seq;
    int hn = snprintf(head, sizeof head, "{\"seq\":%llu,\"ts\":%lld,", (unsigned long long)seq,
                      (long long)c->msg_ts);
    uint32_t len = (uint32_t)hn + (uint32_t)c->msg_len + 2; /* closing braces */
    if (len > WSI_MAX_MSG_BYTES || len > WSI_RING_BYTES) return WSI_ETOOLARGE;
    int64_t off = ring_alloc(c, len);
    if (off < 0) return WSI_EFULL;
    char *dst = c->ring + off;
    memcpy(dst, head, (size_t)hn);
    memcpy(dst + hn, c->msg, c->msg_len);
    dst[hn + c->msg_len] = '}';     /* fields */
    dst[hn + c->msg_len + 1] = '}'; /* message */
    c->ring_head = (uint32_t)off + len;
    c->ring_used += len;
    if (c->slot_count == 0) c->tail_seq = seq;
    wsi_slot *s = &c->slots[(c->slot_tail + c->slot_count) % WSI_MAX_MSGS];
    s->off = (uint32_t)off;
    s->len = len;
    s->state = WSI_SLOT_QUEUED;
    s->sent_before = 0;
    s->resend = 0;
    c->slot_count++;
    c->next_seq++;
    c->held++;
    c->stats.sent++;
    c->msg_fields = 0; /* taken: a second wsi_end without wsi_begin is refused */
    return (int64_t)seq;
}

uint32_t wsi_unacked(const wsi_client *c) { return c->held; }
bool wsi_stopped(const wsi_client *c) { return c->stopped; }
int64_t wsi_next_connect(const wsi_client *c) { return c->next_connect; }

/* ---- events ----------------------------------------------------------- */

static void answered(wsi_client *c, wsi_slot *s) {
    if (s->state == WSI_SLOT_IN_FLIGHT) c->in_flight--;
    s->state = WSI_SLOT_DONE;
    c->held--;
    release(c);
}

static void fail(wsi_client *c, uint64_t seq, wsi_slot *s, const char *error, const char *detail) {
    answered(c, s);
    c->stats.nacked++;
    if (c->on_failure) c->on_failure(c->user, seq, error, detail);
}

void wsi_on_open(wsi_client *c, int64_t now_ms) {
    c->open = true;
    c->stats.connects++;
    if (c->ever_connected) c->stats.reconnects++;
    c->ever_connected = true;
    c->reply_len = 0;
    c->in_flight = 0;
    c->last_progress = now_ms;
    for (uint64_t q = c->tail_seq; q < c->next_seq; q++) {
        wsi_slot *s = slot_of(c, q);
        if (s->state == WSI_SLOT_DONE) continue;
        if (s->sent_before) s->resend = 1;
        s->state = WSI_SLOT_QUEUED;
    }
    c->send_from = c->tail_seq;
}

static bool transient(const char *error) {
    for (size_t i = 0; i < sizeof TRANSIENT / sizeof TRANSIENT[0]; i++)
        if (strcmp(error, TRANSIENT[i]) == 0) return true;
    return false;
}

void wsi_on_frame(wsi_client *c, const char *data, size_t len, int64_t now_ms) {
    wsi_downlink d;
    if (!wsi_parse_downlink(data, len, &d)) return;
    if (d.kind == WSI_DOWN_ACK) {
        c->last_progress = now_ms;
        wsi_slot *s = d.has_seq ? slot_of(c, d.seq) : NULL;
        if (!s || s->state != WSI_SLOT_IN_FLIGHT) return;
        c->stats.acked++;
        c->attempt = 0;
        if (c->cwnd < c->window) c->cwnd++;
        if (now_ms - c->last_transient > NACK_QUIET_MS) c->nack_attempt = 0;
        answered(c, s);
    } else if (d.kind == WSI_DOWN_NACK) {
        c->last_progress = now_ms;
        wsi_slot *s = d.has_seq ? slot_of(c, d.seq) : NULL;
        if (!s || s->state != WSI_SLOT_IN_FLIGHT) return;
        if (transient(d.error)) {
            /* Back in the queue at its place; pause, then one at a time. */
            c->stats.transient_nacks++;
            s->state = WSI_SLOT_QUEUED;
            c->in_flight--;
            if (d.seq < c->send_from) c->send_from = d.seq;
            c->cwnd = 1;
            c->last_transient = now_ms;
            if (now_ms >= c->hold_until) {
                uint32_t cap = c->backoff_max_ms < NACK_HOLD_MAX_MS ? c->backoff_max_ms : NACK_HOLD_MAX_MS;
                c->hold_until = now_ms + backoff(c, &c->nack_attempt, cap);
            }
        } else {
            fail(c, d.seq, s, d.error, d.detail);
        }
    } else if (d.kind == WSI_DOWN_CMD) {
        char detail[WSI_MAX_DETAIL];
        detail[0] = 0;
        bool ok = false;
        if (c->on_command) {
            char args[WSI_MAX_DETAIL];
            size_t n = d.args_len < sizeof args - 1 ? d.args_len : 0; /* too long: "null" */
            if (d.args && n) {
                memcpy(args, d.args, n);
                args[n] = 0;
            } else {
                strcpy(args, "null");
            }
            ok = c->on_command(c->user, d.id, d.name, args, detail, sizeof detail);
        } else {
            strcpy(detail, "this device has no command handler");
        }
        c->stats.commands++;
        char id[80], det[WSI_MAX_DETAIL + 16];
        if (wsi_json_string(id, sizeof id, d.id) < 0) strcpy(id, "\"\"");
        int n;
        if (detail[0] && wsi_json_string(det, sizeof det, detail) >= 0)
            n = snprintf(c->reply, sizeof c->reply, "{\"cmd_result\":%s,\"ok\":%s,\"detail\":%s}", id,
                         ok ? "true" : "false", det);
        else
            n = snprintf(c->reply, sizeof c->reply, "{\"cmd_result\":%s,\"ok\":%s}", id, ok ? "true" : "false");
        c->reply_len = n > 0 && (size_t)n < sizeof c->reply ? (size_t)n : 0;
    }
}

void wsi_on_close(wsi_client *c, int code, const char *reason, int64_t now_ms) {
    if (!c->open) {
        wsi_on_connect_failed(c, 0, now_ms);
        return;
    }
    c->open = false;
    c->reply_len = 0;
    for (uint64_t q = c->tail_seq; q < c->next_seq; q++) {
        wsi_slot *s = slot_of(c, q);
        if (s->state == WSI_SLOT_IN_FLIGHT) s->state = WSI_SLOT_QUEUED;
    }
    c->in_flight = 0;
    if (code == 1013) c->stats.closes_1013++;
    else if (code == 1009) c->stats.closes_1009++;
    else c->stats.closes_other++;
    if (code == 1008) {
        c->stopped = true;
        c->stop_close = 1008;
        return;
    }
    if (code == 1009) {
        /* The culprit is over the server's limit, so the largest unacked
         * message is too: refused for good, else it is resent forever. */
        uint64_t big = 0;
        uint32_t big_len = 0;
        for (uint64_t q = c->tail_seq; q < c->next_seq; q++) {
            wsi_slot *s = slot_of(c, q);
            if (s->state != WSI_SLOT_DONE && s->len > big_len) {
                big = q;
                big_len = s->len;
            }
        }
        if (big) {
            char detail[WSI_MAX_DETAIL];
            snprintf(detail, sizeof detail,
                     "the server closed the connection with 1009 (message too big): this message is %u bytes %s",
                     (unsigned)big_len, reason ? reason : "");
            fail(c, big, slot_of(c, big), "too_large", detail);
        }
    }
    c->next_connect = now_ms + backoff(c, &c->attempt, c->backoff_max_ms);
}

void wsi_on_connect_failed(wsi_client *c, int http_status, int64_t now_ms) {
    c->open = false;
    if (http_status == 401 || http_status == 403) {
        c->stopped = true;
        c->stop_status = http_status;
        return;
    }
    c->next_connect = now_ms + backoff(c, &c->attempt, c->backoff_max_ms);
}

bool wsi_poll(wsi_client *c, int64_t now_ms) {
    if (!c->open || c->stopped) return false;
    if (c->reply_len) {
        int r = c->tr.send_frame(c->tr.ctx, c->reply, c->reply_len);
        if (r != WSI_SENT) return false;
        c->reply_len = 0;
    }
    if (c->in_flight > 0 && now_ms - c->last_progress > (int64_t)c->ack_timeout_ms) {
        c->stats.ack_timeouts++;
        return true;
    }
    if (c->send_from < c->tail_seq) c->send_from = c->tail_seq;
    while (c->in_flight < c->cwnd && now_ms >= c->hold_until && c->send_from < c->next_seq) {
        wsi_slot *s = slot_of(c, c->send_from);
        if (s->state != WSI_SLOT_QUEUED) {
            c->send_from++;
            continue;
        }
        int r = c->tr.send_frame(c->tr.ctx, c->ring + s->off, s->len);
        if (r != WSI_SENT) break;
        if (c->in_flight == 0) c->last_progress = now_ms;
        s->state = WSI_SLOT_IN_FLIGHT;
        c->in_flight++;
        if (s->resend) c->stats.resent++;
        else if (s->sent_before) c->stats.retried++;
        s->resend = 0;
        s->sent_before = 1;
        c->send_from++;
    }
    return false;
}

/* ---- downlink parser --------------------------------------------------- */

typedef struct {
    const char *p, *end;
} cur;

static void ws(cur *k) {
    while (k->p < k->end && (*k->p == ' ' || *k->p == '\t' || *k->p == '\n' || *k->p == '\r')) k->p++;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static bool hex4(cur *k, uint32_t *v) {
    if (k->end - k->p < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(k->p[i]);
        if (h < 0) return false;
        *v = (*v << 4) | (uint32_t)h;
    }
    k->p += 4;
    return true;
}

/* A JSON string into out (truncated to cap, always NUL-terminated). */
static bool str(cur *k, char *out, size_t cap) {
    size_t n = 0;
#define OUT(ch)                                 \
    do {                                        \
        if (out && n + 1 < cap) out[n] = (char)(ch); \
        n++;                                    \
    } while (0)
    if (k->p >= k->end || *k->p != '"') return false;
    k->p++;
    while (k->p < k->end && *k->p != '"') {
        char ch = *k->p++;
        if (ch != '\\') {
            OUT(ch);
            continue;
        }
        if (k->p >= k->end) return false;
        ch = *k->p++;
        switch (ch) {
        case 'n': OUT('\n'); break;
        case 't': OUT('\t'); break;
        case 'r': OUT('\r'); break;
        case 'b': OUT('\b'); break;
        case 'f': OUT('\f'); break;
        case 'u': {
            uint32_t cp;
            if (!hex4(k, &cp)) return false;
            if (cp >= 0xd800 && cp < 0xdc00 && k->end - k->p >= 6 && k->p[0] == '\\' && k->p[1] == 'u') {
                uint32_t lo;
                k->p += 2;
                if (!hex4(k, &lo)) return false;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp < 0x80) {
                OUT(cp);
            } else if (cp < 0x800) {
                OUT(0xc0 | (cp >> 6));
                OUT(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                OUT(0xe0 | (cp >> 12));
                OUT(0x80 | ((cp >> 6) & 0x3f));
                OUT(0x80 | (cp & 0x3f));
            } else {
                OUT(0xf0 | (cp >> 18));
                OUT(0x80 | ((cp >> 12) & 0x3f));
                OUT(0x80 | ((cp >> 6) & 0x3f));
                OUT(0x80 | (cp & 0x3f));
            }
            break;
        }
        default: OUT(ch); /* " \ / */
        }
    }
#undef OUT
    if (k->p >= k->end) return false;
    k->p++;
    if (out && cap) out[n < cap ? n : cap - 1] = 0;
    return true;
}

static bool skip(cur *k, int depth) {
    ws(k);
    if (k->p >= k->end || depth > 16) return false;
    char ch = *k->p;
    if (ch == '"') return str(k, NULL, 0);
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        k->p++;
        ws(k);
        if (k->p < k->end && *k->p == close) {
            k->p++;
            return true;
        }
        for (;;) {
            if (ch == '{') {
                ws(k);
                if (!str(k, NULL, 0)) return false;
                ws(k);
                if (k->p >= k->end || *k->p != ':') return false;
                k->p++;
            }
            if (!skip(k, depth + 1)) return false;
            ws(k);
            if (k->p >= k->end) return false;
            if (*k->p == ',') {
                k->p++;
                continue;
            }
            if (*k->p == close) {
                k->p++;
                return true;
            }
            return false;
        }
    }
    /* number, true, false, null */
    const char *start = k->p;
    while (k->p < k->end && *k->p != ',' && *k->p != '}' && *k->p != ']' && *k->p != ' ') k->p++;
    return k->p > start;
}

/* A u64 or null (has = false). */
static bool seqval(cur *k, bool *has, uint64_t *v) {
    ws(k);
    if (k->end - k->p >= 4 && memcmp(k->p, "null", 4) == 0) {
        k->p += 4;
        *has = false;
        return true;
    }
    if (k->p >= k->end || *k->p < '0' || *k->p > '9') return false;
    uint64_t n = 0;
    while (k->p < k->end && *k->p >= '0' && *k->p <= '9') n = n * 10 + (uint64_t)(*k->p++ - '0');
    *has = true;
    *v = n;
    return true;
}

bool wsi_parse_downlink(const char *data, size_t len, wsi_downlink *d) {
    memset(d, 0, sizeof *d);
    cur k = {data, data + len};
    ws(&k);
    if (k.p >= k.end || *k.p != '{') return false;
    k.p++;
    for (;;) {
        char key[16];
        ws(&k);
        if (k.p < k.end && *k.p == '}') break;
        if (!str(&k, key, sizeof key)) return false;
        ws(&k);
        if (k.p >= k.end || *k.p != ':') return false;
        k.p++;
        ws(&k);
        bool ok;
        if (strcmp(key, "ack") == 0) {
            d->kind = WSI_DOWN_ACK;
            ok = seqval(&k, &d->has_seq, &d->seq);
        } else if (strcmp(key, "nack") == 0) {
            d->kind = WSI_DOWN_NACK;
            ok = seqval(&k, &d->has_seq, &d->seq);
        } else if (strcmp(key, "error") == 0) {
            ok = str(&k, d->error, sizeof d->error);
        } else if (strcmp(key, "detail") == 0) {
            ok = str(&k, d->detail, sizeof d->detail);
        } else if (strcmp(key, "cmd") == 0) {
            d->kind = WSI_DOWN_CMD;
            ok = str(&k, d->id, sizeof d->id);
        } else if (strcmp(key, "name") == 0) {
            ok = str(&k, d->name, sizeof d->name);
        } else if (strcmp(key, "args") == 0) {
            d->args = k.p;
            ok = skip(&k, 0);
            d->args_len = (size_t)(k.p - d->args);
        } else {
            ok = skip(&k, 0);
        }
        if (!ok) return false;
        ws(&k);
        if (k.p < k.end && *k.p == ',') {
            k.p++;
            continue;
        }
        if (k.p < k.end && *k.p == '}') break;
        return false;
    }
    return d->kind != WSI_DOWN_NONE;
}
