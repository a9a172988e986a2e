#include "engine/base/url.h"

#include <gtest/gtest.h>

namespace waymark {
namespace {

TEST(RedactedUrl, APasswordInTheUserPartOrAParameterIsMasked) {
  EXPECT_EQ(RedactedUrl("postgresql://u:secret@h:5/db"), "postgresql://u:***@h:5/db");
  EXPECT_EQ(RedactedUrl("postgresql://u@h:5/db?password=secret&sslmode=require"),
            "postgresql://u@h:5/db?password=***&sslmode=require");
  EXPECT_EQ(RedactedUrl("postgresql://h/db?user=u&password=pw"),
            "postgresql://h/db?user=u&password=***");
  EXPECT_EQ(RedactedUrl("postgresql://u:a@h/db?password=b"),
            "postgresql://u:***@h/db?password=***");
  EXPECT_EQ(RedactedUrl("postgresql://h/db?application_name=x@y:z"),
            "postgresql://h/db?application_name=x@y:z");
}

// libpq reads the credentials up to the first '@' before the first '/': a
// '?' in the password is part of it (it was printed as given).
TEST(RedactedUrl, APasswordHoldingAQuestionMarkIsMasked) {
  EXPECT_EQ(RedactedUrl("postgresql://bob:pw?x@h/db"), "postgresql://bob:***@h/db");
  EXPECT_EQ(RedactedUrl("postgresql://u@h?application_name=a:b@c"),
            "postgresql://u@h?application_name=a:b@c");
}

// The NATS source's and the transports' URLs are printed through it too.
TEST(RedactedUrl, OtherSchemesAndSecretParametersAreMasked) {
  EXPECT_EQ(RedactedUrl("nats://alice:s3cret@127.0.0.1:4222"), "nats://alice:***@127.0.0.1:4222");
  EXPECT_EQ(RedactedUrl("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
  EXPECT_EQ(RedactedUrl("nats://s3cretToken@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
  EXPECT_EQ(RedactedUrl("nats://a:x@h1:4222,nats://b:y@h2:4222,nats://h3:4222"),
            "nats://a:***@h1:4222,nats://b:***@h2:4222,nats://h3:4222");
  // The user part before the parameters: masking a parameter first took
  // the '@' with it, and the password stayed.
  EXPECT_EQ(RedactedUrl("postgresql://u:pw?token=x@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(RedactedUrl("postgresql://u@h1,h2/db?password=x"),
            "postgresql://u@h1,h2/db?password=***");
  EXPECT_EQ(RedactedUrl("resend:?api_key=re_x&from=a@b.io"), "resend:?api_key=***&from=a@b.io");
  EXPECT_EQ(RedactedUrl("http://h/?Token=t&AUTH=a&client_secret=s&region=eu"),
            "http://h/?Token=***&AUTH=***&client_secret=***&region=eu");
}

// A store given in libpq's keyword form instead of a URL (a common slip):
// its password was printed as given.
TEST(RedactedUrl, ASecretInLibpqsKeywordFormIsMasked) {
  EXPECT_EQ(RedactedUrl("host=db user=wm password=s3cret dbname=wm"),
            "host=db user=wm password=*** dbname=wm");
  EXPECT_EQ(RedactedUrl("host=db password = 's3 c\\'ret' dbname=wm"),
            "host=db password = *** dbname=wm");
  EXPECT_EQ(RedactedUrl("sslpassword=x"), "sslpassword=***");
  EXPECT_EQ(RedactedUrl("host=db dbname=wm"), "host=db dbname=wm");
  EXPECT_EQ(RedactedUrl("3/1h1d"), "3/1h1d");
  // A password holding what looks like a URL or a query, or a space
  // escaped by a backslash (libpq takes it into the value).
  EXPECT_EQ(RedactedUrl("host=db password=s3?cret"), "host=db password=***");
  EXPECT_EQ(RedactedUrl("password=a://b@c dbname=wm"), "password=*** dbname=wm");
  EXPECT_EQ(RedactedUrl("host=db password=abc\\ def dbname=wm"), "host=db password=*** dbname=wm");
  // Not the keyword form: as before.
  EXPECT_EQ(RedactedUrl("sqlite:/data/wm.db"), "sqlite:/data/wm.db");
  EXPECT_EQ(RedactedUrl("sim:?latency_ms=5&token=t"), "sim:?latency_ms=5&token=***");
}

}  // namespace
}  // namespace waymark
