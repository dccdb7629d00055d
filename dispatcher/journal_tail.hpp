#pragma once
// The last lines a unit wrote to the journal, for the log_tail of a failure report: the
// operator sees why a step failed without logging in to the machine.
#include <cstddef>
#include <optional>
#include <string>

namespace provisioner::dispatcher {

// Up to `max_lines` newest lines of `unit` (its own output, _SYSTEMD_UNIT=, and systemd's
// messages about it, UNIT=), oldest first, secrets masked (common/redact.hpp), cut to
// `max_bytes` from the front. `journal_dir` reads a directory instead of the local journal
// (tests). Empty when there is no journal.
std::string journal_tail(const std::string& unit, std::size_t max_lines = 40, std::size_t max_bytes = 8192,
                         const std::optional<std::string>& journal_dir = std::nullopt);

}  // namespace provisioner::dispatcher
