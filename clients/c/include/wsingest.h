/*
 * wsingest device client core for firmware (C99, no heap).
 *
 * The core keeps the protocol state of one device: sequence numbers, a ring
 * buffer of the encoded messages not yet acked, which of them are in flight,
 * what to resend after a reconnect (in seq order, the same bytes), backoff
 * with jitter, and what each ack, nack, command and close code means. It does
 * no I/O: the application moves frames between it and its WebSocket library
 * (esp_websocket_client, ArduinoWebsockets, libwebsockets) through a
 * transport with one function, send_frame, and three calls in: wsi_on_open,
 * wsi_on_frame, wsi_on_close. Time comes in as milliseconds from the caller.
 *
 *   wsi_client c;                       // static storage: no malloc anywhere
 *   wsi_init(&c, &transport, 16);       // window: 16 messages in flight
 *   wsi_begin(&c, "weather", 0);        // ts 0: the client stamps it now
 *   wsi_tag(&c, "site", "roof");
 *   wsi_field_f64(&c, "temp_c", 21.5);
 *   int64_t seq = wsi_end(&c, now_ms);  // held until acked; < 0: error
 *   ... wsi_poll(&c, now_ms) whenever the socket can take a frame ...
 *
 * Only JSON (wsingest.v1.json, text frames) is spoken: small code, readable
 * on the wire. See docs/devices.md for the rules.
 */
#ifndef WSINGEST_H
#define WSINGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sizes, fixed at compile time (override with -D). */
#ifndef WSI_RING_BYTES
#define WSI_RING_BYTES 16384 /* encoded messages not yet acked */
#endif
#ifndef WSI_MAX_MSGS
#define WSI_MAX_MSGS 128 /* messages held at most */
#endif
#ifndef WSI_MAX_MSG_BYTES
#define WSI_MAX_MSG_BYTES 1024 /* one encoded message */
#endif
#ifndef WSI_MAX_DETAIL
#define WSI_MAX_DETAIL 200 /* nack detail / command strings kept */
#endif

#define WSI_SUBPROTOCOL "wsingest.v1.json"

/* Return codes. */
enum {
    WSI_OK = 0,
    WSI_EFULL = -1,      /* ring or slots full: try again after acks */
    WSI_ETOOLARGE = -2,  /* the message is over WSI_MAX_MSG_BYTES */
    WSI_EINVAL = -3,     /* NaN/inf, invalid UTF-8, no fields, misuse */
    WSI_EAUTH = -4,      /* stopped: 401/403 or close 1008 */
};

/* What transport.send_frame returns. */
enum {
    WSI_SENT = 0, /* the frame was taken */
    WSI_BUSY = 1, /* not now (no room): the core tries again on the next poll */
};

typedef struct {
    /* Send one text frame. WSI_SENT, WSI_BUSY, or < 0 (the connection is
     * broken: the application will call wsi_on_close). */
    int (*send_frame)(void *ctx, const char *data, size_t len);
    void *ctx;
} wsi_transport;

typedef struct {
    uint64_t sent, acked, nacked, resent, retried, reconnects, connects;
    uint64_t commands, transient_nacks, closes_1013, closes_1009, closes_other, ack_timeouts;
} wsi_stats;

/* A message refused for good: a permanent nack, or close 1009. */
typedef void (*wsi_failure_fn)(void *user, uint64_t seq, const char *error, const char *detail);
/* A downlink command; args_json is the raw JSON of "args" ("null" when
 * absent). Return true for ok; write an optional explanation to detail
 * (detail_cap bytes, NUL-terminated). */
typedef bool (*wsi_command_fn)(void *user, const char *id, const char *name, const char *args_json,
                               char *detail, size_t detail_cap);

enum { WSI_SLOT_FREE = 0, WSI_SLOT_QUEUED, WSI_SLOT_IN_FLIGHT, WSI_SLOT_DONE };

typedef struct {
    uint32_t off, len;
    uint8_t state;
    uint8_t sent_before; /* went out at least once */
    uint8_t resend;      /* goes out again after a reconnect */
} wsi_slot;

typedef struct {
    wsi_transport tr;
    /* Ring of encoded messages: bytes [tail, head) in order, wrapping. */
    char ring[WSI_RING_BYTES];
    uint32_t ring_head, ring_tail, ring_used;
    /* One slot per held message, in seq order: slot of seq s is
     * (slot_tail + s - tail_seq) % WSI_MAX_MSGS. */
    wsi_slot slots[WSI_MAX_MSGS];
    uint32_t slot_tail, slot_count;
    uint64_t tail_seq, next_seq, send_from;
    uint32_t held, in_flight, window, cwnd;
    /* The message being built. */
    char msg[WSI_MAX_MSG_BYTES];
    size_t msg_len;
    int msg_err;
    int msg_fields, msg_tags;
    int64_t msg_ts;
    int64_t last_auto_ts;
    /* Connection state. */
    bool open, ever_connected, stopped;
    int stop_status, stop_close; /* 401/403, or 1008 */
    int64_t hold_until, last_progress, next_connect;
    uint32_t attempt, nack_attempt;
    int64_t last_transient;
    uint32_t backoff_base_ms, backoff_max_ms, ack_timeout_ms;
    uint32_t rng;
    /* A command reply waiting for the transport. */
    char reply[WSI_MAX_DETAIL + 96];
    size_t reply_len;
    wsi_failure_fn on_failure;
    wsi_command_fn on_command;
    void *user;
    wsi_stats stats;
} wsi_client;

/* Set up `c` (all of it: call once). window: messages in flight (1..WSI_MAX_MSGS). */
void wsi_init(wsi_client *c, const wsi_transport *tr, uint32_t window);
void wsi_set_callbacks(wsi_client *c, wsi_failure_fn on_failure, wsi_command_fn on_command, void *user);
/* Backoff between reconnects (and after transient nacks): base doubling to max, times 0.5..1. */
void wsi_set_backoff(wsi_client *c, uint32_t base_ms, uint32_t max_ms, uint32_t seed);

/* Build one message: wsi_begin, then tags, then fields, then wsi_end.
 * ts_ms: epoch milliseconds, or 0 for "now" (stamped by wsi_end from now_ms,
 * never the same millisecond twice, kept on every resend). */
void wsi_begin(wsi_client *c, const char *measurement, int64_t ts_ms);
void wsi_tag(wsi_client *c, const char *key, const char *value);
void wsi_field_f64(wsi_client *c, const char *key, double value);
void wsi_field_i64(wsi_client *c, const char *key, int64_t value);
void wsi_field_bool(wsi_client *c, const char *key, bool value);
void wsi_field_str(wsi_client *c, const char *key, const char *value);
/* Take the message: its seq (>= 1), or WSI_EFULL / WSI_ETOOLARGE /
 * WSI_EINVAL / WSI_EAUTH. On WSI_EFULL, poll and try wsi_end again later
 * (the built message is kept until the next wsi_begin). now_ms: epoch ms. */
int64_t wsi_end(wsi_client *c, int64_t now_ms);

/* The transport opened: everything unacked goes out again, in order. */
void wsi_on_open(wsi_client *c, int64_t now_ms);
/* A text frame from the server. */
void wsi_on_frame(wsi_client *c, const char *data, size_t len, int64_t now_ms);
/* The connection closed (code 1006 when there was no close frame). */
void wsi_on_close(wsi_client *c, int code, const char *reason, int64_t now_ms);
/* A connection attempt failed; http_status is the refused handshake's
 * status, or 0 (no answer). 401/403 stop the client. */
void wsi_on_connect_failed(wsi_client *c, int http_status, int64_t now_ms);
/* Send what the window allows. Returns true when the connection should be
 * dropped (no ack for the ack timeout). Call it after every event and
 * whenever the socket can take more. */
bool wsi_poll(wsi_client *c, int64_t now_ms);
/* When to connect next (epoch ms), while not open. */
int64_t wsi_next_connect(const wsi_client *c);

/* Messages held (not answered yet); 0 means everything was acked or failed. */
uint32_t wsi_unacked(const wsi_client *c);
bool wsi_stopped(const wsi_client *c);

/* JSON string escaping: writes "escaped" (with the quotes) to out, returns
 * its length, or -1 when it does not fit in cap or s is not valid UTF-8.
 * Control characters become \n, \t, ... or \u00XX; quote and backslash are
 * escaped; valid UTF-8 passes through unchanged. */
int wsi_json_string(char *out, size_t cap, const char *s);

/* The downlink parser, exposed for tests. */
typedef enum { WSI_DOWN_NONE = 0, WSI_DOWN_ACK, WSI_DOWN_NACK, WSI_DOWN_CMD } wsi_down_kind;
typedef struct {
    wsi_down_kind kind;
    bool has_seq;
    uint64_t seq;
    char error[48];
    char detail[WSI_MAX_DETAIL];
    char id[64];
    char name[64];
    const char *args; /* into the frame */
    size_t args_len;
} wsi_downlink;
bool wsi_parse_downlink(const char *data, size_t len, wsi_downlink *out);

#ifdef __cplusplus
}
#endif
#endif
