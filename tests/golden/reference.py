"""PyTorch reference for the C++ library: our transcription of the primer's DDPM code.

Source: /work/shared/seed/diffusion-models-primer.md, section "Diffusion Models in PyTorch / Implementing the
Original Paper" (Phil Wang's / The Annotated Diffusion's U-Net). Class names, constructor arguments and defaults,
submodule attribute names and nesting are the primer's, so `state_dict()` names match it exactly
(e.g. `downs.0.0.ds_conv.weight`, `downs.0.2.fn.fn.to_qkv.weight`, `mid_attn.fn.fn.to_out.weight`,
`final_conv.1.bias`, `time_mlp.1.weight`). Differences from the primer, none of which change a computation:
  * einops.rearrange is written with reshape/permute (einops is not installed);
  * the diffusion functions take the schedule tables explicitly (the primer uses module globals);
  * the DDIM step and timestep sequences are added (written from the DDIM equations, not in the primer).
`Unet(num_classes=K)` (K > 0) adds the class conditioning of lucidrains' denoising-diffusion-pytorch
`classifier_free_guidance.py` to the primer's network, with that file's names and shapes: `classes_emb`
(nn.Embedding(K, dim)), `null_classes_emb` (nn.Parameter(dim)), `classes_mlp` (Linear(dim, 4 dim), GELU,
Linear(4 dim, 4 dim)), and every block's MLP Linear taking cat(time embedding, class embedding) (4 dim + 4 dim
inputs). A class id of -1 selects null_classes_emb (that file's cond_drop_prob path). That file concatenates inside
each block, before the block's elementwise activation; here the Unet concatenates once and passes the result as the
blocks' `time_emb`: the same function. The primer's final block keeps no embedding. `guided_prediction` is that
file's `forward_with_cond_scale` with `remove_parallel_component=False` (the plain CFG combination).
The primer's quirks are kept on purpose: the up path's `is_last` test compares against `num_resolutions - 1`
although it enumerates only `len(in_out) - 1` stages (so every up stage upsamples), and `final_conv`'s block is
built as `block_klass(dim, dim)`.

Importing this module has no side effects (no training, no files, no global RNG use).
Run with Debian's torch 1.13: /usr/bin/python3.
"""
import math
from functools import partial
from inspect import isfunction

import numpy as np
import torch
import torch.nn.functional as F
from torch import einsum, nn


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def exists(x):
    return x is not None


def default(val, d):
    if exists(val):
        return val
    return d() if isfunction(d) else d


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, *args, **kwargs):
        return self.fn(x, *args, **kwargs) + x


def Upsample(dim):
    return nn.ConvTranspose2d(dim, dim, 4, 2, 1)


def Downsample(dim):
    return nn.Conv2d(dim, dim, 4, 2, 1)


class SinusoidalPositionEmbeddings(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, time):
        # time: (B,) integer or float -> (B, dim) float32 = [sin(t * f_k), cos(t * f_k)], f_k = 10000^(-k/(half-1))
        device = time.device
        half_dim = self.dim // 2
        embeddings = math.log(10000) / (half_dim - 1)
        embeddings = torch.exp(torch.arange(half_dim, device=device) * -embeddings)
        embeddings = time[:, None] * embeddings[None, :]
        embeddings = torch.cat((embeddings.sin(), embeddings.cos()), dim=-1)
        return embeddings


# ----------------------------------------------------------------------------------------------------------------
# Blocks


class Block(nn.Module):
    def __init__(self, dim, dim_out, groups=8):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x, scale_shift=None):
        x = self.proj(x)
        x = self.norm(x)

        if exists(scale_shift):
            scale, shift = scale_shift
            x = x * (scale + 1) + shift

        x = self.act(x)
        return x


class ResnetBlock(nn.Module):
    """https://arxiv.org/abs/1512.03385"""

    def __init__(self, dim, dim_out, *, time_emb_dim=None, groups=8):
        super().__init__()
        self.mlp = (
            nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out))
            if exists(time_emb_dim)
            else None
        )

        self.block1 = Block(dim, dim_out, groups=groups)
        self.block2 = Block(dim_out, dim_out, groups=groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, time_emb=None):
        h = self.block1(x)

        if exists(self.mlp) and exists(time_emb):
            time_emb = self.mlp(time_emb)
            h = time_emb[:, :, None, None] + h  # rearrange "b c -> b c 1 1"

        h = self.block2(h)
        return h + self.res_conv(x)


class ConvNextBlock(nn.Module):
    """https://arxiv.org/abs/2201.03545"""

    def __init__(self, dim, dim_out, *, time_emb_dim=None, mult=2, norm=True):
        super().__init__()
        self.mlp = (
            nn.Sequential(nn.GELU(), nn.Linear(time_emb_dim, dim))
            if exists(time_emb_dim)
            else None
        )

        self.ds_conv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)

        self.net = nn.Sequential(
            nn.GroupNorm(1, dim) if norm else nn.Identity(),
            nn.Conv2d(dim, dim_out * mult, 3, padding=1),
            nn.GELU(),
            nn.GroupNorm(1, dim_out * mult),
            nn.Conv2d(dim_out * mult, dim_out, 3, padding=1),
        )

        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, time_emb=None):
        h = self.ds_conv(x)

        if exists(self.mlp) and exists(time_emb):
            condition = self.mlp(time_emb)
            h = h + condition[:, :, None, None]  # rearrange "b c -> b c 1 1"

        h = self.net(h)
        return h + self.res_conv(x)


# ----------------------------------------------------------------------------------------------------------------
# Attention


def _split_heads(t, heads):
    # rearrange "b (h c) x y -> b h c (x y)"
    b, hc, x, y = t.shape
    return t.reshape(b, heads, hc // heads, x * y)


class Attention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.to_qkv(x).chunk(3, dim=1)
        q, k, v = map(lambda t: _split_heads(t, self.heads), qkv)  # each (b, heads, d, n)
        q = q * self.scale

        sim = einsum("b h d i, b h d j -> b h i j", q, k)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1)

        out = einsum("b h i j, b h d j -> b h i d", attn, v)
        # rearrange "b h (x y) d -> b (h d) x y"
        out = out.permute(0, 1, 3, 2).reshape(b, -1, h, w)
        return self.to_out(out)


class LinearAttention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)

        self.to_out = nn.Sequential(nn.Conv2d(hidden_dim, dim, 1), nn.GroupNorm(1, dim))

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.to_qkv(x).chunk(3, dim=1)
        q, k, v = map(lambda t: _split_heads(t, self.heads), qkv)  # each (b, heads, d, n)

        q = q.softmax(dim=-2)
        k = k.softmax(dim=-1)

        q = q * self.scale
        context = torch.einsum("b h d n, b h e n -> b h d e", k, v)

        out = torch.einsum("b h d e, b h d n -> b h e n", context, q)
        # rearrange "b h c (x y) -> b (h c) x y"
        out = out.reshape(b, -1, h, w)
        return self.to_out(out)


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = nn.GroupNorm(1, dim)

    def forward(self, x):
        x = self.norm(x)
        return self.fn(x)


# ----------------------------------------------------------------------------------------------------------------
# U-Net


class Unet(nn.Module):
    def __init__(
        self,
        dim,
        init_dim=None,
        out_dim=None,
        dim_mults=(1, 2, 4, 8),
        channels=3,
        with_time_emb=True,
        resnet_block_groups=8,
        use_convnext=True,
        convnext_mult=2,
        level_attention=None,
        mid_attention="full",
        attention_heads=4,
        attention_dim_head=32,
        num_classes=0,
    ):
        super().__init__()
        # Extensions beyond the primer (the C++ UnetConfig's; the defaults build the primer's network exactly):
        # the attention of each level ("none", "linear", "full"; None: linear everywhere), of the middle, and the
        # heads / head width of every attention module.
        if level_attention is None:
            level_attention = ["linear"] * len(dim_mults)
        assert len(level_attention) == len(dim_mults)
        attn = partial(attention_module, heads=attention_heads, dim_head=attention_dim_head)

        # determine dimensions
        self.channels = channels

        init_dim = default(init_dim, dim // 3 * 2)
        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3)

        dims = [init_dim, *map(lambda m: dim * m, dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        if use_convnext:
            block_klass = partial(ConvNextBlock, mult=convnext_mult)
        else:
            block_klass = partial(ResnetBlock, groups=resnet_block_groups)

        # time embeddings
        if with_time_emb:
            time_dim = dim * 4
            self.time_mlp = nn.Sequential(
                SinusoidalPositionEmbeddings(dim),
                nn.Linear(dim, time_dim),
                nn.GELU(),
                nn.Linear(time_dim, time_dim),
            )
        else:
            time_dim = None
            self.time_mlp = None

        # class embeddings (classifier_free_guidance.py); the blocks' MLPs take cat(time, class) embeddings
        self.num_classes = num_classes
        if num_classes > 0:
            assert with_time_emb, "the class embedding joins the time embedding"
            self.classes_emb = nn.Embedding(num_classes, dim)
            self.null_classes_emb = nn.Parameter(torch.randn(dim))
            classes_dim = dim * 4
            self.classes_mlp = nn.Sequential(
                nn.Linear(dim, classes_dim),
                nn.GELU(),
                nn.Linear(classes_dim, classes_dim),
            )
            time_dim = time_dim + classes_dim

        # layers
        self.downs = nn.ModuleList([])
        self.ups = nn.ModuleList([])
        num_resolutions = len(in_out)

        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (num_resolutions - 1)

            self.downs.append(
                nn.ModuleList(
                    [
                        block_klass(dim_in, dim_out, time_emb_dim=time_dim),
                        block_klass(dim_out, dim_out, time_emb_dim=time_dim),
                        attn(level_attention[ind], dim_out),
                        Downsample(dim_out) if not is_last else nn.Identity(),
                    ]
                )
            )

        mid_dim = dims[-1]
        self.mid_block1 = block_klass(mid_dim, mid_dim, time_emb_dim=time_dim)
        self.mid_attn = attn(mid_attention, mid_dim)
        self.mid_block2 = block_klass(mid_dim, mid_dim, time_emb_dim=time_dim)

        for ind, (dim_in, dim_out) in enumerate(reversed(in_out[1:])):
            is_last = ind >= (num_resolutions - 1)  # primer's quirk, kept: never true here

            self.ups.append(
                nn.ModuleList(
                    [
                        block_klass(dim_out * 2, dim_in, time_emb_dim=time_dim),
                        block_klass(dim_in, dim_in, time_emb_dim=time_dim),
                        attn(level_attention[num_resolutions - 1 - ind], dim_in),
                        Upsample(dim_in) if not is_last else nn.Identity(),
                    ]
                )
            )

        out_dim = default(out_dim, channels)
        self.final_conv = nn.Sequential(block_klass(dim, dim), nn.Conv2d(dim, out_dim, 1))

    def forward(self, x, time, classes=None):
        assert (classes is not None) == (self.num_classes > 0), "classes iff num_classes > 0"
        x = self.init_conv(x)

        t = self.time_mlp(time) if exists(self.time_mlp) else None

        if self.num_classes > 0:
            null = classes == -1
            classes_emb = self.classes_emb(classes.masked_fill(null, 0))
            classes_emb = torch.where(null[:, None], self.null_classes_emb[None, :].expand_as(classes_emb), classes_emb)
            c = self.classes_mlp(classes_emb)
            t = torch.cat((t, c), dim=-1)

        h = []

        # downsample
        for block1, block2, attn, downsample in self.downs:
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            h.append(x)
            x = downsample(x)

        # bottleneck
        x = self.mid_block1(x, t)
        x = self.mid_attn(x)
        x = self.mid_block2(x, t)

        # upsample
        for block1, block2, attn, upsample in self.ups:
            x = torch.cat((x, h.pop()), dim=1)
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            x = upsample(x)

        return self.final_conv(x)


def attention_module(kind, dim, heads=4, dim_head=32):
    """The attention of a U-Net level: the primer's Residual(PreNorm(dim, LinearAttention(dim))) at every level and
    Residual(PreNorm(dim, Attention(dim))) in the middle; "none" is an nn.Identity (no parameters)."""
    if kind == "linear":
        return Residual(PreNorm(dim, LinearAttention(dim, heads=heads, dim_head=dim_head)))
    if kind == "full":
        return Residual(PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head)))
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"attention kind '{kind}' is not one of none, linear, full")


def guided_prediction(model, x, time, classes, cond_scale=1.0, rescaled_phi=0.0):
    """classifier_free_guidance.py's Unet.forward_with_cond_scale with remove_parallel_component=False:
    scaled = null + (cond - null) * cond_scale (cond_scale = 1 + w of eps~ = (1 + w) eps(c) - w eps(null)), and with
    rescaled_phi > 0 the rescaling of Lin et al. 2023: scaled * std(cond) / std(scaled) per image (torch.std over
    every non-batch dim, as that file), interpolated with scaled by rescaled_phi."""
    logits = model(x, time, classes)
    if cond_scale == 1:
        return logits
    null_logits = model(x, time, torch.full_like(classes, -1))
    scaled_logits = logits + (logits - null_logits) * (cond_scale - 1.0)
    if rescaled_phi == 0.0:
        return scaled_logits
    std_fn = partial(torch.std, dim=tuple(range(1, scaled_logits.ndim)), keepdim=True)
    rescaled_logits = scaled_logits * (std_fn(logits) / std_fn(scaled_logits))
    return rescaled_logits * rescaled_phi + scaled_logits * (1.0 - rescaled_phi)


def unet_config(dim, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), channels=3, with_time_emb=True,
                resnet_block_groups=8, use_convnext=True, convnext_mult=2, num_classes=0):
    """The Unet kwargs with the defaults resolved exactly as Unet.__init__ resolves them (for metadata);
    num_classes only when > 0 (as the C++ UnetConfig::to_json)."""
    extra = {"num_classes": int(num_classes)} if num_classes > 0 else {}
    return {**extra,
        "dim": int(dim),
        "init_dim": int(default(init_dim, dim // 3 * 2)),
        "out_dim": int(default(out_dim, channels)),
        "dim_mults": [int(m) for m in dim_mults],
        "channels": int(channels),
        "with_time_emb": bool(with_time_emb),
        "resnet_block_groups": int(resnet_block_groups),
        "use_convnext": bool(use_convnext),
        "convnext_mult": int(convnext_mult),
    }


# ----------------------------------------------------------------------------------------------------------------
# Beta schedules (the primer's, in torch's default float32)


def cosine_beta_schedule(timesteps, s=0.008):
    """cosine schedule as proposed in https://arxiv.org/abs/2102.09672"""
    steps = timesteps + 1
    x = torch.linspace(0, timesteps, steps)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * torch.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0.0001, 0.9999)


def linear_beta_schedule(timesteps):
    beta_start = 0.0001
    beta_end = 0.02
    return torch.linspace(beta_start, beta_end, timesteps)


def quadratic_beta_schedule(timesteps):
    beta_start = 0.0001
    beta_end = 0.02
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps) ** 2


def sigmoid_beta_schedule(timesteps):
    beta_start = 0.0001
    beta_end = 0.02
    betas = torch.linspace(-6, 6, timesteps)
    return torch.sigmoid(betas) * (beta_end - beta_start) + beta_start


SCHEDULES = {
    "linear": linear_beta_schedule,
    "cosine": cosine_beta_schedule,
    "quadratic": quadratic_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
}


def tables(betas):
    """Derived tables of the primer (plus posterior mean coefficients), in the dtype of `betas`: pass
    betas.double() for float64 tables. All tensors have shape (T,)."""
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_recip_alphas": torch.sqrt(1.0 / alphas),
        "sqrt_alphas_cumprod": torch.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - alphas_cumprod),
        "posterior_variance": posterior_variance,
        # posterior_variance[0] is 0: the log is clipped by repeating entry 1 (as the original implementation)
        "posterior_log_variance_clipped": torch.log(torch.cat((posterior_variance[1:2], posterior_variance[1:]))),
        "posterior_mean_coef1": betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * torch.sqrt(alphas) / (1.0 - alphas_cumprod),
    }


def extract(a, t, x_shape):
    batch_size = t.shape[0]
    out = a.gather(-1, t.cpu())
    return out.reshape(batch_size, *((1,) * (len(x_shape) - 1))).to(t.device)


# ----------------------------------------------------------------------------------------------------------------
# Forward process, loss, ancestral (DDPM) step


def q_sample(x_start, t, tabs, noise=None):
    """x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise (forward diffusion, the nice property)."""
    if noise is None:
        noise = torch.randn_like(x_start)

    sqrt_alphas_cumprod_t = extract(tabs["sqrt_alphas_cumprod"], t, x_start.shape)
    sqrt_one_minus_alphas_cumprod_t = extract(tabs["sqrt_one_minus_alphas_cumprod"], t, x_start.shape)

    return sqrt_alphas_cumprod_t * x_start + sqrt_one_minus_alphas_cumprod_t * noise


def training_target(prediction, x_start, t, tabs, noise):
    """What the network regresses (an extension of the primer, which predicts the noise): "eps" the noise, "x0" the
    clean image, "v" = sqrt(abar_t) noise - sqrt(1 - abar_t) x_start (Salimans & Ho 2022)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x_start
    if prediction == "v":
        a = extract(tabs["sqrt_alphas_cumprod"], t, x_start.shape)
        b = extract(tabs["sqrt_one_minus_alphas_cumprod"], t, x_start.shape)
        return a * noise - b * x_start
    raise ValueError(f"prediction '{prediction}' is not one of eps, x0, v")


def regression_loss(loss_type, predicted, target):
    """The primer's three losses, arguments in its order (target first)."""
    if loss_type == "l1":
        return F.l1_loss(target, predicted)
    elif loss_type == "l2":
        return F.mse_loss(target, predicted)
    elif loss_type == "huber":
        return F.smooth_l1_loss(target, predicted)
    raise NotImplementedError()


def p_losses(denoise_model, x_start, t, tabs, noise=None, loss_type="l1", prediction="eps"):
    """The primer's p_losses; `prediction` (default "eps": the primer's) chooses the target (training_target)."""
    if noise is None:
        noise = torch.randn_like(x_start)

    x_noisy = q_sample(x_start=x_start, t=t, tabs=tabs, noise=noise)
    predicted_noise = denoise_model(x_noisy, t)

    return regression_loss(loss_type, predicted_noise, training_target(prediction, x_start, t, tabs, noise))


@torch.no_grad()
def p_sample(model, x, t, t_index, tabs, noise=None):
    """One ancestral step (Algorithm 2 of Ho et al.); `noise` ~ N(0, I) is drawn with randn_like if not given."""
    betas_t = extract(tabs["betas"], t, x.shape)
    sqrt_one_minus_alphas_cumprod_t = extract(tabs["sqrt_one_minus_alphas_cumprod"], t, x.shape)
    sqrt_recip_alphas_t = extract(tabs["sqrt_recip_alphas"], t, x.shape)

    # Equation 11 in the paper: use the model (noise predictor) to predict the mean
    model_mean = sqrt_recip_alphas_t * (x - betas_t * model(x, t) / sqrt_one_minus_alphas_cumprod_t)

    if t_index == 0:
        return model_mean
    else:
        posterior_variance_t = extract(tabs["posterior_variance"], t, x.shape)
        if noise is None:
            noise = torch.randn_like(x)
        # Algorithm 2 line 4
        return model_mean + torch.sqrt(posterior_variance_t) * noise


# ----------------------------------------------------------------------------------------------------------------
# DDIM (Song et al. 2021, eq. 12), written from the equations


def ddim_timesteps(T, S, spacing="linspace"):
    """Ascending int64 tensor of S timesteps in [0, T); sampling visits them in descending order.
    Computed in float64 numpy (np.round rounds half to even)."""
    if not (1 <= S <= T):
        raise ValueError(f"ddim_timesteps: need 1 <= S <= T, got S={S}, T={T}")
    if spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, S)).astype(np.int64)
    elif spacing == "leading":
        ts = np.arange(0, S, dtype=np.int64) * (T // S)
    elif spacing == "trailing":
        # the diffusers formula, round(arange(T, 0, -T/S)) - 1; float arange can emit one extra entry that rounds
        # to -1 (e.g. T=200, S=29): the first S entries are the sequence
        ts = (np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1)[:S]
    else:
        raise ValueError(f"ddim_timesteps: unknown spacing '{spacing}' (linspace, leading, trailing)")
    return torch.from_numpy(np.sort(ts))


def ddim_step(x, eps, ab_t, ab_prev, eta=0.0, clip_x0=False, z=None):
    """x_{t_prev} from x_t and the predicted noise eps. ab_t, ab_prev: alphas_cumprod at t and at the previous
    timestep of the sequence (1 after the last one), as floats or broadcastable tensors. z ~ N(0, I) is only
    used when sigma > 0."""
    # python floats become float64 0-dim tensors: coefficients in double, results stay in x's dtype
    ab_t = torch.as_tensor(ab_t, dtype=torch.float64) if not torch.is_tensor(ab_t) else ab_t
    ab_prev = torch.as_tensor(ab_prev, dtype=torch.float64) if not torch.is_tensor(ab_prev) else ab_prev
    x0 = (x - torch.sqrt(1 - ab_t) * eps) / torch.sqrt(ab_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - torch.sqrt(ab_t) * x0) / torch.sqrt(1 - ab_t)
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t)) * torch.sqrt(1 - ab_t / ab_prev)
    x_prev = torch.sqrt(ab_prev) * x0 + torch.sqrt(1 - ab_prev - sigma**2) * eps
    if eta != 0:
        if z is None:
            z = torch.randn_like(x)
        x_prev = x_prev + sigma * z
    return x_prev


@torch.no_grad()
def ddim_sample(model, x_T, timesteps, alphas_cumprod, eta=0.0, clip_x0=False, generator=None):
    """Runs DDIM over `timesteps` (ascending, visited descending). Returns the list [x after step 1, ..., x after
    step S]; the last entry is x_0. Noise for eta > 0 comes from torch.randn(generator=generator)."""
    x = x_T
    out = []
    ts = [int(t) for t in timesteps]
    b = x.shape[0]
    for i in reversed(range(len(ts))):
        t = ts[i]
        ab_t = float(alphas_cumprod[t])
        ab_prev = float(alphas_cumprod[ts[i - 1]]) if i > 0 else 1.0
        eps = model(x, torch.full((b,), t, dtype=torch.long))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if eta != 0 else None
        x = ddim_step(x, eps, ab_t, ab_prev, eta=eta, clip_x0=clip_x0, z=z)
        out.append(x)
    return out
