// Redfish pieces without a network: vendor profile selection, JSON/HTTP helpers, backoff,
// Retry-After, the circuit breaker on a fake clock, endpoint parsing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "controller/redfish/http_transport.hpp"
#include "controller/redfish/redfish_client.hpp"
#include "controller/redfish/redfish_parse.hpp"
#include "controller/redfish/resilience.hpp"
#include "controller/redfish/vendor_profile.hpp"

namespace provisioner::redfish {
namespace {

using nlohmann::json;

class FakeClock final : public Clock {
 public:
  std::int64_t now_ms() const override { return now; }
  std::int64_t now = 1'700'000'000'000;
};

TEST(VendorProfile, SelectedFromIdentity) {
  EXPECT_EQ(select_profile({"Dell", "Integrated Dell Remote Access Controller", "Dell Inc.", "PowerEdge R650", "", ""}).name,
            "dell-idrac");
  EXPECT_EQ(select_profile({"HPE", "ProLiant DL360 Gen10", "HPE", "ProLiant", "iLO 5", "iLO 5 v2.72"}).name, "hpe-ilo");
  EXPECT_EQ(select_profile({"", "", "Supermicro", "Super Server", "", "01.73.12"}).name, "supermicro");
  EXPECT_EQ(select_profile({"Lenovo", "", "Lenovo", "ThinkSystem SR650", "", ""}).name, "lenovo-xcc");
  // OpenBMC on a vendor's board: the BMC stack decides the quirks.
  EXPECT_EQ(select_profile({"", "", "Supermicro", "X12", "", "OpenBMC 2.14.0-dev"}).name, "openbmc");
  EXPECT_EQ(select_profile({"Mock", "", "MockCorp", "Silo 3000", "", ""}).name, "generic") << "no 'ilo' inside words";
  EXPECT_EQ(select_profile({}).name, "generic");
}

TEST(VendorProfile, TableHoldsTheQuirks) {
  EXPECT_EQ(profile_by_name("dell-idrac")->max_media, 1);
  EXPECT_TRUE(profile_by_name("hpe-ilo")->eject_before_insert_always);
  EXPECT_TRUE(profile_by_name("hpe-ilo")->eject_with_empty_object);
  EXPECT_EQ(profile_by_name("supermicro")->cd_boot_targets.front(), "UsbCd");
  EXPECT_TRUE(profile_by_name("supermicro")->always_send_enabled);
  EXPECT_FALSE(profile_by_name("supermicro")->insert_sends_inserted_fields);
  EXPECT_TRUE(profile_by_name("lenovo-xcc")->patch_sends_inserted);
  EXPECT_FALSE(profile_by_name("nope"));
  EXPECT_EQ(vendor_profiles().front().name, "generic");
  EXPECT_EQ(vendor_profiles().size(), 8u);
}

TEST(VendorProfile, LegacyTlsIsExplicitOnly) {
  for (const auto& p : vendor_profiles()) {
    bool legacy = p.name.ends_with("-legacy");
    EXPECT_EQ(p.legacy_tls, legacy) << p.name;
    EXPECT_EQ(p.keep_alive, !legacy) << p.name;
  }
  EXPECT_EQ(profile_by_name("dell-idrac-legacy")->max_media, 1) << "keeps the vendor's quirks";
  EXPECT_TRUE(profile_by_name("hpe-ilo-legacy")->eject_before_insert_always);
  // Never chosen from the identity: a legacy BMC is only reached once legacy TLS is allowed.
  EXPECT_EQ(select_profile({"HPE", "", "HPE", "ProLiant DL380 Gen8", "iLO 4", "iLO 4 v1.20"}).name, "hpe-ilo");
  EXPECT_EQ(effective_tls("", "auto"), "modern");
  EXPECT_EQ(effective_tls("", "hpe-ilo"), "modern");
  EXPECT_EQ(effective_tls("", "hpe-ilo-legacy"), "legacy");
  EXPECT_EQ(effective_tls("modern", "hpe-ilo-legacy"), "modern") << "the record wins";
  EXPECT_EQ(effective_tls("legacy", "generic"), "legacy");
}

TEST(RedfishParse, LinksMembersAndPaths) {
  json j = {{"Systems", {{"@odata.id", "/redfish/v1/Systems"}}},
            {"Members", {{{"@odata.id", "https://10.0.0.5/redfish/v1/Systems/1"}}, {{"@odata.id", "/redfish/v1/Systems/2"}}}}};
  EXPECT_EQ(odata_link(j, "Systems"), "/redfish/v1/Systems");
  EXPECT_EQ(odata_link(j, "Managers"), "");
  EXPECT_EQ(collection_members(j), (std::vector<std::string>{"/redfish/v1/Systems/1", "/redfish/v1/Systems/2"}));
  EXPECT_EQ(path_of("https://h:443/redfish/v1/x"), "/redfish/v1/x");
  EXPECT_EQ(path_of("/redfish/v1/x"), "/redfish/v1/x");
}

TEST(RedfishParse, ErrorMessagesAreExtractedAndShort) {
  std::string body = R"({"error":{"code":"Base.1.8.GeneralError","message":"x",
    "@Message.ExtendedInfo":[{"MessageId":"IDRAC.2.8.SYS518","Message":"Job in progress"}]}})";
  EXPECT_EQ(bmc_message(body), "IDRAC.2.8.SYS518: Job in progress");
  EXPECT_EQ(bmc_message(R"({"error":{"code":"C","message":"M"}})"), "C: M");
  EXPECT_EQ(bmc_message("<html>oops</html>"), "<html>oops</html>");
  EXPECT_LE(bmc_message(std::string(5000, 'a')).size(), 210u);
  EXPECT_EQ(bmc_message(R"({"error":{"message":"cannot fetch http://u:secret@h/x.iso"}})").find("secret"),
            std::string::npos);
}

TEST(RedfishParse, NotReadyAnswers) {
  EXPECT_TRUE(is_not_ready_answer(400, R"({"error":{"@Message.ExtendedInfo":[{"MessageId":"IDRAC.2.8.SYS518"}]}})"));
  EXPECT_TRUE(is_not_ready_answer(400, R"({"error":{"code":"iLO.2.14.InvalidOperationForSystemState"}})"));
  EXPECT_TRUE(is_not_ready_answer(503, "ServiceTemporarilyUnavailable"));
  EXPECT_FALSE(is_not_ready_answer(400, R"({"error":{"code":"Base.1.8.PropertyValueNotInList"}})"));
  EXPECT_FALSE(is_not_ready_answer(200, "SYS518"));
}

TEST(RedfishParse, EtagsAndUrls) {
  EXPECT_TRUE(is_weak_etag("W/\"12\""));
  EXPECT_EQ(strong_etag("W/\"12\""), "\"12\"");
  EXPECT_EQ(strong_etag("\"12\""), "\"12\"");
  EXPECT_EQ(redact_url("http://user:pw@10.0.0.1/x.iso and https://a@b/c"), "http://10.0.0.1/x.iso and https://b/c");
  EXPECT_EQ(url_scheme_upper("https://h/x.iso"), "HTTPS");
  EXPECT_EQ(url_scheme_upper("http://h/x.iso"), "HTTP");
}

TEST(RedfishParse, SlotStateAndKinds) {
  json j = {{"Id", "CD1"},
            {"MediaTypes", {"CD", "DVD"}},
            {"Image", "http://h/a.iso"},
            {"Inserted", true},
            {"Actions", {{"#VirtualMedia.InsertMedia", {{"target", "/vm/CD1/Actions/VirtualMedia.InsertMedia"}}}}}};
  auto s = parse_slot("/vm/CD1", j, "\"3\"", true);
  EXPECT_TRUE(s.holds_media());
  EXPECT_TRUE(s.holds("http://h/a.iso"));
  EXPECT_FALSE(s.holds("http://h/b.iso"));
  EXPECT_TRUE(s.accepts(MediaKind::cd));
  EXPECT_FALSE(s.accepts(MediaKind::usb));
  EXPECT_EQ(s.insert_target, "/vm/CD1/Actions/VirtualMedia.InsertMedia");
  EXPECT_EQ(s.eject_target, "");
  EXPECT_EQ(s.etag, "\"3\"");
  // NotConnected means empty, whatever Image says.
  j["ConnectedVia"] = "NotConnected";
  auto e = parse_slot("/vm/CD1", j, "", false);
  EXPECT_FALSE(e.holds_media());
  EXPECT_TRUE(e.shows_anything());
  // Image reported as a file name only.
  json k = {{"Id", "RemovableDisk"}, {"MediaTypes", {"USBStick"}}, {"Image", "a.iso"}};
  auto u = parse_slot("/vm/R", k, "", false);
  EXPECT_TRUE(u.holds("http://h/dir/a.iso"));
  EXPECT_TRUE(u.accepts(MediaKind::usb));
  // No MediaTypes: the name decides.
  auto n = parse_slot("/vm/Floppy1", json{{"Id", "Floppy1"}}, "", false);
  EXPECT_TRUE(n.accepts(MediaKind::usb));
  EXPECT_FALSE(n.holds_media());
}

TEST(RedfishParse, AllowableResetTypes) {
  json sys = {{"Actions", {{"#ComputerSystem.Reset", {{"ResetType@Redfish.AllowableValues", {"On", "ForceOff"}}}}}}};
  EXPECT_EQ(allowable_reset_types(sys), (std::vector<std::string>{"On", "ForceOff"}));
  EXPECT_TRUE(allowable_reset_types(json::object()).empty());
}

TEST(Resilience, BackoffDoublesUpToTheCap) {
  EXPECT_EQ(backoff_delay_ms(0, 1000, 3000), 1000);
  EXPECT_EQ(backoff_delay_ms(1, 1000, 3000), 2000);
  EXPECT_EQ(backoff_delay_ms(2, 1000, 3000), 3000);
  EXPECT_EQ(backoff_delay_ms(30, 1000, 3000), 3000);
}

TEST(Resilience, RetryAfterSecondsAndDates) {
  EXPECT_EQ(parse_retry_after_ms("5", 0, 60000), 5000);
  EXPECT_EQ(parse_retry_after_ms(" 120 ", 0, 60000), 60000) << "capped";
  EXPECT_FALSE(parse_retry_after_ms("", 0, 60000));
  EXPECT_FALSE(parse_retry_after_ms("soon", 0, 60000));
  // Sun, 06 Nov 1994 08:49:37 GMT = 784111777 s
  EXPECT_EQ(parse_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111770000, 60000), 7000);
  EXPECT_EQ(parse_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111790000, 60000), 0) << "past";
}

TEST(Resilience, CircuitBreakerOpensHalfOpensAndCloses) {
  FakeClock clock;
  CircuitBreaker b(clock, 3, 10'000);
  EXPECT_TRUE(b.allow());
  b.record_failure();
  b.record_failure();
  EXPECT_TRUE(b.allow());
  b.record_success();  // success resets the count
  b.record_failure();
  b.record_failure();
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
  b.record_failure();
  EXPECT_EQ(b.state(), CircuitBreaker::State::open);
  EXPECT_FALSE(b.allow());
  EXPECT_EQ(b.retry_in_ms(), 10'000);
  clock.now += 9'999;
  EXPECT_FALSE(b.allow());
  clock.now += 1;
  EXPECT_TRUE(b.allow()) << "one trial";
  EXPECT_FALSE(b.allow()) << "only one trial at a time";
  b.record_failure();  // trial failed: open again
  EXPECT_EQ(b.state(), CircuitBreaker::State::open);
  clock.now += 10'000;
  EXPECT_TRUE(b.allow());
  b.record_success();
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
  EXPECT_TRUE(b.allow());
}

TEST(Resilience, RegistryKeepsOneEntryPerBmc) {
  FakeClock clock;
  BmcRegistry r(clock, 3, 1000);
  EXPECT_EQ(&r.get("a"), &r.get("a"));
  EXPECT_NE(&r.get("a"), &r.get("b"));
}

TEST(Transport, EndpointParsing) {
  Endpoint e;
  std::string err;
  ASSERT_TRUE(parse_endpoint("10.0.0.5", e, err));
  EXPECT_TRUE(e.https);
  EXPECT_EQ(e.port, 443);
  EXPECT_EQ(e.host_header(), "10.0.0.5");
  ASSERT_TRUE(parse_endpoint("http://127.0.0.1:9000/", e, err));
  EXPECT_FALSE(e.https);
  EXPECT_EQ(e.port, 9000);
  EXPECT_EQ(e.host_header(), "127.0.0.1:9000");
  ASSERT_TRUE(parse_endpoint("https://[fd00::5]:8443", e, err));
  EXPECT_EQ(e.host, "fd00::5");
  EXPECT_EQ(e.host_header(), "[fd00::5]:8443");
  EXPECT_FALSE(parse_endpoint("ftp://h", e, err));
  EXPECT_FALSE(parse_endpoint("https://user:pw@h", e, err));
  EXPECT_EQ(err.find("pw"), std::string::npos);
  EXPECT_FALSE(parse_endpoint("h:99999", e, err));
}

TEST(Transport, Ipv6EndpointsAndUrls) {
  Endpoint e;
  std::string err;
  ASSERT_TRUE(parse_endpoint("https://[fd00::10]", e, err)) << err;
  EXPECT_EQ(e.host, "fd00::10");
  EXPECT_EQ(e.port, 443);
  EXPECT_EQ(e.host_header(), "[fd00::10]");
  EXPECT_EQ(e.url("/redfish/v1/"), "https://[fd00::10]/redfish/v1/");
  EXPECT_FALSE(e.loopback());
  ASSERT_TRUE(parse_endpoint("[::1]:8443", e, err)) << err;
  EXPECT_TRUE(e.https);
  EXPECT_EQ(e.port, 8443);
  EXPECT_EQ(e.url("/x"), "https://[::1]:8443/x");
  EXPECT_TRUE(e.loopback());
  ASSERT_TRUE(parse_endpoint("fd00::10", e, err)) << "bare IPv6 literal, default port";
  EXPECT_EQ(e.host, "fd00::10");
  EXPECT_EQ(e.host_header(), "[fd00::10]");
  ASSERT_TRUE(parse_endpoint("http://[::1]:9000/", e, err));
  EXPECT_EQ(e.host_header(), "[::1]:9000");
  EXPECT_FALSE(parse_endpoint("https://[fd00::10", e, err));
  EXPECT_FALSE(parse_endpoint("https://[fd00::10]8443", e, err));
  EXPECT_FALSE(parse_endpoint("https://[fd00::10]:", e, err));
  EXPECT_FALSE(parse_endpoint("https://[not-an-ip]:443", e, err));
  ASSERT_TRUE(parse_endpoint("127.0.0.2:8000", e, err));
  EXPECT_TRUE(e.loopback());
  ASSERT_TRUE(parse_endpoint("10.0.0.5", e, err));
  EXPECT_FALSE(e.loopback());
}

TEST(Failure, CodesRoundTripThroughErrors) {
  Error e = make_error(ErrorKind::conflict, "x", {FieldError{"/redfish/failure", "second_medium_refused"}});
  EXPECT_EQ(failure_code(e), FailureCode::second_medium_refused);
  EXPECT_EQ(failure_code(make_error(ErrorKind::internal, "y")), FailureCode::none);
}

}  // namespace
}  // namespace provisioner::redfish
