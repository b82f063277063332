/* The whole network on the CPU backend against the PyTorch reference's goldens (mmunet.md 7,
 * V1 and V6): every block output, the first MetaBlock's internals and the logits, for every
 * knob combination; argmax on a 32x64x64 input; thread-count invariance; repeatability; no
 * allocation inside a forward pass; the arena plan. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "infer/infer.h"
#include "infer/model-impl.h"
#include "tests/tap.h"
#include "tests/tol.h"

/* Allocation counter: the test links with -Wl,--wrap for these, so calls made by the
 * engine's own objects land here (not those inside oneDNN or libgomp). */
static long n_allocs;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
void *
__wrap_malloc(size_t n)
{
    n_allocs++;
    return __real_malloc(n);
}
void *
__wrap_calloc(size_t n, size_t m)
{
    n_allocs++;
    return __real_calloc(n, m);
}
void *
__wrap_realloc(void *p, size_t n)
{
    n_allocs++;
    return __real_realloc(p, n);
}
void *
__wrap_aligned_alloc(size_t a, size_t n)
{
    n_allocs++;
    return __real_aligned_alloc(a, n);
}

static const char *const variants[] = {"separate",       "shared",     "vim_v2",
                                       "inner_residual", "merge_half", "partial"};
#define N_VARIANTS (sizeof variants / sizeof variants[0])

static void
argmax(const float *logits, int nc, size_t vox, uint8_t *out)
{
    for (size_t v = 0; v < vox; v++) {
        int best = 0;
        for (int c = 1; c < nc; c++)
            if (logits[c * vox + v] > logits[best * vox + v])
                best = c;
        out[v] = (uint8_t)best;
    }
}

/* tests/fixtures/mmunet/tiny-NAME.safetensors, its golden and its network on a new CPU backend
 * (2 threads). Returns 0 or the first error, with why. */
static int
open_fixture(const char *dir, const char *name, unsigned flags, struct mms_model **m,
             struct mms_st **gold, struct mms_backend **be, struct mms_net **net, char *why,
             size_t why_len)
{
    char path[4096];
    struct mms_backend_params bp = {.threads = 2};
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-%s.safetensors", dir, name);
    int rc = mms_model_load(path, m, why, why_len);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-%s.golden.safetensors", dir,
                 name);
        rc = mms__st_open(path, gold, why, why_len);
    }
    if (rc == 0)
        rc = mms_backend_open("cpu", &bp, be);
    if (rc == 0)
        rc = mms_net_new(*m, *be, mms_model_card(*m)->inf.patch, flags, net);
    return rc;
}

static void
test_variant(const char *dir, const char *variant)
{
    char why[512] = "";
    struct mms_model *m = NULL;
    struct mms_st *gold = NULL;
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    int rc = open_fixture(dir, variant, MMS_NET_TAPS, &m, &gold, &be, &net, why, sizeof why);
    const struct mms_card *card = rc == 0 ? mms_model_card(m) : NULL;
    if (!ok(rc == 0, "%s: load, open the CPU backend, plan the network", variant)) {
        diag("%s (%s)", mms_strerror(rc), why);
        skip("no network");
        skip("no network");
        goto out;
    }
    const struct mms_tensor *in = mms__st_find(gold, "input");
    size_t nl = (size_t)(card->arch.num_classes * in->count);
    float *logits = malloc(nl * sizeof(float));
    long before = n_allocs;
    rc = mms_net_forward(net, in->data, 1, logits);
    long allocs = n_allocs - before;
    /* every golden tensor but the input: blocks, up, LN, mixer, delta, pre-gate y, logits */
    int checked = 0, failed = 0;
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < mms__st_count(gold); i++) {
        const struct mms_tensor *t = mms__st_tensor(gold, i);
        if (strcmp(t->name, "input") == 0)
            continue;
        size_t cnt = 0;
        float *got = malloc((size_t)t->count * sizeof(float));
        int trc = mms_net_tap(net, t->name, got, (size_t)t->count, &cnt);
        double tl = trc == 0 && cnt == (size_t)t->count ? tol_of(got, t->data, cnt) : INFINITY;
        if (!(tl <= 1e-4)) {
            failed++;
            diag("%s: %s: %s, tol %.3g", variant, t->name, mms_strerror(trc), tl);
        }
        if (tl > worst || checked == 0) {
            worst = tl;
            worst_name = t->name;
        }
        checked++;
        free(got);
    }
    ok(rc == 0 && failed == 0 && checked >= 15,
       "%s: %d golden tensors within tol 1e-4 (worst %.2g, %s)", variant, checked, worst,
       worst_name);
    is_int(allocs, 0, "%s: a forward pass allocates nothing", variant);
    free(logits);
out:
    mms_net_free(net);
    mms_backend_free(be);
    mms__st_close(gold);
    mms_model_free(m);
}

/* The 32x64x64 input: argmax against the reference's, thread counts, repeatability. */
static void
test_big(const char *dir)
{
    char path[4096], why[512];
    struct mms_model *m = NULL;
    struct mms_st *big = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-separate.safetensors", dir);
    int rc = mms_model_load(path, &m, why, sizeof why);
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-separate.big.safetensors", dir);
    if (rc == 0)
        rc = mms__st_open(path, &big, why, sizeof why);
    if (rc < 0) {
        printf("Bail out! %s\n", why);
        exit(1);
    }
    const struct mms_tensor *in = mms__st_find(big, "input"), *want = mms__st_find(big, "argmax");
    int64_t tile[3] = {in->shape[1], in->shape[2], in->shape[3]};
    size_t vox = (size_t)(tile[0] * tile[1] * tile[2]);
    int nc = mms_model_card(m)->arch.num_classes;
    static const int threads[] = {1, 2, 3};
    float *logits[3];
    size_t arena = 0, unplanned = 0;
    for (int i = 0; i < 3; i++) {
        struct mms_backend *be = NULL;
        struct mms_net *net = NULL;
        struct mms_backend_params bp = {.threads = threads[i]};
        logits[i] = malloc(vox * (size_t)nc * sizeof(float));
        rc = mms_backend_open("cpu", &bp, &be);
        if (rc == 0)
            rc = mms_net_new(m, be, tile, 0, &net);
        if (rc == 0)
            rc = mms_net_forward(net, in->data, 1, logits[i]);
        if (rc == 0 && i == 0) {
            float *again = malloc(vox * (size_t)nc * sizeof(float));
            rc = mms_net_forward(net, in->data, 1, again);
            ok(rc == 0 && memcmp(again, logits[0], vox * (size_t)nc * sizeof(float)) == 0,
               "a second run on the same network gives the same logits, bit for bit");
            free(again);
            arena = mms_net_arena_bytes(net);
            unplanned = mms_net_unplanned_bytes(net);
        }
        if (rc < 0)
            diag("threads %d: %s", threads[i], mms_strerror(rc));
        mms_net_free(net);
        mms_backend_free(be);
    }
    uint8_t *lab = malloc(vox);
    argmax(logits[0], nc, vox, lab);
    size_t agree = 0;
    for (size_t v = 0; v < vox; v++)
        agree += lab[v] == (uint8_t)want->data[v];
    ok((double)agree >= 0.9999 * (double)vox,
       "32x64x64: argmax equals the reference on %zu of %zu "
       "voxels (>= 99.99%%)",
       agree, vox);
    double t2 = tol_of(logits[1], logits[0], vox * (size_t)nc);
    double t3 = tol_of(logits[2], logits[0], vox * (size_t)nc);
    /* Each thread count cuts the token-parallel scan into other segments, so the logits
     * differ by the rounding of another summation order: measured 2.4e-7 and 1.1e-6 on an
     * AVX2 machine, less with AVX-512. The bound stays ten times under the goldens' 1e-4. */
    ok(t2 <= 1e-5 && t3 <= 1e-5,
       "thread count changes the logits by rounding only (fp64 sums, segment decays): 2 vs 1: "
       "%.2g, 3 vs 1: %.2g (bound 1e-5)",
       t2, t3);
    ok(arena > 0 && arena < unplanned,
       "the arena reuses buffers: %zu bytes planned, %zu without "
       "reuse",
       arena, unplanned);
    for (int i = 0; i < 3; i++)
        free(logits[i]);
    free(lab);
    mms__st_close(big);
    mms_model_free(m);
}

/* nnU-Net's networks (README, "nnU-Net's standard networks") and fold ensembles: the logits
 * of the fixed input against the PyTorch reference's, in fp64, from one forward call that
 * allocates nothing. A fold ensemble (members > 0) gives the mean of its members' logits, as
 * nnU-Net does, not one member's. */
static const char *const families[] = {"plain", "resenc", "resenc-nobias"};
#define N_FAMILIES (sizeof families / sizeof families[0])

static void
test_logits(const char *dir, const char *name, int members)
{
    char why[512] = "";
    struct mms_model *m = NULL;
    struct mms_st *gold = NULL;
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    int rc = open_fixture(dir, name, 0, &m, &gold, &be, &net, why, sizeof why);
    bool opened = rc == 0 && (members > 0 ? mms_net_members(net) == members
                                          : mms_model_card(m)->arch.family != MMS_FAMILY_MMUNET);
    if (!ok(opened, "%s: load %s, open the CPU backend, plan the network", name,
            members > 0 ? "a fold ensemble" : "an nnU-Net network")) {
        diag("%s (%s)", mms_strerror(rc), why);
        skip("no network");
        skip("no network");
        goto out;
    }
    const struct mms_tensor *in = mms__st_find(gold, "input"), *want = mms__st_find(gold, "logits");
    float *logits = malloc((size_t)want->count * sizeof(float));
    long before = n_allocs;
    rc = mms_net_forward(net, in->data, 1, logits);
    long allocs = n_allocs - before;
    double tl = rc == 0 ? tol_of(logits, want->data, (size_t)want->count) : INFINITY;
    if (members > 0) {
        /* each member alone must be far from the mean, or the check could not tell */
        double far = INFINITY;
        for (int i = 0; i < members; i++) {
            char key[32];
            snprintf(key, sizeof key, "logits.%d", i);
            const struct mms_tensor *one = mms__st_find(gold, key);
            double t = one ? tol_of(one->data, want->data, (size_t)want->count) : 0;
            far = t < far ? t : far;
        }
        ok(tl <= 1e-4 && far > 100 * 1e-4,
           "%s: the forward pass gives the members' mean (tol %.2g; the nearest member alone "
           "is %.2g from it)",
           name, tl, far);
    } else {
        ok(tl <= 1e-4, "%s: the logits are within tol 1e-4 of the reference's (%.2g)", name, tl);
    }
    is_int(allocs, 0, "%s: a forward pass allocates nothing", name);
    free(logits);
out:
    mms_net_free(net);
    mms_backend_free(be);
    mms__st_close(gold);
    mms_model_free(m);
}

static void
test_errors(const char *dir)
{
    char path[4096], why[512];
    struct mms_model *m = NULL;
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-separate.safetensors", dir);
    mms_model_load(path, &m, why, sizeof why);
    is_int(mms_backend_open("tpu", NULL, &be), MMS_EINVAL, "an unknown backend name is refused");
    long before = n_allocs;
    int rc = mms_backend_open("auto", NULL, &be);
    /* the CPU here unless a CUDA device starts (tests/test-backend-ops covers both) */
    ok(rc == 0 &&
           (strcmp(mms_backend_name(be), "cpu") == 0 || strcmp(mms_backend_name(be), "cuda") == 0),
       "auto opens a backend: %s", rc == 0 ? mms_backend_name(be) : mms_strerror(rc));
    ok(n_allocs > before, "the allocation counter sees the engine's own allocations (%ld)",
       n_allocs - before);
    int64_t bad[3] = {8, 16, 6}; /* W must be a multiple of 2 x 2 = 4 */
    is_int(mms_net_new(m, be, bad, 0, &net), MMS_EINVAL,
           "a tile not divisible by the strides is refused");
    mms_backend_free(be);
    mms_model_free(m);
}

/* The tiny fixture model of the thread tests, or bail out. */
static struct mms_model *
tiny_model(const char *dir)
{
    char path[4096], why[512];
    struct mms_model *m = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-separate.safetensors", dir);
    if (mms_model_load(path, &m, why, sizeof why) < 0) {
        printf("Bail out! %s\n", why);
        exit(1);
    }
    return m;
}

static int
os_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* [infer] threads is kept by the whole pass, oneDNN's convolutions included: OpenMP keeps the
 * threads a parallel region has started, so after a pass on one thread the process still has
 * one thread, and after a pass on two, two (which shows that the count can move). Runs first,
 * before any other pass has started threads. */
static void
test_threads(const char *dir)
{
    struct mms_model *m = tiny_model(dir);
    const int64_t *tile = mms_model_card(m)->inf.patch;
    size_t vox = (size_t)(tile[0] * tile[1] * tile[2]);
    int nc = mms_model_card(m)->arch.num_classes;
    float *in = calloc(vox, sizeof(float)), *logits = malloc(vox * (size_t)nc * sizeof(float));
    int seen[2] = {0, 0};
    for (int t = 1; t <= 2; t++) {
        struct mms_backend *be = NULL;
        struct mms_net *net = NULL;
        struct mms_backend_params bp = {.threads = t};
        for (size_t i = 0; i < vox; i++)
            in[i] = (float)((i * 2654435761u) % 1000) * 1e-3f;
        int rc = mms_backend_open("cpu", &bp, &be);
        if (rc == 0)
            rc = mms_net_new(m, be, tile, 0, &net);
        if (rc == 0)
            rc = mms_net_forward(net, in, 1, logits);
        seen[t - 1] = rc == 0 ? os_threads() : -1;
        mms_net_free(net);
        mms_backend_free(be);
    }
    ok(seen[0] == 1, "threads = 1: the pass ran on the calling thread alone (%d threads)", seen[0]);
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        skip("threads = 2: one core online");
    else
        ok(seen[1] == 2, "threads = 2: the pass ran on two threads (%d)", seen[1]);
    free(in);
    free(logits);
    mms_model_free(m);
}

/* How many of the process's threads may run on exactly the CPUs of list. */
static int
tasks_on(const char *list)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[300], line[512];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "Cpus_allowed_list:", 18) != 0)
                continue;
            char *v = line + 18;
            v += strspn(v, " \t");
            v[strcspn(v, "\n")] = '\0';
            n += strcmp(v, list) == 0;
        }
        if (f != NULL)
            fclose(f);
    }
    closedir(d);
    return n;
}

struct passes {
    struct mms_net *net;
    const float *in;
    float *logits;
    atomic_bool stop;
    int rc, runs;
    struct mms_cpus before, after; /* the calling thread's CPUs around the passes */
};

static void *
run_passes(void *arg)
{
    struct passes *p = arg;
    mms_cpus_get(&p->before);
    while (!atomic_load(&p->stop) && p->rc == 0) {
        p->rc = mms_net_forward(p->net, p->in, 1, p->logits);
        p->runs++;
    }
    mms_cpus_get(&p->after);
    return NULL;
}

/* [infer] cpus (backend params cpus): while passes run on two threads with cpus = one CPU,
 * both threads of the pass (the caller and its OpenMP worker) are seen on that CPU alone;
 * after the passes the caller has its own CPUs again, and no thread is left on that CPU. */
static void
test_cpus(const char *dir)
{
    struct mms_cpus allowed, one;
    if (mms_cpus_get(&allowed) < 0 || mms_cpus_count(&allowed) < 2) {
        skip("cpus: fewer than two CPUs to choose from");
        skip("cpus: fewer than two CPUs to choose from");
        return;
    }
    int last = MMS_CPUS_MAX - 1;
    while (!mms_cpus_has(&allowed, last))
        last--;
    char list[16], why[512];
    snprintf(list, sizeof list, "%d", last);
    mms_cpus_parse(list, &one, why, sizeof why);
    struct mms_model *m = tiny_model(dir);
    const int64_t *tile = mms_model_card(m)->inf.patch;
    size_t vox = (size_t)(tile[0] * tile[1] * tile[2]);
    int nc = mms_model_card(m)->arch.num_classes;
    struct passes p = {.in = calloc(vox, sizeof(float)),
                       .logits = malloc(vox * (size_t)nc * sizeof(float))};
    atomic_init(&p.stop, false);
    struct mms_backend *be = NULL;
    struct mms_backend_params bp = {.threads = 2, .cpus = &one};
    int rc = mms_backend_open("cpu", &bp, &be);
    if (rc == 0)
        rc = mms_net_new(m, be, tile, 0, &p.net);
    int most = 0;
    pthread_t t;
    if (rc == 0 && pthread_create(&t, NULL, run_passes, &p) == 0) {
        double end = mms_mono_s() + 0.5;
        while (mms_mono_s() < end) {
            int k = tasks_on(list);
            most = k > most ? k : most;
        }
        atomic_store(&p.stop, true);
        pthread_join(t, NULL);
    }
    ok(rc == 0 && p.rc == 0 && most == 2,
       "cpus = %s, threads = 2: both threads of the pass seen on CPU %s alone (%d, %d passes)",
       list, list, most, p.runs);
    ok(rc == 0 && mms_cpus_equal(&p.before, &p.after) && tasks_on(list) == 0,
       "after the passes the caller has its CPUs back and no thread is left on CPU %s", list);
    mms_net_free(p.net);
    mms_backend_free(be);
    free((void *)p.in);
    free(p.logits);
    mms_model_free(m);
}

int
main(void)
{
    const char *dir = getenv("srcdir");
    if (dir == NULL)
        dir = ".";
    plan(4 + (int)N_VARIANTS * 3 + 4 + 2 * 3 + (int)N_FAMILIES * 3 + 4, 600);
    test_threads(dir);
    test_cpus(dir);
    for (size_t i = 0; i < N_VARIANTS; i++)
        test_variant(dir, variants[i]);
    test_big(dir);
    test_logits(dir, "ensemble", 2);
    test_logits(dir, "plain-ensemble", 2);
    for (size_t i = 0; i < N_FAMILIES; i++)
        test_logits(dir, families[i], 0);
    test_errors(dir);
    return done_testing();
}
