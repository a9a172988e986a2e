// The file transport plugin: DIR/<idempotency key>.eml, created
// exclusively. A message is written to an unnamed file (O_TMPFILE) in
// DIR/.tmp, made durable, then linked into place: link() fails if the name
// exists, so a repeat is answered "duplicate" and a crash never leaves a
// half-written message under its final name.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <waymark/transport_plugin.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

struct wm_transport {
  fs::path dir;
  // The directory, open while its path names it (Follow): syncfs(2)
  // reports the write-back errors since the descriptor was opened, so one
  // opened per batch, after its files were written, missed an error in
  // between.
  int dfd = -1;
  ~wm_transport() {
    if (dfd >= 0) ::close(dfd);
  }
};

namespace {

constexpr uint32_t kMaxBatch = 256;  // messages per send_batch(), each a descriptor

template <size_t N>
void Put(char (&field)[N], const std::string& s) {
  std::snprintf(field, N, "%s", s.c_str());
}

void Fail(wm_send_result* r, uint32_t kind, const std::string& text) {
  r->kind = kind;
  Put(r->text, text);
}

// Writes `data` to a new unnamed file in .tmp under the directory `dfd`;
// "" or the error.
std::string WriteTmp(int dfd, const wm_str& data, int& fd) {
  fd = ::openat(dfd, ".tmp", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return std::string("open O_TMPFILE in .tmp: ") + std::strerror(errno);
  size_t off = 0;
  while (off < data.len) {
    ssize_t n = ::write(fd, data.ptr + off, data.len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = std::string("write: ") + std::strerror(errno);
      ::close(fd);
      fd = -1;
      return err;
    }
    off += size_t(n);
  }
  return "";
}

// Makes `t->dfd` the directory its path names now, with its .tmp: one
// renamed, or removed and made again, since it was opened is not written
// behind the operator's back (the results would name files that are not
// there), and one removed is made again. A new descriptor is opened before
// the batch's files are written, so its syncfs() still sees their errors.
// "" or the error.
std::string Follow(wm_transport* t) {
  std::error_code ec;
  fs::create_directories(t->dir / ".tmp", ec);
  if (ec) return "cannot create " + (t->dir / ".tmp").string() + ": " + ec.message();
  int fd = ::open(t->dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return "cannot open " + t->dir.string() + ": " + std::strerror(errno);
  struct stat now, held;
  if (t->dfd >= 0 && ::fstat(fd, &now) == 0 && ::fstat(t->dfd, &held) == 0 &&
      now.st_dev == held.st_dev && now.st_ino == held.st_ino) {
    ::close(fd);
    return "";
  }
  if (t->dfd >= 0) ::close(t->dfd);
  t->dfd = fd;
  return "";
}

int Create(const wm_host*, wm_str config_json, wm_transport** out, char* err, size_t err_size) {
  try {
    auto config = nlohmann::json::parse(config_json.ptr, config_json.ptr + config_json.len);
    auto t = std::make_unique<wm_transport>();
    t->dir = config.at("dir").get<std::string>();
    if (std::string why = Follow(t.get()); !why.empty()) {
      std::snprintf(err, err_size, "%s", why.c_str());
      return WM_ERR_CONFIG;
    }
    *out = t.release();
    return WM_OK;
  } catch (const std::exception& e) {
    std::snprintf(err, err_size, "%s", e.what());
    return WM_ERR_INTERNAL;
  }
}

void Destroy(wm_transport* t) {
  delete t;
}

void Info(wm_transport* t, wm_transport_info* out) {
  // A message's file is named by its key and never written twice (an
  // existing one is answered "duplicate"), for as long as it is there.
  out->flags = WM_TRANSPORT_IDEMPOTENT;
  out->idempotency_window_s = UINT32_MAX;
  // Each message of a batch holds a file descriptor until the batch's
  // syncfs(): a backlog of thousands ran out of them (1,258 of 1,500 were
  // "Too many open files" under the usual limit of 1,024), spending
  // attempts. The host splits larger batches.
  out->max_batch = kMaxBatch;
  Put(out->description, t->dir.string() + "/ (one .eml file per message)");
}

// Writes every message to .tmp, makes them durable with one syncfs(), links
// each into place (EEXIST: "duplicate"), then syncs the directory once. A
// message is reported accepted only once it is durable: when the
// directory's sync fails, the names just linked are removed again and
// their messages answered "retry_later".
void SendBatch(wm_transport* t, const wm_message* messages, size_t count, wm_send_result* results,
               uint32_t) {
  try {
    if (std::string why = Follow(t); !why.empty()) {
      for (size_t i = 0; i < count; ++i) Fail(wm_result_at(results, i), WM_RESULT_RETRY_LATER, why);
      return;
    }
    std::vector<int> fds(count, -1);
    for (size_t i = 0; i < count; ++i) {
      std::string err = WriteTmp(t->dfd, wm_message_at(messages, i)->data, fds[i]);
      if (!err.empty()) Fail(wm_result_at(results, i), WM_RESULT_RETRY_LATER, err);
    }
    const int dfd = t->dfd;
    if (::syncfs(dfd) != 0) {
      std::string err = std::string("syncfs: ") + std::strerror(errno);
      for (size_t i = 0; i < count; ++i) {
        if (fds[i] < 0) continue;
        ::close(fds[i]);
        Fail(wm_result_at(results, i), WM_RESULT_RETRY_LATER, err);
      }
      return;
    }
    std::vector<std::pair<size_t, std::string>> linked;  // names under dfd
    for (size_t i = 0; i < count; ++i) {
      if (fds[i] < 0) continue;
      const wm_str& k = wm_message_at(messages, i)->idempotency_key;
      std::string key(k.ptr, k.len);
      wm_send_result* r = wm_result_at(results, i);
      // The key is the file's name: it must not name another directory.
      if (key.empty() || key[0] == '.' || key.find('/') != std::string::npos) {
        ::close(fds[i]);
        Fail(r, WM_RESULT_PERMANENT_MESSAGE, "idempotency key '" + key + "' is not a file name");
        continue;
      }
      if (key.size() + 4 > NAME_MAX) {  // with ".eml"
        ::close(fds[i]);
        Fail(r, WM_RESULT_PERMANENT_MESSAGE,
             "idempotency key of " + std::to_string(key.size()) +
                 " bytes: with .eml, longer than a file name (" + std::to_string(NAME_MAX) + ")");
        continue;
      }
      // Linked under the directory the descriptor holds, the one synced.
      std::string name = key + ".eml";
      fs::path final_path = t->dir / name;
      std::string proc = "/proc/self/fd/" + std::to_string(fds[i]);
      int rc = ::linkat(AT_FDCWD, proc.c_str(), dfd, name.c_str(), AT_SYMLINK_FOLLOW);
      int err = errno;
      ::close(fds[i]);
      if (rc != 0 && err == EEXIST) {
        r->kind = WM_RESULT_DUPLICATE;
        Put(r->provider_message_id, key);
        Put(r->text, final_path.string() + " exists");
      } else if (rc != 0) {
        Fail(r, WM_RESULT_RETRY_LATER, std::string("link: ") + std::strerror(err));
      } else {
        r->kind = WM_RESULT_ACCEPTED;
        Put(r->provider_message_id, key);
        Put(r->text, final_path.string());
        linked.emplace_back(i, name);
      }
    }
    if (::fsync(dfd) != 0) {
      std::string err = std::string("fsync of the directory: ") + std::strerror(errno);
      for (const auto& [i, path] : linked) {
        ::unlinkat(dfd, path.c_str(), 0);
        wm_send_result* r = wm_result_at(results, i);
        r->provider_message_id[0] = '\0';
        Fail(r, WM_RESULT_RETRY_LATER, err);
      }
    }
  } catch (const std::exception& e) {  // out of memory: nothing is known to be written
    for (size_t i = 0; i < count; ++i) {
      wm_send_result* r = wm_result_at(results, i);
      if (r->kind == WM_RESULT_UNSET) Fail(r, WM_RESULT_AMBIGUOUS, e.what());
    }
  }
}

}  // namespace

extern "C" const wm_transport_plugin waymark_transport_plugin = {
    WAYMARK_TRANSPORT_PLUGIN_HEADER,
    .name = "file",
    .version = "0.1.0",
    .summary = "one .eml file per message in a directory, created exclusively",
    .config_schema = "file.schema.json",
    .create = Create,
    .destroy = Destroy,
    .info = Info,
    .send_batch = SendBatch,
};
