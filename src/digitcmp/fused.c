/* BatchNorm (training mode) + 2 x 2 max-pool (stride 2) + ReLU of channels_last feature maps,
 * forward and backward, for R independent networks (rounds) stacked along the batch: rows
 * r*N .. r*N+N-1 of the batch are round r's, with statistics of their own.
 *
 * A map is N x H x W x C floats in memory (NCHW tensors in channels_last layout). The channel
 * is the innermost loop everywhere, so that the compiler vectorises it; selects are written as
 * ternaries on floats for the same reason (compiled with -fno-trapping-math, see fused.py).
 * Sums run in float over blocks of 64 rows and in double across blocks.
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
