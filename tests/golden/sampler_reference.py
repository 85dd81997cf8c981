"""Reference samplers for the C++ library: transcriptions of the published algorithms, independent of our C++.

Sources (each function names the one it follows; code kept as close to it as the setting allows):
  * k-diffusion (github.com/crowsonkb/k-diffusion, k_diffusion/sampling.py and external.py):
    get_sigmas_karras, to_d, get_ancestral_step, sample_euler, sample_euler_ancestral, sample_heun,
    sample_dpmpp_2m, sample_dpmpp_2m_sde (solver_type='midpoint'), DiscreteSchedule (sigma <-> t by linear
    interpolation of log sigma), DiscreteEpsDDPMDenoiser (an eps model as a denoiser D(x; sigma)).
  * DPM-Solver (github.com/LuChengTHU/dpm-solver, dpm_solver_pytorch.py): multistep_dpm_solver_second_update
    with algorithm_type="dpmsolver++", solver_type="dpmsolver" (Lu et al. 2022, Algorithm 2), in the VP form
    (x_t = alpha_t x0 + sigma_t eps), as a second, independent transcription of DPM-Solver++(2M).
  * score_sde (github.com/yang-song/score_sde, sampling.py, sde_lib.py, models/utils.py): ReverseDiffusionPredictor,
    EulerMaruyamaPredictor, LangevinCorrector, the PC sampler loop, VPSDE.discretize and the VP score function
    score = -eps / sqrt(1 - abar).

What differs from the sources, and why:
  * Everything runs in float64 (torch.set_default_dtype(torch.float64) by the caller); scalars are python floats.
  * Noise is passed in (a list of tensors consumed in order) instead of drawn, so that the C++ tests can replay it.
  * The k-diffusion loops record x after every step (in the variance-preserving scale of the C++ library:
    x_vp = x / sqrt(1 + sigma^2)), where the originals only return the last x.
  * Our models take integer timesteps, so DiscreteEpsDDPMDenoiser is used with quantize=True; every sigma the
    samplers visit is one of the table's (the C++ library rounds a Karras sigma to a timestep and uses that
    timestep's sigma: karras_timesteps below, our rule), so quantizing changes nothing.
  * score_sde's samplers run over the discrete DDPM schedule of the C++ library: VPSDE.discretize between two
    visited timesteps t > t' uses beta = 1 - abar_t / abar_t' (= beta_t when t' = t - 1, score_sde's case); the
    Euler-Maruyama predictor's beta(t) dt is the integrated beta of the step, log(abar_t' / abar_t); the
    Langevin corrector's alpha is alphas[t] = 1 - beta_t (sde.alphas[timestep]). The last step (to the clean
    end) adds no noise (score_sde's denoise=True).

Importing this module has no side effects. Run with Debian's torch 1.13: /usr/bin/python3.
"""
import math

import numpy as np
import torch


# ----------------------------------------------------------------------------------------------------------------
# Noise levels: k-diffusion's DiscreteSchedule and get_sigmas_karras


def append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0):
    """Constructs the noise schedule of Karras et al. (2022)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas)


class DiscreteSchedule:
    """A mapping between continuous noise levels (sigmas) and a list of discrete noise levels."""

    def __init__(self, sigmas, quantize):
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()
        self.quantize = quantize

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def sigma_to_t(self, sigma, quantize=None):
        quantize = self.quantize if quantize is None else quantize
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = (low - log_sigma) / (low - high)
        w = w.clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t):
        t = t.double()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()


class DiscreteEpsDDPMDenoiser(DiscreteSchedule):
    """A wrapper for discrete schedule DDPM models that output eps. `model(x_vp, t)` takes the variance-preserving
    input x * c_in and an integer timestep tensor (N,)."""

    def __init__(self, model, alphas_cumprod, quantize=True, clip_x0=False):
        super().__init__(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, quantize)
        self.inner_model = model
        self.sigma_data = 1.0
        self.clip_x0 = clip_x0  # ours: the denoised image clamped to [-1, 1] (the C++ ClipX0)

    def get_scalings(self, sigma):
        c_out = -sigma
        c_in = 1 / (sigma**2 + self.sigma_data**2) ** 0.5
        return c_out, c_in

    def forward(self, input, sigma):
        sigma = torch.as_tensor(sigma)
        c_out, c_in = self.get_scalings(sigma)
        t = self.sigma_to_t(sigma.reshape(1)).expand(input.shape[0])
        eps = self.inner_model(input * c_in, t)
        denoised = input + eps * c_out
        return denoised.clamp(-1.0, 1.0) if self.clip_x0 else denoised

    __call__ = forward


def karras_timesteps(alphas_cumprod, n, rho=7.0):
    """Ours (the C++ karras_timesteps): the n Karras sigmas between the table's sigma_min and sigma_max, each mapped
    to t by DiscreteSchedule.sigma_to_t (interpolated) and rounded half to even (np.round); collisions resolved by
    lifting each timestep above its successor from the low end, capping the first at T - 1 and lowering each below
    its predecessor. Returned ascending (int64)."""
    ds = DiscreteSchedule(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, quantize=False)
    T = alphas_cumprod.shape[0]
    sigmas = get_sigmas_karras(n, float(ds.sigma_min), float(ds.sigma_max), rho)[:-1]
    t = np.round(ds.sigma_to_t(sigmas).numpy()).astype(np.int64)  # descending
    for i in range(n - 2, -1, -1):
        t[i] = max(t[i], t[i + 1] + 1)
    t[0] = min(t[0], T - 1)
    for i in range(1, n):
        t[i] = min(t[i], t[i - 1] - 1)
    assert t[-1] >= 0 and all(t[i] > t[i + 1] for i in range(n - 1))
    return torch.from_numpy(t[::-1].copy())


def plan_sigmas(alphas_cumprod, timesteps):
    """The sigmas a sampler visits over ascending `timesteps`: descending, with the appended 0."""
    ac = alphas_cumprod[torch.as_tensor(timesteps).flip(0)]
    return append_zero(((1 - ac) / ac) ** 0.5)


def to_vp(x, sigma):
    return x / (1 + float(sigma) ** 2) ** 0.5


# ----------------------------------------------------------------------------------------------------------------
# k-diffusion samplers (sampling.py), recording x after every step in the VP scale


def to_d(x, sigma, denoised):
    """Converts a denoiser output to a Karras ODE derivative."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Calculates the noise level (sigma_down) to step down to and the amount of noise to add (sigma_up) when doing
    an ancestral sampling step."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def sample_euler(model, x, sigmas):
    """Implements Algorithm 2 (Euler steps) from Karras et al. (2022) (s_churn = 0)."""
    sigmas = [float(s) for s in sigmas]
    traj = []
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        # Euler method
        x = x + d * dt
        traj.append(to_vp(x, sigmas[i + 1]))
    return traj


def sample_euler_ancestral(model, x, sigmas, noise, eta=1.0):
    """Ancestral sampling with Euler method steps."""
    sigmas = [float(s) for s in sigmas]
    noise = list(noise)
    traj = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        d = to_d(x, sigmas[i], denoised)
        # Euler method
        dt = sigma_down - sigmas[i]
        x = x + d * dt
        if sigmas[i + 1] > 0:
            x = x + noise.pop(0) * sigma_up
        traj.append(to_vp(x, sigmas[i + 1]))
    assert not noise
    return traj


def sample_heun(model, x, sigmas):
    """Implements Algorithm 2 (Heun steps) from Karras et al. (2022) (s_churn = 0)."""
    sigmas = [float(s) for s in sigmas]
    traj = []
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            # Euler method
            x = x + d * dt
        else:
            # Heun's method
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1])
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            d_prime = (d + d_2) / 2
            x = x + d_prime * dt
        traj.append(to_vp(x, sigmas[i + 1]))
    return traj


def sample_dpmpp_2m(model, x, sigmas):
    """DPM-Solver++(2M)."""
    sigmas = torch.as_tensor(sigmas)
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_denoised = None
    traj = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
        traj.append(to_vp(x, sigmas[i + 1]))
    return traj


def sample_dpmpp_2m_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE (noise_sampler: the given noise in order)."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    sigmas = torch.as_tensor(sigmas)
    noise = list(noise)
    old_denoised = None
    h_last = None
    traj = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            # Denoising step
            x = denoised
        else:
            # DPM-Solver++(2M) SDE
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h

            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised

            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                elif solver_type == "midpoint":
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)

            if eta:
                x = x + noise.pop(0) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise

        old_denoised = denoised
        h_last = h
        traj.append(to_vp(x, sigmas[i + 1]))
    assert not noise
    return traj


# ----------------------------------------------------------------------------------------------------------------
# DPM-Solver++(2M) from the official DPM-Solver code (multistep, data prediction, VP form)


def dpm_solver_pp_2m_official(model_x0, x, alphas_cumprod, timesteps):
    """Lu et al. 2022, Algorithm 2, as dpm_solver_pytorch.py's multistep_dpm_solver_second_update
    (algorithm_type="dpmsolver++", solver_type="dpmsolver") after one first-order step
    (dpm_solver_first_update), on the discrete timesteps `timesteps` (ascending, visited descending) ending at the
    clean image with a first-order step (x = x0). model_x0(x_vp, t) -> x0. Returns x after every step (VP)."""
    ts = [int(t) for t in timesteps][::-1]
    ac = [float(alphas_cumprod[t]) for t in ts] + [1.0]
    alpha = [a**0.5 for a in ac]
    sigma = [(1 - a) ** 0.5 for a in ac]
    lam = [math.log(alpha[i]) - math.log(sigma[i]) if sigma[i] > 0 else math.inf for i in range(len(ac))]
    prev = []
    traj = []
    for i in range(len(ts)):
        m = model_x0(x, torch.full((x.shape[0],), ts[i], dtype=torch.long))
        prev.append(m)
        if sigma[i + 1] == 0:
            x = m
        elif len(prev) == 1:
            # dpm_solver_first_update, dpmsolver++: x_t = sigma_t / sigma_s x - alpha_t phi_1 model_s
            h = lam[i + 1] - lam[i]
            phi_1 = math.expm1(-h)
            x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * phi_1 * m
        else:
            model_prev_1, model_prev_0 = prev[-2], prev[-1]
            lambda_prev_1, lambda_prev_0, lambda_t = lam[i - 1], lam[i], lam[i + 1]
            h_0 = lambda_prev_0 - lambda_prev_1
            h = lambda_t - lambda_prev_0
            r0 = h_0 / h
            D1_0 = (1.0 / r0) * (model_prev_0 - model_prev_1)
            phi_1 = math.expm1(-h)
            x = (sigma[i + 1] / sigma[i]) * x - (alpha[i + 1] * phi_1) * model_prev_0 - 0.5 * (alpha[i + 1] * phi_1) * D1_0
        traj.append(x)
    return traj


# ----------------------------------------------------------------------------------------------------------------
# score_sde's predictors and corrector on the discrete VP SDE


class DiscreteVPSDE:
    """The discrete DDPM schedule as score_sde's VPSDE: `alphas_cumprod` (T,), steps between visited timesteps."""

    def __init__(self, betas):
        self.discrete_betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_1m_alphas_cumprod = torch.sqrt(1.0 - self.alphas_cumprod)

    def abar(self, t):
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def discretize(self, x, t, t_next):
        """DDPM discretization (VPSDE.discretize) of the step t -> t_next: beta = 1 - abar_t / abar_next."""
        beta = 1.0 - self.abar(t) / self.abar(t_next)
        alpha = 1.0 - beta
        sqrt_beta = beta**0.5
        f = alpha**0.5 * x - x
        G = sqrt_beta
        return f, G

    def reverse_discretize(self, score_fn, x, t, t_next):
        """score_sde's reverse SDE: rev_f = f - G^2 score, rev_G = G (probability_flow=False)."""
        f, G = self.discretize(x, t, t_next)
        rev_f = f - G**2 * score_fn(x, t)
        return rev_f, G

    def reverse_sde(self, score_fn, x, t, t_next):
        """rsde.sde over the step t -> t_next, with beta(t) |dt| = log(abar_next / abar_t) (the integrated beta of
        the step) folded in: VPSDE.sde's drift -beta x / 2 and diffusion sqrt(beta), then the reverse SDE's
        drift = f - G^2 score (probability_flow=False)."""
        beta_t = math.log(self.abar(t_next) / self.abar(t))
        drift = -0.5 * beta_t * x
        diffusion = beta_t**0.5
        drift = drift - diffusion**2 * score_fn(x, t)
        return drift, diffusion


def vp_score_fn(eps_model, sde, clip_x0=False):
    """models/utils.py get_score_fn for a VP model with continuous=False: score = -model(x, t) / std, std =
    sqrt_1m_alphas_cumprod[t]. With clip_x0 (ours, the C++ ClipX0::RederiveEps), eps is re-derived from the clipped
    x0 first."""

    def score_fn(x, t):
        labels = torch.full((x.shape[0],), t, dtype=torch.long)
        eps = eps_model(x, labels)
        std = float(sde.sqrt_1m_alphas_cumprod[t])
        if clip_x0:
            a = sde.abar(t) ** 0.5
            x0 = ((x - std * eps) / a).clamp(-1.0, 1.0)
            eps = (x - a * x0) / std
        return -eps / std

    return score_fn


def reverse_diffusion_update(sde, score_fn, x, t, t_next, z):
    """ReverseDiffusionPredictor.update_fn (z given; None on the last step)."""
    f, G = sde.reverse_discretize(score_fn, x, t, t_next)
    x_mean = x - f
    x = x_mean + G * z if z is not None else x_mean
    return x, x_mean


def euler_maruyama_update(sde, score_fn, x, t, t_next, z):
    """EulerMaruyamaPredictor.update_fn with dt = -1: one step of the reverse SDE, whose drift and diffusion carry
    the step's beta(t) |dt| (DiscreteVPSDE.reverse_sde); z given (None on the last step)."""
    dt = -1.0
    drift, diffusion = sde.reverse_sde(score_fn, x, t, t_next)
    x_mean = x + drift * dt
    x = x_mean + diffusion * (-dt) ** 0.5 * z if z is not None else x_mean
    return x, x_mean


def langevin_update(sde, score_fn, x, t, snr, n_steps, noises):
    """LangevinCorrector.update_fn (VPSDE: alpha = sde.alphas[timestep]); noises: n_steps tensors."""
    alpha = float(sde.alphas[t])
    for i in range(n_steps):
        grad = score_fn(x, t)
        noise = noises[i]
        grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
        noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
        step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
        x_mean = x + step_size * grad
        x = x_mean + torch.sqrt(step_size * 2) * noise
    return x, x_mean


def score_sampler(kind, eps_model, sde, x, timesteps, noise, snr=0.16, n_steps=1, clip_x0=False):
    """score_sde's pc_sampler loop over ascending `timesteps` (visited descending) ending at the clean end:
    kind "reverse_diffusion" | "euler_maruyama" (predictor only) | "pc" (Langevin corrector, then the reverse-
    diffusion predictor, at every timestep). noise: the list of tensors, consumed in the order the sampler draws.
    Returns x after every step."""
    score_fn = vp_score_fn(eps_model, sde, clip_x0)
    ts = [int(t) for t in timesteps][::-1]
    noise = list(noise)
    traj = []
    for i, t in enumerate(ts):
        t_next = ts[i + 1] if i + 1 < len(ts) else -1
        if kind == "pc":
            x, _ = langevin_update(sde, score_fn, x, t, snr, n_steps, [noise.pop(0) for _ in range(n_steps)])
        z = noise.pop(0) if t_next >= 0 else None
        if kind == "euler_maruyama":
            x, x_mean = euler_maruyama_update(sde, score_fn, x, t, t_next, z)
        else:
            x, x_mean = reverse_diffusion_update(sde, score_fn, x, t, t_next, z)
        traj.append(x)
    assert not noise
    return traj


# ----------------------------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023): diffusers' UniPCMultistepScheduler with its defaults predict_x0=True, solver_type="bh2",
# solver_order=2, lower_order_final=True, disable_corrector=[], thresholding=False, final_sigmas_type="zero"


class UniPCMultistep:
    """diffusers' UniPCMultistepScheduler.step, multistep_uni_p_bh_update and multistep_uni_c_bh_update, on the
    sigmas of our plan (`sigmas`: descending, ending with 0) instead of its own set_timesteps; model outputs are
    converted by convert_model_output (prediction_type="epsilon"). The code of the three methods is kept; what
    only concerns other configurations (solver_p, bh1, predict_x0=False, deprecations) is left out."""

    def __init__(self, sigmas, solver_order=2):
        self.sigmas = torch.as_tensor(sigmas)
        self.num_timesteps = len(self.sigmas) - 1  # len(self.timesteps)
        self.solver_order = solver_order
        self.lower_order_final = True
        self.model_outputs = [None] * solver_order
        self.timestep_list = [None] * solver_order
        self.lower_order_nums = 0
        self.last_sample = None
        self.this_order = None
        self.step_index = 0

    def _sigma_to_alpha_sigma_t(self, sigma):
        alpha_t = 1 / ((sigma**2 + 1) ** 0.5)
        sigma_t = sigma * alpha_t
        return alpha_t, sigma_t

    def convert_model_output(self, model_output, sample):
        sigma = self.sigmas[self.step_index]
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigma)
        return (sample - sigma_t * model_output) / alpha_t

    def multistep_uni_p_bh_update(self, model_output, sample, order):
        model_output_list = self.model_outputs
        m0 = model_output_list[-1]
        x = sample
        sigma_t, sigma_s0 = self.sigmas[self.step_index + 1], self.sigmas[self.step_index]
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = self._sigma_to_alpha_sigma_t(sigma_s0)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lambda_t - lambda_s0
        rks = []
        D1s = []
        for i in range(1, order):
            si = self.step_index - i
            mi = model_output_list[-(i + 1)]
            alpha_si, sigma_si = self._sigma_to_alpha_sigma_t(self.sigmas[si])
            lambda_si = torch.log(alpha_si) - torch.log(sigma_si)
            rk = (lambda_si - lambda_s0) / h
            rks.append(rk)
            D1s.append((mi - m0) / rk)
        rks.append(torch.ones(()))
        rks = torch.stack(rks)
        R = []
        b = []
        hh = -h  # predict_x0
        h_phi_1 = torch.expm1(hh)  # h\phi_1(h) = e^h - 1
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        B_h = torch.expm1(hh)  # bh2
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)
        b = torch.stack(b) if len(b) > 0 else torch.tensor(b)
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)  # (B, K)
            # for order 2, we use a simplified version
            if order == 2:
                rhos_p = torch.ones(1, dtype=x.dtype) * 0.5
            else:
                rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.dtype)
        else:
            D1s = None
        x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
        if D1s is not None:
            pred_res = torch.einsum("k,bkc...->bc...", rhos_p, D1s)
        else:
            pred_res = 0
        x_t = x_t_ - alpha_t * B_h * pred_res
        return x_t

    def multistep_uni_c_bh_update(self, this_model_output, last_sample, this_sample, order):
        model_output_list = self.model_outputs
        m0 = model_output_list[-1]
        x = last_sample
        model_t = this_model_output
        sigma_t, sigma_s0 = self.sigmas[self.step_index], self.sigmas[self.step_index - 1]
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = self._sigma_to_alpha_sigma_t(sigma_s0)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lambda_t - lambda_s0
        rks = []
        D1s = []
        for i in range(1, order):
            si = self.step_index - (i + 1)
            mi = model_output_list[-(i + 1)]
            alpha_si, sigma_si = self._sigma_to_alpha_sigma_t(self.sigmas[si])
            lambda_si = torch.log(alpha_si) - torch.log(sigma_si)
            rk = (lambda_si - lambda_s0) / h
            rks.append(rk)
            D1s.append((mi - m0) / rk)
        rks.append(torch.ones(()))
        rks = torch.stack(rks)
        R = []
        b = []
        hh = -h  # predict_x0
        h_phi_1 = torch.expm1(hh)  # h\phi_1(h) = e^h - 1
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        B_h = torch.expm1(hh)  # bh2
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)
        b = torch.stack(b) if len(b) > 0 else torch.tensor(b)
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)
        else:
            D1s = None
        # for order 1, we use a simplified version
        if order == 1:
            rhos_c = torch.ones(1, dtype=x.dtype) * 0.5
        else:
            rhos_c = torch.linalg.solve(R, b).to(x.dtype)
        x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
        if D1s is not None:
            corr_res = torch.einsum("k,bkc...->bc...", rhos_c[:-1], D1s)
        else:
            corr_res = 0
        D1_t = model_t - m0
        x_t = x_t_ - alpha_t * B_h * (corr_res + rhos_c[-1] * D1_t)
        return x_t

    def step(self, model_output, sample):
        use_corrector = self.step_index > 0 and self.last_sample is not None
        model_output_convert = self.convert_model_output(model_output, sample)
        if use_corrector:
            sample = self.multistep_uni_c_bh_update(
                this_model_output=model_output_convert, last_sample=self.last_sample, this_sample=sample,
                order=self.this_order)
        for i in range(self.solver_order - 1):
            self.model_outputs[i] = self.model_outputs[i + 1]
            self.timestep_list[i] = self.timestep_list[i + 1]
        self.model_outputs[-1] = model_output_convert
        if self.lower_order_final:
            this_order = min(self.solver_order, self.num_timesteps - self.step_index)
        else:
            this_order = self.solver_order
        self.this_order = min(this_order, self.lower_order_nums + 1)  # warmup for multistep
        assert self.this_order > 0
        self.last_sample = sample
        prev_sample = self.multistep_uni_p_bh_update(model_output=model_output, sample=sample, order=self.this_order)
        if self.lower_order_nums < self.solver_order:
            self.lower_order_nums += 1
        self.step_index += 1
        return prev_sample


def sample_unipc(eps_model, alphas_cumprod, x, timesteps):
    """UniPC-2 over ascending `timesteps` (visited descending) to the clean end, the model an eps model
    eps_model(x_vp, t). x: the variance-preserving x_T. Returns x after every step."""
    ts = [int(t) for t in timesteps][::-1]
    sched = UniPCMultistep(plan_sigmas(alphas_cumprod, timesteps))
    traj = []
    for t in ts:
        eps = eps_model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x = sched.step(eps, x)
        traj.append(x)
    return traj
