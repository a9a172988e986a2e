// The store conformance suite: every Store implementation must pass it.
// Each implementation registers a factory in kFactories.
//
// PostgreSQL runs against a real server: WAYMARK_TEST_POSTGRES names it
// (postgresql://USER@HOST:PORT, no database), and each test gets a new
// database. scripts/test.sh starts a server on a free loopback port and
// sets the variable; without it these tests fail, saying so.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "engine/store/postgres_store.h"
#include "engine/store/sqlite_store.h"
#include "tests/testing/db.h"

#include <pqxx/pqxx>

namespace waymark {
namespace {

namespace fs = std::filesystem;

// Opens a store; calling it again opens the same store anew (a restart).
struct Factory {
  std::string name;
  std::function<std::function<Result<std::unique_ptr<Store>>()>(const std::string& test)> make;
};

const Factory kFactories[] = {
    {"sqlite",
     [](std::string test) {
       std::replace(test.begin(), test.end(), '/', '_');
       fs::path p = fs::temp_directory_path() /
                    ("waymark_conf_" + std::to_string(::getpid()) + "_" + test + ".db");
       fs::remove(p);
       fs::remove(p.string() + "-wal");
       fs::remove(p.string() + "-shm");
       return [p] { return OpenSqliteStore(p.string()); };
     }},
    {"postgresql",
     [](std::string test) -> std::function<Result<std::unique_ptr<Store>>()> {
       const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
       if (!server || !*server) {
         return [] {
           return Result<std::unique_ptr<Store>>(
               Status::Error("WAYMARK_TEST_POSTGRES is not set: run the suite with "
                             "scripts/test.sh, which starts a PostgreSQL server for it"));
         };
       }
       std::string db = "conf_" + std::to_string(::getpid()) + "_";
       for (char c : test)
         db += std::isalnum(static_cast<unsigned char>(c)) ? char(std::tolower(c)) : '_';
       db = db.substr(0, 63);
       std::string url;
       try {
         url = testing_util::FreshPostgresDatabase(server, db);
       } catch (const std::exception& e) {
         std::string error = std::string("creating the test database: ") + e.what();
         return [error] { return Result<std::unique_ptr<Store>>(Status::Error(error)); };
       }
       auto migrated = MigratePostgres(url);
       if (!migrated.ok()) {
         std::string error = migrated.error();
         return [error] { return Result<std::unique_ptr<Store>>(Status::Error(error)); };
       }
       return [url] { return OpenPostgresStore(url); };
     }},
};

class StoreConformance : public testing::TestWithParam<Factory> {
 protected:
  void SetUp() override {
    open_ = GetParam().make(testing::UnitTest::GetInstance()->current_test_info()->name());
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto s = open_();
    ASSERT_TRUE(s.ok()) << s.error();
    store_ = std::move(s).value();
  }
  static Event Ev(const std::string& id, const std::string& subject = "u1", Micros t = 1000) {
    Event e;
    e.id = id;
    e.source = "test";
    e.type = "user.signup";
    e.subject = subject;
    e.time = t;
    e.data = {{"n", id}};
    return e;
  }
  static Instance Inst(const std::string& key, int64_t seq, bool finished = false) {
    Instance i;
    i.id = Instance::MakeId("j", key, seq);
    i.journey = "j";
    i.version = "v1";
    i.key = key;
    i.seq = seq;
    i.entered_at = 100 * seq;
    i.status = finished ? InstanceStatus::kCompleted : InstanceStatus::kWaiting;
    i.trigger = Ev("t").Doc();  // rows refer to it: batches store it too
    i.event = i.trigger;
    return i;
  }
  static SendRow Send(const std::string& key, const std::string& person = "u1", Micros at = 10) {
    SendRow r;
    r.key = key;
    r.instance_id = "j/" + person + "/1";
    r.journey = "j";
    r.person = person;
    r.state = "s";
    r.template_name = "welcome";
    r.recipient = "a@example.com";
    r.intent = "marketing";
    r.requested_at = at;
    r.not_before = at;
    r.trigger = Ev("t").Doc();
    r.event = Ev("e9").Doc();
    r.vars = {{"x", 1}};
    return r;
  }

  std::function<Result<std::unique_ptr<Store>>()> open_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreConformance, EventsAreUniqueBySourceAndId) {
  Batch b;
  b.events = {Ev("e1"), Ev("e2")};
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch again;
  again.events = {Ev("e1"), Ev("e3")};  // e1 re-sent
  ASSERT_TRUE(store_->Commit(again).ok());
  auto seen = store_->EventsSeen({{"test", "e1"}, {"test", "e3"}, {"test", "e4"}, {"other", "e1"}});
  ASSERT_TRUE(seen.ok()) << seen.error();
  EXPECT_EQ(seen.value(), (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ(store_->Counts().value().events, 3);
  auto by = store_->EventsBySubject("u1");
  ASSERT_TRUE(by.ok());
  ASSERT_EQ(by.value().size(), 3u);
  EXPECT_EQ(by.value()[0].id, "e1");
  EXPECT_EQ(by.value()[0].data, (nlohmann::json{{"n", "e1"}}));
  EXPECT_EQ(by.value()[2].id, "e3");
  auto one = store_->EventById("test", "e3");
  ASSERT_TRUE(one.ok() && one.value().has_value());
  EXPECT_EQ(one.value()->data, (nlohmann::json{{"n", "e3"}}));
  EXPECT_FALSE(store_->EventById("other", "e3").value().has_value());
}

TEST_P(StoreConformance, AStoredEventFirstInALargeBatchIsSkipped) {
  // Large enough to reach the store in several pieces (PostgreSQL's COPY is
  // sent 64 KiB at a time): the repeat is found after the first.
  Batch b;
  b.events = {Ev("e1")};
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch big;
  big.events = {Ev("e1")};
  for (int k = 0; k < 2000; ++k) {
    big.events.push_back(Ev("n" + std::to_string(k)));
    big.events.back().data["pad"] = std::string(100, 'x');
  }
  ASSERT_TRUE(store_->Commit(big).ok());
  EXPECT_EQ(store_->Counts().value().events, 2001);
  auto seen = store_->EventsSeen({{"test", "e1"}, {"test", "n0"}, {"test", "n1999"}});
  ASSERT_TRUE(seen.ok()) << seen.error();
  EXPECT_EQ(seen.value(), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(store_->EventById("test", "e1").value()->data, (nlohmann::json{{"n", "e1"}}));
  // A subject's events come back in the order they were stored.
  auto by = store_->EventsBySubject("u1");
  ASSERT_TRUE(by.ok()) << by.error();
  ASSERT_EQ(by.value().size(), 2001u);
  EXPECT_EQ(by.value()[0].id, "e1");
  for (size_t k = 1; k < by.value().size(); ++k) {
    ASSERT_EQ(by.value()[k].id, "n" + std::to_string(k - 1)) << k;
  }
}

TEST_P(StoreConformance, EventsAreRecognisedWhateverTheirIdsHold) {
  // Ids and sources are any text without control characters.
  std::vector<std::string> ids = {"a\"b", "c\\d", "e,f", "{g}", "h i", "NULL", "", "ü€😀", "'"};
  Batch b;
  for (const std::string& id : ids) b.events.push_back(Ev(id));
  b.events.push_back(Ev("s"));
  b.events.back().source = "sou\"rce,{x}";
  ASSERT_TRUE(store_->Commit(b).ok());
  std::vector<std::pair<std::string, std::string>> ask;
  for (const std::string& id : ids) ask.emplace_back("test", id);
  ask.emplace_back("sou\"rce,{x}", "s");
  ask.emplace_back("test", "a");
  ask.emplace_back("sou", "s");
  auto seen = store_->EventsSeen(ask);
  ASSERT_TRUE(seen.ok()) << seen.error();
  std::vector<bool> want(ids.size() + 1, true);
  want.push_back(false);
  want.push_back(false);
  EXPECT_EQ(seen.value(), want);
  EXPECT_TRUE(store_->EventsSeen({}).value().empty());
}

TEST_P(StoreConformance, JourneyVersionsAreImmutable) {
  Batch b;
  b.journey_versions = {{"h1", "j", "{\"a\":1}", "{}"}};
  ASSERT_TRUE(store_->Commit(b).ok());
  b.journey_versions = {{"h1", "j", "{\"a\":2}", "{}"}};
  ASSERT_TRUE(store_->Commit(b).ok());
  auto v = store_->JourneyVersion("h1");
  ASSERT_TRUE(v.ok() && v.value().has_value());
  EXPECT_EQ(v.value()->body, "{\"a\":1}");
  EXPECT_FALSE(store_->JourneyVersion("h2").value().has_value());
}

TEST_P(StoreConformance, ABatchCommitsWhollyOrNotAtAll) {
  Batch b;
  b.events = {Ev("e1")};
  b.history = {{"j/u1/1", 1, 5, "entered", "", {}}};
  ASSERT_TRUE(store_->Commit(b).ok());
  // The same history record again: the append-only log refuses it, and
  // nothing else in the batch lands.
  Batch bad;
  bad.events = {Ev("e2"), Ev("t")};
  bad.instances = {Inst("u1", 1)};
  bad.history = {{"j/u1/1", 2, 6, "wait", "s", {}}, {"j/u1/1", 1, 7, "entered", "", {}}};
  EXPECT_FALSE(store_->Commit(bad).ok());
  EXPECT_EQ(store_->EventsSeen({{"test", "e2"}}).value(), std::vector<bool>{false});
  EXPECT_EQ(store_->History("j/u1/1").value().size(), 1u);
  EXPECT_TRUE(store_->ActiveInstances().value().empty());
}

TEST_P(StoreConformance, HistoryIsOrderedPerInstance) {
  Batch b;
  for (int n = 1; n <= 5; ++n)
    b.history.push_back({"j/u1/1", n, n * 10, "k" + std::to_string(n), "s", {{"n", n}}});
  b.history.push_back({"j/u2/1", 1, 1, "entered", "", {}});
  ASSERT_TRUE(store_->Commit(b).ok());
  auto h = store_->History("j/u1/1");
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h.value().size(), 5u);
  for (int n = 1; n <= 5; ++n) {
    EXPECT_EQ(h.value()[size_t(n - 1)].n, n);
    EXPECT_EQ(h.value()[size_t(n - 1)].detail["n"], n);
  }
}

TEST_P(StoreConformance, HistoryRecordsWrittenTogetherAreReadOneByOne) {
  auto rec = [](const std::string& id, int64_t n) {
    return HistoryRow{id, n, n * 10, "k" + std::to_string(n), "s", {{"n", n}, {"q", "a\"b"}}};
  };
  Batch b;
  b.history = {rec("j/u1/1", 1), rec("j/u1/1", 2), rec("j/u2/1", 1), rec("j/u1/1", 3)};
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch b2;
  b2.history = {rec("j/u1/1", 4), rec("j/u1/1", 5)};
  ASSERT_TRUE(store_->Commit(b2).ok());
  Reopen();
  auto h = store_->History("j/u1/1");
  ASSERT_TRUE(h.ok()) << h.error();
  ASSERT_EQ(h.value().size(), 5u);
  for (int64_t n = 1; n <= 5; ++n) {
    const HistoryRow& r = h.value()[size_t(n - 1)];
    EXPECT_EQ(r.n, n);
    EXPECT_EQ(r.time, n * 10);
    EXPECT_EQ(r.kind, "k" + std::to_string(n));
    EXPECT_EQ(r.detail, (nlohmann::json{{"n", n}, {"q", "a\"b"}}));
  }
  EXPECT_EQ(store_->History("j/u2/1").value().size(), 1u);
  // A second writer of records from 4 on (a stale copy of the instance)
  // is refused, whatever it writes after them.
  Batch stale;
  stale.history = {rec("j/u1/1", 4), rec("j/u1/1", 5), rec("j/u1/1", 6)};
  EXPECT_FALSE(store_->Commit(stale).ok());
  EXPECT_EQ(store_->History("j/u1/1").value().size(), 5u);
}

TEST_P(StoreConformance, AKeyIsNotConfusedWithKeysThatStartWithIt) {
  Batch b;
  b.events = {Ev("t")};
  b.instances = {Inst("a", 1), Inst("a/b", 1), Inst("a/b", 2), Inst("a0", 1), Inst("a", 2)};
  ASSERT_TRUE(store_->Commit(b).ok());
  auto a = store_->Instances("j", "a");
  ASSERT_TRUE(a.ok()) << a.error();
  ASSERT_EQ(a.value().size(), 2u);
  EXPECT_EQ(a.value()[0].id, "j/a/1");
  EXPECT_EQ(a.value()[1].id, "j/a/2");
  EXPECT_EQ(store_->Instances("j", "a/b").value().size(), 2u);
  std::map<std::string, int64_t> counts;
  auto entries = store_->AllEntries();
  ASSERT_TRUE(entries.ok()) << entries.error();
  for (const EntryCount& c : entries.value()) counts[c.key] = c.count;
  EXPECT_EQ(counts, (std::map<std::string, int64_t>{{"a", 2}, {"a/b", 2}, {"a0", 1}}));
}

TEST_P(StoreConformance, InstancesAreAProjectionThatSurvivesRestart) {
  Batch b;
  b.events = {Ev("t")};
  b.instances = {Inst("u1", 1, true), Inst("u1", 2), Inst("u2", 1)};
  ASSERT_TRUE(store_->Commit(b).ok());
  Instance updated = Inst("u2", 1, true);
  updated.vars = {{"x", 1}};
  Batch b2;
  b2.instances = {updated};
  ASSERT_TRUE(store_->Commit(b2).ok());
  Reopen();
  auto active = store_->ActiveInstances();
  ASSERT_TRUE(active.ok());
  ASSERT_EQ(active.value().size(), 1u);
  EXPECT_EQ(active.value()[0].id, "j/u1/2");
  auto u1 = store_->Instances("j", "u1");
  ASSERT_EQ(u1.value().size(), 2u);
  EXPECT_EQ(u1.value()[0].seq, 1);
  auto u2 = store_->Instances("j", "u2").value();
  ASSERT_EQ(u2.size(), 1u);
  EXPECT_EQ(u2[0].vars, (nlohmann::json{{"x", 1}}));
  EXPECT_EQ(u2[0].status, InstanceStatus::kCompleted);
  auto entries = store_->AllEntries();
  ASSERT_TRUE(entries.ok()) << entries.error();
  ASSERT_EQ(entries.value().size(), 2u);
  std::map<std::string, std::pair<int64_t, Micros>> by_key;
  for (const EntryCount& c : entries.value()) by_key[c.journey + "/" + c.key] = {c.count, c.last};
  EXPECT_EQ(by_key["j/u1"], (std::pair<int64_t, Micros>{2, 200}));
  EXPECT_EQ(by_key["j/u2"], (std::pair<int64_t, Micros>{1, 100}));
  auto page1 = store_->InstancesAfter("", 2).value();
  ASSERT_EQ(page1.size(), 2u);
  EXPECT_EQ(page1[0].id, "j/u1/1");
  auto page2 = store_->InstancesAfter(page1.back().id, 2).value();
  ASSERT_EQ(page2.size(), 1u);
  EXPECT_EQ(page2[0].id, "j/u2/1");
}

TEST_P(StoreConformance, AnInstanceWrittenTwiceInOneBatchKeepsItsLastRow) {
  Instance later = Inst("u1", 1, true);
  later.vars = {{"step", 2}};
  Batch b;
  b.events = {Ev("t")};
  b.instances = {Inst("u1", 1), Inst("u2", 1), later};
  ASSERT_TRUE(store_->Commit(b).ok());
  auto u1 = store_->Instances("j", "u1");
  ASSERT_TRUE(u1.ok()) << u1.error();
  ASSERT_EQ(u1.value().size(), 1u);
  EXPECT_EQ(u1.value()[0].status, InstanceStatus::kCompleted);
  EXPECT_EQ(u1.value()[0].vars, (nlohmann::json{{"step", 2}}));
  EXPECT_EQ(store_->ActiveInstances().value().size(), 1u);  // u2
}

TEST_P(StoreConformance, InstancesBegunAndContinuedInOneBatchKeepTheirLastRows) {
  // An instance that begins in a batch (its history starts there) and one
  // stored before it, each written twice, beside one written once.
  auto entered = [](const std::string& id, int64_t n) {
    return HistoryRow{id, n, n, n == 1 ? "entered" : "wait", "s", {}};
  };
  Batch b;
  b.events = {Ev("t")};
  b.instances = {Inst("old", 1)};
  b.history = {entered("j/old/1", 1)};
  ASSERT_TRUE(store_->Commit(b).ok());
  Instance old_done = Inst("old", 1, true), new_done = Inst("new", 1, true);
  old_done.vars = {{"v", "old"}};
  new_done.vars = {{"v", "new"}};
  Batch b2;
  b2.instances = {Inst("new", 1), Inst("old", 1), Inst("once", 1), new_done, old_done};
  b2.history = {entered("j/new/1", 1), entered("j/new/1", 2), entered("j/old/1", 2),
                entered("j/once/1", 1)};
  ASSERT_TRUE(store_->Commit(b2).ok());
  Reopen();
  for (const char* key : {"old", "new"}) {
    auto i = store_->Instances("j", key);
    ASSERT_TRUE(i.ok()) << i.error();
    ASSERT_EQ(i.value().size(), 1u) << key;
    EXPECT_EQ(i.value()[0].status, InstanceStatus::kCompleted) << key;
    EXPECT_EQ(i.value()[0].vars, (nlohmann::json{{"v", key}}));
  }
  auto active = store_->ActiveInstances();
  ASSERT_TRUE(active.ok()) << active.error();
  ASSERT_EQ(active.value().size(), 1u);
  EXPECT_EQ(active.value()[0].id, "j/once/1");
}

// Rows read back get the events they refer to, however many: the stores
// load them in chunks, each event once, in the rows' snapshot.
TEST_P(StoreConformance, ManyRowsGetTheirOwnEventsBack) {
  Batch b;
  b.events = {Ev("shared")};
  for (int k = 0; k < 1300; ++k) {
    std::string n = std::to_string(k);
    b.events.push_back(Ev("t" + n));
    b.events.push_back(Ev("e" + n));
    Instance i = Inst("p" + n, 1);
    i.trigger = Ev("t" + n).Doc();
    i.event = k % 3 == 0 ? Ev("shared").Doc() : Ev("e" + n).Doc();
    b.instances.push_back(std::move(i));
    SendRow r = Send("k" + n, "p" + n);
    r.trigger = Ev("t" + n).Doc();
    r.event = k % 3 == 0 ? Ev("shared").Doc() : Ev("e" + n).Doc();
    r.vars = {{"k", k}};
    b.sends.push_back(std::move(r));
  }
  ASSERT_TRUE(store_->Commit(b).ok());
  Reopen();
  auto active = store_->ActiveInstances();
  ASSERT_TRUE(active.ok()) << active.error();
  ASSERT_EQ(active.value().size(), 1300u);
  std::set<std::string> keys;
  for (const Instance& i : active.value()) {
    keys.insert(i.key);
    int k = std::stoi(i.key.substr(1));
    ASSERT_TRUE(i.trigger && i.event) << i.id;
    ASSERT_EQ(*i.trigger, *Ev("t" + std::to_string(k)).Doc()) << i.id;
    ASSERT_EQ(*i.event, *(k % 3 == 0 ? Ev("shared") : Ev("e" + std::to_string(k))).Doc()) << i.id;
  }
  auto pending = store_->PendingSends(2000);
  ASSERT_TRUE(pending.ok()) << pending.error();
  EXPECT_EQ(keys.size(), 1300u);
  ASSERT_EQ(pending.value().size(), 1300u);
  keys.clear();
  for (const SendRow& r : pending.value()) {
    keys.insert(r.key);
    int k = std::stoi(r.person.substr(1));
    ASSERT_EQ(r.key, "k" + std::to_string(k));
    ASSERT_TRUE(r.trigger && r.event) << r.key;
    ASSERT_EQ(*r.trigger, *Ev("t" + std::to_string(k)).Doc()) << r.key;
    ASSERT_EQ(*r.event, *(k % 3 == 0 ? Ev("shared") : Ev("e" + std::to_string(k))).Doc()) << r.key;
    ASSERT_EQ(r.vars, (nlohmann::json{{"k", k}})) << r.key;
  }
  EXPECT_EQ(keys.size(), 1300u);
}

TEST_P(StoreConformance, ManySendsInOneBatchAreNumberedInOrder) {
  Batch b;
  b.events = {Ev("t"), Ev("e9")};
  for (int k = 0; k < 2500; ++k) b.sends.push_back(Send("k" + std::to_string(k)));
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch b2;
  b2.sends = {Send("later")};
  ASSERT_TRUE(store_->Commit(b2).ok());
  EXPECT_GT(b.sends[0].seq, 0);
  for (size_t k = 1; k < b.sends.size(); ++k) ASSERT_LT(b.sends[k - 1].seq, b.sends[k].seq) << k;
  EXPECT_LT(b.sends.back().seq, b2.sends[0].seq);
  auto pending = store_->PendingSends(3000);
  ASSERT_TRUE(pending.ok()) << pending.error();
  ASSERT_EQ(pending.value().size(), 2501u);
  EXPECT_EQ(pending.value()[1234].key, "k1234");
  EXPECT_EQ(pending.value()[1234].seq, b.sends[1234].seq);
}

TEST_P(StoreConformance, RowsReferToEventsStoredOnce) {
  Instance i = Inst("u1", 1);
  Event later = Ev("e2", "u1", 2000);
  later.data = {{"order", {{"total", 42.5}, {"items", {"a", "b"}}}}};
  i.event = later.Doc();
  SendRow s = Send("k1");
  s.event = later.Doc();
  Batch b;
  b.events = {Ev("t"), later};
  b.instances = {i};
  b.sends = {s};
  ASSERT_TRUE(store_->Commit(b).ok());
  Reopen();
  auto got = store_->Instances("j", "u1");
  ASSERT_TRUE(got.ok()) << got.error();
  ASSERT_EQ(got.value().size(), 1u);
  EXPECT_EQ(got.value()[0].ToJson(), i.ToJson());
  EXPECT_EQ(*got.value()[0].event, *later.Doc());
  auto sends = store_->Sends("j/u1/1");
  ASSERT_TRUE(sends.ok()) << sends.error();
  ASSERT_EQ(sends.value().size(), 1u);
  EXPECT_EQ(*sends.value()[0].trigger, *Ev("t").Doc());
  EXPECT_EQ(*sends.value()[0].event, *later.Doc());
  EXPECT_EQ(sends.value()[0].vars, (nlohmann::json{{"x", 1}}));
}

TEST_P(StoreConformance, ARowNamingAnEventTheStoreLacksIsAnErrorOnRead) {
  Batch b;
  b.instances = {Inst("u1", 1)};  // its trigger "t" is not stored
  ASSERT_TRUE(store_->Commit(b).ok());
  auto got = store_->Instances("j", "u1");
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().find("not in the store"), std::string::npos) << got.error();
}

TEST_P(StoreConformance, TimersAreTheDueTimesOfUnfinishedInstances) {
  Batch b;
  b.events = {Ev("t")};
  for (auto [key, due] : {std::pair{"a", 300}, {"b", 100}, {"c", 200}, {"d", 0}}) {
    Instance i = Inst(key, 1);
    i.due = due;
    b.instances.push_back(i);
  }
  Instance done = Inst("e", 1, true);
  done.due = 10;  // finished: not a timer
  b.instances.push_back(done);
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch b2;
  Instance c = Inst("c", 1), a = Inst("a", 1);
  c.due = 0;
  a.due = 50;
  b2.instances = {c, a};
  ASSERT_TRUE(store_->Commit(b2).ok());
  Reopen();
  auto due = store_->DueTimers(1000, 10);
  ASSERT_TRUE(due.ok()) << due.error();
  EXPECT_EQ(due.value(),
            (std::vector<std::pair<std::string, Micros>>{{"j/a/1", 50}, {"j/b/1", 100}}));
  EXPECT_EQ(store_->DueTimers(60, 10).value().size(), 1u);
  EXPECT_EQ(store_->DueTimers(1000, 1).value().size(), 1u);
}

TEST_P(StoreConformance, FinishedInstancesWithOpenGoalsAreFoundByWindow) {
  Batch b;
  b.events = {Ev("t")};
  Instance open = Inst("a", 1, true), closed = Inst("b", 1, true), running = Inst("c", 1);
  open.goals_open_until = 500;
  closed.goals_open_until = 90;
  b.instances = {open, closed, running, Inst("d", 1, true)};
  ASSERT_TRUE(store_->Commit(b).ok());
  Reopen();
  auto w = store_->GoalWatchingInstances(100);
  ASSERT_TRUE(w.ok()) << w.error();
  ASSERT_EQ(w.value().size(), 1u);
  EXPECT_EQ(w.value()[0].id, "j/a/1");
  EXPECT_EQ(w.value()[0].goals_open_until, 500);
  EXPECT_EQ(store_->GoalWatchingInstances(0).value().size(), 2u);
  // A window includes its end, as the step has it: at 500 the goal can
  // still be reached (it was left out, so a conversion at the window's
  // last instant was lost across a restart).
  ASSERT_EQ(store_->GoalWatchingInstances(500).value().size(), 1u);
  EXPECT_TRUE(store_->GoalWatchingInstances(501).value().empty());
}

TEST_P(StoreConformance, SendsStayPendingUntilAFinalResult) {
  Batch b;
  b.events = {Ev("t"), Ev("e9")};
  b.sends = {Send("k1", "u1", 10), Send("k2", "u1", 20), Send("k3", "u2", 30)};
  ASSERT_TRUE(store_->Commit(b).ok());
  // Commit numbers the outbox in order.
  EXPECT_GT(b.sends[0].seq, 0);
  EXPECT_LT(b.sends[0].seq, b.sends[1].seq);
  EXPECT_LT(b.sends[1].seq, b.sends[2].seq);
  EXPECT_EQ(store_->PendingSends(10).value().size(), 3u);
  Batch r;
  r.results = {{b.sends[0].seq, "k1", 1, 40, "accepted", true, {{"provider_id", "p1"}}},
               {b.sends[1].seq, "k2", 1, 41, "retry_later", false, {}}};
  ASSERT_TRUE(store_->Commit(r).ok());
  auto pending = store_->PendingSends(10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending.value().size(), 2u);
  EXPECT_EQ(pending.value()[0].key, "k2");
  EXPECT_EQ(pending.value()[0].seq, b.sends[1].seq);
  EXPECT_EQ(pending.value()[1].key, "k3");
  EXPECT_EQ(pending.value()[0].vars, (nlohmann::json{{"x", 1}}));
  EXPECT_EQ((*pending.value()[0].trigger)["data"]["n"], "t");
  auto sends = store_->Sends("j/u1/1").value();
  ASSERT_EQ(sends.size(), 2u);
  EXPECT_EQ(sends[0].template_name, "welcome");
  auto results = store_->SendResults(b.sends[0].seq).value();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].key, "k1");
  EXPECT_EQ(results[0].detail["provider_id"], "p1");
  // The pending sends' results in one read: k2's retry, not k1's final.
  Batch again;
  again.results = {{b.sends[1].seq, "k2", 2, 42, "throttled", false, {{"wait_ms", 5}}}};
  ASSERT_TRUE(store_->Commit(again).ok());
  auto of_pending = store_->PendingSendResults();
  ASSERT_TRUE(of_pending.ok()) << of_pending.error();
  ASSERT_EQ(of_pending.value().size(), 2u);
  EXPECT_EQ(of_pending.value()[0].send_seq, b.sends[1].seq);
  EXPECT_EQ(of_pending.value()[0].attempt, 1);
  EXPECT_EQ(of_pending.value()[0].result, "retry_later");
  EXPECT_EQ(of_pending.value()[1].attempt, 2);
  EXPECT_EQ(of_pending.value()[1].key, "k2");
  EXPECT_EQ(of_pending.value()[1].time, 42);
  EXPECT_FALSE(of_pending.value()[1].final);
  EXPECT_EQ(of_pending.value()[1].detail["wait_ms"], 5);
  // A result is appended once per attempt.
  EXPECT_FALSE(store_->Commit(r).ok());
}

TEST_P(StoreConformance, AResultNamesItsSendByKeyWithinTheBatch) {
  Batch b;
  b.events = {Ev("t"), Ev("e9")};
  b.sends = {Send("k1"), Send("k2")};
  b.results = {{0, "k2", 1, 10, "capped", true, {}}};
  ASSERT_TRUE(store_->Commit(b).ok());
  EXPECT_EQ(b.results[0].send_seq, b.sends[1].seq);
  auto pending = store_->PendingSends(10).value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].key, "k1");
  Batch stray;
  stray.results = {{0, "nowhere", 1, 10, "accepted", true, {}}};
  EXPECT_FALSE(store_->Commit(stray).ok());
}

TEST_P(StoreConformance, AnAuditReadsEveryEventInOrderAndEverySendWithItsLastResult) {
  // Stored order, not time or id order: the log is replayed as it came.
  Batch one;
  one.events = {Ev("z", "u2", 5000), Ev("t"), Ev("e9")};
  one.sends = {Send("k1", "u1", 10), Send("k2", "u2", 20), Send("k3", "u1", 30)};
  one.sends[1].template_name = "nudge";
  one.sends[1].recipient = "b@example.com";
  one.sends[1].not_before = 25;
  one.results = {{0, "k3", 1, 30, "capped", true, {}}};
  ASSERT_TRUE(store_->Commit(one).ok());
  Batch two;
  two.events = {Ev("a", "u3", 1), Ev("t")};  // "t" again: stored once
  two.results = {{one.sends[0].seq, "k1", 1, 40, "retry_later", false, {}},
                 {one.sends[0].seq, "k1", 2, 50, "bounced", true, {}}};
  ASSERT_TRUE(store_->Commit(two).ok());

  std::vector<std::string> ids;
  std::vector<SendSummary> recorded;
  Status scan = store_->ReadRecord(
      [&](std::vector<SendSummary> sends) {
        recorded = std::move(sends);
        return Status();
      },
      [&](Event e) {
        ids.push_back(e.id + "@" + e.subject);
        return Status();
      });
  ASSERT_TRUE(scan.ok()) << scan.message();
  EXPECT_EQ(ids, (std::vector<std::string>{"z@u2", "t@u1", "e9@u1", "a@u3"}));
  ASSERT_EQ(recorded.size(), 3u);
  EXPECT_EQ(recorded[0].key, "k1");
  EXPECT_EQ(recorded[0].last_result, "bounced");
  EXPECT_EQ(recorded[2].key, "k3");
  // A callback's error ends the read and comes back.
  int seen = 0;
  Status stopped = store_->ReadRecord(
      {}, [&](Event) { return ++seen == 2 ? Status::Error("enough") : Status(); });
  EXPECT_EQ(stopped.message(), "enough");
  EXPECT_EQ(seen, 2);
  Status no_sends = store_->ReadRecord([](std::vector<SendSummary>) { return Status::Error("no"); },
                                       [&](Event) { return Status::Error("not reached"); });
  EXPECT_EQ(no_sends.message(), "no");
  EXPECT_TRUE(store_->ReadRecord({}, [](Event) { return Status(); }).ok());  // usable after

  auto first = store_->SendsAfter(0, 2);
  ASSERT_TRUE(first.ok()) << first.error();
  ASSERT_EQ(first.value().size(), 2u);
  const SendSummary& a = first.value()[0];
  EXPECT_EQ(a.seq, one.sends[0].seq);
  EXPECT_EQ(a.key, "k1");
  EXPECT_EQ(a.instance_id, "j/u1/1");
  EXPECT_EQ(a.journey, "j");
  EXPECT_EQ(a.person, "u1");
  EXPECT_EQ(a.template_name, "welcome");
  EXPECT_EQ(a.last_result, "bounced");  // the last attempt's
  const SendSummary& b = first.value()[1];
  EXPECT_EQ(b.key, "k2");
  EXPECT_EQ(b.instance_id, "j/u2/1");
  EXPECT_EQ(b.template_name, "nudge");
  EXPECT_EQ(b.recipient, "b@example.com");
  EXPECT_EQ(b.requested_at, 20);
  EXPECT_EQ(b.not_before, 25);
  EXPECT_EQ(b.last_result, "");  // none yet
  auto rest = store_->SendsAfter(b.seq, 2);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest.value().size(), 1u);
  EXPECT_EQ(rest.value()[0].key, "k3");
  EXPECT_EQ(rest.value()[0].last_result, "capped");
  EXPECT_TRUE(store_->SendsAfter(rest.value()[0].seq, 2).value().empty());
}

// Two engines on one consumer would each dispatch the other's pending
// sends: one store handle at a time holds a name; another waits until the
// first is closed.
TEST_P(StoreConformance, OneHandleAtATimeClaimsAName) {
  std::vector<std::string> said;
  auto say = [&](const std::string& what) { said.push_back(what); };
  auto never = [] { return false; };
  ASSERT_TRUE(store_->Claim("EVENTS/waymark", never, say).ok());
  auto other = open_();
  ASSERT_TRUE(other.ok()) << other.error();
  int asked = 0;
  auto twice = [&] { return ++asked < 3; };
  ASSERT_FALSE(other.value()->Claim("EVENTS/waymark", twice, say).ok());
  EXPECT_EQ(asked, 3);
  ASSERT_EQ(said.size(), 1u);  // said once, not at every try
  EXPECT_NE(said[0].find("waiting for it to stop"), std::string::npos) << said[0];
  // Another name (another partition's consumer) is another claim.
  EXPECT_TRUE(other.value()->Claim("EVENTS/waymark-1", never, say).ok());
  // Closed, it lets go (a PostgreSQL server notices the closed session a
  // moment later: the waiting one tries again).
  store_.reset();
  int tries = 0;
  auto a_while = [&] { return ++tries < 100; };
  EXPECT_TRUE(other.value()->Claim("EVENTS/waymark", a_while, say).ok());
  EXPECT_LT(tries, 100);
}

// An audit of a live store: a batch an engine commits between the read of
// the sends and the read of the events is in neither. (Its events were
// read without its sends, and the replay reported its sends as "only
// replayed".)
TEST_P(StoreConformance, AnAuditReadsSendsAndEventsInOneSnapshot) {
  Batch one;
  one.events = {Ev("t"), Ev("e1")};
  one.sends = {Send("k1", "u1", 10)};
  ASSERT_TRUE(store_->Commit(one).ok());
  std::vector<std::string> ids;
  size_t sends_read = 0;
  Status scan = store_->ReadRecord(
      [&](std::vector<SendSummary> sends) {
        sends_read = sends.size();
        // Another engine's commit, through a connection of its own.
        auto other = open_();
        if (!other.ok()) return other.status();
        Batch two;
        two.events = {Ev("e2", "u2")};
        two.sends = {Send("k2", "u2", 20)};
        return other.value()->Commit(two);
      },
      [&](Event e) {
        ids.push_back(e.id);
        return Status();
      });
  ASSERT_TRUE(scan.ok()) << scan.message();
  EXPECT_EQ(sends_read, 1u);
  EXPECT_EQ(ids, (std::vector<std::string>{"t", "e1"}));
  // Committed all the same: the next read has it.
  ids.clear();
  ASSERT_TRUE(store_
                  ->ReadRecord({},
                               [&](Event e) {
                                 ids.push_back(e.id);
                                 return Status();
                               })
                  .ok());
  EXPECT_EQ(ids, (std::vector<std::string>{"t", "e1", "e2"}));
}

TEST_P(StoreConformance, CapCountedSendsByPersonAndTime) {
  Batch b;
  b.events = {Ev("t"), Ev("e9")};
  SendRow counted1 = Send("k1", "u1", 10), counted2 = Send("k2", "u1", 30),
          free = Send("k3", "u1", 20), other = Send("k4", "u2", 15);
  counted1.cap_counted = counted2.cap_counted = other.cap_counted = true;
  counted2.not_before = 50;  // held: counts at the time it goes out
  b.sends = {counted1, counted2, free, other};
  ASSERT_TRUE(store_->Commit(b).ok());
  auto t = store_->CapCountedTimes("u1", 0);
  ASSERT_TRUE(t.ok()) << t.error();
  EXPECT_EQ(t.value(), (std::vector<Micros>{10, 50}));
  EXPECT_EQ(store_->CapCountedTimes("u1", 11).value(), (std::vector<Micros>{50}));
  EXPECT_EQ(store_->CapCountedTimes("u3", 0).value(), std::vector<Micros>{});
  EXPECT_TRUE(store_->Sends("j/u1/1").value()[0].cap_counted);
  // Cancelled (an exit before it went), it never went: it counts no more.
  int64_t seq = 0;
  auto stored = store_->Sends("j/u1/1");
  ASSERT_TRUE(stored.ok()) << stored.error();
  for (const SendRow& r : stored.value()) {
    if (r.key == "k2") seq = r.seq;
  }
  ASSERT_GT(seq, 0);
  Batch cancel;
  cancel.results = {{seq, "k2", 1, 40, "cancelled", true, {{"reason", "exited"}}}};
  ASSERT_TRUE(store_->Commit(cancel).ok());
  EXPECT_EQ(store_->CapCountedTimes("u1", 0).value(), (std::vector<Micros>{10}));
}

TEST_P(StoreConformance, DeadLettersKeepTheirReasonAndInput) {
  Batch b;
  // Raw input may be any bytes: NUL, invalid UTF-8.
  const std::string bytes("{\"a\":\"\0\xff\xfe\"", 10);
  b.dead_letters = {{0, 5, "events.jsonl:3", "malformed JSON", "{nope"},
                    {0, 6, "events.jsonl:9", "missing required CloudEvents attribute 'id'", "{}"},
                    {0, 7, "events.jsonl:11", "malformed JSON", bytes},
                    // Every byte PostgreSQL's COPY text gives a meaning.
                    {0, 8, "C:\\in\\x.jsonl:1", "a\tb\nc\r\\N\\", "x"}};
  ASSERT_TRUE(store_->Commit(b).ok());
  Reopen();
  auto d = store_->DeadLetters();
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d.value().size(), 4u);
  EXPECT_EQ(d.value()[0].input, "events.jsonl:3");
  EXPECT_EQ(d.value()[0].raw, "{nope");
  EXPECT_EQ(d.value()[2].raw, bytes);
  EXPECT_EQ(d.value()[1].reason, "missing required CloudEvents attribute 'id'");
  // The latest only, oldest first (a summary names a few of millions).
  auto latest = store_->DeadLetters(2);
  ASSERT_TRUE(latest.ok()) << latest.error();
  ASSERT_EQ(latest.value().size(), 2u);
  EXPECT_EQ(latest.value()[0].input, "events.jsonl:11");
  EXPECT_EQ(latest.value()[1].input, "C:\\in\\x.jsonl:1");
  EXPECT_LT(d.value()[0].id, d.value()[1].id);
  EXPECT_EQ(d.value()[3].input, "C:\\in\\x.jsonl:1");
  EXPECT_EQ(d.value()[3].reason, "a\tb\nc\r\\N\\");
}

// The same dead letter again (a file read again, a message delivered
// again) is stored once, in a later batch or the same one; one that differs
// in its input, reason or raw bytes is another. Each re-read added a copy.
TEST_P(StoreConformance, ADeadLetterReadAgainIsStoredOnce) {
  const std::string bytes("{\0\xff", 3);
  Batch b;
  b.dead_letters = {{0, 5, "events.jsonl:3", "malformed JSON", bytes},
                    {0, 5, "events.jsonl:3", "malformed JSON", bytes}};
  ASSERT_TRUE(store_->Commit(b).ok());
  Reopen();
  Batch again;
  again.dead_letters = {{0, 9, "events.jsonl:3", "malformed JSON", bytes},
                        {0, 9, "events.jsonl:4", "malformed JSON", bytes},
                        {0, 9, "events.jsonl:3", "malformed JSON.", bytes},
                        {0, 9, "events.jsonl:3", "malformed JSON", bytes + "x"}};
  ASSERT_TRUE(store_->Commit(again).ok());
  auto d = store_->DeadLetters();
  ASSERT_TRUE(d.ok()) << d.error();
  ASSERT_EQ(d.value().size(), 4u);
  EXPECT_EQ(d.value()[0].time, 5);  // the first one stays
  EXPECT_EQ(d.value()[0].raw, bytes);
  EXPECT_EQ(d.value()[1].input, "events.jsonl:4");
  EXPECT_EQ(store_->Counts().value().dead_letters, 4);
}

// Every change moves the version; the entries it wrote carry it, so that
// an engine reads only those (a bounce's); a command's change also moves
// `replaced`, after which an engine reads the whole list (it reloaded the
// whole list after every batch with a bounce).
TEST_P(StoreConformance, SuppressionsAreKeptByEntryAndEveryChangeMovesTheVersion) {
  auto v0 = store_->SuppressionsVersion().value();
  EXPECT_TRUE(store_->Suppressions().value().empty());
  ASSERT_TRUE(store_
                  ->Suppress({{"ana@example.com", "all", "unsubscribed by phone", "cli", 10},
                              {"example.net", "marketing", "complaints", "import", 11}})
                  .ok());
  auto v1 = store_->SuppressionsVersion().value();
  EXPECT_GT(v1.changed, v0.changed);
  EXPECT_EQ(v1.replaced, v1.changed);
  // A bounce in a batch does not replace an entry that is there...
  Batch b;
  b.suppressions = {{"ana@example.com", "all", "550 5.1.1", "bounce", 20},
                    {"bo@example.org", "all", "550 5.1.1", "bounce", 21}};
  ASSERT_TRUE(store_->Commit(b).ok());
  auto v2 = store_->SuppressionsVersion().value();
  EXPECT_GT(v2.changed, v1.changed);
  EXPECT_EQ(v2.replaced, v1.replaced);
  Reopen();
  auto since = store_->Suppressions(v1.changed);
  ASSERT_TRUE(since.ok()) << since.error();
  ASSERT_EQ(since.value().size(), 1u);  // what the bounce wrote, and only that
  EXPECT_EQ(since.value()[0].entry, "bo@example.org");
  EXPECT_TRUE(store_->Suppressions(v2.changed).value().empty());
  auto all = store_->Suppressions().value();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].entry, "ana@example.com");
  EXPECT_EQ(all[0].reason, "unsubscribed by phone");
  EXPECT_EQ(all[0].source, "cli");
  EXPECT_EQ(all[1].entry, "bo@example.org");
  EXPECT_EQ(all[1].source, "bounce");
  EXPECT_EQ(all[1].created_at, 21);
  EXPECT_EQ(all[2].scope, "marketing");
  // ...and a command does.
  ASSERT_TRUE(store_->Suppress({{"ana@example.com", "marketing", "asked", "cli", 30}}).ok());
  EXPECT_EQ(store_->Suppressions().value()[0].scope, "marketing");
  auto v3 = store_->SuppressionsVersion().value();
  EXPECT_EQ(v3.replaced, v3.changed);
  // A bounce widens a narrower entry to all mail, and it is read as new.
  Batch widen;
  widen.suppressions = {{"ana@example.com", "all", "550 5.1.1", "bounce", 31}};
  ASSERT_TRUE(store_->Commit(widen).ok());
  EXPECT_EQ(store_->Suppressions().value()[0].scope, "all");
  EXPECT_EQ(store_->Suppressions().value()[0].source, "bounce");
  auto widened = store_->Suppressions(v3.changed).value();
  ASSERT_EQ(widened.size(), 1u);
  EXPECT_EQ(widened[0].scope, "all");
  auto v4 = store_->SuppressionsVersion().value();
  EXPECT_TRUE(store_->Unsuppress("example.net").value());
  auto v5 = store_->SuppressionsVersion().value();
  EXPECT_GT(v5.changed, v4.changed);
  EXPECT_EQ(v5.replaced, v5.changed);  // a removal: engines read all again
  EXPECT_FALSE(store_->Unsuppress("example.net").value());
  EXPECT_EQ(store_->SuppressionsVersion().value().changed, v5.changed);  // nothing changed
  EXPECT_EQ(store_->Suppressions().value().size(), 2u);
}

TEST_P(StoreConformance, ASourcePositionIsCommittedWithItsBatch) {
  EXPECT_FALSE(store_->Position("EVENTS/waymark").value().has_value());
  Batch b;
  b.events = {Ev("e1")};
  b.position = SourcePosition{"EVENTS/waymark", 41, 0};
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch only;  // a position alone is a batch
  only.position = SourcePosition{"EVENTS/waymark", 42, 2};
  EXPECT_FALSE(only.empty());
  ASSERT_TRUE(store_->Commit(only).ok());
  // A failed batch moves no position.
  Batch bad;
  bad.history = {{"j/u1/1", 1, 5, "entered", "", {}}, {"j/u1/1", 1, 6, "entered", "", {}}};
  bad.position = SourcePosition{"EVENTS/waymark", 99, 0};
  EXPECT_FALSE(store_->Commit(bad).ok());
  Reopen();
  auto p = store_->Position("EVENTS/waymark");
  ASSERT_TRUE(p.ok()) << p.error();
  ASSERT_TRUE(p.value().has_value());
  EXPECT_EQ(p.value()->seq, 42u);
  EXPECT_EQ(p.value()->restarts, 2);
  EXPECT_FALSE(store_->Position("EVENTS/other").value().has_value());
}

// An engine's clock is kept with its batch, by name, and never moves back.
TEST_P(StoreConformance, AnEnginesClockIsCommittedWithItsBatchAndOnlyMovesForward) {
  EXPECT_EQ(store_->Clock("partition 0").value(), 0);
  Batch b;
  b.events = {Ev("e1")};
  b.clocks = {{"partition 0", 5000}};
  ASSERT_TRUE(store_->Commit(b).ok());
  Batch earlier;
  earlier.events = {Ev("e2")};
  earlier.clocks = {{"partition 0", 4000}};
  ASSERT_TRUE(store_->Commit(earlier).ok());
  Batch other;  // two clocks in one batch
  other.events = {Ev("e3")};
  other.clocks = {{"partition 1", 7}, {"partition 1 latest event", 6}};
  ASSERT_TRUE(store_->Commit(other).ok());
  // A failed batch moves no clock.
  Batch bad;
  bad.history = {{"j/u1/1", 1, 5, "entered", "", {}}, {"j/u1/1", 1, 6, "entered", "", {}}};
  bad.clocks = {{"partition 0", 9000}};
  EXPECT_FALSE(store_->Commit(bad).ok());
  Reopen();
  EXPECT_EQ(store_->Clock("partition 0").value(), 5000);
  EXPECT_EQ(store_->Clock("partition 1").value(), 7);
  EXPECT_EQ(store_->Clock("partition 1 latest event").value(), 6);
}

// Pruning (docs/operations.md, "Pruning"), with the cut-off at 1000 (4000
// before the latest event, at 5000): an old finished instance goes with
// its history, sends and results, and its entry stays counted; instances
// still running, finished after the cut-off, watching goals, with a send in
// flight or one the frequency cap still counts stay, with every event they
// refer to (from their rows, their sends, their history); old events
// nothing kept refers to go, and old dead letters.
TEST_P(StoreConformance, PruneRemovesWhatIsOldAndKeepsWhatIsReferred) {
  auto instance = [](const std::string& key, const std::string& trigger, Micros entered,
                     Micros time, bool finished) {
    Instance i = Inst(key, 1, finished);
    i.entered_at = entered;
    i.time = time;
    i.trigger = Ev(trigger).Doc();
    i.event = i.trigger;
    return i;
  };
  auto send = [](const std::string& key, const std::string& person, const std::string& event) {
    SendRow r = Send(key, person);
    r.trigger = Ev(event).Doc();
    r.event = r.trigger;
    return r;
  };
  // A store without events has nothing to prune, whatever the wall clock.
  auto empty = store_->Prune({1'000'000, 10, 0, false});
  ASSERT_TRUE(empty.ok()) << empty.error();
  EXPECT_FALSE(empty.value().before.has_value());
  Batch b1;
  b1.events = {Ev("a", "a", 10), Ev("old", "x", 15)};
  b1.instances = {instance("a", "a", 10, 50, true)};
  b1.history = {{"j/a/1", 1, 10, "entered", "s", {}}, {"j/a/1", 2, 50, "completed", "", {}}};
  b1.sends = {send("kA", "a", "a")};
  b1.results = {{0, "kA", 1, 40, "accepted", true, {}}};
  b1.dead_letters = {{0, 10, "events.jsonl:1", "malformed JSON", "{"}};
  ASSERT_TRUE(store_->Commit(b1).ok());
  Batch b2;
  // The running instance's trigger has an id with a backslash before
  // "u0000" (six characters, no NUL): PostgreSQL's prune reads the escape
  // of NUL as U+FFFD in its JSON, and compared the id so changed with the
  // event's, which it then deleted from under the instance.
  const std::string odd = "k\\u0000x";
  b2.events = {Ev(odd, "k", 20), Ev("kmove", "k", 30), Ev("hist", "k", 25), Ev("sendev", "p", 26),
               Ev("between", "x", 35)};
  Instance running = instance("k", odd, 20, 30, false);
  running.event = Ev("kmove").Doc();
  Instance watching = instance("g", "kmove", 30, 60, true);
  watching.goals_open_until = 2000;
  b2.instances = {running, watching, instance("d", "kmove", 30, 1500, true),
                  instance("p", "kmove", 30, 70, true), instance("c", "kmove", 30, 80, true)};
  b2.history = {{"j/k/1", 1, 25, "event", "s", {{"event_id", "hist"}, {"event_source", "test"}}}};
  b2.sends = {send("kP", "p", "kmove"), send("kC", "c", "kmove")};
  b2.sends[0].event = Ev("sendev").Doc();
  // Held by quiet hours until 900, then sent: a cap of 200 still counts it
  // at the cut-off.
  b2.sends[1].not_before = 900;
  b2.sends[1].cap_counted = true;
  b2.results = {{0, "kC", 1, 900, "accepted", true, {}}};
  ASSERT_TRUE(store_->Commit(b2).ok());
  Batch b3;
  b3.events = {Ev("young", "y", 5000)};
  b3.dead_letters = {{0, 5000, "events.jsonl:9", "malformed JSON", "}"}};
  ASSERT_TRUE(store_->Commit(b3).ok());

  constexpr Micros kNow = 1'000'000'000'000'000;  // the wall clock, long after
  auto prune = [&](bool dry_run, Micros cap_window) {
    return store_->Prune({kNow, 4000, cap_window, dry_run});
  };
  // The cut-off follows the earlier of the wall clock and the latest event.
  auto early = store_->Prune({4010, 4000, 0, false});
  ASSERT_TRUE(early.ok()) << early.error();
  EXPECT_EQ(early.value().before.value_or(-1), 10);
  EXPECT_EQ(early.value().instances, 0);
  EXPECT_EQ(early.value().events, 0);
  EXPECT_EQ(early.value().dead_letters, 0);
  auto dry = prune(true, 200);
  ASSERT_TRUE(dry.ok()) << dry.error();
  EXPECT_EQ(dry.value().before.value_or(-1), 1000);
  auto expect = [](const PruneCounts& c, int64_t instances, int64_t events) {
    EXPECT_EQ(c.instances, instances);
    EXPECT_EQ(c.history_records, 2 * instances);
    EXPECT_EQ(c.sends, instances);
    EXPECT_EQ(c.send_results, instances);
    EXPECT_EQ(c.events, events);
  };
  expect(dry.value(), 1, 3);
  EXPECT_EQ(dry.value().dead_letters, 1);
  StoreCounts all = store_->Counts().value();
  EXPECT_EQ(all.instances, 6);
  EXPECT_EQ(all.events, 8);
  EXPECT_EQ(all.dead_letters, 2);

  auto pruned = prune(false, 200);
  ASSERT_TRUE(pruned.ok()) << pruned.error();
  expect(pruned.value(), 1, 3);
  EXPECT_EQ(pruned.value().dead_letters, 1);
  Reopen();
  StoreCounts left = store_->Counts().value();
  EXPECT_EQ(left.instances, 5);
  EXPECT_EQ(left.sends, 2);
  EXPECT_EQ(left.events, 5);
  EXPECT_EQ(left.dead_letters, 1);
  EXPECT_TRUE(store_->Instances("j", "a").value().empty());
  EXPECT_TRUE(store_->History("j/a/1").value().empty());
  EXPECT_EQ(store_->History("j/k/1").value().size(), 1u);
  EXPECT_EQ(store_->EventBody("test", "a").value(), "");
  EXPECT_EQ(store_->EventBody("test", "old").value(), "");
  EXPECT_EQ(store_->EventBody("test", "between").value(), "");
  for (const std::string& kept : {odd, std::string("kmove"), std::string("hist"),
                                  std::string("sendev"), std::string("young")}) {
    EXPECT_NE(store_->EventBody("test", kept).value(), "") << kept;
  }
  // Every row kept reads back, events and all.
  EXPECT_EQ(store_->InstancesAfter("", 10).value().size(), 5u);
  auto pending = store_->PendingSends(10);
  ASSERT_TRUE(pending.ok()) << pending.error();
  ASSERT_EQ(pending.value().size(), 1u);
  EXPECT_EQ(pending.value()[0].key, "kP");
  EXPECT_EQ((*pending.value()[0].event)["data"]["n"], "sendev");
  EXPECT_EQ(store_->DeadLetters().value()[0].time, 5000);
  // The pruned entry is still counted.
  auto entries = [&] {
    std::map<std::string, std::pair<int64_t, Micros>> by_key;
    auto all = store_->AllEntries();
    EXPECT_TRUE(all.ok()) << all.error();
    for (const EntryCount& c : all.value()) by_key[c.journey + "/" + c.key] = {c.count, c.last};
    return by_key;
  };
  EXPECT_EQ(entries().size(), 6u);
  EXPECT_EQ(entries()["j/a"], (std::pair<int64_t, Micros>{1, 10}));
  // Those of pruned instances only, for an audit's replay.
  auto pruned_entries = [&] {
    std::vector<std::string> out;
    auto all = store_->PrunedEntries();
    EXPECT_TRUE(all.ok()) << all.error();
    for (const EntryCount& c : all.value()) {
      out.push_back(c.journey + "/" + c.key + " " + std::to_string(c.count) + " " +
                    std::to_string(c.last));
    }
    return out;
  };
  EXPECT_EQ(pruned_entries(), (std::vector<std::string>{"j/a 1 10"}));
  auto one = store_->PrunedEntry("j", "a");
  ASSERT_TRUE(one.ok()) << one.error();
  ASSERT_TRUE(one.value().has_value());
  EXPECT_EQ(one.value()->count, 1);
  EXPECT_EQ(one.value()->last, 10);
  EXPECT_FALSE(store_->PrunedEntry("j", "b").value().has_value());
  EXPECT_FALSE(store_->PrunedEntry("k", "a").value().has_value());

  // A second entry of the pruned key adds to its count once it is pruned
  // in turn; without the cap, the capped send's instance goes too.
  Batch b4;
  b4.events = {Ev("a2", "a", 40)};
  Instance again = instance("a", "a2", 40, 45, true);
  again.id = Instance::MakeId("j", "a", 2);
  again.seq = 2;
  b4.instances = {again};
  ASSERT_TRUE(store_->Commit(b4).ok());
  EXPECT_EQ(entries()["j/a"], (std::pair<int64_t, Micros>{2, 40}));
  auto second = prune(false, 0);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(second.value().instances, 2);
  EXPECT_EQ(second.value().history_records, 0);
  EXPECT_EQ(second.value().sends, 1);
  EXPECT_EQ(second.value().send_results, 1);
  EXPECT_EQ(second.value().events, 1);  // "a2"
  EXPECT_EQ(second.value().dead_letters, 0);
  EXPECT_EQ(entries()["j/a"], (std::pair<int64_t, Micros>{2, 40}));
  EXPECT_EQ(pruned_entries().front(), "j/a 2 40");
  EXPECT_EQ(prune(false, 0).value().instances, 0);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreConformance, testing::ValuesIn(kFactories),
                         [](const testing::TestParamInfo<Factory>& i) { return i.param.name; });

// Opens a store whose meta table says `version`; returns the error.
std::string OpenWithSchemaVersion(const std::string& version) {
  fs::path p = fs::temp_directory_path() /
               ("waymark_version_" + std::to_string(::getpid()) + "_" + version + ".db");
  fs::remove(p);
  { EXPECT_TRUE(OpenSqliteStore(p.string()).ok()); }
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(p.c_str(), &db), SQLITE_OK);
  std::string sql = "UPDATE meta SET value='" + version + "' WHERE key='schema_version'";
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = OpenSqliteStore(p.string());
  fs::remove(p);
  return s.ok() ? "" : s.error();
}

// PostgreSQL: `waymark migrate` brings an empty database to this version,
// is idempotent, and a store is refused until then or once it is newer.
TEST(PostgresStore, MigrationsAreAppliedOnceAndVersionsAreChecked) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  std::string url =
      testing_util::FreshPostgresDatabase(server, "migrate_" + std::to_string(::getpid()));
  auto unmigrated = OpenPostgresStore(url);
  ASSERT_FALSE(unmigrated.ok());
  EXPECT_NE(unmigrated.error().find("waymark migrate"), std::string::npos) << unmigrated.error();
  auto first = MigratePostgres(url);
  ASSERT_TRUE(first.ok()) << first.error();
  EXPECT_EQ(first.value().first, 0);
  EXPECT_GE(first.value().second, 1);
  auto again = MigratePostgres(url);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again.value().first, again.value().second);
  ASSERT_TRUE(OpenPostgresStore(url).ok());
  {
    pqxx::connection c(url);
    pqxx::work t(c);
    t.exec("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
    t.commit();
  }
  auto newer = OpenPostgresStore(url);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.error().find("newer"), std::string::npos) << newer.error();
  auto refused = MigratePostgres(url);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().find("newer"), std::string::npos) << refused.error();
}

// PostgreSQL: the commands that only read (inspect, replay, suppress list)
// open the store for reading, which a read-only role can (as on a hot
// standby): no writer connection, whose staging tables it may not create.
// What would write says so.
TEST(PostgresStore, AReadOnlyRoleReadsAStoreOpenedForReading) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  const std::string db = "readonly_" + std::to_string(::getpid()), role = db + "_reader";
  std::string url = testing_util::FreshPostgresDatabase(server, db);
  ASSERT_TRUE(MigratePostgres(url).ok());
  auto signup = [](const std::string& id, Micros t) {
    Event e;
    e.id = id;
    e.source = "test";
    e.type = "user.signup";
    e.subject = "ana";
    e.time = t;
    return e;
  };
  {
    auto writer = OpenPostgresStore(url);
    ASSERT_TRUE(writer.ok()) << writer.error();
    Batch b;
    b.events.push_back(signup("e1", 1000));
    ASSERT_TRUE(writer.value()->Commit(b).ok());
  }
  {
    pqxx::connection c(url);
    pqxx::nontransaction t(c);
    t.exec("DROP ROLE IF EXISTS " + t.quote_name(role));
    t.exec("CREATE ROLE " + t.quote_name(role) + " LOGIN");
    t.exec("GRANT SELECT ON ALL TABLES IN SCHEMA public TO " + t.quote_name(role));
    t.exec("ALTER ROLE " + t.quote_name(role) + " SET default_transaction_read_only = on");
  }
  const std::string at = "postgresql://postgres@";
  ASSERT_EQ(url.rfind(at, 0), 0u) << url;
  std::string as_reader = "postgresql://" + role + "@" + url.substr(at.size());
  auto reader = OpenStore(as_reader, {}, StoreAccess::kRead);
  ASSERT_TRUE(reader.ok()) << reader.error();
  auto ana = reader.value()->EventsBySubject("ana");
  ASSERT_TRUE(ana.ok()) << ana.error();
  ASSERT_EQ(ana.value().size(), 1u);
  EXPECT_EQ(ana.value()[0].id, "e1");
  Batch b;
  b.events.push_back(signup("e2", 2000));
  Status refused = reader.value()->Commit(b);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.message(), "postgresql: the store was opened for reading only");
  // Opened to write, the same role is refused by the server, as before.
  EXPECT_FALSE(OpenStore(as_reader, {}, StoreAccess::kExisting).ok());
  reader.value().reset();
  pqxx::connection c(url);
  pqxx::nontransaction t(c);
  t.exec("DROP OWNED BY " + t.quote_name(role));
  t.exec("DROP ROLE " + t.quote_name(role));
}

// PostgreSQL: a store at schema version 6 that holds data is migrated to
// bytewise text keys (7): then no index compares text by the database's
// collation, the events keep their replica identity through the rebuild
// of their key, and what was stored is found through the rebuilt indexes.
TEST(PostgresStore, AStoreWithDataMigratesToBytewiseTextKeys) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  std::string url =
      testing_util::FreshPostgresDatabase(server, "collate_" + std::to_string(::getpid()));
  auto none = MigratePostgres(url, 99);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().find("there is no schema version 99"), std::string::npos) << none.error();
  auto six = MigratePostgres(url, 6);
  ASSERT_TRUE(six.ok()) << six.error();
  EXPECT_EQ(six.value(), std::make_pair(0, 6));
  {
    pqxx::connection c(url);
    pqxx::work t(c);
    for (const char* subject : {"Zoë", "ana", "Ana"}) {
      Event e;
      e.source = "test";
      e.id = std::string("e-") + subject;
      e.type = "user.signup";
      e.subject = subject;
      e.time = 1000;
      t.exec_params(
          "INSERT INTO events (source, id, type, subject, time, body) "
          "VALUES ($1, $2, $3, $4, $5, $6)",
          e.source, e.id, e.type, e.subject, e.time, e.Text());
    }
    t.exec("INSERT INTO suppressions VALUES ('ana@example.com', 'all', 'x', 'cli', 1)");
    t.exec("INSERT INTO source_positions VALUES ('EVENTS/waymark', 42, 0)");
    t.commit();
  }
  auto seven = MigratePostgres(url);
  ASSERT_TRUE(seven.ok()) << seven.error();
  EXPECT_EQ(seven.value().first, 6);
  auto linguistic = testing_util::PostgresRows(
      url,
      "SELECT ic.relname || '.' || a.attname, k.coll::regcollation::TEXT FROM pg_index x "
      "JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_class tc ON tc.oid = x.indrelid "
      "JOIN pg_namespace n ON n.oid = tc.relnamespace AND n.nspname = 'public' "
      "CROSS JOIN LATERAL unnest(x.indkey::INT2[], x.indcollation::OID[]) AS k(attnum, coll) "
      "JOIN pg_attribute a ON a.attrelid = tc.oid AND a.attnum = k.attnum "
      "WHERE k.coll <> 0 AND k.coll <> 'pg_catalog.\"C\"'::regcollation");
  EXPECT_TRUE(linguistic.empty()) << testing::PrintToString(linguistic);
  auto identity = testing_util::PostgresRows(
      url,
      "SELECT ic.relname, tc.relreplident::TEXT FROM pg_index x "
      "JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_class tc ON tc.oid = x.indrelid "
      "WHERE x.indisreplident");
  EXPECT_EQ(identity, (std::map<std::string, std::string>{{"events_source_id_key", "i"}}));
  auto store = OpenPostgresStore(url);
  ASSERT_TRUE(store.ok()) << store.error();
  Store& s = *store.value();
  EXPECT_EQ(s.EventsSeen({{"test", "e-Zoë"}, {"test", "e-ana"}, {"test", "e-zoë"}}).value(),
            (std::vector<bool>{true, true, false}));
  auto ana = s.EventsBySubject("ana");
  ASSERT_TRUE(ana.ok()) << ana.error();
  ASSERT_EQ(ana.value().size(), 1u);  // bytewise: "Ana" is another subject
  EXPECT_EQ(ana.value()[0].id, "e-ana");
  EXPECT_EQ(s.Suppressions().value().size(), 1u);
  EXPECT_EQ(s.Position("EVENTS/waymark").value()->seq, 42u);
}

TEST(SqliteStore, RefusesAStoreFromANewerVersion) {
  std::string error = OpenWithSchemaVersion("99");
  EXPECT_NE(error.find("newer"), std::string::npos) << error;
}

// A store made by an earlier version (3: no source positions; 3 and 4: no
// suppression tables; 3 to 5: nothing for pruning; 3 to 6: no dead-letter
// digest; 3 to 7: no suppression stamps) gains what is missing when opened.
TEST(SqliteStore, AVersion3To7StoreGainsTheLaterTablesWhenOpened) {
  for (int version : {3, 4, 5, 6, 7}) {
    fs::path p = fs::temp_directory_path() /
                 ("waymark_v" + std::to_string(version) + "_" + std::to_string(::getpid()) + ".db");
    fs::remove(p);
    { EXPECT_TRUE(OpenSqliteStore(p.string()).ok()); }
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(p.c_str(), &db), SQLITE_OK);
    std::string downgrade =
        "DROP INDEX suppressions_by_version; ALTER TABLE suppressions DROP COLUMN version; "
        "ALTER TABLE suppressions_version DROP COLUMN replaced; " +
        std::string(version <= 6 ? "DROP INDEX dead_letters_digest; "
                                   "ALTER TABLE dead_letters DROP COLUMN digest; "
                                 : "") +
        std::string(version <= 5 ? "DROP TABLE pruned_entries; DROP INDEX instances_finished; "
                                 : "") +
        std::string(version <= 4 ? "DROP TABLE suppressions; DROP TABLE suppressions_version; "
                                 : "") +
        std::string(version == 3 ? "DROP TABLE source_positions; " : "") +
        "UPDATE meta SET value='" + std::to_string(version) + "' WHERE key='schema_version'";
    EXPECT_EQ(sqlite3_exec(db, downgrade.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    auto s = OpenSqliteStore(p.string());
    ASSERT_TRUE(s.ok()) << version << ": " << s.error();
    Batch b;
    b.position = SourcePosition{"S/c", 7, 0};
    b.suppressions = {{"ana@example.com", "all", "550 5.1.1", "bounce", 1}};
    Event e;
    e.id = "e1";
    e.source = "test";
    e.type = "user.signup";
    e.subject = "u1";
    e.time = 1000;
    b.events = {e};
    b.dead_letters = {{0, 1, "in:1", "bad", "x"}, {0, 1, "in:1", "bad", "x"}};
    ASSERT_TRUE(s.value()->Commit(b).ok());
    EXPECT_EQ(s.value()->DeadLetters().value().size(), 1u);
    EXPECT_EQ(s.value()->Position("S/c").value()->seq, 7u);
    EXPECT_EQ(s.value()->Suppressions().value().size(), 1u);
    EXPECT_EQ(s.value()->SuppressionsVersion().value().changed, 1);
    auto pruned = s.value()->Prune({1000, 10, 0, false});
    ASSERT_TRUE(pruned.ok()) << version << ": " << pruned.error();
    EXPECT_EQ(pruned.value().before.value_or(-1), 990);
    auto entries = s.value()->AllEntries();
    ASSERT_TRUE(entries.ok()) << version << ": " << entries.error();
    fs::remove(p);
  }
}

// inspect and replay open a store to read: one of an older version is
// refused, not upgraded (it was, and the older engine still running on it
// then refused its own store as "newer than this waymark knows"); and the
// reader leaves no -wal or -shm file behind.
TEST(SqliteStore, AReadOnlyOpenNeverUpgrades) {
  fs::path p = fs::temp_directory_path() / ("waymark_ro_" + std::to_string(::getpid()) + ".db");
  fs::remove(p);
  EXPECT_FALSE(OpenSqliteStore(p.string(), StoreAccess::kRead).ok());  // nothing to read
  EXPECT_FALSE(fs::exists(p));
  { ASSERT_TRUE(OpenSqliteStore(p.string()).ok()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(p.c_str(), &db), SQLITE_OK);
  auto version = [&] {
    std::string v;
    sqlite3_exec(
        db, "SELECT value FROM meta WHERE key = 'schema_version'",
        [](void* out, int, char** values, char**) {
          *static_cast<std::string*>(out) = values[0];
          return 0;
        },
        &v, nullptr);
    return v;
  };
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE pruned_entries; DROP INDEX instances_finished; "
                         "DROP INDEX dead_letters_digest; "
                         "ALTER TABLE dead_letters DROP COLUMN digest; "
                         "DROP INDEX suppressions_by_version; "
                         "ALTER TABLE suppressions DROP COLUMN version; "
                         "ALTER TABLE suppressions_version DROP COLUMN replaced; "
                         "UPDATE meta SET value='5' WHERE key='schema_version'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  auto old = OpenSqliteStore(p.string(), StoreAccess::kRead);
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.error().find("older than this waymark's"), std::string::npos) << old.error();
  EXPECT_EQ(version(), "5");
  // Nor do prune (its dry run too) and suppress: only a run upgrades (they
  // did, and stranded the older engine).
  for (StoreAccess access : {StoreAccess::kExisting, StoreAccess::kCreateNew}) {
    auto other = OpenSqliteStore(p.string(), access);
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.error().find("only `waymark run` with this waymark upgrades it"),
              std::string::npos)
        << other.error();
    EXPECT_EQ(version(), "5");
  }
  // A writer upgrades it; then it reads, and refuses writes.
  { ASSERT_TRUE(OpenSqliteStore(p.string()).ok()); }
  EXPECT_EQ(version(), "8");
  sqlite3_close(db);
  ASSERT_FALSE(fs::exists(p.string() + "-wal"));
  {
    auto reader = OpenSqliteStore(p.string(), StoreAccess::kRead);
    ASSERT_TRUE(reader.ok()) << reader.error();
    EXPECT_TRUE(reader.value()->Instances("j", "u1").ok());
  }
  EXPECT_FALSE(fs::exists(p.string() + "-wal"));
  EXPECT_FALSE(fs::exists(p.string() + "-shm"));
  fs::remove(p);
}

// A command that needs a store (prune, suppress remove) pointed at a file
// that is not one (empty, or another program's database) says so and
// leaves it as it was: it made a store of it, and pruned nothing.
TEST(SqliteStore, ACommandThatNeedsAStoreLeavesAnotherFileAlone) {
  fs::path dir = fs::temp_directory_path() / ("waymark_other_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path empty = dir / "empty.db", other = dir / "other.db";
  std::ofstream(empty.string()).close();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(other.c_str(), &db), SQLITE_OK);
  // Its own `meta` table too, as waymark's is named (it was taken for a
  // waymark store that had not been made yet).
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE customers (id INTEGER PRIMARY KEY); CREATE TABLE meta (key "
                         "TEXT PRIMARY KEY, value TEXT)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string other_before = bytes(other);
  for (const fs::path& p : {empty, other}) {
    for (StoreAccess access : {StoreAccess::kExisting, StoreAccess::kRead}) {
      auto s = OpenStore("sqlite:" + p.string(), {}, access);
      ASSERT_FALSE(s.ok()) << p;
      EXPECT_EQ(s.error().rfind("'" + p.string() + "' is not a waymark store", 0), 0u) << s.error();
    }
  }
  // Nor do run and suppress add make a store in another program's
  // database: they added waymark's tables to it.
  for (StoreAccess access : {StoreAccess::kCreate, StoreAccess::kCreateNew}) {
    auto s = OpenStore("sqlite:" + other.string(), {}, access);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().rfind("'" + other.string() + "' is not a waymark store", 0), 0u)
        << s.error();
  }
  EXPECT_EQ(fs::file_size(empty), 0u);
  EXPECT_TRUE(bytes(other) == other_before) << "another program's database was changed";
  EXPECT_FALSE(fs::exists(other.string() + "-wal"));
  // A run makes a store of an empty file.
  EXPECT_TRUE(OpenStore("sqlite:" + empty.string()).ok());
  fs::remove_all(dir);
}

// A read whose statement cannot be prepared (here a table dropped behind
// the store's back) is an error, not a crash.
TEST(SqliteStore, AStatementThatCannotBePreparedIsAnError) {
  fs::path p = fs::temp_directory_path() / ("waymark_broken_" + std::to_string(::getpid()) + ".db");
  fs::remove(p);
  { ASSERT_TRUE(OpenSqliteStore(p.string()).ok()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(p.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, "DROP TABLE pruned_entries", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = OpenSqliteStore(p.string());
  ASSERT_TRUE(s.ok()) << s.error();
  auto entries = s.value()->AllEntries();
  ASSERT_FALSE(entries.ok());
  EXPECT_NE(entries.error().find("no such table"), std::string::npos) << entries.error();
  fs::remove(p);
}

TEST(SqliteStore, RefusesAStoreFromAnOlderDevelopmentVersion) {
  std::string error = OpenWithSchemaVersion("1");
  EXPECT_NE(error.find("start a new store"), std::string::npos) << error;
}

}  // namespace
}  // namespace waymark
