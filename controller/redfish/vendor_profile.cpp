#include "controller/redfish/vendor_profile.hpp"

#include <algorithm>
#include <cctype>

namespace provisioner::redfish {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::vector<VendorProfile> build_table() {
  std::vector<VendorProfile> t;
  {
    VendorProfile p;
    p.name = "generic";
    t.push_back(p);
  }
  {
    VendorProfile p;
    p.name = "dell-idrac";
    p.max_media = 1;  // CD + RemovableDisk together fails on iDRAC: go single-iso directly
    p.virtual_cd_via_oem_import = true;
    p.insert_retries_on_5xx = 3;
    t.push_back(p);
  }
  {
    VendorProfile p;
    p.name = "hpe-ilo";
    p.eject_with_empty_object = true;
    p.eject_before_insert_always = true;
    t.push_back(p);
  }
  {
    VendorProfile p;
    p.name = "supermicro";
    p.cd_boot_targets = {"UsbCd", "Cd"};
    p.always_send_enabled = true;
    p.insert_sends_inserted_fields = false;
    p.patch_sends_inserted = false;
    t.push_back(p);
  }
  {
    VendorProfile p;
    p.name = "lenovo-xcc";
    p.patch_sends_inserted = true;
    p.insert_sends_transfer_protocol = true;
    t.push_back(p);
  }
  {
    VendorProfile p;
    p.name = "openbmc";
    p.insert_sends_transfer_protocol = true;  // bmcweb guesses badly from some URLs
    p.eject_with_empty_object = true;
    t.push_back(p);
  }
  // Old firmware (iDRAC 7/8, iLO 4 before TLS 1.2 updates): the vendor's quirks, plus TLS
  // 1.0/1.1 and one connection per request, exactly how such BMCs were always talked to.
  for (const char* base : {"dell-idrac", "hpe-ilo"}) {
    VendorProfile p = *std::find_if(t.begin(), t.end(), [&](const VendorProfile& x) { return x.name == base; });
    p.name = std::string(base) + "-legacy";
    p.legacy_tls = true;
    p.keep_alive = false;
    t.push_back(p);
  }
  return t;
}

}  // namespace

const std::vector<VendorProfile>& vendor_profiles() {
  static const std::vector<VendorProfile> table = build_table();  // immutable after init
  return table;
}

std::optional<VendorProfile> profile_by_name(std::string_view name) {
  for (const auto& p : vendor_profiles())
    if (p.name == name) return p;
  return std::nullopt;
}

VendorProfile select_profile(const BmcIdentity& id) {
  // Matching rules, first hit wins: a needle in one of the identity strings.
  struct Rule {
    const char* needle;
    const char* profile;
  };
  static constexpr Rule kRules[] = {
      {"openbmc", "openbmc"},  // before vendor names: OpenBMC runs on many vendors' boards
      {"dell", "dell-idrac"},   {"idrac", "dell-idrac"},
      {"hpe", "hpe-ilo"},       {"hewlett", "hpe-ilo"},  {"ilo", "hpe-ilo"},
      {"supermicro", "supermicro"},
      {"lenovo", "lenovo-xcc"}, {"xclarity", "lenovo-xcc"}, {"xcc", "lenovo-xcc"},
  };
  // Firmware and product strings identify the BMC stack; manufacturer the hardware.
  const std::string fields[] = {lower(id.firmware), lower(id.product), lower(id.manager_model), lower(id.vendor),
                                lower(id.manufacturer), lower(id.model)};
  for (const auto& f : fields) {
    if (f.empty()) continue;
    for (const auto& r : kRules) {
      if (f.find(r.needle) == std::string::npos) continue;
      // "ilo" and "xcc" are short: require a word boundary so "Silo"/"Milo" do not match.
      auto pos = f.find(r.needle);
      bool boundary = pos == 0 || !std::isalpha(static_cast<unsigned char>(f[pos - 1]));
      if (!boundary) continue;
      return *profile_by_name(r.profile);
    }
  }
  return *profile_by_name("generic");
}

std::string effective_tls(std::string_view record_tls, std::string_view profile) {
  if (record_tls == "legacy" || record_tls == "modern") return std::string(record_tls);
  auto p = profile_by_name(profile);
  return p && p->legacy_tls ? "legacy" : "modern";
}

}  // namespace provisioner::redfish
