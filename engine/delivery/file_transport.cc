// The file transport: DIR/<idempotency key>.eml, created exclusively. A
// message is written to an unnamed file (O_TMPFILE) in DIR/.tmp, made
// durable, then linked into place:
// link() fails if the name exists, so a repeat is answered "duplicate" and
// a crash never leaves a half-written message under its final name.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/delivery/transport.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;

class FileTransport : public Transport {
 public:
  explicit FileTransport(fs::path dir) : dir_(std::move(dir)) {}

  Status Init() {
    std::error_code ec;
    fs::create_directories(dir_ / ".tmp", ec);
    if (ec) return Status::Error("cannot create " + (dir_ / ".tmp").string() + ": " + ec.message());
    return Status();
  }

  TransportResult Send(const std::string& key, const std::string& message) override {
    return SendBatch({{key, message}}).front();
  }

  // Writes every message to .tmp, makes them durable with one syncfs(),
  // links each into place (EEXIST: "duplicate"), then syncs the directory
  // once. A message is reported accepted only once it is durable.
  std::vector<TransportResult> SendBatch(
      const std::vector<std::pair<std::string, std::string>>& messages) override {
    std::vector<TransportResult> out(messages.size());
    // Unnamed files (O_TMPFILE) in .tmp: nothing to clean up after a crash,
    // and no churn of named inodes.
    std::vector<int> fds(messages.size(), -1);
    for (size_t i = 0; i < messages.size(); ++i) {
      std::string err = WriteTmp(messages[i].second, fds[i]);
      if (!err.empty()) out[i] = {"retry_later", "", err};
    }
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::syncfs(dfd) != 0) {
      std::string err = std::string("syncfs: ") + std::strerror(errno);
      if (dfd >= 0) ::close(dfd);
      for (size_t i = 0; i < messages.size(); ++i) {
        if (fds[i] >= 0) {
          ::close(fds[i]);
          out[i] = {"retry_later", "", err};
        }
      }
      return out;
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      if (fds[i] < 0) continue;
      const std::string& key = messages[i].first;
      fs::path final_path = dir_ / (key + ".eml");
      std::string proc = "/proc/self/fd/" + std::to_string(fds[i]);
      int rc = ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, final_path.c_str(), AT_SYMLINK_FOLLOW);
      int err = errno;
      ::close(fds[i]);
      if (rc != 0 && err == EEXIST) {
        out[i] = {"duplicate", key, final_path.string() + " exists"};
      } else if (rc != 0) {
        out[i] = {"retry_later", "", std::string("link: ") + std::strerror(err)};
      } else {
        out[i] = {"accepted", key, final_path.string()};
      }
    }
    ::fsync(dfd);
    ::close(dfd);
    return out;
  }

  std::string Describe() const override {
    return dir_.string() + "/ (one .eml file per message)";
  }

 private:
  // Writes `data` to a new unnamed file in .tmp; "" or the error.
  std::string WriteTmp(const std::string& data, int& fd) {
    fd = ::open((dir_ / ".tmp").c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return "open O_TMPFILE in " + (dir_ / ".tmp").string() + ": " + std::strerror(errno);
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
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

  fs::path dir_;
};

// "null:": accepts everything and keeps nothing (benchmarks).
class NullTransport : public Transport {
 public:
  TransportResult Send(const std::string& key, const std::string&) override {
    return {"accepted", key, ""};
  }
  std::string Describe() const override { return "nowhere (null transport)"; }
};

}  // namespace

Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url) {
  if (url == "null:") return std::unique_ptr<Transport>(new NullTransport());
  if (url.rfind("file:", 0) == 0) {
    auto t = std::make_unique<FileTransport>(url.substr(5));
    if (Status s = t->Init(); !s.ok()) return s;
    return std::unique_ptr<Transport>(std::move(t));
  }
  return Status::Error("unknown transport '" + url + "' (expected file:DIR)");
}

}  // namespace waymark
