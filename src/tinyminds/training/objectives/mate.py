"""MATE-KD (MaskedAdversarialLlama-58M, SPEC §3, paper §4.4) as an objective of the one engine.

A masked-LM generator (ELECTRA, pretrained by `tinyminds train electra-*` on the same data, its
vocabulary the data's plus ``[MASK]`` at id V) perturbs the training text, and rounds alternate:

- **Generator (max) steps**, ``generator_steps`` per round, run by the engine before the round's
  first student step (`base.SideSteps`). ``mask_fraction`` of the non-pad tokens become ``[MASK]``;
  the generator's logits at those positions, with the ``[MASK]`` column dropped (the teachers and
  the student have V tokens), give a Gumbel-softmax sample at ``gumbel_tau`` whose forward value is
  the hard one-hot and whose gradient is the soft sample's (straight-through). The one-hot is
  multiplied into each model's input embedding matrix and passed as ``inputs_embeds``; unmasked
  positions keep the original token's embedding, looked up exactly as the model itself does. The
  generator's loss is ``-T^2 KL(teachers' ensemble || student)`` on that text (the KD term of the
  student's loss, same temperature, direction and reduction): its gradient flows through the
  frozen teachers and through the student into the sample, and only the generator's parameters
  receive it. Its own AdamW (``generator_lr``, constant, no weight decay) and clipping
  (``generator_grad_clip``) step it; the student's weights and optimizer are not touched.
- **Student (min) steps**, ``student_steps`` per round, through the engine's ordinary step:
  ``L = (w_ce CE + w_kd T^2 KL_orig + w_adv T^2 KL_adv) / (w_ce + w_kd + w_adv)`` (`mate_loss`;
  equal weights: CE/3 + KD_orig/3 + KD_adv/3), where KL_adv is measured on text perturbed by the
  generator without gradient (hard samples, as token ids). The original and perturbed chunks go
  through the student and the teachers as one batch of twice the size.

Counting: generator steps read the micro-batches of the student steps that follow them (the first
``generator_steps`` steps of the round, wrapping inside the epoch), so they take no data of their
own; epochs, ``max_steps`` and the learning-rate schedule count student steps only. A round starts
at every student step that is a multiple of ``student_steps``, step 0 included.

Logging (metrics.jsonl): the student's ``ce``, ``kl`` (KL on the original text, as the kd
objective logs it), ``kd_orig`` = T^2 KL_orig and ``kd_adv`` = T^2 KL_adv, in training and
validation records; and one ``generator`` record per generator step with its ``kd_adv`` (the
divergence it maximises, before its update), ``changed`` (share of masked positions refilled with
another token than the original) and ``grad_norm``. A ``kd_adv / kd_orig`` ratio above 1 that
holds while the student learns is the sign that the generator finds text the student has not
learnt to imitate yet.

Randomness: masks are drawn from the CPU generator and the Gumbel noise from the device's, both
saved in every checkpoint by the engine; validation perturbs each dev batch with a seed fixed by
its first chunk, so every epoch is measured on the same masks and noise. The generator's weights,
optimizer and gradient scaler are saved in every checkpoint (``side`` entry), never exported with
the student.

The teacher cache (``teacher_cache=true``) serves the one term whose text is fixed: the student's
KD term on the original chunks, read from the cache as the kd objective reads it. The perturbed
text changes at every step, so the teachers still run on it, in the student's steps (half the
batch they read online) and in the generator's steps; validation runs them online throughout.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForMaskedLM

from tinyminds.data.chunks import PreparedData
from tinyminds.data.tokenizer import mlm_tokenizer_hash, tokenizer_hash
from tinyminds.devices import to_device
from tinyminds.errors import UserError
from tinyminds.training.config import DistillConfig
from tinyminds.training.engine import TrainingDiverged
from tinyminds.training.objectives.base import (
    Batch,
    ObjectiveOutput,
    SetupContext,
    causal_lm_cross_entropy,
)
from tinyminds.training.objectives.distillation import DistillationObjective
from tinyminds.training.objectives.kd_losses import (
    ensemble_log_probs,
    mate_loss,
    reduce_kl,
)

ELECTRA_PARTS = ("electra", "generator_predictions", "generator_lm_head")
"""The parts of transformers' ``ElectraForMaskedLM``: body, position-wise head, output layer."""

DEV_PERTURB_SEED = 20_210_801
"""Seed of the validation perturbations (plus the first chunk index of each dev batch)."""


def draw_mask(
    input_ids: Tensor,
    fraction: float,
    pad_id: int | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``[B, L]`` bool: each non-pad position is chosen with probability ``fraction``.

    Drawn on the CPU (``generator`` or the global CPU generator, which checkpoints save) and moved
    to ``input_ids``'s device (through pinned memory: `tinyminds.devices.to_device`).
    """
    chosen = to_device(
        torch.rand(input_ids.shape, generator=generator) < fraction, input_ids.device
    )
    return chosen if pad_id is None else chosen & (input_ids != pad_id)


def _gumbel_noisy_logits(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """``logits + g`` in float32 with Gumbel noise ``g = -log(-log(u))``, ``u`` uniform drawn from
    ``generator`` (u = 0 gives -inf: never chosen)."""
    noise = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    noise.log_().neg_().log_()  # in place: log(-log(u)), the same values as out of place
    return logits.float() - noise


def gumbel_softmax_st(
    logits: Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(straight-through one-hot ``[..., V]`` float32, sampled token ids ``[...]``).

    The sample is ``argmax(logits + g)`` with Gumbel noise ``g = -log(-log(u))``; the returned
    one-hot is ``hard + (soft - soft.detach())`` with ``soft = softmax((logits + g) / tau)``: its
    value is exactly the hard one-hot (``x - x`` is exactly 0), its gradient is the soft sample's.
    """
    noisy = _gumbel_noisy_logits(logits, generator)
    soft = torch.softmax(noisy / tau, dim=-1)
    tokens = noisy.argmax(dim=-1)
    hard = F.one_hot(tokens, logits.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach()), tokens


def gumbel_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The token ids `gumbel_softmax_st` samples, without its one-hot (where no gradient is
    needed): the same ids for the same generator state, at a third of the work (the soft sample
    over the vocabulary is never formed). ``tau`` does not change the argmax."""
    return _gumbel_noisy_logits(logits, generator).argmax(dim=-1)


def perturbed_embeddings(
    embedding: nn.Module, input_ids: Tensor, mask: Tensor, one_hot: Tensor
) -> Tensor:
    """A model's ``inputs_embeds`` ``[B, L, D]`` for ``input_ids`` with the masked positions replaced.

    Unmasked positions are ``embedding(input_ids)``, the model's own lookup, bit for bit; the
    ``M`` masked positions (row-major order, as ``x[mask]`` lists them) are ``one_hot [M, V]``
    times the embedding matrix, computed in the matrix's dtype outside autocast so that a hard
    one-hot gives the token's embedding exactly, while a gradient reaches ``one_hot``. For a plain
    lookup table (``nn.Embedding``, as GPT-2 and Llama use) the two agree on the same token.
    """
    original = embedding(input_ids)
    weight = embedding.weight
    with torch.autocast(weight.device.type, enabled=False):
        replaced = one_hot.to(weight.dtype) @ weight
    return original.masked_scatter(mask.unsqueeze(-1), replaced.to(original.dtype))


def load_generator(folder: Path, data: PreparedData, student: str) -> nn.Module:
    """The masked LM in ``folder``, checked against the data: vocabulary V + 1, tokenizer + [MASK]."""
    if not (folder / "config.json").is_file():
        raise UserError(
            f"generator={folder}: not a Hugging Face model folder (no config.json); train one "
            f"with `tinyminds train electra-tiny data={data.folder}` (or electra-56m)"
        )
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"generator {folder}: unreadable config.json ({error})") from None
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForMaskedLM") for a in architectures):
        raise UserError(
            f"generator {folder} is not a masked language model (saved as "
            f"{', '.join(architectures) or 'unknown'}); MATE-KD needs one, e.g. electra-tiny"
        )
    vocab, expected = getattr(config, "vocab_size", None), data.vocab_size + 1
    if vocab != expected:
        raise UserError(
            f"generator {folder} has a vocabulary of {vocab} tokens, but student {student} and "
            f"the teachers have {data.vocab_size} (the tokenizer of {data.folder}): the generator "
            f"must have {expected}, those tokens plus [MASK] at id {data.vocab_size}, as "
            f"`tinyminds train electra-tiny data={data.folder}` saves it"
        )
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"generator {folder} has no tokenizer (tokenizer.json) to check")
    if tokenizer_hash(folder) != mlm_tokenizer_hash(data.tokenizer_dir):
        raise UserError(
            f"generator {folder} and student {student} use different tokenizers: the generator's "
            f"is not the tokenizer of {data.folder} plus [MASK]"
        )
    return AutoModelForMaskedLM.from_pretrained(str(folder))


class MateObjective:
    """MATE-KD: the student's CE + KD on original and perturbed text; the generator's own steps.

    Not an ``nn.Module`` on purpose: the engine trains and checkpoints the parameters of module
    objectives with the student's optimizer, and the generator must have its own (`SideSteps`).
    """

    side_name = "generator"

    def __init__(self, kd: DistillationObjective, generator: nn.Module) -> None:
        self.kd = kd
        self.config: DistillConfig = kd.config
        self.generator = generator
        self.vocab_size = int(generator.config.vocab_size) - 1
        """V, the teachers' and student's vocabulary; ``[MASK]`` is id V."""
        self.mask_id = self.vocab_size
        self.pad_id: int | None = getattr(generator.config, "pad_token_id", None)
        config = self.config
        self.weights = (config.mate_ce_weight, config.mate_kd_weight, config.mate_adv_weight)
        self.amp_dtype: torch.dtype | None = None
        self.mean = torch.clone
        self.params: list[nn.Parameter] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None

    # --- setup, checkpoints ------------------------------------------------------------------------

    def setup(self, context: SetupContext) -> None:
        """Teachers and generator to the device; the generator's optimizer and gradient scaler."""
        self.kd.setup(context)
        self.amp_dtype = context.amp_dtype
        self.mean = context.mean
        self.generator.to(context.device)  # float32 weights: it is trained (autocast on a GPU)
        self.params = [p for p in self.generator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=self.config.generator_lr,
            weight_decay=0.0,
            fused=context.device.type in ("cuda", "cpu"),
        )
        self.scaler = torch.amp.GradScaler(
            context.device.type, enabled=context.amp_dtype == torch.float16
        )

    def side_state(self) -> dict[str, Any]:
        assert self.optimizer is not None and self.scaler is not None, "setup() first"
        return {
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_side_state(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None and self.scaler is not None, "setup() first"
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])

    def _autocast(self, device: torch.device) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    # --- perturbation ------------------------------------------------------------------------------

    def _masked_logits(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """The generator's logits ``[M, V]`` at the masked positions, ``[MASK]`` column dropped.

        An ELECTRA generator's output head is applied at the masked positions only (the head is
        position-wise, so these are the logits its ``forward`` gives there, without the 70% of
        the vocabulary-wide matrix product that would be thrown away); another masked LM runs
        whole."""
        masked_ids = input_ids.masked_fill(mask, self.mask_id)
        generator = self.generator
        with self._autocast(input_ids.device):
            if all(hasattr(generator, n) for n in ELECTRA_PARTS):
                hidden = generator.electra(input_ids=masked_ids).last_hidden_state[mask]
                logits = generator.generator_lm_head(generator.generator_predictions(hidden))
            else:
                logits = generator(input_ids=masked_ids).logits[mask]
        return logits[:, : self.vocab_size]

    @torch.no_grad()
    def perturb(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(perturbed ids, mask): the generator's hard samples at the masked positions, no gradient.

        The generator runs in eval mode (no dropout); dev batches use a fixed seed per batch.
        """
        ids = batch.input_ids
        cpu_rng = device_rng = None
        if batch.split != "train":
            seed = DEV_PERTURB_SEED + int(batch.chunk_index[0])
            cpu_rng = torch.Generator().manual_seed(seed)
            device_rng = torch.Generator(device=ids.device).manual_seed(seed)
        mask = draw_mask(ids, self.config.mask_fraction, self.pad_id, cpu_rng)
        training = self.generator.training
        self.generator.eval()
        try:
            tokens = gumbel_sample(self._masked_logits(ids, mask), device_rng)
        finally:
            self.generator.train(training)
        return ids.masked_scatter(mask, tokens), mask

    # --- the generator's step ------------------------------------------------------------------------

    def side_steps_before(self, step: int) -> int:
        return self.config.generator_steps if step % self.config.student_steps == 0 else 0

    def generator_divergence(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """(``T^2 KL(teachers || student)`` on generator-perturbed text, with the generator's
        gradient through the straight-through sample; share of masked positions changed)."""
        config = self.config
        ids = batch.input_ids
        mask = draw_mask(ids, config.mask_fraction, self.pad_id)
        one_hot, tokens = gumbel_softmax_st(self._masked_logits(ids, mask), config.gumbel_tau)
        with self._autocast(ids.device):
            # Teachers are frozen (requires_grad False) but not under no_grad: the gradient
            # reaches their inputs, hence the sample.
            teacher_logits = [
                teacher(
                    inputs_embeds=perturbed_embeddings(
                        teacher.get_input_embeddings(), ids, mask, one_hot
                    )
                ).logits
                for teacher in self.kd.teachers
            ]
            student_logits = model(
                inputs_embeds=perturbed_embeddings(model.get_input_embeddings(), ids, mask, one_hot)
            ).logits
        teacher_log_probs = ensemble_log_probs(
            teacher_logits, config.temperature, config.teacher_weights or None, config.ensemble
        )
        kl = reduce_kl(
            self.kd.online_divergence(teacher_log_probs, student_logits, teacher_grad=True),
            config.kl_reduction,
        )
        changed = (tokens != ids[mask]).float().mean() if tokens.numel() else kl.new_zeros(())
        return config.temperature**2 * kl, changed.detach()

    def side_step(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """One generator step: ascend the divergence over ``batches``, average the gradient over
        processes, clip, step. Only the generator's parameters get gradients (``inputs=``)."""
        assert self.optimizer is not None and self.scaler is not None, "setup() first"
        self.generator.train()
        divergence = torch.zeros((), device=batches[0].input_ids.device)
        changed = torch.zeros_like(divergence)
        for batch in batches:
            kd_adv, share = self.generator_divergence(model, batch)
            self.scaler.scale(-kd_adv / len(batches)).backward(inputs=self.params)
            divergence += kd_adv.detach() / len(batches)
            changed += share / len(batches)
        for param in self.params:
            if param.grad is not None:
                param.grad.copy_(self.mean(param.grad))
        self.scaler.unscale_(self.optimizer)
        clip = self.config.generator_grad_clip
        grad_norm = (
            nn.utils.clip_grad_norm_(self.params, clip)
            if clip > 0
            else torch.zeros((), device=divergence.device)
        )
        values = self.mean(torch.stack([divergence, changed, grad_norm.float().to(divergence)]))
        kd_adv_value, changed_value, norm_value = values.tolist()
        if not math.isfinite(kd_adv_value):
            raise TrainingDiverged(
                f"the MATE-KD generator's divergence is {kd_adv_value}; the last good checkpoint "
                "is kept (a lower generator_lr or a generator_grad_clip may help)"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return {"kd_adv": kd_adv_value, "changed": changed_value, "grad_norm": norm_value}

    # --- the student's step --------------------------------------------------------------------------

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        config = self.config
        ids = batch.input_ids
        perturbed, _ = self.perturb(batch)
        both = torch.cat([ids, perturbed])  # one pass of 2B chunks through student and teachers
        logits = model(input_ids=both).logits
        size = ids.shape[0]
        reduction = config.kl_reduction
        w_ce, w_kd, w_adv = self.weights
        total = w_ce + w_kd + w_adv
        # The halves are split, not sliced: a slice's backward allocates a zero gradient of the
        # whole [2B, L, V] tensor per use, a split's joins the two halves' gradients once.
        original, adversarial = logits.split(size)
        fused = self.kd.fused_cached_loss(original, batch, w_ce / total, w_kd / total)
        if fused is not None:
            # The original chunks' ensemble is in the cache, read in one pass with the CE; the
            # teachers read only the perturbed half (half their work and of the dense KL).
            original_terms, ce, kl_orig = fused
            teachers = [output.logits for output in self.kd.run_teachers(perturbed)]
            kl_adv = reduce_kl(self.kd.teacher_divergence(teachers, adversarial), reduction)
            # the sum mate_loss forms, its first two terms from the fused pass
            loss = original_terms + w_adv / total * config.temperature**2 * kl_adv
        else:
            ce = causal_lm_cross_entropy(original, ids)
            if self.kd.cache is not None and batch.split == "train":
                kl_orig = reduce_kl(self.kd.cached_divergence(original, batch), reduction)
                teachers = [output.logits for output in self.kd.run_teachers(perturbed)]
                per_adv = self.kd.teacher_divergence(teachers, adversarial)
                kl_adv = reduce_kl(per_adv, reduction)
            else:
                teachers = [output.logits for output in self.kd.run_teachers(both)]
                per_position = self.kd.teacher_divergence(teachers, logits)
                kl_orig = reduce_kl(per_position[:size], reduction)
                kl_adv = reduce_kl(per_position[size:], reduction)
            loss = mate_loss(ce, kl_orig, kl_adv, self.weights, config.temperature)
        scale = config.temperature**2
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "ce": ce.detach(),
                "kl": kl_orig.detach(),
                "kd_orig": scale * kl_orig.detach(),
                "kd_adv": scale * kl_adv.detach(),
            },
        )
