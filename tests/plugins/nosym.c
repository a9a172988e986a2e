/* A shared library that is not a plugin: no descriptor. Its constructor
 * writes $WM_TEST_MARKER like the probe's, to show it never runs. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((constructor)) static void nosym_loaded(void) {
  const char* marker = getenv("WM_TEST_MARKER");
  if (marker) {
    FILE* f = fopen(marker, "a");
    if (f) {
      fputs("nosym\n", f);
      fclose(f);
    }
  }
}

__attribute__((visibility("default"))) int waymark_something_else(void) {
  return 1;
}
