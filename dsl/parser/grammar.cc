// The journey grammar in Boost.Spirit X3, in the layout of X3's rexpr_full
// example: rule declarations, then definitions, then BOOST_SPIRIT_DEFINE,
// instantiated only here. Expectation points (`>`) turn a wrong token after a
// keyword into a SyntaxError that names what was expected; rule names are
// written to read well in "expected X" messages.
#include "dsl/parser/grammar.h"

#include <type_traits>

#include <boost/spirit/home/x3.hpp>

#include "dsl/parser/raw_ast_adapted.h"

namespace waymark::dsl::parser {
namespace {

namespace x3 = boost::spirit::x3;

struct positions_tag;

// Records where each position-tagged node starts and ends.
struct annotate {
  template <typename T, typename It, typename Ctx>
  void on_success(It const& first, It const& last, T& ast, Ctx const& ctx) const {
    if constexpr (std::is_base_of_v<x3::position_tagged, T>) {
      std::vector<Iterator>& pos = x3::get<positions_tag>(ctx).get();
      ast.id_first = int(pos.size());
      pos.push_back(first);
      ast.id_last = int(pos.size());
      pos.push_back(last);
    }
  }
};

using x3::char_;
using x3::lexeme;
using x3::lit;
using x3::raw;

// Character classes as explicit ASCII sets: x3's alnum, alpha, digit and
// space call the C classification functions, which assert (and are
// undefined behaviour without assertions) on a byte above 0x7F, so a
// journey with `set café = 1` aborted check in a debug build.
auto const alpha = char_("a-zA-Z");
auto const digit = char_("0-9");
auto const idchar = char_("a-zA-Z0-9_");

// Keywords: reserved only where they can stand; `stepper` is not `step`.
#define WAYMARK_KW(k)                                        \
  x3::rule<struct kw_##k##_class> const kw_##k = "'" #k "'"; \
  auto const kw_##k##_def = lexeme[lit(#k) >> !idchar];      \
  BOOST_SPIRIT_DEFINE(kw_##k)

WAYMARK_KW(journey);
WAYMARK_KW(description);
WAYMARK_KW(label);
WAYMARK_KW(priority);
WAYMARK_KW(over_cap);
WAYMARK_KW(timezone);
WAYMARK_KW(fallback);
WAYMARK_KW(quiet);
WAYMARK_KW(hours);
WAYMARK_KW(to);
WAYMARK_KW(entry);
WAYMARK_KW(on);
WAYMARK_KW(when);
WAYMARK_KW(key);
WAYMARK_KW(reentry);
WAYMARK_KW(per);
WAYMARK_KW(max_concurrent);
WAYMARK_KW(exit);
WAYMARK_KW(goal);
WAYMARK_KW(within);
WAYMARK_KW(and);
WAYMARK_KW(or);
WAYMARK_KW(not );
WAYMARK_KW(in);
WAYMARK_KW(step);
WAYMARK_KW(send);
WAYMARK_KW(intent);
WAYMARK_KW(via);
WAYMARK_KW(wait);
WAYMARK_KW(until);
WAYMARK_KW(for);
WAYMARK_KW(received);
WAYMARK_KW(timeout);
WAYMARK_KW(if);
WAYMARK_KW(else);
WAYMARK_KW(match);
WAYMARK_KW(case);
WAYMARK_KW(split);
WAYMARK_KW(set);
WAYMARK_KW(emit);
WAYMARK_KW(with);
WAYMARK_KW(goto);
WAYMARK_KW(end);
WAYMARK_KW(null);
WAYMARK_KW(true);
WAYMARK_KW(false);

#undef WAYMARK_KW

// --- tokens ---
x3::rule<struct skipper_class> const skipper = "white space";
struct name_class : annotate {};
struct event_type_class : annotate {};
struct time_class : annotate {};
struct str_class : annotate {};
struct num_class : annotate {};
struct dur_class : annotate {};
struct bool_class : annotate {};
struct null_class : annotate {};

x3::rule<struct ident_class, std::string> const ident = "name";
x3::rule<struct root_class, std::string> const root = "name";
x3::rule<name_class, raw::Token> const name = "name";
struct intent_word_class : annotate {};
struct policy_word_class : annotate {};
struct reentry_word_class : annotate {};
x3::rule<intent_word_class, raw::Token> const intent_word =
    "intent (transactional, marketing or digest)";
x3::rule<policy_word_class, raw::Token> const policy_word = "skip or defer";
x3::rule<reentry_word_class, raw::Token> const reentry_word = "once, always or once per DURATION";
x3::rule<event_type_class, raw::Token> const event_type = "event type (like user.signup)";
x3::rule<time_class, raw::Token> const time_of_day = "time of day (HH:MM)";
x3::rule<str_class, raw::StrLit> const str_lit = "string";
x3::rule<num_class, raw::NumLit> const num_lit = "number";
x3::rule<dur_class, raw::DurLit> const dur_lit = "duration (like 30m, 4h or 7d)";
x3::rule<bool_class, raw::BoolLit> const bool_lit = "true or false";
x3::rule<null_class, raw::NullLit> const null_lit = "null";
x3::rule<struct assign_class> const assign = "'=' (set NAME = VALUE; '==' compares)";

auto const skipper_def = char_(" \t\n\v\f\r") | ('#' >> *(char_ - x3::eol));
auto const ident_def = lexeme[(alpha | char_('_')) >> *idchar];
// Words that end or continue a clause, or start an item or a statement,
// cannot start a path, a call, an event type or a keyword argument, so
// `send "x" to intent marketing` says the recipient is missing. (`key` is
// a path root and stays usable.)
auto const reserved =
    lexeme[(lit("and") >> !idchar) | (lit("or") >> !idchar) | (lit("not") >> !idchar) |
           (lit("in") >> !idchar) | (lit("when") >> !idchar) | (lit("within") >> !idchar) |
           (lit("received") >> !idchar) | (lit("timeout") >> !idchar) | (lit("intent") >> !idchar) |
           (lit("via") >> !idchar) | (lit("priority") >> !idchar) | (lit("to") >> !idchar) |
           (lit("on") >> !idchar) | (lit("fallback") >> !idchar) | (lit("per") >> !idchar) |
           (lit("with") >> !idchar) | (lit("else") >> !idchar) | (lit("case") >> !idchar) |
           (lit("true") >> !idchar) | (lit("false") >> !idchar) | (lit("null") >> !idchar) |
           (lit("journey") >> !idchar) | (lit("description") >> !idchar) |
           (lit("label") >> !idchar) | (lit("over_cap") >> !idchar) | (lit("timezone") >> !idchar) |
           (lit("quiet") >> !idchar) | (lit("entry") >> !idchar) | (lit("reentry") >> !idchar) |
           (lit("max_concurrent") >> !idchar) | (lit("exit") >> !idchar) |
           (lit("goal") >> !idchar) | (lit("step") >> !idchar) | (lit("send") >> !idchar) |
           (lit("wait") >> !idchar) | (lit("if") >> !idchar) | (lit("match") >> !idchar) |
           (lit("split") >> !idchar) | (lit("set") >> !idchar) | (lit("emit") >> !idchar) |
           (lit("goto") >> !idchar) | (lit("end") >> !idchar)];
auto const root_def = !reserved >> ident;
auto const name_def = raw[ident];
x3::rule<struct close_quote_class> const close_quote =
    "closing '\"' (a string ends on the line it starts)";
auto const close_quote_def = lit('"');
BOOST_SPIRIT_DEFINE(close_quote)
// A CR is not part of a string either: in a file with CRLF line ends an
// unterminated string was said one column late (at the LF).
// The character after a backslash is on the string's line too (an
// escaped line break let a string run on; the expectation printed the
// parser's C++ type at the end of the file).
x3::rule<struct escaped_class, char> const escaped =
    "closing '\"' (a string ends on the line it starts)";
auto const escaped_def = ~char_("\r\n");
BOOST_SPIRIT_DEFINE(escaped)
auto const quoted = lexeme['"' > *(('\\' > escaped) | ~char_("\"\\\r\n")) > close_quote];
auto const event_seg = (alpha | char_('_')) >> *(idchar | char_('-'));
// A reserved word followed by '.' or '-' is the first segment of a type
// (`case.opened`, `in-app.dismissed`), not the word.
auto const event_type_def =
    raw[lexeme[!(reserved >> !char_(".-")) >> event_seg >> *('.' >> event_seg)]] | raw[quoted];
auto const time_of_day_def = raw[lexeme[digit >> -digit >> ':' >> digit >> digit]];
auto const str_lit_def = raw[quoted];
auto const num_lit_def = raw[lexeme[-lit('-') >> +digit >> -('.' >> +digit) >> !(idchar | '.')]];
auto const dur_lit_def = raw[lexeme[+(+digit >> char_("smhdw")) >> !idchar]];
auto const bool_lit_def = raw[kw_true | kw_false];
auto const null_lit_def = x3::omit[kw_null];
auto const assign_def = lit('=') >> !lit('=');

auto const intent_word_def = raw[!reserved >> ident];
auto const policy_word_def = raw[!reserved >> ident];
auto const reentry_word_def = raw[!reserved >> ident];
BOOST_SPIRIT_DEFINE(intent_word, policy_word, reentry_word)
BOOST_SPIRIT_DEFINE(skipper, ident, root, name, event_type, time_of_day, str_lit, num_lit, dur_lit,
                    bool_lit, null_lit, assign)

// --- expressions ---
struct expr_class : annotate {};
struct and_class : annotate {};
struct negation_class : annotate {};
struct compare_class : annotate {};
struct primary_class : annotate {};
struct binary_tail_class : annotate {};
struct in_tail_class : annotate {};
struct call_class : annotate {};
struct path_class : annotate {};
struct token_annotated : annotate {};

x3::rule<expr_class, raw::Or> const expr = "expression";
x3::rule<and_class, raw::And> const and_expr = "expression";
x3::rule<struct unary_class, raw::Unary> const unary = "expression";
x3::rule<negation_class, raw::Negation> const negation = "expression";
x3::rule<compare_class, raw::Compare> const compare = "expression";
x3::rule<primary_class, raw::Primary> const primary = "expression";
x3::rule<struct literal_class, raw::Primary> const literal =
    "a literal (string, number, bool, null or duration)";
x3::rule<binary_tail_class, raw::BinaryTail> const binary_tail = "comparison";
x3::rule<struct cmp_op_class, std::string> const cmp_op = "comparison operator";
x3::rule<in_tail_class, raw::InTail> const in_tail = "'in'";
x3::rule<call_class, raw::Call> const call = "function call";
x3::rule<path_class, raw::Path> const path = "path";
x3::rule<struct list_end_class> const list_end = "',' or ']'";
// A list of literals (`in [...]`, `case ...`): each element is expected
// by name, so an error names what may stand there (a bare list's
// expectation printed the parser's C++ type).
x3::rule<struct literals_class, std::vector<raw::Primary>> const literals =
    "a literal (string, number, bool, null or duration)";
x3::rule<struct args_end_class> const args_end = "',' or ')'";

auto const expr_def = and_expr >> *(kw_or > and_expr);
auto const and_expr_def = unary >> *(kw_and > unary);
auto const unary_def = negation | compare;
auto const negation_def = x3::attr(std::string()) >> kw_not > unary;
auto const compare_def = primary >> -(binary_tail | in_tail);
auto const cmp_op_def = x3::string("==") | x3::string("!=") | x3::string("<=") | x3::string(">=") |
                        x3::string("<") | x3::string(">");
auto const binary_tail_def = cmp_op > primary;
auto const in_tail_def = (raw[kw_not >> kw_in] | raw[kw_in]) > '[' > literals > list_end;
auto const literals_def = literal > *(',' > literal);
auto const list_end_def = lit(']');
auto const literal_def = null_lit | bool_lit | dur_lit | num_lit | str_lit;
auto const primary_def =
    null_lit | bool_lit | dur_lit | num_lit | str_lit | call | path | ('(' > expr > ')');
auto const call_def = (root >> '(') > -(expr % ',') > args_end;
auto const args_end_def = lit(')');
auto const path_def = lexeme[root >> *('.' >> ident)];

BOOST_SPIRIT_DEFINE(expr, and_expr, unary, negation, compare, cmp_op, binary_tail, in_tail,
                    list_end, literals, literal, primary, call, args_end, path)

// --- statements ---
struct send_class : annotate {};
struct wait_dur_class : annotate {};
struct wait_until_class : annotate {};
struct wait_for_class : annotate {};
struct if_class : annotate {};
struct else_if_class : annotate {};
struct match_class : annotate {};
struct case_class : annotate {};
struct split_class : annotate {};
struct split_arm_class : annotate {};
struct set_class : annotate {};
struct emit_class : annotate {};
struct goto_class : annotate {};
struct end_class : annotate {};

x3::rule<struct statement_class, raw::Statement> const statement = "statement";
x3::rule<struct block_class, raw::Block> const block = "'{'";
x3::rule<struct block_end_class> const block_end = "a statement or '}'";
x3::rule<send_class, raw::Send> const send = "send";
x3::rule<wait_dur_class, raw::WaitDur> const wait_dur =
    "duration (like 30m, 4h or 7d), 'for' or 'until'";
x3::rule<wait_until_class, raw::WaitUntil> const wait_until = "wait until";
x3::rule<wait_for_class, raw::WaitFor> const wait_for = "wait for";
x3::rule<if_class, raw::If> const if_stmt = "if";
x3::rule<else_if_class, raw::ElseIf> const else_if = "else if";
x3::rule<match_class, raw::Match> const match_stmt = "match";
x3::rule<case_class, raw::Case> const case_ = "case";
x3::rule<struct match_end_class> const match_end = "'case', 'else' or '}'";
x3::rule<split_class, raw::Split> const split_stmt = "split";
x3::rule<split_arm_class, raw::SplitArm> const split_arm = "split arm";
x3::rule<struct split_end_class> const split_end = "a split arm (NAME P% { ... }) or '}'";
x3::rule<struct percent_sign_class> const percent_sign = "'%'";
x3::rule<set_class, raw::Set> const set_stmt = "set";
x3::rule<emit_class, raw::Emit> const emit_stmt = "emit";
x3::rule<struct emit_field_class, raw::EmitField> const emit_field = "field (name: expression)";
x3::rule<goto_class, raw::Goto> const goto_stmt = "goto";
x3::rule<end_class, raw::End> const end_stmt = "end";
x3::rule<struct day_list_class, std::vector<raw::Token>> const day_list = "weekday (mon..sun)";

auto const nokw = x3::attr(std::string());

auto const statement_def = send | wait_for | wait_until | wait_dur | if_stmt | match_stmt |
                           split_stmt | set_stmt | emit_stmt | goto_stmt | end_stmt;
auto const block_def = '{' > *statement > block_end;
auto const block_end_def = lit('}');
auto const send_def = nokw >> kw_send > str_lit > kw_to > expr > kw_intent > intent_word >
                      -(kw_via > str_lit) > -(kw_priority > num_lit);
auto const wait_dur_def = nokw >> kw_wait > dur_lit;
auto const day_list_def = name % ',';
auto const wait_until_def = nokw >> kw_wait >> kw_until > time_of_day > -(kw_on > day_list) >
                            -(kw_in > expr) > -(kw_fallback > str_lit);
auto const wait_for_def = nokw >> kw_wait >> kw_for > event_type > -(kw_within > dur_lit) >
                          -(kw_when > expr) > -(kw_received > block) > -(kw_timeout > block);
auto const if_stmt_def = kw_if > expr > block > *else_if > -(kw_else > block);
auto const else_if_def = (kw_else >> kw_if) > expr > block;
auto const match_stmt_def = kw_match > expr > '{' > *case_ > -(kw_else > block) > match_end;
auto const match_end_def = lit('}');
auto const case__def = kw_case > literals > block;
auto const split_stmt_def = nokw >> kw_split > '{' > *split_arm > split_end;
auto const split_end_def = lit('}');
auto const split_arm_def = name > num_lit > percent_sign > -block;
auto const percent_sign_def = lit('%');
auto const set_stmt_def = nokw >> kw_set > name > assign > expr;
auto const emit_field_def = name > ':' > expr;
auto const emit_stmt_def = nokw >> kw_emit > event_type >
                           -(kw_with > '{' > -(emit_field % ',') > '}');
auto const goto_stmt_def = nokw >> kw_goto > name;
auto const end_stmt_def = raw[kw_end];

BOOST_SPIRIT_DEFINE(statement, block, block_end, send, wait_dur, day_list, wait_until, wait_for,
                    if_stmt, else_if, match_stmt, match_end, case_, split_stmt, split_end,
                    split_arm, percent_sign, set_stmt, emit_field, emit_stmt, goto_stmt, end_stmt)

// --- journey items ---
struct setting_class : annotate {};
struct entry_setting_class : annotate {};
struct timezone_class : annotate {};
struct quiet_class : annotate {};
struct on_event_class : annotate {};
struct reentry_class : annotate {};
struct entry_class : annotate {};
struct exit_class : annotate {};
struct goal_class : annotate {};
struct step_class : annotate {};
struct header_class : annotate {};

x3::rule<struct item_class, raw::Item> const item = "journey item";
x3::rule<setting_class, raw::Setting> const setting = "setting";
x3::rule<entry_setting_class, raw::Setting> const entry_setting = "entry setting";
x3::rule<timezone_class, raw::Timezone> const timezone = "timezone";
x3::rule<quiet_class, raw::QuietHours> const quiet = "quiet hours";
x3::rule<on_event_class, raw::OnEvent> const on_event = "'on'";
x3::rule<reentry_class, raw::Reentry> const reentry = "reentry";
x3::rule<struct entry_item_class, raw::EntryItem> const entry_item = "entry setting";
x3::rule<struct entry_end_class> const entry_end =
    "an entry setting (on, key, reentry, max_concurrent) or '}'";
x3::rule<entry_class, raw::Entry> const entry = "entry";
x3::rule<exit_class, raw::Exit> const exit_ = "exit";
x3::rule<goal_class, raw::Goal> const goal = "goal";
x3::rule<step_class, raw::Step> const step = "step";
x3::rule<header_class, raw::Header> const header = "journey header";

auto const setting_def = (raw[kw_description | kw_label] > str_lit) | (raw[kw_priority] > num_lit) |
                         (raw[kw_over_cap] > policy_word);
auto const entry_setting_def = (raw[kw_key] > expr) | (raw[kw_max_concurrent] > num_lit);
auto const timezone_def = kw_timezone > expr > -(kw_fallback > str_lit);
auto const quiet_def = kw_quiet > kw_hours > time_of_day > kw_to > time_of_day;
auto const on_event_def = kw_on > event_type > -(kw_when > expr);
auto const reentry_def = kw_reentry > reentry_word > -(kw_per > dur_lit);
auto const entry_item_def = on_event | reentry | entry_setting;
auto const entry_end_def = lit('}');
auto const entry_def = nokw >> kw_entry > '{' > *entry_item > entry_end;
auto const exit__def = nokw >> kw_exit > on_event;
auto const goal_def = kw_goal > name > on_event > kw_within > dur_lit > -raw[kw_and > kw_exit];
auto const step_def = kw_step > name > block;
auto const item_def = setting | timezone | quiet | entry | exit_ | goal | step;
auto const header_def = nokw >> kw_journey > name > '{';

BOOST_SPIRIT_DEFINE(setting, entry_setting, timezone, quiet, on_event, reentry, entry_item,
                    entry_end, entry, exit_, goal, step, item, header)

template <typename Parser, typename Attr>
ParseOutcome Run(Parser const& p, Iterator& first, Iterator last, Attr& out,
                 std::vector<Iterator>& positions) {
  ParseOutcome r;
  auto const with_positions = x3::with<positions_tag>(std::ref(positions))[p];
  try {
    r.matched = x3::phrase_parse(first, last, with_positions, skipper, out);
  } catch (const x3::expectation_failure<Iterator>& e) {
    r.error = SyntaxError{e.where(), e.which()};
  }
  return r;
}

}  // namespace

ParseOutcome ParseHeader(Iterator& first, Iterator last, raw::Header& out,
                         std::vector<Iterator>& positions) {
  return Run(header, first, last, out, positions);
}

ParseOutcome ParseItem(Iterator& first, Iterator last, raw::Item& out,
                       std::vector<Iterator>& positions) {
  return Run(item, first, last, out, positions);
}

void SkipBlanks(Iterator& first, Iterator last) {
  x3::parse(first, last, *skipper);
}

}  // namespace waymark::dsl::parser
