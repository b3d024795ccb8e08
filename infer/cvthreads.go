package infer

/*
#cgo !windows pkg-config: opencv4
#cgo CXXFLAGS: --std=c++11
#include "cvthreads.h"
*/
import "C"

// setCVThreads sets the size of OpenCV's thread pool. OpenCV has one pool
// per process, so this affects every OpenCV user in the process; n <= 0
// leaves OpenCV's default (all cores).
func setCVThreads(n int) {
	if n > 0 {
		C.yolo7d_cv_set_num_threads(C.int(n))
	}
}

// cvThreads reports the size of OpenCV's thread pool.
func cvThreads() int { return int(C.yolo7d_cv_get_num_threads()) }
