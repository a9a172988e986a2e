/*
 * waymark/transport_plugin.h: the transport plugin C ABI, version 1.2.
 *
 * A transport plugin is a shared library that takes rendered RFC 5322
 * messages and says what became of each one, in the result taxonomy below.
 * This header is the whole contract: C99, no dependency beyond <stddef.h>
 * and <stdint.h>, usable from C and C++. docs/plugins.md is the guide.
 *
 * The model is SQLite's VFS and Vulkan's structs: one exported entry symbol,
 * structs that start with their size and only ever grow at the end, opaque
 * handles, buffers as {ptr, len}, and whoever allocates frees.
 *
 * Entry symbol. A plugin exports exactly one symbol, the constant data
 * object `waymark_transport_plugin` (a wm_transport_plugin, defined with
 * WAYMARK_TRANSPORT_PLUGIN_HEADER as its first initializers). It is data,
 * not a function, so that the host can read and check its first 16 bytes
 * (struct_size, magic, abi_major, abi_minor) from the file before it calls
 * dlopen(): a plugin of another major version, or a file that is not a
 * plugin, is refused before any of its code runs, including its ELF
 * constructors. Those 16 bytes keep this layout in every major version.
 *
 * Versioning. The host loads a plugin only when
 *   magic == WAYMARK_TRANSPORT_MAGIC,
 *   abi_major == the host's WAYMARK_TRANSPORT_ABI_MAJOR, and
 *   abi_minor >= the oldest minor the host still supports (0 for now).
 * A plugin built for a newer minor than the host's is loaded: it learns the
 * host's minor from wm_host.abi_minor and must neither read nor return
 * anything newer than that. A minor version only adds fields at the end of
 * structs, enum values and flag bits; a field's zero value always means
 * "absent", so a side that does not know a field leaves it zero. Anything
 * else (removing, reordering or retyping a field, changing a meaning) is a
 * new major version.
 *
 * Struct sizes. Every struct begins with `uint32_t struct_size`, set by the
 * side that allocates it to sizeof() as that side compiled it. Read a field
 * only if WM_HAS_FIELD says it is present. Arrays of structs (messages,
 * results) are strided by the struct_size of their elements, which is the
 * same for every element of one array: index them with wm_message_at() and
 * wm_result_at(), never with [] (a host built against a newer header has
 * larger elements than your sizeof).
 *
 * Threading. The host calls one instance (wm_transport) from one thread at
 * a time: calls on the same instance never overlap, but successive calls
 * may come from different threads, so keep no per-instance state in
 * thread-locals. Different instances, of the same plugin or not, are called
 * concurrently. create() and destroy() of one plugin are never called
 * concurrently with each other, so process-wide set-up (curl_global_init()
 * and the like) may be done in the first create() and undone in the last
 * destroy(); they may run while send_batch() runs on other instances.
 *
 * Ownership. Everything the host passes in is owned by the host and valid
 * only for the duration of the call, except wm_host, which stays valid
 * until destroy() returns. Everything the plugin returns by pointer (the
 * descriptor and its strings) is owned by the plugin and static. Output
 * structs (wm_transport_info, wm_send_result) are allocated and zeroed by
 * the host; the plugin writes fixed-size fields in place, so no memory
 * changes hands. An instance is allocated by create() and freed by
 * destroy().
 *
 * What a plugin must not do: throw a C++ exception or longjmp across this
 * ABI; call exit() or abort() for anything a caller could recover from;
 * change process-wide state (signal dispositions, locale, umask, working
 * directory, environment); rely on SIGPIPE being ignored (use MSG_NOSIGNAL);
 * do work in ELF constructors (they run at dlopen(), and for
 * `waymark plugins` too); log recipient addresses at WM_LOG_INFO or above.
 */
#ifndef WAYMARK_TRANSPORT_PLUGIN_H_
#define WAYMARK_TRANSPORT_PLUGIN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Versions, names, symbols                                                  */

#define WAYMARK_TRANSPORT_ABI_MAJOR 1
#define WAYMARK_TRANSPORT_ABI_MINOR 2

/* "WMTP" read as a big-endian number; stored in native byte order. */
#define WAYMARK_TRANSPORT_MAGIC 0x574D5450u

/* The name of the one exported symbol (for dlsym() and ELF look-ups). */
#define WAYMARK_TRANSPORT_ENTRY_SYMBOL "waymark_transport_plugin"

/* Plugins are built with -fvisibility=hidden; only the entry is exported. */
#if defined(_WIN32)
#define WAYMARK_PLUGIN_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define WAYMARK_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define WAYMARK_PLUGIN_EXPORT
#endif

/* True if `ptr` (a pointer to a struct of type `type`) is large enough to
 * hold `field`, according to its struct_size. */
#define WM_HAS_FIELD(type, ptr, field) \
  ((ptr)->struct_size >= offsetof(type, field) + sizeof(((const type*)0)->field))

/* ------------------------------------------------------------------------ */
/* Buffers and small enums                                                   */

/* A byte string: `len` bytes at `ptr`. Strings the host passes in are also
 * followed by a NUL (ptr[len] == '\0'), so they can be used as C strings
 * when they contain no NUL themselves. An empty string has len 0 and a
 * valid ptr. */
typedef struct wm_str {
  const char* ptr;
  size_t len;
} wm_str;

/* Return values of create(). */
typedef enum wm_status {
  WM_OK = 0,
  WM_ERR_CONFIG = 1,   /* the configuration is unusable: the operator must change it */
  WM_ERR_RESOURCE = 2, /* out of memory, a file or library that cannot be opened, ... */
  WM_ERR_INTERNAL = 3  /* a bug in the plugin */
} wm_status;

/* Why the host sends a message (the journey's `send ... intent`). Providers
 * with separate streams or pools for transactional and bulk mail (Postmark
 * message streams, SES configuration sets) route on it. */
typedef enum wm_intent {
  WM_INTENT_UNSET = 0,
  WM_INTENT_TRANSACTIONAL = 1,
  WM_INTENT_MARKETING = 2,
  WM_INTENT_DIGEST = 3
} wm_intent;

typedef enum wm_log_level {
  WM_LOG_ERROR = 1,
  WM_LOG_WARN = 2,
  WM_LOG_INFO = 3,
  WM_LOG_DEBUG = 4
} wm_log_level;

/* ------------------------------------------------------------------------ */
/* The result taxonomy                                                       */

/* What became of one message. The names match the result strings the
 * engine records ("accepted", "retry_later", ...). docs/plugins.md has the
 * table of when to use each and what the engine does. */
typedef enum wm_result_kind {
  /* Never a valid answer: a result the plugin left unset is treated as
   * WM_RESULT_AMBIGUOUS, and the host logs a plugin error. */
  WM_RESULT_UNSET = 0,
  /* The provider took the message (2xx, SMTP 250). Not yet "delivered".
   * provider_message_id: the provider's id for it. */
  WM_RESULT_ACCEPTED = 1,
  /* The provider had already accepted this idempotency key and says so
   * (an idempotent replay, an existing file). Treated as accepted.
   * provider_message_id: the original's id, when the provider gives it. */
  WM_RESULT_DUPLICATE = 2,
  /* Slow down; not sent. throttle_scope says what is limited;
   * retry_after_ms is the provider's Retry-After, or 0. No attempt spent. */
  WM_RESULT_THROTTLED = 3,
  /* A quota that resets later is used up (a daily quota): not sent.
   * retry_after_ms: time until the reset, or 0 if unknown. */
  WM_RESULT_QUOTA_EXHAUSTED = 4,
  /* A transient failure, and the message was certainly not sent (a
   * connection refused, 421/451, 452 4.2.2, HTTP 5xx, a timeout before the
   * body was sent). retry_after_ms: a hint, or 0. */
  WM_RESULT_RETRY_LATER = 5,
  /* The message may or may not have been accepted (a timeout or a dropped
   * connection after the body was sent, before the reply). */
  WM_RESULT_AMBIGUOUS = 6,
  /* The recipient address will never accept mail (5.1.1, 5.1.2, 553,
   * Postmark 406 inactive recipient). The engine suppresses the address. */
  WM_RESULT_PERMANENT_RECIPIENT = 7,
  /* This message will never be accepted, but the address is fine (5.7.x
   * content or policy, 552 5.3.4 size, a validation error). */
  WM_RESULT_PERMANENT_MESSAGE = 8,
  /* The provider account cannot send at all (401/403, an unverified
   * sending domain, a suspended account). Not the message's fault. */
  WM_RESULT_PROVIDER_FAULT = 9
} wm_result_kind;

/* What a WM_RESULT_THROTTLED limit applies to. */
typedef enum wm_throttle_scope {
  WM_THROTTLE_UNSET = 0,     /* treated as WM_THROTTLE_PROVIDER */
  WM_THROTTLE_PROVIDER = 1,  /* the provider account, or this sending IP (429, 454, 421 4.7.0) */
  WM_THROTTLE_DOMAIN = 2,    /* the recipient's domain or MX group (421 4.7.28) */
  WM_THROTTLE_RECIPIENT = 3  /* this one mailbox (450 4.2.1) */
} wm_throttle_scope;

/* Capacities of the fixed-size text fields below, NUL included. */
#define WM_ENHANCED_STATUS_SIZE 16
#define WM_PROVIDER_CODE_SIZE 64
#define WM_PROVIDER_MESSAGE_ID_SIZE 256
#define WM_RESULT_TEXT_SIZE 512
#define WM_DESCRIPTION_SIZE 256
/* The host's buffer for create() errors is at least this large. */
#define WM_ERROR_MIN_SIZE 512

/* ------------------------------------------------------------------------ */
/* Structs                                                                   */

/* An instance of a transport: one configured provider account, connection
 * pool, directory... Opaque to the host; defined by the plugin. */
typedef struct wm_transport wm_transport;

/* What the host offers the plugin. Allocated by the host; valid from the
 * start of create() until destroy() of that instance returns, so the plugin
 * may keep the pointer in its instance. */
typedef struct wm_host {
  uint32_t struct_size;
  uint16_t abi_major; /* the host's WAYMARK_TRANSPORT_ABI_MAJOR */
  uint16_t abi_minor; /* the host's WAYMARK_TRANSPORT_ABI_MINOR: use nothing newer */
  /* The name the operator gave this transport in waymark.toml ("resend_eu"),
   * for messages. */
  wm_str instance_name;
  /* Pass back as the first argument of the callbacks below. */
  void* ctx;
  /* Writes one log line, attributed to this instance. `msg` is `len` bytes
   * of UTF-8 without a trailing newline, owned by the caller and copied
   * before log() returns. Thread-safe: may be called from any thread,
   * plugin-owned threads included, while the instance exists. */
  void (*log)(void* ctx, uint32_t level, const char* msg, size_t len);
} wm_host;

/* One message to send. Allocated by the host, with everything it points to;
 * valid only during the send_batch() call. Copy what you need to keep. */
typedef struct wm_message {
  uint32_t struct_size;
  uint32_t intent; /* a wm_intent */
  /* 1 for the first attempt with this idempotency key, then 2, 3...: the
   * attempts that count against max_attempts. One that was answered
   * without spending an attempt (throttled, quota_exhausted), or whose
   * answer a crash kept from being stored, is made again with the same
   * number. */
  uint32_t attempt;
  uint32_t flags; /* none are defined in 1.0; 0 */
  /* Derived from the send's meaning: every attempt of the same send has the
   * same key. Printable ASCII, 1 to 255 bytes. Give it to providers that
   * take one (Resend's Idempotency-Key); the message's Message-ID is
   * derived from it too. */
  wm_str idempotency_key;
  /* The complete RFC 5322 message: headers and body, CRLF line ends, as it
   * must go on the wire (no SMTP dot-stuffing). Empty when the instance
   * set WM_TRANSPORT_FIELDS_ONLY and the host is 1.2 or later. */
  wm_str data;
  /* The envelope sender (SMTP MAIL FROM) as an addr-spec; empty for the
   * null reverse-path "<>". */
  wm_str envelope_from;
  /* The envelope recipients (SMTP RCPT TO), addr-specs; at least one. The
   * engine sends one recipient per message today. */
  const wm_str* recipients;
  size_t recipient_count;
  /* ABI 1.1. The message's parts as the journey rendered them, for
   * providers whose API takes fields rather than a whole message (Resend,
   * Postmark): UTF-8, not encoded, empty when absent. They say what `data`
   * says; a plugin uses one or the other. Present when
   * WM_HAS_FIELD(wm_message, m, list_unsubscribe). */
  wm_str subject;
  wm_str from_header;      /* the From mailbox: "Name <addr>" or "addr" */
  wm_str text_body;        /* the text/plain part */
  wm_str html_body;        /* the text/html part */
  wm_str list_unsubscribe; /* RFC 8058 one-click URL (marketing mail), or empty */
} wm_message;

/* What became of one message. Allocated by the host and zeroed, with
 * struct_size set; the plugin fills it in place. The text fields are
 * NUL-terminated UTF-8 and "" when there is nothing to say; truncate
 * `text` as needed, but never the other fields (see docs/plugins.md for an
 * id that does not fit). */
typedef struct wm_send_result {
  uint32_t struct_size;
  uint32_t kind;           /* a wm_result_kind; must be set */
  uint32_t throttle_scope; /* a wm_throttle_scope, for WM_RESULT_THROTTLED */
  /* THROTTLED: the provider's Retry-After. QUOTA_EXHAUSTED: time until the
   * quota resets. RETRY_LATER: a hint. 0: no hint, the engine decides. */
  uint32_t retry_after_ms;
  uint16_t smtp_code;   /* the basic SMTP reply code (250, 421, 550), or 0 */
  uint16_t http_status; /* the HTTP status of the provider's answer (202, 429), or 0 */
  uint32_t reserved;    /* 0 */
  /* RFC 3463 enhanced status code, "class.subject.detail" ("5.1.1"). */
  char enhanced_status[WM_ENHANCED_STATUS_SIZE];
  /* The provider's own error code ("rate_limit_exceeded",
   * "MessageRejected", "TSS04"). */
  char provider_code[WM_PROVIDER_CODE_SIZE];
  /* The provider's id for the message (ACCEPTED, DUPLICATE). Feedback
   * (bounces, deliveries) is correlated by it. */
  char provider_message_id[WM_PROVIDER_MESSAGE_ID_SIZE];
  /* The provider's reply text, or why the plugin decided what it did. May
   * be truncated. No secrets; no recipient address outside DEBUG. */
  char text[WM_RESULT_TEXT_SIZE];
} wm_send_result;

/* Flags of wm_transport_info. */
/* The provider deduplicates by wm_message.idempotency_key for at least
 * idempotency_window_s: an ambiguous send may be retried with its key. */
#define WM_TRANSPORT_IDEMPOTENT (1u << 0)
/* send_batch() uses the provider's batch API (for display only). */
#define WM_TRANSPORT_NATIVE_BATCH (1u << 1)
/* ABI 1.2. send_batch() reads the message's parts (subject, from_header,
 * text_body, html_body, list_unsubscribe) and never `data`: a host of 1.2
 * or later then passes `data` empty and does not build it. The host checks
 * every message as it would build it (addresses, header values), so a
 * message is refused for the same reasons either way. Set it only when
 * wm_host.abi_minor >= 2 (the host believes it only from a plugin built
 * for 1.2 or later). An older host passes `data` as before; a 1.0 host
 * passes no parts at all (check WM_HAS_FIELD(wm_message, m,
 * list_unsubscribe) and answer WM_RESULT_PERMANENT_MESSAGE, or read
 * `data`, when they are absent). */
#define WM_TRANSPORT_FIELDS_ONLY (1u << 2)

/* What an instance can do. Allocated by the host and zeroed, with
 * struct_size set; the plugin fills it in place. */
typedef struct wm_transport_info {
  uint32_t struct_size;
  uint32_t flags;                /* WM_TRANSPORT_* bits */
  uint32_t max_batch;            /* the most messages per send_batch() call; 0 = no limit */
  uint32_t idempotency_window_s; /* with WM_TRANSPORT_IDEMPOTENT (Resend: 86400): an ambiguous
                                    send is retried only this long after its first attempt;
                                    0: not stated (no limit); UINT32_MAX: for ever */
  /* Where the messages go, for people: "api.resend.com (account re_...4f2a)",
   * "outbox/ (one .eml per message)". No secrets. */
  char description[WM_DESCRIPTION_SIZE];
} wm_transport_info;

/* The descriptor: the type of the exported `waymark_transport_plugin`. A
 * constant, owned by the plugin, valid until the process exits (the host
 * never dlclose()s a plugin). */
typedef struct wm_transport_plugin {
  /* The frozen header: these four fields, at these offsets, in every major
   * version. Set them with WAYMARK_TRANSPORT_PLUGIN_HEADER. */
  uint32_t struct_size; /* sizeof(wm_transport_plugin) as the plugin compiled it */
  uint32_t magic;       /* WAYMARK_TRANSPORT_MAGIC */
  uint16_t abi_major;   /* WAYMARK_TRANSPORT_ABI_MAJOR */
  uint16_t abi_minor;   /* WAYMARK_TRANSPORT_ABI_MINOR */
  uint32_t reserved;    /* 0 */

  /* The plugin's name, [a-z][a-z0-9_]{0,31}. It must equal the file's name
   * without ".so": plugin "resend" is PLUGIN_DIR/resend.so. */
  const char* name;
  /* The plugin's own version, "MAJOR.MINOR.PATCH" (SemVer). */
  const char* version;
  /* One line saying what it is, for `waymark plugins`. */
  const char* summary;
  /* The file name (no directory) of the JSON Schema of its configuration,
   * installed beside the plugin in the plugin directory:
   * "resend.schema.json". The host validates the configuration against it
   * before calling create(); a missing schema file refuses the plugin. */
  const char* config_schema;

  /* Creates an instance from its configuration.
   *   host: see wm_host; the plugin may keep the pointer until destroy().
   *   config_json: the instance's configuration as JSON text (UTF-8, an
   *     object), already validated against config_schema. Owned by the
   *     host, valid during the call only. The plugin still reports what a
   *     schema cannot express (a directory that does not exist).
   *   out: on WM_OK, receives the new instance, which the plugin allocated
   *     and will free in destroy(). Untouched otherwise.
   *   err, err_size: a buffer owned by the host, err_size >=
   *     WM_ERROR_MIN_SIZE. On failure the plugin writes why, one line,
   *     NUL-terminated, truncated to fit; no secrets. Untouched on WM_OK.
   * Returns a wm_status. On failure nothing is left allocated and destroy()
   * is not called. Should not wait on the network: connect lazily in
   * send_batch(), so that a provider outage does not stop the engine from
   * starting. Threading: never concurrent with create()/destroy() of the
   * same plugin; may run while other instances send. */
  int (*create)(const wm_host* host, wm_str config_json, wm_transport** out, char* err,
                size_t err_size);

  /* Frees the instance and everything it owns. Called once per successful
   * create(), never with NULL, never while another call on `t` runs, and no
   * call on `t` follows. Joins any threads the instance started; after it
   * returns the plugin must not call host->log for it. Threading: never
   * concurrent with create()/destroy() of the same plugin. */
  void (*destroy)(wm_transport* t);

  /* Describes the instance: fills `out` (host-owned, zeroed, struct_size
   * set), writing only fields within out->struct_size. Called after
   * create() and before the first send_batch(), and possibly again later.
   * Threading: the instance rule (one thread at a time per instance). */
  void (*info)(wm_transport* t, wm_transport_info* out);

  /* Sends `count` messages (1 <= count <= max_batch when max_batch != 0)
   * and fills results[i] for messages[i]. Index both arrays with
   * wm_message_at() / wm_result_at(). Every result must get a kind: there
   * is no failure of the call as a whole (an expired API key is
   * WM_RESULT_PROVIDER_FAULT for each message). A plugin without a batch
   * API sends the messages one by one, in order.
   *   messages: host-owned, valid during the call only.
   *   results: host-owned, zeroed, struct_size set in each; the plugin
   *     writes in place.
   *   timeout_ms: return within about this long. A message not started
   *     by then is WM_RESULT_THROTTLED of scope WM_THROTTLE_PROVIDER (the
   *     provider's pace: no attempt spent); one started and not finished
   *     is WM_RESULT_RETRY_LATER if its body was not sent yet,
   *     WM_RESULT_AMBIGUOUS if it was.
   * Blocking. Threading: the instance rule; other instances may send
   * concurrently. */
  void (*send_batch)(wm_transport* t, const wm_message* messages, size_t count,
                     wm_send_result* results, uint32_t timeout_ms);
  /* ABI 1.1 and later add fields here. */
} wm_transport_plugin;

/* The first initializers of the descriptor, in designated form (valid in
 * C99 and C++20). Follow them with the other fields, in order:
 *
 *   const wm_transport_plugin waymark_transport_plugin = {
 *       WAYMARK_TRANSPORT_PLUGIN_HEADER,
 *       .name = "sink", .version = "0.1.0", ... };
 */
#define WAYMARK_TRANSPORT_PLUGIN_HEADER                                           \
  .struct_size = (uint32_t)sizeof(wm_transport_plugin),                           \
  .magic = WAYMARK_TRANSPORT_MAGIC, .abi_major = WAYMARK_TRANSPORT_ABI_MAJOR,     \
  .abi_minor = WAYMARK_TRANSPORT_ABI_MINOR, .reserved = 0

/* The entry symbol. Declared here with default visibility and C linkage so
 * that the plugin's definition is exported under this exact name (also
 * from C++, where a namespace-scope const would otherwise have internal
 * linkage). The host never defines it; it finds it in the file and with
 * dlsym(). */
WAYMARK_PLUGIN_EXPORT extern const wm_transport_plugin waymark_transport_plugin;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* The i-th element of an array whose elements are first->struct_size
 * bytes apart. */
static inline const wm_message* wm_message_at(const wm_message* first, size_t i) {
  return (const wm_message*)(const void*)((const char*)first + i * first->struct_size);
}

static inline wm_send_result* wm_result_at(wm_send_result* first, size_t i) {
  return (wm_send_result*)(void*)((char*)first + i * first->struct_size);
}

/* The frozen header cannot move: fail to compile if it did. */
typedef char wm_check_header_struct_size_[offsetof(wm_transport_plugin, struct_size) == 0 ? 1 : -1];
typedef char wm_check_header_magic_[offsetof(wm_transport_plugin, magic) == 4 ? 1 : -1];
typedef char wm_check_header_abi_major_[offsetof(wm_transport_plugin, abi_major) == 8 ? 1 : -1];
typedef char wm_check_header_abi_minor_[offsetof(wm_transport_plugin, abi_minor) == 10 ? 1 : -1];
typedef char wm_check_header_name_[offsetof(wm_transport_plugin, name) >= 16 ? 1 : -1];

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* WAYMARK_TRANSPORT_PLUGIN_H_ */
