// Templates and messages: strict Mustache rendering (only the names a
// template uses are converted, with the same result as converting all),
// and RFC 5322 / MIME output that refuses header injection.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "engine/base/json_text.h"
#include "engine/delivery/message.h"
#include "engine/delivery/template.h"
#include "engine/delivery/transport.h"
#include "tests/testing/messages.h"

namespace waymark {
namespace {

using nlohmann::json;

Template Parse(const std::string& text) {
  auto t = Template::Parse("t", text);
  EXPECT_TRUE(t.ok()) << t.error();
  return std::move(t).value();
}

const json kData = {{"trigger",
                     {{"data",
                       {{"first_name", "Ana <b>"},
                        {"total", 42.5},
                        {"items", {{{"name", "Tea"}, {"qty", 2}}, {{"name", "Mug"}, {"qty", 1}}}},
                        {"vip", true},
                        {"unused", {{"deep", {1, 2, 3}}}}}}}},
                    {"event", {{"type", "user.signup"}}},
                    {"vars", {{"region", "dach"}}},
                    {"key", "u1"},
                    {"journey", "welcome"}};

TEST(Template, RendersPartsWithHtmlEscapedOnlyInHtml) {
  Template t = Parse(
      "subject: Hi {{trigger.data.first_name}}\n"
      "from: Acme <a@acme.example>\n"
      "--- text\n"
      "Hi {{trigger.data.first_name}}, {{trigger.data.total}} ({{key}} in {{journey}})\n"
      "--- html\n"
      "<p>{{trigger.data.first_name}} {{{trigger.data.first_name}}} {{&vars.region}}</p>\n");
  auto m = t.Render(kData);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().subject, "Hi Ana <b>");
  EXPECT_EQ(m.value().from, "Acme <a@acme.example>");
  EXPECT_EQ(m.value().text, "Hi Ana <b>, 42.5 (u1 in welcome)\n");
  EXPECT_EQ(m.value().html, "<p>Ana &lt;b&gt; Ana <b> dach</p>\n");
}

TEST(Template, AnApostropheIsEscapedAsEveryMailClientReadsIt) {
  // `&apos;` is not HTML 4: mail clients that render HTML 4 (Outlook's
  // Word engine among them) showed it as written, "O&apos;Brien".
  Template t = Parse("subject: s\nfrom: a@acme.example\n--- html\n<p>{{trigger.data.n}}</p>\n");
  auto m = t.Render(nlohmann::json{{"trigger", {{"data", {{"n", "O'Brien & \"Co\" <x>"}}}}}});
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().html, "<p>O&#39;Brien &amp; &quot;Co&quot; &lt;x&gt;</p>\n");
}

TEST(Template, SectionsSeeTheirItemsAndTheOuterNames) {
  Template t = Parse(
      "subject: s\n--- text\n"
      "{{#trigger.data.items}}{{qty}}x {{name}} for {{key}};{{/trigger.data.items}}"
      "{{#trigger.data.vip}} VIP{{/trigger.data.vip}}{{^vars.missing_ok}} "
      "none{{/vars.missing_ok}}\n");
  auto m = t.Render(kData);
  // {{^vars.missing_ok}} names a value that is absent: strict rendering
  // reports it rather than guessing.
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().find("no value for 'vars.missing_ok'"), std::string::npos) << m.error();
  Template ok = Parse(
      "subject: s\n--- text\n"
      "{{#trigger.data.items}}{{qty}}x {{name}} for {{key}};{{/trigger.data.items}}"
      "{{#trigger.data.vip}} VIP{{/trigger.data.vip}}\n");
  auto r = ok.Render(kData);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.value().text, "2x Tea for u1;1x Mug for u1; VIP\n");
}

// null is falsy (the Mustache spec): "[Use code ]" was rendered for a
// coupon of null, and the inverted section not at all.
TEST(Template, NullIsFalsy) {
  Template t = Parse(
      "subject: s\n--- text\n"
      "[{{#trigger.data.coupon}}Use code {{trigger.data.coupon}}{{/trigger.data.coupon}}]"
      "[{{^trigger.data.coupon}}no code{{/trigger.data.coupon}}]({{trigger.data.coupon}})\n");
  auto m = t.Render({{"trigger", {{"data", {{"coupon", nullptr}}}}}});
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().text, "[][no code]()\n");
}

// A number renders in its shortest form: a whole one (1e2, 100.0) as an
// integer, where it rendered "100.0"; others as the shortest text that
// reads back as the same double.
TEST(Template, NumbersRenderInTheirShortestForm) {
  Template t = Parse(
      "subject: s\n--- text\n{{trigger.data.a}} {{trigger.data.b}} {{trigger.data.c}} "
      "{{trigger.data.d}} {{trigger.data.e}} {{trigger.data.f}} {{trigger.data.g}}\n");
  nlohmann::json data;
  ASSERT_TRUE(ParseJson(R"({"trigger":{"data":{"a":19.90,"b":1e2,"c":-3,"d":1.5e-7,)"
                        R"("e":123456789012345678901234567890,"f":2.0,"g":-1e15}}})",
                        data));
  auto m = t.Render(data);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().text, "19.9 100 -3 1.5e-07 1.2345678901234568e+29 2 -1000000000000000\n");
}

TEST(Template, AMissingNameIsAnErrorNamingIt) {
  Template t = Parse("subject: Hi {{trigger.data.nickname}}\n--- text\nx\n");
  auto m = t.Render(kData);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error(), "template 't' (subject): no value for 'trigger.data.nickname'");
}

TEST(Template, RenderingFromRootsEqualsRenderingTheWholeObject) {
  Template t = Parse(
      "subject: {{trigger.data.first_name}}\n--- text\n"
      "{{#trigger.data.items}}{{name}}{{/trigger.data.items}} {{vars.region}} {{event.type}}\n");
  TemplateRoots roots;
  for (const auto& [k, v] : kData.items()) roots.emplace_back(k, &v);
  auto a = t.Render(kData), b = t.Render(roots);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a.value().subject, b.value().subject);
  EXPECT_EQ(a.value().text, b.value().text);
  EXPECT_EQ(b.value().text, "TeaMug dach user.signup\n");
  // Rendering again gives the same (a parsed template is reused).
  EXPECT_EQ(t.Render(roots).value().text, b.value().text);
}

TEST(Template, ChangedDelimitersStillFindTheirNames) {
  Template t = Parse("subject: s\n--- text\n{{=<% %>=}}Hi <%trigger.data.first_name%>\n");
  auto m = t.Render(kData);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().text, "Hi Ana <b>\n");
}

// The header lines' values without the spaces around them: a space after
// the From's '>' made every send of the template a dead letter. A From
// without tags that is no mailbox is refused when the template is read
// (by check too), not at each send.
TEST(Template, HeaderValuesAreTrimmedAndAFixedFromIsChecked) {
  Template t = Parse("subject: Hello \t\nfrom: Acme <hello@acme.example> \n--- text\nx\n");
  auto m = t.Render(kData);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().subject, "Hello");
  EXPECT_EQ(m.value().from, "Acme <hello@acme.example>");
  auto bad = Template::Parse("t", "subject: s\nfrom: not an address\n--- text\nx\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(),
            "template 't': from: 'not an address' is not a mailbox (\"Name <addr>\" or \"addr\")");
  EXPECT_TRUE(Template::Parse("t",
                              "subject: s\nfrom: {{trigger.data.first_name}} <a@b.io>\n"
                              "--- text\nx\n")
                  .ok());
}

TEST(Template, LimitsAndFormatErrors) {
  std::string deep = "subject: s\n--- text\n";
  for (int i = 0; i < 17; ++i) deep += "{{#vars.a}}";
  for (int i = 0; i < 17; ++i) deep += "{{/vars.a}}";
  auto d = Template::Parse("t", deep + "\n");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().find("nested deeper than 16"), std::string::npos);
  // Counted however the tags are written: a space before the sigil, or
  // other delimiters (uncounted, 18,000 levels crashed the process).
  for (auto [open, close, prefix] : {std::tuple{"{{ #vars.a}}", "{{ /vars.a}}", ""},
                                     std::tuple{"<%#vars.a%>", "<%/vars.a%>", "{{=<% %>=}}"}}) {
    std::string t = std::string("subject: s\n--- text\n") + prefix;
    for (int i = 0; i < 17; ++i) t += open;
    for (int i = 0; i < 17; ++i) t += close;
    auto spaced = Template::Parse("t", t + "\n");
    ASSERT_FALSE(spaced.ok()) << open;
    EXPECT_NE(spaced.error().find("nested deeper than 16"), std::string::npos) << spaced.error();
  }
  // "{{{" after {{={{ ]]=}} is no triple to the library: the tags up to
  // the next "}}}" were skipped as one, and 21,000 levels crashed render.
  // And a triple that sets delimiters sets them ({{{=< >=}}}: the tags
  // after it went uncounted, and 30,000 levels crashed it too).
  for (const char* prefix : {"{{={{ ]]=}}{{{x]]{{=< >=]]", "{{{=< >=}}}"}) {
    std::string t = std::string("subject: s\n--- text\n") + prefix;
    for (int i = 0; i < 17; ++i) t += "<#vars.a>";
    for (int i = 0; i < 17; ++i) t += "</vars.a>";
    auto skipped = Template::Parse("t", t + " }}}\n");
    ASSERT_FALSE(skipped.ok()) << prefix;
    EXPECT_NE(skipped.error().find("nested deeper than 16"), std::string::npos) << skipped.error();
  }
  auto big = Template::Parse("t", "subject: s\n--- text\n" + std::string(300 * 1024, 'x'));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().find("256 KiB"), std::string::npos);
  EXPECT_FALSE(Template::Parse("t", "subject: s\n").ok());   // no part
  EXPECT_FALSE(Template::Parse("t", "--- text\nx\n").ok());  // no subject
  EXPECT_FALSE(Template::Parse("t", "subjekt: s\n--- text\nx\n").ok());
  // Where in the file, as line and column (it was an offset in the part).
  auto bad = Template::Parse("t", "subject: s\n--- text\n{{#a}}x\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), "template 't' (text): Unclosed section \"a\" at line 3, column 1");
  auto tag = Template::Parse("t", "subject:  Hi {{name\n--- text\nx\n");
  ASSERT_FALSE(tag.ok());
  EXPECT_EQ(tag.error(), "template 't' (subject): Unclosed tag at line 1, column 14");
  auto html = Template::Parse("t", "subject: s\n--- text\nx\n--- html\n<p>\n  <b>{{/b}}</b>\n");
  ASSERT_FALSE(html.ok());
  EXPECT_EQ(html.error(), "template 't' (html): Unopened section \"b\" at line 6, column 6");
  EXPECT_FALSE(Parse("subject: s\n--- text\nx\n").Render(json::array()).ok());
  // A template saved in another encoding (Latin-1 here) is refused, with
  // its line: it went out labelled UTF-8 from some transports and was
  // refused by another.
  auto latin1 = Template::Parse("t",
                                "subject: Gr\xfc\xdf"
                                "e\n--- text\nHallo\n");
  ASSERT_FALSE(latin1.ok());
  EXPECT_EQ(latin1.error(), "template 't' is not UTF-8 text (line 1)");
  auto nul = Template::Parse("t", std::string("subject: s\n--- text\na\0b\n", 24));
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.error(), "template 't' is not UTF-8 text (line 3)");
  EXPECT_TRUE(Template::Parse("t", "subject: Grüße\n--- text\nHallo\n").ok());
}

// There are no partials. The library looked a partial's name up in the
// data and rendered the string it found as a template: an event's field
// went out as unescaped markup, and one naming itself recursed until the
// process crashed. Refused by Parse (and `check`), wherever they are.
TEST(Template, PartialsAreRefused) {
  auto html = Template::Parse("t",
                              "subject: s\n--- text\nx\n--- html\n<p>{{#trigger.data}}\n"
                              "  {{ > footer}}{{/trigger.data}}</p>\n");
  ASSERT_FALSE(html.ok());
  EXPECT_EQ(html.error(),
            "template 't' (html): partials ({{> name}}) are not supported at line 6, column 3");
  auto subject = Template::Parse("t", "subject: Hi {{>name}}\n--- text\nx\n");
  ASSERT_FALSE(subject.ok());
  EXPECT_EQ(subject.error(),
            "template 't' (subject): partials ({{> name}}) are not supported at line 1, column 13");
  for (const char* set : {"{{=<% %>=}}", "{{{=<% %>=}}}"}) {
    auto changed =
        Template::Parse("t", std::string("subject: s\n--- text\n") + set + "<%> footer%>\n");
    ASSERT_FALSE(changed.ok()) << set;
    EXPECT_NE(changed.error().find("partials"), std::string::npos) << changed.error();
  }
  // A triple mustache and a comment that begin with '>' are no partials.
  auto fine = Template::Parse("t", "subject: s\n--- text\n{{! > not one}}{{{vars.a}}}\n");
  ASSERT_TRUE(fine.ok()) << fine.error();
  auto out = fine.value().Render(json{{"vars", {{"a", "<b>"}}}});
  ASSERT_TRUE(out.ok()) << out.error();
  EXPECT_EQ(out.value().text, "<b>\n");
}

MessageParams Params() {
  MessageParams p;
  p.idempotency_key = "wm-0123456789abcdef0123456789abcdef01234567";
  p.from = "Acme <hello@acme.example>";
  p.to = "ana@example.com";
  p.date = 1772962200LL * kMicrosPerSecond;  // 2026-03-08T09:30:00Z
  p.content = {"Grüße aus Köln", "", "Hallo Ana\n", "<p>Hallo Ana</p>\n"};
  return p;
}

TEST(Message, IsDeterministicMimeWithEncodedHeaders) {
  auto a = BuildMessage(Params()), b = BuildMessage(Params());
  ASSERT_TRUE(a.ok()) << a.error();
  EXPECT_EQ(a.value(), b.value());
  const std::string& m = a.value();
  EXPECT_NE(m.find("Subject: =?UTF-8?"), std::string::npos) << m;
  EXPECT_NE(m.find("Message-ID: <wm-0123456789abcdef0123456789abcdef01234567@"), std::string::npos)
      << m;
  EXPECT_NE(m.find("Content-Type: multipart/alternative;"), std::string::npos);
  EXPECT_NE(m.find("Content-Type: text/plain; charset=UTF-8"), std::string::npos);
  EXPECT_NE(m.find("Content-Type: text/html; charset=UTF-8"), std::string::npos);
  EXPECT_NE(m.find("Date: Sun, 08 Mar 2026 09:30:00 +0000"), std::string::npos) << m;
  MessageParams late = Params();
  late.date = 1956009598LL * kMicrosPerSecond;  // 2031-12-25T23:59:58Z
  auto c = BuildMessage(late);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_NE(c.value().find("\r\nDate: Thu, 25 Dec 2031 23:59:58 +0000\r\n"), std::string::npos)
      << c.value();
  EXPECT_EQ(m.find("List-Unsubscribe"), std::string::npos);  // transactional
  for (size_t i = 0; i < m.size(); ++i) {                    // every line ends in CRLF
    if (m[i] == '\n') {
      ASSERT_TRUE(i > 0 && m[i - 1] == '\r') << "bare LF at " << i;
    }
  }
}

TEST(Message, MarketingMailCarriesOneClickUnsubscribe) {
  MessageParams p = Params();
  p.list_unsubscribe = true;
  p.unsubscribe_url = "https://acme.example/u?m=" + p.idempotency_key;
  auto m = BuildMessage(p);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_NE(m.value().find("List-Unsubscribe: <https://acme.example/u?m=wm-"), std::string::npos);
  EXPECT_NE(m.value().find("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            std::string::npos);
}

// The body of a one-part message, decoded from quoted-printable (RFC 2045
// 6.7); every encoded line is checked on the way: at most 76 characters,
// no white space at its end.
std::string DecodedBody(const std::string& m) {
  size_t at = m.find("quoted-printable\r\n\r\n");
  EXPECT_NE(at, std::string::npos) << m;
  std::string out;
  for (size_t p = at + 20; p < m.size();) {
    size_t eol = m.find("\r\n", p);
    EXPECT_NE(eol, std::string::npos) << "the body ends in CRLF";
    if (eol == std::string::npos) break;
    std::string line = m.substr(p, eol - p);
    p = eol + 2;
    EXPECT_LE(line.size(), 76u) << line;
    EXPECT_TRUE(line.empty() || (line.back() != ' ' && line.back() != '\t')) << "'" << line << "'";
    bool soft = !line.empty() && line.back() == '=';
    if (soft) line.pop_back();
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '=') {
        EXPECT_LT(i + 2, line.size()) << "'=' ends a line only as a soft break: " << line;
        out += char(std::stoi(line.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += line[i];
      }
    }
    if (!soft) out += '\n';
  }
  return out;
}

TEST(Message, QuotedPrintableRoundTripsWithShortLines) {
  std::mt19937 rng(7);
  std::string random;
  const std::string alphabet = "abc XYZ=.\t\n\r\xc3\xa4\xe2\x82\xac-_~";
  for (int i = 0; i < 5000; ++i) random += alphabet[rng() % alphabet.size()];
  const std::string bodies[] = {
      "Hallo Ana\n",
      std::string(300, 'x') + "\n" + std::string(75, 'y') + "\n" + std::string(76, 'z') + "\n",
      "a=b==c\n" + std::string(74, 'q') + "=\n" + std::string(73, 'q') + "==\n",
      "trailing space \ntrailing tab\t\n  \n\t\n",
      "no newline at the end",
      "ends in a space ",
      "windows\r\nlines\r\n",
      "Grüße, 日本, 😀 " + std::string(100, 'w') + "\n",
      ".a line with a dot first\n",
      random,
  };
  for (const std::string& body : bodies) {
    MessageParams p = Params();
    p.content.text = body;
    p.content.html.clear();
    auto m = BuildMessage(p);
    ASSERT_TRUE(m.ok()) << m.error();
    std::string want;
    for (char c : body) {
      if (c != '\r') want += c;
    }
    if (want.empty() || want.back() != '\n') want += '\n';
    EXPECT_EQ(DecodedBody(m.value()), want) << body.substr(0, 80);
  }
}

// For a transport that takes the parts only: no RFC 5322 text, the same
// parts and envelope, and refused for exactly the reasons a built message
// is.
TEST(Message, ATransportThatTakesThePartsGetsTheSameChecksAndNoText) {
  MessageParams p = Params();
  p.list_unsubscribe = true;
  p.unsubscribe_url = "https://acme.example/u?m=" + p.idempotency_key;
  auto whole = BuildOutMessage(p, "marketing");
  auto parts = BuildOutMessage(p, "marketing", false);
  ASSERT_TRUE(whole.ok() && parts.ok());
  EXPECT_FALSE(whole.value().data.empty());
  EXPECT_TRUE(parts.value().data.empty());
  // The built-in null transport reads nothing: it takes the parts only.
  auto null = OpenTransport("null:", "");
  ASSERT_TRUE(null.ok()) << null.error();
  EXPECT_TRUE(null.value()->FieldsOnly());
  const OutMessage &w = whole.value(), &o = parts.value();
  EXPECT_EQ(std::tie(o.key, o.from, o.to, o.intent, o.subject, o.from_header, o.text, o.html,
                     o.list_unsubscribe),
            std::tie(w.key, w.from, w.to, w.intent, w.subject, w.from_header, w.text, w.html,
                     w.list_unsubscribe));
  std::vector<MessageParams> bad(4, Params());
  bad[0].content.subject = "a\r\nBcc: x@y.z";
  bad[1].from = "Acme <hello@acme.example>\r\nBcc: x@y.z";
  bad[2].to = "ana";
  bad[3].from = "not a mailbox";
  for (const MessageParams& b : bad) {
    auto built = BuildOutMessage(b, "marketing");
    auto checked = BuildOutMessage(b, "marketing", false);
    ASSERT_FALSE(built.ok());
    ASSERT_FALSE(checked.ok()) << built.error();
    EXPECT_EQ(checked.error(), built.error());
  }
}

// A display name from an event's data holding `"` ended the quoted string
// early: `From: "Eve" <ceo@acme.example>, "x via Acme" <hello@acme.example>`
// is two mailboxes, the first spoofed. It is one mailbox now, in the
// message and in the from_header a transport sends as JSON.
TEST(Message, AFromNameIsOneMailboxWhateverItHolds) {
  MessageParams p = Params();
  p.from = "Eve\" <ceo@acme.example>, \"x via Acme <hello@acme.example>";
  auto m = BuildMessage(p);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_NE(m.value().find("\r\nFrom: \"Eve\\\" <ceo@acme.example>, \\\"x via Acme\" "
                           "<hello@acme.example>\r\n"),
            std::string::npos)
      << m.value();
  auto out = BuildOutMessage(p, "marketing", false);
  ASSERT_TRUE(out.ok()) << out.error();
  EXPECT_EQ(out.value().from_header,
            "\"Eve\\\" <ceo@acme.example>, \\\"x via Acme\" <hello@acme.example>");
  EXPECT_EQ(out.value().from, "hello@acme.example");
  // A quoted name is read with its quoted pairs, and written back the same.
  Sender s;
  ASSERT_TRUE(SplitMailbox(R"("A \"B\" \\ C" <a@example.com>)", s.name, s.addr));
  EXPECT_EQ(s.name, R"(A "B" \ C)");
  EXPECT_EQ(Mailbox(s), R"("A \"B\" \\ C" <a@example.com>)");
  // Not ASCII: encoded words in the message, UTF-8 for a JSON transport.
  s.name = "Jörg";
  EXPECT_EQ(Mailbox(s), "=?UTF-8?B?SsO2cmc=?= <a@example.com>");
  EXPECT_EQ(Mailbox(s, false), "Jörg <a@example.com>");
}

// The file transport deduplicates by the key (a message's file is named by
// it): it says so, so that a send pending at a restart is not counted as
// maybe repeated, and an ambiguous one may go again with its key.
TEST(FileTransport, SaysItDeduplicatesByTheKey) {
  auto dir =
      std::filesystem::temp_directory_path() / ("waymark_file_idem_" + std::to_string(::getpid()));
  auto t = OpenTransport("file:" + dir.string(), WAYMARK_PLUGIN_DIR);
  ASSERT_TRUE(t.ok()) << t.error();
  EXPECT_TRUE(t.value()->Idempotent());
  std::filesystem::remove_all(dir);
}

// A key is a file's name with ".eml": one too long for a name (the ABI
// allows 255 bytes, a name 255 with the suffix) is refused for good,
// saying why. It was retry_later at every attempt, "File name too long",
// until the send became a dead letter.
TEST(FileTransport, AKeyTooLongForAFileNameIsRefused) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("waymark_file_long_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto t = OpenTransport("file:" + dir.string(), WAYMARK_PLUGIN_DIR);
  ASSERT_TRUE(t.ok()) << t.error();
  RenderedMessage content{"s", "Waymark <t@waymark.example>", "x\n", ""};
  auto r = t.value()->SendBatch(
      {testing_util::MakeOutMessage(std::string(252, 'k'), "a@example.com", content),
       testing_util::MakeOutMessage(std::string(251, 'k'), "a@example.com", content)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, "permanent_message") << r[0].detail;
  EXPECT_NE(r[0].detail.find("longer than a file name"), std::string::npos) << r[0].detail;
  EXPECT_EQ(r[1].kind, "accepted") << r[1].detail;
  fs::remove_all(dir);
}

// The directory is the one its path names at each batch: one renamed away
// got the messages while their results named files that did not exist, and
// one removed and made again (or its .tmp removed) failed every send until
// a restart, each a dead letter after its attempts.
TEST(FileTransport, FollowsItsPathWhenTheDirectoryIsReplaced) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("waymark_file_moved_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::remove_all(dir.string() + ".moved");
  auto t = OpenTransport("file:" + dir.string(), WAYMARK_PLUGIN_DIR);
  ASSERT_TRUE(t.ok()) << t.error();
  RenderedMessage content{"s", "Waymark <t@waymark.example>", "x\n", ""};
  auto send = [&](const std::string& key) {
    auto r =
        t.value()->SendBatch({testing_util::MakeOutMessage("wm-" + key, "a@example.com", content)});
    EXPECT_EQ(r.at(0).kind, "accepted") << key << ": " << r[0].detail;
    EXPECT_TRUE(fs::exists(r[0].detail)) << key << ": " << r[0].detail;
    EXPECT_EQ(fs::path(r[0].detail).parent_path(), dir) << key;
  };
  send("1");
  fs::rename(dir, dir.string() + ".moved");
  fs::create_directories(dir);
  send("2");
  fs::remove_all(dir);
  send("3");
  fs::remove_all(dir / ".tmp");
  send("4");
  // wm-3.eml, wm-4.eml and .tmp (wm-2.eml went with the directory removed)
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 3);
  fs::remove_all(dir);
  fs::remove_all(dir.string() + ".moved");
}

// The Subject line was never folded: a 1,500-byte subject made a header
// line of 1,510 characters, over RFC 5322's 998. Folded at white space,
// it unfolds to the subject; a word too long for any line goes as encoded
// words.
TEST(Message, ALongSubjectIsFoldedAndUnfoldsToItself) {
  std::string words;
  for (int i = 0; i < 150; ++i) words += (i ? " " : "") + std::string("word") + std::to_string(i);
  for (const std::string& subject : {words, std::string(1500, 'x')}) {
    MessageParams p = Params();
    p.content.subject = subject;
    auto m = BuildMessage(p);
    ASSERT_TRUE(m.ok()) << m.error();
    std::string head = m.value().substr(0, m.value().find("\r\n\r\n") + 2);
    size_t longest = 0;
    for (size_t at = 0, nl; (nl = head.find("\r\n", at)) != std::string::npos; at = nl + 2) {
      longest = std::max(longest, nl - at);
    }
    // 78 where words allow (RFC 5322's SHOULD); always within its 998.
    EXPECT_LE(longest, subject == words ? 78u : 998u) << head;
    size_t from = head.find("\r\nSubject: ") + 11;
    std::string value;
    for (size_t i = from;
         !(head.compare(i, 2, "\r\n") == 0 && head[i + 2] != ' ' && head[i + 2] != '\t');) {
      if (head.compare(i, 2, "\r\n") == 0) {
        i += 2;  // unfolding: the CRLF goes, the white space after it stays
        continue;
      }
      value += head[i++];
    }
    if (subject == words) {
      EXPECT_EQ(value, subject);
    } else {
      EXPECT_EQ(value.rfind("=?UTF-8?B?", 0), 0u) << value.substr(0, 80);
    }
  }
}

// The header lines of a message, unfolded: name -> value (RFC 5322 2.2.3:
// a CRLF before white space goes, the white space stays). Also checks
// every line's length (`plain`: the limit of a line without an encoded
// word) and that none is white space only.
std::map<std::string, std::string> UnfoldedHeaders(const std::string& m, size_t plain) {
  std::map<std::string, std::string> out;
  std::string head = m.substr(0, m.find("\r\n\r\n") + 2), name;
  for (size_t at = 0, nl; (nl = head.find("\r\n", at)) != std::string::npos; at = nl + 2) {
    std::string line = head.substr(at, nl - at);
    bool encoded = line.find("=?UTF-8?B?") != std::string::npos;
    // RFC 2047 6: a line with an encoded word within 76; else RFC 5322's 78.
    EXPECT_LE(line.size(), encoded ? 76u : plain) << line;
    EXPECT_NE(line.find_first_not_of(" \t"), std::string::npos) << "a blank line in\n" << head;
    if (line[0] == ' ' || line[0] == '\t') {
      out[name] += line;
    } else {
      name = line.substr(0, line.find(':'));
      out[name] = line.substr(name.size() + 2);
    }
  }
  return out;
}

// RFC 2047 "B" words decoded (the white space between two of them goes).
std::string DecodeWords(const std::string& v) {
  static const std::string kB64 =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out, gap;
  bool after_word = false;
  for (size_t i = 0; i < v.size();) {
    if (v.compare(i, 10, "=?UTF-8?B?") == 0) {
      size_t end = v.find("?=", i + 10);
      std::string b = v.substr(i + 10, end - i - 10), bytes;
      uint32_t acc = 0;
      int bits = 0;
      for (char c : b) {
        if (c == '=') break;
        acc = (acc << 6) | uint32_t(kB64.find(c));
        if ((bits += 6) >= 8) bytes += char((acc >> (bits -= 8)) & 0xFF);
      }
      if (!after_word) out += gap;
      out += bytes;
      gap.clear();
      after_word = true;
      i = end + 2;
    } else if (v[i] == ' ') {
      gap += v[i++];
    } else {
      out += gap + v[i++];
      gap.clear();
      after_word = false;
    }
  }
  return out + gap;
}

// Header lines kept their limits in the common case only: the first line of
// an encoded Subject was 81 characters (RFC 2047 allows 76), an encoded or
// long From name was never folded (a 1,200-character name made one line,
// over the 998 a line may have), a subject ending in spaces could fold into
// a line of white space only, text that looks like an encoded word was sent
// as it is (a reader decodes it), and a name with a '.' went unquoted
// (RFC 5322 allows it only in the obsolete syntax).
TEST(Message, EveryHeaderKeepsItsLineLimitsAndReadsBackAsWritten) {
  std::string words;
  for (int i = 0; i < 120; ++i) words += (i ? " " : "") + std::string("wort") + std::to_string(i);
  std::string umlauts;
  for (int i = 0; i < 60; ++i) umlauts += "Grüße ";
  std::string subject_words = words.substr(0, 75) + std::string(30, ' ');
  // Subject, From name, and the longest line where words allow: 78, or
  // (white space that ends a subject cannot begin a line) 998.
  for (const auto& [subject, name, plain] :
       std::vector<std::tuple<std::string, std::string, size_t>>{
           {umlauts, "Jörg " + umlauts.substr(0, umlauts.size() - 1), 78},
           {subject_words, words, 78},
           {words + std::string(90, ' '), std::string(1200, 'n'), 998},
           // A long word, then white space with none after it: that space
           // went on the word's line, past 998 (1,109 octets).
           {std::string(900, 'x') + std::string(200, ' '), "Acme", 998},
           {"=?UTF-8?B?SGk=?= there", "=?UTF-8?B?SGk=?=", 78},
           {"Plain", "Acme Inc.", 78},
           {std::string(1500, 'x'), "A \"quoted\" " + words, 78}}) {
    MessageParams p = Params();
    p.content.subject = subject;
    p.from = name + " <hello@acme.example>";
    auto m = BuildMessage(p);
    ASSERT_TRUE(m.ok()) << m.error();
    std::map<std::string, std::string> h = UnfoldedHeaders(m.value(), plain);
    EXPECT_EQ(DecodeWords(h["Subject"]), subject) << h["Subject"];
    const std::string& from = h["From"];
    size_t lt = from.rfind(" <");
    ASSERT_NE(lt, std::string::npos) << from;
    EXPECT_EQ(from.substr(lt), " <hello@acme.example>");
    Sender s;
    if (from.rfind("=?", 0) == 0) {
      s.name = DecodeWords(from.substr(0, lt));
    } else {
      ASSERT_TRUE(SplitMailbox(from, s.name, s.addr)) << from;
    }
    EXPECT_EQ(s.name, name) << from;
    if (name == "Acme Inc.") {
      EXPECT_EQ(from, "\"Acme Inc.\" <hello@acme.example>");
    }
  }
  // The same in a quoted From name (1,105 octets).
  MessageParams p = Params();
  p.from = "\"" + std::string(899, 'x') + std::string(200, ' ') + "\" <hello@acme.example>";
  auto m = BuildMessage(p);
  ASSERT_TRUE(m.ok()) << m.error();
  UnfoldedHeaders(m.value(), 998);
}

TEST(Message, RefusesHeaderInjectionAndBadAddresses) {
  // Every control character but a tab, in any header (escape sequences,
  // DEL, vertical tab and form feed went into headers raw).
  for (const std::string& subject :
       {std::string("a\r\nBcc: x@y.z"), std::string("a\nb"), std::string("a\0b", 3),
        std::string("Hi\x1b[31m"), std::string("a\x7f"), std::string("a\x0b"),
        std::string("a\x0c")}) {
    MessageParams p = Params();
    p.content.subject = subject;
    EXPECT_FALSE(BuildMessage(p).ok()) << subject;
  }
  MessageParams p = Params();
  p.from = "Acme <hello@acme.example>\r\nBcc: x@y.z";
  EXPECT_FALSE(BuildMessage(p).ok());
  p.from = "Bob\x0b <hello@acme.example>";
  EXPECT_FALSE(BuildMessage(p).ok());
  p = Params();
  p.content.subject = "tab\tis whitespace";
  EXPECT_TRUE(BuildMessage(p).ok());
  for (const char* bad :
       {"", "ana", "ana@", "@x.io", "a b@x.io", "a@x", "<a@x.io>", "a@x.io\n", "x@y@gmail.com"}) {
    EXPECT_FALSE(ValidAddress(bad)) << bad;
  }
  for (const char* good : {"ana@example.com", "a.b+tag@sub.example.co", "jörg@example.de"}) {
    EXPECT_TRUE(ValidAddress(good)) << good;
  }
}

}  // namespace
}  // namespace waymark
