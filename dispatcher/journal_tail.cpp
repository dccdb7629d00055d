#include "dispatcher/journal_tail.hpp"

#include <systemd/sd-journal.h>

#include <deque>

#include "common/redact.hpp"

namespace provisioner::dispatcher {

namespace {

// Journal messages are bytes; the webhook body is JSON and must be valid UTF-8. Invalid
// sequences become '?', so a binary blob in a log cannot make the report unsendable.
std::string valid_utf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    auto c = static_cast<unsigned char>(in[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= in.size();
    for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    if (ok && (c >= 0x20 || c == '\n' || c == '\t')) {
      out.append(in.substr(i, n));
      i += n;
    } else {
      out.push_back('?');
      ++i;
    }
  }
  return out;
}

}  // namespace

std::string journal_tail(const std::string& unit, std::size_t max_lines, std::size_t max_bytes,
                         const std::optional<std::string>& journal_dir) {
  sd_journal* j = nullptr;
  int r = journal_dir ? sd_journal_open_directory(&j, journal_dir->c_str(), 0)
                      : sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
  if (r < 0) return {};
  std::string own = "_SYSTEMD_UNIT=" + unit;
  std::string about = "UNIT=" + unit;
  sd_journal_add_match(j, own.data(), own.size());
  sd_journal_add_disjunction(j);
  sd_journal_add_match(j, about.data(), about.size());
  std::deque<std::string> lines;
  sd_journal_seek_tail(j);
  while (lines.size() < max_lines && sd_journal_previous(j) > 0) {
    const void* data = nullptr;
    size_t len = 0;
    if (sd_journal_get_data(j, "MESSAGE", &data, &len) < 0) continue;
    std::string_view field(static_cast<const char*>(data), len);
    field.remove_prefix(sizeof("MESSAGE=") - 1);
    lines.emplace_front(field);
  }
  sd_journal_close(j);
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  out = redact_text(out);
  if (out.size() > max_bytes) {
    out = out.substr(out.size() - max_bytes);
    // Start at a character boundary, not inside a multi-byte sequence.
    std::size_t skip = 0;
    while (skip < out.size() && (static_cast<unsigned char>(out[skip]) & 0xC0) == 0x80) ++skip;
    out.erase(0, skip);
  }
  return valid_utf8(out);
}

}  // namespace provisioner::dispatcher
