/* mmsb's C ABI (libmmsb_c): open and verify checkpoints and logs, replay them into buffers the
 * caller owns (host memory, or a CUDA device's), and apply a sync log's steps in place.
 *
 * Every function that can fail returns 0 on success, 1 when the data is bad (a corrupt file, a
 * record that does not apply, a log of another base) and 2 when the request or the environment
 * is (a missing file, a wrong argument, no CUDA device): the `mmsb` command's exit codes. Then
 * mmsb_last_error() gives the message (the file, the byte offset and what is wrong), valid on
 * the calling thread until its next mmsb call. Strings are UTF-8, NUL-terminated. Checked by
 * capi/tests/c_abi.rs, which compiles capi/tests/abi_test.c against this header under
 * AddressSanitizer. */
#ifndef MMSB_H
#define MMSB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The message of the last failed call on this thread ("" when none failed). */
const char *mmsb_last_error(void);

/* Runs every check of `mmsb verify` on the checkpoints and log segments or directories named by
 * `paths`; *ok is 1 when no problem was found, 0 otherwise (the problems are in
 * mmsb_last_error()). Returns 2 only when the check cannot be run. */
int mmsb_verify(const char *const *paths, size_t n_paths, int *ok);

/* A checkpoint opened for reading (its header and page table checked; no page read). */
typedef struct mmsb_checkpoint mmsb_checkpoint;

/* One page of a checkpoint's table. `name` and `dtype` are NULL when the page has none; they
 * and `shape` point into the checkpoint and live until mmsb_checkpoint_close. */
typedef struct mmsb_page {
    uint64_t id;
    uint64_t len;
    uint64_t epoch;
    uint32_t crc32c;
    const char *name;
    const char *dtype;
    const uint64_t *shape;
    size_t ndim;
} mmsb_page;

int mmsb_checkpoint_open(const char *path, mmsb_checkpoint **out);
void mmsb_checkpoint_close(mmsb_checkpoint *checkpoint);
uint64_t mmsb_checkpoint_page_count(const mmsb_checkpoint *checkpoint);
/* The `index`-th page in id order (0 <= index < page count). */
int mmsb_checkpoint_page(const mmsb_checkpoint *checkpoint, uint64_t index, mmsb_page *out);
/* The state hash, as 64 hex digits and a NUL. */
int mmsb_checkpoint_state_hash(const mmsb_checkpoint *checkpoint, char out[65]);

/* A tensor the caller holds: its name, safetensors dtype (NULL: bytes, no dtype check), shape
 * (ignored when dtype is NULL) and `len` bytes at `data` (host memory, or device memory for
 * the _cuda calls). */
typedef struct mmsb_tensor {
    const char *name;
    const char *dtype;
    const uint64_t *shape;
    size_t ndim;
    void *data;
    uint64_t len;
} mmsb_tensor;

/* "No limit" for a sequence number argument. */
#define MMSB_SEQ_END UINT64_MAX

/* Replays `checkpoint` plus `logs` (up to record `to_seq`) on the CPU, every checksum and record
 * checked, and copies each named page into the buffer of the tensor of that name (its length
 * must be the page's). Pages no tensor names are not copied; a tensor no page has is an error.
 * With `ordinal` >= 0 the buffers are in the memory of CUDA device `ordinal` (the bytes are
 * copied there); with -1, host memory. */
int mmsb_replay(const char *checkpoint, const char *const *logs, size_t n_logs, uint64_t to_seq,
                int ordinal, const mmsb_tensor *tensors, size_t n_tensors);

/* Applies the records of the sync log `log` (written by mmsb.torch.delta or mmsb.numpy.delta)
 * from `from_seq` (0: from the log's start, onto tensors that hold its base, which is checked)
 * to `to_seq` onto the tensors, in place, by name; every tensor of the log's base must be
 * given. With `ordinal` >= 0 the tensors are in the memory of CUDA device `ordinal` and the
 * replay kernels write them there. *last_seq is the last record applied (pass it plus one as
 * the next from_seq). Nothing is written unless every record applies. */
int mmsb_sync_apply(const char *log, uint64_t from_seq, uint64_t to_seq, int ordinal,
                    const mmsb_tensor *tensors, size_t n_tensors, uint64_t *last_seq);

#ifdef __cplusplus
}
#endif

#endif /* MMSB_H */
