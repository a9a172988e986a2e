// The Spirit X3 parse tree. Internal to the parser: it mirrors the grammar
// closely, and convert.cc turns it into the public AST (dsl/ast.h), checking
// the things a grammar cannot say well (settings given twice, known intents,
// well-formed durations) with good messages.
//
// Structs that would hold a single member carry the keyword text as their
// first member instead, and tokens derive from std::string: X3 handles
// one-element Fusion sequences poorly.
#pragma once

#include <string>
#include <vector>

#include <boost/optional.hpp>
#include <boost/spirit/home/x3/support/ast/position_tagged.hpp>
#include <boost/spirit/home/x3/support/ast/variant.hpp>

namespace waymark::dsl::raw {

namespace x3 = boost::spirit::x3;

// A name or event type with its position.
struct Token : std::string, x3::position_tagged {
  using std::string::string;
  Token() = default;
};

// Literals keep their source text; convert.cc gives them meaning.
struct NullLit : x3::position_tagged {};
struct BoolLit : std::string, x3::position_tagged {
  using std::string::string;
  BoolLit() = default;
};
struct NumLit : std::string, x3::position_tagged {
  using std::string::string;
  NumLit() = default;
};
struct StrLit : std::string, x3::position_tagged {  // with quotes and escapes
  using std::string::string;
  StrLit() = default;
};
struct DurLit : std::string, x3::position_tagged {
  using std::string::string;
  DurLit() = default;
};

struct Path : x3::position_tagged {
  std::string root;
  std::vector<std::string> fields;
};

struct Call;
struct Or;

struct Primary : x3::variant<NullLit, BoolLit, NumLit, StrLit, DurLit, x3::forward_ast<Call>, Path,
                             x3::forward_ast<Or>> {
  using base_type::base_type;
  using base_type::operator=;
};

struct BinaryTail : x3::position_tagged {
  std::string op;
  Primary rhs;
};
struct InTail : x3::position_tagged {
  std::string op;  // "in" | "not in"
  std::vector<Primary> values;
};
struct CompareTail : x3::variant<BinaryTail, InTail> {
  using base_type::base_type;
  using base_type::operator=;
};

struct Compare : x3::position_tagged {
  Primary lhs;
  boost::optional<CompareTail> tail;
};

struct Negation;
struct Unary : x3::variant<Compare, x3::forward_ast<Negation>> {
  using base_type::base_type;
  using base_type::operator=;
};
struct Negation : x3::position_tagged {
  std::string kw;
  Unary operand;
};

struct And : x3::position_tagged {
  Unary first;
  std::vector<Unary> rest;
};
struct Or : x3::position_tagged {
  And first;
  std::vector<And> rest;
};

struct Call : x3::position_tagged {
  std::string name;
  std::vector<Or> args;
};

// --- statements ---

struct WaitFor;
struct If;
struct Match;
struct Split;

struct Send : x3::position_tagged {
  std::string kw;
  StrLit template_name;
  Or to;
  Token intent;
  boost::optional<StrLit> via;
  boost::optional<NumLit> priority;
};
struct WaitDur : x3::position_tagged {
  std::string kw;
  DurLit duration;
};
struct WaitUntil : x3::position_tagged {
  std::string kw;
  Token time;
  std::vector<Token> days;
  boost::optional<Or> zone;
  boost::optional<StrLit> fallback;
};
struct Set : x3::position_tagged {
  std::string kw;
  Token name;
  Or value;
};
struct EmitField {
  Token name;
  Or value;
};
struct Emit : x3::position_tagged {
  std::string kw;
  Token event;
  std::vector<EmitField> fields;
};
struct Goto : x3::position_tagged {
  std::string kw;
  Token target;
};
struct End : std::string, x3::position_tagged {
  using std::string::string;
  End() = default;
};

struct Statement : x3::variant<Send, WaitDur, WaitUntil, x3::forward_ast<WaitFor>, x3::forward_ast<If>,
                               x3::forward_ast<Match>, x3::forward_ast<Split>, Set, Emit, Goto, End> {
  using base_type::base_type;
  using base_type::operator=;
};
using Block = std::vector<Statement>;

struct WaitFor : x3::position_tagged {
  std::string kw;
  Token event;
  boost::optional<DurLit> within;
  boost::optional<Or> when;
  boost::optional<Block> received;
  boost::optional<Block> timeout;
};
struct ElseIf : x3::position_tagged {
  Or cond;
  Block body;
};
struct If : x3::position_tagged {
  Or cond;
  Block body;
  std::vector<ElseIf> else_ifs;
  boost::optional<Block> else_body;
};
struct Case : x3::position_tagged {
  std::vector<Primary> values;
  Block body;
};
struct Match : x3::position_tagged {
  Or value;
  std::vector<Case> cases;
  boost::optional<Block> else_body;
};
struct SplitArm : x3::position_tagged {
  Token name;
  NumLit percent;
  boost::optional<Block> body;
};
struct Split : x3::position_tagged {
  std::string kw;
  std::vector<SplitArm> arms;
};

// --- journey items ---

// description "..." | label "..." | priority N | over_cap NAME | key EXPR |
// max_concurrent N
struct SettingValue : x3::variant<StrLit, NumLit, Token, Or> {
  using base_type::base_type;
  using base_type::operator=;
};
struct Setting : x3::position_tagged {
  std::string key;
  SettingValue value;
};
struct Timezone : x3::position_tagged {
  Or zone;
  boost::optional<StrLit> fallback;
};
struct QuietHours : x3::position_tagged {
  Token start;
  Token end;
};
struct OnEvent : x3::position_tagged {
  Token event;
  boost::optional<Or> when;
};
struct Reentry : x3::position_tagged {
  Token mode;
  boost::optional<DurLit> period;
};
struct EntryItem : x3::variant<OnEvent, Reentry, Setting> {
  using base_type::base_type;
  using base_type::operator=;
};
struct Entry : x3::position_tagged {
  std::string kw;
  std::vector<EntryItem> items;
};
struct Exit : x3::position_tagged {
  std::string kw;
  OnEvent on;
};
struct Goal : x3::position_tagged {
  Token name;
  OnEvent on;
  DurLit within;
  boost::optional<std::string> and_exit;
};
struct Step : x3::position_tagged {
  Token name;
  Block body;
};

struct Item : x3::variant<Setting, Timezone, QuietHours, Entry, Exit, Goal, Step> {
  using base_type::base_type;
  using base_type::operator=;
};

struct Header : x3::position_tagged {
  std::string kw;
  Token name;
};

}  // namespace waymark::dsl::raw
