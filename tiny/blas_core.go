package tiny

/*
#cgo LDFLAGS: -lopenblas
char *openblas_get_corename(void);
*/
import "C"

import "os"

// BLASCore names the OpenBLAS kernels in use ("Cooperlake", "Haswell",
// "NeoverseN1", ...), with "set by OPENBLAS_CORETYPE" when the environment
// chose them rather than OpenBLAS's CPU detection. It matters: on an
// AVX-512 CPU the AVX2 ("Haswell") kernels can be 1.7x slower than the
// AVX-512 ones, and a systemd service does not inherit a shell's
// OPENBLAS_CORETYPE.
func BLASCore() string {
	core := C.GoString(C.openblas_get_corename())
	if v := os.Getenv("OPENBLAS_CORETYPE"); v != "" {
		return core + " (set by OPENBLAS_CORETYPE=" + v + ")"
	}
	return core
}

// CPUKernels names what runs the CPU device's inference convs on this
// processor: the package's own AVX-512 GEMM (with Winograd for the 3x3
// stride-1 convs) where the CPU has AVX-512, else OpenBLAS (BLASCore).
func CPUKernels() string {
	if hasPackedGEMM {
		return "AVX-512 packed GEMM, 3x3 taps + Winograd, batched (OpenBLAS " + BLASCore() + " for training)"
	}
	return "OpenBLAS " + BLASCore()
}
