// The file transport: DIR/<idempotency key>.eml, created exclusively. A
// message is written to DIR/.tmp, made durable, then hard-linked into place:
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
    std::vector<fs::path> tmps(messages.size());
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& [key, message] = messages[i];
      tmps[i] = dir_ / ".tmp" / (key + "." + std::to_string(::getpid()));
      if (std::string err = WriteFile(tmps[i], message); !err.empty()) {
        out[i] = {"retry_later", "", err};
        tmps[i].clear();
      }
    }
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::syncfs(dfd) != 0) {
      std::string err = std::string("syncfs: ") + std::strerror(errno);
      if (dfd >= 0) ::close(dfd);
      for (size_t i = 0; i < messages.size(); ++i) {
        if (!tmps[i].empty()) {
          ::unlink(tmps[i].c_str());
          out[i] = {"retry_later", "", err};
        }
      }
      return out;
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      if (tmps[i].empty()) continue;
      const std::string& key = messages[i].first;
      fs::path final_path = dir_ / (key + ".eml");
      int rc = ::link(tmps[i].c_str(), final_path.c_str());
      int err = errno;
      ::unlink(tmps[i].c_str());
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
  // "" or the error.
  static std::string WriteFile(const fs::path& p, const std::string& data) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return "open " + p.string() + ": " + std::strerror(errno);
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::string err = std::string("write: ") + std::strerror(errno);
        ::close(fd);
        ::unlink(p.c_str());
        return err;
      }
      off += size_t(n);
    }
    if (::close(fd) != 0) {
      ::unlink(p.c_str());
      return std::string("close: ") + std::strerror(errno);
    }
    return "";
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
