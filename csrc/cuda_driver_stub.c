/* Link-time stand-in for the NVIDIA driver's libcuda.so.1, as the CUDA toolkit's lib64/stubs/libcuda.so is (this
 * machine's toolkit has none): it gives the CUTLASS library a DT_NEEDED entry for libcuda.so.1 and the two driver
 * calls CUTLASS's workspace fill makes. Never loaded: at run time the driver's own libcuda.so.1 is. */
#include <stddef.h>

int cuGetErrorString(int error, const char** text) { (void)error; (void)text; return 999; }
int cuMemsetD32Async(unsigned long long dst, unsigned int value, size_t count, void* stream) {
  (void)dst; (void)value; (void)count; (void)stream;
  return 999;
}
