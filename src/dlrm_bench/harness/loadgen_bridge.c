/* A native sample queue between LoadGen's C API and the Python harness.
 *
 * LoadGen calls `bridge_issue` (registered through mlperf::c::ConstructSUT) on its own threads: the new samples
 * are appended to one growable queue under a mutex, without Python and without the GIL. The harness's batcher
 * thread calls `bridge_take` through ctypes (which releases the GIL while it waits): it blocks until samples are
 * queued, then until enough pairs are queued or `max_wait_s` has passed since the head sample's own arrival, and
 * copies out at most one batch of pairs. `bridge_complete` builds LoadGen's response records for a finished batch
 * (one float32 prediction per pair, consecutive samples' predictions back to back in one buffer) and hands them
 * to LoadGen's QuerySamplesComplete in one call.
 *
 * One queue per process: LoadGen runs one test at a time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    uint64_t id;    /* LoadGen's response id */
    uint64_t index; /* QSL sample index */
} Sample;

/* LoadGen's QuerySampleResponse is 3 uint64 words (id, data address, size in bytes), plus int64 n_tokens in
 * LoadGen >= 4.1: records are written as words (bridge_complete). */

typedef void (*CompleteFn)(void *responses, size_t count);

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_issue_lock = PTHREAD_MUTEX_INITIALIZER; /* one bridge_issue at a time */
static int g_filling = 0; /* a large issue is writing past g_tail: bridge_take must not move the queue */
static pthread_cond_t g_ready;
static int g_cond_ready = 0;
static Sample *g_queue = NULL;
static size_t g_head = 0, g_tail = 0, g_capacity = 0;
static const int64_t *g_lengths = NULL; /* pairs per QSL sample index */
static size_t g_num_samples = 0;
static uint64_t g_queued_pairs = 0;
static uint64_t g_wake_pairs = 1;
/* When samples arrived: one record per publish, for the samples up to `end` in g_issued's count. The head
 * sample's arrival is the first record ending past g_taken (samples taken so far), so a sample left behind by a
 * take keeps its own arrival time. */
typedef struct {
    uint64_t end;
    double time;
} Arrival;
static Arrival *g_arrivals = NULL;
static size_t g_arrival_head = 0, g_arrival_tail = 0, g_arrival_capacity = 0;
static uint64_t g_taken = 0;
static int g_stopped = 0;
static uint64_t g_issued = 0;
static CompleteFn g_complete = NULL;
static int g_response_words = 4;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void init_cond(void) {
    if (g_cond_ready) return;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g_ready, &attr);
    pthread_condattr_destroy(&attr);
    g_cond_ready = 1;
}

/* Prepare for one test: LoadGen's C QuerySamplesComplete, the response record size (3 or 4 words), the pairs of
 * every QSL sample (int64 [num_samples], kept alive by the caller until the next reset), and how many queued
 * pairs wake the batcher early. Returns 0, or -1 when the queue cannot be allocated. */
int bridge_reset(void *complete_fn, int response_words, const int64_t *lengths, size_t num_samples,
                 uint64_t wake_pairs) {
    pthread_mutex_lock(&g_lock);
    init_cond();
    g_complete = (CompleteFn)complete_fn;
    g_response_words = response_words == 3 ? 3 : 4;
    g_lengths = lengths;
    g_num_samples = num_samples;
    g_wake_pairs = wake_pairs ? wake_pairs : 1;
    g_queued_pairs = 0;
    g_head = g_tail = 0;
    g_filling = 0;
    g_stopped = 0;
    g_issued = 0;
    g_taken = 0;
    g_arrival_head = g_arrival_tail = 0;
    if (g_queue == NULL) {
        g_capacity = 1 << 16;
        g_queue = (Sample *)malloc(g_capacity * sizeof(Sample));
    }
    int rc = g_queue ? 0 : -1;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* Make room for `n` more samples at the tail (caller holds the lock). */
static int reserve(size_t n) {
    if (g_head > 0 && g_tail + n > g_capacity) {
        memmove(g_queue, g_queue + g_head, (g_tail - g_head) * sizeof(Sample));
        g_tail -= g_head;
        g_head = 0;
    }
    if (g_tail + n <= g_capacity) return 0;
    size_t capacity = g_capacity;
    while (g_tail + n > capacity) capacity *= 2;
    Sample *grown = (Sample *)realloc(g_queue, capacity * sizeof(Sample));
    if (grown == NULL) return -1;
    g_queue = grown;
    g_capacity = capacity;
    return 0;
}

/* Pairs of samples[0..count). */
static uint64_t pairs_in(const Sample *samples, size_t count) {
    uint64_t pairs = 0;
    for (size_t i = 0; i < count; ++i) {
        size_t index = (size_t)samples[i].index;
        pairs += index < g_num_samples ? (uint64_t)g_lengths[index] : 0;
    }
    return pairs;
}

/* Record that the samples up to `end` (in g_issued's count) arrived now (caller holds the lock). */
static void record_arrival(uint64_t end) {
    if (g_arrival_tail == g_arrival_capacity && g_arrival_head > 0) {
        memmove(g_arrivals, g_arrivals + g_arrival_head, (g_arrival_tail - g_arrival_head) * sizeof(Arrival));
        g_arrival_tail -= g_arrival_head;
        g_arrival_head = 0;
    }
    if (g_arrival_tail == g_arrival_capacity) {
        size_t capacity = g_arrival_capacity ? 2 * g_arrival_capacity : 1 << 12;
        Arrival *grown = (Arrival *)realloc(g_arrivals, capacity * sizeof(Arrival));
        if (grown == NULL) abort(); /* LoadGen would wait forever for these samples: fail loudly instead */
        g_arrivals = grown;
        g_arrival_capacity = capacity;
    }
    g_arrivals[g_arrival_tail].end = end;
    g_arrivals[g_arrival_tail].time = now_s();
    ++g_arrival_tail;
}

/* Make the `count` samples written at the tail queued (they carry `pairs` pairs) and wake the batcher (caller
 * holds the lock). */
static void publish(size_t count, uint64_t pairs) {
    int was_empty = g_tail == g_head;
    g_tail += count;
    g_issued += count;
    if (count > 0) record_arrival(g_issued);
    g_queued_pairs += pairs;
    if (was_empty || g_queued_pairs >= g_wake_pairs) pthread_cond_signal(&g_ready);
}

/* mlperf::c::IssueQueryCallback. One issue at a time (g_issue_lock). A small one is copied in under the lock. A
 * large one (Offline's single query holds every sample: 23.8M for 30 s at 720K/s, 380 MB first touched here) gets
 * its room first, is copied in piece by piece without the lock, and each piece is published as it lands, so the
 * batcher starts on the first piece instead of after the whole copy. Meanwhile `bridge_take` leaves the queue
 * where it is (g_filling). */
enum { ISSUE_PIECE = 1 << 16 };

void bridge_issue(uintptr_t client_data, const Sample *samples, size_t count) {
    (void)client_data;
    pthread_mutex_lock(&g_issue_lock);
    pthread_mutex_lock(&g_lock);
    if (reserve(count) != 0) {
        /* Out of memory: LoadGen would wait forever for these samples; fail loudly instead. */
        pthread_mutex_unlock(&g_lock);
        abort();
    }
    if (count <= ISSUE_PIECE) {
        memcpy(g_queue + g_tail, samples, count * sizeof(Sample));
        publish(count, pairs_in(samples, count));
        pthread_mutex_unlock(&g_lock);
        pthread_mutex_unlock(&g_issue_lock);
        return;
    }
    g_filling = 1;
    pthread_mutex_unlock(&g_lock);
    for (size_t done = 0; done < count;) {
        size_t n = count - done < ISSUE_PIECE ? count - done : ISSUE_PIECE;
        /* g_queue and g_tail stay put while g_filling: only this thread moves them */
        memcpy(g_queue + g_tail, samples + done, n * sizeof(Sample));
        uint64_t pairs = pairs_in(samples + done, n);
        pthread_mutex_lock(&g_lock);
        publish(n, pairs);
        pthread_mutex_unlock(&g_lock);
        done += n;
    }
    pthread_mutex_lock(&g_lock);
    g_filling = 0;
    pthread_mutex_unlock(&g_lock);
    pthread_mutex_unlock(&g_issue_lock);
}

/* mlperf::c::FlushQueriesCallback: nothing is held back, so nothing to flush. */
void bridge_flush(void) {}

static uint64_t pairs_of(const Sample *s) {
    return (size_t)s->index < g_num_samples ? (uint64_t)g_lengths[s->index] : 0;
}

/* Forget the arrival records of the `n` samples just taken (caller holds the lock). */
static void drop_arrivals(size_t n) {
    g_taken += n;
    while (g_arrival_head < g_arrival_tail && g_arrivals[g_arrival_head].end <= g_taken) ++g_arrival_head;
    if (g_arrival_head == g_arrival_tail) g_arrival_head = g_arrival_tail = 0;
}

/* Wait for samples, then until `want_pairs` pairs are queued or the head sample has waited `max_wait_s` since it
 * arrived; copy to `out` the longest prefix of at most `max_n` samples and at most `max_pairs` pairs (at least
 * one sample). Returns the count, or -1 once stopped and empty. */
int64_t bridge_take(Sample *out, size_t max_n, uint64_t max_pairs, uint64_t want_pairs, double max_wait_s) {
    pthread_mutex_lock(&g_lock);
    while (g_tail == g_head && !g_stopped) pthread_cond_wait(&g_ready, &g_lock);
    if (g_tail == g_head) {
        pthread_mutex_unlock(&g_lock);
        return -1;
    }
    double deadline = g_arrivals[g_arrival_head].time + max_wait_s;
    while (g_queued_pairs < want_pairs && !g_stopped) {
        double left = deadline - now_s();
        if (left <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(left * 1e9);
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        if (pthread_cond_timedwait(&g_ready, &g_lock, &ts) == ETIMEDOUT) break;
    }
    size_t available = g_tail - g_head, n = 0;
    uint64_t pairs = 0;
    while (n < available && n < max_n) {
        uint64_t next = pairs_of(g_queue + g_head + n);
        if (n > 0 && pairs + next > max_pairs) break;
        pairs += next;
        ++n;
    }
    g_queued_pairs -= pairs;
    memcpy(out, g_queue + g_head, n * sizeof(Sample));
    g_head += n;
    if (g_head == g_tail && !g_filling) g_head = g_tail = 0;
    drop_arrivals(n);
    pthread_mutex_unlock(&g_lock);
    return (int64_t)n;
}

/* Wake every waiting `bridge_take`; it returns what is still queued, then -1. */
void bridge_stop(void) {
    pthread_mutex_lock(&g_lock);
    init_cond();
    g_stopped = 1;
    pthread_cond_broadcast(&g_ready);
    pthread_mutex_unlock(&g_lock);
}

/* Samples LoadGen issued since the last reset. */
uint64_t bridge_issued(void) {
    pthread_mutex_lock(&g_lock);
    uint64_t n = g_issued;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* Complete `n` samples: ids[i] gets pairs[i] float32 predictions starting where sample i-1's ended in
 * `predictions`. Responses go to LoadGen in chunks of 4096 records of g_response_words words (id, data address,
 * size in bytes[, n_tokens = 0]). Returns 0, or -1 without a reset. */
int bridge_complete(const uint64_t *ids, const int64_t *pairs, const float *predictions, size_t n) {
    enum { CHUNK = 4096 };
    CompleteFn complete = g_complete;
    if (complete == NULL) return -1;
    const size_t words = (size_t)g_response_words;
    uint64_t records[CHUNK * 4];
    uint64_t address = (uint64_t)(uintptr_t)predictions;
    for (size_t done = 0; done < n;) {
        size_t m = n - done < CHUNK ? n - done : CHUNK;
        for (size_t i = 0; i < m; ++i) {
            uint64_t *record = records + i * words;
            uint64_t bytes = (uint64_t)pairs[done + i] * sizeof(float);
            record[0] = ids[done + i];
            record[1] = address;
            record[2] = bytes;
            if (words == 4) record[3] = 0;
            address += bytes;
        }
        complete(records, m);
        done += m;
    }
    return 0;
}
