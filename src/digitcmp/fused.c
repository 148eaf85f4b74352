/* BatchNorm (training mode) + 2 x 2 max-pool (stride 2) + ReLU of channels_last feature maps,
 * forward and backward, for R independent networks (rounds) stacked along the batch: rows
 * r*N .. r*N+N-1 of the batch are round r's, with statistics of their own.
 *
 * A map is N x H x W x C floats in memory (NCHW tensors in channels_last layout). The channel
 * is the innermost loop, so that the compiler vectorises it; selects are written as
 * ternaries on floats for the same reason (compiled with -fno-trapping-math, see fused.py).
 * Sums run in float over blocks of 64 rows and in double across blocks. For one network whose
 * maps are in directconv.c's lanes layout, the same layer comes after these, below (its
 * evaluation is directconv.c's, with the convolution before it).
 */
#include <math.h>

#define MAXC 1024 /* channels per map; fused.py sends larger maps to PyTorch's operators */
#define BLOCK 63  /* (row & BLOCK) == BLOCK: flush the float partial sums into the doubles */

/* Mean and biased variance of each channel of an M x C map (two passes: no cancellation). */
static void channel_stats(const float *restrict y, long M, int C, double *restrict mean,
                          double *restrict var) {
  float part[MAXC], m32[MAXC];
  for (int c = 0; c < C; c++) { mean[c] = 0; var[c] = 0; part[c] = 0; }
  for (long m = 0; m < M; m++) {
    const float *restrict row = y + m * C;
    for (int c = 0; c < C; c++) part[c] += row[c];
    if ((m & BLOCK) == BLOCK)
      for (int c = 0; c < C; c++) { mean[c] += part[c]; part[c] = 0; }
  }
  for (int c = 0; c < C; c++) { mean[c] = (mean[c] + part[c]) / M; part[c] = 0; m32[c] = (float)mean[c]; }
  for (long m = 0; m < M; m++) {
    const float *restrict row = y + m * C;
    for (int c = 0; c < C; c++) { float d = row[c] - m32[c]; part[c] += d * d; }
    if ((m & BLOCK) == BLOCK)
      for (int c = 0; c < C; c++) { var[c] += part[c]; part[c] = 0; }
  }
  for (int c = 0; c < C; c++) var[c] = (var[c] + part[c]) / M;
}

/* out = relu(maxpool(batchnorm(y))), N/R x H/2 x W/2 x C per round (odd sizes: the last row or
 * column is in no window, as in PyTorch). BatchNorm is a*y + b per channel, so a window's
 * maximum after it is at the window's largest a*y: the raw maximum where a > 0, the minimum
 * where a < 0. Saved for the backward: which of the window's four values won (0-3, as a float)
 * and its normalised value (y - mean) / std. mean and var (biased) are R x C. */
void bn_pool_relu_forward(const float *restrict y, int R, int N, int H, int W, int C,
                          const float *gamma, const float *beta, float eps, double *mean,
                          double *var, float *restrict out, float *restrict which,
                          float *restrict xhat) {
  int Ho = H / 2, Wo = W / 2;
  long M = (long)N * H * W, P = (long)N * Ho * Wo;
  float a[MAXC], b[MAXC], m32[MAXC], inv[MAXC];
  for (int r = 0; r < R; r++) {
    const float *yr = y + r * M * C;
    channel_stats(yr, M, C, mean + r * C, var + r * C);
    for (int c = 0; c < C; c++) {
      m32[c] = (float)mean[r * C + c];
      inv[c] = (float)(1.0 / sqrt(var[r * C + c] + eps));
      a[c] = gamma[r * C + c] * inv[c];
      b[c] = beta[r * C + c] - m32[c] * a[c];
    }
    for (int n = 0; n < N; n++)
      for (int i = 0; i < Ho; i++)
        for (int j = 0; j < Wo; j++) {
          const float *restrict y0 = yr + (((long)n * H + 2 * i) * W + 2 * j) * C;
          const float *restrict y1 = y0 + C, *restrict y2 = y0 + (long)W * C, *restrict y3 = y2 + C;
          long o = r * P * C + (((long)n * Ho + i) * Wo + j) * C;
          float *restrict op = out + o, *restrict wp = which + o, *restrict xp = xhat + o;
          for (int c = 0; c < C; c++) {
            /* The first of equal values wins, as in PyTorch's max-pool. */
            float v = y0[c], best = v * a[c], k = 0, z;
            int t;
            z = y1[c] * a[c]; t = z > best; best = t ? z : best; k = t ? 1 : k; v = t ? y1[c] : v;
            z = y2[c] * a[c]; t = z > best; best = t ? z : best; k = t ? 2 : k; v = t ? y2[c] : v;
            z = y3[c] * a[c]; t = z > best; best = t ? z : best; k = t ? 3 : k; v = t ? y3[c] : v;
            best += b[c];
            op[c] = best > 0 ? best : 0;
            wp[c] = k;
            xp[c] = (v - m32[c]) * inv[c];
          }
        }
  }
}

/* From the gradient of out, the gradients of y (full size, written whole), gamma and beta.
 * With g the gradient reaching the winners (zero where the ReLU was off) and M values per
 * channel, BatchNorm's backward is dy = gamma/std * (g - sum(g)/M - xhat * sum(g*xhat)/M),
 * g being zero at every value that did not win its window. */
void bn_pool_relu_backward(const float *restrict y, const float *restrict grad_out,
                           const float *restrict out, const float *restrict which,
                           const float *restrict xhat, int R, int N, int H, int W, int C,
                           const float *gamma, const double *mean, const double *var, float eps,
                           float *restrict dy, float *dgamma, float *dbeta) {
  int Ho = H / 2, Wo = W / 2;
  long M = (long)N * H * W, P = (long)N * Ho * Wo;
  float scale[MAXC], slope[MAXC], shift[MAXC], m32[MAXC], sg32[MAXC], sgx32[MAXC];
  double sg[MAXC], sgx[MAXC];
  for (int r = 0; r < R; r++) {
    const float *restrict go = grad_out + r * P * C, *restrict o = out + r * P * C;
    const float *restrict xh = xhat + r * P * C, *restrict wh = which + r * P * C;
    for (int c = 0; c < C; c++) { sg[c] = 0; sgx[c] = 0; sg32[c] = 0; sgx32[c] = 0; }
    for (long p = 0; p < P; p++) {
      for (int c = 0; c < C; c++) {
        float g = o[p * C + c] > 0 ? go[p * C + c] : 0;
        sg32[c] += g; sgx32[c] += g * xh[p * C + c];
      }
      if ((p & BLOCK) == BLOCK)
        for (int c = 0; c < C; c++) { sg[c] += sg32[c]; sgx[c] += sgx32[c]; sg32[c] = 0; sgx32[c] = 0; }
    }
    for (int c = 0; c < C; c++) {
      sg[c] += sg32[c]; sgx[c] += sgx32[c];
      double inv = 1.0 / sqrt(var[r * C + c] + eps), k = gamma[r * C + c] * inv;
      dgamma[r * C + c] = (float)sgx[c];
      dbeta[r * C + c] = (float)sg[c];
      /* dy = scale * g + slope * (y - mean) + shift */
      scale[c] = (float)k;
      slope[c] = (float)(-k * inv * sgx[c] / M);
      shift[c] = (float)(-k * sg[c] / M);
      m32[c] = (float)mean[r * C + c];
    }
    const float *restrict yr = y + r * M * C;
    float *restrict dr = dy + r * M * C;
    if (2 * Ho != H || 2 * Wo != W) /* values in no window: only the statistics' terms */
      for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++)
            if (h >= 2 * Ho || w >= 2 * Wo) {
              long q = (((long)n * H + h) * W + w) * C;
              for (int c = 0; c < C; c++) dr[q + c] = slope[c] * (yr[q + c] - m32[c]) + shift[c];
            }
    for (int n = 0; n < N; n++)
      for (int i = 0; i < Ho; i++)
        for (int j = 0; j < Wo; j++) {
          long q = (((long)n * H + 2 * i) * W + 2 * j) * C, p = (((long)n * Ho + i) * Wo + j) * C;
          float *restrict d0 = dr + q, *restrict d1 = d0 + C, *restrict d2 = d0 + (long)W * C,
                *restrict d3 = d2 + C;
          const float *restrict y0 = yr + q, *restrict y1 = y0 + C, *restrict y2 = y0 + (long)W * C,
                      *restrict y3 = y2 + C;
          const float *restrict gp = go + p, *restrict op = o + p, *restrict kp = wh + p;
          for (int c = 0; c < C; c++) {
            float g = scale[c] * gp[c], k = kp[c];
            g = op[c] > 0 ? g : 0;
            d0[c] = slope[c] * (y0[c] - m32[c]) + shift[c] + (k == 0 ? g : 0);
            d1[c] = slope[c] * (y1[c] - m32[c]) + shift[c] + (k == 1 ? g : 0);
            d2[c] = slope[c] * (y2[c] - m32[c]) + shift[c] + (k == 2 ? g : 0);
            d3[c] = slope[c] * (y3[c] - m32[c]) + shift[c] + (k == 3 ? g : 0);
          }
        }
  }
}

/* The same layer for one network on maps in the lanes layout of directconv.c: H x W x C x Np
 * floats, the N images innermost and lanes N .. Np - 1 zero (Np a multiple of 8). Inputs are
 * read on lanes below N only; every output keeps its extra lanes zero. The loops run along the
 * images, where the compiler vectorises them; float sums run per (pixel, channel) row, double
 * across rows. Every pass sweeps the maps in memory order (pixels, then channels) with
 * per-channel constants in small arrays: a channel at a time, strided through the map, the
 * hardware prefetchers could not keep up (backward 1.4-1.9x slower). */

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int v8i __attribute__((vector_size(32)));
#define LOAD8(p) (*(const v8 *)(p))

/* Sum of row[0 .. n) in float, in 8 running sums (vectorised without reassociation). */
static float row_sum(const float *restrict row, int n) {
  float part[8] = {0};
  int n8 = n & ~7;
  for (int i = 0; i < n8; i += 8)
    for (int l = 0; l < 8; l++) part[l] += row[i + l];
  float s = 0;
  for (int i = n8; i < n; i++) s += row[i];
  for (int l = 0; l < 8; l++) s += part[l];
  return s;
}

/* Sum of (row[i] - m)^2 over i < n, likewise. */
static float row_sq(const float *restrict row, int n, float m) {
  float part[8] = {0};
  int n8 = n & ~7;
  for (int i = 0; i < n8; i += 8)
    for (int l = 0; l < 8; l++) { float d = row[i + l] - m; part[l] += d * d; }
  float s = 0;
  for (int i = n8; i < n; i++) { float d = row[i] - m; s += d * d; }
  for (int l = 0; l < 8; l++) s += part[l];
  return s;
}

void bn_pool_relu_forward_lanes(const float *restrict y, int N, int Np, int H, int W, int C,
                                const float *gamma, const float *beta, float eps, double *mean,
                                double *var, float *restrict out, float *restrict which,
                                float *restrict xhat) {
  int Ho = H / 2, Wo = W / 2;
  long P = (long)H * W, rs = (long)C * Np; /* rs: floats from one pixel to the next */
  double s[MAXC], q[MAXC];
  float m32[MAXC], inv[MAXC], a[MAXC], b[MAXC];
  for (int c = 0; c < C; c++) { s[c] = 0; q[c] = 0; }
  for (long p = 0; p < P; p++)
    for (int c = 0; c < C; c++) s[c] += row_sum(y + p * rs + (long)c * Np, N);
  for (int c = 0; c < C; c++) { mean[c] = s[c] / ((double)P * N); m32[c] = (float)mean[c]; }
  for (long p = 0; p < P; p++)
    for (int c = 0; c < C; c++) q[c] += row_sq(y + p * rs + (long)c * Np, N, m32[c]);
  for (int c = 0; c < C; c++) {
    var[c] = q[c] / ((double)P * N);
    inv[c] = (float)(1.0 / sqrt(var[c] + eps));
    a[c] = gamma[c] * inv[c];
    b[c] = beta[c] - m32[c] * a[c];
  }
  for (int i = 0; i < Ho; i++)
    for (int j = 0; j < Wo; j++)
      for (int c = 0; c < C; c++) {
        const float *restrict y0 = y + ((long)(2 * i) * W + 2 * j) * rs + (long)c * Np;
        const float *restrict y1 = y0 + rs, *restrict y2 = y0 + W * rs, *restrict y3 = y2 + rs;
        long o = ((long)i * Wo + j) * rs + (long)c * Np;
        float *restrict op = out + o, *restrict wp = which + o, *restrict xp = xhat + o;
        float ac = a[c], bc = b[c], mc = m32[c], ic = inv[c];
        for (int n = 0; n < N; n++) {
          /* The first of equal values wins, as in PyTorch's max-pool. */
          float v = y0[n], best = v * ac, k = 0, z;
          int t;
          z = y1[n] * ac; t = z > best; best = t ? z : best; k = t ? 1 : k; v = t ? y1[n] : v;
          z = y2[n] * ac; t = z > best; best = t ? z : best; k = t ? 2 : k; v = t ? y2[n] : v;
          z = y3[n] * ac; t = z > best; best = t ? z : best; k = t ? 3 : k; v = t ? y3[n] : v;
          best += bc;
          op[n] = best > 0 ? best : 0;
          wp[n] = k;
          xp[n] = (v - mc) * ic;
        }
        for (int n = N; n < Np; n++) { op[n] = 0; wp[n] = 0; xp[n] = 0; }
      }
}

void bn_pool_relu_backward_lanes(const float *restrict y, const float *restrict grad_out,
                                 const float *restrict out, const float *restrict which,
                                 const float *restrict xhat, int N, int Np, int H, int W, int C,
                                 const float *gamma, const double *mean, const double *var,
                                 float eps, float *restrict dy, float *dgamma, float *dbeta) {
  int Ho = H / 2, Wo = W / 2;
  long M = (long)N * H * W, rs = (long)C * Np;
  double sg[MAXC], sgx[MAXC];
  float scale[MAXC], slope[MAXC], shift[MAXC], m32[MAXC];
  for (int c = 0; c < C; c++) { sg[c] = 0; sgx[c] = 0; }
  for (int i = 0; i < Ho; i++)
    for (int j = 0; j < Wo; j++)
      for (int c = 0; c < C; c++) {
        long o = ((long)i * Wo + j) * rs + (long)c * Np;
        const float *restrict go = grad_out + o, *restrict op = out + o, *restrict xh = xhat + o;
        v8 p1 = {0}, p2 = {0};
        for (int n = 0; n < Np; n += 8) {
          v8 g = (v8)((v8i)LOAD8(go + n) & (LOAD8(op + n) > 0));
          p1 += g;
          p2 += g * LOAD8(xh + n);
        }
        for (int l = 0; l < 8; l++) { sg[c] += p1[l]; sgx[c] += p2[l]; }
      }
  for (int c = 0; c < C; c++) {
    double inv = 1.0 / sqrt(var[c] + eps), k = gamma[c] * inv;
    dgamma[c] = (float)sgx[c];
    dbeta[c] = (float)sg[c];
    scale[c] = (float)k, slope[c] = (float)(-k * inv * sgx[c] / M), shift[c] = (float)(-k * sg[c] / M);
    m32[c] = (float)mean[c];
  }
  if (2 * Ho != H || 2 * Wo != W)
    for (int h = 0; h < H; h++)
      for (int w = 0; w < W; w++)
        if (h >= 2 * Ho || w >= 2 * Wo)
          for (int c = 0; c < C; c++) {
            long q = ((long)h * W + w) * rs + (long)c * Np;
            for (int n = 0; n < N; n++) dy[q + n] = slope[c] * (y[q + n] - m32[c]) + shift[c];
            for (int n = N; n < Np; n++) dy[q + n] = 0;
          }
  for (int i = 0; i < Ho; i++)
    for (int j = 0; j < Wo; j++)
      for (int c = 0; c < C; c++) {
        long q = ((long)(2 * i) * W + 2 * j) * rs + (long)c * Np;
        long o = ((long)i * Wo + j) * rs + (long)c * Np;
        const float *restrict y0 = y + q, *restrict y1 = y0 + rs, *restrict y2 = y0 + W * rs,
                    *restrict y3 = y2 + rs;
        float *restrict d0 = dy + q, *restrict d1 = d0 + rs, *restrict d2 = d0 + W * rs,
              *restrict d3 = d2 + rs;
        const float *restrict go = grad_out + o, *restrict op = out + o, *restrict kp = which + o;
        float sc = scale[c], sl = slope[c], sh = shift[c], mm = m32[c];
        for (int n = 0; n < N; n++) {
          float g = op[n] > 0 ? sc * go[n] : 0, k = kp[n];
          d0[n] = sl * (y0[n] - mm) + sh + (k == 0 ? g : 0);
          d1[n] = sl * (y1[n] - mm) + sh + (k == 1 ? g : 0);
          d2[n] = sl * (y2[n] - mm) + sh + (k == 2 ? g : 0);
          d3[n] = sl * (y3[n] - mm) + sh + (k == 3 ? g : 0);
        }
        for (int n = N; n < Np; n++) { d0[n] = 0; d1[n] = 0; d2[n] = 0; d3[n] = 0; }
      }
}

/* MaxPool1d(2) along rows (the MLP's pooling of neighbouring features): out[i] = the larger of
 * x[2i] and x[2i + 1], the first where they tie, a NaN where there is one (the later one if
 * both), as PyTorch's max-pool picks; which[i] = 1 where x[2i + 1] won. PyTorch's max-pool
 * with indices takes a map of one channel for a channels_last one and runs it a value at a time. */
void pair_max_forward(const float *restrict x, long n, float *restrict out, unsigned char *restrict which) {
  for (long i = 0; i < n; i++) {
    float a = x[2 * i], b = x[2 * i + 1];
    int t = b > a || b != b;
    out[i] = t ? b : a;
    which[i] = (unsigned char)t;
  }
}

/* Its gradient: g[i] to the winner of pair i, zero to the other. */
void pair_max_backward(const float *restrict g, const unsigned char *restrict which, long n,
                       float *restrict dx) {
  for (long i = 0; i < n; i++) {
    dx[2 * i] = which[i] ? 0 : g[i];
    dx[2 * i + 1] = which[i] ? g[i] : 0;
  }
}

/* Dropout masks for p = 0.5, scaled by 1 / (1 - p) = 2: for each of R rounds, value i of its n
 * is 2 where bit i % 63 of its word i / 63 is set, else 0 (stacked.random_bits's bits, each draw
 * of a generator giving 63). words is R x W, out R x n. */
static void mask_bits(unsigned int w, int m, float *restrict o) {
  for (int b = 0; b < m; b++) o[b] = (w >> b) & 1 ? 2.0f : 0.0f;
}

void dropout_masks(const unsigned long long *restrict words, int R, long n, long W,
                   float *restrict out) {
  for (int r = 0; r < R; r++)
    for (long k = 0; k * 63 < n; k++) {
      unsigned long long w = words[r * W + k];
      long base = k * 63, m = n - base < 63 ? n - base : 63;
      float *restrict o = out + r * n + base;
      if (m == 63) { /* a whole word, as two halves of 32-bit lanes in loops of known length,
                        which the compiler vectorises (a loop of the word's length it ran a
                        bit at a time: README, Speed) */
        for (int b = 0; b < 32; b++) o[b] = ((unsigned int)w >> b) & 1 ? 2.0f : 0.0f;
        for (int b = 0; b < 31; b++) o[32 + b] = ((unsigned int)(w >> 32) >> b) & 1 ? 2.0f : 0.0f;
      } else {
        mask_bits((unsigned int)w, m < 32 ? (int)m : 32, o);
        if (m > 32) mask_bits((unsigned int)(w >> 32), (int)m - 32, o + 32);
      }
    }
}
