#include "engine/base/large_stack.h"

#include <pthread.h>

#include <exception>

namespace waymark {

namespace {

struct Call {
  const std::function<void()>* f;
  std::exception_ptr thrown;  // what `f` threw, thrown again on the caller's thread
};

void* Run(void* arg) {
  auto* call = static_cast<Call*>(arg);
  try {
    (*call->f)();
  } catch (...) {
    call->thrown = std::current_exception();
  }
  return nullptr;
}

}  // namespace

void RunOnLargeStack(const std::function<void()>& f) {
  constexpr size_t kStackBytes = size_t(1) << 30;
  pthread_attr_t attr;
  pthread_t thread;
  Call call{&f, nullptr};
  bool made = pthread_attr_init(&attr) == 0;
  if (made) {
    made = pthread_attr_setstacksize(&attr, kStackBytes) == 0 &&
           pthread_create(&thread, &attr, Run, &call) == 0;
    pthread_attr_destroy(&attr);
  }
  if (!made) {
    f();
    return;
  }
  pthread_join(thread, nullptr);
  if (call.thrown) std::rethrow_exception(call.thrown);
}

}  // namespace waymark
