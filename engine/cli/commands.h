// The `waymark` subcommands. Each Register* adds one subcommand to the app;
// the callback stores its exit code in `*exit_code`.
//
// Exit codes (docs/operations.md): 0 ok, 1 input rejected, 2 usage or
// configuration error.
#pragma once

#include <atomic>
#include <string>

#include <CLI/CLI.hpp>

namespace waymark::cli {

constexpr int kExitOk = 0;
constexpr int kExitRejected = 1;
constexpr int kExitUsage = 2;

// Set by SIGTERM, SIGINT or SIGHUP once StopOnSignals has run: a command that
// serves or replays finishes in order instead of dying.
extern std::atomic<bool> g_stop;
void StopOnSignals();

// Whether the schema directory `dir` can be used. One the user named
// (`named`: --schemas, or `schemas` in waymark.toml) that is not a directory
// is a mistyped path: said on stderr, false (the caller exits 2). Otherwise
// true, with `waymark COMMAND: warning: ...` on stderr when `dir` (not "")
// has no events/ directory or no *.json schema in it: nothing is then
// validated or type-checked, which must not pass unsaid.
// (`warn` false: said by the caller, as check counts it among its
// diagnostics.)
bool SchemasDirectoryThere(const char* command, const std::string& dir, bool named,
                           bool warn = true);
// The warning when the schema directory `dir` gives no event schema ("no
// event schemas (DIR/events is not a directory): ..."), or "" when it
// gives some or is "".
std::string NoSchemasWarning(const std::string& dir);

// Whether the journeys directory `dir` is one; says on stderr when it is
// not (the caller exits 2), and warns when it holds no *.journey file.
bool JourneysDirectoryThere(const char* command, const std::string& dir);

// Why a file named on the command line cannot be read as an input: "" when
// it can (a file, a pipe, a device); "cannot read PATH: ..." when it does
// not exist, cannot be looked at, or is a directory (which open(2) accepts
// and whose first read fails, after the command has made its store).
std::string InputFileProblem(const std::string& path);

// An input of lines opened for read(2) (LineReader): the file, or the
// standard input for "-". Closed with the object (the standard input is
// not). problem(): why it cannot be read, "" when it can.
class InputFd {
 public:
  explicit InputFd(const std::string& path);
  ~InputFd();
  InputFd(const InputFd&) = delete;
  InputFd& operator=(const InputFd&) = delete;
  int fd() const { return fd_; }
  const std::string& problem() const { return problem_; }

 private:
  int fd_ = -1;
  std::string problem_;
};

void RegisterCheck(CLI::App& app, int* exit_code);
void RegisterGraph(CLI::App& app, int* exit_code);
void RegisterRun(CLI::App& app, int* exit_code);
void RegisterInspect(CLI::App& app, int* exit_code);
void RegisterRender(CLI::App& app, int* exit_code);
void RegisterReplay(CLI::App& app, int* exit_code);
void RegisterMigrate(CLI::App& app, int* exit_code);
void RegisterPublish(CLI::App& app, int* exit_code);
void RegisterPlugins(CLI::App& app, int* exit_code);
void RegisterSuppress(CLI::App& app, int* exit_code);
void RegisterPrune(CLI::App& app, int* exit_code);

}  // namespace waymark::cli
