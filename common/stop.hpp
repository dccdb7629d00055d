#pragma once
// Cooperative stop for long waits. The controller's shutdown and a job's cancel are
// std::stop_tokens: a wait given one ends as soon as it is requested, and code that would
// start something new (an HTTP request, the next retry) looks at it first. The same token can
// be handed to a transport later, to abort a request in flight (std::stop_callback).
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace provisioner {

// Sleeps `duration` unless `stop` is requested first. false when it was (also when it already
// was on entry, without sleeping).
inline bool sleep_unless_stopped(std::chrono::milliseconds duration, const std::stop_token& stop) {
  if (stop.stop_requested()) return false;
  if (duration.count() <= 0) return true;
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  cv.wait_for(lock, stop, duration, [] { return false; });
  return !stop.stop_requested();
}

// A token stopped as soon as either of two others is (e.g. shutdown or this job's cancel).
// A default-constructed token on either side simply never stops it. Not copyable or
// movable: the callbacks point at its source.
class StopEither {
 public:
  StopEither(const std::stop_token& a, const std::stop_token& b) : a_(a, Forward{&source_}), b_(b, Forward{&source_}) {}
  std::stop_token token() const { return source_.get_token(); }
  bool stop_requested() const { return source_.stop_requested(); }

 private:
  struct Forward {
    std::stop_source* source;
    void operator()() const noexcept { source->request_stop(); }
  };
  std::stop_source source_;  // before the callbacks: they may fire in their constructors
  std::stop_callback<Forward> a_, b_;
};

}  // namespace provisioner
