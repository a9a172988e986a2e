// Behaviour of the compiler and the compiled form beyond the golden files:
// the content hash, the JSON round trip, expression printing, multi-file
// checks.
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "dsl/checker.h"
#include "dsl/graph.h"
#include "dsl/parser.h"
#include "tests/testing/files.h"

namespace waymark::dsl {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = testing_util::SourceRoot();
using testing_util::ReadFile;

SchemaRegistry Schemas() {
  auto r = SchemaRegistry::Load((kRoot / "schemas").string());
  EXPECT_TRUE(r.ok()) << r.error();
  return r.value();
}

CompiledJourney MustCompile(const std::string& src, const SchemaRegistry& schemas = {}) {
  DiagnosticSink d;
  CheckedFile f = CheckSource("test.journey", src, schemas, d);
  std::string report;
  for (const Diagnostic& x : d.all()) report += Render(x, src);
  EXPECT_EQ(d.errors(), 0) << report;
  if (!f.journey) return {};
  return *f.journey;
}

std::vector<fs::path> BundledJourneys() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(kRoot / "journeys")) {
    if (e.path().extension() == ".journey") out.push_back(e.path());
  }
  return out;
}

TEST(CompiledForm, JsonRoundTripKeepsFormAndVersion) {
  SchemaRegistry schemas = Schemas();
  ASSERT_GE(BundledJourneys().size(), 6u);
  for (const fs::path& p : BundledJourneys()) {
    CompiledJourney j = MustCompile(ReadFile(p), schemas);
    ASSERT_EQ(j.version.size(), 64u) << p;
    Result<CompiledJourney> back = CompiledJourney::FromJson(j.ToJson());
    ASSERT_TRUE(back.ok()) << p << ": " << back.error();
    EXPECT_EQ(back.value().ToJson(), j.ToJson()) << p;
    EXPECT_EQ(back.value().version, j.version) << p;
  }
}

// `10.0` and `10` are one version, so they must be one behaviour: compiled
// from source, the literal was the double 10.0, which a schema's
// "integer" refuses, while the stored form (and so a restart, a replay)
// had the integer 10.
TEST(CompiledForm, AWholeNumberWithAFractionIsTheIntegerOfItsStoredForm) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on user.signup when trigger.data.n == 10.0 or trigger.data.n == 2.5 }
  step a { end }
}
)");
  Result<CompiledJourney> back = CompiledJourney::FromJson(j.ToJson());
  ASSERT_TRUE(back.ok()) << back.error();
  auto literals = [](const CompiledJourney& c) {
    const Expr& either = *c.triggers.at(0).when;
    return either.args.at(0)->args.at(1)->value.dump() + " " +
           either.args.at(1)->args.at(1)->value.dump();
  };
  EXPECT_EQ(literals(j), "10 2.5");
  EXPECT_EQ(literals(back.value()), "10 2.5");
}

TEST(CompiledForm, FromJsonRejectsMalformedInput) {
  EXPECT_FALSE(CompiledJourney::FromJson(nlohmann::json::object()).ok());
  EXPECT_FALSE(CompiledJourney::FromJson({{"format", "waymark.journey/1"}}).ok());
  EXPECT_FALSE(CompiledJourney::FromJson({{"format", "waymark.journey/99"}}).ok());
}

const char* kBase = R"(journey j {
  entry { on user.signup }
  step a {
    send "welcome" to trigger.data.email intent transactional
    wait 1d
    end
  }
}
)";

TEST(CompiledForm, VersionIgnoresLayoutAndComments) {
  std::string relaid = R"(# a comment
journey j {
    entry {
        on user.signup   # trigger
    }

    step a {
        send "welcome"
          to trigger.data.email
          intent transactional
        wait 24h   # the same duration, written differently
        end
    }
})";
  CompiledJourney a = MustCompile(kBase);
  CompiledJourney b = MustCompile(relaid);
  EXPECT_EQ(a.version, b.version);
  EXPECT_NE(a.SourceMap(), b.SourceMap());
}

TEST(CompiledForm, VersionChangesWithBehaviour) {
  std::string changed = std::regex_replace(std::string(kBase), std::regex("wait 1d"), "wait 2d");
  EXPECT_NE(MustCompile(kBase).version, MustCompile(changed).version);
  std::string relabelled = std::regex_replace(std::string(kBase), std::regex("journey j \\{"),
                                              "journey j {\n label \"b\"");
  EXPECT_NE(MustCompile(kBase).version, MustCompile(relabelled).version);
}

TEST(CompiledForm, StateIdsFollowStructure) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on user.signup }
  step a {
    wait for order.placed within 1h
      received { send "x" to key intent marketing }
      timeout { if key == "k" { end } else { send "y" to key intent marketing } }
    split { one 50% { end } two 50% { end } }
  }
})");
  std::vector<std::string> ids;
  for (const State& s : j.states) ids.push_back(s.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "a.received.0", "a.timeout.0", "a.timeout.0.then.0",
                                           "a.timeout.0.else.0", "a.1", "a.1.one.0", "a.1.two.0"}));
  const State* wait = j.Find("a");
  ASSERT_NE(wait, nullptr);
  EXPECT_EQ(wait->on_event, "a.received.0");
  EXPECT_EQ(wait->on_timeout, "a.timeout.0");
  EXPECT_EQ(j.Find("a.received.0")->next, "a.1");  // a block falls through to what follows
}

TEST(CompiledForm, GotosAndEmptyStepsAreResolved) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on user.signup }
  step a { wait 1d  goto b }
  step b { }
  step c { wait 2d  goto b2 }
  step b2 { }
  step d { send "x" to key intent marketing  goto a }
})");
  EXPECT_EQ(j.start, "a");
  EXPECT_EQ(j.Find("a.1"), nullptr);  // the goto is an edge, not a state
  EXPECT_EQ(j.Find("a")->next, "c");
  EXPECT_EQ(j.Find("c")->next, "d");
  EXPECT_EQ(j.Find("d")->next, "a");
}

// A duration as a match case is its seconds (it compiled to null: the
// case never matched 1h and matched a missing value).
TEST(CompiledForm, ADurationCaseIsItsSeconds) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on user.signup }
  step a {
    set d = 1h
    match vars.d { case 1h, 30m { end } else { end } }
  }
})");
  const State* m = nullptr;
  for (const State& s : j.states) {
    if (s.kind == State::Kind::kMatch) m = &s;
  }
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->cases.size(), 1u);
  EXPECT_EQ(m->cases[0].values, (std::vector<nlohmann::json>{3600, 1800}));
}

TEST(Expressions, CanonicalFormReparsesToTheSameTree) {
  const char* exprs[] = {
      "event.data.a == 1 or event.data.b == 2 and not exists(event.data.c)",
      "(event.data.a == 1 or event.data.b == 2) and key != \"k\"",
      "not (event.data.a > 1 and event.data.b < 2)",
      "lower(trim(event.subject)) in [\"a\", \"b\"] or event.data.n not in [1, 2.5, -3]",
      "event.data.flag == true and event.data.maybe == null",
  };
  for (const char* e : exprs) {
    std::string src =
        std::string("journey j {\n entry { on x.y when ") + e + " }\n step a { end }\n}\n";
    CompiledJourney a = MustCompile(src);
    ASSERT_EQ(a.triggers.size(), 1u) << e;
    std::string printed = ExprToString(a.triggers[0].when);
    std::string src2 =
        std::string("journey j {\n entry { on x.y when ") + printed + " }\n step a { end }\n}\n";
    CompiledJourney b = MustCompile(src2);
    EXPECT_EQ(ExprToJson(a.triggers[0].when), ExprToJson(b.triggers[0].when))
        << e << "\nprinted as: " << printed;
  }
}

TEST(Expressions, PrecedenceAndAssociativity) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on x.y when key == "a" or key == "b" and key == "c" }
  step a { end }
})");
  // `and` binds tighter than `or`.
  EXPECT_EQ(ExprToJson(j.triggers[0].when)["op"], "or");
  EXPECT_EQ(ExprToString(j.triggers[0].when), "key == \"a\" or key == \"b\" and key == \"c\"");
}

TEST(Parser, ReportsEverySyntaxErrorInOnePass) {
  DiagnosticSink d;
  auto j = Parse(R"(journey j {
  entry { on user.signup when }
  step a { send "x" to intent marketing }
  step b { wait 5min }
  step c { end }
})",
                 "t.journey", d);
  EXPECT_FALSE(j.has_value());
  ASSERT_EQ(d.errors(), 3) << "one error per broken item";
  EXPECT_EQ(d.all()[0].loc.line, 2);
  EXPECT_EQ(d.all()[1].loc.line, 3);
  EXPECT_EQ(d.all()[2].loc.line, 4);
}

// After an error inside a step, parsing resumes at the next journey item,
// not at a statement's `priority` line inside the step (that made two
// false errors: "'priority' is already set" and "expected a journey item,
// found 'wait'"). A step's line resumes it even when the broken one left a
// brace open.
TEST(Parser, RecoveryResumesAtJourneyItemsNotInsideSteps) {
  DiagnosticSink d;
  auto j = Parse(R"(journey j {
  priority 2
  entry { on user.signup }
  step a {
    set x = = 1
    send "t" to trigger.data.email intent marketing
      priority 5
    wait 1d
    end
  }
  step b {
    wait 5min
  step c { end }
})",
                 "t.journey", d);
  EXPECT_FALSE(j.has_value());
  std::string all;
  for (const Diagnostic& x : d.all()) all += std::to_string(x.loc.line) + ": " + x.message + "\n";
  ASSERT_EQ(d.errors(), 2) << all;
  EXPECT_EQ(d.all()[0].loc.line, 5) << all;
  EXPECT_EQ(d.all()[1].loc.line, 12) << all;
}

// Thousands of nested brackets, `not`s, blocks or chained `or`s
// overflowed the stack (exit 139). Up to the limits they check and
// compile; past them they are one error.
TEST(Parser, NestingIsBoundedNotACrash) {
  auto journey = [](const std::string& when, const std::string& body = "end") {
    return "journey j {\n  entry { on user.signup when " + when + " }\n  step a { " + body +
           " }\n}\n";
  };
  auto chain = [](int n) {
    std::string s = "true";
    for (int i = 1; i < n; ++i) s += " or trigger.data.n == " + std::to_string(i);
    return s;
  };
  auto parens = [](int n) {
    return std::string(size_t(n), '(') + "true" + std::string(size_t(n), ')');
  };
  auto ifs = [](int n) {
    std::string s = "end";
    for (int i = 0; i < n; ++i) s = "if true { " + s + " } end";
    return s;
  };
  // Chains in brackets in chains: each bracket's under the limit, the
  // tree (the `and`s after a bracket are its ancestors) 15,000 deep.
  auto chains = [](int levels) {
    std::string e = "true";
    for (int k = 0; k < levels; ++k) {
      e = "(" + e;
      for (int i = 0; i < 999; ++i) e += " and true";
      e += ")";
    }
    return e;
  };
  std::string nots;
  for (int i = 0; i < 62; ++i) nots += "not ";
  // Within the limits (the journey's and the entry's braces count).
  MustCompile(journey(chain(kMaxChain + 1)));  // kMaxChain `or`s
  MustCompile(journey(parens(kMaxNesting - 2)));
  MustCompile(journey(nots + "true"));
  MustCompile(journey("(" + chain(kMaxChain / 2) + ") or (" + chain(kMaxChain / 2) + ")"));
  MustCompile(journey("true", ifs(kMaxNesting - 2)));
  // Past them, and far past them.
  for (const std::string& src :
       {journey(chain(kMaxChain + 2)), journey(chain(50000)), journey(parens(kMaxNesting - 1)),
        journey(parens(5000)), journey("not " + nots + "true"), journey(std::string(20000, '!')),
        journey("true", ifs(kMaxNesting - 1)), journey("true", ifs(3000)), journey(chains(15)),
        // A string that ends in a backslash at the end of its line ends
        // there: the brackets of the next line count.
        "journey j {\n  description \"C:\\\n  step s { set a = " + parens(5000) +
            " end }\n  entry { on user.signup }\n}\n"}) {
    DiagnosticSink d;
    EXPECT_FALSE(Parse(src, "t.journey", d).has_value());
    ASSERT_GE(d.errors(), 1);
    if (src.size() > 5000 && src.find('!') == std::string::npos) {
      EXPECT_TRUE(d.all()[0].message.find("nested more than 64 deep") != std::string::npos ||
                  d.all()[0].message.find("more than 1000 `and`s and `or`s") != std::string::npos)
          << d.all()[0].message;
    }
  }
}

// An event type may begin with a word the language reserves: `on
// case.opened` said "expected event type, found 'case'". The word alone
// is still not a type.
TEST(Parser, EventTypesMayBeginWithAReservedWord) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on case.opened }
  exit on in-app.dismissed
  goal won on journey.completed within 7d
  step a {
    wait for set.updated within 1d
    end
  }
})");
  ASSERT_EQ(j.triggers.size(), 1u);
  EXPECT_EQ(j.triggers[0].event, "case.opened");
  ASSERT_EQ(j.exits.size(), 1u);
  EXPECT_EQ(j.exits[0].event, "in-app.dismissed");
  ASSERT_EQ(j.goals.size(), 1u);
  EXPECT_EQ(j.goals[0].event, "journey.completed");
  DiagnosticSink d;
  EXPECT_FALSE(Parse("journey j {\n entry { on case }\n step a { end }\n}\n", "t.journey", d));
  ASSERT_GE(d.errors(), 1);
  EXPECT_NE(d.all()[0].message.find("expected event type"), std::string::npos)
      << d.all()[0].message;
}

// A file that begins with a UTF-8 byte order mark (as Windows editors
// save it) was "expected 'journey NAME {', found 'ï»¿'".
TEST(Parser, AByteOrderMarkIsNotText) {
  EXPECT_EQ(MustCompile("\xEF\xBB\xBF" + std::string(kBase)).version, MustCompile(kBase).version);
}

// `datacontenttype` and `dataschema` type-checked, and were always null:
// the engine keeps an event's specversion, id, source, type, subject, time
// and data only.
// The errors of a journey's check, one message each.
std::vector<std::string> CheckErrors(const std::string& src) {
  DiagnosticSink d;
  CheckSource("t.journey", src, Schemas(), d);
  std::vector<std::string> out;
  for (const Diagnostic& x : d.all()) {
    if (x.severity == Severity::kError) out.push_back(x.message);
  }
  return out;
}

// Which event types a path is checked against. In a trigger's `when`,
// `trigger.` is that rule's event, as `event.` is (it was checked against
// every trigger type, so a field of another one passed, and the condition
// was always false). After a `wait for` inside a `received` block,
// `event.` is that wait's event or, after its timeout, the block's: it was
// checked against the block's type alone, so a field of the inner wait's
// type was refused and one of the block's passed.
TEST(Checker, PathsAreCheckedAgainstTheEventsTheyCanBe) {
  std::vector<std::string> e = CheckErrors(R"(journey j {
  entry { on user.signup  on order.placed when trigger.data.plan == "free" }
  step a { end }
})");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("event type 'order.placed' has no field 'data.plan'"), std::string::npos)
      << e[0];
  MustCompile(R"(journey j {
  entry { on user.signup  on order.placed when trigger.data.total > 10 }
  step a { end }
})",
              Schemas());
  MustCompile(R"(journey j {
  entry { on cart.updated }
  step a {
    wait for order.placed within 1d
      received {
        wait for project.created within 1d
        if event.data.is_sample { set sample = true }
        if event.data.total > 100 { set big = true }
      }
    end
  }
})",
              Schemas());
  e = CheckErrors(R"(journey j {
  entry { on cart.updated }
  step a {
    wait for order.placed within 1d
      received {
        wait for project.created within 1d
        if event.data.plan == "x" { set x = true }
      }
    end
  }
})");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("none of the event types order.placed, project.created has a field "
                      "'data.plan'"),
            std::string::npos)
      << e[0];
  // A wait in a branch that jumps away does not widen what follows.
  e = CheckErrors(R"(journey j {
  entry { on cart.updated }
  step a {
    wait for order.placed within 1d
      received {
        if event.data.total > 5 { wait for project.created within 1d  goto b }
        if event.data.is_sample { set x = true }
      }
    end
  }
  step b { end }
})");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("event type 'order.placed' has no field 'data.is_sample'"), std::string::npos)
      << e[0];
}

// A closed schema (`additionalProperties: false`) still allows the names
// its `patternProperties` match, with the pattern's schema, as the
// validation at run time does: `check` refused them, in conditions and in
// emits, and the run accepted the same events.
TEST(Checker, FieldsMatchingAPatternOfAClosedSchemaAreKnown) {
  SchemaRegistry schemas;
  schemas.Add("form.submitted", nlohmann::json::parse(R"({
    "type": "object",
    "properties": {"email": {"type": "string"}},
    "patternProperties": {"^answer_[a-z0-9_]+$": {"type": "string"}, "^score_": {"type": "number"}},
    "required": ["email"],
    "additionalProperties": false})"));
  auto errors = [&](const std::string& src) {
    DiagnosticSink d;
    CheckSource("t.journey", src, schemas, d);
    std::vector<std::string> out;
    for (const Diagnostic& x : d.all()) {
      if (x.severity == Severity::kError) out.push_back(x.message);
    }
    return out;
  };
  EXPECT_EQ(errors(R"(journey j {
  entry { on form.submitted when event.data.answer_plan == "pro" and event.data.score_nps > 8 }
  step a {
    emit form.submitted with { email: trigger.data.email, answer_size: "xl" }
    end
  }
})"),
            std::vector<std::string>{});
  // Other names are still refused, and a pattern's type is checked.
  std::vector<std::string> e = errors(R"(journey j {
  entry { on form.submitted when event.data.other == "x" or event.data.answer_x > 3 }
  step a { end }
})");
  ASSERT_EQ(e.size(), 2u);
  EXPECT_NE(e[0].find("has no field 'data.other'"), std::string::npos) << e[0];
  EXPECT_NE(e[1].find("string"), std::string::npos) << e[1];
  // A name two patterns match meets both: of different types, it is taken
  // as of any type (the first pattern in name order decided: a string).
  schemas.Add("form.scored", nlohmann::json::parse(R"({
    "type": "object",
    "patternProperties": {"^a": {"type": "string"}, "_n$": {"type": "number"}},
    "additionalProperties": false})"));
  EXPECT_EQ(errors(R"(journey j {
  entry { on form.scored when event.data.a_n > 3 }
  step a { end }
})"),
            std::vector<std::string>{});
}

// A variable's type does not depend on the order of the names: a set that
// reads a variable whose name sorts later saw it untyped, so only one of
// these two comparisons was refused. A field of a variable that holds a
// string is refused, as one of an event's string field is.
TEST(Checker, VariableTypesDoNotDependOnTheirNames) {
  std::vector<std::string> e = CheckErrors(R"(journey j {
  entry { on user.signup }
  step a {
    set name = "x"
    set alias = vars.name
    set zalias = vars.name
    if vars.alias == 1 { end }
    if vars.zalias == 1 { end }
    if vars.name.len == 1 { end }
    end
  }
})");
  ASSERT_EQ(e.size(), 3u) << testing::PrintToString(e);
  EXPECT_EQ(e[0], "type mismatch: cannot compare string with number");
  EXPECT_EQ(e[1], "type mismatch: cannot compare string with number");
  EXPECT_EQ(e[2], "'vars.name' is a string and has no fields");
  // Nor when a variable reads variables that read each other: named "a"
  // or "zz", it gets the same type (typed before the cycle it reads, "a"
  // was untyped, and its comparison passed).
  std::vector<std::vector<std::string>> both;
  for (const char* reader : {"a", "zz"}) {
    std::string r = reader;
    both.push_back(CheckErrors(R"(journey j {
  entry { on user.signup }
  step a {
    set y = length(vars.z)
    set z = vars.y
    set )" + r + R"( = vars.y
    if vars.)" + r + R"( == "x" { end }
    end
  }
})"));
  }
  EXPECT_EQ(both[0], both[1]);
  EXPECT_NE(
      std::find(both[0].begin(), both[0].end(), "type mismatch: cannot compare number with string"),
      both[0].end())
      << ::testing::PrintToString(both[0]);
}

TEST(Checker, OnlyTheAttributesAnEventKeepsArePaths) {
  for (const char* attr : {"datacontenttype", "dataschema"}) {
    DiagnosticSink d;
    std::string src = std::string("journey j {\n entry { on user.signup when event.") + attr +
                      " == \"x\" }\n step a { end }\n}\n";
    CheckSource("t.journey", src, {}, d);
    ASSERT_EQ(d.errors(), 1) << attr;
    EXPECT_NE(d.all()[0].message.find(attr), std::string::npos) << d.all()[0].message;
  }
  MustCompile(
      "journey j {\n entry { on user.signup when event.specversion == \"1.0\" }\n"
      " step a { end }\n}\n");
}

// The graphs' note of exits and goals: in DOT a `\l` inside a string of a
// condition was taken for a line break (the note split in the middle of
// the string); Mermaid had no note at all.
TEST(Graph, TheNoteOfExitsAndGoalsIsEscapedAndInBothFormats) {
  CompiledJourney j = MustCompile(R"(journey j {
  entry { on user.signup }
  exit on user.deleted when event.data.reason == "x\\ly"
  goal paid on order.placed within 7d
  step a { end }
})");
  std::string dot = ToDot(j);
  EXPECT_NE(dot.find(R"(label="exit on user.deleted when event.data.reason == \"x\\\\ly\"\lgoal )"
                     R"(paid on order.placed within 1w\l"])"),
            std::string::npos)
      << dot;
  std::string mermaid = ToMermaid(j);
  EXPECT_NE(mermaid.find(R"(anytime[/"exit on user.deleted when event.data.reason == #quot;x\\ly)"
                         R"(#quot;<br/>goal paid on order.placed within 1w"/])"),
            std::string::npos)
      << mermaid;
}

// A whole number written with a fraction is the integer it equals at run
// time: two cases of one value are one case written twice.
TEST(Checker, EqualNumbersAreEqualCaseValuesHoweverWritten) {
  DiagnosticSink d;
  CheckSource("t.journey",
              "journey j {\n entry { on user.signup }\n step a {\n  match trigger.data.n {"
              " case 9007199254740992, 9007199254740992.0 { end } }\n  end\n }\n}\n",
              {}, d);
  ASSERT_EQ(d.errors(), 1);
  EXPECT_NE(d.all()[0].message.find("9007199254740992"), std::string::npos) << d.all()[0].message;
}

// An unterminated string is said at the end of its line, whatever the line
// ends with: with CRLF the CR was taken into the string and the column was
// one too far.
TEST(Parser, AnUnterminatedStringIsSaidAtTheEndOfItsLineWithCrlfToo) {
  std::string lf =
      "journey j {\n entry { on user.signup }\n step a {\n  send \"x to key\n  end\n }\n}\n";
  std::string crlf;
  for (char c : lf) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  DiagnosticSink a, b;
  Parse(lf, "t.journey", a);
  Parse(crlf, "t.journey", b);
  ASSERT_GE(a.errors(), 1);
  ASSERT_GE(b.errors(), 1);
  EXPECT_EQ(a.all()[0].loc.line, b.all()[0].loc.line);
  EXPECT_EQ(a.all()[0].loc.col, b.all()[0].loc.col);
  EXPECT_EQ(a.all()[0].message, b.all()[0].message);
}

// Lines that end with CR CR LF (a doubled conversion) are lines; a CR
// anywhere else is refused: the grammar ended a comment at a stray CR, so
// code after it on the line ran, while the line count ran on (a file of
// CR-only lines was all line 1).
TEST(Parser, ACrMustEndALine) {
  std::string lf = "journey j {\n entry { on user.signup } # hi\n step a {\n  end\n }\n}\n";
  std::string doubled, cr_only;
  for (char c : lf) {
    doubled += c == '\n' ? std::string("\r\r\n") : std::string(1, c);
    cr_only += c == '\n' ? '\r' : c;
  }
  EXPECT_EQ(MustCompile(doubled).version, MustCompile(lf).version);
  std::string hidden =
      "journey j {\n entry { on user.signup }\n step a {\n  # off:\r wait 30d\n  end\n }\n}\n";
  for (const std::string& bad : {cr_only, cr_only + "\n", hidden}) {
    DiagnosticSink d;
    EXPECT_FALSE(Parse(bad, "t.journey", d));
    ASSERT_EQ(d.errors(), 1);
    EXPECT_NE(d.all()[0].message.find("a carriage return (CR) that does not end a line"),
              std::string::npos);
  }
}

TEST(Parser, StringEscapes) {
  CompiledJourney j = MustCompile(R"(journey j {
  description "tab\there \"quoted\" \u00e9\u20ac"
  entry { on user.signup }
  step a { end }
})");
  EXPECT_EQ(j.description, "tab\there \"quoted\" \xC3\xA9\xE2\x82\xAC");
  // Beyond the BMP, a surrogate pair, as in JSON (it was refused); a lone
  // half is still an error.
  j = MustCompile(R"(journey j {
  description "\ud83d\ude00"
  entry { on user.signup }
  step a { end }
})");
  EXPECT_EQ(j.description, "\xF0\x9F\x98\x80");
  DiagnosticSink d;
  Parse(
      "journey j {\n description \"\\ud83d x\"\n entry { on user.signup }\n"
      " step a { end }\n}\n",
      "t.journey", d);
  ASSERT_EQ(d.errors(), 1);
  EXPECT_NE(d.all()[0].message.find("surrogate pair"), std::string::npos) << d.all()[0].message;
}

TEST(Checker, JourneyNamesAreUniqueAcrossFiles) {
  fs::path dir = fs::temp_directory_path() / ("waymark_dup_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "a.journey") << kBase;
  // The word in a comment is not the journey's (the error pointed there).
  std::ofstream(dir / "b.journey") << "# a journey for x-men\n" << kBase;
  CheckResult r = CheckPaths({dir.string()}, {});
  fs::remove_all(dir);
  ASSERT_EQ(r.diags.errors(), 1);
  EXPECT_NE(r.diags.all()[0].message.find("already defined"), std::string::npos);
  EXPECT_EQ(r.diags.all()[0].loc.line, 2);
  EXPECT_EQ(r.diags.all()[0].loc.col, 9);
}

TEST(Checker, MissingPathIsAnError) {
  CheckResult r = CheckPaths({"/nonexistent/x.journey"}, {});
  EXPECT_EQ(r.diags.errors(), 1);
}

TEST(Checker, EveryKindOfWaitBreaksALoop) {
  for (const char* wait : {"wait 1h", "wait until 09:00", "wait for order.placed within 1d"}) {
    std::string src = std::string("journey j {\n entry { on user.signup }\n step a {\n  ") + wait +
                      "\n  send \"x\" to key intent marketing\n  goto a\n }\n}\n";
    EXPECT_EQ(MustCompile(src).states.size(), 2u) << wait;
  }
}

// A step is a path of states, and gotos a chain: their checks walked them
// recursively, and a step of ~20,000 statements or a chain of 100,000
// gotos overflowed the stack (exit 139). One input runs at most
// kMaxStatesPerInput states, so a longer path without a wait is an error
// at check, not an instance ended by the step's guard in production.
TEST(Checker, LongStepsAndGotoChainsAreCheckedNotACrash) {
  auto sets = [](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "  set a = 1\n";
    return s;
  };
  auto journey = [](const std::string& body) {
    return "journey j {\n entry { on user.signup }\n step a {\n" + body + "  end\n }\n}\n";
  };
  // The path ends at `end`, one state more than its statements.
  MustCompile(journey(sets(kMaxStatesPerInput - 1)));
  MustCompile(journey(sets(8000) + "  wait 1h\n" + sets(8000)));
  for (int n : {kMaxStatesPerInput, 100000}) {
    DiagnosticSink d;
    CheckedFile f = CheckSource("t.journey", journey(sets(n)), {}, d);
    EXPECT_FALSE(f.journey.has_value());
    ASSERT_EQ(d.errors(), 1) << n;
    EXPECT_EQ(d.all()[0].message,
              "from here, " + std::to_string(n + 1) +
                  " statements can run without a wait: one event or timer runs at most 10000 "
                  "(split the work with a wait)");
    EXPECT_EQ(d.all()[0].loc.line, 4);
  }
  std::string chain = "journey j {\n entry { on user.signup }\n";
  for (int i = 0; i < 100000; ++i) {
    chain += " step s" + std::to_string(i) + " { goto s" + std::to_string(i + 1) + " }\n";
  }
  chain += " step s100000 { send \"x\" to key intent marketing  end }\n}\n";
  EXPECT_EQ(MustCompile(chain).states.size(), 2u);
}

}  // namespace
}  // namespace waymark::dsl
