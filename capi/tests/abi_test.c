/* Exercises include/mmsb.h from C; built and run under AddressSanitizer by c_abi.rs, which
 * checks what it prints. Arguments: CHECKPOINT SYNC_LOG MISSING_PATH DAMAGED_CHECKPOINT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmsb.h"

/* FNV-1a, 64 bits: what c_abi.rs compares the bytes by. */
static uint64_t fnv(const unsigned char *p, uint64_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

int main(int argc, char **argv) {
    if (argc != 5) return 64;
    mmsb_checkpoint *ckpt = NULL;
    if (mmsb_checkpoint_open(argv[1], &ckpt) != 0) {
        printf("open failed: %s\n", mmsb_last_error());
        return 1;
    }
    uint64_t n = mmsb_checkpoint_page_count(ckpt);
    printf("pages %llu\n", (unsigned long long)n);
    char hash[65];
    if (mmsb_checkpoint_state_hash(ckpt, hash) != 0) return 2;
    printf("state %s\n", hash);

    mmsb_tensor *tensors = calloc(n, sizeof *tensors);
    for (uint64_t i = 0; i < n; i++) {
        mmsb_page p;
        if (mmsb_checkpoint_page(ckpt, i, &p) != 0) return 3;
        printf("page %llu len %llu name %s dtype %s ndim %zu\n", (unsigned long long)p.id,
               (unsigned long long)p.len, p.name ? p.name : "-", p.dtype ? p.dtype : "-", p.ndim);
        tensors[i] = (mmsb_tensor){p.name, p.dtype, p.shape, p.ndim, malloc(p.len ? p.len : 1), p.len};
    }
    mmsb_page out_of_range;
    printf("page past the end: %d\n", mmsb_checkpoint_page(ckpt, n, &out_of_range));

    const char *paths[] = {argv[1], argv[2]};
    int ok = -1;
    if (mmsb_verify(paths, 1, &ok) != 0) return 4;
    printf("verify ok %d\n", ok);

    /* The checkpoint's pages into host buffers: the log's base. */
    if (mmsb_replay(argv[1], NULL, 0, MMSB_SEQ_END, -1, tensors, n) != 0) {
        printf("replay failed: %s\n", mmsb_last_error());
        return 5;
    }
    for (uint64_t i = 0; i < n; i++) printf("base %s %016llx\n", tensors[i].name, (unsigned long long)fnv(tensors[i].data, tensors[i].len));

    /* The sync log's first step (records 2 to 4, after the BASE record), then the rest. */
    uint64_t last = 0;
    if (mmsb_sync_apply(argv[2], 0, 4, -1, tensors, n, &last) != 0) {
        printf("apply failed: %s\n", mmsb_last_error());
        return 6;
    }
    printf("applied to %llu\n", (unsigned long long)last);
    if (mmsb_sync_apply(argv[2], last + 1, MMSB_SEQ_END, -1, tensors, n, &last) != 0) {
        printf("apply failed: %s\n", mmsb_last_error());
        return 7;
    }
    printf("applied to %llu\n", (unsigned long long)last);
    for (uint64_t i = 0; i < n; i++) printf("synced %s %016llx\n", tensors[i].name, (unsigned long long)fnv(tensors[i].data, tensors[i].len));
    /* From the start again, onto tensors that are no longer the base: refused, named. */
    int code = mmsb_sync_apply(argv[2], 0, MMSB_SEQ_END, -1, tensors, n, &last);
    printf("stale base: %d %s\n", code, strstr(mmsb_last_error(), "does not hold the log's base") ? "named" : mmsb_last_error());

    mmsb_checkpoint *none = NULL;
    code = mmsb_checkpoint_open(argv[3], &none);
    printf("missing: %d %s\n", code, strstr(mmsb_last_error(), argv[3]) ? "names the file" : mmsb_last_error());
    code = mmsb_checkpoint_open(argv[4], &none);
    printf("damaged: %d %s\n", code, strstr(mmsb_last_error(), argv[4]) ? "names the file" : mmsb_last_error());
    printf("null path: %d\n", mmsb_checkpoint_open(NULL, &none));

    for (uint64_t i = 0; i < n; i++) free(tensors[i].data);
    free(tensors);
    mmsb_checkpoint_close(ckpt);
    return 0;
}
