// im2col.h: the im2col loop, shared by the conv paths of cpu_blas.go and
// cpu_gemm.go (each cgo file is its own C translation unit).
#ifndef Y7_IM2COL_H
#define Y7_IM2COL_H
#include <stddef.h>
#include <string.h>
#include "vec.h"

// im2col fills the rows of input channels [c0, c1) of the im2col matrix of
// one image (x: C x h x w) for the output positions [p0, p1) of an output
// of width wo (position p is row p/wo, column p%wo; a span may start and
// end inside a row): col row ((c-c0)*k+ky)*k+kx (row stride ld), column
// p-p0 holds x(c, oy*s-pad+ky, ox*s-pad+kx), 0 outside the input.
Y7_VEC static void im2col(float *col, size_t ld, const float *x, int h, int w, int k, int s, int pad,
		int c0, int c1, int p0, int p1, int wo) {
	const int oyFirst = p0 / wo, oyLast = (p1 - 1) / wo;
	for (int c = c0; c < c1; c++) {
		const float *plane = x + (size_t)c * h * w;
		for (int ky = 0; ky < k; ky++) {
			for (int kx = 0; kx < k; kx++) {
				float *row = col + (size_t)(((c - c0) * k + ky) * k + kx) * ld;
				// output columns [lo, hi) read inside the input row
				int lo = pad > kx ? (pad - kx + s - 1) / s : 0;
				int hi = w - 1 + pad - kx >= 0 ? (w - 1 + pad - kx) / s + 1 : 0;
				if (lo > wo) lo = wo;
				if (hi > wo) hi = wo;
				if (hi < lo) hi = lo;
				for (int oy = oyFirst; oy <= oyLast; oy++) {
					const int base = oy * wo;
					const int xa = p0 > base ? p0 - base : 0;
					const int xb = p1 - base < wo ? p1 - base : wo;
					float *dst = row + (base + xa - p0);
					const int iy = oy * s - pad + ky;
					if (iy < 0 || iy >= h) {
						memset(dst, 0, sizeof(float) * (xb - xa));
						continue;
					}
					const int l = lo > xa ? (lo < xb ? lo : xb) : xa;
					const int r = hi < xb ? (hi > l ? hi : l) : xb;
					for (int ox = xa; ox < l; ox++) dst[ox - xa] = 0;
					for (int ox = r; ox < xb; ox++) dst[ox - xa] = 0;
					const int n = r - l;
					if (n <= 0) continue;
					// first input column read: l*s-pad+kx >= 0
					const float *src = plane + (size_t)iy * w + (l * s - pad + kx);
					float *d = dst + (l - xa);
					if (s == 1) {
						memcpy(d, src, sizeof(float) * n);
					} else if (s == 2) {
						for (int j = 0; j < n; j++) d[j] = src[2 * j];
					} else {
						for (int j = 0; j < n; j++) d[j] = src[s * j];
					}
				}
			}
		}
	}
}
#endif
