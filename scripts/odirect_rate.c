/* The disk's O_DIRECT read rate for one file, for scripts/cold_rounds.py: THREADS threads each
 * take the next CHUNK-byte piece in turn (so THREADS reads are in flight), as the gpu-limits
 * probe measures it. Prints GB/s. Build: cc -O2 -pthread odirect_rate.c -o odirect_rate
 * Usage: odirect_rate FILE [THREADS] [CHUNK_MIB] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fd;
static off_t size;
static size_t chunk;
static atomic_llong next_at;
static atomic_int failed;

static void *reader(void *arg) {
  (void)arg;
  void *buf;
  if (posix_memalign(&buf, 4096, chunk) != 0) {
    atomic_store(&failed, 1);
    return NULL;
  }
  for (;;) {
    long long at = atomic_fetch_add(&next_at, (long long)chunk);
    if (at >= size) break;
    if (pread(fd, buf, chunk, at) < 0) {
      atomic_store(&failed, 1);
      break;
    }
  }
  free(buf);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE [THREADS] [CHUNK_MIB]\n", argv[0]);
    return 2;
  }
  int threads = argc > 2 ? atoi(argv[2]) : 16;
  chunk = (size_t)(argc > 3 ? atoi(argv[3]) : 8) << 20;
  if (threads < 1 || threads > 256 || chunk == 0) {
    fprintf(stderr, "%s: bad thread count or chunk size\n", argv[0]);
    return 2;
  }
  fd = open(argv[1], O_RDONLY | O_DIRECT);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    perror(argv[1]);
    return 2;
  }
  size = st.st_size;
  pthread_t tids[256];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, reader, NULL);
  for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (atomic_load(&failed)) {
    perror("pread");
    return 2;
  }
  double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%.4f\n", size / secs / 1e9);
  return 0;
}
