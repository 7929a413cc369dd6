/*
 * The C core on ESP-IDF with esp_websocket_client: the wiring, not a
 * project. It cannot be built in this repository (no ESP-IDF toolchain
 * here); copy it into an ESP-IDF project's main/ with src/wsingest.c and
 * include/wsingest.h, add `esp_websocket_client` to the component's
 * REQUIRES, and set CONFIG_WSINGEST_URL / CONFIG_WSINGEST_TOKEN (or edit
 * the defines). Wi-Fi and SNTP setup are the usual ESP-IDF examples'.
 *
 * Threads: esp_websocket_client calls the event handler on its own task;
 * the core is not thread-safe, so every call into it takes `lock`.
 */
#include <string.h>
#include <sys/time.h>

#include "esp_log.h"
#include "esp_websocket_client.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "wsingest.h"

#define URL "ws://192.0.2.10:8765/v1/devices/esp32-7" /* your server */
#define TOKEN "wsi_..."                               /* from `wsingest device add esp32-7` */

static const char *TAG = "wsingest";
static esp_websocket_client_handle_t ws;
static SemaphoreHandle_t lock;
static wsi_client client; /* static: ~20 KiB with the default ring */

static int64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL); /* needs SNTP: ts are wall-clock epoch ms */
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Transport: the client queues the frame and sends it from its task. */
static int send_frame(void *ctx, const char *data, size_t len) {
    (void)ctx;
    if (!esp_websocket_client_is_connected(ws)) return WSI_BUSY;
    int n = esp_websocket_client_send_text(ws, data, (int)len, pdMS_TO_TICKS(1000));
    return n == (int)len ? WSI_SENT : WSI_BUSY;
}

static void on_failure(void *user, uint64_t seq, const char *error, const char *detail) {
    ESP_LOGW(TAG, "message %llu refused: %s: %s", (unsigned long long)seq, error, detail);
}

static bool on_command(void *user, const char *id, const char *name, const char *args, char *detail, size_t cap) {
    if (strcmp(name, "reboot") == 0) {
        snprintf(detail, cap, "rebooting");
        /* esp_restart() after the reply has gone out */
        return true;
    }
    snprintf(detail, cap, "unknown command %s", name);
    return false;
}

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data) {
    esp_websocket_event_data_t *d = data;
    xSemaphoreTake(lock, portMAX_DELAY);
    switch (id) {
    case WEBSOCKET_EVENT_CONNECTED:
        wsi_on_open(&client, now_ms());
        break;
    case WEBSOCKET_EVENT_DATA:
        if (d->op_code == 0x1 && d->payload_offset == 0 && d->data_len == d->payload_len)
            wsi_on_frame(&client, d->data_ptr, (size_t)d->data_len, now_ms());
        else if (d->op_code == 0x8 && d->data_len >= 2) /* close frame from the server */
            wsi_on_close(&client, ((uint8_t)d->data_ptr[0] << 8) | (uint8_t)d->data_ptr[1], "", now_ms());
        break;
    case WEBSOCKET_EVENT_DISCONNECTED:
    case WEBSOCKET_EVENT_CLOSED:
        if (client.open) wsi_on_close(&client, 1006, "", now_ms());
        break;
    case WEBSOCKET_EVENT_ERROR:
        /* A refused handshake: recent IDF versions report the HTTP status
         * in d->error_handle.esp_ws_handshake_status_code. */
        wsi_on_connect_failed(&client, d->error_handle.esp_ws_handshake_status_code, now_ms());
        break;
    }
    xSemaphoreGive(lock);
}

void app_main(void) {
    /* ... nvs_flash_init, Wi-Fi, SNTP ... */
    lock = xSemaphoreCreateMutex();
    wsi_transport tr = {send_frame, NULL};
    wsi_init(&client, &tr, 16);
    wsi_set_backoff(&client, 500, 30000, esp_random());
    wsi_set_callbacks(&client, on_failure, on_command, NULL);

    esp_websocket_client_config_t cfg = {
        .uri = URL,
        .subprotocol = WSI_SUBPROTOCOL,
        .headers = "Authorization: Bearer " TOKEN "\r\n",
        .disable_auto_reconnect = true, /* the core decides when (backoff, 1008) */
    };
    ws = esp_websocket_client_init(&cfg);
    esp_websocket_register_events(ws, WEBSOCKET_EVENT_ANY, on_event, NULL);

    int64_t next_sample = 0;
    bool pending = false; /* a sample built, waiting for room in the ring */
    for (;;) {
        int64_t t = now_ms();
        xSemaphoreTake(lock, portMAX_DELAY);
        if (wsi_stopped(&client)) {
            ESP_LOGE(TAG, "token refused or revoked: provisioning needed");
            xSemaphoreGive(lock);
            break;
        }
        if (!esp_websocket_client_is_connected(ws) && !client.open && t >= wsi_next_connect(&client)) {
            esp_websocket_client_stop(ws);
            esp_websocket_client_start(ws);
        }
        if (pending || t >= next_sample) {
            if (!pending) {
                wsi_begin(&client, "weather", 0); /* ts stamped by wsi_end, kept on resend */
                wsi_tag(&client, "site", "roof");
                wsi_field_f64(&client, "temp_c", 21.5);
                wsi_field_f64(&client, "rh", 40.2);
                next_sample = t + 10000;
            }
            /* Full: the sample (and its ts) is kept; wsi_end again later. */
            pending = wsi_end(&client, t) == WSI_EFULL;
        }
        if (wsi_poll(&client, t)) esp_websocket_client_close(ws, pdMS_TO_TICKS(1000)); /* no ack: drop */
        xSemaphoreGive(lock);
        vTaskDelay(pdMS_TO_TICKS(50));
    }
}
