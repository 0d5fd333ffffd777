/* The das profile's per-sample passes, for `edge_agent.features` (see its docstring). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#define TILE 16
#define PREFETCH_ROWS 8

static int fbuf(PyObject *o, Py_buffer *b, int nd, int writable, const char *name) {
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, b, flags) < 0) return -1;
    if (b->ndim != nd || b->itemsize != 4 || b->format == NULL || strcmp(b->format, "f") != 0
        || b->strides[nd - 1] != 4) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-d float32 array with unit inner stride",
                     name, nd);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}


#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FW_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define FW_CLONES
#endif

static void prefetch_row(const char *row, Py_ssize_t bytes) {
    for (Py_ssize_t b = 0; b < bytes; b += 64) __builtin_prefetch(row + b);
}

/* mean[c] of the block's column c (the block's rows are pages apart: no hardware prefetch,
   so rows are prefetched ahead; after this pass the block is in cache for the next). */
FW_CLONES static void mean_kernel(const char *xp, Py_ssize_t xs, Py_ssize_t n, Py_ssize_t w,
                                  double *restrict acc, float *restrict mean) {
    for (Py_ssize_t c = 0; c < w; c++) acc[c] = 0;
    for (Py_ssize_t t = 0; t < n; t++) {
        if (t + PREFETCH_ROWS < n) prefetch_row(xp + (t + PREFETCH_ROWS) * xs, w * 4);
        const float *restrict row = (const float *)(xp + t * xs);
        for (Py_ssize_t c = 0; c < w; c++) acc[c] += row[c];
    }
    for (Py_ssize_t c = 0; c < w; c++) mean[c] = (float)(acc[c] / n);
}

/* One block: xt[c, t] = (x[t, c] - mean[c]) * taper[t]; a2/a4 sums of the 2nd/4th powers. */
FW_CLONES static void prep_kernel(const char *xp, Py_ssize_t xs, const float *mean,
                                  const float *taper, float *xt, Py_ssize_t xts, Py_ssize_t n,
                                  Py_ssize_t w, double *restrict a2, double *restrict a4,
                                  float *restrict tile) {
    float *restrict s2 = tile + TILE * w, *restrict s4 = s2 + w;
    for (Py_ssize_t t0 = 0; t0 < n; t0 += TILE) {
        Py_ssize_t nt = n - t0 < TILE ? n - t0 : TILE;
        for (Py_ssize_t c = 0; c < w; c++) { s2[c] = 0; s4[c] = 0; }
        for (Py_ssize_t k = 0; k < nt; k++) {
            const float *restrict row = (const float *)(xp + (t0 + k) * xs);
            float *restrict v = tile + k * w;
            for (Py_ssize_t c = 0; c < w; c++) {
                float d = row[c] - mean[c], sq = d * d;
                v[c] = d;
                s2[c] += sq;
                s4[c] += sq * sq;
            }
        }
        for (Py_ssize_t c = 0; c < w; c++) { a2[c] += s2[c]; a4[c] += s4[c]; }
        for (Py_ssize_t c = 0; c < w; c++) {
            float *dst = xt + c * xts + t0;
            for (Py_ssize_t k = 0; k < nt; k++) dst[k] = tile[k * w + c] * taper[t0 + k];
        }
    }
}

/* One channel's spectrum z (re/im pairs): pw[k] = |z_k|^2 (bin 0: 0), lg[k-1] = pw[k] + eps;
   returns the total and writes the first moment. */
FW_CLONES static double power_kernel(const float *z, const float *freqs, Py_ssize_t nbins,
                                     float eps, float *pw, float *lg, double *mom_out) {
    double total = 0, mom = 0;
    pw[0] = 0;
#pragma omp simd reduction(+ : total, mom)
    for (Py_ssize_t k = 1; k < nbins; k++) {
        float p = z[2 * k] * z[2 * k] + z[2 * k + 1] * z[2 * k + 1];
        pw[k] = p;
        lg[k - 1] = p + eps;
        total += p;
        mom += (double)freqs[k] * p;
    }
    *mom_out = mom;
    return total;
}

FW_CLONES static double band_sum(const float *pw, Py_ssize_t lo, Py_ssize_t hi) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (Py_ssize_t k = lo; k < hi; k++) s += pw[k];
    return s;
}

/* prep(x (n, w), taper (n,), xt (w, n), p2 (w,), p4 (w,)): with mean[c] the mean of x's
   column c, xt[c, t] = (x[t, c] - mean[c]) * taper[t]; p2[c] = mean_t (x - mean)^2; p4 the
   4th power. */
static PyObject *prep(PyObject *self, PyObject *args) {
    PyObject *ox, *ot, *oxt, *o2, *o4;
    if (!PyArg_ParseTuple(args, "OOOOO", &ox, &ot, &oxt, &o2, &o4)) return NULL;
    Py_buffer bx, bt, bxt, b2, b4;
    if (fbuf(ox, &bx, 2, 0, "x") < 0) return NULL;
    if (fbuf(ot, &bt, 1, 0, "taper") < 0) goto e2;
    if (fbuf(oxt, &bxt, 2, 1, "xt") < 0) goto e3;
    if (fbuf(o2, &b2, 1, 1, "p2") < 0) goto e4;
    if (fbuf(o4, &b4, 1, 1, "p4") < 0) goto e5;
    Py_ssize_t n = bx.shape[0], w = bx.shape[1];
    if (n < 1 || w < 1 || bt.shape[0] != n || bxt.shape[0] != w || bxt.shape[1] != n
        || b2.shape[0] != w || b4.shape[0] != w) {
        PyErr_SetString(PyExc_ValueError, "prep: shapes do not agree");
        goto e6;
    }
    double *acc = calloc(2 * (size_t)w, sizeof(double));
    float *tile = malloc((size_t)(TILE + 3) * w * sizeof(float));
    if (!acc || !tile) { free(acc); free(tile); PyErr_NoMemory(); goto e6; }
    Py_BEGIN_ALLOW_THREADS
    double *a2 = acc, *a4 = acc + w;
    float *mean = tile + (TILE + 2) * w;
    mean_kernel(bx.buf, bx.strides[0], n, w, a2, mean);
    for (Py_ssize_t c = 0; c < w; c++) a2[c] = 0;
    prep_kernel(bx.buf, bx.strides[0], mean, bt.buf, bxt.buf, bxt.strides[0] / 4, n, w,
                a2, a4, tile);
    float *p2 = b2.buf, *p4 = b4.buf;
    Py_ssize_t s2 = b2.strides[0] / 4, s4 = b4.strides[0] / 4;
    for (Py_ssize_t c = 0; c < w; c++) {
        p2[c * s2] = (float)(a2[c] / n);
        p4[c * s4] = (float)(a4[c] / n);
    }
    Py_END_ALLOW_THREADS
    free(acc); free(tile);
    PyBuffer_Release(&b4); PyBuffer_Release(&b2); PyBuffer_Release(&bxt);
    PyBuffer_Release(&bt); PyBuffer_Release(&bx);
    Py_RETURN_NONE;
e6: PyBuffer_Release(&b4);
e5: PyBuffer_Release(&b2);
e4: PyBuffer_Release(&bxt);
e3: PyBuffer_Release(&bt);
e2: PyBuffer_Release(&bx);
    return NULL;
}

/* power(spec (w, 2 * nbins) re/im pairs, freqs (nbins,), edges (2 * nb,) as float bin
   indices, out (nb + 2, w) rows: bands, total, first moment; logp (w, nbins - 1) gets
   power + eps (bin 0 counts as zero power). */
static PyObject *power(PyObject *self, PyObject *args) {
    PyObject *os, *of, *oe, *oo, *ol;
    double eps;
    if (!PyArg_ParseTuple(args, "OOOOOd", &os, &of, &oe, &oo, &ol, &eps)) return NULL;
    Py_buffer bs, bf, be, bo, bl;
    if (fbuf(os, &bs, 2, 0, "spec") < 0) return NULL;
    if (fbuf(of, &bf, 1, 0, "freqs") < 0) goto f1;
    if (fbuf(oe, &be, 1, 0, "edges") < 0) goto f2;
    if (fbuf(oo, &bo, 2, 1, "out") < 0) goto f3;
    if (fbuf(ol, &bl, 2, 1, "logp") < 0) goto f4;
    Py_ssize_t w = bs.shape[0], nbins = bf.shape[0], nb = be.shape[0] / 2;
    if (bs.shape[1] != 2 * nbins || bo.shape[0] != nb + 2 || bo.shape[1] != w
        || bl.shape[0] != w || bl.shape[1] != nbins - 1 || nbins < 2) {
        PyErr_SetString(PyExc_ValueError, "power: shapes do not agree");
        goto f5;
    }
    const float *fe = be.buf;
    for (Py_ssize_t j = 0; j < 2 * nb; j++) {
        if (!(fe[j] >= 0 && fe[j] <= nbins)) {
            PyErr_SetString(PyExc_ValueError, "power: band edges out of range");
            goto f5;
        }
    }
    float *scratch = malloc((size_t)nbins * sizeof(float));
    if (!scratch) { PyErr_NoMemory(); goto f5; }
    Py_BEGIN_ALLOW_THREADS
    const char *sp = bs.buf, *lp = bl.buf;
    char *op = bo.buf;
    const float *freqs = bf.buf;
    Py_ssize_t ss = bs.strides[0], ls = bl.strides[0], os0 = bo.strides[0], os1 = bo.strides[1];
    float eps_f = (float)eps;
    for (Py_ssize_t c = 0; c < w; c++) {
        double mom;
        float *pw = scratch;
        double total = power_kernel((const float *)(sp + c * ss), freqs, nbins, eps_f, pw,
                                    (float *)(lp + c * ls), &mom);
        for (Py_ssize_t j = 0; j < nb; j++) {
            *(float *)(op + j * os0 + c * os1) =
                (float)band_sum(pw, (Py_ssize_t)fe[2 * j], (Py_ssize_t)fe[2 * j + 1]);
        }
        *(float *)(op + nb * os0 + c * os1) = (float)total;
        *(float *)(op + (nb + 1) * os0 + c * os1) = (float)mom;
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    PyBuffer_Release(&bl); PyBuffer_Release(&bo); PyBuffer_Release(&be);
    PyBuffer_Release(&bf); PyBuffer_Release(&bs);
    Py_RETURN_NONE;
f5: PyBuffer_Release(&bl);
f4: PyBuffer_Release(&bo);
f3: PyBuffer_Release(&be);
f2: PyBuffer_Release(&bf);
f1: PyBuffer_Release(&bs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"prep", prep, METH_VARARGS, "Mean-free, tapered, channel-major copy of a block; p2, p4."},
    {"power", power, METH_VARARGS, "Band powers, total, first moment and power + eps per bin."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dasfeat", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dasfeat(void) { return PyModule_Create(&module); }
