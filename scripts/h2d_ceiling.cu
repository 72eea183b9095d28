// The copy ceilings of a machine with one or two GPUs, for scripts/bench-multi-gpu.sh: pinned
// host-to-device copies of 1 GiB to each device alone and to both at once, and the device-to-
// device (peer) copy rate. Prints one JSON object. Build: nvcc -O2 h2d_ceiling.cu -o h2d_ceiling
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        cudaError_t e = (x);                                                            \
        if (e != cudaSuccess) {                                                         \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e));                     \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main() {
    int n = 0;
    CHECK(cudaGetDeviceCount(&n));
    if (n > 2) n = 2;
    const size_t bytes = 1ull << 30;
    void* host = nullptr;
    CHECK(cudaMallocHost(&host, bytes));
    memset(host, 1, bytes);
    void* dev[2] = {nullptr, nullptr};
    cudaStream_t st[2];
    for (int d = 0; d < n; d++) {
        CHECK(cudaSetDevice(d));
        CHECK(cudaMalloc(&dev[d], bytes));
        CHECK(cudaStreamCreate(&st[d]));
    }
    // Best of three of copying to every device in `mask` at once; GB/s over all bytes moved.
    auto h2d = [&](int mask) -> double {
        double best = 1e9;
        for (int rep = 0; rep < 4; rep++) {
            auto t0 = std::chrono::steady_clock::now();
            for (int d = 0; d < n; d++)
                if (mask & (1 << d)) {
                    cudaSetDevice(d);
                    cudaMemcpyAsync(dev[d], host, bytes, cudaMemcpyHostToDevice, st[d]);
                }
            for (int d = 0; d < n; d++)
                if (mask & (1 << d)) {
                    cudaSetDevice(d);
                    cudaStreamSynchronize(st[d]);
                }
            double t = seconds_since(t0);
            if (rep > 0 && t < best) best = t;
        }
        return __builtin_popcount(mask) * bytes / best / 1e9;
    };
    printf("{\"devices\": %d, \"h2d_pinned_1GiB_GBps\": {\"cuda0\": %.1f", n, h2d(1));
    if (n == 2) {
        printf(", \"cuda1\": %.1f, \"both_at_once_total\": %.1f}", h2d(2), h2d(3));
        int can = 0;
        CHECK(cudaDeviceCanAccessPeer(&can, 1, 0));
        if (can) {
            cudaSetDevice(1);
            cudaDeviceEnablePeerAccess(0, 0);
            cudaSetDevice(0);
            cudaDeviceEnablePeerAccess(1, 0);
        }
        double best = 1e9;
        for (int rep = 0; rep < 4; rep++) {
            auto t0 = std::chrono::steady_clock::now();
            CHECK(cudaMemcpyPeerAsync(dev[1], 1, dev[0], 0, bytes, st[0]));
            CHECK(cudaStreamSynchronize(st[0]));
            double t = seconds_since(t0);
            if (rep > 0 && t < best) best = t;
        }
        printf(", \"peer_access\": %s, \"peer_copy_1GiB_GBps\": %.1f", can ? "true" : "false", bytes / best / 1e9);
    } else {
        printf("}");
    }
    printf("}\n");
    return 0;
}
