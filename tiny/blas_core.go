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
