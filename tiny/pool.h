// pool.h: the CPU device's C worker pool, for the ops whose loop bodies are
// C (cpu_pool.go). One parallel-for is one cgo call: the calling thread and
// the pool's helper pthreads take items from a shared counter; a helper
// that has finished spins for spin_ns watching for the next loop before it
// sleeps on a condition variable. Goroutines in cgo calls would do the same
// job, but then every worker sits in a long cgo call at once, and the Go
// scheduler reacts (sysmon takes the Ps of threads in cgo calls and starts
// spinning threads to look for work) with a stream of thread wake-ups and
// migrations on a machine with as many cores as workers; here only the
// caller is in cgo and nothing in the Go runtime notices the helpers.
//
// Each cgo translation unit includes this file; the functions are static
// and identical, so a pool made in one unit runs loops from another.
#ifndef Y7_POOL_H
#define Y7_POOL_H
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*y7_item_fn)(const void *args, int worker, int item);

typedef struct {
	int helpers;
	pthread_t *threads;
	atomic_ulong gen;   // loop counter: a new value publishes fn, args, n
	atomic_int next;    // next item to take
	atomic_int pending; // helpers still in the current loop
	atomic_int sleepers;
	atomic_int closed;
	y7_item_fn fn;
	const void *args;
	int n;
	int active; // helpers 1..active take items of the current loop
	long spin_ns;
	pthread_mutex_t mu;
	pthread_cond_t cv;
} y7_pool;

static inline void y7_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static inline long y7_now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

// y7_pool_work takes items of the current loop until none are left.
static void y7_pool_work(y7_pool *p, int worker) {
	const y7_item_fn fn = p->fn;
	const void *args = p->args;
	const int n = p->n;
	for (;;) {
		const int i = atomic_fetch_add(&p->next, 1);
		if (i >= n) return;
		fn(args, worker, i);
	}
}

typedef struct {
	y7_pool *p;
	int worker;
} y7_helper_arg;

static void *y7_pool_helper(void *arg) {
	y7_helper_arg a = *(y7_helper_arg *)arg;
	free(arg);
	y7_pool *p = a.p;
	unsigned long seen = 0;
	for (;;) {
		unsigned long g = atomic_load(&p->gen);
		if (g == seen && !atomic_load(&p->closed)) {
			const long t0 = y7_now_ns();
			for (int i = 1;; i++) {
				g = atomic_load(&p->gen);
				if (g != seen || atomic_load(&p->closed)) break;
				y7_relax();
				if ((i & 255) == 0 && y7_now_ns() - t0 > p->spin_ns) break;
			}
		}
		if (g == seen && !atomic_load(&p->closed)) {
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->closed)) pthread_cond_wait(&p->cv, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
		}
		if (atomic_load(&p->closed)) return NULL;
		seen = g;
		if (a.worker <= p->active) y7_pool_work(p, a.worker);
		atomic_fetch_sub(&p->pending, 1);
	}
}

// y7_pool_new starts helpers threads; NULL if a thread could not start.
static y7_pool *y7_pool_new(int helpers, long spin_ns) {
	y7_pool *p = calloc(1, sizeof(y7_pool));
	if (!p) return NULL;
	p->threads = calloc(helpers > 0 ? helpers : 1, sizeof(pthread_t));
	if (!p->threads) {
		free(p);
		return NULL;
	}
	p->spin_ns = spin_ns;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	for (int w = 0; w < helpers; w++) {
		y7_helper_arg *a = malloc(sizeof(y7_helper_arg));
		if (a) {
			a->p = p;
			a->worker = w + 1;
		}
		if (!a || pthread_create(&p->threads[w], NULL, y7_pool_helper, a) != 0) {
			free(a);
			atomic_store(&p->closed, 1);
			pthread_mutex_lock(&p->mu);
			pthread_cond_broadcast(&p->cv);
			pthread_mutex_unlock(&p->mu);
			for (int j = 0; j < w; j++) pthread_join(p->threads[j], NULL);
			free(p->threads);
			free(p);
			return NULL;
		}
		p->helpers = w + 1;
	}
	return p;
}

// y7_pool_free stops and joins the helpers and frees the pool.
static void y7_pool_free(y7_pool *p) {
	if (!p) return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->closed, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int w = 0; w < p->helpers; w++) pthread_join(p->threads[w], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->threads);
	free(p);
}

// y7_pool_run calls fn(args, worker, i) for every i in [0, n) on the
// caller (worker 0) and the helpers (1..min(helpers, n-1), so worker < n),
// and returns when all are done. p NULL, or n <= 1, runs on the caller alone. One loop at a
// time per pool (the Go side holds CPU.mu).
static void y7_pool_run(y7_pool *p, int n, y7_item_fn fn, const void *args) {
	if (!p || p->helpers == 0 || n <= 1) {
		for (int i = 0; i < n; i++) fn(args, 0, i);
		return;
	}
	p->fn = fn;
	p->args = args;
	p->n = n;
	p->active = n - 1 < p->helpers ? n - 1 : p->helpers; // worker ids < n, as the scratch sizes assume
	atomic_store(&p->next, 0);
	atomic_store(&p->pending, p->helpers);
	atomic_fetch_add(&p->gen, 1); // publishes the loop
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	y7_pool_work(p, 0);
	// wait for the helpers; past spin_ns one of them is probably not
	// running (more threads than cores, or a busy machine): yield the core
	const long t0 = y7_now_ns();
	for (int i = 1; atomic_load(&p->pending) > 0; i++) {
		y7_relax();
		if ((i & 255) == 0 && y7_now_ns() - t0 > p->spin_ns) sched_yield();
	}
	p->fn = NULL;
	p->args = NULL;
}

// y7_queue is a list of deferred loops (CPU batches, cpu_batch.go): each
// op's fn, item count and a copy of its args, run in order by
// y7_queue_run, so a forward's ops take one cgo call instead of one each.
typedef struct {
	y7_item_fn fn;
	int items;
	size_t off; // of the args in the arena
} y7_op;

typedef struct {
	y7_op *ops;
	int n, cap;
	char *arena;
	size_t used, size;
} y7_queue;

static y7_queue *y7_queue_new(void) { return calloc(1, sizeof(y7_queue)); }

static void y7_queue_free(y7_queue *q) {
	if (!q) return;
	free(q->ops);
	free(q->arena);
	free(q);
}

// y7_queue_add appends a loop of items items of fn over a copy of the len
// bytes at args; 0 if memory ran out (the queue is then unchanged).
static int y7_queue_add(y7_queue *q, y7_item_fn fn, int items, const void *args, size_t len) {
	if (q->n == q->cap) {
		const int cap = q->cap ? 2 * q->cap : 64;
		y7_op *ops = realloc(q->ops, sizeof(y7_op) * cap);
		if (!ops) return 0;
		q->ops = ops, q->cap = cap;
	}
	const size_t off = (q->used + 63) & ~(size_t)63;
	if (off + len > q->size) {
		size_t size = q->size ? 2 * q->size : 16384;
		while (size < off + len) size *= 2;
		char *arena = realloc(q->arena, size);
		if (!arena) return 0;
		q->arena = arena, q->size = size;
	}
	memcpy(q->arena + off, args, len);
	q->used = off + len;
	q->ops[q->n++] = (y7_op){fn, items, off};
	return 1;
}

// y7_run_or_queue runs a loop of items items of fn on p now, or, with q
// non-NULL, queues it with a copy of the len bytes at args; 0 if the
// queue ran out of memory.
static int y7_run_or_queue(y7_pool *p, y7_queue *q, int items, y7_item_fn fn, const void *args, size_t len) {
	if (q) return y7_queue_add(q, fn, items, args, len);
	y7_pool_run(p, items, fn, args);
	return 1;
}

// y7_queue_run runs the queued loops in order on p and empties the queue.
static void y7_queue_run(y7_pool *p, y7_queue *q) {
	for (int i = 0; i < q->n; i++) y7_pool_run(p, q->ops[i].items, q->ops[i].fn, q->arena + q->ops[i].off);
	q->n = 0;
	q->used = 0;
}
#endif
