// Transposed-convolution kernels for the `opencl` backend.
//
// Every parameter arrives as an integer -D define, written by the launcher from a config validated against the
// backend's space and from the (validated) problem; nothing else reaches this source. All offsets are 64-bit.
//
// The three convolutions are written as implicit GEMMs over inputs re-laid out channels-last with a zero border
// (kernel `pad_cl`), so the inner loops have no bounds tests:
//   conv   : out[n, m, pixel] = sum_{tap, kc} Wt[tap, kc, m] * In[n, pixel*stride + tap offset, kc]
//            forward (kc = C_in, m = C_out), one launch covers every stride phase (dimension 2), each phase a dense
//            stride-1 convolution with only its own taps (no zero multiplies); DIRECT=1 is the plain gather
//            over all taps with the divisibility test; backward_input is the same kernel (a strided conv2d of gy).
//   wgrad  : partial[split, g, c, tap, o] = sum_{pixels in split} x[pixel, c] * gy[pixel*s + tap offset, o]
//   bgrad  : partial[c, split] = sum gy[n, c, :, :]
// Each work-item keeps a register tile: TH x TW pixels (or CT channels) times MB vectors of VEC output channels.

#if DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double T;
#define TNAME double
#else
typedef float T;
#define TNAME float
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#ifndef VEC
#define VEC 1
#endif
#if VEC == 1
typedef T VT;
#define VLOAD(off, p) (*((p) + (off)))
#else
typedef CAT(TNAME, VEC) VT;
#define VLOAD(off, p) CAT(vload, VEC)(0, (p) + (off))
#endif

// Lane i of a vector (VEC == 1: the scalar itself).
#if VEC == 1
#define LANE(v, i) (v)
#else
inline T lane_(VT v, int i) {
    T tmp[VEC];
    CAT(vstore, VEC)(v, 0, tmp);
    return tmp[i];
}
#define LANE(v, i) lane_(v, i)
#endif

// ---- layout change: NCHW (n, G*KC, H, W) -> channels-last with a zero border (G, n, HP, WP, KCP) -----------------
// One work-item per padded row (g, n, r): per-element work-items cost more in PoCL's scheduling than the copy.
__kernel void pad_cl(__global const T* restrict src, __global T* restrict dst, int nb, int kc, int kcp, int h,
                     int w, int hp, int wp, int pt, int pl, int groups) {
    const long row = get_global_id(0);  // over groups * nb * hp
    if (row >= (long)groups * nb * hp) return;
    const int r = (int)(row % hp);
    const long gn = row / hp;
    const int n = (int)(gn % nb), g = (int)(gn / nb);
    const int ih = r - pt;
    __global T* out = dst + row * wp * kcp;
    if (ih < 0 || ih >= h) {
        for (long i = 0; i < (long)wp * kcp; ++i) out[i] = (T)0;
        return;
    }
    const long plane = (long)h * w;
    __global const T* in = src + (((long)n * groups + g) * kc * h + ih) * (long)w;
    for (int c = 0; c < wp; ++c) {
        const int iw = c - pl;
        __global T* o = out + (long)c * kcp;
        if (iw < 0 || iw >= w) {
            for (int k = 0; k < kcp; ++k) o[k] = (T)0;
        } else {
            for (int k = 0; k < kc; ++k) o[k] = in[k * plane + iw];
            for (int k = kc; k < kcp; ++k) o[k] = (T)0;
        }
    }
}

// ---- NCHW (n, G*KC, H, W) -> channels-first with a zero border (G, n, KC, HP, WP); one work-item per padded row
__kernel void pad_cf(__global const T* restrict src, __global T* restrict dst, int nb, int kc, int h, int w, int hp,
                     int wp, int pt, int pl, int groups) {
    const long row = get_global_id(0);  // over groups * nb * kc * hp
    if (row >= (long)groups * nb * kc * hp) return;
    const int r = (int)(row % hp);
    const long plane = row / hp;  // (g, n, k)
    const int k = (int)(plane % kc);
    const long gn = plane / kc;
    const int n = (int)(gn % nb), g = (int)(gn / nb);
    const int ih = r - pt;
    __global T* out = dst + row * wp;
    if (ih < 0 || ih >= h) {
        for (int c = 0; c < wp; ++c) out[c] = (T)0;
        return;
    }
    __global const T* in = src + ((((long)n * groups + g) * kc + k) * h + ih) * (long)w;
    for (int c = 0; c < wp; ++c) {
        const int iw = c - pl;
        out[c] = (iw < 0 || iw >= w) ? (T)0 : in[iw];
    }
}

// ---- weights into the conv kernel's layout: Wt[phase, g, tap j, kc, m] = w[g*SG + kc*SK + m*SM + taps[phase, j]]
// (taps[...] < 0: zero). One work-item per (m, kc, phase*g) walks its taps: for forward these are one cache line
// of w, and consecutive work-items write consecutive m, so both sides stream.
__kernel void wlayout(__global const T* restrict src, __global const int* restrict taps, __global T* restrict dst,
                      int m_count, int mp, int kcp, int nt, int groups, long sg, long sk, long sm) {
    const int m = get_global_id(0), kc = get_global_id(1), pg = get_global_id(2);
    if (m >= mp || kc >= kcp) return;
    const int ph = pg / groups, g = pg % groups;
    __global const int* tp = taps + (long)ph * nt;
    __global T* out = dst + ((long)pg * nt * kcp + kc) * mp + m;
    const long base = g * sg + kc * sk + m * sm;
    for (int j = 0; j < nt; ++j) {
        const int t = tp[j];
        out[(long)j * kcp * mp] = (m < m_count && t >= 0) ? src[base + t] : (T)0;
    }
}

#ifdef CONV
// Defines: NB G KC KCP M MP HP WP HO WO RS CS RDH RDW OSH OSW NTH NTW TH TW MB VEC LOCAL_W HAS_BIAS DIRECT
//          (DIRECT: SH SW DH DW PT PL H W)
// phases: per phase 8 ints: Qh Qw RB CB OBH OBW nth ntw (RB/CB: padded input row/col of pixel (0,0), tap 0).
#define MW (VEC * MB)
#define MBLOCKS (MP / MW)
#define SLAB (NTH * NTW * KCP * MW)

__kernel void conv(__global const T* restrict X, __global const T* restrict Wt, __global const T* restrict B,
                   __global T* restrict Y, __global const int* restrict phases) {
    const int ph = get_global_id(2);
    __global const int* P = phases + ph * 8;
    const int Qh = P[0], Qw = P[1], RB = P[2], CB = P[3], OBH = P[4], OBW = P[5], nth = P[6], ntw = P[7];
    const int tiles_w = (Qw + TW - 1) / TW, tiles_h = (Qh + TH - 1) / TH;
    const long t = get_global_id(0);
    const int mblk = get_global_id(1);
    // Work-items past the end stay alive (clamped, storing nothing) when KB puts barriers in the k loop.
    const int active = mblk / MBLOCKS < G && t < (long)NB * tiles_h * tiles_w;
    const int g = min(mblk / MBLOCKS, G - 1);
    const int m0 = (mblk % MBLOCKS) * MW;
    __global const T* wbase = Wt + (((long)ph * G + g) * NTH * NTW) * (long)KCP * MP + m0;
#if LOCAL_W
    // The work-group's weight slab (all taps, all kc, its MW channels), staged once; LY == 1 so one slab.
    __local T wl[SLAB];
    {
        const int lid = get_local_id(0), lsz = get_local_size(0);
        {
            for (int i = lid; i < SLAB; i += lsz) {
                const int mm = i % MW;
                const long row = i / MW;  // (tap, kc)
                wl[i] = wbase[row * MP + mm];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#define WROW(tap, k) (wl + ((long)(tap) * KCP + (k)) * MW)
#else
#define WROW(tap, k) (wbase + ((long)(tap) * KCP + (k)) * MP)
#endif
#if !KB
    if (!active) return;
#endif
    const long tc = active ? t : 0;
    const int n = (int)(tc / ((long)tiles_h * tiles_w));
    const int rem = (int)(tc % ((long)tiles_h * tiles_w));
    const int a0 = (rem / tiles_w) * TH, b0 = (rem % tiles_w) * TW;
    const long img = ((long)g * NB + n) * HP;

    VT acc[TH][TW][MB];
#pragma unroll
    for (int i = 0; i < TH; ++i)
#pragma unroll
        for (int j = 0; j < TW; ++j)
#pragma unroll
            for (int b = 0; b < MB; ++b) acc[i][j][b] = (VT)0;

    for (int jh = 0; jh < nth; ++jh) {
        for (int jw = 0; jw < ntw; ++jw) {
            long off[TH][TW];
#if DIRECT
            T msk[TH][TW];
#endif
#pragma unroll
            for (int i = 0; i < TH; ++i) {
#pragma unroll
                for (int j = 0; j < TW; ++j) {
                    const int a = min(a0 + i, Qh - 1), bb = min(b0 + j, Qw - 1);  // clamped: computed, not stored
#if DIRECT
                    // canvas position of output (a, bb) minus tap (jh, jw); it must be a multiple of the stride
                    const int ch = a + PT - jh * DH, cw = bb + PL - jw * DW;
                    const int ok = ch >= 0 && cw >= 0 && ch % SH == 0 && cw % SW == 0 && ch / SH < H && cw / SW < W;
                    msk[i][j] = ok ? (T)1 : (T)0;
                    off[i][j] = ok ? ((img + ch / SH) * WP + cw / SW) * KCP : 0;
#else
                    off[i][j] = ((img + (long)a * RS + RB + jh * RDH) * WP + (long)bb * CS + CB + jw * RDW) * KCP;
#endif
                }
            }
            const int tap = jh * NTW + jw;
#if KB
            // k-blocks separated by barriers: PoCL then runs every work-item of the group through one block before
            // the next, so the block's weights stay in cache across the group's pixel tiles.
            for (int kb = 0; kb < KC; kb += KB) {
            barrier(CLK_LOCAL_MEM_FENCE);
            const int kend = min(kb + KB, KC);
            for (int k = kb; k < kend; ++k) {
#else
            for (int k = 0; k < KC; ++k) {
#endif
                VT wv[MB];
#pragma unroll
                for (int b = 0; b < MB; ++b) wv[b] = VLOAD(b * VEC, WROW(tap, k));
#pragma unroll
                for (int i = 0; i < TH; ++i) {
#pragma unroll
                    for (int j = 0; j < TW; ++j) {
#if DIRECT
                        const VT xv = (VT)(X[off[i][j] + k] * msk[i][j]);
#else
                        const VT xv = (VT)(X[off[i][j] + k]);
#endif
#pragma unroll
                        for (int b = 0; b < MB; ++b) acc[i][j][b] = fma(xv, wv[b], acc[i][j][b]);
                    }
                }
            }
#if KB
            }
#endif
        }
    }
    if (!active) return;

    // Store: pixel (a, b) of this phase is output (a*OSH + OBH, b*OSW + OBW); vectors run over channels.
#pragma unroll
    for (int i = 0; i < TH; ++i) {
        const int a = a0 + i;
        if (a >= Qh) break;
        const long orow = (long)a * OSH + OBH;
#pragma unroll
        for (int j = 0; j < TW; ++j) {
            const int bb = b0 + j;
            if (bb >= Qw) break;
            const long ocol = (long)bb * OSW + OBW;
#pragma unroll
            for (int b = 0; b < MB; ++b) {
#pragma unroll
                for (int l = 0; l < VEC; ++l) {
                    const int m = m0 + b * VEC + l;
                    if (m < M) {
                        T v = LANE(acc[i][j][b], l);
#if HAS_BIAS
                        v += B[g * M + m];
#endif
                        Y[((((long)n * G + g) * M + m) * HO + orow) * WO + ocol] = v;
                    }
                }
            }
        }
    }
}
#endif  // CONV

#ifdef CONVW
// Forward by stride phases, vectorized along output columns (for few output channels): each work-item computes
// TH rows x TW vectors of VEC consecutive phase columns for MB output channels. Input: channels-first with a zero
// border (G, NB, KC, HP, WP); weights Wt[phase, g, tap, kc, MP] as scalars.
// Defines: NB G KC M MP HP WP HO WO RDH RDW OSH OSW NTH NTW TH TW MB VEC HAS_BIAS
#define MBLOCKS (MP / MB)
__kernel void conv_w(__global const T* restrict X, __global const T* restrict Wt, __global const T* restrict B,
                     __global T* restrict Y, __global const int* restrict phases) {
    const int ph = get_global_id(2);
    __global const int* P = phases + ph * 8;
    const int Qh = P[0], Qw = P[1], RB = P[2], CB = P[3], OBH = P[4], OBW = P[5], nth = P[6], ntw = P[7];
    const int tiles_w = (Qw + TW * VEC - 1) / (TW * VEC), tiles_h = (Qh + TH - 1) / TH;
    const long t = get_global_id(0);
    const int mblk = get_global_id(1);
    const int g = mblk / MBLOCKS;
    const int m0 = (mblk % MBLOCKS) * MB;
    if (g >= G || t >= (long)NB * tiles_h * tiles_w) return;
    const int n = (int)(t / ((long)tiles_h * tiles_w));
    const int rem = (int)(t % ((long)tiles_h * tiles_w));
    const int a0 = (rem / tiles_w) * TH, b0 = (rem % tiles_w) * (TW * VEC);
    __global const T* wbase = Wt + (((long)ph * G + g) * NTH * NTW) * (long)KC * MP + m0;
    __global const T* img = X + ((long)g * NB + n) * KC * (long)HP * WP;

    VT acc[TH][TW][MB];
#pragma unroll
    for (int i = 0; i < TH; ++i)
#pragma unroll
        for (int j = 0; j < TW; ++j)
#pragma unroll
            for (int b = 0; b < MB; ++b) acc[i][j][b] = (VT)0;

    for (int jh = 0; jh < nth; ++jh) {
        for (int jw = 0; jw < ntw; ++jw) {
            long off[TH];
#pragma unroll
            for (int i = 0; i < TH; ++i) {
                const int a = min(a0 + i, Qh - 1);  // clamped rows are computed, not stored
                off[i] = ((long)a + RB + jh * RDH) * WP + b0 + CB + jw * RDW;
            }
            __global const T* wrow = wbase + (long)(jh * NTW + jw) * KC * MP;
            for (int k = 0; k < KC; ++k) {
                __global const T* xk = img + (long)k * HP * WP;
                T wv[MB];
#pragma unroll
                for (int b = 0; b < MB; ++b) wv[b] = wrow[(long)k * MP + b];
#pragma unroll
                for (int i = 0; i < TH; ++i) {
#pragma unroll
                    for (int j = 0; j < TW; ++j) {
                        const VT xv = VLOAD(off[i] + j * VEC, xk);
#pragma unroll
                        for (int b = 0; b < MB; ++b) acc[i][j][b] = fma(xv, (VT)wv[b], acc[i][j][b]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < TH; ++i) {
        const int a = a0 + i;
        if (a >= Qh) break;
        const long orow = (long)a * OSH + OBH;
#pragma unroll
        for (int b = 0; b < MB; ++b) {
            const int m = m0 + b;
            if (m >= M) break;
            __global T* yrow = Y + ((((long)n * G + g) * M + m) * HO + orow) * WO;
#if HAS_BIAS
            const T bias = B[g * M + m];
#else
            const T bias = 0;
#endif
#pragma unroll
            for (int j = 0; j < TW; ++j) {
#pragma unroll
                for (int l = 0; l < VEC; ++l) {
                    const int bb = b0 + j * VEC + l;
                    if (bb < Qw) yrow[(long)bb * OSW + OBW] = LANE(acc[i][j][b], l) + bias;
                }
            }
        }
    }
}
#endif  // CONVW

#ifdef WGRAD
// Defines: NB G CI CIP CO COP H W HP WP KH KW SH SW DH DW CT MB VEC SPLIT ROWS_PER_SPLIT [CI_VEC]
// X: x channels-last (G, NB, H, W, CIP); GY: gy channels-last with a zero border (G, NB, HP, WP, COP)
// Out: partial (SPLIT, G, CIP, KH*KW, COP)

// The end of split `split`'s share [split * ROWS_PER_SPLIT, end) of the NB*H input rows; in row r (image r / H, row
// r % H), channel c0 of group g's x row, and channel o0 of the gy row that tap (kh, kw) reads with it.
inline long wgrad_rows_end(int split) {
    const long end = (long)split * ROWS_PER_SPLIT + ROWS_PER_SPLIT;
    return end < (long)NB * H ? end : (long)NB * H;
}
inline __global const T* wgrad_x_row(__global const T* X, int g, long r, int c0) {
    return X + ((long)g * NB * H + r) * W * CIP + c0;  // a group's rows of all images are contiguous
}
inline __global const T* wgrad_gy_row(__global const T* GY, int g, long r, int kh, int kw, int o0) {
    return GY + ((((long)g * NB + r / H) * HP + (r % H) * SH + kh * DH) * WP + kw * DW) * COP + o0;
}

#if CI_VEC
// Vectors along input channels (few output channels, as an RGB layer's 3): a work-item owns CT output channels
// x MB vectors of VEC input channels; CIP is a multiple of VEC * MB, COP of CT. Full lanes where vectors along 3
// output channels would waste 13 of 16.
#define MW (VEC * MB)
#define CBLOCKS (CIP / MW)
#define OTILES (COP / CT)
__kernel void wgrad(__global const T* restrict X, __global const T* restrict GY, __global T* restrict Out) {
    const int t0 = get_global_id(0);  // tap * CBLOCKS + cblock
    const int t1 = get_global_id(1);  // g * OTILES + otile
    const int split = get_global_id(2);
    if (t0 >= KH * KW * CBLOCKS || t1 >= G * OTILES) return;
    const int tap = t0 / CBLOCKS, c0 = (t0 % CBLOCKS) * MW;
    const int kh = tap / KW, kw = tap % KW;
    const int g = t1 / OTILES, o0 = (t1 % OTILES) * CT;
    VT acc[CT][MB];
#pragma unroll
    for (int i = 0; i < CT; ++i)
#pragma unroll
        for (int b = 0; b < MB; ++b) acc[i][b] = (VT)0;
    const long r_end = wgrad_rows_end(split);
    for (long r = (long)split * ROWS_PER_SPLIT; r < r_end; ++r) {
        __global const T* xrow = wgrad_x_row(X, g, r, c0);
        __global const T* grow = wgrad_gy_row(GY, g, r, kh, kw, o0);
        for (int iw = 0; iw < W; ++iw) {
            VT xv[MB];
#pragma unroll
            for (int b = 0; b < MB; ++b) xv[b] = VLOAD(b * VEC, xrow + (long)iw * CIP);
#pragma unroll
            for (int i = 0; i < CT; ++i) {
                const VT gv = (VT)(grow[(long)iw * SW * COP + i]);
#pragma unroll
                for (int b = 0; b < MB; ++b) acc[i][b] = fma(gv, xv[b], acc[i][b]);
            }
        }
    }
    __global T* out = Out + ((((long)split * G + g) * CIP + c0) * (KH * KW) + tap) * COP + o0;
#pragma unroll
    for (int i = 0; i < CT; ++i)
#pragma unroll
        for (int b = 0; b < MB; ++b)
            for (int l = 0; l < VEC; ++l) out[(long)(b * VEC + l) * KH * KW * COP + i] = LANE(acc[i][b], l);
}
#else
#define MW (VEC * MB)
#define OBLOCKS (COP / MW)
#define CTILES (CIP / CT)
__kernel void wgrad(__global const T* restrict X, __global const T* restrict GY, __global T* restrict Out) {
    const int t0 = get_global_id(0);  // tap * CTILES + ctile
    const int t1 = get_global_id(1);  // g * OBLOCKS + oblock
    const int split = get_global_id(2);
    if (t0 >= KH * KW * CTILES || t1 >= G * OBLOCKS) return;
    const int tap = t0 / CTILES, c0 = (t0 % CTILES) * CT;
    const int kh = tap / KW, kw = tap % KW;
    const int g = t1 / OBLOCKS, o0 = (t1 % OBLOCKS) * MW;
    VT acc[CT][MB];
#pragma unroll
    for (int i = 0; i < CT; ++i)
#pragma unroll
        for (int b = 0; b < MB; ++b) acc[i][b] = (VT)0;
    const long r_end = wgrad_rows_end(split);
    for (long r = (long)split * ROWS_PER_SPLIT; r < r_end; ++r) {
        __global const T* xrow = wgrad_x_row(X, g, r, c0);
        __global const T* grow = wgrad_gy_row(GY, g, r, kh, kw, o0);
        for (int iw = 0; iw < W; ++iw) {
            VT gv[MB];
#pragma unroll
            for (int b = 0; b < MB; ++b) gv[b] = VLOAD(b * VEC, grow + (long)iw * SW * COP);
#pragma unroll
            for (int i = 0; i < CT; ++i) {
                const VT xv = (VT)(xrow[(long)iw * CIP + i]);
#pragma unroll
                for (int b = 0; b < MB; ++b) acc[i][b] = fma(xv, gv[b], acc[i][b]);
            }
        }
    }
    __global T* out = Out + ((((long)split * G + g) * CIP + c0) * (KH * KW) + tap) * COP + o0;
#pragma unroll
    for (int i = 0; i < CT; ++i)
#pragma unroll
        for (int b = 0; b < MB; ++b) {
#if VEC == 1
            out[(long)i * KH * KW * COP + b] = acc[i][b];
#else
            CAT(vstore, VEC)(acc[i][b], 0, out + (long)i * KH * KW * COP + b * VEC);
#endif
        }
}
#endif  // CI_VEC

// gw[(g*CI + c), o, kh, kw] = sum over splits of partial[split, g, c, tap, o]
__kernel void wgrad_reduce(__global const T* restrict Part, __global T* restrict GW) {
    const long i = get_global_id(0);
    const long total = (long)G * CI * CO * KH * KW;
    if (i >= total) return;
    const int tap = (int)(i % (KH * KW));
    const int o = (int)((i / (KH * KW)) % CO);
    const long gc = i / ((long)KH * KW * CO);
    const int c = (int)(gc % CI), g = (int)(gc / CI);
    const long stride = (long)G * CIP * KH * KW * COP;
    __global const T* p = Part + (((long)g * CIP + c) * (KH * KW) + tap) * COP + o;
    T s = 0;
    for (int k = 0; k < SPLIT; ++k) s += p[k * stride];
    GW[i] = s;
}
#endif  // WGRAD

#ifdef BGRAD
// Defines: NB C PLANE SPLIT VEC. Part: (C, SPLIT); each work-item sums a contiguous share of the channel's
// NB planes; bgrad_reduce adds the shares.
#define CHUNK ((NB * (long)PLANE + SPLIT - 1) / SPLIT)
__kernel void bgrad(__global const T* restrict GY, __global T* restrict Part) {
    const int c = get_global_id(0), split = get_global_id(1);
    if (c >= C || split >= SPLIT) return;
    const long begin = (long)split * CHUNK;
    long end = begin + CHUNK;
    if (end > (long)NB * PLANE) end = (long)NB * PLANE;
    VT acc = (VT)0;
    T tail = 0;
    long k = begin;
    while (k < end) {
        const long n = k / PLANE, q = k % PLANE;
        long run = PLANE - q;
        if (run > end - k) run = end - k;
        __global const T* p = GY + (n * C + c) * (long)PLANE + q;
        long v = 0;
        for (; v + VEC <= run; v += VEC) acc += VLOAD(v, p);
        for (; v < run; ++v) tail += p[v];
        k += run;
    }
    T s = tail;
#pragma unroll
    for (int l = 0; l < VEC; ++l) s += LANE(acc, l);
    Part[(long)c * SPLIT + split] = s;
}

// One launch (tiny layers, where a second launch costs as much as the sum): one work-group of SPLIT work-items per
// channel, each summing its share as bgrad does; the shares meet in local memory and the first work-item adds them
// in bgrad_reduce's order (the same result). Global size (C * SPLIT), local size (SPLIT).
__kernel void bgrad_one(__global const T* restrict GY, __global T* restrict GB) {
    __local T shares[SPLIT];
    const int c = get_group_id(0), split = get_local_id(0);
    const long begin = (long)split * CHUNK;
    long end = begin + CHUNK;
    if (end > (long)NB * PLANE) end = (long)NB * PLANE;
    VT acc = (VT)0;
    T tail = 0;
    long k = begin;
    while (k < end) {
        const long n = k / PLANE, q = k % PLANE;
        long run = PLANE - q;
        if (run > end - k) run = end - k;
        __global const T* p = GY + (n * C + c) * (long)PLANE + q;
        long v = 0;
        for (; v + VEC <= run; v += VEC) acc += VLOAD(v, p);
        for (; v < run; ++v) tail += p[v];
        k += run;
    }
    T s = tail;
#pragma unroll
    for (int l = 0; l < VEC; ++l) s += LANE(acc, l);
    shares[split] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (split == 0) {
        T total = 0;
        for (int i = 0; i < SPLIT; ++i) total += shares[i];
        GB[c] = total;
    }
}

__kernel void bgrad_reduce(__global const T* restrict Part, __global T* restrict GB) {
    const int c = get_global_id(0);
    if (c >= C) return;
    T s = 0;
    for (int k = 0; k < SPLIT; ++k) s += Part[(long)c * SPLIT + k];
    GB[c] = s;
}
#endif  // BGRAD
