/* The C ABI onto a CUDA device: a checkpoint replayed into device buffers the caller allocated,
 * and a sync log applied onto them in place, each compared with the same calls on host buffers.
 * Built and run by scripts/gpu-capi.sh on a CUDA machine. Arguments: CHECKPOINT SYNC_LOG. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmsb.h"

#define CHECK(x) do { int rc_ = (x); if (rc_ != 0) { printf("%s: %d %s\n", #x, rc_, mmsb_last_error()); return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc != 3) return 64;
    mmsb_checkpoint *ckpt = NULL;
    CHECK(mmsb_checkpoint_open(argv[1], &ckpt));
    uint64_t n = mmsb_checkpoint_page_count(ckpt);
    mmsb_tensor *host = (mmsb_tensor *)calloc(n, sizeof *host);
    mmsb_tensor *dev = (mmsb_tensor *)calloc(n, sizeof *dev);
    for (uint64_t i = 0; i < n; i++) {
        mmsb_page p;
        CHECK(mmsb_checkpoint_page(ckpt, i, &p));
        host[i] = (mmsb_tensor){p.name, p.dtype, p.shape, p.ndim, malloc(p.len ? p.len : 1), p.len};
        dev[i] = host[i];
        if (cudaMalloc(&dev[i].data, p.len ? p.len : 1) != cudaSuccess) return 2;
        cudaMemset(dev[i].data, 0xAB, p.len ? p.len : 1);
    }
    cudaDeviceSynchronize();
    CHECK(mmsb_replay(argv[1], NULL, 0, MMSB_SEQ_END, -1, host, n));
    CHECK(mmsb_replay(argv[1], NULL, 0, MMSB_SEQ_END, 0, dev, n));
    uint64_t last_host = 0, last_dev = 0;
    CHECK(mmsb_sync_apply(argv[2], 0, MMSB_SEQ_END, -1, host, n, &last_host));
    CHECK(mmsb_sync_apply(argv[2], 0, MMSB_SEQ_END, 0, dev, n, &last_dev));
    int same = last_host == last_dev;
    for (uint64_t i = 0; i < n; i++) {
        void *back = malloc(host[i].len ? host[i].len : 1);
        cudaMemcpy(back, dev[i].data, host[i].len, cudaMemcpyDeviceToHost);
        same &= memcmp(back, host[i].data, host[i].len) == 0;
        free(back);
        free(host[i].data);
        cudaFree(dev[i].data);
    }
    printf("pages %llu, applied to %llu on the device and %llu on the host: device equals host: %s\n",
           (unsigned long long)n, (unsigned long long)last_dev, (unsigned long long)last_host, same ? "yes" : "NO");
    free(host);
    free(dev);
    mmsb_checkpoint_close(ckpt);
    return same ? 0 : 3;
}
