// The file transport: DIR/<idempotency key>.eml, created exclusively. The
// message is written to DIR/.tmp, fsynced, then hard-linked into place:
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
    fs::path final_path = dir_ / (key + ".eml");
    fs::path tmp = dir_ / ".tmp" / (key + "." + std::to_string(::getpid()));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return {"retry_later", "", "open " + tmp.string() + ": " + std::strerror(errno)};
    size_t off = 0;
    while (off < message.size()) {
      ssize_t n = ::write(fd, message.data() + off, message.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::string err = std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        return {"retry_later", "", "write: " + err};
      }
      off += size_t(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      ::unlink(tmp.c_str());
      return {"retry_later", "", std::string("fsync: ") + std::strerror(errno)};
    }
    int rc = ::link(tmp.c_str(), final_path.c_str());
    int err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0 && err == EEXIST) return {"duplicate", key, final_path.string() + " exists"};
    if (rc != 0) return {"retry_later", "", std::string("link: ") + std::strerror(err)};
    SyncDir();
    return {"accepted", key, final_path.string()};
  }

  std::string Describe() const override {
    return dir_.string() + "/ (one .eml file per message)";
  }

 private:
  void SyncDir() {
    int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  fs::path dir_;
};

}  // namespace

Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url) {
  if (url.rfind("file:", 0) == 0) {
    auto t = std::make_unique<FileTransport>(url.substr(5));
    if (Status s = t->Init(); !s.ok()) return s;
    return std::unique_ptr<Transport>(std::move(t));
  }
  return Status::Error("unknown transport '" + url + "' (expected file:DIR)");
}

}  // namespace waymark
