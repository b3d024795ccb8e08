#include <opencv2/core.hpp>
#include "cvthreads.h"

void yolo7d_cv_set_num_threads(int n) { cv::setNumThreads(n); }
int yolo7d_cv_get_num_threads(void) { return cv::getNumThreads(); }
