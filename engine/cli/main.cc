// waymark: lifecycle email journeys. See README.md and docs/.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include "dsl/checker.h"
#include "engine/cli/commands.h"

namespace waymark::cli {

std::atomic<bool> g_stop{false};

void StopOnSignals() {
  static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
  auto on_signal = [](int) { g_stop = true; };
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  // SIGHUP too: a terminal that closes under a run stops it in order (it
  // was killed, with no summary); unless it was ignored when the command
  // began (nohup), which then stays.
  struct sigaction hup = {};
  if (sigaction(SIGHUP, nullptr, &hup) == 0 && hup.sa_handler != SIG_IGN) {
    std::signal(SIGHUP, on_signal);
  }
}

std::string NoSchemasWarning(const std::string& dir) {
  if (dir.empty()) return "";
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path events = fs::path(dir) / "events";
  std::string why = events.string() + " is not a directory";
  if (fs::is_directory(events, ec)) {
    for (const auto& entry : fs::directory_iterator(events, ec)) {
      if (entry.path().extension() == ".json") return "";
    }
    why = events.string() + " has no *.json schema";
  }
  return "no event schemas (" + why +
         "): events are not validated and the journeys' event fields are not checked "
         "(--schemas DIR)";
}

bool SchemasDirectoryThere(const char* command, const std::string& dir, bool named, bool warn) {
  if (dir.empty()) return true;
  namespace fs = std::filesystem;
  std::error_code ec;
  if (named && !fs::is_directory(dir, ec)) {
    std::cerr << "waymark " << command << ": the schemas directory " << dir
              << (fs::exists(dir, ec) ? " is not a directory" : " does not exist")
              << " (--schemas DIR)\n";
    return false;
  }
  if (std::string warning = NoSchemasWarning(dir); warn && !warning.empty()) {
    std::cerr << "waymark " << command << ": warning: " << warning << "\n";
  }
  return true;
}

bool JourneysDirectoryThere(const char* command, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    std::cerr << "waymark " << command << ": the journeys directory " << dir
              << (fs::exists(dir, ec) ? " is not a directory" : " does not exist")
              << " (--journeys DIR)\n";
    return false;
  }
  // As CheckPaths, which says what it cannot read.
  for (const std::string& f : dsl::FilesUnder(dir).files) {
    if (fs::path(f).extension() == ".journey") return true;
  }
  std::cerr << "waymark " << command << ": warning: " << dir
            << " has no *.journey file: no journey runs (--journeys DIR)\n";
  return true;
}

std::string InputFileProblem(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "cannot read " + path + ": " + std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return "cannot read " + path + ": it is a directory";
  return "";
}

InputFd::InputFd(const std::string& path) {
  if (path == "-") {
    fd_ = STDIN_FILENO;
    return;
  }
  problem_ = InputFileProblem(path);
  if (problem_.empty() && (fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC)) < 0) {
    problem_ = "cannot read " + path + ": " + std::strerror(errno);
  }
}

InputFd::~InputFd() {
  if (fd_ > STDIN_FILENO) ::close(fd_);
}

// `code`, unless the standard output never reached its destination (a
// full disk): then that is said, and the exit is 3, not 0 with nothing
// written. What the command did stands.
int Written(int code) {
  errno = 0;
  std::cout.flush();
  if (std::cout && std::fflush(stdout) == 0 && !std::ferror(stdout)) return code;
  std::cerr << "waymark: cannot write the standard output"
            << (errno ? std::string(": ") + std::strerror(errno) : std::string()) << "\n";
  return code == kExitOk ? 3 : code;
}

}  // namespace waymark::cli

int main(int argc, char** argv) {
  CLI::App app{"waymark: lifecycle email journeys as checked, replayable state machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "waymark " WAYMARK_VERSION);
  int exit_code = waymark::cli::kExitOk;
  waymark::cli::RegisterCheck(app, &exit_code);
  waymark::cli::RegisterGraph(app, &exit_code);
  waymark::cli::RegisterRun(app, &exit_code);
  waymark::cli::RegisterInspect(app, &exit_code);
  waymark::cli::RegisterRender(app, &exit_code);
  waymark::cli::RegisterReplay(app, &exit_code);
  waymark::cli::RegisterMigrate(app, &exit_code);
  waymark::cli::RegisterPublish(app, &exit_code);
  waymark::cli::RegisterPlugins(app, &exit_code);
  waymark::cli::RegisterSuppress(app, &exit_code);
  waymark::cli::RegisterPrune(app, &exit_code);
  // A first word that names no command (a typo: `waymark chek`) is said
  // as such; CLI11 would say only that a subcommand is required.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      names += " " + sub->get_name();
      known = known || sub->get_name() == argv[1];
    }
    if (!known) {
      std::cerr << "waymark: unknown command '" << argv[1] << "' (commands:" << names
                << "; waymark --help)\n";
      return waymark::cli::kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return waymark::cli::Written(app.exit(e));  // --help, --version
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return waymark::cli::kExitUsage;
  }
  return waymark::cli::Written(exit_code);
}
