// Reads Prometheus's text format (version 0.0.4) as GET /metrics serves it,
// checking its form on the way: the tests of `waymark run --metrics`.
#pragma once

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace waymark::testing_util {

struct Exposition {
  std::map<std::string, std::string> samples;  // `name{labels}` as written -> value
  std::string error;                           // the first line out of form, or ""

  // A sample's value as a number (-1 when there is no such sample).
  double At(const std::string& sample) const {
    auto it = samples.find(sample);
    return it == samples.end() ? -1 : std::stod(it->second);
  }
};

// Every sample must belong to the family whose `# TYPE` line came last
// (a histogram's through its _bucket, _sum and _count), every family must
// be declared once, with HELP before TYPE, and no sample may repeat. A
// histogram's buckets must rise in `le` and never fall in count, end with
// le="+Inf", and that bucket must equal its _count.
inline Exposition ParseExposition(const std::string& text) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  static const std::regex kSample(
      R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (-?[0-9.e+-]+|\+Inf|NaN))re");
  Exposition out;
  std::set<std::string> declared;
  std::string help, family, type;
  double last_le = -1, last_bucket = -1;  // the current histogram's
  std::string inf_bucket;                 // its +Inf bucket's count
  std::istringstream in(text);
  std::string line;
  auto fail = [&](const std::string& why) {
    if (out.error.empty()) out.error = why + ": " + line;
  };
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      help = m[1];
    } else if (std::regex_match(line, m, kType)) {
      if (m[1] != help) fail("TYPE without its HELP");
      if (!declared.insert(m[1]).second) fail("a family declared twice");
      family = m[1];
      type = m[2];
      last_le = last_bucket = -1;
      inf_bucket.clear();
    } else if (std::regex_match(line, m, kSample)) {
      std::string name = m[1];
      bool ok = name == family;
      if (type == "histogram") {
        ok = name == family + "_bucket" || name == family + "_sum" || name == family + "_count";
      }
      if (!ok) fail("a sample outside its family");
      if (type == "histogram" && name == family + "_bucket") {
        static const std::regex kLe(R"re(\{le="([^"]+)"\})re");
        std::smatch le;
        std::string labels = m[2];
        if (!std::regex_match(labels, le, kLe)) fail("a bucket without its le alone");
        if (!inf_bucket.empty()) fail("a bucket after +Inf");
        double bound = le[1] == "+Inf" ? 1e308 : std::stod(le[1]);
        double count = std::stod(m[3]);
        if (bound <= last_le) fail("bucket bounds not rising");
        if (count < last_bucket) fail("bucket counts falling");
        last_le = bound;
        last_bucket = count;
        if (le[1] == "+Inf") inf_bucket = m[3];
      }
      if (type == "histogram" && name == family + "_count" && m[3] != inf_bucket) {
        fail("_count is not the +Inf bucket");
      }
      if (!out.samples.emplace(name + m[2].str(), m[3]).second) fail("a sample repeated");
    } else {
      fail("not the text format");
    }
  }
  return out;
}

}  // namespace waymark::testing_util
