// The PostgreSQL store rides out a lost connection (docs/engine.md, "A lost
// connection"): reads and commits go on after a reconnection, and a commit
// whose answer was lost is settled with the server, neither lost nor
// written twice.
//
// Against the real server scripts/test.sh starts (WAYMARK_TEST_POSTGRES).
// Connections are lost for real: the server ends them
// (pg_terminate_backend), or a loopback proxy between store and server
// closes them at a chosen byte, before or after the server has committed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/store/postgres_store.h"
#include "tests/testing/db.h"

#include <pqxx/pqxx>

namespace waymark {
namespace {

using namespace std::chrono_literals;

// Passes bytes between loopback clients and the server at `target_port`.
// Armed with Cut, it closes every connection (without passing the bytes on)
// the first time `needle` goes by in the chosen direction. While down, it
// accepts and closes at once, as a port with no server behind it would
// refuse.
class Proxy {
 public:
  enum class Direction { kToServer, kToClient };

  explicit Proxy(int target_port) : target_port_(target_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t n = sizeof a;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listener_, 16) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &n) != 0) {
      throw std::runtime_error("proxy: cannot listen");
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~Proxy() {
    stop_ = true;
    acceptor_.join();
    CutAll();
    for (std::thread& t : pumps_) t.join();
    for (int fd : held_) ::close(fd);
    ::close(listener_);
  }

  int port() const { return port_; }

  // `server_stays`: only the client's side is closed; the server's stays
  // open and silent, as when a firewall between them forgets the
  // connection: the server process waits in its transaction, holding its
  // locks, until its keepalives (hours) or a timeout end it.
  void Cut(Direction d, std::string needle, bool server_stays = false) {
    std::lock_guard<std::mutex> l(mu_);
    armed_ = true;
    direction_ = d;
    needle_ = std::move(needle);
    server_stays_ = server_stays;
  }
  bool cut() const { return cut_; }

  // Closes every connection now.
  void CutAll() {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
  }

  void SetDown(bool down) { down_ = down; }

 private:
  void Accept() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) continue;
      if (down_) {
        ::close(client);
        continue;
      }
      int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(uint16_t(target_port_));
      if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        open_.insert(client);
        open_.insert(server);
      }
      pumps_.emplace_back([this, client, server] { Pump(client, server); });
    }
  }

  void Pump(int client, int server) {
    char buf[65536];
    for (;;) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 50) < 0) break;
      if (stop_ && !p[0].revents && !p[1].revents) break;
      bool closed = false;
      for (int k = 0; k < 2 && !closed; ++k) {
        if (!p[k].revents) continue;
        ssize_t n = ::read(p[k].fd, buf, sizeof buf);
        if (n <= 0) {
          closed = true;
          break;
        }
        Direction d = k == 0 ? Direction::kToServer : Direction::kToClient;
        if (Matches(d, std::string_view(buf, size_t(n)))) {
          std::lock_guard<std::mutex> l(mu_);
          if (server_stays_) {
            open_.erase(client);
            open_.erase(server);
            held_.push_back(server);
            ::shutdown(client, SHUT_RDWR);
            ::close(client);
            return;
          }
          for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
          closed = true;
          break;
        }
        int to = k == 0 ? server : client;
        for (ssize_t off = 0; off < n;) {
          // MSG_NOSIGNAL: a peer already gone (a cut, the store closing)
          // is EPIPE here, not a SIGPIPE that kills the test (seen once
          // in CI, under ASan).
          ssize_t w = ::send(to, buf + off, size_t(n - off), MSG_NOSIGNAL);
          if (w <= 0) {
            closed = true;
            break;
          }
          off += w;
        }
      }
      if (closed) break;
    }
    std::lock_guard<std::mutex> l(mu_);
    open_.erase(client);
    open_.erase(server);
    ::shutdown(client, SHUT_RDWR);
    ::shutdown(server, SHUT_RDWR);
    ::close(client);
    ::close(server);
  }

  bool Matches(Direction d, std::string_view bytes) {
    std::lock_guard<std::mutex> l(mu_);
    if (!armed_ || d != direction_ || bytes.find(needle_) == std::string_view::npos) return false;
    armed_ = false;
    cut_ = true;
    return true;
  }

  int target_port_, port_ = 0, listener_ = -1;
  std::atomic<bool> stop_{false}, down_{false}, cut_{false};
  std::mutex mu_;
  bool armed_ = false, server_stays_ = false;
  std::vector<int> held_;  // server sides kept open after a cut
  Direction direction_ = Direction::kToServer;
  std::string needle_;
  std::set<int> open_;
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // touched by the acceptor, then joined
};

// libpq's own defaults wait for ever to connect and about two hours for a
// host that vanished without a reset: the store adds timeouts the URL does
// not set. (Its messages mask the password: RedactedUrl, url_test.)
TEST(PostgresUrl, TimeoutsAndTheEncodingAreAddedWhereTheUrlSetsNone) {
  const char* env = std::getenv("PGCONNECT_TIMEOUT");
  std::string saved = env ? env : "";
  unsetenv("PGCONNECT_TIMEOUT");
  const std::string all =
      "connect_timeout=10&keepalives_idle=30&keepalives_interval=10&keepalives_count=3&"
      "tcp_user_timeout=60000&client_encoding=UTF8";
  EXPECT_EQ(WithConnectionDefaults("postgresql://u@h:5/db"), "postgresql://u@h:5/db?" + all);
  EXPECT_EQ(WithConnectionDefaults("postgresql://u@h:5/db?"), "postgresql://u@h:5/db?" + all);
  EXPECT_EQ(
      WithConnectionDefaults("postgresql://h/db?sslmode=disable&keepalives_idle=5"),
      "postgresql://h/db?sslmode=disable&keepalives_idle=5&connect_timeout=10&"
      "keepalives_interval=10&keepalives_count=3&tcp_user_timeout=60000&client_encoding=UTF8");
  setenv("PGCONNECT_TIMEOUT", "3", 1);
  EXPECT_EQ(WithConnectionDefaults("postgresql://h/db"),
            "postgresql://h/db?keepalives_idle=30&keepalives_interval=10&keepalives_count=3&"
            "tcp_user_timeout=60000&client_encoding=UTF8");
  if (saved.empty()) {
    unsetenv("PGCONNECT_TIMEOUT");
  } else {
    setenv("PGCONNECT_TIMEOUT", saved.c_str(), 1);
  }
}

// Stored text is UTF-8: a database in another encoding is refused by
// migrate and at start, naming the encoding (prune failed on it instead,
// refusing the U+FFFD that stands in for NUL).
TEST(PostgresUrl, ADatabaseNotInUtf8IsRefused) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  std::string name = "ascii_" + std::to_string(::getpid());
  {
    pqxx::connection admin(std::string(server) + "/postgres");
    pqxx::nontransaction t(admin);
    t.exec("DROP DATABASE IF EXISTS " + name);
    t.exec("CREATE DATABASE " + name + " ENCODING 'SQL_ASCII' TEMPLATE template0");
  }
  std::string url = std::string(server) + "/" + name;
  auto migrated = MigratePostgres(url);
  ASSERT_FALSE(migrated.ok());
  EXPECT_NE(migrated.error().find("the database's encoding is SQL_ASCII; waymark stores UTF-8 "
                                  "text: create the database with ENCODING 'UTF8'"),
            std::string::npos)
      << migrated.error();
  auto opened = OpenPostgresStore(url);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().find("the database's encoding is SQL_ASCII"), std::string::npos)
      << opened.error();
}

// A client_encoding in the URL was honoured: the server took the store's
// UTF-8 bytes for LATIN1 and stored "Zoë" as "ZoÃ«" for every other client.
TEST(PostgresUrl, AClientEncodingOtherThanUtf8IsRefused) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  std::string url =
      testing_util::FreshPostgresDatabase(server, "latin1_" + std::to_string(::getpid()));
  auto migrated = MigratePostgres(url + "?client_encoding=LATIN1");
  ASSERT_FALSE(migrated.ok());
  EXPECT_NE(migrated.error().find("the connection's client_encoding is LATIN1"), std::string::npos)
      << migrated.error();
  ASSERT_TRUE(MigratePostgres(url + "?client_encoding=UTF8").ok());
  auto opened = OpenPostgresStore(url + "?client_encoding=LATIN1");
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().find("leave client_encoding out of the URL"), std::string::npos)
      << opened.error();
  EXPECT_TRUE(OpenPostgresStore(url).ok());
}

class PostgresReconnect : public testing::Test {
 protected:
  void SetUp() override {
    const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
    ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
    server_ = server;
    std::string name = testing::UnitTest::GetInstance()->current_test_info()->name();
    db_ = "reconnect_" + std::to_string(::getpid()) + "_" + std::to_string(name.size()) +
          std::to_string(std::hash<std::string>()(name) % 100000);
    url_ = testing_util::FreshPostgresDatabase(server_, db_);
    auto migrated = MigratePostgres(url_);
    ASSERT_TRUE(migrated.ok()) << migrated.error();
    size_t colon = server_.rfind(':');
    proxy_ = std::make_unique<Proxy>(std::stoi(server_.substr(colon + 1)));
    proxied_ = server_.substr(0, colon + 1) + std::to_string(proxy_->port()) + "/" + db_;
  }

  // A store that reconnects while `keep_trying_`, and keeps what it reports.
  Result<std::unique_ptr<Store>> Open(const std::string& url) {
    Reconnect r{[this] { return keep_trying_.load(); },
                [this](const std::string& what) {
                  std::lock_guard<std::mutex> l(mu_);
                  reports_ += what + "\n";
                },
                [this] { ++backs_; }};
    return OpenPostgresStore(url, r);
  }
  std::string Reports() {
    std::lock_guard<std::mutex> l(mu_);
    return reports_;
  }

  // Events n..n+1 with one send, and the source position n.
  static Batch Numbered(int n) {
    Batch b;
    for (int k = n; k < n + 2; ++k) {
      Event e;
      e.id = "e" + std::to_string(k);
      e.source = "test";
      e.type = "user.signup";
      e.subject = "u" + std::to_string(n);
      e.time = 1000 + k;
      e.data = {{"k", k}};
      b.events.push_back(std::move(e));
    }
    b.history = {{"j/u" + std::to_string(n) + "/1", 1, 5, "entered", "", {}}};
    SendRow s;
    s.key = "send-" + std::to_string(n);
    s.instance_id = b.history[0].instance_id;
    s.journey = "j";
    s.person = b.events[0].subject;
    s.template_name = "welcome";
    s.recipient = "a@example.com";
    s.trigger = b.events[0].Doc();
    s.event = b.events[1].Doc();
    b.sends = {s};
    b.position = SourcePosition{"S/C", uint64_t(n), 0};
    return b;
  }

  // Opens a store through the proxy and commits Numbered(1), with a
  // not-final result for its send, while the proxy cuts the connection as
  // COMMIT goes by in direction `d`. The commit succeeds and the batch is
  // stored once.
  void CommitCutAtCommit(Proxy::Direction d, std::unique_ptr<Store>& store) {
    auto opened = Open(proxied_);
    ASSERT_TRUE(opened.ok()) << opened.error();
    store = std::move(opened).value();
    proxy_->Cut(d, "COMMIT");
    Batch b = Numbered(1);
    b.results = {{0, b.sends[0].key, 1, 7, "retry_later", false, {}}};
    Status s = store->Commit(b);
    ASSERT_TRUE(proxy_->cut());
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(Count("events"), 2);
    EXPECT_EQ(Count("history"), 1);
    EXPECT_EQ(Count("sends"), 1);
    EXPECT_EQ(Count("send_results"), 1);
  }

  // Rows the database holds, counted on a connection of the test's own;
  // `from`: a table, or tables joined.
  int64_t Count(const char* from) {
    pqxx::connection c(url_);
    pqxx::read_transaction t(c);
    return t.exec1(std::string("SELECT COUNT(*) FROM ") + from)[0].as<int64_t>();
  }

  // Ends every server process on the test's database but the caller's.
  void TerminateBackends() {
    pqxx::connection c(server_ + "/postgres");
    pqxx::nontransaction t(c);
    auto r = t.exec_params(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        db_);
    ASSERT_GE(r.size(), 2u);  // the store's reader and writer
  }

  std::string server_, db_, url_, proxied_;
  std::unique_ptr<Proxy> proxy_;
  std::atomic<bool> keep_trying_{true};
  std::atomic<int> backs_{0};  // connections re-established
  std::mutex mu_;
  std::string reports_;
};

TEST_F(PostgresReconnect, ReadsAndCommitsGoOnAfterTheServerEndsTheConnections) {
  auto store = Open(url_);
  ASSERT_TRUE(store.ok()) << store.error();
  Batch first = Numbered(1);
  ASSERT_TRUE(store.value()->Commit(first).ok());
  TerminateBackends();
  auto pos = store.value()->Position("S/C");
  ASSERT_TRUE(pos.ok()) << pos.error();
  ASSERT_TRUE(pos.value().has_value());
  EXPECT_EQ(pos.value()->seq, 1u);
  Batch second = Numbered(3);
  Status s = store.value()->Commit(second);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Count("events"), 4);
  EXPECT_EQ(Count("sends"), 2);
  EXPECT_EQ(Count("sends_pending"), 2);
  std::string reports = Reports();
  EXPECT_NE(reports.find("lost the "), std::string::npos) << reports;
  EXPECT_NE(reports.find("connection is back after"), std::string::npos) << reports;
  EXPECT_EQ(backs_, 2) << "the reader's and the writer's connections";
  // The writer's staging tables came back with it: a batch that repeats a
  // stored event goes through them.
  Batch repeat = Numbered(5);
  repeat.events.push_back(first.events[0]);
  s = store.value()->Commit(repeat);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Count("events"), 6);
}

TEST_F(PostgresReconnect, WithoutReconnectALostConnectionIsAnError) {
  auto store = OpenPostgresStore(url_);
  ASSERT_TRUE(store.ok()) << store.error();
  Batch first = Numbered(1);
  ASSERT_TRUE(store.value()->Commit(first).ok());
  TerminateBackends();
  auto pos = store.value()->Position("S/C");
  ASSERT_FALSE(pos.ok());
  EXPECT_NE(pos.error().find("postgresql: position:"), std::string::npos) << pos.error();
}

// The server committed; its answer never came. Writing the batch again
// would fail on its rows (or, were it skipped, send twice): the store asks
// the server instead.
TEST_F(PostgresReconnect, ACommitWhoseAnswerWasLostIsFoundToHaveLanded) {
  std::unique_ptr<Store> store;
  ASSERT_NO_FATAL_FAILURE(CommitCutAtCommit(Proxy::Direction::kToClient, store));
  EXPECT_NE(Reports().find("the commit in doubt had landed"), std::string::npos) << Reports();
  Batch next = Numbered(3);
  Status s = store->Commit(next);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Count("sends"), 2);
}

// COMMIT never reached the server: the transaction is rolled back there,
// and the batch is written again, once, with the outbox positions drawn
// for the first attempt (its result names its send by them).
TEST_F(PostgresReconnect, ACommitThatNeverReachedTheServerIsWrittenAgain) {
  std::unique_ptr<Store> store;
  ASSERT_NO_FATAL_FAILURE(CommitCutAtCommit(Proxy::Direction::kToServer, store));
  EXPECT_NE(Reports().find("the commit in doubt had not landed"), std::string::npos) << Reports();
  EXPECT_EQ(Count("sends_pending"), 1);
  EXPECT_EQ(Count("send_results r JOIN sends s ON s.seq = r.send_seq"), 1);
  auto pos = store->Position("S/C");
  ASSERT_TRUE(pos.ok() && pos.value().has_value());
  EXPECT_EQ(pos.value()->seq, 1u);
}

// The connection went in the middle of the batch's statements, and the
// server never noticed: its process still holds the transaction, with
// locks on the batch's new rows. Written again at once, the batch waited on
// those locks for as long as the server's keepalives took (hours), deaf to
// a stop. The store settles it as a commit in doubt: that transaction is
// ended, and the batch written again.
TEST_F(PostgresReconnect, ATransactionCutBeforeCommitThatTheServerHoldsIsEndedFirst) {
  auto opened = Open(proxied_);
  ASSERT_TRUE(opened.ok()) << opened.error();
  std::unique_ptr<Store> store = std::move(opened).value();
  proxy_->Cut(Proxy::Direction::kToServer, "COPY history", /*server_stays=*/true);
  Batch b = Numbered(1);
  auto commit = std::async(std::launch::async, [&] { return store->Commit(b); });
  if (commit.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "the commit still waits after 30 s on the transaction the server holds";
    keep_trying_ = false;
    pqxx::connection c(server_ + "/postgres");
    pqxx::nontransaction t(c);
    t.exec_params(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND "
        "state = 'idle in transaction'",
        db_);
  }
  Status s = commit.get();
  ASSERT_TRUE(proxy_->cut());
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Count("events"), 2);
  EXPECT_EQ(Count("history"), 1);
  EXPECT_EQ(Count("sends_pending"), 1);
  EXPECT_NE(Reports().find("the commit in doubt had not landed"), std::string::npos) << Reports();
}

// An engine's claim on its consumer is a lock of its writer's session: a
// lost connection loses it. Taken again as the writer reconnects; taken by
// another engine meanwhile, the commit fails, and this engine stops instead
// of sending beside it. Its own earlier session, still held by a server
// that did not see the cut, does not count as another engine.
TEST_F(PostgresReconnect, AClaimIsTakenAgainOnReconnectingUnlessAnotherEngineTookIt) {
  auto say = [](const std::string&) {};
  auto never = [] { return false; };
  auto a = Open(proxied_);
  ASSERT_TRUE(a.ok()) << a.error();
  ASSERT_TRUE(a.value()->Claim("EVENTS/waymark", never, say).ok());
  // Cut where the server does not see it: the old session keeps the lock.
  proxy_->Cut(Proxy::Direction::kToServer, "COPY history", /*server_stays=*/true);
  Batch first = Numbered(1);
  Status s = a.value()->Commit(first);
  ASSERT_TRUE(proxy_->cut());
  ASSERT_TRUE(s.ok()) << s.message();
  auto b = Open(url_);
  ASSERT_TRUE(b.ok()) << b.error();
  ASSERT_FALSE(b.value()->Claim("EVENTS/waymark", never, say).ok()) << "a holds it again";
  // Now every connection of the engine is lost, and b takes the claim.
  proxy_->CutAll();
  int tries = 0;
  auto a_while = [&] { return ++tries < 100; };
  ASSERT_TRUE(b.value()->Claim("EVENTS/waymark", a_while, say).ok());
  Batch second = Numbered(3);
  s = a.value()->Commit(second);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("another engine took over EVENTS/waymark"), std::string::npos)
      << s.message();
  EXPECT_EQ(Count("events"), 2);
}

// An engine still waiting for another's claim that loses its connection
// goes on waiting: it took the holder for a takeover and stopped (exit 3),
// as a PostgreSQL restart during a rolling update would make it.
TEST_F(PostgresReconnect, AnEngineWaitingForAClaimRidesOutALostConnection) {
  auto say = [](const std::string&) {};
  auto a = Open(url_);
  ASSERT_TRUE(a.ok()) << a.error();
  ASSERT_TRUE(a.value()
                  ->Claim(
                      "EVENTS/waymark", [] { return false; }, say)
                  .ok());
  auto b = Open(url_);
  ASSERT_TRUE(b.ok()) << b.error();
  std::atomic<int> waits{0};
  auto waiting = [&] {
    ++waits;
    return waits < 500;  // 100 s at most
  };
  auto claim = std::async(std::launch::async,
                          [&] { return b.value()->Claim("EVENTS/waymark", waiting, say); });
  for (int i = 0; i < 500 && waits < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(waits, 2);
  {
    // Every session of the database but the claim's (and this one) ends.
    pqxx::connection c(server_ + "/postgres");
    pqxx::nontransaction t(c);
    t.exec_params(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> "
        "pg_backend_pid() AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
        "AND granted)",
        db_);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  a.value().reset();  // the first engine stops
  Status s = claim.get();
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_LT(waits, 500);
}

// After a crash a server may hand out again a transaction ID it never
// logged: a commit in doubt is the batch's only if the batch's own rows
// carry that ID. Here another client's committed transaction stands for
// the one that reused it.
TEST_F(PostgresReconnect, ACommitInDoubtLandedOnlyIfTheBatchsRowsCarryItsTransaction) {
  // The transaction ID (epoch and all) that wrote the row of FROM.
  auto WrittenBy = [this](const std::string& from) {
    pqxx::connection c(url_);
    pqxx::nontransaction n(c);
    return n
        .exec1(
            "SELECT ((pg_current_xact_id()::TEXT::BIGINT >> 32 << 32) | "
            "xmin::TEXT::BIGINT)::TEXT FROM " +
            from)[0]
        .as<std::string>();
  };
  Batch b = Numbered(1);
  std::string other;
  {
    pqxx::connection c(url_);
    pqxx::work w(c);
    other = w.exec1("SELECT pg_current_xact_id()::TEXT")[0].as<std::string>();
    w.exec0("CREATE TABLE unrelated (x INT)");
    w.commit();
  }
  auto landed = CommitLanded(url_, other, 0, b);
  ASSERT_TRUE(landed.ok()) << landed.error();
  EXPECT_FALSE(landed.value()) << "another transaction's commit passed for the batch's";
  // Committed, the batch's rows carry its own transaction.
  auto store = Open(url_);
  ASSERT_TRUE(store.ok()) << store.error();
  Status s = store.value()->Commit(b);
  ASSERT_TRUE(s.ok()) << s.message();
  std::string own;
  own = WrittenBy("source_positions");
  landed = CommitLanded(url_, own, 0, b);
  ASSERT_TRUE(landed.ok()) << landed.error();
  EXPECT_TRUE(landed.value());
  // Batches without a position, history, instances, sends or results
  // (inputs that start no journey, over HTTP): told by their new events'
  // rows, else by their dead letters'.
  Batch events = Numbered(7);
  events.history.clear();
  events.sends.clear();
  events.position.reset();
  Batch letters;
  letters.dead_letters = {{0, 10, "http[0]", "malformed JSON", "{"}};
  for (Batch* only : {&events, &letters}) {
    landed = CommitLanded(url_, other, 0, *only);
    ASSERT_TRUE(landed.ok()) << landed.error();
    EXPECT_FALSE(landed.value()) << "another transaction's commit passed for the batch's";
    s = store.value()->Commit(*only);
    ASSERT_TRUE(s.ok()) << s.message();
    own = WrittenBy(only == &events ? "events WHERE id = 'e7'" : "dead_letters");
    landed = CommitLanded(url_, own, 0, *only);
    ASSERT_TRUE(landed.ok()) << landed.error();
    EXPECT_TRUE(landed.value());
  }
  // A dead letter of another batch carrying the ID (reused after a crash)
  // is not this batch's.
  Batch others;
  others.dead_letters = {{0, 11, "http[0]", "not a CloudEvent", "[]"}};
  s = store.value()->Commit(others);
  ASSERT_TRUE(s.ok()) << s.message();
  own = WrittenBy("dead_letters WHERE time = 11");
  landed = CommitLanded(url_, own, 0, letters);
  ASSERT_TRUE(landed.ok()) << landed.error();
  EXPECT_FALSE(landed.value()) << "another batch's dead letter passed for this batch's";
  // Told by any new dead letter of the batch (found by its digest), not
  // only its first, which may be stored already.
  Batch again;
  again.dead_letters = {letters.dead_letters[0], {0, 12, "http[1]", "not a CloudEvent", "1"}};
  s = store.value()->Commit(again);
  ASSERT_TRUE(s.ok()) << s.message();
  own = WrittenBy("dead_letters WHERE time = 12");
  landed = CommitLanded(url_, own, 0, again);
  ASSERT_TRUE(landed.ok()) << landed.error();
  EXPECT_TRUE(landed.value()) << "a batch whose first dead letter was a repeat";
}

TEST_F(PostgresReconnect, OpeningWaitsForAServerThatIsNotUpYet) {
  proxy_->SetDown(true);
  auto opening = std::async(std::launch::async, [this] { return Open(proxied_); });
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (Reports().find("waiting for the server") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(Reports().find("waiting for the server"), std::string::npos) << Reports();
  EXPECT_EQ(opening.wait_for(100ms), std::future_status::timeout) << "opened a server that is down";
  proxy_->SetDown(false);
  auto store = opening.get();
  ASSERT_TRUE(store.ok()) << store.error();
  Batch b = Numbered(1);
  EXPECT_TRUE(store.value()->Commit(b).ok());
}

// A stop asked for while the server is away ends the commit with an error
// (the engine exits without acking; nothing is written).
TEST_F(PostgresReconnect, AStopWhileTheServerIsAwayEndsTheCommitWithAnError) {
  auto store = Open(proxied_);
  ASSERT_TRUE(store.ok()) << store.error();
  proxy_->SetDown(true);
  proxy_->CutAll();
  auto committing = std::async(std::launch::async, [&] {
    Batch b = Numbered(1);
    return store.value()->Commit(b);
  });
  EXPECT_EQ(committing.wait_for(500ms), std::future_status::timeout);
  keep_trying_ = false;
  ASSERT_EQ(committing.wait_for(5s), std::future_status::ready);
  Status s = committing.get();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("reconnecting stopped"), std::string::npos) << s.message();
  EXPECT_EQ(Count("events"), 0);
}

}  // namespace
}  // namespace waymark
