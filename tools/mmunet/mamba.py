"""Mamba (v1) in plain PyTorch: the reference of mmunet.md section 3.

Parameter names and shapes are those of the `Mamba` class of the state-spaces/mamba
package (mamba_ssm/modules/mamba_simple.py), so weights trained with mamba_ssm load
unchanged.  No CUDA extension is used: the selective scan is written twice, once
sequentially (the definition) and once in chunks (the same arithmetic, fast enough to
train with), and the tests check that the two agree.

Tensors are token-major: U is (batch, L, C).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def dt_rank_of(d_model, dt_rank="auto"):
    """R = ceil(C / 16) for "auto", else the given integer."""
    return math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)


def selective_scan_sequential(x, delta, A, B, C, D):
    """The scan of mmunet.md 3.1 step 6, one token at a time.

    x, delta: (b, L, E); A: (E, N); B, C: (b, L, N); D: (E,).  Returns y: (b, L, E).
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t;  y_t = C_t . h_t + D x_t.
    """
    b, L, E = x.shape
    N = A.shape[1]
    h = x.new_zeros(b, E, N)
    ys = []
    for x_t, d_t, B_t, C_t in zip(x.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        dA = torch.exp(d_t[:, :, None] * A)                            # (b, E, N)
        h = dA * h + (d_t * x_t)[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))                       # (b, E)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, E)
    return y + x * D


def selective_scan_chunked(x, delta, A, B, C, D, chunk=None, h0=None, return_state=False):
    """The same scan in chunks of T tokens, all chunks at once.

    Within each chunk the state is scanned from zero (a loop over T steps, vectorised over
    every chunk, channel and state); the carries between chunks follow from
    H_in(c+1) = P_c H_in(c) + H_c, where P_c is the product of the chunk's decays and H_c its
    zero-started end state (mmunet.md 3.4); finally h_t = hl_t + (prod of decays up to t) H_in.
    Every factor is a decay in (0, 1], so nothing can overflow.  T defaults to about sqrt(L),
    which balances the two Python loops.

    h0 (b, E, N), if given, is the state before the first token (zero otherwise); with
    return_state the result is (y, h) where h (b, E, N) is the state after the last token, so
    that consecutive pieces of a sequence can be scanned one after the other.
    """
    b, L, E = x.shape
    N = A.shape[1]
    if L == 0:
        if return_state:
            return x.clone(), (x.new_zeros(b, E, N) if h0 is None else h0.clone())
        return x.clone()
    T = chunk or max(1, int(math.ceil(math.sqrt(L))))
    nc = (L + T - 1) // T
    pad = nc * T - L
    if pad:
        # Padding tokens have delta = 0: decay 1 and input 0, so they change nothing.
        x_p = F.pad(x, (0, 0, 0, pad))
        d_p = F.pad(delta, (0, 0, 0, pad))
        B_p = F.pad(B, (0, 0, 0, pad))
        C_p = F.pad(C, (0, 0, 0, pad))
    else:
        x_p, d_p, B_p, C_p = x, delta, B, C
    x_p = x_p.reshape(b, nc, T, E)
    d_p = d_p.reshape(b, nc, T, E)
    B_p = B_p.reshape(b, nc, T, N)
    C_p = C_p.reshape(b, nc, T, N)

    dA = torch.exp(d_p[..., None] * A)                                 # (b, nc, T, E, N)
    dBx = (d_p * x_p)[..., None] * B_p[:, :, :, None, :]               # (b, nc, T, E, N)
    # unbind() once rather than indexing per step: the gradient of each index would be a
    # zero-filled copy of the whole tensor, which makes the backward pass quadratic in T.
    hl = []
    h = x.new_zeros(b, nc, E, N)
    for dA_t, dBx_t in zip(dA.unbind(2), dBx.unbind(2)):
        h = dA_t * h + dBx_t
        hl.append(h)
    hl = torch.stack(hl, dim=2)                                        # (b, nc, T, E, N)
    # Decay from the chunk start to each token: A is constant in t, so the product of the
    # exp(delta A) is exp(A * cumsum(delta)).  (cumprod would do, but its gradient takes a slow
    # path as soon as a decay underflows to zero.)
    P = torch.exp(torch.cumsum(d_p, dim=2)[..., None] * A)            # (b, nc, T, E, N)

    carries = [x.new_zeros(b, E, N) if h0 is None else h0.expand(b, E, N)]
    ends = zip(P[:, :, -1].unbind(1), hl[:, :, -1].unbind(1))
    for _ in range(nc - 1):
        p_c, h_c = next(ends)
        carries.append(p_c * carries[-1] + h_c)
    H_in = torch.stack(carries, dim=1)                                 # (b, nc, E, N)

    h_all = hl + P * H_in[:, :, None]
    y = (h_all * C_p[:, :, :, None, :]).sum(-1)                        # (b, nc, T, E)
    y = y.reshape(b, nc * T, E)[:, :L]
    if return_state:
        # Padding tokens keep the state, so the last padded token holds the final state.
        return y + x * D, h_all[:, -1, -1].clone()
    return y + x * D


def selective_scan_grouped(x, delta, A, B, C, D, group):
    """The chunked scan over consecutive groups of `group` tokens, the state carried from
    group to group.  The same result as one chunked scan up to rounding, with O(group E N)
    workspace instead of O(L E N): (L, E, N) tensors of a 64x128x128 tile (L = 1,048,576,
    E = 64, N = 16) would take 4 GB each."""
    L = x.shape[1]
    ys = []
    h = None
    for t0 in range(0, L, group):
        t1 = min(L, t0 + group)
        y, h = selective_scan_chunked(x[:, t0:t1], delta[:, t0:t1], A, B[:, t0:t1],
                                      C[:, t0:t1], D, h0=h, return_state=True)
        ys.append(y)
    return torch.cat(ys, dim=1)


def selective_scan(x, delta, A, B, C, D, chunked=True, group=None):
    """The scan of mmunet.md 3.1 step 6: chunked (default) or sequential.  With `group` set
    and more than `group` tokens, the chunked scan runs on groups of that many tokens."""
    if chunked:
        if group is not None and x.shape[1] > group:
            return selective_scan_grouped(x, delta, A, B, C, D, int(group))
        return selective_scan_chunked(x, delta, A, B, C, D)
    return selective_scan_sequential(x, delta, A, B, C, D)


class Mamba(nn.Module):
    """One Mamba layer (mamba_ssm names): in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj.

    With bimamba_v2=True it is Vision Mamba's "v2" bidirectional layout (mmunet.md 2.4,
    biscan vim_v2): in_proj and out_proj shared, and a backward branch of its own with
    conv1d_b, x_proj_b, dt_proj_b, A_b_log and D_b.
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto",
                 dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, bimamba_v2=False,
                 merge_scale=1.0):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank_of(d_model, dt_rank)
        self.bimamba_v2 = bimamba_v2
        self.merge_scale = merge_scale
        self.chunked = True
        self.scan_group = None         # tokens per group of the chunked scan; None = all
        E, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.out_proj = nn.Linear(E, d_model, bias=False)
        for sfx in ([""] + (["_b"] if bimamba_v2 else [])):
            setattr(self, "conv1d" + sfx,
                    nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True))
            setattr(self, "x_proj" + sfx, nn.Linear(E, R + 2 * N, bias=False))
            dt_proj = nn.Linear(R, E, bias=True)
            # mamba_ssm's initialisation: dt_proj weights ~ U(+-R^-0.5), and a bias whose
            # softplus is log-uniform in [dt_min, dt_max].
            std = R ** -0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=dt_init_floor)
            with torch.no_grad():
                dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            setattr(self, "dt_proj" + sfx, dt_proj)
            A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)
            a_name = "A_log" if sfx == "" else "A_b_log"
            setattr(self, a_name, nn.Parameter(torch.log(A)))
            setattr(self, "D" + sfx, nn.Parameter(torch.ones(E)))

    def _branch(self, xz, sfx, taps=None):
        """Steps 2-7 without the out-projection, on xz (b, L, 2E) in the branch's order."""
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        L = xz.shape[1]
        x, z = xz[..., :E], xz[..., E:]
        conv = getattr(self, "conv1d" + sfx)
        xc = conv(x.transpose(1, 2))[..., :L].transpose(1, 2)          # causal, (b, L, E)
        xc = F.silu(xc)
        p = getattr(self, "x_proj" + sfx)(xc)                          # (b, L, R + 2N)
        delta, Bm, Cm = p[..., :R], p[..., R:R + N], p[..., R + N:]
        delta = F.softplus(getattr(self, "dt_proj" + sfx)(delta))      # bias before softplus
        A = -torch.exp(getattr(self, "A_log" if sfx == "" else "A_b_log"))
        y = selective_scan(xc, delta, A, Bm, Cm, getattr(self, "D" + sfx), self.chunked,
                           self.scan_group)
        if taps is not None:
            taps["delta" + sfx] = delta
            taps["y_pregate" + sfx] = y
        return y * F.silu(z)

    def forward(self, u, taps=None):
        """u: (b, L, C) -> (b, L, C).  taps, a dict, receives delta and the pre-gate y."""
        xz = self.in_proj(u)
        if not self.bimamba_v2:
            return self.out_proj(self._branch(xz, "", taps))
        yf = self._branch(xz, "", taps)
        yb = self._branch(xz.flip(1), "_b", taps).flip(1)
        return self.out_proj(self.merge_scale * (yf + yb))
