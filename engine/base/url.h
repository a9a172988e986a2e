// URLs as given by users (stores, sources, transports): the parameters of
// a query, and the form a URL takes in messages.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace waymark {

// The parameters of `url`'s query, `key=value` separated by '&': each key,
// and where its value starts.
std::vector<std::pair<std::string_view, size_t>> QueryKeys(std::string_view url);

// Whether a key (a query parameter's, a configuration key's) names a
// secret: it contains pass, secret, token, key, auth or cred, in any case.
bool NamesASecret(std::string_view key);

// `url` for messages: a secret as ***. In libpq's keyword form (keyword =
// value pairs: host=db password=s3cret), the value of each keyword that
// names one. A secret is the password of
// the user part (SCHEME://USER:PASSWORD@HOST..., up to the first '@' before the first '/', as libpq
// reads it), a NATS token (nats://TOKEN@HOST), and the value of a query parameter whose key names
// one (containing pass, secret, token, key, auth or cred, in any case: password=, api_key=, ...). A
// comma-separated list of URLs (NATS servers) is masked URL by URL.
std::string RedactedUrl(std::string_view url);

}  // namespace waymark
