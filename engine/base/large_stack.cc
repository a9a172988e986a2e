#include "engine/base/large_stack.h"

#include <pthread.h>

namespace waymark {

namespace {

void* Run(void* arg) {
  (*static_cast<const std::function<void()>*>(arg))();
  return nullptr;
}

}  // namespace

void RunOnLargeStack(const std::function<void()>& f) {
  constexpr size_t kStackBytes = size_t(1) << 30;
  pthread_attr_t attr;
  pthread_t thread;
  bool made = pthread_attr_init(&attr) == 0;
  if (made) {
    made = pthread_attr_setstacksize(&attr, kStackBytes) == 0 &&
           pthread_create(&thread, &attr, Run, const_cast<std::function<void()>*>(&f)) == 0;
    pthread_attr_destroy(&attr);
  }
  if (!made) {
    f();
    return;
  }
  pthread_join(thread, nullptr);
}

}  // namespace waymark
