#ifndef YOLO7D_CVTHREADS_H
#define YOLO7D_CVTHREADS_H
#ifdef __cplusplus
extern "C" {
#endif
void yolo7d_cv_set_num_threads(int n);
int yolo7d_cv_get_num_threads(void);
#ifdef __cplusplus
}
#endif
#endif
