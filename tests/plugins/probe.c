/* A test plugin in C99: answers every message with the result its
 * configuration names, and records nothing; or aborts the process when
 * handed a message to the address "crash_to" names (a transport that
 * crashes on one message). Its ELF constructor writes the
 * file named by $WM_TEST_MARKER (when set), so a test can tell whether any
 * of its code ran. Built also as "future" (it claims ABI 2.0), "older"
 * (ABI 1.1) and "misnamed" (its descriptor names another plugin) by
 * PROBE_* macros. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <waymark/transport_plugin.h>

#ifndef PROBE_ABI_MINOR
#define PROBE_ABI_MINOR WAYMARK_TRANSPORT_ABI_MINOR
#endif

__attribute__((constructor)) static void probe_loaded(void) {
  const char* marker = getenv("WM_TEST_MARKER");
  if (marker) {
    FILE* f = fopen(marker, "a");
    if (f) {
      fputs(PROBE_NAME "\n", f);
      fclose(f);
    }
  }
}

struct wm_transport {
  uint32_t kind;
  uint32_t smtp_code;
  uint32_t retry_after_ms;
  uint32_t max_batch;
  uint32_t fields_only;
  uint32_t bad_utf8;
  long window; /* -1: not idempotent */
  char crash_to[128];
  uint32_t calls;
  const wm_host* host;
};

/* The value of "key":NUMBER in a flat JSON object, or `otherwise`. */
static long json_number(wm_str json, const char* key, long otherwise) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char* at = strstr(json.ptr, pattern);
  return at ? strtol(at + strlen(pattern), NULL, 10) : otherwise;
}

/* The value of "key":"TEXT" in a flat JSON object (no escapes), or "". */
static void json_text(wm_str json, const char* key, char* out, size_t size) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
  const char* at = strstr(json.ptr, pattern);
  out[0] = '\0';
  if (!at) return;
  at += strlen(pattern);
  const char* end = strchr(at, '"');
  size_t n = end ? (size_t)(end - at) : 0;
  if (n >= size) n = size - 1;
  memcpy(out, at, n);
  out[n] = '\0';
}

static int probe_create(const wm_host* host, wm_str config, wm_transport** out, char* err,
                        size_t err_size) {
  if (json_number(config, "fail", 0)) {
    snprintf(err, err_size, "told to fail (instance %.*s)", (int)host->instance_name.len,
             host->instance_name.ptr);
    return WM_ERR_CONFIG;
  }
  wm_transport* t = calloc(1, sizeof *t);
  if (!t) return WM_ERR_RESOURCE;
  t->kind = (uint32_t)json_number(config, "kind", WM_RESULT_ACCEPTED);
  t->smtp_code = (uint32_t)json_number(config, "smtp_code", 0);
  t->retry_after_ms = (uint32_t)json_number(config, "retry_after_ms", 0);
  t->max_batch = (uint32_t)json_number(config, "max_batch", 0);
  t->fields_only = (uint32_t)json_number(config, "fields_only", 0);
  t->bad_utf8 = (uint32_t)json_number(config, "bad_utf8", 0);
  t->window = json_number(config, "window", -1);
  json_text(config, "crash_to", t->crash_to, sizeof t->crash_to);
  t->host = host;
  *out = t;
  return WM_OK;
}

static void probe_destroy(wm_transport* t) {
  free(t);
}

static void probe_info(wm_transport* t, wm_transport_info* out) {
  out->max_batch = t->max_batch;
  if (t->fields_only && t->host->abi_minor >= 2) out->flags = WM_TRANSPORT_FIELDS_ONLY;
  if (t->window >= 0) {
    out->flags |= WM_TRANSPORT_IDEMPOTENT;
    out->idempotency_window_s = (uint32_t)t->window;
  }
  snprintf(out->description, sizeof out->description, "the probe (answers kind %u)", t->kind);
  if (t->bad_utf8) snprintf(out->description, sizeof out->description, "bad \xff\nline");
}

static void probe_send_batch(wm_transport* t, const wm_message* messages, size_t count,
                             wm_send_result* results, uint32_t timeout_ms) {
  (void)timeout_ms;
  t->calls++;
  for (size_t i = 0; i < count; ++i) {
    const wm_message* m = wm_message_at(messages, i);
    wm_send_result* r = wm_result_at(results, i);
    if (t->crash_to[0] && m->recipients[0].len == strlen(t->crash_to) &&
        memcmp(m->recipients[0].ptr, t->crash_to, m->recipients[0].len) == 0) {
      abort();
    }
    r->kind = t->kind;
    r->smtp_code = (uint16_t)t->smtp_code;
    r->retry_after_ms = t->retry_after_ms;
    if (t->kind == WM_RESULT_THROTTLED) r->throttle_scope = WM_THROTTLE_DOMAIN;
    if (t->smtp_code)
      snprintf(r->enhanced_status, sizeof r->enhanced_status, "%u.1.1", t->smtp_code / 100);
    snprintf(r->provider_message_id, sizeof r->provider_message_id, "probe-%.*s",
             (int)m->idempotency_key.len, m->idempotency_key.ptr);
    /* The parts are 1.1's: a 1.0 host has none. */
    wm_str subject = {"", 0};
    if (WM_HAS_FIELD(wm_message, m, list_unsubscribe)) subject = m->subject;
    snprintf(
        r->text, sizeof r->text,
        "call %u of %zu; to %.*s from %.*s; intent %u attempt %u; data %zu bytes; subject %.*s",
        t->calls, count, (int)m->recipients[0].len, m->recipients[0].ptr, (int)m->envelope_from.len,
        m->envelope_from.ptr, m->intent, m->attempt, m->data.len, (int)subject.len, subject.ptr);
    if (t->bad_utf8) {
      /* A stray byte, a surrogate, and a character cut at the end. */
      snprintf(r->text, sizeof r->text, "bad \xff here, \xed\xa0\x80 there, cut \xc3");
      snprintf(r->provider_message_id, sizeof r->provider_message_id, "id-\xfe");
    }
  }
}

const wm_transport_plugin waymark_transport_plugin = {
    .struct_size = (uint32_t)sizeof(wm_transport_plugin),
    .magic = WAYMARK_TRANSPORT_MAGIC,
    .abi_major = PROBE_ABI_MAJOR,
    .abi_minor = PROBE_ABI_MAJOR == WAYMARK_TRANSPORT_ABI_MAJOR ? PROBE_ABI_MINOR : 0,
    .name = PROBE_DESCRIPTOR_NAME,
    .version = "0.0.1",
    .summary = "a test plugin that answers what it is told",
    .config_schema = "probe.schema.json",
    .create = probe_create,
    .destroy = probe_destroy,
    .info = probe_info,
    .send_batch = probe_send_batch,
};
