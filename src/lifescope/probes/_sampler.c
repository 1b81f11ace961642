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

PyDoc_STRVAR(gil_batch_doc,
"gil_batch(pid, regions, last, locked_off, holder_off, switch_off, counter_off, known,\n"
"          next_read, step, period, idle_period, idle_after, quiet_since, previous, until)\n"
"-> (changes, reads, late, next_read, step, quiet_since, previous, last, errno)\n\n"
"Read `regions` of `pid` on an absolute schedule until `until` (CLOCK_MONOTONIC seconds,\n"
"the clock of time.monotonic()). `changes` lists (previous_read_t, read_t, bytes) for each\n"
"read whose bytes differ from the read before it. errno is 0, or the error of the read\n"
"that stopped the batch. counter_off < 0: no counter.");

static PyObject *gil_batch(PyObject *self, PyObject *args) {
    int pid;
    PyObject *regions, *known_seq;
    Py_buffer last_buf;
    Py_ssize_t locked_off, holder_off, switch_off, counter_off;
    double next_read, step, period, idle_period, idle_after, quiet_since, previous, until;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOy*nnnnOdddddddd", &pid, &regions, &last_buf, &locked_off,
                          &holder_off, &switch_off, &counter_off, &known_seq, &next_read, &step,
                          &period, &idle_period, &idle_after, &quiet_since, &previous, &until)) {
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
    int err = 0;
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
    result = Py_BuildValue("(Ollddddy#i)", changes, reads, late, next_read, step, quiet_since,
                           previous, (const char *)last, total, err);

done_buf:
    PyMem_RawFree(rec);
    Py_XDECREF(changes);
    PyBuffer_Release(&last_buf);
    return result;
}

static PyMethodDef methods[] = {
    {"gil_batch", gil_batch, METH_VARARGS, gil_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sampler",
    "lifescope's native sampling loop (see _sampler.c); optional, gil_batch.py falls back.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sampler(void) { return PyModule_Create(&module); }
