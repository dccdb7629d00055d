#pragma once
// Vendor quirks as data: each profile is one row of a table, so the client asks
// "does this BMC want X?" instead of testing vendor names all over the code.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace provisioner::redfish {

struct VendorProfile {
  std::string name;  // generic | dell-idrac | hpe-ilo | supermicro | lenovo-xcc | openbmc |
                     // dell-idrac-legacy | hpe-ilo-legacy
  // Boot: preferred override target for virtual CD, tried in order against the allowable
  // values (Supermicro boots virtual media as UsbCd).
  std::vector<std::string> cd_boot_targets = {"Cd"};
  bool always_send_enabled = false;       // Supermicro rejects Boot PATCHes without Enabled
  bool once_unreliable = false;           // known to ignore Once: use Continuous, clear at cleanup
  // Dell iDRAC: the standard "Cd" override may boot a physical drive. When the Manager offers
  // the OEM ImportSystemConfiguration action, set the next boot to the virtual CD through it.
  bool virtual_cd_via_oem_import = false;
  // Virtual media.
  bool eject_with_empty_object = false;   // POST EjectMedia with {} first (iLO wants a JSON body)
  bool eject_before_insert_always = false;  // iLO refuses InsertMedia on a slot not ejected first
  int max_media = 0;                      // 0 = unknown (try); 1 = refuses a second medium (Dell)
  bool insert_sends_inserted_fields = false;  // never for Supermicro X11/X12 (they reject them)
  bool patch_sends_inserted = true;       // Lenovo XCC needs Inserted in the PATCH fallback
  bool insert_sends_transfer_protocol = false;  // send TransferProtocolType up front
  int insert_retries_on_5xx = 3;          // Dell may still be ejecting: 3 x 3 s
  // Power.
  bool prefer_graceful_restart = false;   // try GracefulRestart/Shutdown before forcing
  // Transport. keep_alive false: `Connection: close` on every request (BMCs that wedge on
  // long keep-alive connections). legacy_tls: TLS 1.0/1.1 and SECLEVEL=0 ciphers allowed
  // (old firmware); such a profile is never chosen automatically (the identity is only
  // readable once TLS is up): a server record names it in bmc.profile.
  bool keep_alive = true;
  bool legacy_tls = false;
};

// The table, in a fixed order; "generic" first.
const std::vector<VendorProfile>& vendor_profiles();

std::optional<VendorProfile> profile_by_name(std::string_view name);

// What the BMC told us about itself: ServiceRoot.Vendor/Product, System.Manufacturer/Model,
// Manager.Model/FirmwareVersion. Falls back to generic.
struct BmcIdentity {
  std::string vendor, product, manufacturer, model, manager_model, firmware;
};
VendorProfile select_profile(const BmcIdentity& id);

// The TLS policy for a server: its record's bmc.tls ("modern" | "legacy"; "" = unset) wins,
// then a forced profile's legacy_tls; otherwise "modern" (TLS >= 1.2, default ciphers).
std::string effective_tls(std::string_view record_tls, std::string_view profile);

}  // namespace provisioner::redfish
