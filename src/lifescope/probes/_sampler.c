/* lifescope.probes._sampler: the GIL probe's read loop, in C, with the GIL released.
 *
 * Why this exists: a GIL read is one process_vm_readv (~5 µs), but every wake-up of a Python
 * sampling loop costs ~30 µs of CPU on the VMs we measured (the interpreter re-taking its
 * own GIL, the eval loop, float arithmetic, objects), so 2,000 reads a second cost 7-12 % of
 * a core. Here one call sleeps on absolute CLOCK_MONOTONIC deadlines and reads the same
 * prepared iovecs for a whole batch (up to ~100 ms), and returns only the reads whose bytes
 * differ from the read before: on a busy server that is a handful of records per batch
 * instead of 200 Python wake-ups.
 *
 * The pacing is exactly `gil.py`'s pure-Python fallback (`pace_python` in `gil_batch.py`),
 * which is the reference: full period while the GIL is held or its switch counter moves,
 * the idle period after `idle_after` quiet seconds, late reads counted when a gap exceeds two
 * steps, the schedule reset when it falls 50 steps behind. The batch also ends early when a
 * locked read names a holder the caller could not resolve from its cache (`known`) or the
 * thread-state counter moved, so the caller resolves new holders as promptly as a read-by-read
 * loop would (thread states are freed and re-used under churn; see gil_reader.py).
 *
 * Nothing here interprets CPython structures beyond four offsets the caller passes in.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_REGIONS 8
#define MAX_SPAN 256
#define MAX_KNOWN 64

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double deadline) {
    struct timespec ts;
    ts.tv_sec = (time_t)deadline;
    ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int32_t get_i32(const unsigned char *buf, Py_ssize_t off) {
    int32_t v;
    memcpy(&v, buf + off, sizeof v);
    return v;
}

static uint64_t get_u64(const unsigned char *buf, Py_ssize_t off) {
    uint64_t v;
    memcpy(&v, buf + off, sizeof v);
    return v;
}

/* ---------------------------------------------------------------- the stack walker
 *
 * Why here: py-spy costs ~0.45 ms of CPU a sample on the bench target (it reads every frame and
 * code object with a system call of its own, in a process woken on its own timer); lifescope
 * already wakes 2,000 times a second to read the GIL. Walking each thread's frame chain on
 * every 20th of those wake-ups, and naming code objects once in Python (cached by address),
 * costs a few system calls per thread and no wake-up of its own.
 *
 * What is read (3.11+, frames in each thread's data stack; 3.8-3.10 heap frame objects through
 * tstate->frame and f_back, with an int f_lasti): interp->threads.head, then per
 * thread state its next pointer, native thread id and current frame (3.11/3.12 through
 * tstate->cframe->current_frame, 3.13 tstate->current_frame), then frame->previous until NULL.
 * Per frame we keep (code address, code-unit index of its instruction pointer); 3.12+ C-stack
 * shim frames (owner >= owner_cstack: 3.14 numbers FRAME_OWNED_BY_INTERPRETER 3 and _CSTACK 4,
 * 3.12/3.13 _CSTACK 3) are skipped; 3.14+ tags the low bits of f_executable, masked off. Frames are read a page at a time: a frame's
 * callers usually sit just below it in the same data-stack chunk, so one read serves several.
 *
 * The target runs on while we read, so every pointer is checked (non-null, aligned, user
 * space), the chain is bounded and checked for cycles, and a thread whose chain does not hold
 * together is reported with a status instead of frames; nothing raises.
 */
#define MAX_DEPTH_CAP 512
#define MAX_THREADS_CAP 4096
#define MAX_USER_ADDR ((uint64_t)1 << 47)
#define BLOCK 4096

enum { ST_OK = 0, ST_TORN = 1, ST_DEEP = 2, ST_EMPTY = 3 };

struct walk_layout {
    uint64_t threads_head; /* address of interp->threads.head (a PyThreadState *) */
    Py_ssize_t ts_next, ts_tid, ts_frame[2];
    int n_path; /* 1: tstate->current_frame; 2: tstate->cframe->current_frame */
    Py_ssize_t f_code, f_prev, f_instr, f_owner, f_read;
    int owner_cstack; /* -1: no shim frames (3.11) */
    Py_ssize_t code_units; /* offset of the first code unit in a code object */
    int max_depth, max_threads;
    int instr_is_lasti; /* 3.8-3.10: f_instr is an int f_lasti, not a pointer into the code */
    int batched;        /* read level by level, all threads per system call (walk_batched) */
    uint64_t code_tags; /* 3.14+: f_executable is a tagged _PyStackRef; these low bits are tags */
};

static int parse_walk_layout(PyObject *obj, struct walk_layout *w) {
    PyObject *path;
    unsigned long long head;
    unsigned long long tags = 0;
    w->instr_is_lasti = 0;
    w->batched = 0;
    if (!PyArg_ParseTuple(obj, "KnnOnnnnnnii|iiK", &head, &w->ts_next, &w->ts_tid, &path,
                          &w->f_code, &w->f_prev, &w->f_instr, &w->f_owner, &w->owner_cstack,
                          &w->code_units, &w->max_depth, &w->max_threads, &w->instr_is_lasti,
                          &w->batched, &tags)) {
        return -1;
    }
    w->code_tags = tags;
    w->threads_head = head;
    w->ts_frame[1] = 0;
    if (!PyArg_ParseTuple(path, "n|n", &w->ts_frame[0], &w->ts_frame[1])) return -1;
    w->n_path = (int)PyTuple_GET_SIZE(path);
    Py_ssize_t top = w->f_code;
    if (w->f_prev > top) top = w->f_prev;
    if (w->f_instr > top) top = w->f_instr;
    w->f_read = (w->f_owner > top ? w->f_owner + 1 : top + 8);
    if (w->max_depth < 1 || w->max_depth > MAX_DEPTH_CAP || w->max_threads < 1 ||
        w->max_threads > MAX_THREADS_CAP || w->f_read > 512 || w->ts_next < 0 || w->ts_tid < 0 ||
        w->ts_frame[0] < 0 || w->ts_frame[1] < 0 || w->ts_next > 4096 || w->ts_tid > 4096 ||
        w->ts_frame[0] > 4096 || w->ts_frame[1] > 4096) {
        PyErr_SetString(PyExc_ValueError, "stack layout out of range");
        return -1;
    }
    return 0;
}

/* A growable array of u64 words, filled with the GIL released (raw allocator). */
struct words {
    uint64_t *v;
    size_t n, cap;
    int oom;
};

static void put(struct words *o, uint64_t x) {
    if (o->oom) return;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        uint64_t *v = PyMem_RawRealloc(o->v, cap * sizeof *v);
        if (v == NULL) {
            o->oom = 1;
            return;
        }
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = x;
}

static int read_remote(int pid, uint64_t addr, void *buf, size_t len) {
    struct iovec local = {buf, len}, remote = {(void *)(uintptr_t)addr, len};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got == (ssize_t)len) return 0;
    return got < 0 ? errno : EFAULT;
}

static int bad_pointer(uint64_t p) { return p == 0 || (p & 7) != 0 || p >= MAX_USER_ADDR; }

/* One read of a frame, through a page-sized block that usually holds its callers too. */
struct block {
    uint64_t lo, hi;
    unsigned char buf[BLOCK + 512];
};

static const unsigned char *frame_bytes(int pid, struct block *b, uint64_t frame, Py_ssize_t n) {
    if (b->hi && frame >= b->lo && frame + (uint64_t)n <= b->hi) return b->buf + (frame - b->lo);
    uint64_t lo = frame & ~(uint64_t)(BLOCK - 1), hi = frame + (uint64_t)n;
    if (read_remote(pid, lo, b->buf, (size_t)(hi - lo)) != 0) {
        lo = frame; /* the page start may be unmapped in odd layouts: read just the frame */
        if (read_remote(pid, lo, b->buf, (size_t)n) != 0) {
            b->hi = 0;
            return NULL;
        }
    }
    b->lo = lo;
    b->hi = hi;
    return b->buf + (frame - lo);
}

/* Appends one sample: [t, n_threads, then per thread tid, status, depth, (code, index)*depth].
 * Returns 0, or the errno of the read of the thread list head (the process is gone...). */
static int walk_stacks(int pid, const struct walk_layout *w, struct words *o, double t) {
    uint64_t ts, seen_ts[64];
    int n_seen_ts = 0;
    int head_err = read_remote(pid, w->threads_head, &ts, 8);
    if (head_err != 0) return head_err;
    double td = t;
    uint64_t tbits;
    memcpy(&tbits, &td, 8);
    put(o, tbits);
    size_t count_at = o->n;
    put(o, 0);
    uint64_t frames_seen[MAX_DEPTH_CAP + 1];
    unsigned char tsbuf[4096 + 8];
    Py_ssize_t ts_span = w->ts_next;
    if (w->ts_tid > ts_span) ts_span = w->ts_tid;
    if (w->ts_frame[0] > ts_span) ts_span = w->ts_frame[0];
    ts_span += 8;
    struct block *blk = PyMem_RawMalloc(sizeof *blk);
    if (blk == NULL) {
        o->oom = 1;
        return ENOMEM;
    }
    blk->hi = 0;
    int threads = 0;
    while (ts && threads < w->max_threads) {
        if (bad_pointer(ts)) break;
        int cycle = 0;
        for (int i = 0; i < n_seen_ts; i++) cycle |= seen_ts[i] == ts;
        if (cycle) break;
        if (n_seen_ts < 64) seen_ts[n_seen_ts++] = ts;
        if (read_remote(pid, ts, tsbuf, (size_t)ts_span) != 0) break; /* list changed under us */
        threads++;
        uint64_t tid = get_u64(tsbuf, w->ts_tid);
        uint64_t frame = get_u64(tsbuf, w->ts_frame[0]);
        uint64_t next = get_u64(tsbuf, w->ts_next);
        put(o, tid);
        size_t status_at = o->n;
        put(o, ST_OK);
        size_t depth_at = o->n;
        put(o, 0);
        int status = ST_OK, depth = 0, walked = 0;
        if (w->n_path == 2 && frame) {
            uint64_t cframe = frame;
            if (bad_pointer(cframe) || read_remote(pid, cframe + (uint64_t)w->ts_frame[1], &frame, 8)) {
                status = ST_TORN;
                frame = 0;
            }
        }
        if (!frame && status == ST_OK) status = ST_EMPTY;
        while (frame && status == ST_OK) {
            if (bad_pointer(frame) || walked > w->max_depth * 2) {
                status = ST_TORN;
                break;
            }
            for (int i = 0; i < walked && i <= MAX_DEPTH_CAP; i++) {
                if (frames_seen[i] == frame) status = ST_TORN; /* a cycle: freed and reused */
            }
            if (status != ST_OK) break;
            if (walked <= MAX_DEPTH_CAP) frames_seen[walked] = frame;
            walked++;
            const unsigned char *f = frame_bytes(pid, blk, frame, w->f_read);
            if (f == NULL) {
                status = ST_TORN;
                break;
            }
            uint64_t code = get_u64(f, w->f_code) & ~w->code_tags;
            uint64_t instr = get_u64(f, w->f_instr);
            uint64_t prev = get_u64(f, w->f_prev);
            int owner = f[w->f_owner];
            if (w->owner_cstack >= 0 && owner >= w->owner_cstack) {
                frame = prev; /* the eval loop's entry shim: not Python code */
                continue;
            }
            if (bad_pointer(code)) {
                status = ST_TORN;
                break;
            }
            if (depth >= w->max_depth) {
                status = ST_DEEP;
                break;
            }
            int64_t index;
            if (w->instr_is_lasti) {
                index = get_i32(f, w->f_instr);
            } else {
                index = ((int64_t)instr - (int64_t)(code + (uint64_t)w->code_units)) / 2;
            }
            if (index < -1 || index >= (1 << 24)) {
                status = ST_TORN;
                break;
            }
            put(o, code);
            put(o, (uint64_t)index);
            depth++;
            frame = prev;
        }
        if (status == ST_TORN) { /* drop this thread's frames, keep its slot */
            o->n = depth_at + 1;
            depth = 0;
        }
        if (!o->oom) {
            o->v[status_at] = (uint64_t)status;
            o->v[depth_at] = (uint64_t)depth;
        }
        ts = next;
    }
    PyMem_RawFree(blk);
    if (!o->oom) o->v[count_at] = (uint64_t)threads;
    return 0;
}

/* ---------------------------------------------------------------- the batched walk
 *
 * Why: walk_stacks costs ~3 system calls a thread (thread state, cframe, frame block), ~7 µs a
 * thread measured; at 200 threads a walk is 1.6 ms. Here every level is one process_vm_readv
 * for all threads: the thread states (at the addresses the previous walk of this call found,
 * the list re-read one by one only when its links do not check out), then the cframes, then
 * each thread's next frame block, until every chain has ended. The result is the same words
 * as walk_stacks, in the same thread order.
 */
#define IOV_BATCH 1024
/* Blocks are the frame's whole page below it, as in walk_stacks: tried 512/1024/2048 bytes
 * instead (200 parked threads, 13 frames): more levels, no cheaper. */

struct workspace {
    int cap;                 /* threads the arrays below hold */
    int n_prev;              /* thread states found by the previous walk (the hint) */
    uint64_t *prev;          /* their addresses */
    uint64_t *ts, *frame, *next_frame;
    unsigned char *tsbuf;    /* cap * TS_MAX */
    struct block *blocks;    /* cap */
    uint64_t *pairs;         /* cap * max_depth * 2 */
    uint64_t *seen;          /* cap * max_depth * 2: frames visited, for cycles */
    int *depth, *status, *walked;
    struct iovec *local, *remote;
    int *ok;
};
#define TS_MAX 4104

static void ws_free(struct workspace *ws) {
    PyMem_RawFree(ws->prev);
    PyMem_RawFree(ws->ts);
    PyMem_RawFree(ws->frame);
    PyMem_RawFree(ws->next_frame);
    PyMem_RawFree(ws->tsbuf);
    PyMem_RawFree(ws->blocks);
    PyMem_RawFree(ws->pairs);
    PyMem_RawFree(ws->seen);
    PyMem_RawFree(ws->depth);
    PyMem_RawFree(ws->status);
    PyMem_RawFree(ws->walked);
    PyMem_RawFree(ws->local);
    PyMem_RawFree(ws->remote);
    PyMem_RawFree(ws->ok);
    memset(ws, 0, sizeof *ws);
}

static int grow1(void **p, size_t size) {
    void *q = PyMem_RawRealloc(*p, size);
    if (q == NULL) return -1;
    *p = q;
    return 0;
}

/* Room for `want` threads; contents kept (realloc), so a walk may grow it midway. */
static int ws_grow(struct workspace *ws, int want, int max_depth) {
    if (want <= ws->cap) return 0;
    int cap = ws->cap ? ws->cap : 8;
    while (cap < want) cap *= 2;
    size_t c = (size_t)cap, d = (size_t)max_depth;
    if (grow1((void **)&ws->prev, c * 8) || grow1((void **)&ws->ts, c * 8) ||
        grow1((void **)&ws->frame, c * 8) || grow1((void **)&ws->next_frame, c * 8) ||
        grow1((void **)&ws->tsbuf, c * TS_MAX) ||
        grow1((void **)&ws->blocks, c * sizeof(struct block)) ||
        grow1((void **)&ws->pairs, c * d * 16) || grow1((void **)&ws->seen, c * d * 2 * 8 + 8) ||
        grow1((void **)&ws->depth, c * sizeof(int)) ||
        grow1((void **)&ws->status, c * sizeof(int)) ||
        grow1((void **)&ws->walked, c * sizeof(int)) ||
        grow1((void **)&ws->local, c * sizeof(struct iovec)) ||
        grow1((void **)&ws->remote, c * sizeof(struct iovec)) ||
        grow1((void **)&ws->ok, c * sizeof(int))) {
        return -1; /* what was grown stays owned by ws and is freed by ws_free */
    }
    ws->cap = cap;
    return 0;
}

/* Read n regions with as few system calls as the kernel allows; ok[i] says which arrived.
 * process_vm_readv stops at the first region it cannot read: the ones before it are done,
 * that one failed, and the rest go in the next call. */
static void read_many(int pid, int n, struct iovec *local, struct iovec *remote, int *ok) {
    int i = 0;
    while (i < n) {
        int m = n - i < IOV_BATCH ? n - i : IOV_BATCH;
        size_t want = 0;
        for (int k = 0; k < m; k++) want += remote[i + k].iov_len;
        ssize_t got = process_vm_readv(pid, local + i, (unsigned long)m, remote + i,
                                       (unsigned long)m, 0);
        int gone = got < 0 && errno == ESRCH;
        if (got < 0) got = 0;
        if ((size_t)got == want) {
            for (int k = 0; k < m; k++) ok[i + k] = 1;
            i += m;
            continue;
        }
        size_t acc = 0;
        int k = 0;
        while (k < m && acc + remote[i + k].iov_len <= (size_t)got) {
            acc += remote[i + k].iov_len;
            ok[i + k] = 1;
            k++;
        }
        if (k < m) ok[i + k] = 0; /* the region that stopped the read */
        i += k + 1;
        if (gone) {
            for (; i < n; i++) ok[i] = 0;
        }
    }
}

static int walk_batched(int pid, const struct walk_layout *w, struct words *o, double t,
                        struct workspace *ws) {
    Py_ssize_t ts_span = w->ts_next;
    if (w->ts_tid > ts_span) ts_span = w->ts_tid;
    if (w->ts_frame[0] > ts_span) ts_span = w->ts_frame[0];
    ts_span += 8;
    uint64_t head;
    int head_err = read_remote(pid, w->threads_head, &head, 8);
    if (head_err != 0) return head_err;
    if (ws_grow(ws, 8, w->max_depth) < 0) {
        o->oom = 1;
        return ENOMEM;
    }
    /* Level 1: the thread states, at the previous walk's addresses if their links agree. */
    int n = 0, hinted = 0;
    if (ws->n_prev > 0 && head == ws->prev[0]) {
        n = ws->n_prev;
        for (int i = 0; i < n; i++) {
            ws->local[i].iov_base = ws->tsbuf + (size_t)i * TS_MAX;
            ws->local[i].iov_len = (size_t)ts_span;
            ws->remote[i].iov_base = (void *)(uintptr_t)ws->prev[i];
            ws->remote[i].iov_len = (size_t)ts_span;
        }
        read_many(pid, n, ws->local, ws->remote, ws->ok);
        hinted = 1;
        for (int i = 0; i < n && hinted; i++) {
            uint64_t next = get_u64(ws->tsbuf + (size_t)i * TS_MAX, w->ts_next);
            uint64_t want = i + 1 < n ? ws->prev[i + 1] : 0;
            if (!ws->ok[i] || next != want) hinted = 0;
        }
        if (hinted) memcpy(ws->ts, ws->prev, (size_t)n * 8);
    }
    if (!hinted) { /* one by one, as walk_stacks does */
        n = 0;
        uint64_t ts = head;
        while (ts && n < w->max_threads && !bad_pointer(ts)) {
            int cycle = 0;
            for (int i = 0; i < n; i++) cycle |= ws->ts[i] == ts;
            if (cycle) break;
            if (ws_grow(ws, n + 1, w->max_depth) < 0) {
                o->oom = 1;
                return ENOMEM;
            }
            if (read_remote(pid, ts, ws->tsbuf + (size_t)n * TS_MAX, (size_t)ts_span) != 0) break;
            ws->ts[n] = ts;
            ts = get_u64(ws->tsbuf + (size_t)n * TS_MAX, w->ts_next);
            n++;
        }
    }
    memcpy(ws->prev, ws->ts, (size_t)n * 8);
    ws->n_prev = n;
    /* Level 2 (3.11/3.12): each thread's current frame through its cframe. */
    int m = 0;
    for (int i = 0; i < n; i++) {
        ws->frame[i] = get_u64(ws->tsbuf + (size_t)i * TS_MAX, w->ts_frame[0]);
        ws->status[i] = ST_OK;
        ws->depth[i] = 0;
        ws->walked[i] = 0;
        ws->blocks[i].hi = 0;
        if (w->n_path == 2 && ws->frame[i]) {
            if (bad_pointer(ws->frame[i])) {
                ws->status[i] = ST_TORN;
                continue;
            }
            ws->local[m].iov_base = &ws->next_frame[i];
            ws->local[m].iov_len = 8;
            ws->remote[m].iov_base = (void *)(uintptr_t)(ws->frame[i] + (uint64_t)w->ts_frame[1]);
            ws->remote[m].iov_len = 8;
            m++;
        }
    }
    if (w->n_path == 2) {
        read_many(pid, m, ws->local, ws->remote, ws->ok);
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (ws->frame[i] && ws->status[i] == ST_OK) {
                if (ws->ok[k]) ws->frame[i] = ws->next_frame[i];
                else ws->status[i] = ST_TORN;
                k++;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (ws->status[i] == ST_OK && !ws->frame[i]) ws->status[i] = ST_EMPTY;
    }
    /* Levels 3+: every live chain's next frame block in one call, then follow each chain as
     * far as its block holds it. */
    for (int level = 0; level <= 2 * w->max_depth + 2; level++) {
        m = 0;
        for (int i = 0; i < n; i++) {
            uint64_t f = ws->frame[i];
            struct block *b = &ws->blocks[i];
            if (ws->status[i] != ST_OK || !f) continue;
            if (b->hi && f >= b->lo && f + (uint64_t)w->f_read <= b->hi) continue;
            if (bad_pointer(f)) {
                ws->status[i] = ST_TORN;
                continue;
            }
            b->lo = f & ~(uint64_t)(BLOCK - 1);
            b->hi = f + (uint64_t)w->f_read;
            ws->local[m].iov_base = b->buf;
            ws->local[m].iov_len = (size_t)(b->hi - b->lo);
            ws->remote[m].iov_base = (void *)(uintptr_t)b->lo;
            ws->remote[m].iov_len = (size_t)(b->hi - b->lo);
            ws->next_frame[m] = (uint64_t)i;
            m++;
        }
        if (m == 0) {
            int live = 0;
            for (int i = 0; i < n; i++) live |= ws->status[i] == ST_OK && ws->frame[i];
            if (!live) break;
        } else {
            read_many(pid, m, ws->local, ws->remote, ws->ok);
            for (int k = 0; k < m; k++) {
                if (ws->ok[k]) continue;
                int i = (int)ws->next_frame[k]; /* page start unmapped? just the frame */
                struct block *b = &ws->blocks[i];
                b->lo = ws->frame[i];
                if (read_remote(pid, b->lo, b->buf, (size_t)w->f_read) != 0) {
                    b->hi = 0;
                    ws->status[i] = ST_TORN;
                }
            }
        }
        for (int i = 0; i < n; i++) {
            struct block *b = &ws->blocks[i];
            while (ws->status[i] == ST_OK && ws->frame[i]) {
                uint64_t f = ws->frame[i];
                if (!(b->hi && f >= b->lo && f + (uint64_t)w->f_read <= b->hi)) break;
                if (bad_pointer(f) || ws->walked[i] >= w->max_depth * 2) {
                    ws->status[i] = ST_TORN;
                    break;
                }
                uint64_t *seen = ws->seen + (size_t)i * (size_t)w->max_depth * 2;
                int cycle = 0;
                for (int k = 0; k < ws->walked[i]; k++) cycle |= seen[k] == f;
                if (cycle) { /* freed and reused under us */
                    ws->status[i] = ST_TORN;
                    break;
                }
                seen[ws->walked[i]++] = f;
                const unsigned char *fb = b->buf + (f - b->lo);
                uint64_t code = get_u64(fb, w->f_code) & ~w->code_tags;
                uint64_t prev = get_u64(fb, w->f_prev);
                if (w->owner_cstack >= 0 && fb[w->f_owner] >= w->owner_cstack) {
                    ws->frame[i] = prev;
                    continue;
                }
                if (bad_pointer(code)) {
                    ws->status[i] = ST_TORN;
                    break;
                }
                if (ws->depth[i] >= w->max_depth) {
                    ws->status[i] = ST_DEEP;
                    break;
                }
                int64_t index = w->instr_is_lasti
                    ? (int64_t)get_i32(fb, w->f_instr)
                    : ((int64_t)get_u64(fb, w->f_instr) - (int64_t)(code + (uint64_t)w->code_units)) / 2;
                if (index < -1 || index >= (1 << 24)) {
                    ws->status[i] = ST_TORN;
                    break;
                }
                uint64_t *pair = ws->pairs + ((size_t)i * (size_t)w->max_depth + (size_t)ws->depth[i]) * 2;
                pair[0] = code;
                pair[1] = (uint64_t)index;
                ws->depth[i]++;
                ws->frame[i] = prev;
            }
        }
    }
    uint64_t tbits;
    memcpy(&tbits, &t, 8);
    put(o, tbits);
    put(o, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        int depth = ws->status[i] == ST_TORN ? 0 : ws->depth[i];
        put(o, get_u64(ws->tsbuf + (size_t)i * TS_MAX, w->ts_tid));
        put(o, (uint64_t)ws->status[i]);
        put(o, (uint64_t)depth);
        const uint64_t *pair = ws->pairs + (size_t)i * (size_t)w->max_depth * 2;
        for (int k = 0; k < depth * 2; k++) put(o, pair[k]);
    }
    return 0;
}

/* One walk: batched (with the workspace of this call: its hint) or thread by thread. */
static int walk(int pid, const struct walk_layout *w, struct words *o, double t,
                struct workspace *ws) {
    return w->batched ? walk_batched(pid, w, o, t, ws) : walk_stacks(pid, w, o, t);
}

/* Turns the words of n samples back into [(t, ((tid, status, frames_bytes), ...)), ...];
 * frames_bytes packs (code, index) as two little-endian 64-bit words per frame, innermost
 * first: equal stacks compare equal as bytes, so the caller can collapse a thread parked in
 * one place without decoding anything. */
static PyObject *samples_to_list(const struct words *o) {
    if (o->oom) return PyErr_NoMemory(); /* a walk could not grow the buffer: no partial list */
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    size_t i = 0;
    while (i + 2 <= o->n) {
        double t;
        memcpy(&t, &o->v[i], 8);
        uint64_t n = o->v[i + 1];
        i += 2;
        PyObject *threads = PyTuple_New((Py_ssize_t)n);
        if (threads == NULL) goto fail;
        for (uint64_t k = 0; k < n; k++) {
            uint64_t tid = o->v[i], status = o->v[i + 1], depth = o->v[i + 2];
            i += 3;
            PyObject *item = Py_BuildValue("(KKy#)", (unsigned long long)tid,
                                           (unsigned long long)status, (const char *)&o->v[i],
                                           (Py_ssize_t)(depth * 16));
            i += (size_t)depth * 2;
            if (item == NULL) {
                Py_DECREF(threads);
                goto fail;
            }
            PyTuple_SET_ITEM(threads, (Py_ssize_t)k, item);
        }
        PyObject *sample = Py_BuildValue("(dN)", t, threads);
        if (sample == NULL || PyList_Append(out, sample) < 0) {
            Py_XDECREF(sample);
            goto fail;
        }
        Py_DECREF(sample);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(stack_walk_doc,
"stack_walk(pid, layout) -> (samples, errno)\n\n"
"Walk every thread's frame chain once (see stack_loop for `layout` and `samples`).");

PyDoc_STRVAR(stack_loop_doc,
"stack_loop(pid, layout, period, next_walk, until) -> (samples, next_walk, errno)\n\n"
"Walk every thread's frames on an absolute CLOCK_MONOTONIC schedule (`period` seconds)\n"
"until `until`, the GIL released. layout = (threads_head_address, ts_next, ts_tid,\n"
"(ts_frame[, cframe_current_frame]), f_code, f_previous, f_instr, f_owner, owner_cstack,\n"
"code_units_offset, max_depth, max_threads[, instr_is_lasti[, batched[, code_tags]]]). samples: [(t, ((tid, status, frames), ...))],\n"
"status 0 ok, 1 torn (frames dropped), 2 deeper than max_depth (cut), 3 no Python frame;\n"
"frames: bytes of (code address, code-unit index) pairs, little-endian u64, innermost first\n"
"(3.8-3.10: the index is f_lasti as the frame stores it: bytes on 3.8/3.9, units on 3.10).\n"
"errno: 0, or why the thread list could not be read (the process exited...).");

static PyObject *stack_walk(PyObject *self, PyObject *args) {
    int pid;
    PyObject *lay;
    struct walk_layout w;
    (void)self;
    if (!PyArg_ParseTuple(args, "iO", &pid, &lay) || parse_walk_layout(lay, &w) < 0) return NULL;
    struct words o = {NULL, 0, 0, 0};
    struct workspace ws;
    memset(&ws, 0, sizeof ws);
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = walk(pid, &w, &o, now_s(), &ws);
    Py_END_ALLOW_THREADS
    ws_free(&ws);
    PyObject *samples = samples_to_list(&o);
    PyMem_RawFree(o.v);
    if (samples == NULL) return NULL;
    return Py_BuildValue("(Ni)", samples, err);
}

static PyObject *stack_loop(PyObject *self, PyObject *args) {
    int pid;
    PyObject *lay;
    double period, next_walk, until;
    struct walk_layout w;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOddd", &pid, &lay, &period, &next_walk, &until) ||
        parse_walk_layout(lay, &w) < 0) {
        return NULL;
    }
    if (!(period > 0)) {
        PyErr_SetString(PyExc_ValueError, "period must be > 0");
        return NULL;
    }
    struct words o = {NULL, 0, 0, 0};
    struct workspace ws;
    memset(&ws, 0, sizeof ws);
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        double now = now_s();
        if (next_walk > now) sleep_until(next_walk);
        now = now_s();
        err = walk(pid, &w, &o, now, &ws);
        next_walk += period;
        if (now - next_walk > 50 * period) next_walk = now + period;
        if (err || o.oom || now >= until) break;
    }
    Py_END_ALLOW_THREADS
    ws_free(&ws);
    PyObject *samples = samples_to_list(&o);
    PyMem_RawFree(o.v);
    if (samples == NULL) return NULL;
    return Py_BuildValue("(Ndi)", samples, next_walk, err);
}

/* ---------------------------------------------------------------- /proc files on the same wake-ups
 *
 * Why: the threads probe re-reads each thread's /proc stat and syscall files up to 100 times a
 * second. In its own Python loop that cost a wake-up and ~70 us of interpreter work a tick
 * (0.9 % of a core for two threads, issue 17), against ~3 us of pread. Here the first GIL read
 * at or after each due time also preads every descriptor the caller passes (held open by it),
 * and the bytes go back with the time of the read; the caller parses them after the batch.
 * Per tick: [t, then per file its length, or -errno, and its bytes in ceil(len / 8) words].
 */
#define FILE_BYTES 1024
#define MAX_FILES 8192

static void read_files(const int *fds, Py_ssize_t n, struct words *o, double t) {
    uint64_t tbits;
    unsigned char buf[FILE_BYTES];
    memcpy(&tbits, &t, 8);
    put(o, tbits);
    for (Py_ssize_t i = 0; i < n; i++) {
        ssize_t got = pread(fds[i], buf, sizeof buf, 0);
        int64_t len = got < 0 ? -(int64_t)errno : (int64_t)got;
        put(o, (uint64_t)len);
        for (ssize_t at = 0; at < got; at += 8) {
            uint64_t w = 0;
            memcpy(&w, buf + at, (size_t)(got - at < 8 ? got - at : 8));
            put(o, w);
        }
    }
}

static PyObject *files_to_list(const struct words *o, Py_ssize_t n) {
    if (o->oom) return PyErr_NoMemory();
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    size_t i = 0;
    while (i < o->n) {
        double t;
        memcpy(&t, &o->v[i++], 8);
        PyObject *reads = PyTuple_New(n);
        if (reads == NULL) goto fail;
        for (Py_ssize_t k = 0; k < n; k++) {
            int64_t len = (int64_t)o->v[i++];
            PyObject *item = len < 0 ? PyLong_FromLongLong(-len)
                                     : PyBytes_FromStringAndSize((const char *)&o->v[i],
                                                                 (Py_ssize_t)len);
            if (len > 0) i += (size_t)(len + 7) / 8;
            if (item == NULL) {
                Py_DECREF(reads);
                goto fail;
            }
            PyTuple_SET_ITEM(reads, k, item);
        }
        PyObject *tick = Py_BuildValue("(dN)", t, reads);
        if (tick == NULL || PyList_Append(out, tick) < 0) {
            Py_XDECREF(tick);
            goto fail;
        }
        Py_DECREF(tick);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(gil_batch_doc,
"gil_batch(pid, regions, last, locked_off, holder_off, switch_off, counter_off, known,\n"
"          next_read, step, period, idle_period, idle_after, quiet_since, previous, until\n"
"          [, stack_layout, stack_period, next_stack[, fds, file_period, next_file]])\n"
"-> (changes, reads, late, next_read, step, quiet_since, previous, last, errno\n"
"    [, stack_samples, next_stack, stack_errno[, file_ticks, next_file]])\n\n"
"Read `regions` of `pid` on an absolute schedule until `until` (CLOCK_MONOTONIC seconds,\n"
"the clock of time.monotonic()). `changes` lists (previous_read_t, read_t, bytes) for each\n"
"read whose bytes differ from the read before it. errno is 0, or the error of the read\n"
"that stopped the batch. counter_off < 0: no counter.\n\n"
"With a stack layout (see stack_loop), the first read at or after `next_stack` also walks\n"
"every thread's frames (one wake-up serves both), next_stack advancing by stack_period\n"
"(stack_layout None: no walks). With fds, the first read at or after `next_file` also preads\n"
"each descriptor from offset 0: file_ticks is [(t, (bytes or errno, ...))].");

static PyObject *gil_batch(PyObject *self, PyObject *args) {
    int pid;
    PyObject *regions, *known_seq;
    Py_buffer last_buf;
    Py_ssize_t locked_off, holder_off, switch_off, counter_off;
    double next_read, step, period, idle_period, idle_after, quiet_since, previous, until;
    PyObject *stack_lay = Py_None;
    double stack_period = 0.0, next_stack = 0.0;
    PyObject *fds_seq = Py_None;
    double file_period = 0.0, next_file = 0.0;
    int *fds = NULL;
    Py_ssize_t n_fds = 0;
    struct words files = {NULL, 0, 0, 0};
    struct walk_layout wl;
    struct words stacks = {NULL, 0, 0, 0};
    struct workspace ws;
    memset(&ws, 0, sizeof ws);
    (void)self;
    if (!PyArg_ParseTuple(args, "iOy*nnnnOdddddddd|OddOdd", &pid, &regions, &last_buf,
                          &locked_off, &holder_off, &switch_off, &counter_off, &known_seq,
                          &next_read, &step, &period, &idle_period, &idle_after, &quiet_since,
                          &previous, &until, &stack_lay, &stack_period, &next_stack, &fds_seq,
                          &file_period, &next_file)) {
        return NULL;
    }
    int with_files = fds_seq != Py_None;
    int with_stacks = stack_lay != Py_None;
    if (with_stacks && (parse_walk_layout(stack_lay, &wl) < 0 || !(stack_period > 0))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "stack_period must be > 0");
        PyBuffer_Release(&last_buf);
        return NULL;
    }
    struct iovec remote[MAX_REGIONS], local;
    unsigned char cur[MAX_SPAN], last[MAX_SPAN];
    uint64_t known[MAX_KNOWN];
    Py_ssize_t n_regions, n_known, total = 0, i;
    PyObject *changes = NULL, *result = NULL;
    struct record {
        double prev, t;
        unsigned char bytes[MAX_SPAN];
    } *rec = NULL;

    if (with_files) {
        PyObject *fseq = PySequence_Fast(fds_seq, "fds must be a sequence");
        if (fseq == NULL) goto done_buf;
        n_fds = PySequence_Fast_GET_SIZE(fseq);
        fds = n_fds > 0 && n_fds <= MAX_FILES ? PyMem_RawMalloc((size_t)n_fds * sizeof *fds) : NULL;
        if (fds == NULL || !(file_period > 0)) {
            Py_DECREF(fseq);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "1 to 8192 fds and file_period > 0");
            goto done_buf;
        }
        for (i = 0; i < n_fds; i++) fds[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(fseq, i));
        Py_DECREF(fseq);
        if (PyErr_Occurred()) goto done_buf;
    }
    PyObject *rseq = PySequence_Fast(regions, "regions must be a sequence");
    if (rseq == NULL) goto done_buf;
    n_regions = PySequence_Fast_GET_SIZE(rseq);
    if (n_regions < 1 || n_regions > MAX_REGIONS) {
        PyErr_SetString(PyExc_ValueError, "1 to 8 regions");
        Py_DECREF(rseq);
        goto done_buf;
    }
    for (i = 0; i < n_regions; i++) {
        unsigned long long addr;
        Py_ssize_t len;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rseq, i), "Kn", &addr, &len)) {
            Py_DECREF(rseq);
            goto done_buf;
        }
        remote[i].iov_base = (void *)(uintptr_t)addr;
        remote[i].iov_len = (size_t)len;
        total += len;
    }
    Py_DECREF(rseq);
    if (total > MAX_SPAN || last_buf.len != total || locked_off < 0 || locked_off + 4 > total ||
        holder_off < 0 || holder_off + 8 > total || switch_off < 0 || switch_off + 8 > total ||
        counter_off + 8 > total) {
        PyErr_SetString(PyExc_ValueError, "offsets or sizes out of range");
        goto done_buf;
    }
    memcpy(last, last_buf.buf, (size_t)total);

    PyObject *kseq = PySequence_Fast(known_seq, "known must be a sequence");
    if (kseq == NULL) goto done_buf;
    n_known = PySequence_Fast_GET_SIZE(kseq);
    if (n_known > MAX_KNOWN) n_known = 0; /* too many to search: treat every holder as new */
    for (i = 0; i < n_known; i++) {
        known[i] = PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(kseq, i));
    }
    Py_DECREF(kseq);
    if (PyErr_Occurred()) goto done_buf;

    changes = PyList_New(0);
    if (changes == NULL) goto done_buf;

    /* Records are collected here with the GIL released and turned into objects after. */
    enum { MAX_RECORDS = 512 };
    rec = PyMem_RawMalloc(MAX_RECORDS * sizeof *rec);
    if (rec == NULL) {
        PyErr_NoMemory();
        goto done_buf;
    }
    int n_rec = 0;
    long reads = 0, late = 0;
    int err = 0, stack_err = 0;
    local.iov_base = cur;
    local.iov_len = (size_t)total;

    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        double now = now_s();
        if (next_read > now) {
            sleep_until(next_read);
        }
        ssize_t got = process_vm_readv(pid, &local, 1, remote, (unsigned long)n_regions, 0);
        if (got != total) {
            err = got < 0 ? errno : EFAULT;
            break;
        }
        now = now_s();
        reads++;
        if (with_stacks && now >= next_stack && !stacks.oom) {
            /* This wake-up serves the stacks too; a failed walk (the thread list unreadable)
             * is reported, the GIL read above already says whether the process is gone. */
            stack_err = walk(pid, &wl, &stacks, now, &ws);
            next_stack += stack_period;
            if (now - next_stack > 50 * stack_period) next_stack = now + stack_period;
        }
        if (with_files && now >= next_file && !files.oom) {
            read_files(fds, n_fds, &files, now);
            next_file += file_period;
            if (now - next_file > 50 * file_period) next_file = now + file_period;
        }
        if (now - previous > 2 * step) late++;
        int changed = memcmp(cur, last, (size_t)total) != 0;
        int stop = 0;
        int32_t locked = get_i32(cur, locked_off);
        if (changed) {
            if (locked) {
                uint64_t holder = get_u64(cur, holder_off);
                int found = 0;
                for (i = 0; i < n_known; i++) {
                    if (known[i] == holder) {
                        found = 1;
                        break;
                    }
                }
                stop = !found;
            }
            if (counter_off >= 0 && get_u64(cur, counter_off) != get_u64(last, counter_off)) {
                stop = 1;
            }
            if (locked != 0 && locked != 1) stop = 1; /* nonsense: let the caller judge */
            rec[n_rec].prev = previous;
            rec[n_rec].t = now;
            memcpy(rec[n_rec].bytes, cur, (size_t)total);
            n_rec++;
        }
        uint64_t seen_switch = get_u64(last, switch_off);
        uint64_t switch_number = get_u64(cur, switch_off);
        memcpy(last, cur, (size_t)total);
        previous = now;
        if (locked || switch_number != seen_switch) {
            quiet_since = now;
            if (step != period) { /* something happened: back to full rate from here */
                step = period;
                next_read = now;
            }
        } else if (now - quiet_since >= idle_after) {
            step = idle_period;
        }
        next_read += step;
        if (now - next_read > 50 * step) { /* fell far behind (suspended, overloaded) */
            next_read = now + step;
        }
        if (stop || now >= until || n_rec >= MAX_RECORDS) break;
    }
    Py_END_ALLOW_THREADS

    for (int r = 0; r < n_rec; r++) {
        PyObject *item = Py_BuildValue("(ddy#)", rec[r].prev, rec[r].t,
                                       (const char *)rec[r].bytes, total);
        if (item == NULL || PyList_Append(changes, item) < 0) {
            Py_XDECREF(item);
            goto done_buf;
        }
        Py_DECREF(item);
    }
    if (with_stacks || with_files) {
        PyObject *samples = with_stacks ? samples_to_list(&stacks) : PyList_New(0);
        if (samples == NULL) goto done_buf;
        PyObject *ticks = with_files ? files_to_list(&files, n_fds) : PyList_New(0);
        if (ticks == NULL) {
            Py_DECREF(samples);
            goto done_buf;
        }
        result = Py_BuildValue("(Ollddddy#iNdiNd)", changes, reads, late, next_read, step,
                               quiet_since, previous, (const char *)last, total, err, samples,
                               next_stack, stack_err, ticks, next_file);
    } else {
        result = Py_BuildValue("(Ollddddy#i)", changes, reads, late, next_read, step,
                               quiet_since, previous, (const char *)last, total, err);
    }

done_buf:
    ws_free(&ws);
    PyMem_RawFree(stacks.v);
    PyMem_RawFree(files.v);
    PyMem_RawFree(fds);
    PyMem_RawFree(rec);
    Py_XDECREF(changes);
    PyBuffer_Release(&last_buf);
    return result;
}

static PyMethodDef methods[] = {
    {"gil_batch", gil_batch, METH_VARARGS, gil_batch_doc},
    {"stack_walk", stack_walk, METH_VARARGS, stack_walk_doc},
    {"stack_loop", stack_loop, METH_VARARGS, stack_loop_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sampler",
    "lifescope's native sampling loop (see _sampler.c); optional, gil_batch.py falls back.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sampler(void) { return PyModule_Create(&module); }
