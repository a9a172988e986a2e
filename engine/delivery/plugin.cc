#include "engine/delivery/plugin.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <waymark/transport_plugin.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>

#include "engine/base/json_schema.h"
#include "engine/base/json_text.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A plugin directory that is not one: not there, or something else.
Status NoDirectory(const fs::path& dir) {
  std::error_code ec;
  return Status::Error("the plugin directory " + dir.string() +
                       (fs::exists(dir, ec) ? " is not a directory" : " does not exist"));
}

#if defined(__x86_64__)
constexpr uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr uint16_t kHostMachine = EM_AARCH64;
#else
#error "the plugin loader knows the ELF machine of x86-64 and AArch64 only"
#endif
static_assert(sizeof(void*) == 8, "the plugin loader reads 64-bit ELF");

constexpr size_t kHeaderSize = 16;  // struct_size, magic, abi_major, abi_minor, reserved

// The frozen header of a descriptor, as bytes, and read from them.
struct Header {
  unsigned char bytes[kHeaderSize];
  uint32_t struct_size() const { return Get<uint32_t>(0); }
  uint32_t magic() const { return Get<uint32_t>(4); }
  uint16_t major() const { return Get<uint16_t>(8); }
  uint16_t minor() const { return Get<uint16_t>(10); }
  template <typename T>
  T Get(size_t off) const {
    T v;
    std::memcpy(&v, bytes + off, sizeof v);
    return v;
  }
};

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 32 || name[0] < 'a' || name[0] > 'z') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool ReadAt(int fd, void* out, size_t n, uint64_t off) {
  auto* p = static_cast<char*>(out);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, off_t(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
    off += uint64_t(r);
  }
  return true;
}

// Step 2: the descriptor's header, read from the ELF file without loading
// it. Every offset and size in the file is checked against the file's size.
Result<Header> ReadHeader(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Error(std::string("fstat: ") + std::strerror(errno));
  const uint64_t size = uint64_t(st.st_size);
  auto in_file = [&](uint64_t off, uint64_t len) { return off <= size && len <= size - off; };
  Elf64_Ehdr eh;
  if (!in_file(0, sizeof eh) || !ReadAt(fd, &eh, sizeof eh, 0) ||
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return Status::Error("not an ELF file");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) return Status::Error("not a 64-bit ELF file");
  const unsigned char host_data =
      std::endian::native == std::endian::little ? ELFDATA2LSB : ELFDATA2MSB;
  if (eh.e_ident[EI_DATA] != host_data) return Status::Error("an ELF file of the other byte order");
  if (eh.e_type != ET_DYN)
    return Status::Error("not a shared library (ELF type " + std::to_string(eh.e_type) + ")");
  if (eh.e_machine != kHostMachine) {
    return Status::Error("built for another machine (ELF machine " + std::to_string(eh.e_machine) +
                         ", this one is " + std::to_string(kHostMachine) + ")");
  }
  if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 ||
      !in_file(eh.e_shoff, uint64_t(eh.e_shnum) * sizeof(Elf64_Shdr))) {
    return Status::Error("an ELF file without usable section headers");
  }
  std::vector<Elf64_Shdr> sections(eh.e_shnum);
  if (!ReadAt(fd, sections.data(), sections.size() * sizeof(Elf64_Shdr), eh.e_shoff)) {
    return Status::Error("cannot read its section headers");
  }
  const Elf64_Shdr* dynsym = nullptr;
  for (const Elf64_Shdr& s : sections) {
    if (s.sh_type == SHT_DYNSYM) dynsym = &s;
  }
  const std::string missing = std::string("no exported symbol '") + WAYMARK_TRANSPORT_ENTRY_SYMBOL +
                              "': not a Waymark transport plugin";
  if (!dynsym) return Status::Error(missing);
  if (dynsym->sh_link >= sections.size() || dynsym->sh_entsize != sizeof(Elf64_Sym) ||
      !in_file(dynsym->sh_offset, dynsym->sh_size)) {
    return Status::Error("a malformed dynamic symbol table");
  }
  const Elf64_Shdr& strtab = sections[dynsym->sh_link];
  if (!in_file(strtab.sh_offset, strtab.sh_size)) return Status::Error("a malformed string table");
  std::vector<Elf64_Sym> syms(dynsym->sh_size / sizeof(Elf64_Sym));
  std::string names(strtab.sh_size, '\0');
  if (!ReadAt(fd, syms.data(), syms.size() * sizeof(Elf64_Sym), dynsym->sh_offset) ||
      !ReadAt(fd, names.data(), names.size(), strtab.sh_offset)) {
    return Status::Error("cannot read its dynamic symbols");
  }
  const std::string_view entry = WAYMARK_TRANSPORT_ENTRY_SYMBOL;
  for (const Elf64_Sym& sym : syms) {
    if (sym.st_name >= names.size() ||
        names.compare(sym.st_name, entry.size() + 1, std::string(entry).c_str(),
                      entry.size() + 1) != 0) {
      continue;
    }
    if (sym.st_shndx == SHN_UNDEF) return Status::Error(missing);
    if (ELF64_ST_TYPE(sym.st_info) != STT_OBJECT) {
      return Status::Error(std::string("'") + WAYMARK_TRANSPORT_ENTRY_SYMBOL +
                           "' is not a data object (a function?): not a Waymark transport plugin");
    }
    if (sym.st_size < kHeaderSize || sym.st_shndx >= sections.size()) {
      return Status::Error(std::string("'") + WAYMARK_TRANSPORT_ENTRY_SYMBOL +
                           "' is too small to be a descriptor");
    }
    const Elf64_Shdr& sec = sections[sym.st_shndx];
    if (sec.sh_type == SHT_NOBITS || sym.st_value < sec.sh_addr ||
        sym.st_value - sec.sh_addr > sec.sh_size ||
        sec.sh_size - (sym.st_value - sec.sh_addr) < kHeaderSize ||
        !in_file(sec.sh_offset + (sym.st_value - sec.sh_addr), kHeaderSize)) {
      return Status::Error(std::string("'") + WAYMARK_TRANSPORT_ENTRY_SYMBOL +
                           "' has no initial value in the file");
    }
    Header h;
    if (!ReadAt(fd, h.bytes, kHeaderSize, sec.sh_offset + (sym.st_value - sec.sh_addr))) {
      return Status::Error("cannot read its descriptor");
    }
    return h;
  }
  return Status::Error(missing);
}

// The header's verdict: "" or why the host refuses it.
std::string CheckHeader(const Header& h) {
  if (h.magic() != WAYMARK_TRANSPORT_MAGIC) {
    return "its descriptor does not start with the transport plugin magic: not a Waymark "
           "transport plugin";
  }
  if (h.major() != WAYMARK_TRANSPORT_ABI_MAJOR) {
    return "built for transport plugin ABI " + std::to_string(h.major()) + "." +
           std::to_string(h.minor()) + "; this waymark loads ABI " +
           std::to_string(WAYMARK_TRANSPORT_ABI_MAJOR) +
           ".x: rebuild the plugin against this waymark's header";
  }
  if (h.struct_size() < offsetof(wm_transport_plugin, send_batch) + sizeof(void*)) {
    return "its descriptor (" + std::to_string(h.struct_size()) +
           " bytes) is smaller than ABI 1.0's";
  }
  return "";
}

// Steps 1 and 2: the file opened (its descriptor returned in *fd) and its
// header read, or why it is refused.
Status Inspect(const fs::path& dir, const std::string& name, PluginDescription* d, int* fd) {
  *fd = -1;
  d->name = name;
  d->path = dir / (name + ".so");
  if (!ValidName(name)) {
    return Status::Error(
        "a plugin is named [a-z][a-z0-9_]{0,31} and is loaded from the plugin "
        "directory only; '" +
        name + "' is not such a name");
  }
  std::error_code ec;
  fs::path real_dir = fs::canonical(dir, ec);
  struct stat st;
  if (ec || ::stat(real_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return NoDirectory(dir);
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return Status::Error("the plugin directory " + dir.string() +
                         " is writable by group or others");
  }
  int f = ::open(d->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f < 0) return Status::Error(std::string("cannot open: ") + std::strerror(errno));
  // The file opened, wherever a symlink led: it must lie directly in DIR.
  fs::path real = fs::read_symlink("/proc/self/fd/" + std::to_string(f), ec);
  if (ec || real.parent_path() != real_dir) {
    ::close(f);
    return Status::Error("a symlink to " + real.string() + ", outside " + real_dir.string());
  }
  if (::fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(f);
    return Status::Error("not a regular file");
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    ::close(f);
    return Status::Error("writable by group or others");
  }
  Result<Header> h = ReadHeader(f);
  if (!h.ok()) {
    ::close(f);
    return h.status();
  }
  d->abi_major = h.value().major();
  d->abi_minor = h.value().minor();
  if (std::string why = CheckHeader(h.value()); !why.empty()) {
    ::close(f);
    return Status::Error(why);
  }
  *fd = f;
  return Status();
}

std::string Where(const PluginDescription& d) {
  return "plugin '" + d.name + "' (" + d.path.string() + "): ";
}

std::string KindName(uint32_t kind) {
  switch (kind) {
    case WM_RESULT_ACCEPTED:
      return "accepted";
    case WM_RESULT_DUPLICATE:
      return "duplicate";
    case WM_RESULT_THROTTLED:
      return "throttled";
    case WM_RESULT_QUOTA_EXHAUSTED:
      return "quota_exhausted";
    case WM_RESULT_RETRY_LATER:
      return "retry_later";
    case WM_RESULT_AMBIGUOUS:
      return "ambiguous";
    case WM_RESULT_PERMANENT_RECIPIENT:
      return "permanent_recipient";
    case WM_RESULT_PERMANENT_MESSAGE:
      return "permanent_message";
    case WM_RESULT_PROVIDER_FAULT:
      return "provider_fault";
    default:
      return "";
  }
}

uint32_t IntentOf(const std::string& intent) {
  if (intent == "transactional") return WM_INTENT_TRANSACTIONAL;
  if (intent == "marketing") return WM_INTENT_MARKETING;
  if (intent == "digest") return WM_INTENT_DIGEST;
  return WM_INTENT_UNSET;
}

// A fixed-size text field the plugin wrote, read up to its NUL or its end.
template <size_t N>
std::string Field(const char (&f)[N]) {
  return std::string(f, strnlen(f, N));
}

// Text a plugin gives the host to print or store as it is (its
// description, version and summary, a log line): well-formed UTF-8 on one
// line (a stray byte crashed `--json`; a newline forged a line of ours).
std::string PluginText(std::string_view s) {
  return Printable(StorableText(s));
}

std::mutex& RegistryMutex() {
  static std::mutex m;
  return m;
}

// An instance of a plugin, seen as a Transport.
class PluginTransport : public Transport {
 public:
  PluginTransport(std::shared_ptr<const Plugin> plugin, std::string instance)
      : plugin_(std::move(plugin)), instance_(std::move(instance)) {
    host_.struct_size = sizeof host_;
    host_.abi_major = WAYMARK_TRANSPORT_ABI_MAJOR;
    host_.abi_minor = WAYMARK_TRANSPORT_ABI_MINOR;
    host_.instance_name = {instance_.c_str(), instance_.size()};
    host_.ctx = this;
    host_.log = &Log;
  }
  ~PluginTransport() override {
    if (!t_) return;
    std::lock_guard<std::mutex> lock(RegistryMutex());  // never beside create() or destroy()
    plugin_->descriptor().destroy(t_);
  }

  Status Init(const std::string& config) {
    char err[WM_ERROR_MIN_SIZE] = {};
    int rc =
        plugin_->descriptor().create(&host_, {config.c_str(), config.size()}, &t_, err, sizeof err);
    if (rc != WM_OK || !t_) {
      t_ = nullptr;
      err[sizeof err - 1] = '\0';
      return Status::Error("transport '" + instance_ + "' (plugin " + plugin_->description().name +
                           " " + plugin_->description().version +
                           "): create failed: " + (err[0] ? err : "no reason given"));
    }
    wm_transport_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    plugin_->descriptor().info(t_, &info);
    max_batch_ = info.max_batch;
    idempotent_ = (info.flags & WM_TRANSPORT_IDEMPOTENT) != 0;
    // 0 with the flag: the plugin did not say (hosts ignored the field
    // until 2026-12-01): no limit, as for built-in transports.
    idempotency_window_s_ = info.idempotency_window_s ? info.idempotency_window_s : UINT32_MAX;
    // A flag of 1.2, believed only from a plugin built for 1.2 or later.
    fields_only_ =
        plugin_->description().abi_minor >= 2 && (info.flags & WM_TRANSPORT_FIELDS_ONLY) != 0;
    description_ = PluginText(Field(info.description));
    return Status();
  }

  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    std::vector<TransportResult> out;
    out.reserve(messages.size());
    size_t step = max_batch_ ? max_batch_ : messages.size();
    for (size_t i = 0; i < messages.size(); i += step) {
      Send(messages, i, std::min(messages.size(), i + step), out);
    }
    return out;
  }

  std::string Describe() const override { return description_; }
  bool Idempotent() const override { return idempotent_; }
  uint32_t IdempotencyWindowS() const override { return idempotency_window_s_; }
  bool FieldsOnly() const override { return fields_only_; }

 private:
  void Send(const std::vector<OutMessage>& messages, size_t from, size_t to,
            std::vector<TransportResult>& out) {
    size_t n = to - from;
    std::vector<wm_message> m(n);
    std::vector<wm_str> rcpt(n);
    std::vector<wm_send_result> r(n);
    for (size_t i = 0; i < n; ++i) {
      const OutMessage& o = messages[from + i];
      rcpt[i] = {o.to.c_str(), o.to.size()};
      m[i] = {};
      m[i].struct_size = sizeof(wm_message);
      m[i].intent = IntentOf(o.intent);
      m[i].attempt = o.attempt;
      m[i].idempotency_key = {o.key.c_str(), o.key.size()};
      m[i].data = {o.data.c_str(), o.data.size()};
      m[i].envelope_from = {o.from.c_str(), o.from.size()};
      m[i].recipients = &rcpt[i];
      m[i].recipient_count = 1;
      m[i].subject = {o.subject.c_str(), o.subject.size()};
      m[i].from_header = {o.from_header.c_str(), o.from_header.size()};
      m[i].text_body = {o.text.c_str(), o.text.size()};
      m[i].html_body = {o.html.c_str(), o.html.size()};
      m[i].list_unsubscribe = {o.list_unsubscribe.c_str(), o.list_unsubscribe.size()};
      std::memset(&r[i], 0, sizeof r[i]);
      r[i].struct_size = sizeof(wm_send_result);
    }
    plugin_->descriptor().send_batch(t_, m.data(), n, r.data(), kTimeoutMs);
    for (size_t i = 0; i < n; ++i) out.push_back(ToResult(r[i]));
  }

  TransportResult ToResult(const wm_send_result& r) {
    TransportResult t;
    t.kind = KindName(r.kind);
    if (t.kind.empty()) {
      std::string msg = "the plugin answered result kind " + std::to_string(r.kind) +
                        ", which is not one: counted as ambiguous";
      Log(this, WM_LOG_ERROR, msg.data(), msg.size());
      t.kind = "ambiguous";
    }
    // The plugin's text is stored and written as JSON: well-formed UTF-8
    // only, whatever the provider said or the plugin cut.
    if (t.kind == "accepted" || t.kind == "duplicate") {
      t.provider_id = StorableText(Field(r.provider_message_id));
    }
    // A day at most: one answer of 0xFFFFFFFF held a provider, or a whole
    // domain group, for 49 days.
    t.retry_after_ms = std::min(r.retry_after_ms, kMaxRetryAfterMs);
    std::string d;
    auto add = [&d](const std::string& s) {
      if (!s.empty()) d += (d.empty() ? "" : " ") + s;
    };
    if (r.smtp_code) add("smtp " + std::to_string(r.smtp_code));
    if (r.http_status) add("http " + std::to_string(r.http_status));
    add(Field(r.enhanced_status));
    add(Field(r.provider_code));
    if (r.kind == WM_RESULT_THROTTLED) {
      static const char* kScopes[] = {"provider", "provider", "domain", "recipient"};
      t.scope = r.throttle_scope < 4 ? kScopes[r.throttle_scope] : "provider";
      add("scope " + t.scope);
    }
    if (r.retry_after_ms) add("retry after " + std::to_string(t.retry_after_ms) + " ms");
    if (r.retry_after_ms > kMaxRetryAfterMs) {
      add("(the plugin said " + std::to_string(r.retry_after_ms) + ", more than a day)");
    }
    std::string text = Field(r.text);
    if (!text.empty()) d += (d.empty() ? "" : ": ") + text;
    t.detail = StorableText(d);
    return t;
  }

  static void Log(void* ctx, uint32_t level, const char* msg, size_t len) {
    if (level > WM_LOG_INFO) return;
    static const char* kLevels[] = {"log", "error", "warning", "info"};
    auto* self = static_cast<PluginTransport*>(ctx);
    std::ostringstream line;
    line << "waymark: transport '" << self->instance_ << "': " << kLevels[level] << ": "
         << PluginText(std::string_view(msg, len)) << "\n";
    std::cerr << line.str();
  }

  static constexpr uint32_t kTimeoutMs = 30000;
  static constexpr uint32_t kMaxRetryAfterMs = 86'400'000;
  std::shared_ptr<const Plugin> plugin_;
  std::string instance_;
  wm_host host_{};
  wm_transport* t_ = nullptr;
  uint32_t max_batch_ = 0;
  bool idempotent_ = false;
  uint32_t idempotency_window_s_ = 0;
  bool fields_only_ = false;
  std::string description_;
};

std::map<fs::path, std::shared_ptr<const Plugin>>& Registry() {
  static auto* r = new std::map<fs::path, std::shared_ptr<const Plugin>>();
  return *r;
}

}  // namespace

std::string HostAbi() {
  return std::to_string(WAYMARK_TRANSPORT_ABI_MAJOR) + "." +
         std::to_string(WAYMARK_TRANSPORT_ABI_MINOR);
}

Result<std::shared_ptr<const Plugin>> Plugin::Load(const fs::path& dir, const std::string& name) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  std::shared_ptr<Plugin> p(new Plugin());
  p->dir_ = dir;
  int fd = -1;
  if (Status s = Inspect(dir, name, &p->description_, &fd); !s.ok()) {
    return Status::Error(Where(p->description_) + s.message());
  }
  std::error_code ec;
  fs::path key = fs::canonical(p->description_.path, ec);
  if (auto it = Registry().find(key); it != Registry().end()) {
    ::close(fd);
    return it->second;
  }
  // Step 3: the file checked is the file loaded. The descriptor stays open
  // as long as the library stays loaded (for good): the dynamic loader
  // knows the library by this name and would take a later, different
  // library opened under a reused number for this one.
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  void* handle = ::dlopen(proc.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    std::string why = ::dlerror();
    ::close(fd);
    return Status::Error(Where(p->description_) + "dlopen: " + why);
  }
  auto* desc =
      static_cast<const wm_transport_plugin*>(::dlsym(handle, WAYMARK_TRANSPORT_ENTRY_SYMBOL));
  auto refuse = [&](const std::string& why) -> Result<std::shared_ptr<const Plugin>> {
    return Status::Error(Where(p->description_) + why);
  };
  if (!desc) return refuse(std::string("no symbol '") + WAYMARK_TRANSPORT_ENTRY_SYMBOL + "'");
  if (desc->abi_major != p->description_.abi_major ||
      desc->abi_minor != p->description_.abi_minor || desc->magic != WAYMARK_TRANSPORT_MAGIC) {
    return refuse("its descriptor once loaded differs from the one in the file");
  }
  if (!desc->name || !desc->version || !desc->summary || !desc->config_schema || !desc->create ||
      !desc->destroy || !desc->info || !desc->send_batch) {
    return refuse(
        "its descriptor leaves a name, a version, a summary, a schema or a function "
        "unset");
  }
  if (desc->name != name) {
    return refuse("its descriptor names it '" + std::string(desc->name) +
                  "': a plugin's file is named after the plugin");
  }
  p->description_.version = PluginText(desc->version);
  p->description_.summary = PluginText(desc->summary);
  p->description_.config_schema = desc->config_schema;
  std::string schema = desc->config_schema;
  if (schema.empty() || schema.find('/') != std::string::npos || schema[0] == '.' ||
      !fs::is_regular_file(dir / schema)) {
    return refuse("its configuration schema '" + schema + "' is not in " + dir.string());
  }
  p->descriptor_ = desc;
  Registry()[key] = p;
  return std::shared_ptr<const Plugin>(p);
}

Result<std::unique_ptr<Transport>> Plugin::Create(const std::string& instance,
                                                  const json& config) const {
  // Step 4: the configuration, checked against the plugin's schema.
  fs::path schema_path = dir_ / description_.config_schema;
  std::ifstream in(schema_path);
  json schema = json::parse(in, nullptr, false);
  if (schema.is_discarded()) {
    return Status::Error(Where(description_) + schema_path.string() + " is not JSON");
  }
  auto check = SchemaCheck::Compile(std::move(schema));
  if (!check.ok())
    return Status::Error(Where(description_) + schema_path.string() + ": " + check.error());
  if (Status s = check.value()->Check(config); !s.ok()) {
    return Status::Error("transport '" + instance + "' (plugin " + description_.name +
                         "): configuration " + s.message());
  }
  std::shared_ptr<const Plugin> self;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    std::error_code ec;
    auto it = Registry().find(fs::canonical(description_.path, ec));
    if (it == Registry().end()) return Status::Error(Where(description_) + "not loaded");
    self = it->second;
    // create() and destroy() of one plugin never run concurrently.
    auto t = std::make_unique<PluginTransport>(self, instance);
    if (Status s = t->Init(config.dump()); !s.ok()) return s;
    return std::unique_ptr<Transport>(std::move(t));
  }
}

Result<std::vector<PluginDescription>> ListPlugins(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NoDirectory(dir);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".so") names.push_back(e.path().stem().string());
  }
  if (ec) return Status::Error("the plugin directory " + dir.string() + ": " + ec.message());
  std::sort(names.begin(), names.end());
  std::vector<PluginDescription> out;
  for (const std::string& name : names) {
    auto p = Plugin::Load(dir, name);
    if (p.ok()) {
      out.push_back(p.value()->description());
      continue;
    }
    PluginDescription d;
    int fd = -1;
    Status s = Inspect(dir, name, &d, &fd);
    if (fd >= 0) ::close(fd);
    std::string why = p.error();
    std::string prefix = Where(d);
    d.refused = why.rfind(prefix, 0) == 0 ? why.substr(prefix.size()) : why;
    out.push_back(d);
  }
  return out;
}

}  // namespace waymark
