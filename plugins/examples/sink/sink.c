/* sink.c: a transport plugin that keeps nothing. Configuration: {}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <waymark/transport_plugin.h>

#define SINK_MAX_BYTES (10u * 1024 * 1024)

struct wm_transport { /* the opaque handle: the plugin defines it */
  const wm_host* host;
  unsigned long long accepted; /* no lock: one thread at a time per instance */
};

static int ends_with(wm_str s, const char* suffix) {
  size_t n = strlen(suffix);
  return s.len >= n && memcmp(s.ptr + s.len - n, suffix, n) == 0;
}

static void answer(wm_send_result* r, uint32_t kind, uint16_t smtp, const char* enhanced,
                   const char* text) {
  r->kind = kind;
  r->smtp_code = smtp;
  snprintf(r->enhanced_status, sizeof r->enhanced_status, "%s", enhanced);
  snprintf(r->text, sizeof r->text, "%s", text);
}

static int sink_create(const wm_host* host, wm_str config_json, wm_transport** out, char* err,
                       size_t err_size) {
  (void)config_json; /* the schema admits only {} */
  wm_transport* t = calloc(1, sizeof *t);
  if (t == NULL) {
    snprintf(err, err_size, "out of memory");
    return WM_ERR_RESOURCE;
  }
  t->host = host;
  host->log(host->ctx, WM_LOG_INFO, "ready", 5);
  *out = t;
  return WM_OK;
}

static void sink_destroy(wm_transport* t) { free(t); }

static void sink_info(wm_transport* t, wm_transport_info* out) {
  (void)t;
  snprintf(out->description, sizeof out->description, "nowhere (sink plugin)");
}

static void sink_send_batch(wm_transport* t, const wm_message* messages, size_t count,
                            wm_send_result* results, uint32_t timeout_ms) {
  (void)timeout_ms; /* never blocks */
  for (size_t i = 0; i < count; ++i) {
    const wm_message* m = wm_message_at(messages, i); /* never messages[i] */
    wm_send_result* r = wm_result_at(results, i);
    int invalid = 0;
    for (size_t j = 0; j < m->recipient_count; ++j)
      invalid |= ends_with(m->recipients[j], ".invalid");
    if (m->data.len > SINK_MAX_BYTES) {
      answer(r, WM_RESULT_PERMANENT_MESSAGE, 552, "5.3.4", "message too big");
    } else if (invalid) {
      answer(r, WM_RESULT_PERMANENT_RECIPIENT, 550, "5.1.1", "no such user");
    } else {
      answer(r, WM_RESULT_ACCEPTED, 250, "2.0.0", "ok");
      snprintf(r->provider_message_id, sizeof r->provider_message_id, "sink-%llu",
               ++t->accepted);
    }
  }
}

WAYMARK_PLUGIN_EXPORT const wm_transport_plugin waymark_transport_plugin = {
    WAYMARK_TRANSPORT_PLUGIN_HEADER,
    .name = "sink",
    .version = "0.1.0",
    .summary = "accepts everything, keeps nothing",
    .config_schema = "sink.schema.json",
    .create = sink_create,
    .destroy = sink_destroy,
    .info = sink_info,
    .send_batch = sink_send_batch,
};
